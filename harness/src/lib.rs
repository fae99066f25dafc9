//! # meshpay-harness
//!
//! Runs real `meshpay` processes on one machine: the process harness that `meshpay demo` and
//! the process tests (`tests/`) share.
//!
//! - [`Home`] says how to run the binary on one home directory; [`Home::json`] runs a CLI
//!   command with `--json` and parses its answer.
//! - [`Process::start`] spawns a daemon (`run`, `relay`, `settle serve`, each with `--json`) and
//!   waits for its first line, `{"event":"ready",…}`; [`Process::stop`] asks it to exit
//!   (SIGTERM) and waits; dropping a [`Process`] kills it.
//! - [`wait_until`] polls a condition; [`copy_home`] makes a whole-device copy of a home.
//!
//! Every wait has a deadline the caller gives, and every failure is a typed error that names
//! the process and carries what it printed; nothing here panics. The tests turn these errors
//! into failures, the demo reports them.
//!
//! Unix only, like the daemon's control socket: stopping sends SIGTERM with `kill(1)`.

use serde_json::Value;
use std::fs::OpenOptions;
use std::io::{self, BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long [`wait_until`] and [`Process::wait`] sleep between two looks.
const POLL: Duration = Duration::from_millis(20);

/// How long a daemon that closed its stdout before its ready line gets to exit.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Why a CLI command gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The command could not be run at all.
    #[error("{command}: cannot run it: {error}")]
    Spawn {
        /// The command, for messages.
        command: String,
        /// Why.
        error: io::Error,
    },
    /// The command exited with a failure status.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command, for messages.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr, trimmed.
        stderr: String,
        /// Its stdout as JSON, when it printed some (a refused payment exits with status 3
        /// and says why in JSON).
        answer: Option<Value>,
    },
    /// The command succeeded but its stdout is not JSON.
    #[error("{command} printed no JSON ({error}): {stdout}")]
    NotJson {
        /// The command, for messages.
        command: String,
        /// The parse error.
        error: serde_json::Error,
        /// What it printed.
        stdout: String,
    },
}

impl CliError {
    /// The JSON answer of a command that failed but explained itself in JSON (a refused
    /// payment), or this error when there is none.
    pub fn into_answer(self) -> Result<Value, Self> {
        match self {
            Self::Failed {
                answer: Some(v), ..
            } => Ok(v),
            e => Err(e),
        }
    }
}

/// Why a daemon did not come up. The process has been killed.
#[derive(Debug, thiserror::Error)]
#[error("{name} did not start (its log: {}): {reason}", log.display())]
pub struct StartError {
    /// The process's name.
    pub name: String,
    /// The file its stderr went to.
    pub log: PathBuf,
    /// What went wrong.
    pub reason: StartFailure,
}

/// What went wrong in [`Process::start`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartFailure {
    /// The log file could not be opened.
    #[error("cannot open the log file: {0}")]
    Log(io::Error),
    /// The process could not be spawned.
    #[error("cannot spawn it: {0}")]
    Spawn(io::Error),
    /// No line came within the deadline.
    #[error("no ready line within {0:?}")]
    Timeout(Duration),
    /// Its stdout closed before a line came; the exit status, when it had exited.
    #[error("it exited before its ready line ({})", .0.map_or_else(|| "still running".to_owned(), |s| s.to_string()))]
    Exited(Option<ExitStatus>),
    /// Its first line is not JSON.
    #[error("its first line is not JSON ({error}): {line}")]
    NotJson {
        /// The line.
        line: String,
        /// The parse error.
        error: serde_json::Error,
    },
    /// Its first line is JSON but not `{"event":"ready",…}`.
    #[error("its first line is not a ready event: {0}")]
    NotReady(String),
}

/// Why a daemon did not exit when asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExitError {
    /// SIGTERM could not be sent.
    #[error("{name}: cannot send SIGTERM: {error}")]
    Signal {
        /// The process's name.
        name: String,
        /// Why.
        error: io::Error,
    },
    /// Waiting for it failed.
    #[error("{name}: cannot wait for it: {error}")]
    Wait {
        /// The process's name.
        name: String,
        /// Why.
        error: io::Error,
    },
    /// It was still running at the deadline (it has been killed since).
    #[error("{name} did not exit within {timeout:?}")]
    Timeout {
        /// The process's name.
        name: String,
        /// The deadline it missed.
        timeout: Duration,
    },
}

/// A condition still false at its deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {timeout:?} waiting for {what}")]
pub struct TimedOut {
    /// What was awaited.
    pub what: String,
    /// The deadline.
    pub timeout: Duration,
}

/// A home directory that could not be copied.
#[derive(Debug, thiserror::Error)]
#[error("cannot copy {} to {}: {error}", from.display(), to.display())]
pub struct CopyError {
    /// The file or directory being copied.
    pub from: PathBuf,
    /// Where to.
    pub to: PathBuf,
    /// Why.
    pub error: io::Error,
}

/// How to run `meshpay` on one home directory.
#[derive(Debug, Clone)]
pub struct Home {
    /// A name for messages ("alice", "vendor").
    pub name: String,
    /// The `meshpay` binary.
    pub bin: PathBuf,
    /// The home directory (`--home`).
    pub dir: PathBuf,
    /// The sentinel directory (`MESHPAY_STATE_DIR`), apart from the home as on a device.
    pub state: PathBuf,
    /// The wallet passphrase (`MESHPAY_PASSPHRASE`).
    pub passphrase: String,
    /// The log filter (`MESHPAY_LOG`).
    pub log_filter: String,
}

impl Home {
    /// The `meshpay --home <dir>` command with this home's environment, not started. The
    /// caller's `MESHPAY_HOME` and `MESHPAY_FAULT` are not passed on.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--home")
            .arg(&self.dir)
            .env("MESHPAY_PASSPHRASE", &self.passphrase)
            .env("MESHPAY_STATE_DIR", &self.state)
            .env("MESHPAY_LOG", &self.log_filter)
            .env_remove("MESHPAY_HOME")
            .env_remove("MESHPAY_FAULT");
        c
    }

    /// Runs `meshpay <args>` and returns what it printed, whatever its exit status.
    pub fn output(&self, args: &[&str]) -> Result<Output, CliError> {
        output(self.command().args(args), self.describe(args))
    }

    /// Runs `meshpay <args>` (which should ask for `--json`) and parses its answer. A failure
    /// status is an error, with the JSON answer if the command printed one.
    pub fn json(&self, args: &[&str]) -> Result<Value, CliError> {
        answer(self.command().args(args), self.describe(args))
    }

    /// The daemon's log file, next to the home: `<dir>.log`.
    pub fn log(&self) -> PathBuf {
        self.dir.with_extension("log")
    }

    /// Starts `meshpay <args>` on this home as a daemon (say `run --json …`), its stderr
    /// appended to [`Home::log`], and waits up to `timeout` for its ready line.
    pub fn start(&self, args: &[&str], timeout: Duration) -> Result<Process, StartError> {
        Process::start(self.command().args(args), &self.name, &self.log(), timeout)
    }

    fn describe(&self, args: &[&str]) -> String {
        format!("{}: meshpay {}", self.name, args.join(" "))
    }
}

/// Runs `cmd` to completion; a failure status is an error carrying its stderr.
pub fn run_ok(cmd: &mut Command) -> Result<Output, CliError> {
    let command = describe(cmd);
    let out = output(cmd, command.clone())?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(failed(command, &out))
    }
}

/// Runs `cmd` to completion and parses its stdout as JSON; a failure status is an error
/// carrying its stderr (and its JSON answer, if any).
pub fn run_json(cmd: &mut Command) -> Result<Value, CliError> {
    let command = describe(cmd);
    answer(cmd, command)
}

fn output(cmd: &mut Command, command: String) -> Result<Output, CliError> {
    cmd.output()
        .map_err(|error| CliError::Spawn { command, error })
}

fn answer(cmd: &mut Command, command: String) -> Result<Value, CliError> {
    let out = output(cmd, command.clone())?;
    if !out.status.success() {
        return Err(failed(command, &out));
    }
    serde_json::from_slice(&out.stdout).map_err(|error| CliError::NotJson {
        command,
        error,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

fn failed(command: String, out: &Output) -> CliError {
    CliError::Failed {
        command,
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        answer: serde_json::from_slice(&out.stdout).ok(),
    }
}

/// The program's file name and the arguments, for messages.
fn describe(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program());
    std::iter::once(program)
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A daemon that printed its ready line. Dropping it kills it (SIGKILL) unless it has
/// exited already.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    ready: Value,
}

impl Process {
    /// Spawns `cmd` with its stdout piped and its stderr appended to `log`, and waits up to
    /// `timeout` for its first line, which must be `{"event":"ready",…}`. On any failure the
    /// process is killed.
    ///
    /// Its stdout is read (and dropped) until it closes, so the daemon never writes into a
    /// closed pipe.
    pub fn start(
        cmd: &mut Command,
        name: &str,
        log: &Path,
        timeout: Duration,
    ) -> Result<Self, StartError> {
        let fail = |reason| StartError {
            name: name.to_owned(),
            log: log.to_owned(),
            reason,
        };
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| fail(StartFailure::Log(e)))?;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| fail(StartFailure::Spawn(e)))?;
        let stdout = child.stdout.take();
        let mut process = Self {
            name: name.to_owned(),
            child,
            ready: Value::Null,
        };
        let Some(stdout) = stdout else {
            return Err(fail(StartFailure::Spawn(io::Error::other(
                "no stdout pipe",
            ))));
        };
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("{name} stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    // The receiver is gone after the first line: keep draining.
                    let _ = tx.send(line);
                }
            })
            .map_err(|e| fail(StartFailure::Spawn(e)))?;
        let line = match rx.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => return Err(fail(StartFailure::Timeout(timeout))),
            Err(RecvTimeoutError::Disconnected) => {
                let status = exit_within(&mut process.child, EXIT_GRACE).ok().flatten();
                return Err(fail(StartFailure::Exited(status)));
            }
        };
        let ready: Value = serde_json::from_str(&line).map_err(|error| {
            fail(StartFailure::NotJson {
                line: line.clone(),
                error,
            })
        })?;
        if ready["event"] != "ready" {
            return Err(fail(StartFailure::NotReady(line)));
        }
        process.ready = ready;
        Ok(process)
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ready line.
    pub fn ready(&self) -> &Value {
        &self.ready
    }

    /// The listen addresses in the ready line (a node's multiaddrs).
    pub fn listen(&self) -> Vec<String> {
        self.ready["listen"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A node's address for another node's `--peer`: see [`dial_addr`].
    pub fn dial_addr(&self) -> Option<String> {
        dial_addr(&self.ready)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|s| s.is_none())
    }

    /// Asks it to exit (SIGTERM) and waits up to `timeout`; kills it when the deadline passes.
    pub fn stop(self, timeout: Duration) -> Result<ExitStatus, ExitError> {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        if let Err(error) = sent {
            return Err(ExitError::Signal {
                name: self.name.clone(),
                error,
            });
        }
        self.wait(timeout)
    }

    /// Waits up to `timeout` for it to exit by itself (a fault, a signal); kills it when the
    /// deadline passes.
    pub fn wait(mut self, timeout: Duration) -> Result<ExitStatus, ExitError> {
        match exit_within(&mut self.child, timeout) {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err(ExitError::Timeout {
                name: self.name.clone(),
                timeout,
            }),
            Err(error) => Err(ExitError::Wait {
                name: self.name.clone(),
                error,
            }),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A child already reaped is not signalled again.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node's first TCP listen address with its peer id, from its ready line, for another
/// node's `--peer`; `None` when the line has no TCP address or no peer id.
pub fn dial_addr(ready: &Value) -> Option<String> {
    let peer = ready["peer_id"].as_str()?;
    let tcp = ready["listen"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.contains("/tcp/"))?;
    Some(format!("{tcp}/p2p/{peer}"))
}

/// The child's exit status once it exits, or `None` if it still runs after `timeout`.
fn exit_within(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if start.elapsed() >= timeout {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// Calls `f` until it returns `Some`, looking again every 20 ms; fails after `timeout`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, TimedOut> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(TimedOut {
                what: what.to_owned(),
                timeout,
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Copies a home (or sentinel) directory to `to`, a whole-device clone, leaving out the
/// running daemon's control socket and token.
pub fn copy_home(from: &Path, to: &Path) -> Result<(), CopyError> {
    let err = |from: &Path, to: &Path| {
        let (from, to) = (from.to_owned(), to.to_owned());
        move |error| CopyError { from, to, error }
    };
    std::fs::create_dir_all(to).map_err(err(from, to))?;
    for entry in std::fs::read_dir(from).map_err(err(from, to))? {
        let entry = entry.map_err(err(from, to))?;
        let (path, target) = (entry.path(), to.join(entry.file_name()));
        if path.is_dir() {
            copy_home(&path, &target)?;
        } else if entry.file_name() != "control.sock" && entry.file_name() != "control.token" {
            std::fs::copy(&path, &target).map_err(err(&path, &target))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    fn start(script: &str, timeout: Duration) -> Result<Process, StartError> {
        let dir = tempfile::tempdir().unwrap();
        Process::start(&mut sh(script), "sh", &dir.path().join("sh.log"), timeout)
    }

    #[test]
    fn a_ready_line_starts_a_process_that_stops_on_sigterm() {
        let p = start(
            r#"echo '{"event":"ready","listen":["/ip4/127.0.0.1/tcp/9"],"peer_id":"12D3"}'; exec sleep 30"#,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(
            p.dial_addr().as_deref(),
            Some("/ip4/127.0.0.1/tcp/9/p2p/12D3")
        );
        let status = p.stop(Duration::from_secs(10)).unwrap();
        assert!(!status.success());
    }

    #[test]
    fn a_silent_process_times_out_and_one_that_exits_is_reported() {
        let e = start("exec sleep 30", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e.reason, StartFailure::Timeout(_)), "{e}");
        let e = start("exit 4", Duration::from_secs(10)).unwrap_err();
        assert!(
            matches!(e.reason, StartFailure::Exited(Some(s)) if s.code() == Some(4)),
            "{e}"
        );
        let e = start(r#"echo '{"event":"other"}'"#, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e.reason, StartFailure::NotReady(_)), "{e}");
    }

    #[test]
    fn a_failed_command_carries_its_stderr_and_answer() {
        let e = run_json(&mut sh(
            r#"echo '{"status":"refused"}'; echo no >&2; exit 3"#,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("no"), "{e}");
        assert_eq!(e.into_answer().unwrap()["status"], "refused");
        let e = run_json(&mut sh("echo not json")).unwrap_err();
        assert!(matches!(e, CliError::NotJson { .. }), "{e}");
    }

    #[test]
    fn waiting_is_bounded() {
        let e = wait_until("never", Duration::from_millis(50), || None::<()>).unwrap_err();
        assert_eq!(e.what, "never");
        let mut n = 0;
        assert_eq!(
            wait_until("third look", Duration::from_secs(5), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Ok(3)
        );
    }
}
