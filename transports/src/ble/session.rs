//! A BLE session: the [`Framer`] carries a Noise XX handshake bound to both devices' Ed25519
//! keys, then encrypted request and response messages. Sans-IO like the framer.
//!
//! Handshake (`Noise_XX_25519_ChaChaPoly_SHA256`, prologue `meshpay/v1/ble`), one framer
//! message each:
//!
//! 1. initiator (the central) → responder: `e`, empty payload;
//! 2. responder → initiator: `e, ee, s, es`, payload = identity;
//! 3. initiator → responder: `s, se`, payload = identity.
//!
//! An identity payload is the device key (32 bytes) and its Ed25519 signature under the tag
//! `meshpay/v1/link-key` over the sender's 32-byte Noise static key (64 bytes). A side whose
//! signature does not verify against the static key the handshake authenticated is refused.
//!
//! After the handshake every framer message is one Noise transport message whose plaintext is
//! `kind u8 ‖ id u32 BE ‖ body`: kind 1 a request, 2 its response, 3 a response after which
//! the sender closes. A message that fails authentication or does not parse ends the session:
//! nothing from it is delivered.

use super::framer::{FrameError, Framer, FramerConfig, reason};
use meshpay_protocol::keys::Signature;
use meshpay_protocol::{DeviceKey, DeviceSecret};
use snow::params::{DHChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, RingResolver};
use std::collections::VecDeque;
use std::time::Duration;
use zeroize::Zeroizing;

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// The Noise prologue.
pub const PROLOGUE: &[u8] = b"meshpay/v1/ble";
/// Bytes of the identity payload.
pub const IDENTITY_LEN: usize = 96;
/// Bytes a session message adds to a link frame: kind, id, Noise tag.
pub const MESSAGE_OVERHEAD: usize = 5 + 16;

const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;
const RESPONSE_CLOSE: u8 = 3;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The central: it connected and speaks first.
    Initiator,
    /// The peripheral.
    Responder,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The framing below ended.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The handshake failed (a malformed or unauthenticated handshake message).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The peer's identity signature does not match its Noise static key.
    #[error("the peer's device key does not sign its session key")]
    BadIdentity,
    /// A message failed authentication: corrupted or forged.
    #[error("a message failed authentication")]
    Decrypt,
    /// A decrypted message does not parse.
    #[error("malformed session message")]
    Malformed,
    /// The session is not established yet.
    #[error("the handshake has not finished")]
    NotReady,
    /// The peer keeps more requests open than a link allows.
    #[error("the peer has more than {0} requests open")]
    Flood(usize),
    /// Nothing arrived for too long.
    #[error("the peer was silent for too long")]
    Idle,
    /// The frame is over the limit.
    #[error("frame of {len} bytes is over the limit of {limit}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

impl SessionError {
    /// Whether the peer broke the protocol (as opposed to the link going away).
    pub fn is_misbehaviour(&self) -> bool {
        matches!(
            self,
            SessionError::Handshake(_)
                | SessionError::BadIdentity
                | SessionError::Decrypt
                | SessionError::Malformed
                | SessionError::Flood(_)
                | SessionError::Frame(FrameError::TooLarge { .. })
        )
    }
}

/// What the session reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The handshake finished: the peer is this device.
    Established(DeviceKey),
    /// The peer asks.
    Request {
        /// Its id, to answer with.
        id: u32,
        /// The frame.
        frame: Vec<u8>,
    },
    /// The peer answers.
    Response {
        /// The request's id.
        id: u32,
        /// The frame.
        frame: Vec<u8>,
    },
    /// The session ended.
    Closed(SessionError),
}

/// Session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The framer's.
    pub framer: FramerConfig,
    /// The longest request or response frame.
    pub max_frame: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let max_frame = meshpay_protocol::message::MAX_MESSAGE;
        Self {
            framer: FramerConfig {
                max_message: max_frame + MESSAGE_OVERHEAD,
                ..FramerConfig::default()
            },
            max_frame,
        }
    }
}

enum State {
    Handshake(Box<snow::HandshakeState>),
    Transport(Box<snow::TransportState>),
    Ended,
}

/// One end of an encrypted BLE session.
pub struct Session {
    role: Role,
    framer: Framer,
    state: State,
    identity: [u8; IDENTITY_LEN],
    peer: Option<DeviceKey>,
    events: VecDeque<SessionEvent>,
    next_id: u32,
    max_frame: usize,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a session as `role` for the device `secret`. The initiator's first handshake
    /// message is queued at once.
    pub fn new(role: Role, secret: &DeviceSecret, config: SessionConfig) -> Self {
        Self::build(role, secret, config, None)
    }

    /// As [`Session::new`] with fixed ephemeral and static X25519 keys, for test vectors only.
    #[doc(hidden)]
    pub fn with_keys_for_tests(
        role: Role,
        secret: &DeviceSecret,
        config: SessionConfig,
        static_key: [u8; 32],
        ephemeral: [u8; 32],
    ) -> Self {
        Self::build(role, secret, config, Some((static_key, ephemeral)))
    }

    fn build(
        role: Role,
        secret: &DeviceSecret,
        config: SessionConfig,
        fixed: Option<([u8; 32], [u8; 32])>,
    ) -> Self {
        let params: NoiseParams = NOISE_PARAMS.parse().expect("valid Noise parameters");
        let static_secret = Zeroizing::new(if let Some((s, _)) = fixed {
            s
        } else {
            let mut k = [0u8; 32];
            let mut rng = RingResolver.resolve_rng().expect("ring has a generator");
            rng.fill_bytes(&mut k);
            k
        });
        let static_public =
            x25519_dalek::x25519(*static_secret, x25519_dalek::X25519_BASEPOINT_BYTES);
        let mut identity = [0u8; IDENTITY_LEN];
        identity[..32].copy_from_slice(&secret.public().0);
        identity[32..].copy_from_slice(&secret.sign_link_key(&static_public).0);
        let mut builder = snow::Builder::with_resolver(params, Box::new(Resolver))
            .prologue(PROLOGUE)
            .local_private_key(&static_secret[..]);
        if let Some((_, e)) = &fixed {
            builder = builder.fixed_ephemeral_key_for_testing_only(e);
        }
        let hs = match role {
            Role::Initiator => builder.build_initiator(),
            Role::Responder => builder.build_responder(),
        }
        .expect("the builder has every key it needs");
        let mut s = Self {
            role,
            framer: Framer::new(config.framer),
            state: State::Handshake(Box::new(hs)),
            identity,
            peer: None,
            events: VecDeque::new(),
            next_id: 0,
            max_frame: config.max_frame,
        };
        if role == Role::Initiator {
            s.write_handshake(&[]);
        }
        s
    }

    /// The peer, once the handshake has finished.
    pub fn peer(&self) -> Option<DeviceKey> {
        self.peer
    }

    /// Whether the session can carry requests.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Transport(_))
    }

    /// Whether the session has ended.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// Whether a frame of `len` bytes can be queued now (back-pressure).
    pub fn can_send(&self, len: usize) -> bool {
        self.is_established() && self.framer.can_send(len + MESSAGE_OVERHEAD)
    }

    /// Whether everything sent has been acknowledged.
    pub fn is_idle(&self) -> bool {
        self.framer.is_idle()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Sends a request; returns its id.
    pub fn request(&mut self, frame: &[u8]) -> Result<u32, SessionError> {
        let id = self.next_id;
        self.send(REQUEST, id, frame)?;
        self.next_id = self.next_id.wrapping_add(1);
        Ok(id)
    }

    /// Answers request `id`; with `close`, the session ends once the answer is sent.
    pub fn respond(&mut self, id: u32, frame: &[u8], close: bool) -> Result<(), SessionError> {
        self.send(if close { RESPONSE_CLOSE } else { RESPONSE }, id, frame)
    }

    fn send(&mut self, kind: u8, id: u32, frame: &[u8]) -> Result<(), SessionError> {
        if frame.len() > self.max_frame {
            return Err(SessionError::TooLarge {
                len: frame.len(),
                limit: self.max_frame,
            });
        }
        let State::Transport(t) = &mut self.state else {
            return Err(SessionError::NotReady);
        };
        let mut plain = Vec::with_capacity(5 + frame.len());
        plain.push(kind);
        plain.extend_from_slice(&id.to_be_bytes());
        plain.extend_from_slice(frame);
        if !self.framer.can_send(plain.len() + 16) {
            return Err(FrameError::Full.into());
        }
        let mut out = vec![0u8; plain.len() + 16];
        let n = t
            .write_message(&plain, &mut out)
            .map_err(|e| SessionError::Handshake(e.to_string()))?;
        out.truncate(n);
        self.framer.send(&out)?;
        Ok(())
    }

    /// Takes one packet from the link.
    pub fn receive(&mut self, now: Duration, packet: &[u8]) {
        if self.is_ended() {
            return;
        }
        if let Err(e) = self.framer.receive(now, packet) {
            self.end(e.into());
            return;
        }
        while let Some(m) = self.framer.poll_message() {
            if let Err(e) = self.on_message(&m) {
                self.end(e);
                return;
            }
        }
    }

    fn on_message(&mut self, m: &[u8]) -> Result<(), SessionError> {
        match &mut self.state {
            State::Ended => Ok(()),
            State::Handshake(hs) => {
                let mut payload = vec![0u8; m.len()];
                let n = hs
                    .read_message(m, &mut payload)
                    .map_err(|e| SessionError::Handshake(e.to_string()))?;
                payload.truncate(n);
                let step_done = hs.is_handshake_finished();
                match (self.role, step_done) {
                    // Message 1 read: answer with message 2 and this side's identity.
                    (Role::Responder, false) => {
                        if !payload.is_empty() {
                            return Err(SessionError::Handshake("payload in message 1".into()));
                        }
                        let id = self.identity;
                        self.write_handshake(&id);
                    }
                    // Message 2 read: check the responder, send message 3.
                    (Role::Initiator, false) => {
                        self.check_identity(&payload)?;
                        let id = self.identity;
                        self.write_handshake(&id);
                        self.establish()?;
                    }
                    // Message 3 read: check the initiator.
                    (Role::Responder, true) => {
                        self.check_identity(&payload)?;
                        self.establish()?;
                    }
                    (Role::Initiator, true) => {
                        return Err(SessionError::Handshake("unexpected message".into()));
                    }
                }
                Ok(())
            }
            State::Transport(t) => {
                let mut plain = vec![0u8; m.len()];
                let n = t
                    .read_message(m, &mut plain)
                    .map_err(|_| SessionError::Decrypt)?;
                plain.truncate(n);
                if plain.len() < 5 || plain.len() - 5 > self.max_frame {
                    return Err(SessionError::Malformed);
                }
                let id = u32::from_be_bytes([plain[1], plain[2], plain[3], plain[4]]);
                let frame = plain[5..].to_vec();
                match plain[0] {
                    REQUEST => self.events.push_back(SessionEvent::Request { id, frame }),
                    RESPONSE => self.events.push_back(SessionEvent::Response { id, frame }),
                    RESPONSE_CLOSE => {
                        self.events.push_back(SessionEvent::Response { id, frame });
                        self.end(FrameError::PeerReset(reason::CLOSE).into());
                    }
                    _ => return Err(SessionError::Malformed),
                }
                Ok(())
            }
        }
    }

    fn write_handshake(&mut self, payload: &[u8]) {
        let State::Handshake(hs) = &mut self.state else {
            return;
        };
        let mut out = vec![0u8; 96 + payload.len() + 32];
        let n = hs
            .write_message(payload, &mut out)
            .expect("the buffer fits a handshake message");
        out.truncate(n);
        self.framer
            .send(&out)
            .expect("a handshake message fits the empty send buffer");
    }

    fn check_identity(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let State::Handshake(hs) = &self.state else {
            return Err(SessionError::NotReady);
        };
        if payload.len() != IDENTITY_LEN {
            return Err(SessionError::BadIdentity);
        }
        let remote: [u8; 32] = hs
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or(SessionError::BadIdentity)?;
        let device = DeviceKey(payload[..32].try_into().expect("32 bytes"));
        let sig = Signature(payload[32..].try_into().expect("64 bytes"));
        device
            .verify_link_key(&remote, &sig)
            .map_err(|_| SessionError::BadIdentity)?;
        self.peer = Some(device);
        Ok(())
    }

    fn establish(&mut self) -> Result<(), SessionError> {
        let State::Handshake(hs) = std::mem::replace(&mut self.state, State::Ended) else {
            return Err(SessionError::NotReady);
        };
        let t = hs
            .into_transport_mode()
            .map_err(|e| SessionError::Handshake(e.to_string()))?;
        self.state = State::Transport(Box::new(t));
        let peer = self.peer.ok_or(SessionError::BadIdentity)?;
        self.events.push_back(SessionEvent::Established(peer));
        Ok(())
    }

    fn end(&mut self, e: SessionError) {
        if self.is_ended() {
            return;
        }
        self.state = State::Ended;
        let why = match &e {
            SessionError::Frame(FrameError::PeerReset(_)) => None,
            SessionError::Frame(FrameError::TooLarge { .. }) => Some(reason::TOO_LARGE),
            SessionError::Frame(FrameError::Timeout) => Some(reason::TIMEOUT),
            _ if e.is_misbehaviour() => Some(reason::PROTOCOL),
            _ => Some(reason::CLOSE),
        };
        if let Some(why) = why {
            self.framer.close(why);
        }
        self.events.push_back(SessionEvent::Closed(e));
    }

    /// Closes the session from this side.
    pub fn close(&mut self) {
        self.end(FrameError::Closed.into());
    }

    /// Ends the session from this side for `why` (a RESET tells the peer).
    pub fn fail(&mut self, why: SessionError) {
        self.end(why);
    }

    /// The next packet for the link (at most `link_max` bytes).
    pub fn poll_transmit(&mut self, now: Duration, link_max: usize) -> Option<Vec<u8>> {
        self.framer.poll_transmit(now, link_max)
    }

    /// When [`Session::handle_timeout`] next needs to run.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.framer.poll_timeout()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        if let Err(e) = self.framer.handle_timeout(now) {
            self.end(e.into());
        }
    }
}

/// Curve25519 from x25519-dalek, the rest from ring: the crates libp2p's Noise already uses.
struct Resolver;

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        RingResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        matches!(choice, DHChoice::Curve25519).then(|| Box::new(X25519::default()) as _)
    }

    fn resolve_hash(
        &self,
        choice: &snow::params::HashChoice,
    ) -> Option<Box<dyn snow::types::Hash>> {
        RingResolver.resolve_hash(choice)
    }

    fn resolve_cipher(
        &self,
        choice: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        RingResolver.resolve_cipher(choice)
    }
}

#[derive(Default)]
struct X25519 {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl snow::types::Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        32
    }

    fn priv_len(&self) -> usize {
        32
    }

    fn set(&mut self, privkey: &[u8]) {
        self.secret.copy_from_slice(privkey);
        self.public = x25519_dalek::x25519(*self.secret, x25519_dalek::X25519_BASEPOINT_BYTES);
    }

    fn generate(&mut self, rng: &mut dyn snow::types::Random) {
        let mut k = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut k[..]);
        self.set(&k[..]);
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.secret[..]
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        // snow passes a buffer of its largest key size.
        let p: [u8; 32] = pubkey
            .get(..32)
            .and_then(|k| k.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let shared = Zeroizing::new(x25519_dalek::x25519(*self.secret, p));
        // A low-order point gives all zeros: refuse it rather than derive a known key.
        if shared.iter().all(|&b| b == 0) {
            return Err(snow::Error::Dh);
        }
        out[..32].copy_from_slice(&shared[..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> DeviceSecret {
        DeviceSecret::from_seed(&[n; 32])
    }

    /// Runs both sessions until neither has anything to send.
    fn settle(a: &mut Session, b: &mut Session, max: usize) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(p) = a.poll_transmit(Duration::ZERO, max) {
                b.receive(Duration::ZERO, &p);
                moved = true;
            }
            while let Some(p) = b.poll_transmit(Duration::ZERO, max) {
                a.receive(Duration::ZERO, &p);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn pair() -> (Session, Session) {
        let mut a = Session::new(Role::Initiator, &device(1), SessionConfig::default());
        let mut b = Session::new(Role::Responder, &device(2), SessionConfig::default());
        settle(&mut a, &mut b, 20);
        assert_eq!(
            a.poll_event(),
            Some(SessionEvent::Established(device(2).public()))
        );
        assert_eq!(
            b.poll_event(),
            Some(SessionEvent::Established(device(1).public()))
        );
        (a, b)
    }

    #[test]
    fn handshake_learns_both_device_keys_and_carries_requests() {
        let (mut a, mut b) = pair();
        let id = a.request(b"ask").unwrap();
        settle(&mut a, &mut b, 244);
        assert_eq!(
            b.poll_event(),
            Some(SessionEvent::Request {
                id,
                frame: b"ask".to_vec()
            })
        );
        b.respond(id, &[9; 2048], false).unwrap();
        settle(&mut a, &mut b, 244);
        assert_eq!(
            a.poll_event(),
            Some(SessionEvent::Response {
                id,
                frame: vec![9; 2048]
            })
        );
        assert!(matches!(
            a.request(&[0; 2049]),
            Err(SessionError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_forged_or_corrupted_message_ends_the_session_and_delivers_nothing() {
        let (mut a, mut b) = pair();
        a.request(b"pay 5").unwrap();
        // Flip one byte of the ciphertext in flight.
        let mut packets = Vec::new();
        while let Some(p) = a.poll_transmit(Duration::ZERO, 244) {
            packets.push(p);
        }
        let data = packets.iter_mut().find(|p| p[0] & 0xF0 == 0x40).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        for p in &packets {
            b.receive(Duration::ZERO, p);
        }
        assert_eq!(
            b.poll_event(),
            Some(SessionEvent::Closed(SessionError::Decrypt))
        );
        assert!(b.poll_event().is_none());
        assert!(b.is_ended());
        // b resets the stream; a learns the session is over.
        settle(&mut a, &mut b, 244);
        assert!(matches!(a.poll_event(), Some(SessionEvent::Closed(_))));
        assert!(matches!(a.request(b"x"), Err(SessionError::NotReady)));
    }

    #[test]
    fn an_identity_that_does_not_sign_the_session_key_is_refused() {
        // The responder presents someone else's device key with its own signature.
        let mut a = Session::new(Role::Initiator, &device(1), SessionConfig::default());
        let mut b = Session::new(Role::Responder, &device(2), SessionConfig::default());
        b.identity[..32].copy_from_slice(&device(3).public().0);
        settle(&mut a, &mut b, 20);
        assert_eq!(
            a.poll_event(),
            Some(SessionEvent::Closed(SessionError::BadIdentity))
        );
        assert!(a.peer().is_none() || a.is_ended());
        assert!(!b.is_established() || b.is_ended());
    }

    #[test]
    fn fixed_keys_give_the_documented_handshake_lengths() {
        let cfg = SessionConfig::default;
        let mut a =
            Session::with_keys_for_tests(Role::Initiator, &device(1), cfg(), [1; 32], [2; 32]);
        let mut b =
            Session::with_keys_for_tests(Role::Responder, &device(2), cfg(), [3; 32], [4; 32]);
        // Message 1: 32 bytes; message 2: 32 + 48 + 96 + 16; message 3: 48 + 96 + 16.
        let m1 = drain_messages(&mut a, &mut b);
        assert_eq!(m1, vec![32]);
        let m2 = drain_messages(&mut b, &mut a);
        assert_eq!(m2, vec![192]);
        let m3 = drain_messages(&mut a, &mut b);
        assert_eq!(m3, vec![160]);
    }

    /// Moves `from`'s packets to `to` and returns the lengths of the framer messages sent.
    fn drain_messages(from: &mut Session, to: &mut Session) -> Vec<usize> {
        let mut lens = Vec::new();
        let mut current = 0;
        while let Some(p) = from.poll_transmit(Duration::ZERO, 512) {
            if p[0] & 0xF0 == 0x40 {
                current += p.len() - 3;
                if p[0] & 1 == 1 {
                    lens.push(current);
                    current = 0;
                }
            }
            to.receive(Duration::ZERO, &p);
        }
        lens
    }
}
