//! An emulated BLE connection in-process: packets up to the ATT payload size, a bit rate that
//! serialises them, latency with jitter (which reorders), loss, corruption and disconnects,
//! all drawn from one seed. Runs on tokio time, so a test with paused time is deterministic.
//!
//! The model is the application's view of a GATT connection: each packet is one write
//! without response (central → peripheral) or one notification (back); the sender waits while
//! the packet is on air (`bytes × 8 / bitrate`), as a controller with a full buffer makes it
//! wait, and it arrives `latency + jitter × u` later, `u` uniform in [0, 1).

use super::link::{PacketSink, Pipe};
use crate::LinkError;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Bytes each packet costs on air beyond its ATT value: the ATT opcode and handle (3) and the
/// L2CAP header (4). Link-layer framing is not counted.
pub const AIR_OVERHEAD: usize = 7;

/// The emulated connection's properties.
#[derive(Debug, Clone)]
pub struct EmuConfig {
    /// ATT_MTU; packets carry up to `mtu − 3` bytes.
    pub mtu: usize,
    /// Application throughput in bits per second, each way.
    pub bitrate: u64,
    /// One-way delay.
    pub latency: Duration,
    /// Extra random delay, up to this much (packets can overtake each other).
    pub jitter: Duration,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Probability that one byte of a packet is flipped.
    pub corrupt: f64,
    /// The connection drops after this long.
    pub disconnect_after: Option<Duration>,
    /// Seed of every random draw.
    pub seed: u64,
}

impl Default for EmuConfig {
    fn default() -> Self {
        Self {
            mtu: 247,
            bitrate: 700_000,
            latency: Duration::from_millis(15),
            jitter: Duration::ZERO,
            loss: 0.0,
            corrupt: 0.0,
            disconnect_after: None,
            seed: 1,
        }
    }
}

impl EmuConfig {
    /// The largest packet: the ATT payload.
    pub fn max_packet(&self) -> usize {
        self.mtu.saturating_sub(3).clamp(20, 512)
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmuStats {
    /// Packets handed to the radio.
    pub packets: u64,
    /// Their bytes, with [`AIR_OVERHEAD`] each.
    pub air_bytes: u64,
    /// Packets lost.
    pub lost: u64,
    /// Packets corrupted.
    pub corrupted: u64,
}

struct Shared {
    config: EmuConfig,
    closed: AtomicBool,
    close_tx: watch::Sender<bool>,
    // Per direction: 0 central → peripheral, 1 peripheral → central.
    rng: [Mutex<u64>; 2],
    stats: [Mutex<EmuStats>; 2],
}

impl Shared {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.close_tx.send(true);
    }

    fn draw(&self, dir: usize) -> f64 {
        let mut s = self.rng[dir].lock().expect("rng lock");
        // splitmix64
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        #[allow(clippy::cast_precision_loss)]
        let u = (z >> 11) as f64 / (1u64 << 53) as f64;
        u
    }
}

/// Watches and controls an emulated connection.
#[derive(Clone)]
pub struct EmuControl(Arc<Shared>);

impl EmuControl {
    /// Drops the connection, as walking out of range does.
    pub fn disconnect(&self) {
        self.0.close();
    }

    /// Counters: `[central → peripheral, peripheral → central]`.
    pub fn stats(&self) -> [EmuStats; 2] {
        [
            *self.0.stats[0].lock().expect("stats lock"),
            *self.0.stats[1].lock().expect("stats lock"),
        ]
    }
}

struct EmuSink {
    dir: usize,
    shared: Arc<Shared>,
    radio: tokio::sync::Mutex<()>,
    feed: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
}

#[async_trait::async_trait]
impl PacketSink for EmuSink {
    async fn send(&self, mut packet: Vec<u8>) -> Result<(), LinkError> {
        let max = self.shared.config.max_packet();
        if packet.len() > max {
            return Err(LinkError::TooLarge {
                len: packet.len(),
                limit: max,
            });
        }
        let _radio = self.radio.lock().await;
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(LinkError::Closed);
        }
        let bits = (packet.len() as u64) * 8;
        let nanos = bits * 1_000_000_000 / self.shared.config.bitrate.max(1);
        tokio::time::sleep(Duration::from_nanos(nanos)).await;
        let cfg = &self.shared.config;
        {
            let mut st = self.shared.stats[self.dir].lock().expect("stats lock");
            st.packets += 1;
            st.air_bytes += (packet.len() + AIR_OVERHEAD) as u64;
        }
        if self.shared.draw(self.dir) < cfg.loss {
            self.shared.stats[self.dir].lock().expect("stats lock").lost += 1;
            return Ok(());
        }
        if self.shared.draw(self.dir) < cfg.corrupt && !packet.is_empty() {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let at = (self.shared.draw(self.dir) * packet.len() as f64) as usize;
            let last = packet.len() - 1;
            packet[at.min(last)] ^= 0x20;
            self.shared.stats[self.dir]
                .lock()
                .expect("stats lock")
                .corrupted += 1;
        }
        let jitter = cfg.jitter.mul_f64(self.shared.draw(self.dir));
        let at = Instant::now() + cfg.latency + jitter;
        self.feed.send((at, packet)).map_err(|_| LinkError::Closed)
    }

    fn max_packet(&self) -> usize {
        self.shared.config.max_packet()
    }

    fn close(&self) {
        self.shared.close();
    }
}

/// Delivers one direction's packets at their arrival times until the connection closes.
async fn deliver(
    mut feed: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    out: mpsc::Sender<Vec<u8>>,
    mut closed: watch::Receiver<bool>,
) {
    let mut heap: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
    let mut order = 0u64;
    loop {
        let next = heap.peek().map(|Reverse((t, _, _))| *t);
        tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => return,
            () = async { tokio::time::sleep_until(next.expect("guarded")).await }, if next.is_some() => {
                let Some(Reverse((_, _, p))) = heap.pop() else { continue };
                // A receiver that does not keep up loses packets, as a full BLE stack does.
                let _ = out.try_send(p);
            }
            item = feed.recv() => match item {
                Some((t, p)) => {
                    heap.push(Reverse((t, order, p)));
                    order += 1;
                }
                None if heap.is_empty() => return,
                None => {}
            },
        }
    }
}

/// An emulated connection: the central's pipe, the peripheral's pipe and the control.
/// Must be called inside a tokio runtime.
pub fn pair(config: EmuConfig) -> (Pipe, Pipe, EmuControl) {
    let (close_tx, close_rx) = watch::channel(false);
    let seed = config.seed;
    let after = config.disconnect_after;
    let shared = Arc::new(Shared {
        config,
        closed: AtomicBool::new(false),
        close_tx,
        rng: [Mutex::new(seed), Mutex::new(seed ^ 0xD1B5_4A32_D192_ED03)],
        stats: [
            Mutex::new(EmuStats::default()),
            Mutex::new(EmuStats::default()),
        ],
    });
    let mut pipes = Vec::new();
    for (dir, name) in [(0, "emulated:peripheral"), (1, "emulated:central")] {
        let (feed_tx, feed_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::channel(4096);
        tokio::spawn(deliver(feed_rx, out_tx, close_rx.clone()));
        pipes.push((
            Box::new(EmuSink {
                dir,
                shared: shared.clone(),
                radio: tokio::sync::Mutex::new(()),
                feed: feed_tx,
            }),
            out_rx,
            name,
        ));
    }
    if let Some(after) = after {
        let s = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            s.close();
        });
    }
    let (sink_b, rx_b, name_b) = pipes.pop().expect("two");
    let (sink_a, rx_a, name_a) = pipes.pop().expect("two");
    // The central sends on direction 0 and hears direction 1.
    let central = Pipe {
        sink: sink_a,
        packets: rx_b,
        address: name_a.into(),
    };
    let peripheral = Pipe {
        sink: sink_b,
        packets: rx_a,
        address: name_b.into(),
    };
    (central, peripheral, EmuControl(shared))
}
