//! Messages: made at their source (in bundles of at most 981 bytes), answered on delivery
//! when they ask for a response, and followed copy by copy to their destination.

use super::{EPOCH, EXPIRE, Event, Hash, MessageEvent, MessageRecord, RESPOND, Sim, ms, now};
use crate::setup::sized_message;
use meshpay_protocol::store::Admission;

impl Sim {
    /// When the copies of a message created at `t` are dropped: once the clock's second is
    /// past its expiry (see `create`); never without a TTL.
    pub(super) fn expiry_tick(&self, t: u64) -> Option<u64> {
        let ttl = self.scenario.workload.ttl_s;
        (ttl > 0.0).then(|| (t / 1000 + ms(ttl) / 1000 + 1) * 1000)
    }

    /// Message `m` is made at its source at `t`; `request` is the message it answers, if any.
    pub(super) fn create(&mut self, m: &MessageEvent, request: Option<usize>, t: u64) {
        let idx = self.messages.len();
        let created = EPOCH + t / 1000;
        let ttl = self.scenario.workload.ttl_s;
        let expires = if ttl > 0.0 {
            created + ms(ttl) / 1000
        } else {
            EPOCH + ms(self.scenario.duration_s) / 1000 + 86_400
        };
        let sizes = crate::setup::fragment_sizes(m.size);
        let bundles: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(k, &size)| {
                sized_message(
                    &self.keys[m.from as usize],
                    &self.keys[m.to as usize],
                    created,
                    expires,
                    (idx as u64) << 24 | k as u64,
                    size,
                )
            })
            .collect();
        self.messages.push(MessageRecord {
            name: m.id.clone(),
            from: m.from,
            to: m.to,
            size: m.size,
            fragments: u32::try_from(bundles.len()).expect("fragments fit u32"),
            created_ms: t,
            delivered_ms: None,
            hops: None,
            id: bundles[0].id(),
            response_size: m.response_size,
            request,
        });
        self.parts.push(0);
        self.note(t, Event::Created { message: idx });
        self.held
            .insert(super::copy(m.from, idx), super::holding(0, t));
        let copies = self.hosts.of_host(m.from).routing.initial_copies();
        for bundle in &bundles {
            self.by_id.insert(bundle.id(), idx);
            let node = &mut self.nodes[m.from as usize];
            if !matches!(
                node.device.carry(now(t), bundle, copies),
                Admission::Added(_)
            ) {
                self.counters.dropped += 1;
                self.deleted(m.from, idx, true, t);
            }
        }
        self.drive(&[m.from], t);
    }

    /// The destination of request `request` makes `response` now, as The ONE's routers do on
    /// delivery; it expires as a created message does.
    pub(super) fn respond(&mut self, request: usize, response: MessageEvent, at: u64) {
        let seq = self.responses.len() as u64;
        self.responses.push((request, response));
        self.later(at, RESPOND, seq, (0, 0));
        if let Some(expiry) = self.expiry_tick(at) {
            self.later(expiry, EXPIRE, 0, (0, 0));
        }
    }

    /// Node `to` took `ids` from `from` at `at`: copies relayed, deliveries and hop counts.
    pub(super) fn took(&mut self, to: u32, from: u32, ids: &[Hash], at: u64) -> bool {
        for id in ids {
            if let Some(&idx) = self.by_id.get(id) {
                self.counters.relayed += 1;
                let h = self
                    .held
                    .get(&super::copy(from, idx))
                    .map_or(0, |c| super::held(*c).0)
                    + 1;
                self.held
                    .entry(super::copy(to, idx))
                    .or_insert(super::holding(h, at));
                let m = &mut self.messages[idx];
                let mut first = false;
                let mut response = None;
                if m.to == to && m.delivered_ms.is_none() && self.at_destination.insert(*id) {
                    self.parts[idx] += 1;
                    if self.parts[idx] == m.fragments {
                        m.delivered_ms = Some(at.max(m.created_ms));
                        m.hops = Some(h);
                        first = true;
                        // A response asks for none (its `response_size` is 0).
                        if m.response_size > 0 {
                            response = Some(MessageEvent {
                                t_ms: at,
                                id: format!("R_{}", m.name),
                                from: m.to,
                                to: m.from,
                                size: m.response_size,
                                response_size: 0,
                            });
                        }
                    }
                }
                self.arrived((from, to), idx, first, at);
                if let Some(r) = response {
                    self.respond(idx, r, at);
                }
            }
        }
        !ids.is_empty()
    }
}
