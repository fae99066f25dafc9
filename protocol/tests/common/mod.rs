//! Strategies that build arbitrary valid wire objects, shared by the property tests.
#![allow(dead_code, unreachable_pub)]

use meshpay_protocol::codec::VERSION;
use meshpay_protocol::objects::MAX_AMOUNT;
use meshpay_protocol::{
    AllowanceBody, AllowanceCert, AllowanceId, DescriptorBody, DeviceKey, DeviceSecret, FraudProof,
    Hash, Iou, IouDraft, IssuerDescriptor, IssuerSecret, Nonce, PaymentAck, PaymentRequest,
    Revocation, RevocationReason, SealedRecord, SettlementReceipt, SpendNotice, Wire, decode,
    encode,
};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub fn device() -> impl Strategy<Value = DeviceSecret> {
    any::<[u8; 32]>().prop_map(|s| DeviceSecret::from_seed(&s))
}

pub fn issuer() -> impl Strategy<Value = IssuerSecret> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&a);
        bytes[32..].copy_from_slice(&b);
        IssuerSecret::from_bytes(&bytes)
    })
}

pub fn currency() -> impl Strategy<Value = String> {
    "[A-Z0-9-]{1,12}"
}

/// (valid_from, valid_until, settle_by) with from < until <= settle.
pub fn window() -> impl Strategy<Value = (u64, u64, u64)> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_filter_map("ordered window", |(a, b, c)| {
        let mut v = [a, b, c];
        v.sort_unstable();
        (v[0] < v[1]).then_some((v[0], v[1], v[2]))
    })
}

pub fn cert() -> impl Strategy<Value = (IssuerSecret, DeviceSecret, AllowanceCert)> {
    (
        issuer(),
        device(),
        any::<[u8; 16]>(),
        currency(),
        1..=MAX_AMOUNT,
        any::<u64>(),
        window(),
    )
        .prop_map(|(iss, holder, id, currency, limit, maxp, (f, u, s))| {
            let cert = AllowanceCert::issue(
                &iss,
                AllowanceBody {
                    version: VERSION,
                    id: AllowanceId(id),
                    issuer: iss.id(),
                    holder: holder.public(),
                    currency,
                    limit,
                    max_payment: 1 + maxp % limit,
                    valid_from: f,
                    valid_until: u,
                    settle_by: s,
                },
            );
            (iss, holder, cert)
        })
}

pub fn iou_with(holder: DeviceSecret, allowance: AllowanceId) -> impl Strategy<Value = Iou> {
    (
        1..=u32::MAX,
        1..=MAX_AMOUNT,
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        any::<[u8; 16]>(),
        any::<u64>(),
    )
        .prop_map(move |(counter, amount, extra, prev, payee, nonce, time)| {
            IouDraft {
                allowance,
                counter,
                amount,
                total: amount.saturating_add(extra).min(MAX_AMOUNT),
                prev: if counter == 1 {
                    Hash::default()
                } else {
                    Hash(if prev == [0; 32] { [1; 32] } else { prev })
                },
                payee: DeviceKey(payee),
                nonce: Nonce(nonce),
                time,
            }
            .sign(&holder)
        })
}

pub fn iou() -> impl Strategy<Value = (DeviceSecret, Iou)> {
    (device(), any::<[u8; 16]>()).prop_flat_map(|(d, a)| {
        let key = d.seed();
        iou_with(d, AllowanceId(a)).prop_map(move |iou| (DeviceSecret::from_seed(&key), iou))
    })
}

pub fn request() -> impl Strategy<Value = PaymentRequest> {
    (
        any::<[u8; 32]>(),
        1..=MAX_AMOUNT,
        currency(),
        any::<[u8; 16]>(),
        any::<u64>(),
        prop::collection::vec(any::<[u8; 32]>(), 0..=4),
        "\\PC{0,20}",
    )
        .prop_map(|(payee, amount, currency, nonce, expires, issuers, memo)| {
            let mut r =
                PaymentRequest::new(DeviceKey(payee), amount, &currency, Nonce(nonce), expires);
            r.issuers = issuers
                .into_iter()
                .map(meshpay_protocol::IssuerId)
                .collect();
            r.memo = memo.chars().take(20).collect();
            r
        })
}

/// Any wire object, with what it takes to verify it.
#[derive(Debug)]
pub enum Obj {
    Descriptor(IssuerDescriptor),
    Allowance(AllowanceCert),
    Request(PaymentRequest),
    Iou(Iou, DeviceKey),
    Notice(SpendNotice, DeviceKey),
    Ack(PaymentAck, DeviceKey),
    Fraud(FraudProof),
    Record(SealedRecord, Box<IssuerSecret>, Iou),
    Receipt(SettlementReceipt),
    Revocation(Revocation),
}

fn reencodes<T: Wire + PartialEq>(obj: &T) -> bool {
    decode::<T>(&encode(obj)).is_ok_and(|d| d == *obj)
}

fn check_as<T: Wire>(bytes: &[u8], verify: impl Fn(&T) -> bool) -> bool {
    decode::<T>(bytes).is_ok_and(|t| verify(&t))
}

impl Obj {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Obj::Descriptor(o) => encode(o),
            Obj::Allowance(o) => encode(o),
            Obj::Request(o) => encode(o),
            Obj::Iou(o, _) => encode(o),
            Obj::Notice(o, _) => encode(o),
            Obj::Ack(o, _) => encode(o),
            Obj::Fraud(o) => encode(o),
            Obj::Record(o, _, _) => encode(o),
            Obj::Receipt(o) => encode(o),
            Obj::Revocation(o) => encode(o),
        }
    }

    /// Whether the object decodes back to itself.
    pub fn round_trips(&self) -> bool {
        match self {
            Obj::Descriptor(o) => reencodes(o),
            Obj::Allowance(o) => reencodes(o),
            Obj::Request(o) => reencodes(o),
            Obj::Iou(o, _) => reencodes(o),
            Obj::Notice(o, _) => reencodes(o),
            Obj::Ack(o, _) => reencodes(o),
            Obj::Fraud(o) => reencodes(o),
            Obj::Record(o, _, _) => reencodes(o),
            Obj::Receipt(o) => reencodes(o),
            Obj::Revocation(o) => reencodes(o),
        }
    }

    /// Whether `bytes` decode as this object's type and verify under the keys this object was
    /// made with (`None` for the unsigned payment request).
    pub fn accepts(&self, bytes: &[u8]) -> Option<bool> {
        Some(match self {
            Obj::Descriptor(o) => {
                check_as::<IssuerDescriptor>(bytes, |d| d.verify_by(&o.body().issuer.0).is_ok())
            }
            Obj::Allowance(o) => {
                check_as::<AllowanceCert>(bytes, |c| c.verify_by(&o.body().issuer.0).is_ok())
            }
            Obj::Request(_) => return None,
            Obj::Iou(_, k) => check_as::<Iou>(bytes, |i| i.verify(k).is_ok()),
            Obj::Notice(_, k) => check_as::<SpendNotice>(bytes, |n| n.verify(k).is_ok()),
            Obj::Ack(_, k) => check_as::<PaymentAck>(bytes, |a| a.verify(k).is_ok()),
            Obj::Fraud(o) => {
                let issuer = o.cert.body().issuer;
                let holder = o.cert.body().holder;
                check_as::<FraudProof>(bytes, |p| {
                    p.verify(&issuer).is_ok() && p.cert.body().holder == holder
                })
            }
            Obj::Record(_, key, iou) => {
                check_as::<SealedRecord>(bytes, |r| r.open(key).is_ok_and(|i| i == *iou))
            }
            Obj::Receipt(o) => {
                check_as::<SettlementReceipt>(bytes, |r| r.verify(&o.body().issuer).is_ok())
            }
            Obj::Revocation(o) => {
                check_as::<Revocation>(bytes, |r| r.verify(&o.body().issuer).is_ok())
            }
        })
    }
}

pub fn any_object() -> impl Strategy<Value = Obj> {
    let descriptor = (
        issuer(),
        "\\PC{0,16}",
        prop::collection::vec(currency(), 1..=8),
        window(),
        1..=MAX_AMOUNT,
        any::<u64>(),
    )
        .prop_map(|(iss, name, currencies, (f, u, _), max_allowance, mp)| {
            Obj::Descriptor(IssuerDescriptor::issue(
                &iss,
                DescriptorBody {
                    version: VERSION,
                    issuer: iss.id(),
                    seal_key: iss.seal_key(),
                    name: name.chars().take(16).collect(),
                    currencies,
                    urls: vec!["https://settle.example/".into()],
                    valid_from: f,
                    valid_until: u,
                    max_allowance,
                    max_payment: 1 + mp % max_allowance,
                },
            ))
        });
    let allowance = cert().prop_map(|(_, _, c)| Obj::Allowance(c));
    let req = request().prop_map(Obj::Request);
    let iou_obj = iou().prop_map(|(d, i)| Obj::Iou(i, d.public()));
    let notice = iou().prop_map(|(d, i)| Obj::Notice(i.notice(), d.public()));
    let ack = (device(), any::<[u8; 32]>(), any::<u64>())
        .prop_map(|(d, id, t)| Obj::Ack(PaymentAck::sign(&d, Hash(id), t), d.public()));
    let fraud = cert()
        .prop_flat_map(|(_, holder, cert)| {
            let seed: [u8; 32] = *holder.seed();
            let id = cert.id();
            (
                Just(cert),
                Just(seed),
                iou_with(DeviceSecret::from_seed(&seed), id),
                iou_with(DeviceSecret::from_seed(&seed), id),
            )
        })
        .prop_filter_map("a real fork", |(cert, seed, a, b)| {
            // Move the second IOU into the first one's slot.
            let b = IouDraft {
                allowance: b.allowance,
                counter: a.counter,
                amount: b.amount,
                total: b.total,
                prev: a.prev,
                payee: b.payee,
                nonce: b.nonce,
                time: b.time,
            }
            .sign(&DeviceSecret::from_seed(&seed));
            FraudProof::new(cert, a.notice(), b.notice())
        });
    let fraud = fraud.prop_map(Obj::Fraud);
    let record = (
        issuer(),
        iou(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(iss, (_, iou), seed, a, b)| {
            let mut rng = ChaCha20Rng::from_seed(seed);
            let rec = SealedRecord::seal(
                &iou,
                iss.id(),
                &iss.seal_key(),
                a.min(b),
                a.max(b),
                &mut rng,
            )
            .expect("valid seal key");
            Obj::Record(rec, Box::new(iss), iou)
        });
    let receipt =
        (issuer(), any::<[u8; 32]>(), 0u16..=23, any::<u64>()).prop_map(|(iss, rec, code, t)| {
            Obj::Receipt(SettlementReceipt::issue(
                &iss,
                Hash(rec),
                meshpay_protocol::ReceiptStatus::from_code(code).expect("codes 0..=22 exist"),
                t,
            ))
        });
    let revocation = (issuer(), any::<[u8; 16]>(), any::<u64>()).prop_map(|(iss, a, t)| {
        Obj::Revocation(Revocation::issue(
            &iss,
            AllowanceId(a),
            RevocationReason::Fraud,
            t,
        ))
    });
    prop_oneof![
        descriptor, allowance, req, iou_obj, notice, ack, fraud, record, receipt, revocation
    ]
}
