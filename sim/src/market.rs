//! The payments workload: shoppers pay vendors they meet, gateways hand records to the
//! issuer, and receipts, spend notices, fraud proofs and revocations travel back. Every node
//! is a [`Device`], the same machine a `meshpay` node runs: shoppers pay with its `PayPeer`
//! command over an in-memory link, vendors judge with its spend book and seal records, and
//! every node acts on the bundles it takes as a node does. Gateways settle through the
//! protocol's [`MemoryIssuer`], the server's settlement path with signatures checked.
//! Cloned wallets double spend; the mesh's notices and fraud proofs stop them.
//!
//! Roles by node index: vendors first, then gateways, then shoppers; the last `clones` shoppers
//! are copies (same device key, same allowance, same counters) of the first ones.

use crate::clock::EPOCH;
use crate::scenario::Payments;
use meshpay_protocol::bundle::Content;
use meshpay_protocol::codec::{VERSION, encode};
use meshpay_protocol::device::{Answer, Command, Event, Learned, OpId, SentStatus};
use meshpay_protocol::settlement::MemoryIssuer;
use meshpay_protocol::{
    AllowanceBody, AllowanceCert, AllowanceId, DescriptorBody, DeviceSecret, Hash,
    IssuerDescriptor, IssuerId, IssuerSecret, ReceiptStatus, SealedRecord,
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

/// A command the market gives a node's device, for the engine to run.
pub struct Order {
    /// The node.
    pub node: u32,
    /// The command's id.
    pub op: OpId,
    /// The command.
    pub command: Command,
}

/// The market's state.
pub struct Market {
    cfg: Payments,
    issuer: MemoryIssuer,
    descriptor: IssuerDescriptor,
    rng: ChaCha20Rng,
    roles: Vec<Role>,
    wallets: BTreeMap<u32, AllowanceCert>,
    /// Every payment.
    pub payments: Vec<Payment>,
    by_iou: BTreeMap<Hash, usize>,
    /// The payment each shopper's command is making: op → (payer, payee, amount, at).
    paying: BTreeMap<OpId, (u32, u32, u64, u64)>,
    next_op: u64,
    /// Records handed to the issuer.
    decided: BTreeSet<Hash>,
    /// Records a gateway took and has not uploaded yet.
    uploads: BTreeMap<u32, Vec<SealedRecord>>,
    /// Fraud proofs and revocations of the issuer already handed to each gateway.
    alerts_read: BTreeMap<u32, (usize, usize)>,
    /// Allowances held by a cloned wallet.
    pub cloned: BTreeSet<AllowanceId>,
    /// When each node first held a fraud proof for an allowance, ms.
    pub knows_fraud: BTreeMap<(u32, AllowanceId), u64>,
    /// Records settled more than once (a broken ledger; always 0).
    pub settled_twice: u64,
    /// Payments a vendor accepted while it held a fraud proof for the allowance (always 0).
    pub accepted_after_proof: u64,
    /// Nodes that ever held each record bundle.
    pub carriers: BTreeMap<Hash, u32>,
}

impl Market {
    /// Sets up the issuer, its descriptor and the allowances. `keys` are the nodes' keys;
    /// clones must already share their original's key.
    pub fn new(cfg: &Payments, nodes: u32, seed: u64, keys: &[DeviceSecret]) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x6d61_726b_6574);
        let mut issuer_bytes = [0u8; 64];
        rng.fill_bytes(&mut issuer_bytes);
        let secret = IssuerSecret::from_bytes(&issuer_bytes);
        let descriptor = IssuerDescriptor::issue(
            &secret,
            DescriptorBody {
                version: VERSION,
                issuer: secret.id(),
                seal_key: secret.seal_key(),
                name: "Simulated market association".to_owned(),
                currencies: vec!["KES".to_owned()],
                urls: Vec::new(),
                valid_from: EPOCH - 86_400,
                valid_until: EPOCH + 365 * 86_400,
                max_allowance: cfg.allowance,
                max_payment: cfg.allowance,
            },
        );
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
        let mut issuer = MemoryIssuer::new(secret, true);
        let mut wallets = BTreeMap::new();
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
                issuer.secret(),
                AllowanceBody {
                    version: VERSION,
                    id: AllowanceId(id),
                    issuer: issuer.secret().id(),
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
                let _ = issuer.open_allowance(cert.clone());
            } else {
                cloned.insert(cert.id());
            }
            wallets.insert(i, cert);
        }
        Self {
            cfg: cfg.clone(),
            issuer,
            descriptor,
            rng,
            roles,
            wallets,
            payments: Vec::new(),
            by_iou: BTreeMap::new(),
            paying: BTreeMap::new(),
            next_op: 0,
            decided: BTreeSet::new(),
            uploads: BTreeMap::new(),
            alerts_read: BTreeMap::new(),
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

    /// The issuer's id.
    pub fn issuer(&self) -> IssuerId {
        self.issuer.secret().id()
    }

    /// The issuer's descriptor, which every node trusts.
    pub fn descriptor(&self) -> &IssuerDescriptor {
        &self.descriptor
    }

    /// The allowance node `n` holds, if it is a shopper.
    pub fn allowance_of(&self, n: u32) -> Option<&AllowanceCert> {
        self.wallets.get(&n)
    }

    /// `a` and `b` met at `t_ms`: if one is a shopper and the other a vendor, maybe a payment,
    /// as the shopper's `PayPeer` command to the vendor.
    pub fn meet(&mut self, a: u32, b: u32, t_ms: u64, keys: &[DeviceSecret]) -> Option<Order> {
        let (shopper, vendor) = match (self.role(a), self.role(b)) {
            (Role::Shopper, Role::Vendor) => (a, b),
            (Role::Vendor, Role::Shopper) => (b, a),
            _ => return None,
        };
        if crate::mobility::uniform(&mut self.rng, 0.0, 1.0) >= self.cfg.pay_prob {
            return None;
        }
        let span = self.cfg.amount_max.saturating_sub(self.cfg.amount_min) + 1;
        let amount = self.cfg.amount_min + self.rng.next_u64() % span;
        self.next_op += 1;
        let op = OpId(self.next_op);
        self.paying.insert(op, (shopper, vendor, amount, t_ms));
        Some(Order {
            node: shopper,
            op,
            command: Command::PayPeer {
                payee: keys[vendor as usize].public(),
                amount,
                currency: "KES".into(),
                memo: String::new(),
                again: true,
                key: None,
            },
        })
    }

    /// What node `n`'s device told at `t_ms`: payments made and refused, fraud proofs
    /// learned, records reaching a gateway, receipts reaching a payee.
    pub fn on_event(&mut self, n: u32, e: &Event, t_ms: u64) {
        match e {
            Event::Done { op, result } => {
                let Some((payer, payee, amount, at_ms)) = self.paying.remove(op) else {
                    return;
                };
                // The wallet could not pay (spent, or no usable allowance): no payment.
                let Ok(Answer::Paid(outcome)) = result else {
                    return;
                };
                let Some(cert) = self.wallets.get(&payer) else {
                    return;
                };
                let allowance = cert.id();
                let accepted = outcome.status == SentStatus::Acked;
                if accepted {
                    self.by_iou.insert(outcome.iou, self.payments.len());
                }
                self.payments.push(Payment {
                    payer,
                    payee,
                    amount,
                    allowance,
                    at_ms,
                    accepted,
                    // A clone shares its original's allowance, which is marked cloned for both.
                    from_clone: self.cloned.contains(&allowance),
                    decided_ms: None,
                    status: None,
                    receipt_at_payee_ms: None,
                });
            }
            Event::Received { iou, .. } if self.knows_fraud.contains_key(&(n, iou.allowance)) => {
                self.accepted_after_proof += 1;
            }
            Event::Learned(Learned::Fraud { allowance, .. }) => {
                self.knows_fraud.entry((n, *allowance)).or_insert(t_ms);
            }
            Event::Learned(Learned::Record { record, .. })
                if self.role(n) == Role::Gateway && !self.decided.contains(&record.id) =>
            {
                self.uploads.entry(n).or_default().push(record.clone());
            }
            Event::Settled { iou, .. } => {
                if let Some(&i) = self.by_iou.get(iou) {
                    let p = &mut self.payments[i];
                    if p.payee == n && p.receipt_at_payee_ms.is_none() {
                        p.receipt_at_payee_ms = Some(t_ms);
                    }
                }
            }
            _ => {}
        }
    }

    /// Counts a record bundle newly held by a node.
    pub fn carried(&mut self, bundle: Hash) {
        *self.carriers.entry(bundle).or_default() += 1;
    }

    /// Gateway `n` is online at `t_ms`: it uploads the records it took, and hands the
    /// issuer's receipts, fraud proofs and revocations to its device, which checks them and
    /// puts them into the mesh.
    pub fn gateway_round(&mut self, n: u32, t_ms: u64) -> Vec<Order> {
        let now = EPOCH + t_ms / 1000;
        let records: Vec<SealedRecord> = self
            .uploads
            .remove(&n)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| self.decided.insert(r.id))
            .collect();
        let mut orders = Vec::new();
        if records.is_empty() {
            return orders;
        }
        let upload: Vec<Vec<u8>> = records.iter().map(encode).collect();
        let answers = self.issuer.settle(&upload, now);
        let mut receipts = Vec::new();
        for (record, receipt) in records.iter().zip(answers) {
            let Some(receipt) = receipt else { continue };
            let status = receipt.status();
            if let Some(&i) = self.by_iou.get(&record.id) {
                let p = &mut self.payments[i];
                if p.status.is_some() && status == ReceiptStatus::Settled {
                    self.settled_twice += 1;
                }
                p.decided_ms = Some(t_ms);
                p.status = Some(status);
            }
            receipts.push(receipt);
        }
        let issuer = self.issuer();
        self.next_op += 1;
        orders.push(Order {
            node: n,
            op: OpId(self.next_op),
            command: Command::Receipts {
                issuer,
                receipts,
                carry: true,
            },
        });
        let read = self.alerts_read.entry(n).or_default();
        let frauds = self.issuer.fraud_proofs();
        let revocations = self.issuer.revocations();
        let alerts: Vec<Content> = frauds[read.0..]
            .iter()
            .map(|p| Content::Fraud(Box::new(p.clone())))
            .chain(
                revocations[read.1..]
                    .iter()
                    .cloned()
                    .map(Content::Revocation),
            )
            .collect();
        *read = (frauds.len(), revocations.len());
        if !alerts.is_empty() {
            self.next_op += 1;
            orders.push(Order {
                node: n,
                op: OpId(self.next_op),
                command: Command::Alerts { issuer, alerts },
            });
        }
        orders
    }

    /// Money is conserved at the issuer: no allowance settled more than its limit.
    pub fn conserved(&self) -> bool {
        self.issuer
            .ledger()
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
    // One statistic after the other.
    #[allow(clippy::too_many_lines)]
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
