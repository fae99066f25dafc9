//! The payments workload: shoppers with real wallets pay vendors they meet, vendors judge with
//! real spend books and seal real records, gateways hand records to the issuer's real ledger,
//! and receipts travel back. Cloned wallets double spend; the mesh's fraud proofs stop them.
//!
//! Roles by node index: vendors first, then gateways, then shoppers; the last `clones` shoppers
//! are copies (same device key, same allowance, same counters) of the first ones.

use crate::engine::EPOCH;
use crate::scenario::Payments;
use meshpay_protocol::bundle::{Bundle, Content};
use meshpay_protocol::codec::VERSION;
use meshpay_protocol::ledger::Ledger;
use meshpay_protocol::payee::{SpendBook, Verdict};
use meshpay_protocol::store::{BundleStore, Origin};
use meshpay_protocol::wallet::{HeldAllowance, Wallet};
use meshpay_protocol::{
    AllowanceBody, AllowanceCert, AllowanceId, DeviceSecret, Hash, IssuerSecret, Nonce,
    PaymentRequest, ReceiptStatus, SealedRecord, SettlementReceipt,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A node's part in the market.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes payments.
    Vendor,
    /// Reaches the issuer: uploads records, brings receipts back.
    Gateway,
    /// Pays.
    Shopper,
}

/// One payment's fate.
#[derive(Debug, Clone)]
pub struct Payment {
    /// Payer node.
    pub payer: u32,
    /// Payee node.
    pub payee: u32,
    /// Amount.
    pub amount: u64,
    /// Allowance.
    pub allowance: AllowanceId,
    /// When paid, ms.
    pub at_ms: u64,
    /// The vendor accepted it.
    pub accepted: bool,
    /// Paid from a cloned wallet.
    pub from_clone: bool,
    /// When the issuer decided, ms.
    pub decided_ms: Option<u64>,
    /// The issuer's decision.
    pub status: Option<ReceiptStatus>,
    /// When the receipt reached the payee, ms.
    pub receipt_at_payee_ms: Option<u64>,
}

/// The market's state.
pub struct Market {
    cfg: Payments,
    record_copies: u32,
    issuer: IssuerSecret,
    ledger: Ledger,
    rng: ChaCha20Rng,
    roles: Vec<Role>,
    wallets: BTreeMap<u32, Wallet>,
    certs: BTreeMap<AllowanceId, AllowanceCert>,
    books: BTreeMap<u32, SpendBook>,
    /// Every payment.
    pub payments: Vec<Payment>,
    by_record: BTreeMap<Hash, usize>,
    decided: BTreeSet<Hash>,
    /// Allowances held by a cloned wallet.
    pub cloned: BTreeSet<AllowanceId>,
    /// When each node first held a fraud proof for an allowance, ms.
    pub knows_fraud: BTreeMap<(u32, AllowanceId), u64>,
    /// Records settled more than once (a broken ledger; always 0).
    pub settled_twice: u64,
    /// Payments a vendor accepted while it held a fraud proof for the allowance (always 0).
    pub accepted_after_proof: u64,
    /// Nodes that ever held each record.
    pub carriers: BTreeMap<Hash, u32>,
}

impl Market {
    /// Sets up the issuer, the allowances and the wallets. `seeds` are the nodes' key seeds;
    /// clones must already share their original's seed.
    pub fn new(
        cfg: &Payments,
        nodes: u32,
        seed: u64,
        keys: &[DeviceSecret],
        record_copies: u32,
    ) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x6d61_726b_6574);
        let mut issuer_bytes = [0u8; 64];
        rng.fill_bytes(&mut issuer_bytes);
        let issuer = IssuerSecret::from_bytes(&issuer_bytes);
        let mut ledger = Ledger::new(issuer.id());
        let roles: Vec<Role> = (0..nodes)
            .map(|i| {
                if i < cfg.vendors {
                    Role::Vendor
                } else if i < cfg.vendors + cfg.gateways {
                    Role::Gateway
                } else {
                    Role::Shopper
                }
            })
            .collect();
        let first_shopper = cfg.vendors + cfg.gateways;
        let shoppers = nodes.saturating_sub(first_shopper);
        let clones = cfg.clones.min(shoppers / 2);
        let mut wallets = BTreeMap::new();
        let mut certs = BTreeMap::new();
        let mut cloned = BTreeSet::new();
        for i in first_shopper..nodes {
            let original = if i >= nodes - clones {
                first_shopper + (i - (nodes - clones))
            } else {
                i
            };
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&original.to_le_bytes());
            let cert = AllowanceCert::issue(
                &issuer,
                AllowanceBody {
                    version: VERSION,
                    id: AllowanceId(id),
                    issuer: issuer.id(),
                    holder: keys[i as usize].public(),
                    currency: "KES".into(),
                    limit: cfg.allowance,
                    max_payment: cfg.allowance,
                    valid_from: EPOCH - 86_400,
                    valid_until: EPOCH + 30 * 86_400,
                    settle_by: EPOCH + 60 * 86_400,
                },
            );
            if original == i {
                let _ = ledger.open_allowance(cert.clone());
            } else {
                cloned.insert(cert.id());
            }
            certs.insert(cert.id(), cert.clone());
            wallets.insert(i, Wallet::open(0, [HeldAllowance::new(cert)], None).0);
        }
        let books = (0..nodes)
            .filter(|&i| roles[i as usize] == Role::Vendor)
            .map(|i| (i, SpendBook::new([issuer.id()])))
            .collect();
        Self {
            cfg: cfg.clone(),
            record_copies,
            issuer,
            ledger,
            rng,
            roles,
            wallets,
            certs,
            books,
            payments: Vec::new(),
            by_record: BTreeMap::new(),
            decided: BTreeSet::new(),
            cloned,
            knows_fraud: BTreeMap::new(),
            settled_twice: 0,
            accepted_after_proof: 0,
            carriers: BTreeMap::new(),
        }
    }

    /// A node's role.
    pub fn role(&self, n: u32) -> Role {
        self.roles[n as usize]
    }

    /// The issuer's id, for gateways' sessions.
    pub fn issuer(&self) -> meshpay_protocol::IssuerId {
        self.issuer.id()
    }

    /// `a` and `b` met at `t_ms`: if one is a shopper and the other a vendor, maybe a payment
    /// (whose bundles go into `stores`, `a`'s first). Returns whether one was attempted.
    pub fn meet(
        &mut self,
        a: u32,
        b: u32,
        t_ms: u64,
        keys: &[DeviceSecret],
        stores: &mut [&mut BundleStore; 2],
    ) -> bool {
        let (shopper, vendor, si, vi) = match (self.role(a), self.role(b)) {
            (Role::Shopper, Role::Vendor) => (a, b, 0, 1),
            (Role::Vendor, Role::Shopper) => (b, a, 1, 0),
            _ => return false,
        };
        if crate::mobility::uniform(&mut self.rng, 0.0, 1.0) >= self.cfg.pay_prob {
            return false;
        }
        let now = EPOCH + t_ms / 1000;
        let span = self.cfg.amount_max.saturating_sub(self.cfg.amount_min) + 1;
        let amount = self.cfg.amount_min + self.rng.next_u64() % span;
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let vendor_key = keys[vendor as usize].public();
        let request = PaymentRequest::new(vendor_key, amount, "KES", Nonce(nonce), now + 600);
        let Some(wallet) = self.wallets.get_mut(&shopper) else {
            return false;
        };
        let Ok(spend) = wallet.prepare(&keys[shopper as usize], &request, now) else {
            return false;
        };
        wallet.commit(&spend);
        let iou = spend.iou;
        let cert = self.certs[&iou.allowance].clone();
        let book = self.books.get_mut(&vendor).expect("vendors have books");
        if self.knows_fraud.contains_key(&(vendor, iou.allowance)) && !book.refuses(&iou.allowance)
        {
            // The vendor's store holds a proof its book has not taken: a driver bug.
            self.accepted_after_proof += 1;
        }
        let verdict = book.check_payment(&iou, Some(&cert), Some(&request), &vendor_key, now);
        // A clone shares its original's allowance, which is marked cloned for both.
        let from_clone = self.cloned.contains(&iou.allowance);
        let mut payment = Payment {
            payer: shopper,
            payee: vendor,
            amount,
            allowance: iou.allowance,
            at_ms: t_ms,
            accepted: false,
            from_clone,
            decided_ms: None,
            status: None,
            receipt_at_payee_ms: None,
        };
        // The payer's spend notice goes into its own store whatever the vendor says.
        let notice = Bundle::notice(cert.clone(), iou.notice());
        stores[si].insert_bundle(&notice, Origin::Local, 0, now);
        match verdict {
            Verdict::Accept => {
                book.record_payment(&iou, &cert);
                let record = SealedRecord::seal(
                    &iou,
                    self.issuer.id(),
                    &self.issuer.seal_key(),
                    now,
                    cert.body().settle_by,
                    &mut self.rng,
                )
                .expect("the simulated issuer's seal key is valid");
                let bundle = Bundle::new(Content::Record(record));
                self.by_record.insert(iou.id(), self.payments.len());
                stores[vi].insert_bundle(&bundle, Origin::Local, self.record_copies, now);
                stores[vi].insert_bundle(&notice, Origin::Local, 0, now);
                payment.accepted = true;
            }
            Verdict::Fork(proof) => {
                let b = Bundle::new(Content::Fraud(proof));
                stores[vi].insert_bundle(&b, Origin::Local, 0, now);
            }
            _ => {}
        }
        self.payments.push(payment);
        true
    }

    /// Node `n` got bundles `ids` at `t_ms`: fraud proofs reach its book, a gateway settles
    /// records with the issuer and puts the receipts into its store, receipts reaching a
    /// payee are noted.
    pub fn took(&mut self, n: u32, ids: &[Hash], t_ms: u64, store: &mut BundleStore) {
        let now = EPOCH + t_ms / 1000;
        for id in ids {
            let Some(body) = store.body(id) else {
                continue;
            };
            let Ok(b) = Bundle::decode(&body) else {
                continue;
            };
            match b.content() {
                Content::Fraud(p) => {
                    self.knows_fraud.entry((n, p.allowance())).or_insert(t_ms);
                    if let Some(book) = self.books.get_mut(&n) {
                        let _ = book.add_fraud_proof(p);
                    }
                }
                Content::Record(r) => {
                    *self.carriers.entry(r.id).or_default() += 1;
                    if self.role(n) == Role::Gateway && !self.decided.contains(&r.id) {
                        let Ok(iou) = r.open(&self.issuer) else {
                            continue;
                        };
                        let outcome = self.ledger.apply(&iou, now, false);
                        let status = outcome.receipt_status();
                        self.decided.insert(r.id);
                        if let Some(&i) = self.by_record.get(&r.id) {
                            let p = &mut self.payments[i];
                            if p.status.is_some() && status == ReceiptStatus::Settled {
                                self.settled_twice += 1;
                            }
                            p.decided_ms = Some(t_ms);
                            p.status = Some(status);
                        }
                        if let Some(proof) = outcome.fork() {
                            let fb = Bundle::new(Content::Fraud(Box::new(proof.clone())));
                            store.insert_bundle(&fb, Origin::Local, 0, now);
                            self.knows_fraud
                                .entry((n, proof.allowance()))
                                .or_insert(t_ms);
                        }
                        let receipt = SettlementReceipt::issue(&self.issuer, r.id, status, now);
                        if status.is_final() {
                            store.insert_bundle(
                                &Bundle::new(Content::Receipt(receipt)),
                                Origin::Local,
                                0,
                                now,
                            );
                        }
                    }
                }
                Content::Receipt(r) => {
                    if let Some(&i) = self.by_record.get(&r.body().record) {
                        let p = &mut self.payments[i];
                        if p.payee == n && p.receipt_at_payee_ms.is_none() {
                            p.receipt_at_payee_ms = Some(t_ms);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Money is conserved at the issuer: no allowance settled more than its limit.
    pub fn conserved(&self) -> bool {
        self.ledger
            .escrows()
            .values()
            .all(|e| e.settled_total <= e.cert.body().limit)
    }
}

/// Payment statistics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PaymentStats {
    /// Payments attempted.
    pub payments: u64,
    /// Accepted by the vendor.
    pub accepted: u64,
    /// Refused by the vendor (a fork seen at payment, or a known fraud proof).
    pub refused: u64,
    /// Settled by the issuer.
    pub settled: u64,
    /// Rejected by the issuer.
    pub rejected: u64,
    /// Accepted payments not decided by the end.
    pub undecided: u64,
    /// settled / accepted.
    pub settlement_ratio: f64,
    /// Payment to the issuer's decision, mean s.
    pub settle_latency_avg: f64,
    /// Median of the same, s.
    pub settle_latency_med: f64,
    /// 90th percentile, s.
    pub settle_latency_p90: f64,
    /// Decision to the receipt at the payee, mean s.
    pub receipt_latency_avg: f64,
    /// Receipts that reached their payee.
    pub receipts_home: u64,
    /// Mean number of nodes that carried a record.
    pub copies_per_record: f64,
    /// Value vendors accepted from cloned allowances that the issuer then rejected.
    pub value_lost_to_clones: u64,
    /// Value vendors accepted from cloned allowances before every vendor held the proof (all
    /// of it, if some vendor never did).
    pub value_accepted_before_known: u64,
    /// Cloned allowances.
    pub cloned_allowances: u64,
    /// From the first payment of a cloned wallet to the first fraud proof anywhere, mean s.
    pub fraud_detection_avg: f64,
    /// From the first fraud proof to the last vendor holding one, mean s (NaN if some never did).
    pub fraud_spread_avg: f64,
    /// Records settled twice (always 0).
    pub settled_twice: u64,
    /// Payments accepted by a vendor that held the fraud proof (always 0).
    pub accepted_after_proof: u64,
    /// Settled totals within every allowance's limit.
    pub conserved: bool,
}

impl PaymentStats {
    /// Computes them.
    // Counts and milliseconds of a run are exact in f64.
    #[allow(clippy::cast_precision_loss)]
    pub fn of(m: &Market) -> Self {
        let p = &m.payments;
        let count = |f: &dyn Fn(&Payment) -> bool| p.iter().filter(|x| f(x)).count() as u64;
        let accepted = count(&|x| x.accepted);
        let settled = count(&|x| x.status == Some(ReceiptStatus::Settled));
        let rejected = count(&|x| matches!(x.status, Some(ReceiptStatus::Rejected(_))));
        let mut lat: Vec<f64> = p
            .iter()
            .filter_map(|x| x.decided_ms.map(|d| (d - x.at_ms) as f64 / 1000.0))
            .collect();
        let back: Vec<f64> = p
            .iter()
            .filter_map(|x| {
                Some((x.receipt_at_payee_ms?.saturating_sub(x.decided_ms?)) as f64 / 1000.0)
            })
            .collect();
        let mean = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        lat.sort_by(f64::total_cmp);
        let q = |v: &[f64], q: f64| {
            if v.is_empty() {
                f64::NAN
            } else {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let i = ((v.len() as f64) * q) as usize;
                v[i.min(v.len() - 1)]
            }
        };
        let vendors: BTreeSet<u32> = (0..u32::try_from(m.roles.len()).unwrap_or(u32::MAX))
            .filter(|&i| m.role(i) == Role::Vendor)
            .collect();
        let mut detect = Vec::new();
        let mut spread = Vec::new();
        let mut before_known = 0u64;
        for a in &m.cloned {
            let everyone = vendors
                .iter()
                .map(|v| m.knows_fraud.get(&(*v, *a)).copied())
                .collect::<Option<Vec<u64>>>()
                .and_then(|t| t.into_iter().max());
            before_known += p
                .iter()
                .filter(|x| x.accepted && x.allowance == *a && everyone.is_none_or(|e| x.at_ms < e))
                .map(|x| x.amount)
                .sum::<u64>();
            let first_pay = p
                .iter()
                .filter(|x| x.allowance == *a)
                .map(|x| x.at_ms)
                .min();
            let known: Vec<u64> = m
                .knows_fraud
                .iter()
                .filter(|((_, al), _)| al == a)
                .map(|(_, t)| *t)
                .collect();
            if let (Some(f), Some(&first)) = (first_pay, known.iter().min()) {
                detect.push(first.saturating_sub(f) as f64 / 1000.0);
                let all = vendors
                    .iter()
                    .map(|v| m.knows_fraud.get(&(*v, *a)).copied())
                    .collect::<Option<Vec<u64>>>();
                spread.push(all.map_or(f64::NAN, |t| {
                    t.iter()
                        .max()
                        .copied()
                        .unwrap_or(first)
                        .saturating_sub(first) as f64
                        / 1000.0
                }));
            }
        }
        Self {
            payments: p.len() as u64,
            accepted,
            refused: p.len() as u64 - accepted,
            settled,
            rejected,
            undecided: count(&|x| x.accepted && x.status.is_none()),
            settlement_ratio: if accepted == 0 {
                f64::NAN
            } else {
                settled as f64 / accepted as f64
            },
            settle_latency_avg: mean(&lat),
            settle_latency_med: q(&lat, 0.5),
            settle_latency_p90: q(&lat, 0.9),
            receipt_latency_avg: mean(&back),
            receipts_home: back.len() as u64,
            copies_per_record: if m.carriers.is_empty() {
                f64::NAN
            } else {
                f64::from(m.carriers.values().sum::<u32>()) / m.carriers.len() as f64
            },
            value_lost_to_clones: p
                .iter()
                .filter(|x| {
                    x.accepted
                        && m.cloned.contains(&x.allowance)
                        && matches!(x.status, Some(ReceiptStatus::Rejected(_)))
                })
                .map(|x| x.amount)
                .sum(),
            value_accepted_before_known: before_known,
            cloned_allowances: m.cloned.len() as u64,
            fraud_detection_avg: mean(&detect),
            fraud_spread_avg: mean(&spread),
            settled_twice: m.settled_twice,
            accepted_after_proof: m.accepted_after_proof,
            conserved: m.conserved(),
        }
    }
}
