//! The payer side: asking a payee for a request, paying it (spend committed before the IOU
//! leaves), re-sending pending IOUs, and telling a retry from a new payment.

use super::{
    Answer, AnsweredBy, Change, CommitError, Device, DeviceError, Event, Now, OpId, PayOutcome,
    SentPayment, SentStatus, Then,
};
use crate::bundle::Bundle;
use crate::keys::{DeviceKey, PrintableKey as _};
use crate::message::{Ask, Pay, Request, Response};
use crate::objects::{Amount, Hash, PaymentRequest};
use crate::store::Origin;
use crate::wallet::Spend;

/// A request the device sent and the answer it waits for.
pub(super) enum Exchange {
    /// Asked `payee` for a payment request.
    Ask {
        op: OpId,
        payee: DeviceKey,
        amount: Amount,
        currency: String,
        key: Option<String>,
    },
    /// Sent a committed IOU.
    Deliver {
        op: Option<OpId>,
        iou: Hash,
        by: AnsweredBy,
        repeated: Option<String>,
    },
    /// A sync session step.
    Sync { peer: DeviceKey },
}

/// A spend waiting for its write.
pub(super) struct Spending {
    op: OpId,
    spend: Spend,
    currency: String,
    memo: String,
    key: Option<String>,
    at: u64,
}

/// A payee's answer waiting for its write.
pub(super) struct Answering {
    op: Option<OpId>,
    iou: Hash,
    status: SentStatus,
    reason: Option<String>,
    ack: Option<crate::objects::PaymentAck>,
    by: AnsweredBy,
    at: u64,
    repeated: Option<String>,
}

impl Device {
    /// Indexes a sent payment.
    pub(super) fn remember_sent(&mut self, s: SentPayment) {
        let id = s.iou.id();
        self.sent_for.insert((s.iou.payee, s.iou.nonce), id);
        if let Some(k) = &s.key {
            self.sent_by_key.insert(k.clone(), id);
        }
        let seq = self.fresh_id();
        self.sent_order.insert((s.created_at, seq), id);
        self.sent.insert(id, s);
    }

    /// Payments still waiting for the payee's answer.
    pub(super) fn pending(&self) -> impl Iterator<Item = &SentPayment> {
        self.sent
            .values()
            .filter(|s| s.status == SentStatus::Pending)
    }

    /// Pays `request`. Paying the same request again sends the same IOU again.
    pub(super) fn pay_request(
        &mut self,
        now: Now,
        op: Option<OpId>,
        request: &PaymentRequest,
        key: Option<String>,
    ) {
        let Some(op) = op else { return };
        if let Some(k) = &key {
            if let Some(sent) = self.sent_by_key.get(k).and_then(|id| self.sent.get(id)) {
                if sent.iou.payee != request.payee || sent.iou.nonce != request.nonce {
                    let e = key_reused(k, sent);
                    self.done(op, Err(e));
                    return;
                }
            }
        }
        if let Some(id) = self.sent_for.get(&(request.payee, request.nonce)).copied() {
            let sent = &self.sent[&id];
            if sent.status == SentStatus::Pending {
                self.deliver(Some(op), id, AnsweredBy::Pay, None);
            } else {
                let o = PayOutcome::of(sent);
                self.done(op, Ok(Answer::Paid(o)));
            }
            return;
        }
        match self.wallet.prepare(&self.key, request, now.unix) {
            Err(e) => self.done(op, Err(e.into())),
            Ok(spend) => {
                let change = Change::Spent {
                    spend: spend.clone(),
                    currency: request.currency.clone(),
                    memo: request.memo.clone(),
                    key: key.clone(),
                    at: now.unix,
                };
                let then = Spending {
                    op,
                    spend,
                    currency: request.currency.clone(),
                    memo: request.memo.clone(),
                    key,
                    at: now.unix,
                };
                self.commit(change, Then::Spent(Box::new(then)));
            }
        }
    }

    /// The spend is written (or not): adopt it and send the IOU.
    pub(super) fn after_spend(&mut self, now: Now, s: Spending, result: Result<(), CommitError>) {
        if let Err(e) = &result {
            if !e.committed {
                self.done(s.op, Err(DeviceError::Storage(e.message.clone())));
                return;
            }
        }
        // Adopt the committed head first: whatever happens next, the next IOU of this
        // allowance takes the next counter.
        self.wallet.commit(&s.spend);
        let iou = s.spend.iou;
        if iou.counter == 1 {
            self.spent.insert(iou.allowance);
        }
        let id = iou.id();
        let cert = self
            .wallet
            .allowances()
            .get(&iou.allowance)
            .map(|a| a.cert.clone());
        self.remember_sent(SentPayment {
            iou: iou.clone(),
            currency: s.currency,
            memo: s.memo,
            created_at: s.at,
            status: SentStatus::Pending,
            reason: None,
            ack: None,
            key: s.key,
            answered_at: None,
            answered_by_resend: false,
            settlement: None,
        });
        if let Some(cert) = cert {
            // The spend notice goes into the mesh: a clone spending the same counter elsewhere
            // is found before settlement.
            let notice = Bundle::notice(cert, iou.notice());
            self.store
                .insert_bundle(&notice, Origin::Local, 0, now.unix);
            self.flush_mesh(now, Then::Tolerated);
        }
        match result {
            Err(e) => self.done(s.op, Err(DeviceError::Sentinel(e.message))),
            Ok(()) => self.deliver(Some(s.op), id, AnsweredBy::Pay, None),
        }
    }

    /// Sends a committed IOU (with its certificate) to its payee.
    pub(super) fn deliver(
        &mut self,
        op: Option<OpId>,
        iou: Hash,
        by: AnsweredBy,
        repeated: Option<String>,
    ) {
        let Some(sent) = self.sent.get(&iou) else {
            return;
        };
        let cert = self
            .wallet
            .allowances()
            .get(&sent.iou.allowance)
            .map(|a| a.cert.clone());
        let payee = sent.iou.payee;
        let frame = Request::Pay(Box::new(Pay::new(sent.iou.clone(), cert))).encode();
        self.request(
            payee,
            frame,
            Exchange::Deliver {
                op,
                iou,
                by,
                repeated,
            },
        );
    }

    /// Sends every pending IOU to `payee` again.
    pub(super) fn resend_pending(&mut self, _now: Now, payee: &DeviceKey) {
        let ids: Vec<Hash> = self
            .sent_order
            .values()
            .filter(|id| {
                self.sent
                    .get(id)
                    .is_some_and(|s| s.status == SentStatus::Pending && s.iou.payee == *payee)
            })
            .copied()
            .collect();
        for id in ids {
            self.deliver(None, id, AnsweredBy::Resend, None);
        }
    }

    /// Asks `payee` for a request of `amount` and pays it.
    ///
    /// A retry is not a second payment: unless `again`, the same payment (same payee, amount
    /// and currency) that is still pending, or that an automatic re-send got acknowledged in
    /// the last `retry_window_secs`, is answered instead of paid again. With an idempotency
    /// `key`, the payment made under that key is answered, whenever it was made.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pay_peer(
        &mut self,
        now: Now,
        op: OpId,
        payee: DeviceKey,
        amount: Amount,
        currency: String,
        memo: &str,
        again: bool,
        key: Option<String>,
    ) {
        if let Some(k) = &key {
            if let Some(sent) = self.sent_by_key.get(k).and_then(|id| self.sent.get(id)) {
                if sent.iou.payee != payee || sent.iou.amount != amount || sent.currency != currency
                {
                    let e = key_reused(k, sent);
                    self.done(op, Err(e));
                } else {
                    let id = sent.iou.id();
                    self.state_of(op, id, None);
                }
                return;
            }
        }
        if !again && key.is_none() {
            let last = self.sent_order.values().rev().find_map(|id| {
                self.sent.get(id).filter(|s| {
                    s.iou.payee == payee && s.iou.amount == amount && s.currency == currency
                })
            });
            if let Some(sent) = last {
                let recent_resend = sent.answered_by_resend
                    && sent
                        .answered_at
                        .is_some_and(|t| t + self.config.retry_window_secs >= now.unix);
                if sent.status == SentStatus::Pending || recent_resend {
                    let note = format!(
                        "this payment was made before (counter {}); it was not paid again. Pass --again to pay {amount} once more",
                        sent.iou.counter
                    );
                    let id = sent.iou.id();
                    self.state_of(op, id, Some(note));
                    return;
                }
            }
        }
        // Check the wallet before asking: an ask that ends in a local refusal leaves an open
        // request at the payee for nothing.
        if let Err(e) = self.wallet.can_pay(&self.me, amount, &currency, now.unix) {
            self.done(op, Err(e.into()));
            return;
        }
        let frame = Request::Ask(Ask::new(amount, &currency, memo)).encode();
        self.request(
            payee,
            frame,
            Exchange::Ask {
                op,
                payee,
                amount,
                currency,
                key,
            },
        );
    }

    /// A stored payment's state, sending it again first if it is still pending.
    fn state_of(&mut self, op: OpId, id: Hash, repeated: Option<String>) {
        let Some(sent) = self.sent.get(&id) else {
            return;
        };
        if sent.status == SentStatus::Pending {
            self.deliver(Some(op), id, AnsweredBy::Resend, repeated);
        } else {
            let mut o = PayOutcome::of(sent);
            o.repeated = repeated;
            self.done(op, Ok(Answer::Paid(o)));
        }
    }

    /// The answer to an ask or to a sent IOU.
    pub(super) fn on_pay_answer(
        &mut self,
        now: Now,
        exchange: Exchange,
        answer: Result<Vec<u8>, String>,
    ) {
        match exchange {
            Exchange::Ask {
                op,
                payee,
                amount,
                currency,
                key,
            } => {
                let bytes = match answer {
                    Ok(b) => b,
                    Err(e) => {
                        self.done(op, Err(DeviceError::Link(e)));
                        return;
                    }
                };
                let wrong = |s: String| Err(DeviceError::Peer(s));
                match Response::decode(&bytes) {
                    Ok(Response::Request(req)) => {
                        if req.payee != payee || req.amount != amount || req.currency != currency {
                            self.done(
                                op,
                                wrong("its payment request does not match what was asked".into()),
                            );
                        } else {
                            self.pay_request(now, Some(op), &req, key);
                        }
                    }
                    Ok(Response::Refused(r)) => self.done(op, wrong(format!("it refused: {r}"))),
                    Ok(Response::Error(e)) => self.done(op, wrong(e.to_string())),
                    Ok(_) => self.done(op, wrong("not a payment request".into())),
                    Err(e) => self.done(op, wrong(e.to_string())),
                }
            }
            Exchange::Deliver {
                op,
                iou,
                by,
                repeated,
            } => {
                let Some(sent) = self.sent.get(&iou) else {
                    return;
                };
                let payee = sent.iou.payee;
                let bytes = match answer {
                    Ok(b) => b,
                    Err(e) => {
                        let why = format!("{e}; it will be sent again when the payee is back");
                        self.still_pending(op, iou, why, repeated);
                        return;
                    }
                };
                let (status, reason, ack) = match Response::decode(&bytes) {
                    Ok(Response::Ack(ack))
                        if ack.body().iou == iou && ack.verify(&payee).is_ok() =>
                    {
                        (SentStatus::Acked, None, Some(ack))
                    }
                    Ok(Response::Refused(reason)) => {
                        (SentStatus::Refused, Some(reason.name().to_owned()), None)
                    }
                    Ok(Response::Error(code)) => {
                        self.still_pending(op, iou, code.to_string(), repeated);
                        return;
                    }
                    Ok(_) => {
                        let why = "the payee answered with an invalid ack".to_owned();
                        self.still_pending(op, iou, why, repeated);
                        return;
                    }
                    Err(e) => {
                        let why = format!("unreadable answer: {e}");
                        self.still_pending(op, iou, why, repeated);
                        return;
                    }
                };
                let change = Change::Answered {
                    iou,
                    status,
                    reason: reason.clone(),
                    ack: ack.clone(),
                    by,
                    at: now.unix,
                };
                let then = Answering {
                    op,
                    iou,
                    status,
                    reason,
                    ack,
                    by,
                    at: now.unix,
                    repeated,
                };
                self.commit(change, Then::Answered(Box::new(then)));
            }
            Exchange::Sync { .. } => {}
        }
    }

    /// The payee's answer is written (or not): record it and tell.
    pub(super) fn after_answer(&mut self, a: Answering, result: Result<(), CommitError>) {
        let Some(sent) = self.sent.get_mut(&a.iou) else {
            return;
        };
        if let Err(e) = result {
            let why = e.message;
            self.still_pending(a.op, a.iou, why, a.repeated);
            return;
        }
        // The first answer is kept; a later one (a racing re-send) changes nothing stored.
        if sent.status == SentStatus::Pending {
            sent.status = a.status;
            sent.reason.clone_from(&a.reason);
            sent.ack.clone_from(&a.ack);
            sent.answered_at = Some(a.at);
            sent.answered_by_resend = a.by == AnsweredBy::Resend;
        }
        let mut o = PayOutcome::of(sent);
        o.status = a.status;
        o.reason = a.reason;
        o.repeated = a.repeated;
        self.paid(a.op, o);
    }

    fn still_pending(
        &mut self,
        op: Option<OpId>,
        iou: Hash,
        why: String,
        repeated: Option<String>,
    ) {
        let Some(sent) = self.sent.get(&iou) else {
            return;
        };
        let mut o = PayOutcome::of(sent);
        o.status = SentStatus::Pending;
        o.reason = Some(why);
        o.repeated = repeated;
        self.paid(op, o);
    }

    fn paid(&mut self, op: Option<OpId>, o: PayOutcome) {
        match op {
            Some(op) => self.done(op, Ok(Answer::Paid(o))),
            None => self.event(Event::Resent(o)),
        }
    }
}

fn key_reused(key: &str, sent: &SentPayment) -> DeviceError {
    DeviceError::KeyReused {
        key: key.to_owned(),
        amount: sent.iou.amount,
        currency: sent.currency.clone(),
        payee: sent.iou.payee.short(),
    }
}
