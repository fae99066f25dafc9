//! The BLE framer: a reliable, ordered message stream over unreliable, size-limited packets
//! (GATT writes without response one way, notifications the other).
//!
//! Sans-IO: the caller feeds packets in with [`Framer::receive`], takes packets out with
//! [`Framer::poll_transmit`], and drives timers with [`Framer::poll_timeout`] and
//! [`Framer::handle_timeout`]. Time is a [`Duration`] since any fixed start.
//!
//! Packets (docs/ble.md has the normative layout):
//!
//! | type | bytes |
//! |------|-------|
//! | DATA | `0x40 \| END`, seq u16 BE, payload |
//! | ACK  | `0x20`, next u16 BE, sack u32 BE, max_packet u16 BE, window u16 BE |
//! | RESET| `0x30`, reason u8 |
//!
//! A message is cut into DATA packets; the last has the END flag (`0x01`). Sequence numbers
//! count packets and wrap at 2^16. The receiver acknowledges cumulatively (`next` is the first
//! sequence number it has not received) and selectively (bit *i* of `sack` says it holds
//! `next + 1 + i`), and says how large a packet it accepts and how many packets it buffers.
//! Lost packets are sent again after a retransmission timeout estimated from round trips
//! (RFC 6298), or at once when later packets are acknowledged past them.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// The smallest packet every BLE link carries: ATT_MTU 23 minus the 3-byte ATT header.
pub const MIN_PACKET: usize = 20;
/// The largest packet: the longest ATT attribute value.
pub const MAX_PACKET: usize = 512;
/// Bytes of a DATA packet's header.
pub const DATA_HEADER: usize = 3;
/// Bytes of an ACK packet.
pub const ACK_LEN: usize = 11;

const DATA: u8 = 0x40;
const END: u8 = 0x01;
const ACK: u8 = 0x20;
const RESET: u8 = 0x30;

/// Why the stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A message is longer than the limit.
    #[error("message of {len} bytes is over the limit of {limit}")]
    TooLarge {
        /// Its length (so far, for an incoming one).
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The send buffer is full: wait until [`Framer::can_send`] says yes.
    #[error("send buffer full")]
    Full,
    /// A packet went unacknowledged through every retry.
    #[error("the peer stopped acknowledging")]
    Timeout,
    /// An empty message (the framing cannot carry one).
    #[error("empty message")]
    Empty,
    /// The peer reset the stream.
    #[error("the peer closed the stream (reason {0})")]
    PeerReset(u8),
    /// This side closed the stream.
    #[error("the stream is closed")]
    Closed,
}

/// Reasons carried in a RESET packet.
pub mod reason {
    /// Orderly close.
    pub const CLOSE: u8 = 0;
    /// The peer broke the protocol (bad handshake, a message that failed authentication).
    pub const PROTOCOL: u8 = 1;
    /// A message over the size limit.
    pub const TOO_LARGE: u8 = 2;
    /// Retries exhausted.
    pub const TIMEOUT: u8 = 3;
}

/// Framer settings.
#[derive(Debug, Clone)]
pub struct FramerConfig {
    /// The largest packet this side accepts (ATT_MTU − 3 as the BLE stack reports it).
    pub max_packet_in: usize,
    /// Packets this side buffers out of order, and the most it sends unacknowledged.
    pub window: u16,
    /// The longest message, either way.
    pub max_message: usize,
    /// Bytes of messages queued for sending before [`Framer::send`] says [`FrameError::Full`].
    pub send_buffer: usize,
    /// Retransmission timeout before any round trip is measured.
    pub rto_initial: Duration,
    /// Bounds of the retransmission timeout.
    pub rto_min: Duration,
    /// Upper bound of the retransmission timeout.
    pub rto_max: Duration,
    /// Sends of one packet before the stream is given up.
    pub max_sends: u32,
    /// Longest wait before acknowledging received data.
    pub ack_delay: Duration,
    /// Acknowledge at once after this many packets.
    pub ack_every: u16,
}

impl Default for FramerConfig {
    fn default() -> Self {
        Self {
            max_packet_in: MAX_PACKET,
            window: 32,
            max_message: 4096,
            send_buffer: 16 * 1024,
            rto_initial: Duration::from_millis(600),
            rto_min: Duration::from_millis(60),
            rto_max: Duration::from_secs(4),
            max_sends: 10,
            ack_delay: Duration::from_millis(15),
            ack_every: 4,
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Packets sent, retransmissions and acks included.
    pub packets_sent: u64,
    /// Bytes of those packets.
    pub bytes_sent: u64,
    /// DATA packets sent again.
    pub retransmits: u64,
    /// Packets received.
    pub packets_received: u64,
    /// Packets dropped as malformed, out of window or acknowledging what was never sent.
    pub rejected: u64,
    /// Messages delivered.
    pub messages_in: u64,
}

#[derive(Debug)]
struct Inflight {
    seq: u16,
    packet: Vec<u8>,
    sent_at: Duration,
    sends: u32,
    sacked: bool,
    resend: bool,
}

/// One end of a framed stream.
#[derive(Debug)]
pub struct Framer {
    config: FramerConfig,
    // Sending.
    queue: VecDeque<Vec<u8>>,
    offset: usize,
    queued_bytes: usize,
    next_seq: u16,
    inflight: VecDeque<Inflight>,
    peer_max_packet: usize,
    peer_window: u16,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    backed_off: Option<Duration>,
    /// Congestion window in packets (AIMD), and the slow-start threshold.
    cwnd: f64,
    ssthresh: f64,
    // Receiving.
    next_expected: u16,
    held: HashMap<u16, (bool, Vec<u8>)>,
    partial: Vec<u8>,
    delivered: VecDeque<Vec<u8>>,
    unacked_in: u16,
    ack_now: bool,
    ack_at: Option<Duration>,
    // Ending.
    reset_out: Option<u8>,
    ended: Option<FrameError>,
    stats: FrameStats,
}

impl Framer {
    /// A fresh stream end.
    pub fn new(config: FramerConfig) -> Self {
        let rto = config.rto_initial;
        Self {
            config,
            queue: VecDeque::new(),
            offset: 0,
            queued_bytes: 0,
            next_seq: 0,
            inflight: VecDeque::new(),
            peer_max_packet: MIN_PACKET,
            peer_window: 4,
            srtt: None,
            rttvar: Duration::ZERO,
            rto,
            backed_off: None,
            cwnd: 4.0,
            ssthresh: f64::from(u16::MAX),
            next_expected: 0,
            held: HashMap::new(),
            partial: Vec::new(),
            delivered: VecDeque::new(),
            unacked_in: 0,
            // Say at once how large a packet this side takes.
            ack_now: true,
            ack_at: None,
            reset_out: None,
            ended: None,
            stats: FrameStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> FrameStats {
        self.stats
    }

    /// Whether a message of `len` bytes fits in the send buffer now.
    pub fn can_send(&self, len: usize) -> bool {
        self.ended.is_none()
            && len <= self.config.max_message
            && (self.queued_bytes == 0 || self.queued_bytes + len <= self.config.send_buffer)
    }

    /// Whether everything sent has been acknowledged.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.inflight.is_empty()
    }

    /// The largest packet the peer takes, as far as this side knows.
    pub fn peer_max_packet(&self) -> usize {
        self.peer_max_packet
    }

    /// Queues a message.
    pub fn send(&mut self, message: &[u8]) -> Result<(), FrameError> {
        if let Some(e) = self.ended {
            return Err(e);
        }
        if message.is_empty() {
            return Err(FrameError::Empty);
        }
        if message.len() > self.config.max_message {
            return Err(FrameError::TooLarge {
                len: message.len(),
                limit: self.config.max_message,
            });
        }
        if !self.can_send(message.len()) {
            return Err(FrameError::Full);
        }
        self.queued_bytes += message.len();
        self.queue.push_back(message.to_vec());
        Ok(())
    }

    /// The next delivered message, in order.
    pub fn poll_message(&mut self) -> Option<Vec<u8>> {
        self.delivered.pop_front()
    }

    /// Ends the stream from this side: a RESET with `reason` goes out next.
    pub fn close(&mut self, why: u8) {
        if self.ended.is_none() {
            self.ended = Some(FrameError::Closed);
            self.reset_out = Some(why);
        }
    }

    /// Takes one packet from the peer. Malformed or stray packets are dropped and counted;
    /// an error means the stream has ended.
    pub fn receive(&mut self, now: Duration, packet: &[u8]) -> Result<(), FrameError> {
        if let Some(e) = self.ended {
            return Err(e);
        }
        self.stats.packets_received += 1;
        match packet.first().copied() {
            Some(b) if b & 0xF0 == DATA && packet.len() > DATA_HEADER && b & 0x0E == 0 => {
                let seq = u16::from_be_bytes([packet[1], packet[2]]);
                self.on_data(now, seq, b & END != 0, &packet[DATA_HEADER..])
            }
            Some(ACK) if packet.len() == ACK_LEN => {
                let next = u16::from_be_bytes([packet[1], packet[2]]);
                let sack = u32::from_be_bytes([packet[3], packet[4], packet[5], packet[6]]);
                let max_packet = usize::from(u16::from_be_bytes([packet[7], packet[8]]));
                let window = u16::from_be_bytes([packet[9], packet[10]]);
                self.on_ack(now, next, sack, max_packet, window);
                Ok(())
            }
            Some(RESET) if packet.len() == 2 => {
                let e = FrameError::PeerReset(packet[1]);
                self.ended = Some(e);
                Err(e)
            }
            _ => {
                self.stats.rejected += 1;
                Ok(())
            }
        }
    }

    fn on_data(
        &mut self,
        now: Duration,
        seq: u16,
        end: bool,
        payload: &[u8],
    ) -> Result<(), FrameError> {
        let ahead = seq.wrapping_sub(self.next_expected);
        if ahead >= 0x8000 {
            // Already delivered: the peer missed an ack.
            self.ack_now = true;
            return Ok(());
        }
        if ahead >= self.config.window {
            self.stats.rejected += 1;
            return Ok(());
        }
        if ahead > 0 {
            // A gap: tell the sender at once so it can fill it.
            self.held.entry(seq).or_insert((end, payload.to_vec()));
            self.ack_now = true;
            return Ok(());
        }
        self.take(end, payload)?;
        while let Some((end, payload)) = self.held.remove(&self.next_expected) {
            self.take(end, &payload)?;
        }
        self.unacked_in += 1;
        if end || self.unacked_in >= self.config.ack_every || !self.held.is_empty() {
            self.ack_now = true;
        } else if self.ack_at.is_none() {
            self.ack_at = Some(now + self.config.ack_delay);
        }
        Ok(())
    }

    fn take(&mut self, end: bool, payload: &[u8]) -> Result<(), FrameError> {
        self.next_expected = self.next_expected.wrapping_add(1);
        if self.partial.len() + payload.len() > self.config.max_message {
            let e = FrameError::TooLarge {
                len: self.partial.len() + payload.len(),
                limit: self.config.max_message,
            };
            self.ended = Some(e);
            self.reset_out = Some(reason::TOO_LARGE);
            return Err(e);
        }
        self.partial.extend_from_slice(payload);
        if end {
            self.delivered.push_back(std::mem::take(&mut self.partial));
            self.stats.messages_in += 1;
        }
        Ok(())
    }

    fn on_ack(&mut self, now: Duration, next: u16, sack: u32, max_packet: usize, window: u16) {
        let base = self.inflight.front().map_or(self.next_seq, |p| p.seq);
        let acked = usize::from(next.wrapping_sub(base));
        if acked > self.inflight.len() {
            // Acknowledges what was never sent: a stray or forged packet.
            self.stats.rejected += 1;
            return;
        }
        self.peer_max_packet = max_packet.clamp(MIN_PACKET, MAX_PACKET);
        self.peer_window = window.max(1);
        // Round trips are measured on packets this ack reports for the first time and that
        // went out once: the most recent of them, since earlier ones may have waited behind
        // a hole at the receiver.
        let mut sample: Option<Duration> = None;
        let mut delivered = 0u32;
        let mut measure = |p: &Inflight| {
            if !p.sacked {
                delivered += 1;
            }
            if p.sends == 1 && !p.sacked {
                let r = now.saturating_sub(p.sent_at);
                sample = Some(sample.map_or(r, |s| s.min(r)));
            }
        };
        for p in self.inflight.drain(..acked) {
            self.queued_bytes = self
                .queued_bytes
                .saturating_sub(p.packet.len() - DATA_HEADER);
            measure(&p);
        }
        let mut highest_sacked = None;
        for (i, p) in self.inflight.iter_mut().enumerate().skip(1) {
            if i <= 32 && sack & (1 << (i - 1)) != 0 {
                measure(p);
                p.sacked = true;
                highest_sacked = Some(i);
            }
        }
        // The first outstanding packet is never legitimately selectively acknowledged (the
        // cumulative ack would cover it): a corrupted or lying ack must not stop its timer.
        if let Some(front) = self.inflight.front_mut() {
            front.sacked = false;
        }
        if let Some(r) = sample {
            self.on_rtt(r);
        }
        for _ in 0..delivered {
            // Slow start, then one packet more per window (AIMD, as TCP's Reno).
            self.cwnd += if self.cwnd < self.ssthresh {
                1.0
            } else {
                1.0 / self.cwnd
            };
        }
        self.cwnd = self.cwnd.min(f64::from(self.config.window));
        if let Some(h) = highest_sacked {
            // A packet sent before one that arrived, and older than a round trip and a
            // quarter (room for reordering), is lost: send it again now (as RACK does).
            let srtt = self.srtt.unwrap_or(self.rto);
            let reorder = srtt + srtt / 4;
            // A lone loss on a radio link says little about queueing (BLE retransmits on its
            // own): the window is cut only on a timeout.
            for p in self.inflight.iter_mut().take(h) {
                if !p.sacked && !p.resend && now.saturating_sub(p.sent_at) >= reorder {
                    p.resend = true;
                }
            }
        }
    }

    fn base_rto(&self) -> Duration {
        match self.srtt {
            None => self.config.rto_initial,
            Some(s) => (s + (self.rttvar * 4).max(Duration::from_millis(10)))
                .clamp(self.config.rto_min, self.config.rto_max),
        }
    }
    fn on_rtt(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + r) / 8);
            }
        }
        self.rto = self.base_rto();
    }

    /// The next packet to send, at most `link_max` bytes long (what the link takes now), or
    /// `None` when there is nothing to send until a packet arrives or a timer fires.
    pub fn poll_transmit(&mut self, now: Duration, link_max: usize) -> Option<Vec<u8>> {
        if let Some(why) = self.reset_out.take() {
            return Some(self.count(vec![RESET, why]));
        }
        if self.ended.is_some() {
            return None;
        }
        if self.ack_now || self.ack_at.is_some_and(|t| now >= t) {
            return Some(self.ack_packet());
        }
        if let Some(p) = self.inflight.iter_mut().find(|p| p.resend) {
            p.resend = false;
            p.sent_at = now;
            p.sends += 1;
            let packet = p.packet.clone();
            self.stats.retransmits += 1;
            return Some(self.count(packet));
        }
        let window = usize::from(self.peer_window.min(self.config.window));
        let outstanding = self.inflight.iter().filter(|p| !p.sacked).count();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let cwnd = self.cwnd as usize;
        if self.inflight.len() >= window || outstanding >= cwnd.max(1) {
            return None;
        }
        let front = self.queue.front()?;
        // Some stacks report less than 20 bytes at the smallest MTU (BlueZ through bluer, for
        // notifications): the link's own limit wins.
        let room = self.peer_max_packet.min(link_max).max(DATA_HEADER + 1) - DATA_HEADER;
        let take = room.min(front.len() - self.offset);
        let end = self.offset + take == front.len();
        let mut packet = Vec::with_capacity(DATA_HEADER + take);
        packet.push(DATA | if end { END } else { 0 });
        packet.extend_from_slice(&self.next_seq.to_be_bytes());
        packet.extend_from_slice(&front[self.offset..self.offset + take]);
        if end {
            self.queue.pop_front();
            self.offset = 0;
        } else {
            self.offset += take;
        }
        self.inflight.push_back(Inflight {
            seq: self.next_seq,
            packet: packet.clone(),
            sent_at: now,
            sends: 1,
            sacked: false,
            resend: false,
        });
        self.next_seq = self.next_seq.wrapping_add(1);
        Some(self.count(packet))
    }

    fn ack_packet(&mut self) -> Vec<u8> {
        self.ack_now = false;
        self.ack_at = None;
        self.unacked_in = 0;
        let mut sack = 0u32;
        for i in 0..32u16 {
            if self
                .held
                .contains_key(&self.next_expected.wrapping_add(1 + i))
            {
                sack |= 1 << i;
            }
        }
        let mut p = Vec::with_capacity(ACK_LEN);
        p.push(ACK);
        p.extend_from_slice(&self.next_expected.to_be_bytes());
        p.extend_from_slice(&sack.to_be_bytes());
        let max_in = u16::try_from(self.config.max_packet_in.clamp(MIN_PACKET, MAX_PACKET))
            .unwrap_or(u16::MAX);
        p.extend_from_slice(&max_in.to_be_bytes());
        p.extend_from_slice(&self.config.window.to_be_bytes());
        self.count(p)
    }

    fn count(&mut self, p: Vec<u8>) -> Vec<u8> {
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += p.len() as u64;
        p
    }

    /// When [`Framer::handle_timeout`] next needs to run.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.ended.is_some() {
            return None;
        }
        let rto = self
            .inflight
            .iter()
            .filter(|p| !p.sacked && !p.resend)
            .map(|p| p.sent_at + self.rto)
            .min();
        match (rto, self.ack_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers due at `now`. An error means a packet went unacknowledged through every
    /// retry and the stream has ended.
    pub fn handle_timeout(&mut self, now: Duration) -> Result<(), FrameError> {
        if let Some(e) = self.ended {
            return Err(e);
        }
        let rto = self.rto;
        let mut expired = false;
        for p in &mut self.inflight {
            if !p.sacked && !p.resend && now >= p.sent_at + rto {
                if p.sends >= self.config.max_sends {
                    self.ended = Some(FrameError::Timeout);
                    self.reset_out = Some(reason::TIMEOUT);
                    return Err(FrameError::Timeout);
                }
                p.resend = true;
                expired = true;
            }
        }
        if expired && self.backed_off.is_none_or(|t| now >= t + rto) {
            // Back off once per timeout period: the link is slower than measured, or gone.
            self.rto = (self.rto * 2).min(self.config.rto_max);
            self.backed_off = Some(now);
            self.ssthresh = (self.cwnd / 2.0).max(2.0);
            self.cwnd = 2.0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
