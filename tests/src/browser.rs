//! Headless Chromium driven over the Chrome DevTools Protocol, for tests of pages that meshpay
//! serves on loopback: load a page as a person's phone would, click, type, take a screenshot,
//! and watch what the page did meanwhile (console errors, failed loads, every request it made).
//!
//! The API is blocking, so plain `#[test]` functions can use it; the socket is served by a
//! runtime on a thread of its own. An async test that serves the page from its own runtime must
//! not block that runtime: it calls the browser from `tokio::task::spawn_blocking`, or runs on a
//! multi-threaded runtime. Every wait has a deadline.
//!
//! Chromium is told that no host resolves but `localhost`, `127.0.0.1` and `::1`, so a page can
//! reach nothing off the machine (serve pages on 127.0.0.1: other loopback addresses do not
//! resolve either); [`Page::offsite_requests`] lists what it tried.

use base64::Engine as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How long Chromium may take to start and accept the DevTools connection.
pub const LAUNCH_DEADLINE: Duration = Duration::from_secs(30);
/// How long one DevTools command may take to be answered.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(30);
/// How long [`Page::goto`] waits for the page's load event.
pub const LOAD_DEADLINE: Duration = Duration::from_secs(15);
/// How often [`Page::wait_for`] evaluates its condition.
pub const POLL: Duration = Duration::from_millis(50);
/// How many console errors, requests and off-site requests a page keeps (each): later ones are
/// dropped, so a page that logs without end cannot exhaust the test's memory.
pub const KEPT: usize = 10_000;

/// How long a test waits for another test process installing Chromium.
const INSTALL_DEADLINE: Duration = Duration::from_secs(600);
/// The longest text kept of one console error or request URL (`data:` URLs can be megabytes).
const KEPT_CHARS: usize = 2048;
/// The largest DevTools message accepted (a full-page screenshot is a few megabytes).
const MAX_MESSAGE: usize = 64 << 20;
/// How many of a page's latest main-frame documents are remembered, for [`Page::goto`].
const COMMITS_KEPT: usize = 16;
/// How many DevTools sessions (a page, its out-of-process frames and workers) are followed.
const MAX_SESSIONS: usize = 1024;

/// The names Chromium goes by on PATH, in order of preference.
const NAMES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// Flags for a quiet, headless, throwaway browser: no first-run UI, no sync, no extensions, no
/// background traffic of its own. `--no-sandbox` because tests run as root, where Chromium's
/// sandbox refuses to start.
const FLAGS: [&str; 17] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--remote-debugging-port=0",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--metrics-recording-only",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--password-store=basic",
    "--use-mock-keychain",
    // Every host fails to resolve but loopback ones: a page cannot reach off the machine. The
    // rules apply to IP literals too, so loopback addresses are excluded one by one (IPv6 without
    // its brackets).
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1 , EXCLUDE ::1",
];

/// Frames in other processes and workers are attached paused, so nothing they request is missed
/// before their events are enabled.
fn auto_attach() -> Value {
    json!({"autoAttach": true, "waitForDebuggerOnStart": true, "flatten": true})
}

/// The target directory the tests were built in (`target/`), for lock files and artifacts such
/// as screenshots.
pub fn target_dir() -> PathBuf {
    // Tests run from target/<profile>/deps/<test binary>.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(std::env::temp_dir)
}

/// Chromium's path on PATH, installing Debian's `chromium` package first if it is missing and
/// this process is root. Concurrent test processes install it once: one holds a lock directory
/// in the target directory while the others wait. Errs with the reason when there is no
/// Chromium to be had, for the caller to report the test as skipped.
pub fn ensure_chromium() -> Result<PathBuf, String> {
    if let Some(path) = find_chromium() {
        return Ok(path);
    }
    if !is_root() {
        return Err(format!(
            "none of {} is on PATH, and only root may install Debian's chromium",
            NAMES.join(", ")
        ));
    }
    let installing = target_dir().join("chromium-install.lock");
    if std::fs::create_dir(&installing).is_ok() {
        let installed = crate::apt_install("chromium");
        let _ = std::fs::remove_dir(&installing);
        installed.map_err(|why| format!("chromium is missing: {why}"))?;
    } else {
        let start = Instant::now();
        while installing.exists() && start.elapsed() < INSTALL_DEADLINE {
            std::thread::sleep(Duration::from_millis(200));
        }
        if installing.exists() {
            return Err(format!(
                "another test has been installing chromium for {INSTALL_DEADLINE:?} (remove {} if it died)",
                installing.display()
            ));
        }
    }
    find_chromium().ok_or_else(|| "chromium is still not on PATH after apt-get install".into())
}

fn find_chromium() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    NAMES.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    })
}

/// Whether this process runs as root (its effective user id is 0).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Whether a request to `url` would leave the machine: its scheme is not one Chromium serves
/// itself (`data:`, `blob:`, `about:`, `chrome:`, `devtools:`, `file:`, …) and its host is not
/// a loopback one (`localhost`, `127.0.0.0/8`, `[::1]`).
pub fn is_offsite(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once(':') else {
        return true;
    };
    let scheme = scheme.to_ascii_lowercase();
    if matches!(
        scheme.as_str(),
        "data"
            | "blob"
            | "about"
            | "chrome"
            | "chrome-error"
            | "chrome-extension"
            | "devtools"
            | "file"
    ) {
        return false;
    }
    let Some(rest) = rest.strip_prefix("//") else {
        return true;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return !v6
            .split_once(']')
            .and_then(|(ip, _)| ip.parse::<Ipv6Addr>().ok())
            .is_some_and(|ip| ip.is_loopback());
    }
    let host = host_port
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    !(host == "localhost" || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// At most [`KEPT_CHARS`] characters of `s`.
fn clip(s: &str) -> String {
    match s.char_indices().nth(KEPT_CHARS) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// The end of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.char_indices().rev().nth(2000).map_or(0, |(i, _)| i);
    text[start..].trim().to_owned()
}

/// Answers to commands in flight, and why the connection ended once it has.
#[derive(Default)]
struct Calls {
    waiting: HashMap<u64, std::sync::mpsc::Sender<Result<Value, String>>>,
    closed: Option<String>,
}

/// The DevTools connection as seen by callers: commands go out through `out`, answers and
/// events come back through [`Link::dispatch`] on the socket's thread.
struct Link {
    out: mpsc::UnboundedSender<String>,
    next_id: AtomicU64,
    calls: Mutex<Calls>,
    /// What each session's events are recorded into (a page's own session, and those of its
    /// frames in other processes and its workers, share the page's).
    sessions: Mutex<HashMap<String, Arc<Events>>>,
}

impl Link {
    fn message(&self, session: Option<&str>, method: &str, params: Value) -> (u64, String) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method});
        msg["params"] = params;
        if let Some(session) = session {
            msg["sessionId"] = session.into();
        }
        (id, msg.to_string())
    }

    /// Sends a command whose answer nobody waits for.
    fn notify(&self, session: Option<&str>, method: &str, params: Value) {
        let (_, msg) = self.message(session, method, params);
        let _ = self.out.send(msg);
    }

    /// Sends a command and waits for its answer, up to [`COMMAND_DEADLINE`].
    fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        let (id, msg) = self.message(session, method, params);
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut calls = lock(&self.calls);
            if let Some(why) = &calls.closed {
                return Err(format!("{method}: {why}"));
            }
            calls.waiting.insert(id, tx);
        }
        if self.out.send(msg).is_err() {
            lock(&self.calls).waiting.remove(&id);
            return Err(format!("{method}: the DevTools connection is gone"));
        }
        match rx.recv_timeout(COMMAND_DEADLINE) {
            Ok(answer) => answer.map_err(|e| format!("{method}: {e}")),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                lock(&self.calls).waiting.remove(&id);
                Err(format!("{method}: no answer in {COMMAND_DEADLINE:?}"))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let why = lock(&self.calls).closed.clone();
                Err(format!(
                    "{method}: {}",
                    why.as_deref().unwrap_or("the DevTools connection is gone")
                ))
            }
        }
    }

    /// Fails every command in flight, and those to come, with `why`.
    fn close(&self, why: String) {
        let mut calls = lock(&self.calls);
        calls.closed = Some(why);
        calls.waiting.clear();
    }

    /// Handles one message from Chromium: an answer to a command, or an event of a session.
    fn dispatch(&self, text: &str) {
        let Ok(mut msg) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if let Some(id) = msg.get("id").and_then(Value::as_u64) {
            let Some(waiter) = lock(&self.calls).waiting.remove(&id) else {
                return;
            };
            let answer = if let Some(e) = msg.get("error") {
                let mut what = e["message"].as_str().unwrap_or("error").to_owned();
                if let Some(data) = e["data"].as_str() {
                    what = format!("{what} ({data})");
                }
                Err(what)
            } else {
                Ok(msg.get_mut("result").map(Value::take).unwrap_or_default())
            };
            let _ = waiter.send(answer);
            return;
        }
        let (Some(session), Some(method)) = (msg["sessionId"].as_str(), msg["method"].as_str())
        else {
            return;
        };
        let Some(events) = lock(&self.sessions).get(session).cloned() else {
            return;
        };
        let params = &msg["params"];
        match method {
            "Target.attachedToTarget" => {
                let Some(child) = params["sessionId"].as_str() else {
                    return;
                };
                {
                    let mut sessions = lock(&self.sessions);
                    if sessions.len() < MAX_SESSIONS {
                        sessions.insert(child.to_owned(), events);
                    }
                }
                // Commands on a session run in order: everything is enabled before it resumes.
                for method in ["Network.enable", "Runtime.enable", "Log.enable"] {
                    self.notify(Some(child), method, json!({}));
                }
                self.notify(Some(child), "Target.setAutoAttach", auto_attach());
                self.notify(Some(child), "Runtime.runIfWaitingForDebugger", json!({}));
            }
            "Target.detachedFromTarget" => {
                if let Some(child) = params["sessionId"].as_str() {
                    lock(&self.sessions).remove(child);
                }
            }
            _ => events.record(method, params),
        }
    }
}

/// Serves the socket until Chromium closes it or `stop` fires, then fails what is in flight.
async fn pump(
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    mut out: mpsc::UnboundedReceiver<String>,
    mut stop: oneshot::Receiver<()>,
    link: Arc<Link>,
) {
    let (mut tx, mut rx) = ws.split();
    let why = loop {
        tokio::select! {
            _ = &mut stop => {
                let closing = tx.send(Message::Close(None));
                let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
                break "the browser was closed".to_owned();
            }
            Some(text) = out.recv() => {
                if let Err(e) = tx.send(Message::text(text)).await {
                    break format!("sending to chromium failed: {e}");
                }
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => link.dispatch(text.as_str()),
                Some(Ok(Message::Close(_))) | None => {
                    break "chromium closed the DevTools connection".to_owned();
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("reading from chromium failed: {e}"),
            },
        }
    };
    link.close(why);
}

/// A DevTools connection being served, and how to stop it.
struct Connected {
    link: Arc<Link>,
    stop: oneshot::Sender<()>,
    socket: JoinHandle<()>,
}

/// A headless Chromium process and the DevTools connection to it. Dropping it kills the
/// process and waits for it.
pub struct Browser {
    child: Child,
    link: Arc<Link>,
    stop: Option<oneshot::Sender<()>>,
    socket: Option<JoinHandle<()>>,
    log: PathBuf,
    version: String,
}

impl Browser {
    /// Starts Chromium ([`ensure_chromium`]) with its profile in `dir/profile`, its output in
    /// `dir/chromium.log` and all else it writes in `dir` too, and connects to it. Errs if it
    /// does not start and listen within [`LAUNCH_DEADLINE`].
    pub fn launch(dir: &Path) -> Result<Self, String> {
        let bin = ensure_chromium()?;
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile).map_err(|e| format!("{}: {e}", profile.display()))?;
        // Chromium writes this once it listens; one left by an earlier run would mislead.
        let port_file = profile.join("DevToolsActivePort");
        let _ = std::fs::remove_file(&port_file);
        let log = dir.join("chromium.log");
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(&bin)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            // Crashpad's database and dconf's cache would go to the home directory otherwise.
            .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
            .env("XDG_CACHE_HOME", dir.join("xdg-cache"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        match Self::connect(&mut child, &port_file, &log) {
            Ok(Connected { link, stop, socket }) => {
                let mut browser = Self {
                    child,
                    link,
                    stop: Some(stop),
                    socket: Some(socket),
                    log,
                    version: String::new(),
                };
                let v = browser.link.call(None, "Browser.getVersion", json!({}))?;
                v["product"]
                    .as_str()
                    .unwrap_or_default()
                    .clone_into(&mut browser.version);
                Ok(browser)
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Waits for the DevTools port, connects, and starts the socket's thread.
    fn connect(child: &mut Child, port_file: &Path, log: &Path) -> Result<Connected, String> {
        let start = Instant::now();
        let url = loop {
            // Two lines: the port, then the browser target's path.
            if let Ok(text) = std::fs::read_to_string(port_file) {
                let mut lines = text.lines();
                if let (Some(Ok(port)), Some(path)) =
                    (lines.next().map(|p| p.trim().parse::<u16>()), lines.next())
                {
                    if path.starts_with("/devtools/browser/") {
                        break format!("ws://127.0.0.1:{port}{}", path.trim());
                    }
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "chromium exited ({status}) before it listened; its log:\n{}",
                    log_tail(log)
                ));
            }
            if start.elapsed() >= LAUNCH_DEADLINE {
                return Err(format!(
                    "chromium wrote no {} in {LAUNCH_DEADLINE:?}; its log:\n{}",
                    port_file.display(),
                    log_tail(log)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            out: out_tx,
            next_id: AtomicU64::new(1),
            calls: Mutex::default(),
            sessions: Mutex::default(),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let left = LAUNCH_DEADLINE.saturating_sub(start.elapsed());
        let served = Arc::clone(&link);
        let socket = std::thread::Builder::new()
            .name("chromium-devtools".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let config = WebSocketConfig::default()
                        .max_message_size(Some(MAX_MESSAGE))
                        .max_frame_size(Some(MAX_MESSAGE));
                    let connecting = tokio_tungstenite::connect_async_with_config(
                        url.as_str(),
                        Some(config),
                        true,
                    );
                    match tokio::time::timeout(left, connecting).await {
                        Ok(Ok((ws, _))) => {
                            let _ = ready_tx.send(Ok(()));
                            pump(ws, out_rx, stop_rx, served).await;
                        }
                        Ok(Err(e)) => {
                            let _ = ready_tx.send(Err(format!("connecting to {url}: {e}")));
                        }
                        Err(_) => {
                            let _ = ready_tx.send(Err(format!("connecting to {url} timed out")));
                        }
                    }
                });
            })
            .map_err(|e| format!("cannot start the DevTools thread: {e}"))?;
        let ready = ready_rx
            .recv_timeout(left + Duration::from_secs(1))
            .unwrap_or_else(|_| Err("the DevTools connection did not open in time".into()));
        match ready {
            Ok(()) => Ok(Connected {
                link,
                stop: stop_tx,
                socket,
            }),
            Err(e) => {
                link.close(e.clone());
                let _ = stop_tx.send(());
                let _ = socket.join();
                Err(e)
            }
        }
    }

    /// Chromium's product and version, as `Chrome/<version>`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What Chromium printed so far (its log file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Opens a new tab on `about:blank`, with its page, runtime, log and network events
    /// enabled, and those of the frames in other processes and workers it starts.
    pub fn new_page(&self) -> Result<Page, String> {
        let target = self
            .link
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let target = target["targetId"]
            .as_str()
            .ok_or("Target.createTarget gave no targetId")?
            .to_owned();
        let attached = self.link.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or("Target.attachToTarget gave no sessionId")?
            .to_owned();
        let events = Arc::new(Events::default());
        lock(&self.link.sessions).insert(session.clone(), Arc::clone(&events));
        let page = Page {
            link: Arc::clone(&self.link),
            session,
            target,
            events,
        };
        page.enable()?;
        Ok(page)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(socket) = self.socket.take() {
            let _ = socket.join();
        }
    }
}

/// What a page's events said so far.
#[derive(Default)]
struct Seen {
    console_errors: Vec<String>,
    requests: Vec<String>,
    offsite: Vec<String>,
    /// The last few documents committed in the main frame (`Page.frameNavigated`): their
    /// navigation's loader id, and their place in the order of commits.
    committed: VecDeque<(String, u64)>,
    /// How many documents committed in the main frame.
    commits: u64,
    /// The place of the last document that fired its load event (0: none yet).
    loaded: u64,
}

/// A page's recorded events, and a signal for those who wait on them.
#[derive(Default)]
struct Events {
    seen: Mutex<Seen>,
    changed: Condvar,
}

fn keep(list: &mut Vec<String>, item: &str) {
    if list.len() < KEPT {
        list.push(clip(item));
    }
}

impl Events {
    fn record(&self, method: &str, params: &Value) {
        let mut seen = lock(&self.seen);
        match method {
            "Runtime.exceptionThrown" => {
                keep(
                    &mut seen.console_errors,
                    &exception_text(&params["exceptionDetails"]),
                );
            }
            "Runtime.consoleAPICalled" => {
                let kind = params["type"].as_str().unwrap_or_default();
                if matches!(kind, "error" | "assert") {
                    keep(&mut seen.console_errors, &console_text(kind, params));
                }
            }
            "Log.entryAdded" => {
                let entry = &params["entry"];
                if entry["level"] == "error" {
                    keep(&mut seen.console_errors, &log_text(entry));
                }
            }
            "Network.requestWillBeSent" => {
                if let Some(url) = params["request"]["url"].as_str() {
                    keep(&mut seen.requests, url);
                    if is_offsite(url) {
                        keep(&mut seen.offsite, url);
                    }
                }
            }
            "Page.frameNavigated" => {
                let frame = &params["frame"];
                if frame.get("parentId").is_none() {
                    seen.commits += 1;
                    let entry = (
                        frame["loaderId"].as_str().unwrap_or_default().to_owned(),
                        seen.commits,
                    );
                    if seen.committed.len() == COMMITS_KEPT {
                        seen.committed.pop_front();
                    }
                    seen.committed.push_back(entry);
                }
            }
            "Page.loadEventFired" => {
                seen.loaded = seen.commits;
            }
            _ => return,
        }
        drop(seen);
        self.changed.notify_all();
    }

    /// Waits until the document of navigation `loader` has fired its load event, or one that
    /// replaced it did (a page that moves on by itself before it loads).
    fn wait_loaded(&self, loader: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut seen = lock(&self.seen);
        loop {
            let place = seen
                .committed
                .iter()
                .find(|(id, _)| id == loader)
                .map(|(_, place)| *place);
            if place.is_some_and(|place| seen.loaded >= place) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            seen = self
                .changed
                .wait_timeout(seen, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Where an exception, log entry or console call came from: ` (url:line)`.
fn place(url: &Value, line: &Value) -> String {
    match (url.as_str().filter(|u| !u.is_empty()), line.as_u64()) {
        (Some(url), Some(line)) => format!(" ({url}:{})", line + 1),
        (Some(url), None) => format!(" ({url})"),
        _ => String::new(),
    }
}

/// `Uncaught TypeError: …` from a `Runtime.ExceptionDetails`.
fn exception_text(details: &Value) -> String {
    let exception = &details["exception"];
    let what = exception["description"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| exception.get("value").map(remote_text))
        .unwrap_or_default();
    let text = details["text"].as_str().unwrap_or("exception");
    format!(
        "{text} {what}{}",
        place(&details["url"], &details["lineNumber"])
    )
    .trim()
    .to_owned()
}

/// A remote object's value as the console would print it.
fn remote_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `console.error: …` from a `Runtime.consoleAPICalled` event.
fn console_text(kind: &str, params: &Value) -> String {
    let args: Vec<String> = params["args"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            a.get("value")
                .map(remote_text)
                .or_else(|| a["description"].as_str().map(str::to_owned))
                .or_else(|| a["unserializableValue"].as_str().map(str::to_owned))
                .unwrap_or_else(|| a["type"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let frame = &params["stackTrace"]["callFrames"][0];
    format!(
        "console.{kind}: {}{}",
        args.join(" "),
        place(&frame["url"], &frame["lineNumber"])
    )
}

/// `[network] Failed to load resource: … (url)` from a `Log.LogEntry`.
fn log_text(entry: &Value) -> String {
    format!(
        "[{}] {}{}",
        entry["source"].as_str().unwrap_or("log"),
        entry["text"].as_str().unwrap_or_default(),
        place(&entry["url"], &entry["lineNumber"])
    )
}

/// Whether JavaScript would take `v` as true.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// One tab, attached over its own DevTools session. Its events are recorded from the moment it
/// opens, across navigations. Dropping it closes the tab.
pub struct Page {
    link: Arc<Link>,
    session: String,
    target: String,
    events: Arc<Events>,
}

impl Page {
    fn enable(&self) -> Result<(), String> {
        for method in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
        ] {
            self.call(method, json!({}))?;
        }
        self.call("Target.setAutoAttach", auto_attach())?;
        Ok(())
    }

    /// Sends any DevTools command on this page's session and returns its result.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.link.call(Some(&self.session), method, params)
    }

    /// Makes the viewport `width`×`height` CSS pixels at a device scale factor of 1, as a phone
    /// (`mobile`: the page's viewport meta tag applies, and so on) or a desktop.
    pub fn set_viewport(&self, width: u32, height: u32, mobile: bool) -> Result<(), String> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .map(drop)
    }

    /// Navigates to `url` and waits, up to [`LOAD_DEADLINE`], for that document's load event
    /// (or, if the page moves on by itself before it loads, for the load event of the document
    /// it moved to). Errs if the navigation fails (say, nothing listens there).
    pub fn goto(&self, url: &str) -> Result<(), String> {
        let nav = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(e) = nav["errorText"].as_str() {
            return Err(format!("navigating to {url}: {e}"));
        }
        // A navigation within the document (a fragment) has no loader and no load event.
        let Some(loader) = nav["loaderId"].as_str() else {
            return Ok(());
        };
        if self.events.wait_loaded(loader, LOAD_DEADLINE) {
            Ok(())
        } else {
            Err(format!("{url} did not load in {LOAD_DEADLINE:?}"))
        }
    }

    /// Evaluates `js` in the page, awaiting it if it is a promise, and returns its value as
    /// JSON (`null` for `undefined` and for values JSON cannot hold). A thrown exception or a
    /// rejected promise is an `Err` with its text.
    pub fn eval(&self, js: &str) -> Result<Value, String> {
        let mut r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(details) = r.get("exceptionDetails") {
            return Err(exception_text(details));
        }
        Ok(r["result"]
            .get_mut("value")
            .map(Value::take)
            .unwrap_or_default())
    }

    /// Evaluates `condition` every [`POLL`] until it is truthy, and returns how long that took
    /// (how long the page took to react, say). Errs after `timeout` with the expression and
    /// its last value or error.
    pub fn wait_for(&self, condition: &str, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let last = match self.eval(condition) {
                Ok(v) if truthy(&v) => return Ok(start.elapsed()),
                Ok(v) => format!("it was {v}"),
                Err(e) => e,
            };
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(format!(
                    "`{condition}` did not hold within {timeout:?}: {last}"
                ));
            }
            std::thread::sleep(POLL.min(timeout.saturating_sub(elapsed)));
        }
    }

    /// Evaluates `body` (a function body that may use `el`, the first element matching `css`),
    /// failing if no element matches.
    fn on_element(&self, css: &str, body: &str) -> Result<Value, String> {
        let sel = Value::from(css).to_string();
        self.eval(&format!(
            "(() => {{ const el = document.querySelector({sel}); \
             if (!el) throw new Error('no element matches ' + {sel}); {body} }})()"
        ))
    }

    /// Clicks the middle of the first element matching `css` with the mouse, as a person
    /// would, after scrolling it into view. Errs if no element matches, or if it is hidden or
    /// covered by another element there (the person could not click it either).
    pub fn click(&self, css: &str) -> Result<(), String> {
        let at = self.on_element(
            css,
            "el.scrollIntoView({block: 'center', inline: 'center'}); \
             const r = el.getBoundingClientRect(); \
             const x = r.left + r.width / 2, y = r.top + r.height / 2; \
             const top = r.width > 0 && r.height > 0 ? document.elementFromPoint(x, y) : null; \
             if (!top) throw new Error(el.tagName + ' is not visible'); \
             if (top !== el && !el.contains(top)) \
               throw new Error(el.tagName + ' is covered by ' + top.outerHTML.slice(0, 120)); \
             return [x, y];",
        )?;
        let (Some(x), Some(y)) = (at[0].as_f64(), at[1].as_f64()) else {
            return Err(format!("no position for {css}: {at}"));
        };
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        )?;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({
                    "type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1
                }),
            )?;
        }
        Ok(())
    }

    /// Focuses the first element matching `css`, sets its value to `text` and dispatches
    /// `input` and `change` events, as typing and leaving the field would.
    pub fn fill(&self, css: &str, text: &str) -> Result<(), String> {
        let value = Value::from(text).to_string();
        self.on_element(
            css,
            &format!(
                "el.focus(); \
                 const d = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(el), 'value'); \
                 if (d && d.set) d.set.call(el, {value}); else el.value = {value}; \
                 el.dispatchEvent(new Event('input', {{bubbles: true}})); \
                 el.dispatchEvent(new Event('change', {{bubbles: true}}));"
            ),
        )
        .map(drop)
    }

    /// The rendered text (`innerText`) of the first element matching `css`.
    pub fn text(&self, css: &str) -> Result<String, String> {
        let v = self.on_element(css, "return el.innerText;")?;
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{css} has no text: {v}"))
    }

    /// Focuses the first element matching `css` and presses Enter on the keyboard (which
    /// submits the form of a text field).
    pub fn press_enter(&self, css: &str) -> Result<(), String> {
        self.on_element(css, "el.focus();")?;
        let key = json!({"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13,
                         "nativeVirtualKeyCode": 13});
        let mut down = key.clone();
        down["type"] = "keyDown".into();
        down["text"] = "\r".into();
        down["unmodifiedText"] = "\r".into();
        let mut up = key;
        up["type"] = "keyUp".into();
        self.call("Input.dispatchKeyEvent", down)?;
        self.call("Input.dispatchKeyEvent", up).map(drop)
    }

    /// Saves what the viewport shows as a PNG file at `path`, creating its directory.
    pub fn screenshot(&self, path: &Path) -> Result<(), String> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .map_err(|e| format!("Page.captureScreenshot: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The cookies the page's URLs see, as DevTools describes them (`name`, `value`,
    /// `httpOnly`, `secure`, `sameSite`, `expires`, …).
    pub fn cookies(&self) -> Result<Vec<Value>, String> {
        let mut r = self.call("Network.getCookies", json!({}))?;
        match r["cookies"].take() {
            Value::Array(cookies) => Ok(cookies),
            other => Err(format!("Network.getCookies gave {other}")),
        }
    }

    /// Sets a cookie `name=value` for `url` (its host and path), as a server's `Set-Cookie`
    /// would.
    pub fn set_cookie(&self, url: &str, name: &str, value: &str) -> Result<(), String> {
        self.call(
            "Network.setCookie",
            json!({"url": url, "name": name, "value": value}),
        )
        .map(drop)
    }

    /// Every error the page reported so far: uncaught exceptions, `console.error` and failed
    /// `console.assert` calls, and error log entries (a resource that failed to load, a
    /// Content-Security-Policy violation, …), oldest first. Chromium asks for `/favicon.ico`
    /// on its own, and a 404 there is an error too: a page that has no icon says so with
    /// `<link rel="icon" href="data:,">`.
    pub fn console_errors(&self) -> Vec<String> {
        lock(&self.events.seen).console_errors.clone()
    }

    /// The URL of every request the page (its frames and its workers) made so far, oldest
    /// first, redirects included.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.events.seen).requests.clone()
    }

    /// Those of [`Page::requests`] that were meant to leave the machine ([`is_offsite`]). They
    /// failed, as nothing resolves, but the page tried.
    pub fn offsite_requests(&self) -> Vec<String> {
        lock(&self.events.seen).offsite.clone()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        lock(&self.link.sessions).retain(|_, e| !Arc::ptr_eq(e, &self.events));
        self.link
            .notify(None, "Target.closeTarget", json!({"targetId": self.target}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_browser_schemes_are_on_the_machine() {
        for url in [
            "http://127.0.0.1:8080/a",
            "https://127.3.4.5/",
            "http://localhost/",
            "http://LOCALHOST:1/x?y",
            "ws://[::1]:9/",
            "http://user:pw@127.0.0.1/",
            "data:text/plain,hi",
            "blob:http://127.0.0.1/uuid",
            "about:blank",
            "chrome://version",
            "devtools://devtools/bundled/x",
        ] {
            assert!(!is_offsite(url), "{url}");
        }
    }

    #[test]
    fn other_hosts_are_offsite() {
        for url in [
            "http://example.com/",
            "https://10.0.0.1/",
            "http://[2001:db8::1]/",
            "http://localhost.example.com/",
            "http://127.0.0.1.example.com/",
            "http://127.0.0.1@example.com/",
            "wss://relay.example:443/",
            "nonsense",
        ] {
            assert!(is_offsite(url), "{url}");
        }
    }

    #[test]
    fn long_texts_are_clipped() {
        let long = "é".repeat(KEPT_CHARS * 2);
        assert_eq!(clip(&long).chars().count(), KEPT_CHARS + 1);
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn truthiness_follows_javascript() {
        for v in [json!(null), json!(false), json!(0), json!(0.0), json!("")] {
            assert!(!truthy(&v), "{v}");
        }
        for v in [
            json!(true),
            json!(1),
            json!(-0.5),
            json!("0"),
            json!([]),
            json!({}),
        ] {
            assert!(truthy(&v), "{v}");
        }
    }
}
