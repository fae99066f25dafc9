//! A harness for tests that run real `meshpay` processes: homes in temporary directories,
//! daemons on loopback, the CLI, and a development issuer.
//!
//! The `meshpay` binary is the one `cargo test --workspace` builds (`target/<profile>/meshpay`).
//! Waiting is always on an event or a condition with a deadline, never a bare sleep.

pub mod browser;
pub mod issuer_api;
pub mod load;

use meshpay_harness::{Home, Process};
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The `meshpay` binary under test: `$MESHPAY_TEST_BIN` if set (to run the tests against
/// another build, say the one before a fix, and watch them fail), else the one the workspace
/// build made.
pub fn meshpay_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MESHPAY_TEST_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let bin = dir.join("meshpay");
    assert!(
        bin.exists(),
        "{} is missing: run the whole suite (`./scripts/test.sh`), or `cargo build -p meshpay-node` first",
        bin.display()
    );
    // `cargo test -p meshpay-tests` alone does not rebuild the binary: refuse a stale one.
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .expect("binary mtime");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    for krate in [
        "protocol/src",
        "transports/src",
        "harness/src",
        "settle/src",
        "node/src",
    ] {
        if let Some(newer) = newer_than(&root.join(krate), built) {
            panic!(
                "{} is older than {}: run `cargo build -p meshpay-node` (or the whole suite) first",
                bin.display(),
                newer.display()
            );
        }
    }
    bin
}

fn newer_than(dir: &Path, t: std::time::SystemTime) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(p) = newer_than(&path, t) {
                return Some(p);
            }
        } else if entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|m| m > t)
        {
            return Some(path);
        }
    }
    None
}

/// Waits until `f` returns `Some`, polling every 20 ms, failing after [`DEADLINE`].
pub fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    meshpay_harness::wait_until(what, DEADLINE, f).unwrap_or_else(|e| panic!("{e}"))
}

/// One node: a home directory, and a daemon when running.
pub struct TestNode {
    /// Name, for messages.
    pub name: String,
    /// The home directory.
    pub home: PathBuf,
    /// The sentinel directory.
    pub state: PathBuf,
    /// The device key (mpdev1…).
    pub device: String,
    /// Listen addresses of the running daemon.
    pub listen: Vec<String>,
    /// Environment for the daemon (faults, …).
    pub env: Vec<(String, String)>,
    /// The daemon's ready line.
    pub ready: Value,
    daemon: Option<Process>,
    relay: bool,
}

impl TestNode {
    /// Creates a wallet in `root/name`.
    pub fn init(root: &Path, name: &str) -> Self {
        let home = root.join(name);
        let state = root.join(format!("{name}-state"));
        let mut node = Self {
            name: name.to_owned(),
            home,
            state,
            device: String::new(),
            listen: Vec::new(),
            env: Vec::new(),
            ready: Value::Null,
            daemon: None,
            relay: false,
        };
        let v = node.json(&["init", "--json"]);
        v["device_key"]
            .as_str()
            .expect("device key")
            .clone_into(&mut node.device);
        node
    }

    /// A node over an existing home (a copied wallet directory).
    pub fn existing(home: PathBuf, state: PathBuf, name: &str, device: &str) -> Self {
        Self {
            name: name.to_owned(),
            home,
            state,
            device: device.to_owned(),
            listen: Vec::new(),
            env: Vec::new(),
            ready: Value::Null,
            daemon: None,
            relay: false,
        }
    }

    /// A whole-device copy of this (stopped) node, wallet directory and sentinel alike, in
    /// `root/<name>`: it holds the same key, allowances and counters.
    #[must_use]
    pub fn clone_device(&self, root: &Path, name: &str) -> Self {
        let home = root.join(name);
        let state = root.join(format!("{name}-state"));
        copy_dir(&self.home, &home);
        copy_dir(&self.state, &state);
        Self::existing(home, state, name, &self.device)
    }

    /// Replaces `from` with `to` in the node's `config.toml` (which must contain `from`).
    pub fn edit_config(&self, from: &str, to: &str) {
        let path = self.home.join("config.toml");
        let text = std::fs::read_to_string(&path).expect("config.toml");
        assert!(
            text.contains(from),
            "{}: no `{from}` in config.toml",
            self.name
        );
        std::fs::write(&path, text.replace(from, to)).expect("write config.toml");
    }

    /// A relay (`meshpay relay`): no wallet; its home is made on first start.
    pub fn relay(root: &Path, name: &str) -> Self {
        let mut n = Self::existing(
            root.join(name),
            root.join(format!("{name}-state")),
            name,
            "",
        );
        n.relay = true;
        n
    }

    /// How the harness runs `meshpay` on this node's home.
    fn cli_home(&self) -> Home {
        Home {
            name: self.name.clone(),
            bin: meshpay_bin(),
            dir: self.home.clone(),
            state: self.state.clone(),
            passphrase: "test passphrase".into(),
            log_filter: std::env::var("MESHPAY_TEST_LOG")
                .unwrap_or_else(|_| "info,libp2p=warn".into()),
        }
    }

    /// The `meshpay` command for this node's home and environment (not started).
    pub fn command(&self) -> Command {
        self.cli_home().command()
    }

    /// Runs a CLI command.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_home()
            .output(args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a CLI command that must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        self.cli_home().json(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the daemon on loopback with mDNS off, plus `extra` arguments, and waits for its
    /// ready line.
    pub fn start(&mut self, extra: &[&str]) {
        let mut args = vec![
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ];
        args.extend_from_slice(extra);
        self.start_in(None, &args);
    }

    /// Starts the daemon with exactly `args` after `run --json`, inside the network namespace
    /// `netns` if given, and waits for its ready line.
    pub fn start_in(&mut self, netns: Option<&str>, args: &[&str]) {
        assert!(self.daemon.is_none(), "{} is already running", self.name);
        let inner = self.command();
        let mut cmd = match netns {
            None => self.command(),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns])
                    .arg(inner.get_program())
                    .args(inner.get_args());
                for (k, v) in inner.get_envs() {
                    match v {
                        Some(v) => c.env(k, v),
                        None => c.env_remove(k),
                    };
                }
                c
            }
        };
        cmd.args([if self.relay { "relay" } else { "run" }, "--json"])
            .args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let daemon = Process::start(
            &mut cmd,
            &self.name,
            &self.home.with_extension("log"),
            DEADLINE,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        self.ready = daemon.ready().clone();
        self.listen = daemon.listen();
        self.ready["device_key"]
            .as_str()
            .expect("device key")
            .clone_into(&mut self.device);
        self.daemon = Some(daemon);
    }

    /// The TCP address with the peer id, for `--peer`.
    pub fn tcp_addr(&self) -> String {
        meshpay_harness::dial_addr(&self.ready).unwrap_or_else(|| {
            panic!(
                "{}: no TCP listener or peer id in the ready line {}",
                self.name, self.ready
            )
        })
    }

    /// Stops the daemon gracefully.
    pub fn stop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.stop(DEADLINE).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Kills the daemon at once (SIGKILL).
    pub fn kill(&mut self) {
        drop(self.daemon.take());
    }

    /// Waits for a daemon that is expected to die by itself (a fault), returning whether it
    /// was killed by a signal (abort).
    pub fn wait_crash(&mut self) -> bool {
        let daemon = self.daemon.take().expect("running");
        !daemon
            .wait(DEADLINE)
            .unwrap_or_else(|e| panic!("{e}"))
            .success()
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Process::id)
    }

    /// Whether the daemon is still running.
    pub fn running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(Process::running)
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.with_extension("log")).unwrap_or_default()
    }

    /// Waits until this node lists `other` among its connected peers.
    pub fn wait_peer(&self, other: &str) {
        let log = self.home.with_extension("log");
        wait_for(
            &format!("{} to see {other} (log: {})", self.name, log.display()),
            || {
                let peers = self.json(&["peers", "--json"]);
                peers
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| p["device_key"] == other))
                    .then_some(())
            },
        );
    }

    /// `balance --json` for one currency.
    pub fn balance(&self, currency: &str) -> Value {
        self.json(&["balance", "--json"])[currency].clone()
    }

    /// `history --json`.
    pub fn history(&self) -> Vec<Value> {
        self.json(&["history", "--json"])
            .as_array()
            .expect("history list")
            .clone()
    }
}

/// A field of `/proc/<pid>/status` in megabytes (`VmHWM:` is the peak resident memory).
pub fn proc_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("a process");
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("the field");
    kb / 1024.0
}

/// Runs a command that must succeed.
fn run_ok(cmd: &mut Command) -> Output {
    meshpay_harness::run_ok(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// A development issuer in a directory.
pub struct DevIssuer {
    /// Its directory.
    pub dir: PathBuf,
}

impl DevIssuer {
    /// Creates one in `root/issuer`.
    pub fn new(root: &Path) -> Self {
        let dir = root.join("issuer");
        run_ok(
            Command::new(meshpay_bin())
                .args(["dev", "issuer-init", "--dir"])
                .arg(&dir),
        );
        Self { dir }
    }

    /// The descriptor file.
    pub fn descriptor(&self) -> PathBuf {
        self.dir.join("descriptor.cbor")
    }

    /// The issuer's secret.
    pub fn secret(&self) -> meshpay_protocol::IssuerSecret {
        let text = std::fs::read_to_string(self.dir.join("issuer.secret")).expect("secret");
        let bytes: [u8; 64] = hex::decode(text.trim())
            .expect("hex")
            .try_into()
            .expect("64 bytes");
        meshpay_protocol::IssuerSecret::from_bytes(&bytes)
    }

    /// Makes `node` trust this issuer.
    pub fn trusted_by(&self, node: &TestNode) {
        node.json(&[
            "trust",
            self.descriptor().to_str().expect("utf-8 path"),
            "--json",
        ]);
    }

    /// Gives `node` an allowance of `limit` and returns its id.
    pub fn fund(&self, node: &TestNode, limit: u64) -> String {
        let file = self.dir.join(format!("{}-{limit}.cert", node.name));
        run_ok(
            Command::new(meshpay_bin())
                .args(["dev", "issue-allowance", "--issuer-dir"])
                .arg(&self.dir)
                .args([
                    "--holder",
                    &node.device,
                    "--limit",
                    &limit.to_string(),
                    "--out",
                ])
                .arg(&file),
        );
        let v = node.json(&[
            "allowance",
            "--add",
            file.to_str().expect("utf-8 path"),
            "--json",
        ]);
        v["id"].as_str().expect("id").to_owned()
    }
}

/// How a settlement server process is started beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// More arguments after `settle serve` (`--tls-cert …`, limits, …).
    pub args: Vec<String>,
    /// Run it with this soft and hard limit on open files.
    pub open_files: Option<u32>,
}

/// A settlement server process with its issuer, on loopback, with a settable clock.
pub struct SettleServer {
    /// The issuer's directory.
    pub dir: PathBuf,
    /// Its base URL.
    pub url: String,
    /// The admin token.
    pub token: String,
    /// The database URL.
    pub db: String,
    /// How it is started.
    pub options: ServerOptions,
    server: Option<Process>,
}

impl SettleServer {
    /// Creates an issuer in `root/<name>` and starts its server on a SQLite file there.
    pub fn new(root: &Path, name: &str) -> Self {
        Self::with_db(root, name, None)
    }

    /// Creates an issuer in `root/<name>` and starts its server on `db` (default: a SQLite
    /// file in its directory).
    pub fn with_db(root: &Path, name: &str, db: Option<&str>) -> Self {
        Self::with_options(root, name, db, ServerOptions::default())
    }

    /// Creates an issuer in `root/<name>` and starts its server on `db` with `options`.
    pub fn with_options(root: &Path, name: &str, db: Option<&str>, options: ServerOptions) -> Self {
        let dir = root.join(name);
        run_ok(
            Command::new(meshpay_bin())
                .args(["issuer", "init", "--dir"])
                .arg(&dir)
                .env("MESHPAY_ISSUER_PASSPHRASE", "issuer passphrase"),
        );
        let db = db.map_or_else(
            || format!("sqlite://{}", dir.join("settlement.db").display()),
            str::to_owned,
        );
        let mut s = Self {
            dir,
            url: String::new(),
            token: "test-admin-token-0123456789".into(),
            db,
            options,
            server: None,
        };
        s.start();
        s
    }

    /// Another server process for the same issuer and database (several servers may share a
    /// PostgreSQL database); it logs to the same file.
    #[must_use]
    pub fn twin(&self) -> Self {
        let mut s = Self {
            dir: self.dir.clone(),
            url: String::new(),
            token: self.token.clone(),
            db: self.db.clone(),
            options: self.options.clone(),
            server: None,
        };
        s.start();
        s
    }

    /// The command that runs the server (not started).
    pub fn command(&self) -> Command {
        let mut cmd = match self.options.open_files {
            None => Command::new(meshpay_bin()),
            Some(n) => {
                // A shell sets the limit, then becomes the server.
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(meshpay_bin());
                c
            }
        };
        cmd.args([
            "settle",
            "serve",
            "--json",
            "--test-clock",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &self.db,
            "--dir",
        ])
        .arg(&self.dir)
        .args(&self.options.args)
        .env("MESHPAY_ISSUER_PASSPHRASE", "issuer passphrase")
        .env("MESHPAY_ADMIN_TOKEN", &self.token)
        .env("MESHPAY_LOG", "info");
        cmd
    }

    /// Starts (or restarts) the server process.
    pub fn start(&mut self) {
        assert!(
            self.server.is_none(),
            "the settlement server is already running"
        );
        let server = Process::start(
            &mut self.command(),
            "settlement server",
            &self.dir.with_extension("log"),
            DEADLINE,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        server.ready()["url"]
            .as_str()
            .expect("url in the ready line")
            .clone_into(&mut self.url);
        self.server = Some(server);
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Process::id)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// Kills the server at once.
    pub fn kill(&mut self) {
        drop(self.server.take());
    }

    /// The descriptor file.
    pub fn descriptor(&self) -> PathBuf {
        self.dir.join("descriptor.cbor")
    }
}

/// A certificate authority made for one test, which signs server certificates.
pub struct TestCa {
    /// The CA's certificate (PEM): what a client trusts.
    pub ca: PathBuf,
    dir: PathBuf,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    /// A fresh CA, its files in `dir`.
    pub fn new(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        std::fs::create_dir_all(dir).expect("CA directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "meshpay test CA");
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("write");
        Self {
            ca,
            dir: dir.to_owned(),
            cert,
            key,
        }
    }

    /// A server certificate for `names` (host names or IP addresses) signed by this CA, and
    /// the server options that serve HTTPS with it.
    pub fn server(&self, label: &str, names: &[&str]) -> ServerOptions {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(label));
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("server certificate");
        let (cert_file, key_file) = (
            self.dir.join(format!("{label}.pem")),
            self.dir.join(format!("{label}.key")),
        );
        std::fs::write(&cert_file, cert.pem()).expect("write");
        std::fs::write(&key_file, key.serialize_pem()).expect("write");
        ServerOptions {
            args: vec![
                "--tls-cert".into(),
                cert_file.display().to_string(),
                "--tls-key".into(),
                key_file.display().to_string(),
            ],
            open_files: None,
        }
    }

    /// A client that trusts this CA.
    pub fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca).expect("CA file");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
            .build()
            .expect("client")
    }
}

/// A throwaway PostgreSQL cluster from the machine's binaries, run as the unprivileged
/// `postgres` user, on a loopback port; stopped and deleted on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Postgres {
    /// Starts a cluster, or says why it cannot.
    pub fn start() -> Result<Self, String> {
        if !Path::new(PG_BIN).join("initdb").exists() {
            return Err(format!("no PostgreSQL binaries in {PG_BIN}"));
        }
        let dir = tempfile::Builder::new()
            .prefix("meshpay-pg")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .current_dir("/tmp")
                .output()
                .map_err(|e| format!("runuser: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .map_err(|e| e.to_string())?;
        if !chown.success() {
            return Err(
                "cannot hand the cluster directory to the postgres user (not root?)".into(),
            );
        }
        let data = dir.path().join("data");
        let data = data.to_str().ok_or("path")?;
        run(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            data,
            "-U",
            "meshpay",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ])?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=60 -c shared_buffers=32MB",
            dir.path().display()
        );
        let log = dir.path().join("postgres.log");
        run(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            data,
            "-o",
            &opts,
            "-l",
            log.to_str().ok_or("path")?,
            "-w",
            "-t",
            "30",
            "start",
        ])?;
        Ok(Self { dir, port })
    }

    /// A fresh database in the cluster; its connection URL.
    pub fn database(&self, name: &str) -> String {
        let out = Command::new(format!("{PG_BIN}/createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "meshpay",
                name,
            ])
            .output()
            .expect("createdb");
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://meshpay@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl"), "-D"])
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .current_dir("/tmp")
            .output();
    }
}

/// Copies a node's directory (a whole-device clone), leaving out its control socket and token.
pub fn copy_dir(from: &Path, to: &Path) {
    meshpay_harness::copy_home(from, to).unwrap_or_else(|e| panic!("{e}"));
}

/// A BlueZ D-Bus mock on a private bus, for the real bluer and btleplug code with no radio:
/// a `dbus-daemon` of its own (never the system bus) and `bluezoo` with emulated adapters
/// that see each other. Both stop when this is dropped.
///
/// bluezoo (PyPI, a test tool only) is installed on first use into a virtual environment in
/// the target directory.
pub struct Bluezoo {
    /// The private bus address: give it to nodes as `DBUS_SYSTEM_BUS_ADDRESS`.
    pub bus: String,
    dbus: Child,
    mock: Option<Child>,
}

/// The bluezoo version the tests were written against.
pub const BLUEZOO_VERSION: &str = "1.0.2";

fn bluezoo_bin() -> PathBuf {
    let target = meshpay_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let venv = target.join(format!("bluezoo-{BLUEZOO_VERSION}"));
    let bin = venv.join("bin/bluezoo");
    if bin.exists() {
        return bin;
    }
    // One test installs (a lock directory), the others wait for it. A virtual environment
    // cannot be moved once made: it is made in place.
    let lock = target.join(format!("bluezoo-{BLUEZOO_VERSION}.lock"));
    if std::fs::create_dir(&lock).is_ok() {
        let _ = std::fs::remove_dir_all(&venv);
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", &format!("bluezoo=={BLUEZOO_VERSION}")])
                .status()
                .is_ok_and(|s| s.success());
        let _ = std::fs::remove_dir(&lock);
        assert!(
            ok,
            "cannot install bluezoo {BLUEZOO_VERSION} from PyPI with python3 -m venv and pip"
        );
    } else {
        let start = Instant::now();
        while lock.exists() && start.elapsed() < Duration::from_secs(300) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(bin.exists(), "{} missing after install", bin.display());
    bin
}

fn ensure_dbus_daemon() {
    if Command::new("dbus-daemon")
        .arg("--version")
        .output()
        .is_ok()
    {
        return;
    }
    // A fresh machine may lack it: install Debian's package (tests run as root here).
    if let Err(why) = apt_install("dbus-daemon") {
        panic!("dbus-daemon is missing and could not be installed: {why}");
    }
}

/// Installs Debian's `package` with apt-get (as root), saying why when it cannot.
pub fn apt_install(package: &str) -> Result<(), String> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {package}"
        ))
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("apt-get install {package} failed ({s})")),
        Err(e) => Err(format!("apt-get cannot run: {e}")),
    }
}

impl Bluezoo {
    /// A private bus with no BlueZ on it (for the "BlueZ is not running" case).
    pub fn bus_only(root: &Path) -> Self {
        ensure_dbus_daemon();
        let socket = root.join("dbus.socket");
        let mut dbus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let mut line = String::new();
        BufReader::new(dbus.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("dbus-daemon prints its address");
        Self {
            bus: line.trim().to_owned(),
            dbus,
            mock: None,
        }
    }

    /// A private bus with bluezoo serving one emulated adapter per address in `adapters`.
    pub fn start(root: &Path, adapters: &[&str]) -> Self {
        let bin = bluezoo_bin();
        let mut zoo = Self::bus_only(root);
        let log = std::fs::File::create(root.join("bluezoo.log")).expect("bluezoo log");
        let mut cmd = Command::new(bin);
        cmd.args(["--auto-enable", "--scan-interval", "1"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &zoo.bus)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdout(Stdio::null())
            .stderr(log);
        for a in adapters {
            cmd.args(["-a", a]);
        }
        zoo.mock = Some(cmd.spawn().expect("start bluezoo"));
        let bus = zoo.bus.clone();
        wait_for("bluezoo to own org.bluez", || {
            Command::new("dbus-send")
                .arg(format!("--bus={bus}"))
                .args([
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.bluez",
                ])
                .output()
                .ok()
                .filter(|o| String::from_utf8_lossy(&o.stdout).contains("true"))
                .map(|_| ())
        });
        zoo
    }
}

impl Drop for Bluezoo {
    fn drop(&mut self) {
        if let Some(mut z) = self.mock.take() {
            let _ = z.kill();
            let _ = z.wait();
        }
        let _ = self.dbus.kill();
        let _ = self.dbus.wait();
    }
}
