//! The payee side: making requests (asked for by a peer, or shown), judging an incoming IOU
//! with the spend book, sealing its record, and acking only once it is stored.

use super::{
    Answer, Change, CommitError, Device, DeviceError, Event, Learned, Now, OpId, OpenRequest,
    ReceivedPayment, ReplyId, Then,
};
use crate::bundle::{Bundle, Content};
use crate::codec::{decode, encode};
use crate::iou::{FraudProof, Iou};
use crate::keys::DeviceKey;
use crate::message::{Ask, ErrorCode, Pay, Response};
use crate::objects::{AllowanceCert, Amount, PaymentAck, PaymentRequest, Reason};
use crate::payee::Verdict;
use crate::record::SealedRecord;
use crate::store::Origin;

/// A request waiting for its write, and who gets it.
pub(super) struct Requesting {
    answer: Result<OpId, ReplyId>,
    open: OpenRequest,
}

/// An accepted payment waiting for its write.
pub(super) struct Receiving {
    reply: ReplyId,
    from: DeviceKey,
    iou: Iou,
    cert: AllowanceCert,
    record: SealedRecord,
    ack: PaymentAck,
}

/// A fork found at payment, waiting for its proof's write.
pub(super) struct Forked {
    reply: ReplyId,
    from: DeviceKey,
    proof: FraudProof,
}

impl Device {
    /// Makes and stores a new payment request; `answer` gets it once it is written.
    pub(super) fn make_request(
        &mut self,
        now: Now,
        amount: Amount,
        currency: &str,
        memo: &str,
        asked_by: Option<DeviceKey>,
        answer: Result<OpId, ReplyId>,
    ) {
        let nonce = self.fresh_nonce();
        let mut req = PaymentRequest::new(
            self.me,
            amount,
            currency,
            nonce,
            now.unix + self.config.request_ttl_secs,
        );
        memo.clone_into(&mut req.memo);
        // Name the accepted issuers when they fit the request's four slots; an empty list
        // means any issuer this device trusts (SPEC.md §4.4).
        if self.issuers.len() <= 4 {
            req.issuers = self.issuers.keys().copied().collect();
        }
        // Validate through the codec's own rules before storing.
        let req: PaymentRequest = match decode(&encode(&req)) {
            Ok(r) => r,
            Err(e) => {
                match answer {
                    Ok(op) => self.done(op, Err(DeviceError::Invalid(e))),
                    Err(reply) => self.reply_error(reply, ErrorCode::Unavailable, false),
                }
                return;
            }
        };
        let open = OpenRequest {
            request: req.clone(),
            asked_by,
            created_at: now.unix,
        };
        self.commit(
            Change::Requested {
                request: req,
                asked_by,
                at: now.unix,
            },
            Then::Requested(Box::new(Requesting { answer, open })),
        );
    }

    /// The request is written (or not): keep it open and hand it over.
    pub(super) fn after_request(
        &mut self,
        _now: Now,
        r: Requesting,
        result: Result<(), CommitError>,
    ) {
        match (r.answer, result) {
            (Ok(op), Ok(())) => {
                let req = r.open.request.clone();
                self.requests.insert(req.nonce, r.open);
                self.done(op, Ok(Answer::Requested(req)));
            }
            (Err(reply), Ok(())) => {
                let frame = Response::Request(r.open.request.clone()).encode();
                self.requests.insert(r.open.request.nonce, r.open);
                self.reply(reply, frame, false);
            }
            (Ok(op), Err(e)) => self.done(op, Err(DeviceError::Storage(e.message))),
            (Err(reply), Err(_)) => self.reply_error(reply, ErrorCode::Unavailable, false),
        }
    }

    /// A peer asks for a payment request. Every ask gets a fresh one; asks cost a durable
    /// write each, so what one peer, and all peers, can keep open is bounded.
    pub(super) fn on_ask(&mut self, now: Now, reply: ReplyId, from: DeviceKey, ask: &Ask) {
        if self.config.relay {
            self.reply_error(reply, ErrorCode::Unsupported, false);
            return;
        }
        let open = self
            .requests
            .values()
            .filter(|r| r.request.expires >= now.unix);
        let (mut all, mut by_peer) = (0usize, 0usize);
        for r in open {
            all += 1;
            by_peer += usize::from(r.asked_by == Some(from));
        }
        if by_peer >= self.config.max_open_asks_per_peer {
            self.reply_error(reply, ErrorCode::TooManyRequests, false);
            return;
        }
        if all >= self.config.max_open_requests {
            self.reply_error(reply, ErrorCode::Unavailable, false);
            return;
        }
        self.make_request(
            now,
            ask.amount,
            &ask.currency,
            &ask.memo,
            Some(from),
            Err(reply),
        );
    }

    /// A peer pays: judge the IOU; store an accepted one (and its sealed record) before the
    /// ack goes out.
    pub(super) fn on_pay(&mut self, now: Now, reply: ReplyId, from: DeviceKey, pay: Pay) {
        if self.config.relay {
            self.reply_error(reply, ErrorCode::Unsupported, false);
            return;
        }
        let iou = pay.iou;
        let request = self.requests.get(&iou.nonce).map(|r| r.request.clone());
        let verdict = self.book.check_payment(
            &iou,
            pay.cert.as_ref(),
            request.as_ref(),
            &self.me,
            now.unix,
        );
        match verdict {
            Verdict::Accept => {
                let cert = pay
                    .cert
                    .filter(|c| c.id() == iou.allowance)
                    .or_else(|| self.book.certificate(&iou.allowance).cloned());
                let descriptor = cert
                    .as_ref()
                    .and_then(|c| self.issuers.get(&c.body().issuer));
                let (Some(cert), Some(descriptor), Some(request)) =
                    (cert.clone(), descriptor.cloned(), request)
                else {
                    // The book accepts only IOUs with a certificate of a trusted issuer for an
                    // open request; anything else is a bug, and the payer may try again.
                    self.reply_error(reply, ErrorCode::Unavailable, false);
                    return;
                };
                let d = descriptor.body();
                let Ok(record) = SealedRecord::seal(
                    &iou,
                    d.issuer,
                    &d.seal_key,
                    now.unix,
                    cert.body().settle_by,
                    &mut self.secrets,
                ) else {
                    self.reply_error(reply, ErrorCode::Unavailable, false);
                    return;
                };
                let ack = PaymentAck::sign(&self.key, iou.id(), now.unix);
                let change = Change::Received {
                    iou: iou.clone(),
                    cert: cert.clone(),
                    request,
                    record: record.clone(),
                    ack: ack.clone(),
                    at: now.unix,
                };
                let then = Receiving {
                    reply,
                    from,
                    iou,
                    cert,
                    record,
                    ack,
                };
                self.commit(change, Then::Received(Box::new(then)));
            }
            Verdict::Duplicate => match self.received.get(&iou.id()) {
                Some(r) => {
                    let frame = Response::Ack(r.ack.clone()).encode();
                    self.reply(reply, frame, false);
                }
                None => self.reply_error(reply, ErrorCode::Unavailable, false),
            },
            Verdict::Reject(reason) => {
                // The payer asked for this request and its IOU is refused: close it, so it no
                // longer counts against the payer's open asks. (Only the peer that asked can
                // close it; a request shown to all, asked by none, stays open.)
                if self
                    .requests
                    .get(&iou.nonce)
                    .is_some_and(|r| r.asked_by == Some(from))
                {
                    self.requests.remove(&iou.nonce);
                    self.commit(
                        Change::RequestClosed {
                            nonce: iou.nonce,
                            asked_by: from,
                        },
                        Then::Tolerated,
                    );
                }
                self.event(Event::Refused { from, reason });
                self.reply(reply, Response::Refused(reason).encode(), false);
            }
            Verdict::Fork(proof) => {
                let change = Change::Fraud {
                    proof: (*proof).clone(),
                    at: now.unix,
                };
                let then = Forked {
                    reply,
                    from,
                    proof: *proof,
                };
                self.commit(change, Then::Forked(Box::new(then)));
            }
        }
    }

    /// The payment is written (or not): record it, put its record and notice into the mesh,
    /// and ack.
    pub(super) fn after_received(
        &mut self,
        now: Now,
        r: Receiving,
        result: &Result<(), CommitError>,
    ) {
        if result.is_err() {
            self.reply_error(r.reply, ErrorCode::Unavailable, false);
            return;
        }
        self.book.record_payment(&r.iou, &r.cert);
        self.requests.remove(&r.iou.nonce);
        self.received.insert(
            r.iou.id(),
            ReceivedPayment {
                iou: r.iou.clone(),
                ack: r.ack.clone(),
                settlement: None,
            },
        );
        // Into the mesh: the record, to travel to a gateway; the spend notice, so a fork is
        // found before settlement. The payment is stored with its record, so a gateway round
        // uploads it even if the mesh store cannot write.
        let copies = self.config.routing.initial_copies();
        let notice = Bundle::notice(r.cert.clone(), r.iou.notice());
        self.store.insert_bundle(
            &Bundle::new(Content::Record(r.record)),
            Origin::Local,
            copies,
            now.unix,
        );
        self.store
            .insert_bundle(&notice, Origin::Local, 0, now.unix);
        self.flush_mesh(now, Then::Tolerated);
        self.event(Event::Received {
            from: r.from,
            iou: r.iou,
        });
        self.reply(r.reply, Response::Ack(r.ack).encode(), false);
    }

    /// A fork found at payment is written (or not): refuse the allowance from now on, and
    /// send the proof into the mesh first of all.
    pub(super) fn after_fork(&mut self, now: Now, f: Forked, result: &Result<(), CommitError>) {
        if result.is_err() {
            self.reply_error(f.reply, ErrorCode::Unavailable, false);
            return;
        }
        self.frauds_kept.insert(f.proof.allowance());
        if self.book.add_fraud_proof(&f.proof).unwrap_or(false) {
            self.event(Event::Learned(Learned::Fraud {
                allowance: f.proof.allowance(),
                issuer: f.proof.cert.body().issuer,
            }));
        }
        self.store.insert_bundle(
            &Bundle::new(Content::Fraud(Box::new(f.proof))),
            Origin::Local,
            0,
            now.unix,
        );
        self.flush_mesh(now, Then::Tolerated);
        self.event(Event::Refused {
            from: f.from,
            reason: Reason::CounterConflict,
        });
        self.reply(
            f.reply,
            Response::Refused(Reason::CounterConflict).encode(),
            false,
        );
    }
}
