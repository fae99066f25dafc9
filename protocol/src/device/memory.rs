//! Sync sessions between two devices in memory, for the simulator, the tests and the
//! benchmarks: [`contact`] runs a whole session in one call, [`Exchange`] a message at a time,
//! so the driver decides when each message lands or that its link went down.

use super::{Device, Now, Then};
use crate::bundle;
use crate::keys::DeviceKey;
use crate::objects::Hash;
use crate::sync::{Contact, Party, Policy, Session, SyncError, SyncMessage};

/// One sync session between two devices in memory (the simulator's contacts): the same
/// session state machine as over a link, each device with its own configuration, `budgets`
/// bounding the bytes each may send. Both then act on what they took, like after a session
/// over a link. Drain both devices' outputs afterwards.
pub fn contact(
    a: &mut Device,
    b: &mut Device,
    now: Now,
    budgets: [u64; 2],
    salt: u64,
) -> Result<Contact, SyncError> {
    let (mut ca, mut cb) = (a.session_config(b.me, now), b.session_config(a.me, now));
    ca.encounter = a.fresh.remove(&b.me);
    cb.encounter = b.fresh.remove(&a.me);
    ca.budget = budgets[0];
    cb.budget = budgets[1];
    let result = crate::sync::contact(
        Party {
            store: &mut a.store,
            cfg: ca,
            key: &a.key,
        },
        Party {
            store: &mut b.store,
            cfg: cb,
            key: &b.key,
        },
        salt,
        u32::MAX,
    );
    a.flush_mesh(now, Then::Tolerated);
    b.flush_mesh(now, Then::Tolerated);
    result
}

/// A sync message on its way between the two devices of an [`Exchange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flight {
    /// It goes from the initiator to the responder (else back).
    pub to_responder: bool,
    /// Its encoded length.
    pub bytes: u64,
    /// Bytes of bundles in it.
    pub bundle_bytes: u64,
}

/// One sync session between two devices in memory, **a message at a time**: the simulator's
/// timed links. The same session state machine as over a link and as [`contact`]; the
/// driver decides when each message arrives (after its time on the air) or that it never
/// does (the link went down: drop the exchange, as a node drops a session whose link broke).
///
/// Driving contract: [`Exchange::open`] puts the initiator's first message on its way;
/// [`Exchange::flight`] tells what is on its way; when it arrives, [`Exchange::deliver`] hands
/// it to its receiver, which answers (the answer is then on its way), and the driver drains
/// both devices' outputs. Once nothing is on its way the session is over.
#[derive(Debug)]
pub struct Exchange {
    initiator: Session,
    responder: Option<Session>,
    /// The message on its way, and whether it goes to the responder.
    flight: Option<(bool, SyncMessage)>,
    policy: Policy,
}

impl Exchange {
    /// Device `a` opens a session with the device whose key is `peer`; its first message is
    /// then on its way. Both sides hand over by `policy`.
    pub fn open(a: &mut Device, peer: DeviceKey, now: Now, salt: u64, policy: Policy) -> Self {
        let mut cfg = a.session_config(peer, now);
        cfg.policy = policy;
        cfg.encounter = a.fresh.remove(&peer);
        let (initiator, first) = Session::initiate(cfg, &a.store, salt);
        Self {
            initiator,
            responder: None,
            flight: Some((true, first)),
            policy,
        }
    }

    /// The message on its way, if the session is not over.
    pub fn flight(&self) -> Option<Flight> {
        self.flight.as_ref().map(|(to_responder, m)| Flight {
            to_responder: *to_responder,
            bytes: m.encoded_len() as u64,
            bundle_bytes: m.bundle_bytes() as u64,
        })
    }

    /// The message on its way arrives (`a` is the initiator, `b` the responder): its receiver
    /// handles it, acts on what it took, and puts its answer on the way. Drain both devices'
    /// outputs afterwards. An error means a side broke the protocol; the session is over.
    pub fn deliver(&mut self, a: &mut Device, b: &mut Device, now: Now) -> Result<(), SyncError> {
        let Some((to_responder, msg)) = self.flight.take() else {
            return Err(SyncError::Finished);
        };
        let msg = over_the_air(msg)?;
        if to_responder {
            let answer = match self.responder.as_mut() {
                None => {
                    let mut cfg = b.session_config(a.me, now);
                    cfg.policy = self.policy;
                    cfg.encounter = b.fresh.remove(&a.me);
                    let (s, answer) = Session::accept(cfg, &mut b.store, &msg)?;
                    self.responder = Some(s);
                    Some(answer)
                }
                Some(s) => s.handle(&msg, &mut b.store, &b.key)?,
            };
            b.flush_mesh(now, Then::Tolerated);
            self.flight = answer.map(|m| (false, m));
        } else {
            let next = self.initiator.handle(&msg, &mut a.store, &a.key)?;
            a.flush_mesh(now, Then::Tolerated);
            self.flight = next.map(|m| (true, m));
        }
        Ok(())
    }

    /// The ids of the bundles in the message on its way: the last its sender's session gave
    /// (each bundle a session puts in a message is recorded as given, in order).
    pub fn flight_ids(&self) -> Vec<Hash> {
        let Some((to_responder, m)) = &self.flight else {
            return Vec::new();
        };
        let sender = if *to_responder {
            Some(&self.initiator)
        } else {
            self.responder.as_ref()
        };
        let given = sender.map_or(&[][..], Session::given);
        let hashed = || -> Vec<Hash> {
            m.bundles
                .iter()
                .map(|c| bundle::bundle_id(&c.bundle.0))
                .collect()
        };
        match given.len().checked_sub(m.bundles.len()) {
            Some(from) => {
                let ids = given[from..].to_vec();
                debug_assert_eq!(ids, hashed(), "the sender's last given");
                ids
            }
            None => hashed(),
        }
    }

    /// The message on its way never arrives (its link went down): the session is over, and
    /// its sender takes back the spray-and-wait copies it gave with it, which nobody got.
    /// Drain both devices' outputs afterwards.
    pub fn lose(self, a: &mut Device, b: &mut Device, now: Now) {
        let ids = self.flight_ids();
        let Some((to_responder, m)) = self.flight else {
            return;
        };
        let (sender, session) = if to_responder {
            (a, Some(&self.initiator))
        } else {
            (b, self.responder.as_ref())
        };
        // A single copy handed on (spray-and-focus) never left the sender's store.
        let kept = session.map_or(&[][..], Session::forwarding);
        for (c, id) in m.bundles.iter().zip(ids).filter(|(c, _)| c.copies > 0) {
            if kept.contains(&id) {
                continue;
            }
            if let Some(held) = sender.store.get(&id).map(|e| e.copies) {
                sender.store.set_copies(&id, held + c.copies);
            }
        }
        sender.flush_mesh(now, Then::Tolerated);
    }

    /// The initiator's session.
    pub fn initiator(&self) -> &Session {
        &self.initiator
    }

    /// The responder's session, once the first message arrived.
    pub fn responder(&self) -> Option<&Session> {
        self.responder.as_ref()
    }
}

/// A sync message as its receiver would take it off a link. Debug builds (the tests) send it
/// through the encoding byte for byte and check that it comes out as it went in; release
/// builds (the simulator's long runs) make the decoder's checks, its size and its fields,
/// without the bytes.
fn over_the_air(msg: SyncMessage) -> Result<SyncMessage, SyncError> {
    use crate::codec::Wire as _;
    if cfg!(debug_assertions) {
        let bytes = msg.encode();
        assert_eq!(bytes.len(), msg.encoded_len(), "the size checked below");
        let decoded: SyncMessage = crate::codec::decode(&bytes)?;
        assert_eq!(decoded, msg, "what release builds hand over as it is");
        return Ok(decoded);
    }
    crate::codec::within_limit::<SyncMessage>(msg.encoded_len())?;
    msg.check()?;
    Ok(msg)
}
