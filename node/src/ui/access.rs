//! Who may use the web app: browsers paired with a one-time link, each with an HttpOnly,
//! SameSite=Strict session cookie and a CSRF token that every change must carry; and the PIN
//! or passphrase a wallet payment above `[ui] confirm_above` needs.
//!
//! Everything here is bounded: a few pairing links at a time, a few sessions (the oldest is
//! dropped), and wrong PINs lock the wallet's web payments for a while.

use rand_core::{OsRng, RngCore as _};
use std::collections::BTreeMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq as _;

/// Seconds a pairing link stays valid.
pub const PAIRING_TTL: u64 = 600;
/// Pairing links open at once (a new one drops the oldest).
const MAX_CODES: usize = 4;
/// Paired browsers at once (a new one drops the one seen longest ago).
const MAX_SESSIONS: usize = 16;
/// Seconds a session lives without being used.
pub const SESSION_IDLE: u64 = 12 * 3600;
/// Wrong PINs or passphrases in a row before web payments are locked.
const MAX_WRONG: u32 = 5;
/// Seconds web payments stay locked the first time; each further lockout doubles it.
const LOCKOUT: u64 = 300;
/// The longest lockout.
const MAX_LOCKOUT: u64 = 86_400;
/// Seconds over which payments made without the PIN add up against `[ui] confirm_above`.
pub const UNCONFIRMED_WINDOW: u64 = 12 * 3600;
/// Payments without the PIN remembered in that window.
const MAX_UNCONFIRMED: usize = 1024;
/// Event streams one session may hold open.
pub const STREAMS_PER_SESSION: usize = 4;
/// The session cookie's name starts so; the port follows (browsers keep cookies per host, not
/// per port, and two nodes on one machine must not share sessions).
pub const COOKIE: &str = "mp_session_";

/// A paired browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Its id (the cookie's value).
    pub id: String,
    /// Its CSRF token.
    pub csrf: String,
    last_seen: u64,
    streams: usize,
}

#[derive(Default)]
struct State {
    codes: Vec<(String, u64)>,
    sessions: BTreeMap<String, Session>,
    wrong: u32,
    lockouts: u32,
    locked_until: u64,
    /// Payments made without the PIN: when, how much.
    unconfirmed: std::collections::VecDeque<(u64, u64)>,
}

/// The web app's access rules.
pub struct Access {
    /// `http://host:port`, as browsers reach it.
    pub base: String,
    /// The session cookie's name.
    pub cookie: String,
    state: Mutex<State>,
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Why a PIN or passphrase check refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Locked {
    /// Too many wrong tries.
    #[error("too many wrong PINs: web payments are locked for {0} more seconds")]
    For(u64),
}

impl Access {
    /// Access rules for an app reached at `base` (`http://host:port`).
    pub fn new(base: String) -> Self {
        let port = base.rsplit(':').next().unwrap_or("").to_owned();
        Self {
            base,
            cookie: format!("{COOKIE}{port}"),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new one-time pairing link, valid for [`PAIRING_TTL`] seconds from `now`.
    pub fn pairing_link_at(&self, now: u64) -> crate::api::PairLink {
        let code = random_hex();
        let mut s = self.state();
        s.codes.retain(|(_, exp)| *exp > now);
        if s.codes.len() >= MAX_CODES {
            s.codes.remove(0);
        }
        s.codes.push((code.clone(), now + PAIRING_TTL));
        crate::api::PairLink {
            url: format!("{}/pair/{code}", self.base),
            expires: now + PAIRING_TTL,
        }
    }

    /// [`Self::pairing_link_at`] now.
    pub fn pairing_link(&self) -> crate::api::PairLink {
        self.pairing_link_at(crate::daemon::now())
    }

    /// Redeems a pairing code (once): a new session's id and CSRF token.
    pub fn redeem(&self, code: &str, now: u64) -> Option<(String, Session)> {
        let code = code.to_ascii_lowercase();
        let mut s = self.state();
        s.codes.retain(|(_, exp)| *exp > now);
        let i = s.codes.iter().position(|(c, _)| same(c, &code))?;
        s.codes.remove(i);
        s.sessions.retain(|_, v| v.last_seen + SESSION_IDLE > now);
        if s.sessions.len() >= MAX_SESSIONS {
            let oldest = s
                .sessions
                .iter()
                .min_by_key(|(_, v)| v.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                s.sessions.remove(&k);
            }
        }
        let id = random_hex();
        let session = Session {
            id: id.clone(),
            csrf: random_hex(),
            last_seen: now,
            streams: 0,
        };
        s.sessions.insert(id.clone(), session.clone());
        Some((id, session))
    }

    /// The session a `Cookie` header names, if it is alive (and marks it used).
    pub fn session(&self, cookie_header: &str, now: u64) -> Option<Session> {
        let id = cookie_header
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == self.cookie)
            .map(|(_, v)| v.trim())?;
        let mut s = self.state();
        let session = s.sessions.get_mut(id)?;
        if session.last_seen + SESSION_IDLE <= now {
            s.sessions.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// Whether the session `id` is still alive (not expired, not dropped for a newer one).
    pub fn alive(&self, id: &str, now: u64) -> bool {
        self.state()
            .sessions
            .get(id)
            .is_some_and(|s| s.last_seen + SESSION_IDLE > now)
    }

    /// Takes one of the session's [`STREAMS_PER_SESSION`] event streams.
    pub fn open_stream(&self, id: &str) -> bool {
        let mut s = self.state();
        match s.sessions.get_mut(id) {
            Some(session) if session.streams < STREAMS_PER_SESSION => {
                session.streams += 1;
                true
            }
            _ => false,
        }
    }

    /// Gives back an event stream taken with [`Self::open_stream`].
    pub fn close_stream(&self, id: &str) {
        if let Some(session) = self.state().sessions.get_mut(id) {
            session.streams = session.streams.saturating_sub(1);
        }
    }

    /// Whether a payment of `amount` needs the PIN: always when `threshold` is 0, else when it
    /// and the payments made without the PIN in the last [`UNCONFIRMED_WINDOW`] seconds add
    /// up to more than `threshold` (so small payments cannot add up to a large one).
    pub fn needs_pin(&self, amount: u64, threshold: u64, now: u64) -> bool {
        if threshold == 0 {
            return true;
        }
        let mut s = self.state();
        let since = now.saturating_sub(UNCONFIRMED_WINDOW);
        while s.unconfirmed.front().is_some_and(|(at, _)| *at <= since) {
            s.unconfirmed.pop_front();
        }
        let spent = s
            .unconfirmed
            .iter()
            .fold(0u64, |t, (_, a)| t.saturating_add(*a));
        spent.saturating_add(amount) > threshold
    }

    /// Counts a payment made without the PIN towards [`Self::needs_pin`].
    pub fn paid_unconfirmed(&self, amount: u64, now: u64) {
        let mut s = self.state();
        if s.unconfirmed.len() == MAX_UNCONFIRMED {
            // Forgetting the oldest would let payments add up unseen: fold it into the next.
            let (_, a) = s.unconfirmed.pop_front().unwrap_or_default();
            if let Some(next) = s.unconfirmed.front_mut() {
                next.1 = next.1.saturating_add(a);
            }
        }
        s.unconfirmed.push_back((now, amount));
    }

    /// Whether `given` is the session's CSRF token.
    pub fn csrf_ok(session: &Session, given: &str) -> bool {
        same(&session.csrf, given)
    }

    /// Starts a PIN or passphrase try: refused while locked; otherwise counted as wrong
    /// until [`Self::right`] says otherwise, so tries made at once cannot pass the limit.
    /// [`MAX_WRONG`] wrong ones in a row lock web payments for [`LOCKOUT`] seconds, doubled at
    /// each further lockout up to [`MAX_LOCKOUT`].
    pub fn try_secret(&self, now: u64) -> Result<(), Locked> {
        let mut s = self.state();
        if s.locked_until > now {
            return Err(Locked::For(s.locked_until - now));
        }
        s.wrong += 1;
        if s.wrong >= MAX_WRONG {
            s.wrong = 0;
            let lock = LOCKOUT
                .saturating_mul(1 << s.lockouts.min(16))
                .min(MAX_LOCKOUT);
            s.lockouts = s.lockouts.saturating_add(1);
            s.locked_until = now + lock;
        }
        Ok(())
    }

    /// The try started with [`Self::try_secret`] was right: the count of wrong tries restarts.
    pub fn right(&self) {
        let mut s = self.state();
        s.wrong = 0;
        s.lockouts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(link: &crate::api::PairLink) -> String {
        link.url.rsplit('/').next().unwrap().to_owned()
    }

    #[test]
    fn a_pairing_link_opens_one_session_once_and_expires() {
        let a = Access::new("http://127.0.0.1:8080".into());
        assert_eq!(a.cookie, "mp_session_8080");
        let link = a.pairing_link_at(1000);
        assert!(link.url.starts_with("http://127.0.0.1:8080/pair/"));
        let code = code_of(&link);
        let (id, s) = a.redeem(&code.to_uppercase(), 1001).expect("first use");
        assert!(a.redeem(&code, 1002).is_none(), "one-time");
        let cookie = format!("mp_session_8081=x; {}={id}", a.cookie);
        let found = a.session(&cookie, 1003).expect("session");
        assert!(Access::csrf_ok(&found, &s.csrf));
        assert!(!Access::csrf_ok(&found, "nope"));
        assert!(a.session(&format!("{}=bad", a.cookie), 1003).is_none());
        let late = a.pairing_link_at(2000);
        assert!(a.redeem(&code_of(&late), 2000 + PAIRING_TTL).is_none());
        assert!(a.session(&cookie, 1003 + SESSION_IDLE).is_none(), "idle");
    }

    #[test]
    fn links_and_sessions_are_capped() {
        let a = Access::new("http://x".into());
        let links: Vec<_> = (0..=MAX_CODES).map(|_| a.pairing_link_at(10)).collect();
        assert!(
            a.redeem(&code_of(&links[0]), 11).is_none(),
            "oldest dropped"
        );
        let mut first = None;
        for i in 0..=MAX_SESSIONS as u64 {
            let (id, _) = a
                .redeem(&code_of(&a.pairing_link_at(20 + i)), 20 + i)
                .unwrap();
            first.get_or_insert(id);
        }
        let first = first.unwrap();
        assert!(a.session(&format!("{}={first}", a.cookie), 100).is_none());
    }

    #[test]
    fn wrong_pins_lock_payments_for_longer_each_time() {
        let a = Access::new("http://x:1".into());
        for _ in 0..MAX_WRONG - 1 {
            a.try_secret(50).unwrap();
        }
        a.right();
        for _ in 0..MAX_WRONG - 1 {
            a.try_secret(50).unwrap();
        }
        assert!(a.try_secret(50).is_ok(), "a right one restarts the count");
        assert!(a.try_secret(50).is_err(), "five wrong in a row lock");
        // Tries started at once count before their answer: the fifth locks.
        let a = Access::new("http://x:1".into());
        for _ in 0..MAX_WRONG {
            a.try_secret(60).unwrap();
        }
        assert_eq!(a.try_secret(61), Err(Locked::For(LOCKOUT - 1)));
        for _ in 0..MAX_WRONG {
            a.try_secret(60 + LOCKOUT).unwrap();
        }
        assert_eq!(
            a.try_secret(60 + LOCKOUT),
            Err(Locked::For(2 * LOCKOUT)),
            "the second lockout is twice as long"
        );
    }

    #[test]
    fn small_payments_without_the_pin_add_up() {
        let a = Access::new("http://x:1".into());
        assert!(a.needs_pin(1, 0, 10), "a threshold of 0 always asks");
        assert!(!a.needs_pin(400, 1000, 10));
        a.paid_unconfirmed(400, 10);
        a.paid_unconfirmed(400, 20);
        assert!(!a.needs_pin(200, 1000, 30));
        assert!(a.needs_pin(201, 1000, 30), "1001 in the window");
        assert!(
            !a.needs_pin(600, 1000, 10 + UNCONFIRMED_WINDOW),
            "the first has left the window"
        );
    }

    #[test]
    fn a_session_holds_a_few_streams() {
        let a = Access::new("http://x:1".into());
        let (id, _) = a.redeem(&code_of(&a.pairing_link_at(5)), 5).unwrap();
        for _ in 0..STREAMS_PER_SESSION {
            assert!(a.open_stream(&id));
        }
        assert!(!a.open_stream(&id));
        a.close_stream(&id);
        assert!(a.open_stream(&id));
        assert!(!a.open_stream("nobody"));
        assert!(a.alive(&id, 6) && !a.alive(&id, 5 + SESSION_IDLE));
    }
}
