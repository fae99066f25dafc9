//! The in-memory contact driver: runs a whole session between two stores in one call, every
//! message through its encoding, for the simulator, the tests and the benchmarks. The node
//! drives [`Session`] itself over a real link; this is the same exchange with the link taken
//! out, and an optional cut-off after a number of messages to model a contact that breaks.

use super::{Session, SessionConfig, SyncError, SyncMessage};
use crate::codec;
use crate::keys::DeviceSecret;
use crate::store::BundleStore;

/// One side of an in-memory contact (see [`contact`]).
#[derive(Debug)]
pub struct Party<'a> {
    /// Its bundle store.
    pub store: &'a mut BundleStore,
    /// Its session settings.
    pub cfg: SessionConfig,
    /// Its device key, for hand-over receipts.
    pub key: &'a DeviceSecret,
}

/// What an in-memory contact did.
#[derive(Debug)]
pub struct Contact {
    /// The initiator's session.
    pub initiator: Session,
    /// The responder's session.
    pub responder: Session,
    /// Messages exchanged, both ways.
    pub messages: u32,
    /// False if the contact ended (after `max_messages`) before the session closed.
    pub completed: bool,
}

/// Runs a whole session between two stores in memory, every message through its encoding,
/// for at most `max_messages` messages (a contact that breaks off early keeps what arrived).
/// The simulator, the tests and the benchmarks drive sync through this.
pub fn contact(
    a: Party<'_>,
    b: Party<'_>,
    salt: u64,
    max_messages: u32,
) -> Result<Contact, SyncError> {
    fn wire(m: &SyncMessage) -> Result<SyncMessage, SyncError> {
        Ok(codec::decode(&m.encode())?)
    }
    let (mut init, first) = Session::initiate(a.cfg, a.store, salt);
    let mut messages = 1;
    if max_messages < 2 {
        let (resp, _) = Session::accept(b.cfg, b.store, &wire(&first)?)?;
        return Ok(Contact {
            initiator: init,
            responder: resp,
            messages,
            completed: false,
        });
    }
    let (mut resp, mut answer) = Session::accept(b.cfg, b.store, &wire(&first)?)?;
    messages += 1;
    loop {
        if messages >= max_messages {
            break;
        }
        let Some(next) = init.handle(&wire(&answer)?, a.store, a.key)? else {
            break;
        };
        messages += 1;
        if messages >= max_messages {
            break;
        }
        answer = resp
            .handle(&wire(&next)?, b.store, b.key)?
            .ok_or(SyncError::Finished)?;
        messages += 1;
    }
    let completed = init.is_finished() && resp.is_finished();
    Ok(Contact {
        initiator: init,
        responder: resp,
        messages,
        completed,
    })
}
