//! The app's Bluetooth LE radio, bridged: the platform (Android's `BluetoothGatt`, iOS's
//! CoreBluetooth) owns the connections and moves bytes; the library runs the framer and the
//! Noise session (`docs/ble.md`) over them.
//!
//! Each connection is a [`Pipe`] of the node's BLE link whose packets come from
//! [`Bridge::received`] and whose outgoing packets wait in one outbox the app drains with
//! [`Bridge::next_action`]. A connection may have at most [`QUEUE_PER_CONN`] packets waiting:
//! beyond that the session waits, as it waits for a busy radio, so an app that stops draining
//! holds a bounded amount of memory per connection.

use meshpay_transports::LinkError;
use meshpay_transports::ble::{PacketSink, Pipe};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// Packets one connection may have waiting for the app.
pub const QUEUE_PER_CONN: usize = 64;
/// Packets from the app one connection may have waiting for its session; more are dropped
/// (the framer retransmits them, as after radio loss).
pub const INBOX_PER_CONN: usize = 256;
/// The smallest packet: ATT MTU 23 less the 3-byte ATT header.
pub const MIN_PACKET: usize = 20;
/// The largest packet, whatever the MTU.
pub const MAX_PACKET: usize = 512;

/// What the app must do next on its radio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the connection (a central writes the RX characteristic without
    /// response; a peripheral notifies on TX). One action is one packet.
    Write {
        /// The connection.
        conn: u64,
        /// The packet.
        bytes: Vec<u8>,
    },
    /// Drop the connection (the session ended).
    Disconnect {
        /// The connection.
        conn: u64,
    },
}

impl Action {
    fn conn(&self) -> u64 {
        match self {
            Action::Write { conn, .. } | Action::Disconnect { conn } => *conn,
        }
    }
}

/// Why a radio call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RadioError {
    /// The connection id is not (or no longer) known.
    #[error("no connection {0}: it was never opened, or it has ended")]
    UnknownConnection(u64),
    /// A packet larger than any MTU allows.
    #[error("a packet of {0} bytes is larger than any BLE packet ({MAX_PACKET} bytes)")]
    PacketTooLarge(usize),
    /// Too many connections at once.
    #[error("already {0} connections: drop one first")]
    TooManyConnections(usize),
}

/// Most connections at once (a phone's BLE stack allows about seven).
pub const MAX_CONNECTIONS: usize = 16;

#[derive(Default)]
struct Outbox {
    queue: VecDeque<Action>,
    waiting: HashMap<u64, usize>,
}

struct Conn {
    inbox: mpsc::Sender<Vec<u8>>,
    max: Arc<AtomicUsize>,
}

/// The connections the app reported and the packets waiting for it.
#[derive(Default)]
pub struct Bridge {
    outbox: Mutex<Outbox>,
    /// Wakes the app's thread waiting in [`Bridge::next_action`].
    ready: Condvar,
    /// Wakes sessions waiting for room in the outbox.
    room: Notify,
    conns: Mutex<HashMap<u64, Conn>>,
    next: AtomicUsize,
}

fn packet_size(mtu: u32) -> usize {
    usize::try_from(mtu)
        .unwrap_or(MAX_PACKET)
        .saturating_sub(3)
        .clamp(MIN_PACKET, MAX_PACKET)
}

impl Bridge {
    /// A new connection at ATT `mtu`: returns its id and the pipe for the link.
    pub fn open(self: &Arc<Self>, address: &str, mtu: u32) -> Result<(u64, Pipe), RadioError> {
        let mut conns = self.conns.lock().expect("conns lock");
        if conns.len() >= MAX_CONNECTIONS {
            return Err(RadioError::TooManyConnections(conns.len()));
        }
        let conn = self.next.fetch_add(1, Ordering::Relaxed) as u64 + 1;
        let (tx, rx) = mpsc::channel(INBOX_PER_CONN);
        let max = Arc::new(AtomicUsize::new(packet_size(mtu)));
        conns.insert(
            conn,
            Conn {
                inbox: tx,
                max: Arc::clone(&max),
            },
        );
        let sink = Sink {
            bridge: Arc::clone(self),
            conn,
            max,
            closed: AtomicBool::new(false),
        };
        Ok((
            conn,
            Pipe {
                sink: Box::new(sink),
                packets: rx,
                address: address.to_owned(),
            },
        ))
    }

    /// The connection's MTU changed (Android's `onMtuChanged`, iOS's
    /// `maximumWriteValueLength` + 3).
    pub fn set_mtu(&self, conn: u64, mtu: u32) -> Result<(), RadioError> {
        let conns = self.conns.lock().expect("conns lock");
        let c = conns
            .get(&conn)
            .ok_or(RadioError::UnknownConnection(conn))?;
        c.max.store(packet_size(mtu), Ordering::Relaxed);
        Ok(())
    }

    /// A packet arrived on `conn`. A full inbox drops it, like a lost packet.
    pub fn received(&self, conn: u64, bytes: Vec<u8>) -> Result<(), RadioError> {
        if bytes.len() > MAX_PACKET {
            return Err(RadioError::PacketTooLarge(bytes.len()));
        }
        let conns = self.conns.lock().expect("conns lock");
        let c = conns
            .get(&conn)
            .ok_or(RadioError::UnknownConnection(conn))?;
        let _ = c.inbox.try_send(bytes);
        Ok(())
    }

    /// The connection is gone: its session ends and its waiting packets are dropped.
    pub fn closed(&self, conn: u64) -> Result<(), RadioError> {
        let gone = self.conns.lock().expect("conns lock").remove(&conn);
        self.forget(conn);
        gone.map(drop).ok_or(RadioError::UnknownConnection(conn))
    }

    fn forget(&self, conn: u64) {
        let mut out = self.outbox.lock().expect("outbox lock");
        out.queue
            .retain(|a| a.conn() != conn || matches!(a, Action::Disconnect { .. }));
        out.waiting.remove(&conn);
        drop(out);
        self.room.notify_waiters();
    }

    /// Waits up to `timeout` for the next thing to do on the radio.
    pub fn next_action(&self, timeout: Duration) -> Option<Action> {
        let deadline = Instant::now() + timeout;
        let mut out = self.outbox.lock().expect("outbox lock");
        loop {
            if let Some(a) = out.queue.pop_front() {
                if let Action::Write { conn, .. } = &a
                    && let Some(n) = out.waiting.get_mut(conn)
                {
                    *n = n.saturating_sub(1);
                }
                drop(out);
                self.room.notify_waiters();
                return Some(a);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            out = self.ready.wait_timeout(out, left).expect("outbox lock").0;
        }
    }

    /// Packets waiting for the app, over all connections.
    pub fn waiting(&self) -> usize {
        self.outbox.lock().expect("outbox lock").queue.len()
    }

    /// Queues `packet` for `conn`, waiting while the connection has [`QUEUE_PER_CONN`]
    /// waiting.
    async fn push(&self, conn: u64, packet: Vec<u8>) -> Result<(), LinkError> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                if !self.conns.lock().expect("conns lock").contains_key(&conn) {
                    return Err(LinkError::Closed);
                }
                let mut out = self.outbox.lock().expect("outbox lock");
                let n = out.waiting.entry(conn).or_default();
                if *n < QUEUE_PER_CONN {
                    *n += 1;
                    out.queue.push_back(Action::Write {
                        conn,
                        bytes: packet,
                    });
                    drop(out);
                    self.ready.notify_all();
                    return Ok(());
                }
            }
            room.await;
        }
    }

    fn disconnect(&self, conn: u64) {
        if self
            .conns
            .lock()
            .expect("conns lock")
            .remove(&conn)
            .is_some()
        {
            self.forget(conn);
            self.outbox
                .lock()
                .expect("outbox lock")
                .queue
                .push_back(Action::Disconnect { conn });
            self.ready.notify_all();
        }
    }
}

struct Sink {
    bridge: Arc<Bridge>,
    conn: u64,
    max: Arc<AtomicUsize>,
    closed: AtomicBool,
}

#[async_trait::async_trait]
impl PacketSink for Sink {
    async fn send(&self, packet: Vec<u8>) -> Result<(), LinkError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(LinkError::Closed);
        }
        self.bridge.push(self.conn, packet).await
    }

    fn max_packet(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    fn close(&self) {
        if !self.closed.swap(true, Ordering::Relaxed) {
            self.bridge.disconnect(self.conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn packets_queue_per_connection_and_wait_for_room() {
        let bridge = Arc::new(Bridge::default());
        let (conn, pipe) = bridge.open("aa", 23).unwrap();
        assert_eq!(pipe.sink.max_packet(), 20);
        bridge.set_mtu(conn, 185).unwrap();
        assert_eq!(pipe.sink.max_packet(), 182);
        for i in 0..QUEUE_PER_CONN {
            pipe.sink
                .send(vec![u8::try_from(i).unwrap()])
                .await
                .unwrap();
        }
        // The next one waits until the app takes one.
        let sink = pipe.sink;
        let full = tokio::spawn(async move {
            sink.send(vec![0xff]).await.unwrap();
            sink
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!full.is_finished());
        assert_eq!(
            bridge.next_action(Duration::ZERO),
            Some(Action::Write {
                conn,
                bytes: vec![0]
            })
        );
        let sink = full.await.unwrap();
        assert_eq!(bridge.waiting(), QUEUE_PER_CONN);
        // Closing drops what waits and tells the app to disconnect.
        sink.close();
        assert_eq!(
            bridge.next_action(Duration::ZERO),
            Some(Action::Disconnect { conn })
        );
        assert_eq!(bridge.next_action(Duration::from_millis(10)), None);
        assert!(matches!(sink.send(vec![1]).await, Err(LinkError::Closed)));
        assert_eq!(
            bridge.received(conn, vec![1]),
            Err(RadioError::UnknownConnection(conn))
        );
    }

    #[test]
    fn bad_input_is_refused() {
        let bridge = Arc::new(Bridge::default());
        let (conn, mut pipe) = bridge.open("aa", 23).unwrap();
        assert_eq!(
            bridge.received(conn, vec![0; 513]),
            Err(RadioError::PacketTooLarge(513))
        );
        bridge.received(conn, vec![7; 20]).unwrap();
        assert_eq!(pipe.packets.try_recv().unwrap(), vec![7; 20]);
        // A full inbox drops, never blocks the app's thread.
        for _ in 0..INBOX_PER_CONN + 10 {
            bridge.received(conn, vec![1]).unwrap();
        }
        assert_eq!(
            bridge.set_mtu(99, 23),
            Err(RadioError::UnknownConnection(99))
        );
        for i in 1..MAX_CONNECTIONS {
            bridge.open(&format!("{i}"), 23).unwrap();
        }
        assert!(matches!(
            bridge.open("one too many", 23),
            Err(RadioError::TooManyConnections(_))
        ));
        bridge.closed(conn).unwrap();
        assert!(pipe.packets.try_recv().is_ok());
        assert_eq!(
            bridge.closed(conn),
            Err(RadioError::UnknownConnection(conn))
        );
    }
}
