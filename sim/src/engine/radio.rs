//! Sessions over the radios: a message goes on the air when both ends' radios are free,
//! lands after its air time, and is lost with its contact; a session that ends hands its
//! pair over to the next one.

use super::{
    Air, BTreeSet, Duplex, Exchange, Flight, Hash, LAND, RngCore, Running, Sim, now, pair_mut,
};

impl Sim {
    /// Ends a session whose next message will never land: off the air or out of the queue,
    /// and its sender takes back what it gave with it.
    pub(super) fn stop(&mut self, pair: (u32, u32), running: Box<Running>, t: u64) {
        if let Some(q) = running.queued {
            self.waiting.remove(&(q.0, q.1, pair));
        }
        if let (Some(air), Some(flight)) = (running.on_air, running.exchange.flight()) {
            if air.reserved {
                let (from, to) = running.direction(flight);
                self.sending[from as usize] = false;
                self.receiving[to as usize] = false;
            }
            if flight.bundle_bytes > 0 {
                self.counters.aborted += 1;
            }
            self.lost(&running, t);
        }
        let (x, y) = running.ends;
        let (first, second) = pair_mut(&mut self.nodes, x as usize, y as usize);
        running
            .exchange
            .lose(&mut first.device, &mut second.device, now(t));
        self.drive(&[x, y], t);
    }

    /// `x` opens a session with `y` if they are in contact, set up, not in a session, and
    /// either changed since their last one.
    pub(super) fn kick(&mut self, x: u32, y: u32, t: u64) {
        let pair = (x.min(y), x.max(y));
        let versions = (self.version[pair.0 as usize], self.version[pair.1 as usize]);
        match self.up.get(&pair) {
            Some(u) if u.ready && u.running.is_none() && u.synced != Some(versions) => {}
            _ => return,
        }
        for n in [x, y] {
            self.expire_due(n, t);
        }
        self.drive(&[x, y], t);
        let salt = self.rng.next_u64();
        let peer = self.keys[y as usize].public();
        let policy = self.scenario.routing.policy().expect("checked");
        let exchange = Exchange::open(
            &mut self.nodes[x as usize].device,
            peer,
            now(t),
            salt,
            policy,
        );
        self.counters.sessions += 1;
        let opened = (self.version[pair.0 as usize], self.version[pair.1 as usize]);
        let u = self.up.get_mut(&pair).expect("checked above");
        u.running = Some(Box::new(Running {
            exchange,
            ends: (x, y),
            opened,
            own: (0, 0),
            seen: (0, 0),
            on_air: None,
            queued: None,
            hurry: false,
        }));
        self.queue(pair, t);
    }

    /// The session on `pair` has a message to send: it waits for the radios.
    pub(super) fn queue(&mut self, pair: (u32, u32), t: u64) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(r) = self.up.get_mut(&pair).and_then(|u| u.running.as_mut()) {
            r.queued = Some((t, seq));
            self.waiting.insert((t, seq, pair));
        }
    }

    /// Puts waiting messages on the air, oldest first, where both radios are free.
    pub(super) fn pump(&mut self, t: u64) {
        if self.waiting.is_empty() {
            return;
        }
        let mut waiting: Vec<(u64, u64, (u32, u32))> = self.waiting.iter().copied().collect();
        if self.scenario.routing.destination_first {
            // A radio sends what reaches its destination first, over whichever link.
            waiting.sort_by_cached_key(|w| (!self.for_receiver(w.2), *w));
        }
        for w in waiting {
            let pair = w.2;
            let Some(r) = self.up.get(&pair).and_then(|u| u.running.as_ref()) else {
                self.waiting.remove(&w);
                continue;
            };
            let Some(f) = r.exchange.flight() else {
                self.waiting.remove(&w);
                continue;
            };
            let (from, to) = r.direction(f);
            let air_ms = self.air_ms(pair, f);
            let reserved = air_ms > 0;
            if reserved && !self.free(from, to) {
                continue;
            }
            self.waiting.remove(&w);
            if reserved {
                self.sending[from as usize] = true;
                self.receiving[to as usize] = true;
            }
            self.seq += 1;
            let seq = self.seq;
            let r = self
                .up
                .get_mut(&pair)
                .and_then(|u| u.running.as_mut())
                .expect("looked up above");
            r.queued = None;
            r.on_air = Some(Air { seq, reserved });
            self.later(t + air_ms, LAND, seq, pair);
            self.started(pair, t);
        }
    }

    /// Whether the message waiting on `pair` carries a message to its receiver.
    pub(super) fn for_receiver(&self, pair: (u32, u32)) -> bool {
        let Some(r) = self.up.get(&pair).and_then(|u| u.running.as_ref()) else {
            return false;
        };
        let Some(f) = r.exchange.flight() else {
            return false;
        };
        let to = r.direction(f).1;
        r.exchange
            .flight_ids()
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .any(|&i| self.messages[i].to == to)
    }

    /// Whether `from` may send to `to` now.
    pub(super) fn free(&self, from: u32, to: u32) -> bool {
        let (f, g) = (from as usize, to as usize);
        match self.scenario.radio.duplex {
            Duplex::Full => !self.sending[f] && !self.receiving[g],
            Duplex::Half => {
                !(self.sending[f] || self.receiving[f] || self.sending[g] || self.receiving[g])
            }
        }
    }

    /// Milliseconds a message spends on the air.
    // Message lengths and rates are far below 2^53.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    pub(super) fn air_ms(&self, (a, b): (u32, u32), f: Flight) -> u64 {
        let r = &self.scenario.radio;
        let bitrate = self.hosts.bitrate(a, b);
        let bytes = if r.control_on_air {
            f.bytes
        } else {
            f.bundle_bytes
        };
        if bitrate == 0 || bytes == 0 {
            return 0;
        }
        let rate = bitrate as f64 * (1.0 - r.loss);
        (bytes as f64 * 8000.0 / rate).ceil() as u64
    }

    /// The message on the air over `pair` lands: its receiver handles it and answers.
    pub(super) fn land(&mut self, pair: (u32, u32), seq: u64, t: u64) {
        let Some(mut run) = self.up.get_mut(&pair).and_then(|u| {
            u.running
                .take_if(|run| run.on_air.is_some_and(|a| a.seq == seq))
        }) else {
            return;
        };
        let Some(flight) = run.exchange.flight() else {
            return;
        };
        let (from, to) = run.direction(flight);
        if run.on_air.is_some_and(|a| a.reserved) {
            self.sending[from as usize] = false;
            self.receiving[to as usize] = false;
        }
        run.on_air = None;
        let (x, y) = run.ends;
        let before = (self.version[pair.0 as usize], self.version[pair.1 as usize]);
        // The receiver's copies handed on in its last message leave it now: its peer answered.
        let handing = if flight.to_responder {
            run.exchange.responder().map_or(&[][..], |s| s.forwarding())
        } else {
            run.exchange.initiator().forwarding()
        };
        self.handed_on.extend(handing.iter().map(|id| (to, *id)));
        let flown = self.flown(&run);
        let (first, second) = pair_mut(&mut self.nodes, x as usize, y as usize);
        let result = run
            .exchange
            .deliver(&mut first.device, &mut second.device, now(t));
        let mark = self.noted();
        self.drive(&[x, y], t);
        self.handed_on.clear();
        let after = (self.version[pair.0 as usize], self.version[pair.1 as usize]);
        run.own.0 += after.0 - before.0;
        run.own.1 += after.1 - before.1;
        self.counters.bytes += flight.bytes;
        self.counters.bundle_bytes += flight.bundle_bytes;
        if result.is_err() {
            // Honest simulated peers never break the protocol; end the session.
            self.landed((from, to), &flown, &[], (mark, self.noted()), t);
            self.finish(pair, &run, t);
            return;
        }
        let admitted: Vec<Hash> = if flight.to_responder {
            let all = run.exchange.responder().map_or(&[][..], |s| s.admitted());
            let new = all[run.seen.1..].to_vec();
            run.seen.1 = all.len();
            new
        } else {
            let all = run.exchange.initiator().admitted();
            let new = all[run.seen.0..].to_vec();
            run.seen.0 = all.len();
            new
        };
        let took_from = self.noted();
        let took = self.took(to, from, &admitted, t);
        self.landed((from, to), &flown, &admitted, (mark, took_from), t);
        if run.exchange.flight().is_some() && run.hurry {
            // News for a peer came in while this message was on the air: start over.
            self.restart(pair, run, t);
        } else if run.exchange.flight().is_some() {
            if let Some(u) = self.up.get_mut(&pair) {
                u.running = Some(run);
            }
            self.queue(pair, t);
        } else {
            self.finish(pair, &run, t);
        }
        if took && self.scenario.routing.destination_first {
            // A message for a peer in range goes to it next, ahead of the session's queue.
            let peers = &self.peers[to as usize];
            let news: BTreeSet<u32> = admitted
                .iter()
                .filter_map(|id| self.by_id.get(id))
                .map(|&i| self.messages[i].to)
                .filter(|d| *d != from && peers.contains(d))
                .collect();
            for d in news {
                self.hurry(to, d, t);
            }
        }
        if took && self.scenario.routing.resync_s == 0.0 {
            // News goes on at once to the receiver's other peers.
            let peers: Vec<u32> = self.peers[to as usize].iter().copied().collect();
            for p in peers {
                if p != from {
                    self.kick(to, p, t);
                }
            }
        }
    }

    /// `x` holds news for its peer `y`: their session, if one runs, starts over so that the
    /// news goes first (at once if its next message waits, after it lands if on the air).
    pub(super) fn hurry(&mut self, x: u32, y: u32, t: u64) {
        let pair = (x.min(y), x.max(y));
        let Some(link) = self.up.get_mut(&pair) else {
            return;
        };
        match link.running.as_mut() {
            Some(run) if run.on_air.is_some() => run.hurry = true,
            Some(_) => {
                let run = link.running.take().expect("matched");
                self.restart(pair, run, t);
            }
            None => {}
        }
        self.kick(x, y, t);
    }

    /// Drops a session whose next message is not on the air, and opens a new one.
    pub(super) fn restart(&mut self, pair: (u32, u32), run: Box<Running>, t: u64) {
        let ends = run.ends;
        self.stop(pair, run, t);
        if let Some(u) = self.up.get_mut(&pair) {
            u.running = None;
            u.synced = None;
        }
        self.kick(ends.0, ends.1, t);
    }

    /// A session ended: the pair is in sync as of its start plus what it moved itself; if
    /// either side took something from elsewhere meanwhile, they sync again.
    /// The first session of a contact under PRoPHET, spray-and-focus or MaxProp is an
    /// encounter: both ends' predictabilities (or meeting likelihoods) changed, which is news
    /// for their other peers in range and for each other (a second session compares them after
    /// the encounter, as The ONE's routers look at every connection again after each change).
    pub(super) fn finish(&mut self, pair: (u32, u32), r: &Running, t: u64) {
        let v = (r.opened.0 + r.own.0, r.opened.1 + r.own.1);
        let encounter = self.predicts(pair) && self.up.get(&pair).is_some_and(|u| !u.encountered);
        if encounter {
            self.version[pair.0 as usize] += 1;
            self.version[pair.1 as usize] += 1;
        }
        self.met.insert(pair, v);
        if let Some(u) = self.up.get_mut(&pair) {
            u.synced = Some(v);
            u.running = None;
            u.encountered |= encounter;
        }
        if self.scenario.routing.resync_s == 0.0 {
            self.kick(r.ends.0, r.ends.1, t);
            if encounter {
                for (n, other) in [pair, (pair.1, pair.0)] {
                    let peers: Vec<u32> = self.peers[n as usize].iter().copied().collect();
                    for p in peers.into_iter().filter(|&p| p != other) {
                        self.kick(n, p, t);
                    }
                }
            }
        }
    }
}
