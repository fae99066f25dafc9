//! The `meshpay` command line.

use crate::api::{Answer, Request as Ctl};
use crate::config::{Home, TEMPLATE};
use crate::control;
use crate::daemon::{Node, RunOptions};
use crate::store::Store;
use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use meshpay_protocol::device::SentStatus;
use meshpay_protocol::{DeviceSecret, PrintableKey};
use serde_json::Value;
use std::path::PathBuf;

/// meshpay: pay and get paid with no coverage, over Bluetooth LE or local Wi-Fi.
///
/// A device holds an allowance from an issuer (its settlement server) and pays with signed
/// IOUs that carry double-spend counters. Start a node with `meshpay init` then `meshpay run`;
/// the other commands talk to the running node. Amounts are in minor units (cents): 1250 is
/// 12.50.
#[derive(Parser)]
#[command(version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// The node's home directory [default: $MESHPAY_HOME, else ~/.meshpay]. Run several nodes
    /// on one machine by giving each its own.
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Copy)]
struct Json {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// What `run` and `relay` share: links and the gateway role.
#[derive(Args, Clone)]
struct NetArgs {
    /// Listen on this multiaddress instead of the config's (repeatable), e.g.
    /// /ip4/127.0.0.1/tcp/4001.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Dial this peer at start (repeatable), e.g. /ip4/192.168.1.20/tcp/4001.
    #[arg(long, value_name = "MULTIADDR")]
    peer: Vec<String>,
    /// Do not discover peers with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Be a gateway: upload the mesh's records to this settlement server whenever it is
    /// reachable, and bring its receipts, fraud proofs and revocations into the mesh.
    #[arg(long, value_name = "URL")]
    gateway: Option<String>,
    /// Also find and pay nearby devices over Bluetooth LE (BlueZ): advertise the meshpay
    /// service and connect to others that do. Without an adapter or BlueZ the node says why
    /// and runs on its other links.
    #[arg(long)]
    ble: bool,
    /// Serve the web app (take payments, today, alerts, wallet, mesh) on this address, e.g.
    /// 127.0.0.1:8080 (or `[ui] listen`). A browser pairs once with the one-time link printed
    /// at start (`meshpay pair` prints a new one); give a LAN address only to reach it from
    /// another device on the same Wi-Fi.
    #[arg(long, value_name = "ADDR")]
    ui: Option<String>,
    /// Serve the web app over HTTPS with this certificate chain (PEM; or `[ui] tls_cert`).
    /// On a LAN address, plain HTTP lets anyone on the same Wi-Fi read the session and the PIN.
    #[arg(long, value_name = "PEM", requires_all = ["ui_tls_key"])]
    ui_tls_cert: Option<PathBuf>,
    /// The key of --ui-tls-cert (PEM; or `[ui] tls_key`).
    #[arg(long, value_name = "PEM", requires_all = ["ui_tls_cert"])]
    ui_tls_key: Option<PathBuf>,
    /// Print one JSON line when ready (device key, addresses).
    #[arg(long)]
    json: bool,
}

impl NetArgs {
    fn options(self, relay: bool, quota_kb: Option<u64>) -> RunOptions {
        RunOptions {
            listen: self.listen,
            peers: self.peer,
            no_mdns: self.no_mdns,
            gateway: self.gateway,
            relay,
            quota_kb,
            ble: self.ble,
            ui: self.ui,
            ui_tls: self.ui_tls_cert.zip(self.ui_tls_key),
            sentinel_dir: None,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a wallet: a device key (encrypted with a passphrase), the database, config.toml.
    ///
    /// The passphrase comes from $MESHPAY_PASSPHRASE or is asked for; it needs at least 8
    /// characters.
    Init {
        /// Accept a passphrase shorter than 8 characters (tests and demos only: the device key
        /// is only as safe as its passphrase).
        #[arg(long)]
        weak_passphrase: bool,
        /// Also set a PIN (4 to 12 digits, from $MESHPAY_PIN or asked for) that the web app
        /// asks for before a wallet payment above `[ui] confirm_above`; without one it asks for
        /// the passphrase.
        #[arg(long)]
        pin: bool,
        #[command(flatten)]
        json: Json,
    },
    /// Run the node: wallet, links (libp2p TCP/QUIC, mDNS) and the control socket.
    Run(NetArgs),
    /// Run a relay: a node with no wallet and no money that carries bundles (sealed records,
    /// receipts, notices, fraud proofs) between the people it meets, within a storage quota,
    /// and collects signed hand-over receipts for what it carried.
    ///
    /// The first run creates the relay's device key in the home directory (owner-only; it
    /// guards no money, so no passphrase is asked for). With --gateway the relay also uploads
    /// what it carries whenever that settlement server is reachable.
    Relay {
        #[command(flatten)]
        net: NetArgs,
        /// Most kilobytes of bundles to carry [default: the config's `[mesh] quota_mb`].
        #[arg(long, value_name = "KB")]
        quota_kb: Option<u64>,
    },
    /// This device: its key, peer id and addresses.
    Id(Json),
    /// Peers connected now, and the link each is on.
    Peers(Json),
    /// Ask to be paid: prints a payment request as text and as a QR code.
    Request {
        /// Amount in minor units.
        amount: u64,
        /// Note for the payer (at most 80 bytes).
        #[arg(long, default_value = "")]
        memo: String,
        /// Currency [default: the config's].
        #[arg(long)]
        currency: Option<String>,
        #[command(flatten)]
        json: Json,
    },
    /// Pay a payment request (pasted or scanned `mpreq1…`), or a connected peer an amount.
    ///
    /// Paying the same request twice sends the same IOU again: it never pays twice.
    ///
    /// Retrying is safe. When `pay --to` answers "pending" the wallet keeps re-sending the
    /// payment by itself; running the same `pay --to PAYEE --amount N` again while it is
    /// pending, or within 5 minutes after a re-send got it acknowledged, shows that payment
    /// instead of paying a second time. To pay the same amount to the same payee once more on
    /// purpose, add --again. Scripts can pass --id KEY: a payment made under KEY is answered
    /// whenever the same KEY comes again, and never paid twice.
    Pay {
        /// The payment request text.
        request: Option<String>,
        /// Or: the payee's device key (mpdev1…); needs --amount.
        #[arg(long, value_name = "DEVICE_KEY", conflicts_with = "request")]
        to: Option<String>,
        /// Amount in minor units, with --to.
        #[arg(long, requires = "to")]
        amount: Option<u64>,
        /// Currency [default: the config's], with --to.
        #[arg(long)]
        currency: Option<String>,
        /// Note for the payee, with --to.
        #[arg(long)]
        memo: Option<String>,
        /// With --to: pay even if the same payment was made moments ago (see above).
        #[arg(long, requires = "to")]
        again: bool,
        /// Idempotency key (1 to 128 characters) for scripts: a payment already made under it
        /// is answered instead of paid again.
        #[arg(long, value_name = "KEY")]
        id: Option<String>,
        #[command(flatten)]
        json: Json,
    },
    /// What can be spent, and what was paid and received, per currency.
    Balance(Json),
    /// Payments sent and received, oldest first.
    History(Json),
    /// Allowances: list them, or add a certificate from an issuer.
    Allowance {
        /// Add the allowance certificate in this file.
        #[arg(long, value_name = "FILE")]
        add: Option<PathBuf>,
        #[command(flatten)]
        json: Json,
    },
    /// Trust an issuer: add its descriptor (a file from the issuer).
    Trust {
        /// The descriptor file.
        file: PathBuf,
        #[command(flatten)]
        json: Json,
    },
    /// Fraud proofs this node holds (double spends it caught).
    Frauds(Json),
    /// What needs attention: fraud proofs, revocations, a restore found at start, peers dropped
    /// for breaking the rules. Newest first.
    Alerts(Json),
    /// Payments this node refused since it started (a double spend, an expired request, an
    /// allowance proven forked …), with the reason, newest first.
    Refusals(Json),
    /// A new one-time link (and QR code) that pairs a browser with the node's web app. The
    /// link opens a session once, within 10 minutes; a paired browser keeps its session.
    Pair(Json),
    /// Get an allowance online: the issuer locks AMOUNT of this device's account in escrow.
    Topup {
        /// Amount in minor units.
        amount: u64,
        /// The settlement server's URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        issuer: String,
        /// Currency [default: the config's].
        #[arg(long)]
        currency: Option<String>,
        /// Days the allowance is valid.
        #[arg(long, default_value_t = 7)]
        days: u64,
        #[command(flatten)]
        json: Json,
    },
    /// Settle online: upload this node's sealed records to the issuer and fetch its receipts.
    SyncIssuer {
        /// The settlement server's URL.
        #[arg(long)]
        issuer: String,
        #[command(flatten)]
        json: Json,
    },
    /// The sealed settlement records of received payments, in hex (for a gateway or a file).
    Records(Json),
    /// The mesh store: bundles carried by kind, bytes, tombstones, and the hand-over
    /// receipts peers signed for what this node carried to them (proof of carriage).
    Mesh(Json),
    /// Sync bundles with every connected peer now (it also happens on connect and every
    /// `[mesh] sync_secs`).
    Sync(Json),
    /// Write every bundle this node carries to a file, for a trip with no radio.
    Export {
        /// The file to write.
        #[arg(long)]
        out: std::path::PathBuf,
        #[command(flatten)]
        json: Json,
    },
    /// Take in bundles from a file written by `meshpay export`. Each bundle is checked like
    /// one from a peer; a corrupted or oversized file is refused whole.
    Import {
        /// The file to read.
        file: std::path::PathBuf,
        #[command(flatten)]
        json: Json,
    },
    /// Connect to a peer now, and wait (at most 10 s) until it is connected.
    ///
    /// Exits non-zero with the reason when the peer cannot be reached.
    Dial {
        /// Its multiaddress, e.g. /ip4/192.168.1.20/tcp/4001.
        addr: String,
        #[command(flatten)]
        json: Json,
    },
    /// Check a printed device key and point at typos.
    CheckKey {
        /// The key (mpdev1…).
        key: String,
        #[command(flatten)]
        json: Json,
    },
    /// Run the demo: a settlement server, a vendor and shoppers as real processes on loopback;
    /// shoppers top up, pay offline, a cloned wallet is caught double spending, records settle.
    Demo,
    /// Issuer keys: `meshpay issuer init`.
    #[cfg(feature = "settle")]
    #[command(subcommand)]
    Issuer(crate::settle_cli::IssuerCmd),
    /// The settlement server: `meshpay settle serve`.
    #[cfg(feature = "settle")]
    #[command(subcommand)]
    Settle(crate::settle_cli::SettleCmd),
    /// Tools for tests and development. NOT FOR MONEY.
    #[command(subcommand)]
    Dev(crate::dev::Dev),
}

/// Where the wallet keeps its PIN: a known value sealed under it (Argon2id, like the key).
pub const PIN_META: &str = "ui_pin";
/// What the PIN seals.
pub const PIN_CHECK: &[u8] = b"meshpay pin";

fn pin() -> Result<String> {
    let p = if let Ok(p) = std::env::var("MESHPAY_PIN") {
        p
    } else {
        let p = rpassword::prompt_password("PIN: ")
            .context("cannot read a PIN (set MESHPAY_PIN for scripts)")?;
        if rpassword::prompt_password("again: ")? != p {
            bail!("the PINs differ");
        }
        p
    };
    if !(4..=12).contains(&p.len()) || !p.bytes().all(|b| b.is_ascii_digit()) {
        bail!("the PIN must be 4 to 12 digits");
    }
    Ok(p)
}

fn passphrase(confirm: bool) -> Result<String> {
    if let Ok(p) = std::env::var("MESHPAY_PASSPHRASE") {
        return Ok(p);
    }
    let p = rpassword::prompt_password("passphrase: ")
        .context("cannot read a passphrase (set MESHPAY_PASSPHRASE for scripts)")?;
    if confirm && rpassword::prompt_password("again: ")? != p {
        bail!("the passphrases differ");
    }
    Ok(p)
}

fn print(json: bool, data: &Value, text: impl FnOnce(&Value) -> String) {
    if json {
        println!("{data}");
    } else {
        println!("{}", text(data));
    }
}

/// Runs the command line.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    let home = Home::resolve(cli.home);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(dispatch(home, cli.command))
}

/// The control request a query or action command sends to the daemon, and whether it asked
/// for JSON.
fn control_request(command: &Command) -> Result<(Ctl, bool)> {
    Ok(match command {
        Command::Id(j) => (Ctl::Id, j.json),
        Command::Peers(j) => (Ctl::Peers, j.json),
        Command::Request {
            amount,
            memo,
            currency,
            json,
        } => (
            Ctl::Request {
                amount: *amount,
                currency: currency.clone(),
                memo: Some(memo.clone()),
            },
            json.json,
        ),
        Command::Balance(j) => (Ctl::Balance, j.json),
        Command::History(j) => (Ctl::History, j.json),
        Command::Allowance { add, json } => match add {
            Some(file) => {
                let bytes = std::fs::read(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let cert = hex::encode(bytes);
                (Ctl::AddAllowance { cert }, json.json)
            }
            None => (Ctl::Allowances, json.json),
        },
        Command::Trust { file, json } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let descriptor = hex::encode(bytes);
            (Ctl::Trust { descriptor }, json.json)
        }
        Command::Frauds(j) => (Ctl::Frauds, j.json),
        Command::Alerts(j) => (Ctl::Alerts, j.json),
        Command::Refusals(j) => (Ctl::Refusals, j.json),
        Command::Pair(j) => (Ctl::Pair, j.json),
        Command::Topup {
            amount,
            issuer,
            currency,
            days,
            json,
        } => (
            Ctl::Topup {
                url: issuer.clone(),
                amount: *amount,
                currency: currency.clone(),
                days: *days,
            },
            json.json,
        ),
        Command::SyncIssuer { issuer, json } => (
            Ctl::SyncIssuer {
                url: issuer.clone(),
            },
            json.json,
        ),
        Command::Mesh(j) => (Ctl::Mesh, j.json),
        Command::Sync(j) => (Ctl::Sync, j.json),
        Command::Export { out, json } => {
            let path = std::path::absolute(out)?.display().to_string();
            (Ctl::Export { path }, json.json)
        }
        Command::Import { file, json } => {
            let path = std::path::absolute(file)?.display().to_string();
            (Ctl::Import { path }, json.json)
        }
        Command::Records(j) => (Ctl::Records, j.json),
        Command::Dial { addr, json } => (Ctl::Dial { addr: addr.clone() }, json.json),
        _ => bail!("this command does not go to the daemon"),
    })
}

/// Prints a control answer: as the API returns it with `--json`, else as text.
fn show(json: bool, answer: &Answer) {
    if json {
        println!("{}", serde_json::to_string(answer).unwrap_or_default());
    } else {
        println!("{}", crate::render::text(answer));
    }
}

async fn dispatch(home: Home, command: Command) -> Result<()> {
    match command {
        Command::Init {
            weak_passphrase,
            pin,
            json,
        } => init(&home, json.json, weak_passphrase, pin).await,
        Command::Run(net) => {
            let json = net.json;
            run(&home, net.options(false, None), json).await
        }
        Command::Relay { net, quota_kb } => {
            let pass = relay_home(&home).await?;
            let json = net.json;
            run_with(&home, net.options(true, quota_kb), json, pass).await
        }
        Command::Pay {
            request,
            to,
            amount,
            currency,
            memo,
            again,
            id,
            json,
        } => {
            if request.is_none() && (to.is_none() || amount.is_none()) {
                bail!("give a payment request, or --to DEVICE_KEY with --amount");
            }
            let request = Ctl::Pay {
                request,
                to,
                amount,
                currency,
                memo,
                again,
                id,
            };
            let answer = control::call(&home, request).await?;
            if let (false, Answer::Paid(o)) = (json.json, &answer) {
                if let Some(note) = &o.repeated {
                    eprintln!("meshpay: {note}");
                }
            }
            show(json.json, &answer);
            if matches!(&answer, Answer::Paid(o) if o.status == SentStatus::Refused) {
                std::process::exit(3);
            }
            Ok(())
        }
        Command::CheckKey { key, json } => {
            let k = meshpay_protocol::DeviceKey::from_text(&key)?;
            let d = serde_json::json!({"valid": true, "device_key": k.to_text(), "short": k.short(),
                "peer_id": meshpay_transports::p2p::peer_id_of(&k).map(|p| p.to_string())});
            print(json.json, &d, |_| format!("ok: {}", k.short()));
            Ok(())
        }
        Command::Demo => crate::demo::run().await,
        Command::Dev(d) => crate::dev::run(d),
        #[cfg(feature = "settle")]
        Command::Issuer(c) => crate::settle_cli::issuer(c),
        #[cfg(feature = "settle")]
        Command::Settle(c) => {
            init_logs();
            crate::settle_cli::settle(c).await
        }
        query => {
            let (request, json) = control_request(&query)?;
            show(json, &control::call(&home, request).await?);
            Ok(())
        }
    }
}

async fn init(home: &Home, json: bool, weak: bool, with_pin: bool) -> Result<()> {
    if holds_wallet(home) {
        bail!("{} already holds a wallet", home.dir.display());
    }
    let pass = passphrase(true)?;
    check_passphrase(&pass, weak)?;
    let pin = if with_pin { Some(pin()?) } else { None };
    let key = create_wallet(home, &pass, crate::keystore::Cost::default())
        .await?
        .to_text();
    if let Some(pin) = pin {
        let store = Store::open(&home.wallet_db(), false).await?;
        let sealed = crate::keystore::seal(PIN_CHECK, &pin, crate::keystore::Cost::default())?;
        store.set_meta(PIN_META, &sealed).await?;
        store.close().await;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"device_key": key, "home": home.dir})
        );
    } else {
        println!(
            "created a wallet in {}\ndevice key {key}\nnext: `meshpay run`",
            home.dir.display()
        );
    }
    Ok(())
}

/// Shortest passphrase `init` takes without `--weak-passphrase`.
pub const MIN_PASSPHRASE: usize = 8;

/// Refuses a passphrase too short to resist guessing (unless `weak` is asked for, for tests
/// and demos).
pub fn check_passphrase(pass: &str, weak: bool) -> Result<()> {
    if !weak && pass.chars().count() < MIN_PASSPHRASE {
        bail!(
            "the passphrase must have at least {MIN_PASSPHRASE} characters (it guards the device key; a short one is guessed offline in minutes). For a test or a demo, pass --weak-passphrase"
        );
    }
    Ok(())
}

/// Whether `home` holds a wallet: a `wallet.db` with anything in it.
pub fn holds_wallet(home: &Home) -> bool {
    let db = home.wallet_db();
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    // A database's latest writes may still be in its write-ahead log alone.
    [db, wal.into()]
        .iter()
        .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
}

/// Creates a wallet in `home`: directory (owner-only), a fresh device key sealed under
/// `passphrase`, the database and the documented config file.
pub async fn create_wallet(
    home: &Home,
    passphrase: &str,
    cost: crate::keystore::Cost,
) -> Result<meshpay_protocol::DeviceKey> {
    if holds_wallet(home) {
        bail!("{} already holds a wallet", home.dir.display());
    }
    // An empty wallet.db (truncated, never written) holds nothing to lose.
    let _ = std::fs::remove_file(home.wallet_db());
    std::fs::create_dir_all(&home.dir)
        .with_context(|| format!("cannot create {}", home.dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&home.dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let secret = DeviceSecret::generate(&mut rand_core::OsRng);
    let blob = crate::keystore::seal(secret.seed().as_ref(), passphrase, cost)?;
    let store = Store::open(&home.wallet_db(), true).await?;
    store.set_meta("device_secret", &blob).await?;
    store.set_meta("device_key", &secret.public().0).await?;
    store.close().await;
    if !home.config().exists() {
        std::fs::write(home.config(), TEMPLATE)?;
    }
    Ok(secret.public())
}

/// Logs to standard error: `MESHPAY_LOG` filters (default `info,libp2p=warn`), and
/// `MESHPAY_LOG_FORMAT=json` writes one JSON object per line for log collectors.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHPAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("MESHPAY_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn run(home: &Home, opts: RunOptions, json: bool) -> Result<()> {
    let pass = passphrase(false)?;
    run_with(home, opts, json, pass).await
}

/// Starts the web app when `--ui` or `[ui] listen` asks for it: its address and a first
/// pairing link.
#[cfg(feature = "ui")]
async fn start_ui(
    node: &std::sync::Arc<Node>,
    opts: &RunOptions,
) -> Result<Option<(String, crate::api::PairLink)>> {
    let Some(addr) = opts
        .ui
        .clone()
        .or_else(|| node.ui_settings().listen.clone())
    else {
        return Ok(None);
    };
    let settings = node.ui_settings();
    let tls = match opts
        .ui_tls
        .clone()
        .or_else(|| settings.tls_cert.clone().zip(settings.tls_key.clone()))
    {
        Some((cert, key)) => Some(meshpay_transports::http::tls_acceptor(&cert, &key)?),
        None => None,
    };
    let started = crate::ui::start(std::sync::Arc::clone(node), &addr, tls).await?;
    Ok(Some((started.url, started.pair)))
}

#[cfg(not(feature = "ui"))]
#[allow(clippy::unused_async)] // async as the web app's start is.
async fn start_ui(
    node: &std::sync::Arc<Node>,
    opts: &RunOptions,
) -> Result<Option<(String, crate::api::PairLink)>> {
    if opts.ui.is_some() || node.ui_settings().listen.is_some() {
        bail!("this meshpay was built without the web app (cargo feature `ui`)");
    }
    Ok(None)
}

/// The relay's home: created on first use, with a device key sealed under a random
/// passphrase kept owner-only beside it. Returns that passphrase.
async fn relay_home(home: &Home) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let secret_file = home.dir.join("relay.secret");
    if let Ok(p) = std::fs::read_to_string(&secret_file) {
        return Ok(p.trim().to_owned());
    }
    if home.wallet_db().exists() {
        bail!(
            "{} holds a wallet: run it with `meshpay run` (wallet nodes carry bundles too), or give the relay its own --home",
            home.dir.display()
        );
    }
    let mut raw = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
    let pass = hex::encode(raw);
    create_wallet(home, &pass, crate::keystore::Cost::default()).await?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_file)?;
    std::io::Write::write_all(&mut f, pass.as_bytes())?;
    Ok(pass)
}

async fn run_with(home: &Home, opts: RunOptions, json: bool, pass: String) -> Result<()> {
    init_logs();
    let (node, events) = Node::start(home, &pass, &opts).await?;
    let token = control::make_token(home)?;
    let control_socket = control::bind(home)?;
    let links = tokio::spawn(std::sync::Arc::clone(&node).serve_links(events));
    if let Some(url) = node.gateway_url(&opts) {
        let every = node.gateway_period();
        tokio::spawn(std::sync::Arc::clone(&node).gateway_loop(url, every));
    }
    let server = tokio::spawn(control::serve(
        std::sync::Arc::clone(&node),
        control_socket,
        token,
    ));

    // Wait for the listeners so the ready line carries real addresses.
    let mut addrs = Vec::new();
    for _ in 0..200 {
        addrs = node.listen_addrs().await;
        if !addrs.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let ui = start_ui(&node, &opts).await?;
    let ble = node.start_ble().await;
    if let Some(Err(why)) = &ble {
        tracing::error!("{why}");
        eprintln!("meshpay: {why}; running on the other links");
    }
    let ble_json = match &ble {
        None => serde_json::json!({"state": "off"}),
        Some(Ok(adapter)) => serde_json::json!({"state": "up", "adapter": adapter}),
        Some(Err(why)) => serde_json::json!({"state": "unavailable", "error": why}),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "ready", "device_key": node.device.to_text(),
                "peer_id": meshpay_transports::p2p::peer_id_of(&node.device).map(|p| p.to_string()),
                "listen": addrs, "ble": ble_json, "restore_check": format!("{:?}", node.restore),
                "ui": ui.as_ref().map(|u| &u.0), "ui_pair": ui.as_ref().map(|u| &u.1.url)})
        );
    } else {
        println!(
            "meshpay node {} running; listening on {}",
            node.device.to_text(),
            addrs.join(", ")
        );
        if let Some(Ok(adapter)) = &ble {
            println!("Bluetooth LE up on {adapter}");
        }
        if let Some((url, pair)) = &ui {
            println!(
                "web app on {url}\n{}\npair a browser once with {} (valid 10 minutes; `meshpay pair` prints another)",
                crate::qr::render(&pair.url),
                pair.url
            );
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = server => { r??; }
        _ = links => {}
    }
    let _ = std::fs::remove_file(home.socket());
    let _ = std::fs::remove_file(home.token());
    node.store().close().await;
    Ok(())
}
