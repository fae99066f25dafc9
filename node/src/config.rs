//! The node's home directory, its TOML configuration and the restore sentinel.

use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Where a node keeps its files.
#[derive(Debug, Clone)]
pub struct Home {
    /// The directory.
    pub dir: PathBuf,
}

impl Home {
    /// `--home`, else `$MESHPAY_HOME`, else `~/.meshpay`.
    pub fn resolve(arg: Option<PathBuf>) -> Self {
        let dir = arg
            .or_else(|| std::env::var_os("MESHPAY_HOME").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".meshpay")))
            .unwrap_or_else(|| PathBuf::from(".meshpay"));
        Self { dir }
    }

    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    /// The wallet database.
    pub fn wallet_db(&self) -> PathBuf {
        self.dir.join("wallet.db")
    }
    /// The mesh store (sled).
    pub fn mesh(&self) -> PathBuf {
        self.dir.join("mesh")
    }
    /// The daemon's control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    /// The control token, readable by the owner only.
    pub fn token(&self) -> PathBuf {
        self.dir.join("control.token")
    }
}

/// The configuration file. Every key is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Network settings.
    pub network: NetworkConfig,
    /// Wallet settings.
    pub wallet: WalletConfig,
    /// Store-and-forward settings.
    pub mesh: MeshConfig,
    /// Bluetooth LE settings.
    pub ble: BleSettings,
    /// Settlement servers this node talks to.
    pub issuer: IssuerSettings,
    /// The web app.
    pub ui: UiSettings,
}

/// `[ui]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiSettings {
    /// Serve the web app on this address (as `meshpay run --ui`), e.g. "127.0.0.1:8080".
    pub listen: Option<String>,
    /// Wallet payments from the web app that bring what was paid without the PIN in 12 hours
    /// above this many minor units ask for the PIN (set at `init`), or the passphrase when no
    /// PIN is set; 0 asks for every payment.
    pub confirm_above: u64,
    /// Serve the web app over HTTPS with this certificate chain (PEM) …
    pub tls_cert: Option<PathBuf>,
    /// … and this key (PEM).
    pub tls_key: Option<PathBuf>,
}

/// `[issuer]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssuerSettings {
    /// PEM file of certificate authorities to trust for issuers' HTTPS, besides the system's
    /// (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured too): an issuer with a private CA.
    pub ca_file: Option<PathBuf>,
}

/// `[ble]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BleSettings {
    /// Find and pay nearby devices over Bluetooth LE (as `meshpay run --ble`).
    pub enabled: bool,
    /// The adapter, by name (`hci0`) or address; the default adapter when unset.
    pub adapter: Option<String>,
    /// Advertise the meshpay service so that others connect (peripheral role).
    pub peripheral: bool,
    /// Scan for the meshpay service and connect (central role).
    pub central: bool,
    /// Seconds to wait for a peer's answer over BLE (a slower radio than Wi-Fi).
    pub request_timeout_secs: u64,
}

impl Default for BleSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            adapter: None,
            peripheral: true,
            central: true,
            request_timeout_secs: 20,
        }
    }
}

/// `[mesh]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshConfig {
    /// Most megabytes of bundles carried for the mesh.
    pub quota_mb: u64,
    /// Most megabytes carried from any one peer.
    pub quota_per_peer_mb: u64,
    /// Seconds between syncs with each connected peer.
    pub sync_secs: u64,
    /// Most kilobytes of bundles handed to one peer per sync.
    pub budget_kb: u64,
    /// Record routing: "epidemic", "spray-and-wait", "direct", "prophet", "spray-and-focus"
    /// or "maxprop" (SPEC §11.4).
    pub routing: String,
    /// Copies a record starts with under spray-and-wait and spray-and-focus.
    pub copies: u32,
    /// How spray-and-wait shares copies: "binary" (half to each carrier) or "source" (one
    /// to each carrier, from the node that made the record only).
    pub spray_mode: String,
    /// Settlement server this node uploads to whenever it can reach it (a gateway).
    pub gateway: Option<String>,
    /// Seconds between gateway rounds.
    pub gateway_secs: u64,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            quota_mb: 64,
            quota_per_peer_mb: 16,
            sync_secs: 30,
            budget_kb: 4096,
            routing: "epidemic".into(),
            copies: 6,
            spray_mode: "binary".into(),
            gateway: None,
            gateway_secs: 30,
        }
    }
}

/// Why the config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It cannot be read.
    #[error("{}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// It is not valid TOML or has unknown or wrong keys.
    #[error("{}: {error}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        error: toml::de::Error,
    },
    /// `[mesh] routing` names no routing.
    #[error(
        "[mesh] routing = {0:?}: use \"epidemic\", \"spray-and-wait\" (spray_mode \"binary\" or \"source\"), \"direct\", \"prophet\", \"spray-and-focus\" or \"maxprop\""
    )]
    Routing(String),
}

impl MeshConfig {
    /// The routing choice.
    pub fn routing(&self) -> Result<meshpay_protocol::sync::Routing, ConfigError> {
        meshpay_protocol::sync::Routing::named(&self.routing, self.copies, &self.spray_mode)
            .ok_or_else(|| ConfigError::Routing(self.routing.clone()))
    }
}

/// `[network]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Multiaddresses to listen on.
    pub listen: Vec<String>,
    /// Peers to dial at start.
    pub peers: Vec<String>,
    /// Find peers on the local network with mDNS.
    pub mdns: bool,
    /// Seconds to wait for a peer's answer.
    pub request_timeout_secs: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".into(),
                "/ip4/0.0.0.0/udp/0/quic-v1".into(),
            ],
            peers: Vec::new(),
            mdns: true,
            request_timeout_secs: 10,
        }
    }
}

/// `[wallet]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalletConfig {
    /// Currency used when a command names none.
    pub currency: String,
    /// Seconds a payment request stays open.
    pub request_ttl_secs: u64,
    /// Directory of the restore sentinel; must not be inside any backup of the home
    /// directory. Default: `$MESHPAY_STATE_DIR`, else `$XDG_STATE_HOME/meshpay`, else
    /// `~/.local/state/meshpay`.
    pub sentinel_dir: Option<PathBuf>,
}

impl Default for WalletConfig {
    fn default() -> Self {
        Self {
            currency: "KES".into(),
            request_ttl_secs: 900,
            sentinel_dir: None,
        }
    }
}

/// The file `meshpay init` writes: the defaults, documented.
pub const TEMPLATE: &str = r#"# meshpay node configuration. Every key is optional; the values shown are the defaults.

[network]
# Multiaddresses to listen on (TCP and QUIC on every interface, ports chosen by the system).
listen = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
# Peers to dial at start, e.g. "/ip4/192.168.1.20/tcp/4001".
peers = []
# Find other meshpay devices on the local network with mDNS (`meshpay run --no-mdns` turns it off).
mdns = true
# Seconds to wait for a peer's answer.
request_timeout_secs = 10

[wallet]
# Currency used when a command names none (amounts are always in minor units, e.g. cents).
currency = "KES"
# Seconds a payment request stays open.
request_ttl_secs = 900
# Where the restore sentinel lives; keep it out of backups of this directory.
# sentinel_dir = "/var/lib/meshpay-state"

[mesh]
# Most megabytes of bundles (sealed records, receipts, notices, proofs) carried for others.
quota_mb = 64
# Most megabytes carried from any one peer.
quota_per_peer_mb = 16
# Seconds between syncs with each connected peer (also on every new connection).
sync_secs = 30
# Most kilobytes of bundles handed to one peer per sync.
budget_kb = 4096
# How records travel: "epidemic" (to everyone, until a receipt purges them), "spray-and-wait"
# (at most `copies` carriers, then only to a gateway), "direct" (only to a gateway), "prophet"
# (to a peer likelier to meet a gateway), "spray-and-focus" (`copies` carriers, then the
# last copy moves to a likelier one) or "maxprop" (to everyone, the likeliest to reach a
# gateway first).
routing = "epidemic"
copies = 6
# Spray-and-wait: "binary" (each carrier passes on half its copies) or "source" (only the
# node that made the record hands out copies, one each).
spray_mode = "binary"
# Settlement server to upload to whenever it is reachable (makes this node a gateway).
# gateway = "https://settle.example.org"
gateway_secs = 30

[issuer]
# Certificate authorities (PEM) to trust for settlement servers' HTTPS, besides the system's
# (SSL_CERT_FILE and SSL_CERT_DIR are honoured too). For an issuer with a private CA.
# ca_file = "/etc/meshpay/issuer-ca.pem"

[ble]
# Find and pay nearby devices over Bluetooth LE through BlueZ (`meshpay run --ble` turns it on).
enabled = false
# The adapter, by name or address; the default adapter when unset.
# adapter = "hci0"
# Advertise the meshpay service (peripheral) and scan for it (central).
peripheral = true
central = true
# Seconds to wait for a peer's answer over BLE.
request_timeout_secs = 20

[ui]
# Serve the web app (take payments, today, alerts, wallet, mesh) on this address, as
# `meshpay run --ui`. Keep it on loopback unless a LAN must reach it: every browser pairs with
# a one-time link that `meshpay run` and `meshpay pair` print.
# listen = "127.0.0.1:8080"
# Wallet payments from the web app ask for the PIN set at `init` (or the passphrase when no PIN
# is set) once they and what was paid without the PIN in the last 12 hours pass this many minor
# units; 0 asks for every payment.
confirm_above = 0
# On a LAN address, serve the app over HTTPS: on plain HTTP anyone on the same Wi-Fi can read
# the session and the PIN as they pass.
# tls_cert = "/etc/meshpay/ui-cert.pem"
# tls_key = "/etc/meshpay/ui-key.pem"
"#;

impl Config {
    /// Reads the config file (missing file: defaults).
    pub fn load(home: &Home) -> Result<Self, ConfigError> {
        let path = home.config();
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|error| ConfigError::Parse { path, error }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(ConfigError::Read { path, error }),
        }
    }

    /// The sentinel directory.
    pub fn sentinel_dir(&self) -> PathBuf {
        if let Some(d) = &self.wallet.sentinel_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("MESHPAY_STATE_DIR") {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
            return PathBuf::from(d).join("meshpay");
        }
        std::env::var_os("HOME").map_or_else(
            || PathBuf::from(".meshpay-state"),
            |h| PathBuf::from(h).join(".local/state/meshpay"),
        )
    }
}

/// Reports a failure to make a sentinel file owner-only. The sentinel's job is durability: a
/// file system that cannot change modes (or a directory owned by someone else) must not stop
/// the wallet from paying, so the failure is logged and the write goes on.
fn owner_only(path: &Path, r: std::io::Result<()>) {
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), error = %e, "cannot make the sentinel owner-only");
    }
}

/// The restore sentinel: the wallet epoch, kept outside the wallet's directory (SPEC.md §7).
#[derive(Debug, Clone)]
pub struct Sentinel {
    path: PathBuf,
}

impl Sentinel {
    /// The sentinel of the wallet with this device key, in `dir`.
    pub fn new(dir: &Path, device_hex: &str) -> Self {
        Self {
            path: dir.join(format!("{device_hex}.epoch")),
        }
    }

    /// The epoch in the sentinel, if any.
    pub fn read(&self) -> std::io::Result<Option<u64>> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => s.trim().parse().map(Some).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "sentinel is not a number")
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn spent_path(&self) -> PathBuf {
        self.path.with_extension("spent")
    }

    /// Allowances this wallet (or any earlier copy of it on this device) has spent from.
    pub fn spent(&self) -> std::io::Result<Vec<meshpay_protocol::AllowanceId>> {
        match std::fs::read_to_string(self.spent_path()) {
            Ok(s) => Ok(s
                .lines()
                .filter_map(meshpay_protocol::AllowanceId::from_hex)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The sentinel's directory, made (or kept) owner-only: its files show the device key,
    /// how many payments it made and the allowances it spent from.
    fn private_dir(&self) -> std::io::Result<&Path> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            owner_only(
                dir,
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700)),
            );
        }
        Ok(dir)
    }

    /// Records durably that the wallet spent from `id` (appends one line and fsyncs).
    pub fn record_spent(&self, id: &meshpay_protocol::AllowanceId) -> std::io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let dir = self.private_dir()?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.spent_path())?;
        owner_only(
            &self.spent_path(),
            f.set_permissions(std::fs::Permissions::from_mode(0o600)),
        );
        writeln!(f, "{}", id.to_hex())?;
        f.sync_all()?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// Writes the epoch durably (write, fsync, rename, fsync the directory).
    pub fn write(&self, epoch: u64) -> std::io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let dir = self.private_dir()?;
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        owner_only(
            &tmp,
            f.set_permissions(std::fs::Permissions::from_mode(0o600)),
        );
        writeln!(f, "{epoch}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, TEMPLATE};

    #[test]
    fn the_template_parses_and_every_routing_name_is_known() {
        let c: Config = toml::from_str(TEMPLATE).expect("the template parses");
        assert_eq!(c.mesh.spray_mode, "binary");
        let mut mesh = c.mesh;
        for name in [
            "epidemic",
            "spray-and-wait",
            "direct",
            "prophet",
            "spray-and-focus",
            "maxprop",
        ] {
            mesh.routing = name.into();
            assert!(mesh.routing().is_ok(), "{name}");
        }
        mesh.routing = "spray-and-wait".into();
        mesh.spray_mode = "source".into();
        assert!(mesh.routing().is_ok());
        mesh.spray_mode = "both".into();
        assert!(mesh.routing().is_err());
    }
}
