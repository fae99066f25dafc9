//! A harness for tests that run real `meshpay` processes: homes in temporary directories,
//! daemons on loopback, the CLI, and a development issuer.
//!
//! The `meshpay` binary is the one `cargo test --workspace` builds (`target/<profile>/meshpay`).
//! Waiting is always on an event or a condition with a deadline, never a bare sleep.

pub mod issuer_api;
pub mod load;

use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
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
    for krate in ["protocol/src", "transports/src", "node/src"] {
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
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
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
    child: Option<Child>,
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
            child: None,
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
            child: None,
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

    /// The `meshpay` command for this node's home and environment (not started).
    pub fn command(&self) -> Command {
        let mut c = Command::new(meshpay_bin());
        c.arg("--home")
            .arg(&self.home)
            .env("MESHPAY_PASSPHRASE", "test passphrase")
            .env("MESHPAY_STATE_DIR", &self.state)
            .env(
                "MESHPAY_LOG",
                std::env::var("MESHPAY_TEST_LOG").unwrap_or_else(|_| "info,libp2p=warn".into()),
            )
            .env_remove("MESHPAY_HOME")
            .env_remove("MESHPAY_FAULT");
        c
    }

    /// Runs a CLI command.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run meshpay")
    }

    /// Runs a CLI command that must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{}: meshpay {args:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: meshpay {args:?} printed no JSON ({e}): {}",
                self.name,
                String::from_utf8_lossy(&out.stdout)
            )
        })
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
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.with_extension("log"))
            .expect("log file");
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
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let log = self.home.with_extension("log");
        let (child, line) =
            spawn_ready(&mut cmd, &format!("{} (log: {})", self.name, log.display()));
        let v: Value = serde_json::from_str(&line).expect("ready line is JSON");
        assert_eq!(v["event"], "ready");
        self.ready = v.clone();
        self.listen = v["listen"]
            .as_array()
            .expect("listen list")
            .iter()
            .map(|a| a.as_str().expect("address").to_owned())
            .collect();
        v["device_key"]
            .as_str()
            .expect("device key")
            .clone_into(&mut self.device);
        self.child = Some(child);
    }

    /// The TCP address with the peer id, for `--peer`.
    pub fn tcp_addr(&self) -> String {
        let peer = self.json(&["id", "--json"])["peer_id"]
            .as_str()
            .expect("peer id")
            .to_owned();
        let tcp = self
            .listen
            .iter()
            .find(|a| a.contains("/tcp/"))
            .expect("a TCP listener");
        format!("{tcp}/p2p/{peer}")
    }

    /// Stops the daemon gracefully.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            wait_child(&mut child, &self.name);
        }
    }

    /// Kills the daemon at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for a daemon that is expected to die by itself (a fault), returning whether it
    /// was killed by a signal (abort).
    pub fn wait_crash(&mut self) -> bool {
        let mut child = self.child.take().expect("running");
        let status = wait_child(&mut child, &self.name);
        !status.success()
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the daemon is still running.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().is_ok_and(|s| s.is_none()),
            None => false,
        }
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
    let out = cmd.output().expect("run meshpay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Spawns a daemon whose stdout is piped and returns it with its first line (its ready line),
/// killing it and failing if none comes within [`DEADLINE`].
fn spawn_ready(cmd: &mut Command, what: &str) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn meshpay");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the first line, so a later write never meets a closed pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    if let Ok(line) = rx.recv_timeout(DEADLINE) {
        (child, line)
    } else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not start");
    }
}

fn wait_child(child: &mut Child, name: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("{name} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
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
    child: Option<Child>,
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
            child: None,
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
            child: None,
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
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("log");
        let mut cmd = self.command();
        cmd.stdout(Stdio::piped()).stderr(log);
        let (child, line) = spawn_ready(&mut cmd, "settlement server");
        let v: Value = serde_json::from_str(&line).expect("JSON");
        v["url"].as_str().expect("url").clone_into(&mut self.url);
        self.child = Some(child);
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// Kills the server at once.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The descriptor file.
    pub fn descriptor(&self) -> PathBuf {
        self.dir.join("descriptor.cbor")
    }
}

impl Drop for SettleServer {
    fn drop(&mut self) {
        self.kill();
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
    std::fs::create_dir_all(to).expect("create the copy");
    for e in std::fs::read_dir(from)
        .expect("read the directory")
        .flatten()
    {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "control.sock" && e.file_name() != "control.token" {
            std::fs::copy(e.path(), target).expect("copy a file");
        }
    }
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
    let ok = Command::new("sh")
        .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dbus-daemon"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "dbus-daemon is missing and could not be installed (apt-get install dbus-daemon)"
    );
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
