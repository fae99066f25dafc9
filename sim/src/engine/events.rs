//! The run's events one by one, for The ONE's `EventLogReport`
//! ([`crate::one_reports::event_log`]): contacts up and down, messages created, bundles going
//! on the air, landing or lost, copies dropped or moved.
//!
//! They are recorded only when asked for ([`Sim::record_events`]): otherwise each hook costs
//! a branch, and a flight's bundle ids (a hash per bundle) are never computed.

use super::{ContactEvent, Hash, Link, Running, Sim};

/// What happened, with hosts by index and messages by their index in
/// [`Outcome::messages`](super::Outcome::messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A contact came up (or went down), hosts in the order its event names them.
    Connection {
        /// First host.
        a: u32,
        /// Second host.
        b: u32,
        /// Up, else down.
        up: bool,
    },
    /// A message was created at its source.
    Created {
        /// The message.
        message: usize,
    },
    /// A bundle of the message went on the air from `from` to `to`.
    Started {
        /// Sender.
        from: u32,
        /// Receiver.
        to: u32,
        /// The message.
        message: usize,
    },
    /// A bundle of the message on the air never arrived (its contact ended), or its receiver
    /// refused it on arrival (it no longer held room for it, or took it meanwhile elsewhere).
    Aborted {
        /// Sender.
        from: u32,
        /// Receiver.
        to: u32,
        /// The message.
        message: usize,
    },
    /// A bundle of the message landed and its receiver kept it.
    Arrived {
        /// Sender.
        from: u32,
        /// Receiver.
        to: u32,
        /// The message.
        message: usize,
        /// What the arrival meant.
        how: Arrival,
    },
    /// A copy of a bundle of the message left a node's store.
    Deleted {
        /// The node.
        at: u32,
        /// The message.
        message: usize,
        /// Dropped (expired, or evicted from a full buffer), else handed on (spray-and-focus
        /// moves its single copy) or deleted on an acknowledgement of its delivery (MaxProp).
        dropped: bool,
    },
}

/// What a bundle's arrival meant for its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// It was the last bundle the destination lacked: the message's first delivery.
    Delivered,
    /// It reached the destination after the message was delivered.
    Again,
    /// Anything else: a copy handed to a relay, or a bundle of a message in several bundles
    /// that reached the destination before its last one.
    Relayed,
}

/// An event and its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    /// Time, ms.
    pub t_ms: u64,
    /// The event.
    pub event: Event,
}

impl Sim {
    /// Records the run's events into [`Outcome::events`](super::Outcome::events) (call before
    /// [`Sim::run`]); without it the list stays empty.
    pub fn record_events(&mut self) {
        self.log.get_or_insert_with(Vec::new);
    }

    /// Records `event` at `t`, if events are recorded.
    pub(super) fn note(&mut self, t: u64, event: Event) {
        if let Some(log) = self.log.as_mut() {
            log.push(Logged { t_ms: t, event });
        }
    }

    /// Contact `c` came up or went down.
    pub(super) fn connection(&mut self, c: ContactEvent, t: u64) {
        let (a, b, up) = (c.a, c.b, c.link == Link::Up);
        self.note(t, Event::Connection { a, b, up });
    }

    /// A copy of a bundle of `message` left `at`'s store.
    pub(super) fn deleted(&mut self, at: u32, message: usize, dropped: bool, t: u64) {
        self.note(
            t,
            Event::Deleted {
                at,
                message,
                dropped,
            },
        );
    }

    /// A bundle of `message` landed from `from` at `to`, which kept it: the message's first
    /// delivery if `first`, else a delivery again if `to` is its destination and it was
    /// delivered before, else a relay.
    pub(super) fn arrived(&mut self, (from, to): (u32, u32), message: usize, first: bool, t: u64) {
        if self.log.is_none() {
            return;
        }
        let m = &self.messages[message];
        let how = if first {
            Arrival::Delivered
        } else if m.to == to && m.delivered_ms.is_some() {
            Arrival::Again
        } else {
            Arrival::Relayed
        };
        self.note(
            t,
            Event::Arrived {
                from,
                to,
                message,
                how,
            },
        );
    }

    /// Events recorded so far.
    pub(super) fn noted(&self) -> usize {
        self.log.as_ref().map_or(0, Vec::len)
    }

    /// The bundles of messages in `run`'s flight, with their messages, if events are
    /// recorded (else none).
    pub(super) fn flown(&self, run: &Running) -> Vec<(Hash, usize)> {
        if self.log.is_none() {
            return Vec::new();
        }
        run.exchange
            .flight_ids()
            .into_iter()
            .filter_map(|id| Some((id, *self.by_id.get(&id)?)))
            .collect()
    }

    /// The flight of the session on `pair` went on the air: a start per bundle.
    pub(super) fn started(&mut self, pair: (u32, u32), t: u64) {
        if self.log.is_none() {
            return;
        }
        let Some(run) = self.up.get(&pair).and_then(|u| u.running.as_ref()) else {
            return;
        };
        for (from, to, message) in self.on_air(run) {
            self.note(t, Event::Started { from, to, message });
        }
    }

    /// `run`'s flight is lost with its contact: an abort per bundle.
    pub(super) fn lost(&mut self, run: &Running, t: u64) {
        for (from, to, message) in self.on_air(run) {
            self.note(t, Event::Aborted { from, to, message });
        }
    }

    /// Sender, receiver and message of each message bundle in `run`'s flight, if events are
    /// recorded (else none).
    fn on_air(&self, run: &Running) -> Vec<(u32, u32, usize)> {
        let Some(f) = self.log.as_ref().and_then(|_| run.exchange.flight()) else {
            return Vec::new();
        };
        let (from, to) = run.direction(f);
        let flown = self.flown(run).into_iter();
        flown.map(|(_, message)| (from, to, message)).collect()
    }

    /// `flown` (see [`Sim::flown`]) landed from `from` at `to`, which kept `admitted`: an abort
    /// for each bundle it refused. The arrivals, recorded from `marks.1` on, and these aborts
    /// go before what the landing set off (recorded from `marks.0`), as The ONE logs a
    /// transfer's end before its consequences.
    pub(super) fn landed(
        &mut self,
        (from, to): (u32, u32),
        flown: &[(Hash, usize)],
        admitted: &[Hash],
        marks: (usize, usize),
        t: u64,
    ) {
        for &(id, message) in flown {
            if !admitted.contains(&id) {
                self.note(t, Event::Aborted { from, to, message });
            }
        }
        if let Some(log) = self.log.as_mut() {
            log[marks.0..].rotate_left(marks.1 - marks.0);
        }
    }
}
