//! Payer rules: making the next IOU from an allowance, and refusing to spend from a wallet
//! state that may have been restored from an older copy.
//!
//! ## Driving contract
//!
//! 1. [`Wallet::prepare`] picks an allowance and returns a [`Spend`]: the signed IOU and the
//!    wallet's next state. It changes nothing.
//! 2. The driver commits the IOU and [`Spend::next`] **durably, in one transaction**, then
//!    writes [`Spend::epoch`] to the wallet's sentinel (see below).
//! 3. Only then it calls [`Wallet::commit`] and sends the IOU.
//!
//! If the driver crashes after step 2, the IOU is on disk and is re-sent on retry: the same
//! IOU for the same request, never a new IOU for the same counter. If it crashes before,
//! nothing left the device and the counter was never used.
//!
//! ## Restore detection
//!
//! Restoring a wallet from a backup is the usual way honest users fork: the backup does not
//! know about IOUs made after it was taken, so the next payment would reuse their counters.
//! Every spend raises the wallet's **epoch** by one, stored with the wallet state; the driver
//! also keeps the epoch in a **sentinel** that is not part of any backup (the OS keystore, a
//! TPM monotonic counter, or a file outside the wallet directory). On opening,
//! [`restore_check`] compares them: a wallet behind its sentinel, or with no sentinel at all,
//! may be a stale copy, and every allowance it holds is **retired**: it never spends from them
//! again and must fetch a fresh allowance from the issuer (which is the online check-in).
//! The old allowance's IOUs still settle; its unspent escrow returns to the account after its
//! settle-by time. SPEC.md §7 gives the rule for other implementations.

use crate::iou::{Iou, IouDraft};
use crate::keys::{DeviceKey, DeviceSecret, IssuerId};
use crate::objects::{AllowanceCert, AllowanceId, Amount, Hash, PaymentRequest, UnixTime};
use std::collections::BTreeMap;

/// The holder's position in one allowance's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpendHead {
    /// The last counter used (0 before the first IOU).
    pub counter: u32,
    /// Sum of all IOUs made.
    pub total: Amount,
    /// Spend id of the last IOU (zeros before the first).
    pub last: Hash,
}

/// An allowance the wallet holds, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldAllowance {
    /// The issuer's certificate.
    pub cert: AllowanceCert,
    /// Where the log stands.
    pub head: SpendHead,
    /// Retired after a suspected restore: never spent from again.
    pub retired: bool,
}

impl HeldAllowance {
    /// A fresh allowance with no spends.
    pub fn new(cert: AllowanceCert) -> Self {
        Self {
            cert,
            head: SpendHead::default(),
            retired: false,
        }
    }

    /// What is left to spend.
    pub fn available(&self) -> Amount {
        self.cert.body().limit.saturating_sub(self.head.total)
    }

    /// Whether IOUs may be made at `now`.
    pub fn usable_at(&self, now: UnixTime) -> bool {
        let b = self.cert.body();
        !self.retired && b.valid_from <= now && now <= b.valid_until
    }
}

/// Result of comparing a wallet's stored epoch with its sentinel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreCheck {
    /// The state is the latest: spend normally. (A state ahead of its sentinel is also
    /// current: the sentinel write was lost after the state was committed; rewrite it.)
    Current,
    /// The state is older than the sentinel: it was restored from a copy.
    RolledBack {
        /// Epoch in the state.
        stored: u64,
        /// Epoch in the sentinel.
        sentinel: u64,
    },
    /// No sentinel exists (a wallet directory moved to another device, or the sentinel was
    /// lost): the state cannot be shown to be the latest.
    NoSentinel,
}

/// Compares the stored epoch with the sentinel's.
pub fn restore_check(stored: u64, sentinel: Option<u64>) -> RestoreCheck {
    match sentinel {
        None if stored == 0 => RestoreCheck::Current,
        None => RestoreCheck::NoSentinel,
        Some(s) if stored < s => RestoreCheck::RolledBack {
            stored,
            sentinel: s,
        },
        Some(_) => RestoreCheck::Current,
    }
}

/// Why a payment could not be prepared. Nothing was spent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayError {
    /// The request has expired.
    #[error("the payment request expired at {expires}")]
    RequestExpired {
        /// Its expiry.
        expires: UnixTime,
    },
    /// The wallet holds no usable allowance in the currency from an issuer the request
    /// accepts.
    #[error("no usable allowance in {currency} from an issuer the payee accepts")]
    NoAllowance {
        /// The currency asked for.
        currency: String,
    },
    /// The amount is over what any usable allowance has left.
    #[error("{amount} is more than the {available} left in the allowance")]
    OverLimit {
        /// Asked.
        amount: Amount,
        /// Most left in one allowance.
        available: Amount,
    },
    /// The amount is over the allowance's per-payment maximum.
    #[error("{amount} is over the per-payment maximum of {max}")]
    OverPaymentLimit {
        /// Asked.
        amount: Amount,
        /// The maximum.
        max: Amount,
    },
    /// Paying oneself.
    #[error("the request is from this wallet itself")]
    SelfPayment,
    /// The chosen allowance's log is full (2^32 - 1 IOUs): get a fresh allowance.
    #[error("the allowance's counter is exhausted")]
    CounterExhausted,
    /// Every allowance in the currency was retired because the wallet may be a restored copy
    /// (SPEC.md §7): spending from them could reuse counters an earlier copy used.
    #[error(
        "no usable allowance in {currency}: every allowance in it was retired because this wallet looks like a restored copy (its state is older than its restore sentinel, or the sentinel is missing); get a fresh allowance online with `meshpay topup`"
    )]
    Retired {
        /// The currency asked for.
        currency: String,
    },
}

/// A prepared payment: commit it, then send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spend {
    /// The signed IOU.
    pub iou: Iou,
    /// The allowance's head after this IOU.
    pub next: SpendHead,
    /// The wallet epoch after this IOU.
    pub epoch: u64,
}

/// The payer side: the allowances a device holds and its epoch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Wallet {
    epoch: u64,
    allowances: BTreeMap<AllowanceId, HeldAllowance>,
}

impl Wallet {
    /// Opens a wallet from its stored state and its sentinel. A state that may be a stale
    /// copy has every allowance retired; the check result says why. On anything but
    /// [`RestoreCheck::Current`] the driver **must** persist the retired flags and the new
    /// epoch before it writes the sentinel or spends, or the next open would not see the
    /// restore.
    pub fn open(
        epoch: u64,
        allowances: impl IntoIterator<Item = HeldAllowance>,
        sentinel: Option<u64>,
    ) -> (Self, RestoreCheck) {
        let check = restore_check(epoch, sentinel);
        let mut allowances: BTreeMap<_, _> =
            allowances.into_iter().map(|a| (a.cert.id(), a)).collect();
        if check != RestoreCheck::Current {
            for a in allowances.values_mut() {
                a.retired = true;
            }
        }
        let epoch = match check {
            RestoreCheck::RolledBack { sentinel, .. } => sentinel,
            RestoreCheck::Current | RestoreCheck::NoSentinel => epoch,
        };
        (Self { epoch, allowances }, check)
    }

    /// The current epoch (what the sentinel must hold).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The allowances held, by id.
    pub fn allowances(&self) -> &BTreeMap<AllowanceId, HeldAllowance> {
        &self.allowances
    }

    /// Adds an allowance fresh from the issuer. It is taken as given: the driver checks the
    /// issuer's signature and that it names this device before adding it (a certificate for
    /// another holder is simply never chosen by [`Wallet::prepare`]).
    pub fn add_allowance(&mut self, cert: AllowanceCert) {
        self.allowances
            .entry(cert.id())
            .or_insert_with(|| HeldAllowance::new(cert));
    }

    /// Prepares the IOU paying `request` at wall-clock `now`, from the usable allowance with
    /// the least left that covers it (so larger allowances stay whole). Changes nothing: see
    /// the module's driving contract.
    pub fn prepare(
        &self,
        key: &DeviceSecret,
        request: &PaymentRequest,
        now: UnixTime,
    ) -> Result<Spend, PayError> {
        if request.expires < now {
            return Err(PayError::RequestExpired {
                expires: request.expires,
            });
        }
        let me: DeviceKey = key.public();
        if request.payee == me {
            return Err(PayError::SelfPayment);
        }
        let accepts =
            |issuer: &IssuerId| request.issuers.is_empty() || request.issuers.contains(issuer);
        let held = self.choose(&me, request.amount, &request.currency, accepts, now)?;
        let counter = held
            .head
            .counter
            .checked_add(1)
            .ok_or(PayError::CounterExhausted)?;
        let amount = request.amount;
        let total = held.head.total + amount;
        let iou = IouDraft {
            allowance: held.cert.id(),
            counter,
            amount,
            total,
            prev: held.head.last,
            payee: request.payee,
            nonce: request.nonce,
            time: now,
        }
        .sign(key);
        let next = SpendHead {
            counter,
            total,
            last: iou.spend_id(),
        };
        Ok(Spend {
            iou,
            next,
            epoch: self.epoch + 1,
        })
    }

    /// Whether `me` could pay `amount` of `currency` now to a payee accepting any issuer: the
    /// check a payer makes before asking a payee for a request. Changes nothing.
    pub fn can_pay(
        &self,
        me: &DeviceKey,
        amount: Amount,
        currency: &str,
        now: UnixTime,
    ) -> Result<(), PayError> {
        self.choose(me, amount, currency, |_| true, now).map(|_| ())
    }

    /// The usable allowance with the least left that covers `amount`, or why there is none.
    fn choose(
        &self,
        me: &DeviceKey,
        amount: Amount,
        currency: &str,
        accepts: impl Fn(&IssuerId) -> bool,
        now: UnixTime,
    ) -> Result<&HeldAllowance, PayError> {
        let mine = |a: &&HeldAllowance| {
            let b = a.cert.body();
            b.holder == *me && b.currency == currency && accepts(&b.issuer)
        };
        let candidates: Vec<&HeldAllowance> = self
            .allowances
            .values()
            .filter(mine)
            .filter(|a| a.usable_at(now))
            .collect();
        if candidates.is_empty() {
            let retired = self.allowances.values().filter(mine).any(|a| a.retired);
            return Err(if retired {
                PayError::Retired {
                    currency: currency.to_owned(),
                }
            } else {
                PayError::NoAllowance {
                    currency: currency.to_owned(),
                }
            });
        }
        let fitting = candidates
            .iter()
            .filter(|a| a.available() >= amount && a.cert.body().max_payment >= amount)
            .min_by_key(|a| (a.available(), a.cert.id()));
        if let Some(held) = fitting {
            return Ok(held);
        }
        let available = candidates.iter().map(|a| a.available()).max().unwrap_or(0);
        if available >= amount {
            let max = candidates
                .iter()
                .map(|a| a.cert.body().max_payment)
                .max()
                .unwrap_or(0);
            return Err(PayError::OverPaymentLimit { amount, max });
        }
        Err(PayError::OverLimit { amount, available })
    }

    /// Adopts a spend after it was committed durably.
    pub fn commit(&mut self, spend: &Spend) {
        if let Some(a) = self.allowances.get_mut(&spend.iou.allowance) {
            a.head = spend.next;
        }
        self.epoch = self.epoch.max(spend.epoch);
    }

    /// Retires an allowance (a fraud proof or revocation names it, or it is to be replaced).
    pub fn retire(&mut self, id: &AllowanceId) {
        if let Some(a) = self.allowances.get_mut(id) {
            a.retired = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{DAY, T0, allowance, device, issuer, request, wallet};

    #[test]
    fn first_and_second_iou_chain() {
        let (iss, alice, bob) = (issuer(), device(1), device(2));
        let mut w = wallet([allowance(&iss, 1, &alice, 1000)]);
        let first = w.prepare(&alice, &request(&bob, 300, 1), T0).unwrap();
        assert_eq!(first.iou.counter, 1);
        assert_eq!(first.iou.amount, 300);
        assert_eq!(first.iou.total, 300);
        assert_eq!(first.iou.prev, Hash::default());
        assert_eq!(first.iou.payee, bob.public());
        assert_eq!(first.iou.time, T0);
        assert_eq!(first.epoch, 1);
        assert_eq!(
            first.next,
            SpendHead {
                counter: 1,
                total: 300,
                last: first.iou.spend_id()
            }
        );
        assert_eq!(first.iou.verify(&alice.public()), Ok(()));
        // Preparing changes nothing: the same request gives the same IOU until commit.
        assert_eq!(
            w.prepare(&alice, &request(&bob, 300, 1), T0).unwrap(),
            first
        );
        w.commit(&first);
        let second = w.prepare(&alice, &request(&bob, 200, 2), T0).unwrap();
        assert_eq!(second.iou.counter, 2);
        assert_eq!(second.iou.total, 500);
        assert_eq!(second.iou.prev, first.iou.spend_id());
        assert_eq!(second.epoch, 2);
        w.commit(&second);
        let a = &w.allowances()[&AllowanceId([1; 16])];
        assert_eq!(a.available(), 500);
        assert_eq!(w.epoch(), 2);
    }

    #[test]
    fn refusals() {
        let (iss, alice, bob) = (issuer(), device(1), device(2));
        let mut cert = allowance(&iss, 1, &alice, 1000);
        let w = wallet([cert.clone()]);
        assert_eq!(
            w.prepare(&alice, &request(&bob, 1001, 1), T0),
            Err(PayError::OverLimit {
                amount: 1001,
                available: 1000
            })
        );
        assert_eq!(
            w.prepare(&alice, &request(&bob, 10, 1), T0 + 3601),
            Err(PayError::RequestExpired { expires: T0 + 3600 })
        );
        assert_eq!(
            w.prepare(&alice, &request(&alice, 10, 1), T0),
            Err(PayError::SelfPayment)
        );
        let mut usd = request(&bob, 10, 1);
        usd.currency = "USD".into();
        assert_eq!(
            w.prepare(&alice, &usd, T0),
            Err(PayError::NoAllowance {
                currency: "USD".into()
            })
        );
        let mut other_issuer = request(&bob, 10, 1);
        other_issuer.issuers = vec![crate::keys::IssuerId([5; 32])];
        assert!(matches!(
            w.prepare(&alice, &other_issuer, T0),
            Err(PayError::NoAllowance { .. })
        ));
        // Outside the validity window nothing is usable.
        let mut late = request(&bob, 10, 1);
        late.expires = T0 + 30 * DAY;
        assert!(matches!(
            w.prepare(&alice, &late, T0 + 8 * DAY),
            Err(PayError::NoAllowance { .. })
        ));
        // Someone else's allowance is not spendable.
        assert!(matches!(
            w.prepare(&bob, &request(&alice, 10, 1), T0),
            Err(PayError::NoAllowance { .. })
        ));
        // Per-payment maximum.
        let mut body = cert.body().clone();
        body.max_payment = 50;
        cert = AllowanceCert::issue(&iss, body);
        let w = wallet([cert]);
        assert_eq!(
            w.prepare(&alice, &request(&bob, 51, 1), T0),
            Err(PayError::OverPaymentLimit {
                amount: 51,
                max: 50
            })
        );
    }

    #[test]
    fn smallest_fitting_allowance_is_used() {
        let (iss, alice, bob) = (issuer(), device(1), device(2));
        let w = wallet([
            allowance(&iss, 1, &alice, 1000),
            allowance(&iss, 2, &alice, 100),
            allowance(&iss, 3, &alice, 40),
        ]);
        let s = w.prepare(&alice, &request(&bob, 60, 1), T0).unwrap();
        assert_eq!(s.iou.allowance, AllowanceId([2; 16]));
    }

    #[test]
    fn restore_detection() {
        assert_eq!(restore_check(0, None), RestoreCheck::Current);
        assert_eq!(restore_check(5, Some(5)), RestoreCheck::Current);
        assert_eq!(restore_check(6, Some(5)), RestoreCheck::Current);
        assert_eq!(
            restore_check(3, Some(5)),
            RestoreCheck::RolledBack {
                stored: 3,
                sentinel: 5
            }
        );
        assert_eq!(restore_check(3, None), RestoreCheck::NoSentinel);

        let (iss, alice, bob) = (issuer(), device(1), device(2));
        let held = HeldAllowance::new(allowance(&iss, 1, &alice, 1000));
        let (w, check) = Wallet::open(3, [held.clone()], Some(5));
        assert_eq!(
            check,
            RestoreCheck::RolledBack {
                stored: 3,
                sentinel: 5
            }
        );
        assert_eq!(w.epoch(), 5);
        assert!(w.allowances().values().all(|a| a.retired));
        // The refusal says why: the wallet may be a restored copy.
        assert!(matches!(
            w.prepare(&alice, &request(&bob, 10, 1), T0),
            Err(PayError::Retired { .. })
        ));
        assert!(matches!(
            w.can_pay(&alice.public(), 10, "KES", T0),
            Err(PayError::Retired { .. })
        ));
        // A fresh allowance from the issuer is spendable, and the epoch moves past the
        // sentinel's.
        let mut w = w;
        w.add_allowance(allowance(&iss, 2, &alice, 1000));
        let s = w.prepare(&alice, &request(&bob, 10, 1), T0).unwrap();
        assert_eq!(s.iou.allowance, AllowanceId([2; 16]));
        assert_eq!(s.epoch, 6);
        let (w, check) = Wallet::open(3, [held], None);
        assert_eq!(check, RestoreCheck::NoSentinel);
        assert!(w.allowances().values().all(|a| a.retired));
    }
}
