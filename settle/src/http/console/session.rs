//! Console sessions and login throttling, as plain state: the time comes in as an argument, so
//! tests drive them with a made-up clock.
//!
//! A session is a random 32-byte token (the `mp_console` cookie, HttpOnly, SameSite=Strict)
//! and a random CSRF token the pages carry in `<meta name="csrf-token">` and every
//! state-changing request echoes in `X-CSRF-Token`. At most [`MAX_SESSIONS`] are kept (the
//! oldest is dropped for a new one), each for [`SESSION_LIFETIME`] from login; they live in
//! memory, so a restart signs everyone out. Tokens are compared in constant time, against
//! every session, so the time a check takes says nothing about how much of a token matched.
//!
//! Failed logins are counted per source address: after [`FAILURES_PER_WINDOW`] within
//! [`FAILURE_WINDOW`], that source gets `429` until the oldest of them leaves the window. Each
//! attempt is counted before its token is compared, and a correct token clears its source's
//! count, so attempts sent at once cannot all slip past the limit.

use rand_core::{OsRng, RngCore as _};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq as _;

/// Sessions kept at most.
pub const MAX_SESSIONS: usize = 64;
/// How long a session lasts from login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Failed logins allowed per source within [`FAILURE_WINDOW`].
pub const FAILURES_PER_WINDOW: usize = 5;
/// The window failed logins are counted over.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sources whose failures are remembered at most.
const MAX_SOURCES: usize = 4_096;

/// 32 random bytes from the OS, in hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether `given` equals `want`, in time that depends only on their lengths.
pub fn same(want: &str, given: &str) -> bool {
    want.len() == given.len() && bool::from(want.as_bytes().ct_eq(given.as_bytes()))
}

/// A signed-in session.
#[derive(Debug, Clone)]
pub struct Session {
    token: String,
    /// The CSRF token of its pages.
    pub csrf: String,
    created: Instant,
}

/// The sessions, oldest first.
#[derive(Debug, Default)]
pub struct Sessions {
    list: Vec<Session>,
}

impl Sessions {
    /// Opens a session at `now` with these tokens, dropping expired ones and, past the cap,
    /// the oldest.
    pub fn open(&mut self, token: String, csrf: String, now: Instant) {
        self.list
            .retain(|s| now.saturating_duration_since(s.created) < SESSION_LIFETIME);
        if self.list.len() >= MAX_SESSIONS {
            self.list.remove(0);
        }
        self.list.push(Session {
            token,
            csrf,
            created: now,
        });
    }

    /// The live session whose token is `token`, if any.
    pub fn find(&self, token: &str, now: Instant) -> Option<&Session> {
        let mut found = None;
        // Every session is compared, whatever matched before.
        for s in &self.list {
            if same(&s.token, token) && found.is_none() {
                found = Some(s);
            }
        }
        found.filter(|s| now.saturating_duration_since(s.created) < SESSION_LIFETIME)
    }

    /// Closes the session whose token is `token`.
    pub fn close(&mut self, token: &str) {
        self.list.retain(|s| !same(&s.token, token));
    }

    /// How many sessions are kept.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Failed logins per source.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: BTreeMap<IpAddr, VecDeque<Instant>>,
}

impl Throttle {
    /// How long `source` must wait before trying again, if it failed too often lately.
    pub fn retry_after(&mut self, source: IpAddr, now: Instant) -> Option<Duration> {
        let f = self.failures.get_mut(&source)?;
        while f
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= FAILURE_WINDOW)
        {
            f.pop_front();
        }
        if f.is_empty() {
            self.failures.remove(&source);
            return None;
        }
        (f.len() >= FAILURES_PER_WINDOW).then(|| {
            let oldest = f.front().copied().unwrap_or(now);
            FAILURE_WINDOW.saturating_sub(now.saturating_duration_since(oldest))
        })
    }

    /// Counts a login attempt from `source` at `now` before its token is compared, so that
    /// attempts made at once cannot all pass a check made before any failure is counted.
    /// Returns how long the source must wait, if it failed too often lately (the attempt is
    /// then refused and not counted). A correct token then [`Throttle::clear`]s the source.
    pub fn attempt(&mut self, source: IpAddr, now: Instant) -> Option<Duration> {
        if let Some(wait) = self.retry_after(source, now) {
            return Some(wait);
        }
        self.fail(source, now);
        None
    }

    /// Counts a failed login from `source` at `now`.
    pub fn fail(&mut self, source: IpAddr, now: Instant) {
        if !self.failures.contains_key(&source) && self.failures.len() >= MAX_SOURCES {
            self.failures.retain(|_, f| {
                f.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < FAILURE_WINDOW)
            });
            if self.failures.len() >= MAX_SOURCES {
                let stalest = self
                    .failures
                    .iter()
                    .min_by_key(|(_, f)| f.back().copied())
                    .map(|(k, _)| *k);
                if let Some(k) = stalest {
                    self.failures.remove(&k);
                }
            }
        }
        let f = self.failures.entry(source).or_default();
        f.push_back(now);
        while f.len() > FAILURES_PER_WINDOW {
            f.pop_front();
        }
    }

    /// Forgets the failures of `source` (it signed in).
    pub fn clear(&mut self, source: IpAddr) {
        self.failures.remove(&source);
    }

    /// How many sources are remembered.
    pub fn sources(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_found_by_token_until_they_expire() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        s.open("a".repeat(64), "csrf-a".into(), t0);
        assert_eq!(
            s.find(&"a".repeat(64), t0).map(|s| s.csrf.as_str()),
            Some("csrf-a")
        );
        assert!(s.find(&"b".repeat(64), t0).is_none());
        assert!(s.find("a", t0).is_none());
        let late = t0 + SESSION_LIFETIME;
        let just_before = t0 + SESSION_LIFETIME.saturating_sub(Duration::from_secs(1));
        assert!(s.find(&"a".repeat(64), just_before).is_some());
        assert!(s.find(&"a".repeat(64), late).is_none());
        s.close(&"a".repeat(64));
        assert!(s.is_empty());
    }

    #[test]
    fn sessions_are_capped_and_the_oldest_goes() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        for n in 0..=MAX_SESSIONS {
            s.open(
                format!("{n:064}"),
                format!("c{n}"),
                t0 + Duration::from_secs(n as u64),
            );
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        let now = t0 + Duration::from_secs(100);
        assert!(s.find(&format!("{:064}", 0), now).is_none());
        assert!(s.find(&format!("{:064}", 1), now).is_some());
        assert!(s.find(&format!("{MAX_SESSIONS:064}"), now).is_some());
    }

    #[test]
    fn expired_sessions_make_room() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        for n in 0..MAX_SESSIONS {
            s.open(format!("{n:064}"), String::new(), t0);
        }
        s.open("x".repeat(64), String::new(), t0 + SESSION_LIFETIME);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn failed_logins_are_throttled_per_source() {
        let t0 = Instant::now();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let mut t = Throttle::default();
        for k in 0..FAILURES_PER_WINDOW {
            assert_eq!(t.retry_after(a, t0), None, "failure {k}");
            t.fail(a, t0 + Duration::from_secs(k as u64));
        }
        let wait = t
            .retry_after(a, t0 + Duration::from_secs(10))
            .expect("throttled");
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(t.retry_after(b, t0), None);
        // Once the oldest failure leaves the window, one more try is allowed.
        assert_eq!(t.retry_after(a, t0 + FAILURE_WINDOW), None);
        t.clear(a);
        assert_eq!(t.sources(), 0);
    }

    #[test]
    fn attempts_at_once_are_counted_before_the_comparison() {
        let t0 = Instant::now();
        let a = IpAddr::from([10, 0, 0, 1]);
        let mut t = Throttle::default();
        // Many attempts at the same moment, none compared yet: only the first few pass.
        let passed = (0..50).filter(|_| t.attempt(a, t0).is_none()).count();
        assert_eq!(passed, FAILURES_PER_WINDOW);
        assert_eq!(t.attempt(a, t0), Some(FAILURE_WINDOW));
        // A correct token clears the source.
        t.clear(a);
        assert_eq!(t.attempt(a, t0), None);
    }

    #[test]
    fn throttled_sources_are_capped() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        for n in 0..=u32::try_from(MAX_SOURCES).expect("small") {
            t.fail(
                IpAddr::from(n.to_be_bytes()),
                t0 + Duration::from_millis(u64::from(n)),
            );
        }
        assert_eq!(t.sources(), MAX_SOURCES);
        // The stalest went.
        assert_eq!(t.retry_after(IpAddr::from(0u32.to_be_bytes()), t0), None);
    }

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
