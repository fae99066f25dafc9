//! Carrying bundles: sync sessions with peers (as initiator and as responder), bundle files,
//! a gateway's receipts and alerts, and what the device does with each bundle it admits
//! (receipts settle its payments, notices and fraud proofs refuse forked allowances,
//! revocations refuse revoked ones).

use super::state::{MeshWrite, Put, alert_issuer};
use super::{
    Answer, Change, CommitError, Device, DeviceError, Event, Learned, Now, OpId, ReplyId, Then,
};
use crate::bundle::{self, Bundle, Content};
use crate::keys::{DeviceKey, IssuerId};
use crate::message::{ErrorCode, Request, Response};
use crate::objects::{Hash, SettlementReceipt};
use crate::payee::NoticeOutcome;
use crate::store::{Admission, Admitted, Changes, Origin};
use crate::sync::{Session, SessionConfig, Step, SyncError, SyncMessage};
use rand_core::RngCore;

/// An outgoing sync session.
pub(super) struct Initiator {
    session: Session,
    steps: u32,
    /// `SyncAll` commands waiting for it to end.
    waiters: Vec<OpId>,
}

/// A `SyncAll` command in progress.
pub(super) struct SyncAll {
    waiting: std::collections::BTreeSet<DeviceKey>,
    peers: usize,
    took: usize,
    gave: usize,
}

/// How a bundle file import went.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    /// Bundles in the file.
    pub bundles: usize,
    /// Kept.
    pub added: usize,
    /// Already held.
    pub duplicate: usize,
    /// Records already settled.
    pub settled: usize,
    /// Refused (invalid, forged, expired, foreign, no room).
    pub refused: usize,
    /// Up to five refusal reasons.
    pub reasons: Vec<String>,
}

/// What a step does once its bundle store changes are written.
pub(super) enum AfterMesh {
    /// Answer a peer's sync message.
    Respond {
        reply: ReplyId,
        peer: DeviceKey,
        answer: SyncMessage,
        finished: bool,
    },
    /// Our session goes on with `next`, or ends.
    Step {
        peer: DeviceKey,
        next: Option<SyncMessage>,
    },
    /// A command's answer.
    Done { op: OpId, answer: Answer },
}

impl Device {
    pub(super) fn session_config(&self, peer: DeviceKey, now: Now) -> SessionConfig {
        SessionConfig {
            me: self.me,
            peer,
            gateway_for: self.gateway_for.clone(),
            routing: self.config.routing,
            budget: self.config.sync_budget,
            policy: crate::sync::Policy::default(),
            encounter: false,
            now: now.unix,
        }
    }

    /// Writes what the store changed, after acting on what it admitted (which may change it
    /// again: a fraud proof from two notices), then carries on with `then`.
    pub(super) fn flush_mesh(&mut self, now: Now, then: Then) {
        let mut all = Changes::default();
        // Acting on a bundle can admit at most one more (a proof), which admits nothing: the
        // loop ends in a few rounds.
        for _ in 0..8 {
            let mut ch = self.store.take_changes();
            let admitted = std::mem::take(&mut ch.admitted);
            let empty = ch.is_empty() && ch.bodies.is_empty() && admitted.is_empty();
            merge(&mut all, ch);
            for a in admitted {
                self.act_on(now, a);
            }
            if empty {
                break;
            }
        }
        let write = self.net_write(all);
        if write.is_empty() {
            self.resume(now, then, Ok(()));
        } else {
            self.commit(Change::Mesh(write), then);
        }
    }

    /// The net effect of a step's store changes: what is still held is put, with what the
    /// store knows of it; what is gone is removed.
    fn net_write(&self, all: Changes) -> MeshWrite {
        let mut seen = std::collections::BTreeSet::new();
        let mut put = Vec::new();
        let bodies = all.bodies.into_iter().map(|(id, b)| (id, Some(b)));
        let counts = all.added.into_iter().map(|id| (id, None));
        for (id, body) in bodies.chain(counts) {
            if let Some(e) = self.store.get(&id) {
                if seen.insert(id) {
                    put.push(Put {
                        id,
                        origin: e.origin,
                        copies: e.copies,
                        arrival: e.arrival,
                        body,
                    });
                }
            }
        }
        let mut removed: Vec<Hash> = all
            .removed
            .into_iter()
            .filter(|id| !self.store.contains(id))
            .collect();
        removed.sort();
        removed.dedup();
        MeshWrite {
            put,
            removed,
            tombstoned: all.tombstoned,
            untombstoned: all.untombstoned,
        }
    }

    /// What an admitted bundle means for this device.
    fn act_on(&mut self, now: Now, a: Admitted) {
        match a.content {
            Content::Receipt(r) => {
                self.take_receipt(&r.body().issuer.clone(), &r);
            }
            Content::Fraud(p) => self.take_fraud(now, &p),
            Content::Revocation(rev) if self.book.add_revocation(&rev).unwrap_or(false) => {
                self.event(Event::Learned(Learned::Revoked {
                    allowance: rev.body().allowance,
                }));
            }
            Content::Notice(n) if self.book.trusts(&n.cert.body().issuer) => {
                let id = n.cert.id();
                if self.book.certificate(&id).is_none() {
                    let _ = self.book.add_certificate(&n.cert);
                }
                // The store verified the bundle: the notice under its own certificate. That
                // is the book's certificate, unless another came first under the same id.
                let outcome = if self.book.certificate(&id) == Some(&n.cert) {
                    self.book.observe_verified_notice(&n.notice)
                } else {
                    self.book.observe_notice(&n.notice)
                };
                if let NoticeOutcome::Fork(p) = outcome {
                    self.take_fraud(now, &p);
                    self.store.insert_bundle(
                        &Bundle::new(Content::Fraud(p)),
                        Origin::Local,
                        0,
                        now.unix,
                    );
                }
            }
            Content::Record(r) if self.gateway_for.contains(&r.issuer) => {
                self.event(Event::Learned(Learned::Record {
                    issuer: r.issuer,
                    record: r,
                }));
            }
            _ => {}
        }
    }

    /// Takes a fraud proof from a trusted issuer into the book, and keeps it.
    fn take_fraud(&mut self, now: Now, proof: &crate::iou::FraudProof) {
        let issuer = proof.cert.body().issuer;
        if !self.book.trusts(&issuer) {
            return;
        }
        // The book may already hold it (it builds one itself when a notice forks); either way
        // make sure it is kept.
        let new = self.book.add_fraud_proof(proof).unwrap_or(false);
        let allowance = proof.allowance();
        if (new || self.book.refuses(&allowance)) && self.frauds_kept.insert(allowance) {
            self.commit(
                Change::Fraud {
                    proof: proof.clone(),
                    at: now.unix,
                },
                Then::Tolerated,
            );
            self.event(Event::Learned(Learned::Fraud { allowance, issuer }));
        }
    }

    /// Records `issuer`'s receipt `r` on this device's payment, if `issuer` is trusted, the
    /// receipt is its own and final, and the payment is under an allowance of that issuer.
    /// Returns whether the payment's settlement changed. (A receipt from the mesh names its
    /// issuer itself: anyone can sign one under a key of their own.)
    pub(super) fn take_receipt(&mut self, issuer: &IssuerId, r: &SettlementReceipt) -> bool {
        // Most receipts a device carries are others': look the payment up before checking.
        let id = r.body().record;
        let allowance = match (self.sent.get(&id), self.received.get(&id)) {
            (Some(s), _) => s.iou.allowance,
            (None, Some(p)) => p.iou.allowance,
            (None, None) => return false,
        };
        if !self.issuers.contains_key(issuer) || r.verify(issuer).is_err() || !r.status().is_final()
        {
            return false;
        }
        let allowance_issuer = match self.wallet.allowances().get(&allowance) {
            Some(held) => Some(held.cert.body().issuer),
            None => self.book.certificate(&allowance).map(|c| c.body().issuer),
        };
        if allowance_issuer != Some(*issuer) {
            return false;
        }
        let status = r.status();
        let before = match (self.sent.get_mut(&id), self.received.get_mut(&id)) {
            (Some(s), _) => s.settlement.replace(status),
            (None, Some(p)) => p.settlement.replace(status),
            (None, None) => return false,
        };
        if before == Some(status) {
            return false;
        }
        self.commit(Change::Settled { iou: id, status }, Then::Tolerated);
        self.event(Event::Settled { iou: id, status });
        true
    }

    /// A peer's sync message, as responder.
    pub(super) fn on_sync(&mut self, now: Now, reply: ReplyId, from: DeviceKey, msg: &SyncMessage) {
        let mut cfg = self.session_config(from, now);
        let result = if msg.step() == Step::Open {
            cfg.encounter = self.fresh.remove(&from);
            // A new session replaces any unfinished one with the same peer.
            Session::accept(cfg, &mut self.store, msg).map(|(s, answer)| {
                self.responders.insert(from, s);
                answer
            })
        } else {
            match self.responders.get_mut(&from) {
                None => Err(SyncError::Unexpected(msg.step())),
                Some(s) => s
                    .handle(msg, &mut self.store, &self.key)
                    .and_then(|a| a.ok_or(SyncError::Finished)),
            }
        };
        match result {
            Ok(answer) => {
                let finished = self.responders.get(&from).is_some_and(Session::is_finished);
                let after = AfterMesh::Respond {
                    reply,
                    peer: from,
                    answer,
                    finished,
                };
                self.flush_mesh(now, Then::Mesh(Box::new(after)));
            }
            Err(e) => {
                self.responders.remove(&from);
                self.event(Event::Misbehaved {
                    peer: from,
                    what: format!("sync broke the rules: {e}"),
                });
                let frame = Response::Error(ErrorCode::BadMessage).encode();
                let then = Then::Reply {
                    to: reply,
                    frame: frame.clone(),
                    failed: frame,
                    then_drop: true,
                };
                self.flush_mesh(now, then);
            }
        }
    }

    /// Starts a sync session with `peer` as initiator (one at a time per peer: a command
    /// asking for one while it runs waits for its end).
    pub(super) fn sync_with(&mut self, now: Now, peer: DeviceKey, op: Option<OpId>) {
        if let Some(running) = self.initiators.get_mut(&peer) {
            running.waiters.extend(op);
            return;
        }
        let mut cfg = self.session_config(peer, now);
        cfg.encounter = self.fresh.remove(&peer);
        let salt = self.rng.next_u64();
        let (session, msg) = Session::initiate(cfg, &self.store, salt);
        self.initiators.insert(
            peer,
            Initiator {
                session,
                steps: 0,
                waiters: op.into_iter().collect(),
            },
        );
        let frame = Request::Sync(Box::new(msg)).encode();
        self.request(peer, frame, super::pay::Exchange::Sync { peer });
    }

    /// Syncs with every connected peer.
    pub(super) fn sync_all(&mut self, now: Now, op: OpId) {
        let peers: Vec<DeviceKey> = self.peers.iter().copied().collect();
        if peers.is_empty() {
            self.done(
                op,
                Ok(Answer::Synced {
                    peers: 0,
                    took: 0,
                    gave: 0,
                }),
            );
            return;
        }
        self.sync_ops.insert(
            op,
            SyncAll {
                waiting: peers.iter().copied().collect(),
                peers: 0,
                took: 0,
                gave: 0,
            },
        );
        for p in peers {
            self.sync_with(now, p, Some(op));
        }
    }

    /// The peer's answer to our session's last message.
    pub(super) fn on_sync_answer(
        &mut self,
        now: Now,
        peer: DeviceKey,
        answer: Result<Vec<u8>, String>,
    ) {
        let reply = match answer.map(|b| Response::decode(&b)) {
            Err(e) => return self.end_session(peer, Err(e)),
            Ok(Ok(Response::Sync(m))) => m,
            Ok(Ok(Response::Error(code))) => return self.end_session(peer, Err(code.to_string())),
            Ok(Ok(_)) => {
                let why = "the peer answered sync with something else".to_owned();
                return self.end_session(peer, Err(why));
            }
            Ok(Err(e)) => {
                return self.end_session(peer, Err(format!("unreadable sync answer: {e}")));
            }
        };
        let max = self.config.max_session_steps;
        let Some(init) = self.initiators.get_mut(&peer) else {
            return;
        };
        init.steps += 1;
        if init.steps > max {
            return self.end_session(peer, Err("the sync session did not end".into()));
        }
        match init.session.handle(&reply, &mut self.store, &self.key) {
            Ok(next) => {
                let after = AfterMesh::Step { peer, next };
                self.flush_mesh(now, Then::Mesh(Box::new(after)));
            }
            Err(e) => {
                self.flush_mesh(now, Then::Tolerated);
                self.event(Event::Misbehaved {
                    peer,
                    what: format!("sync broke the rules: {e}"),
                });
                self.outputs.push_back(super::Output::Disconnect(peer));
                self.end_session(peer, Err(e.to_string()));
            }
        }
    }

    /// A step's bundle store changes are written (or not): carry on.
    pub(super) fn after_mesh(
        &mut self,
        _now: Now,
        after: AfterMesh,
        result: Result<(), CommitError>,
    ) {
        match after {
            AfterMesh::Respond {
                reply,
                peer,
                answer,
                finished,
            } => {
                if result.is_err() {
                    self.responders.remove(&peer);
                    self.reply_error(reply, ErrorCode::Unavailable, false);
                    return;
                }
                self.reply(reply, Response::Sync(Box::new(answer)).encode(), false);
                if finished {
                    if let Some(s) = self.responders.remove(&peer) {
                        self.session_ended(peer, &s);
                    }
                }
            }
            AfterMesh::Step { peer, next } => match (result, next) {
                (Err(e), _) => self.end_session(peer, Err(e.message)),
                (Ok(()), Some(m)) => {
                    let frame = Request::Sync(Box::new(m)).encode();
                    self.request(peer, frame, super::pay::Exchange::Sync { peer });
                }
                (Ok(()), None) => self.end_session(peer, Ok(())),
            },
            AfterMesh::Done { op, answer } => match result {
                Ok(()) => self.done(op, Ok(answer)),
                Err(e) => self.done(op, Err(DeviceError::Storage(e.message))),
            },
        }
    }

    /// Our session with `peer` ended, well or not.
    fn end_session(&mut self, peer: DeviceKey, result: Result<(), String>) {
        let Some(init) = self.initiators.remove(&peer) else {
            return;
        };
        let counts = match result {
            Ok(()) => Some(self.session_ended(peer, &init.session)),
            Err(why) => {
                self.event(Event::SyncFailed { peer, why });
                None
            }
        };
        for op in init.waiters {
            let Some(s) = self.sync_ops.get_mut(&op) else {
                continue;
            };
            s.waiting.remove(&peer);
            if let Some((t, g)) = counts {
                s.peers += 1;
                s.took += t;
                s.gave += g;
            }
            if s.waiting.is_empty() {
                let s = self.sync_ops.remove(&op).expect("just seen");
                self.done(
                    op,
                    Ok(Answer::Synced {
                        peers: s.peers,
                        took: s.took,
                        gave: s.gave,
                    }),
                );
            }
        }
    }

    /// Keeps the peer's hand-over receipt and tells. Returns (taken, given).
    fn session_ended(&mut self, peer: DeviceKey, s: &Session) -> (usize, usize) {
        if let Some(proof) = s.proof() {
            self.commit(Change::HandOver(proof.clone()), Then::Tolerated);
        }
        let (took, gave) = (s.admitted().len(), s.given().len());
        self.event(Event::Synced { peer, took, gave });
        (took, gave)
    }

    /// Takes in a bundle file: refused whole if its framing is broken; each bundle then goes
    /// through admission like one from a peer.
    pub(super) fn import(&mut self, now: Now, op: OpId, file: &[u8]) {
        let parts = match bundle::unpack_file(file) {
            Ok(p) => p,
            Err(e) => return self.done(op, Err(DeviceError::File(e))),
        };
        let mut report = ImportReport {
            bundles: parts.len(),
            ..ImportReport::default()
        };
        for p in parts {
            match self.store.insert(p, Origin::File, 0, now.unix) {
                Admission::Added(_) => report.added += 1,
                Admission::Duplicate => report.duplicate += 1,
                Admission::Settled => report.settled += 1,
                other => {
                    report.refused += 1;
                    if report.reasons.len() < 5 {
                        report.reasons.push(match other {
                            Admission::Refused(e) => e.to_string(),
                            Admission::ForeignIssuer => "an issuer this node does not carry".into(),
                            _ => "no room in the mesh store".into(),
                        });
                    }
                }
            }
        }
        let after = AfterMesh::Done {
            op,
            answer: Answer::Imported(report),
        };
        self.flush_mesh(now, Then::Mesh(Box::new(after)));
    }

    /// A gateway's receipts from `issuer`.
    pub(super) fn take_receipts(
        &mut self,
        now: Now,
        op: OpId,
        issuer: IssuerId,
        receipts: &[SettlementReceipt],
        carry: bool,
    ) {
        let (mut taken, mut updated, mut carried) = (0, Vec::new(), 0);
        for r in receipts {
            if r.verify(&issuer).is_err() || !r.status().is_final() {
                continue;
            }
            taken += 1;
            if self.take_receipt(&issuer, r) {
                updated.push(r.body().record);
            }
            if carry {
                let b = Bundle::new(Content::Receipt(r.clone()));
                if matches!(
                    self.store.insert_bundle(&b, Origin::Local, 0, now.unix),
                    Admission::Added(_)
                ) {
                    carried += 1;
                }
            }
        }
        let after = AfterMesh::Done {
            op,
            answer: Answer::Receipts {
                taken,
                updated,
                carried,
            },
        };
        self.flush_mesh(now, Then::Mesh(Box::new(after)));
    }

    /// A gateway's alerts from `issuer`'s feeds, into the mesh.
    pub(super) fn take_alerts(
        &mut self,
        now: Now,
        op: OpId,
        issuer: IssuerId,
        alerts: Vec<Content>,
    ) {
        let mut added = 0;
        for c in alerts {
            if alert_issuer(&c) != Some(issuer) {
                continue;
            }
            if matches!(
                self.store
                    .insert_bundle(&Bundle::new(c), Origin::Local, 0, now.unix),
                Admission::Added(_)
            ) {
                added += 1;
            }
        }
        let after = AfterMesh::Done {
            op,
            answer: Answer::Alerts { added },
        };
        self.flush_mesh(now, Then::Mesh(Box::new(after)));
    }

    /// Puts this device's own bundle into its store (`copies` for spray-and-wait records).
    pub fn carry(&mut self, now: Now, bundle: &Bundle, copies: u32) -> Admission {
        let a = self
            .store
            .insert_bundle(bundle, Origin::Local, copies, now.unix);
        self.flush_mesh(now, Then::Tolerated);
        a
    }

    /// Drops bundles and tombstones past their expiry.
    pub fn expire(&mut self, now: Now) {
        self.store.expire(now.unix);
        self.flush_mesh(now, Then::Tolerated);
    }

    /// Acts on every bundle held, as if each had just arrived: for a driver that restarts
    /// (what a bundle meant may not have been written when the process stopped). Record
    /// bodies kept on disk are not read.
    pub fn act_on_held(&mut self, now: Now) {
        let held: Vec<(crate::bundle::Meta, Origin)> = self
            .store
            .in_order()
            .filter(|e| e.meta.kind != crate::bundle::BundleKind::Record)
            .map(|e| (*e.meta, e.origin))
            .collect();
        for (meta, origin) in held {
            let Some(body) = self.store.body(&meta.id) else {
                continue;
            };
            let Ok(b) = Bundle::decode(&body) else {
                continue;
            };
            let content = b.content().clone();
            self.act_on(
                now,
                Admitted {
                    meta,
                    origin,
                    content,
                },
            );
        }
        self.flush_mesh(now, Then::Tolerated);
    }

    /// Held records sealed to `issuer`: record id and the record's encoding, for upload.
    pub fn records_for(&self, issuer: &IssuerId) -> Vec<(Hash, Vec<u8>)> {
        self.store
            .in_order()
            .filter(|e| {
                e.meta.kind == crate::bundle::BundleKind::Record && e.meta.issuer == *issuer
            })
            .filter_map(|e| {
                let body = self.store.body(&e.meta.id)?;
                Bundle::decode(&body).ok().and_then(|b| match b.content() {
                    Content::Record(r) => Some((r.id, crate::codec::encode(r))),
                    _ => None,
                })
            })
            .collect()
    }
}

fn merge(into: &mut Changes, ch: Changes) {
    into.added.extend(ch.added);
    into.removed.extend(ch.removed);
    into.tombstoned.extend(ch.tombstoned);
    into.untombstoned.extend(ch.untombstoned);
    into.bodies.extend(ch.bodies);
}
