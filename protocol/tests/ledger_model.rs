//! The settlement ledger against a naive reference model, on random interleavings of honest
//! and forked IOUs with re-uploads: never over the limit, never twice, every fork found.

use meshpay_protocol::ledger::{Ledger, Outcome};
use meshpay_protocol::testkit::{self, T0};
use meshpay_protocol::{AllowanceId, Iou, Reason};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// The naive ledger: flat lists scanned linearly.
#[derive(Default)]
struct Model {
    /// (allowance, counter, iou id, amount) of every settled IOU.
    settled: Vec<(AllowanceId, u32, meshpay_protocol::Hash, u64)>,
    /// (allowance, counter, iou id, verdict) of the first refused IOU of each slot.
    refused: Vec<(AllowanceId, u32, meshpay_protocol::Hash, Expect)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Settled,
    Again,
    OverLimit,
    OverPaymentLimit,
    Conflict,
}

impl Model {
    fn apply(&mut self, iou: &Iou, limit: u64) -> Expect {
        let id = iou.id();
        let slot = |a: AllowanceId, c: u32| a == iou.allowance && c == iou.counter;
        if let Some(s) = self.settled.iter().find(|s| slot(s.0, s.1)) {
            return if s.2 == id {
                Expect::Again
            } else {
                Expect::Conflict
            };
        }
        if let Some(r) = self.refused.iter().find(|r| slot(r.0, r.1) && r.2 == id) {
            return r.3.clone();
        }
        let total: u64 = self
            .settled
            .iter()
            .filter(|s| s.0 == iou.allowance)
            .map(|s| s.3)
            .sum();
        // The test allowances have max_payment == limit.
        let verdict = if iou.amount > limit {
            Expect::OverPaymentLimit
        } else if total + iou.amount > limit {
            Expect::OverLimit
        } else {
            Expect::Settled
        };
        if verdict == Expect::Settled {
            self.settled
                .push((iou.allowance, iou.counter, id, iou.amount));
        } else if !self.refused.iter().any(|r| slot(r.0, r.1)) {
            self.refused
                .push((iou.allowance, iou.counter, id, verdict.clone()));
        }
        verdict
    }
}

/// A scenario: per allowance a limit, and per wallet copy a list of payment amounts. Copy 0 is
/// the honest wallet; further copies are clones taken after `fork_at` payments of copy 0.
/// An allowance's limit, the honest wallet's payments, and clones: (taken after n payments,
/// the clone's payments).
type AllowancePlan = (u64, Vec<u64>, Vec<(usize, Vec<u64>)>);

#[derive(Debug, Clone)]
struct Scenario {
    allowances: Vec<AllowancePlan>,
    order_seed: u64,
    reuploads: Vec<usize>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let allowance = (
        50u64..400,
        prop::collection::vec(1u64..120, 0..8),
        prop::collection::vec((0usize..8, prop::collection::vec(1u64..120, 1..4)), 0..3),
    );
    (
        prop::collection::vec(allowance, 1..4),
        any::<u64>(),
        prop::collection::vec(0usize..64, 0..8),
    )
        .prop_map(|(allowances, order_seed, reuploads)| Scenario {
            allowances,
            order_seed,
            reuploads,
        })
}

/// Builds the IOUs of a scenario. Wallets never refuse here: the model tests the ledger, so a
/// cheating wallet that ignores its own limit is simulated by giving it a huge allowance and
/// registering the real limit only at the ledger.
fn build(s: &Scenario) -> (Ledger, BTreeMap<AllowanceId, u64>, Vec<Iou>) {
    let issuer = testkit::issuer();
    let holder = testkit::device(1);
    let payee = testkit::device(2);
    let mut ledger = Ledger::new(issuer.id());
    let mut limits = BTreeMap::new();
    let mut ious = Vec::new();
    let mut nonce = 0u8;
    for (i, (limit, honest, forks)) in s.allowances.iter().enumerate() {
        let id = u8::try_from(i + 1).expect("few allowances");
        let real = testkit::allowance(&issuer, id, &holder, *limit);
        ledger.open_allowance(real).expect("fresh id");
        limits.insert(AllowanceId([id; 16]), *limit);
        let generous = testkit::allowance(&issuer, id, &holder, u64::MAX / 2);
        let mut wallet = testkit::wallet([generous]);
        let mut snapshots = vec![wallet.clone()];
        for amount in honest {
            nonce = nonce.wrapping_add(1);
            ious.push(testkit::pay(
                &mut wallet,
                &holder,
                &testkit::request(&payee, *amount, nonce),
            ));
            snapshots.push(wallet.clone());
        }
        for (at, amounts) in forks {
            let mut clone = snapshots[(*at).min(snapshots.len() - 1)].clone();
            for amount in amounts {
                nonce = nonce.wrapping_add(1);
                ious.push(testkit::pay(
                    &mut clone,
                    &holder,
                    &testkit::request(&payee, *amount, nonce),
                ));
            }
        }
    }
    // Re-uploads, then a seeded shuffle (Fisher–Yates with a small LCG, so the order is a
    // function of the scenario alone).
    for r in &s.reuploads {
        if !ious.is_empty() {
            ious.push(ious[r % ious.len()].clone());
        }
    }
    let mut x = s.order_seed | 1;
    for i in (1..ious.len()).rev() {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = usize::try_from(x >> 33).expect("fits") % (i + 1);
        ious.swap(i, j);
    }
    (ledger, limits, ious)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn ledger_matches_the_naive_model(s in scenario()) {
        let (mut ledger, limits, ious) = build(&s);
        let mut model = Model::default();
        let mut outcomes = Vec::new();
        for iou in &ious {
            let got = ledger.apply(iou, T0, false);
            let want = model.apply(iou, limits[&iou.allowance]);
            let matches = match (&got, &want) {
                (Outcome::Settled { amount, .. }, Expect::Settled) => *amount == iou.amount,
                (Outcome::AlreadySettled { .. }, Expect::Again)
                | (Outcome::Rejected { reason: Reason::OverLimit, .. }, Expect::OverLimit)
                | (Outcome::Rejected { reason: Reason::OverPaymentLimit, .. }, Expect::OverPaymentLimit) => true,
                (Outcome::Conflict { proof, .. }, Expect::Conflict) => {
                    proof.verify(&testkit::issuer().id()).is_ok() && proof.allowance() == iou.allowance
                }
                _ => false,
            };
            prop_assert!(matches, "ledger said {got:?}, model said {want:?}");
            outcomes.push(got);
        }

        // Never over the limit; never twice.
        let mut settled_slots = BTreeSet::new();
        let mut totals: BTreeMap<AllowanceId, u64> = BTreeMap::new();
        for (iou, out) in ious.iter().zip(&outcomes) {
            if matches!(out, Outcome::Settled { .. }) {
                prop_assert!(settled_slots.insert((iou.allowance, iou.counter)), "slot settled twice");
                *totals.entry(iou.allowance).or_default() += iou.amount;
            }
        }
        for (a, total) in &totals {
            prop_assert!(*total <= limits[a]);
            prop_assert_eq!(ledger.escrow(a).expect("opened").settled_total, *total);
        }

        // Every fork found: each slot that saw two different IOUs has a proof.
        let mut per_slot: BTreeMap<(AllowanceId, u32), BTreeSet<meshpay_protocol::Hash>> = BTreeMap::new();
        for iou in &ious {
            per_slot.entry((iou.allowance, iou.counter)).or_default().insert(iou.id());
        }
        for ((a, _), ids) in &per_slot {
            if ids.len() > 1 {
                prop_assert!(ledger.escrow(a).expect("opened").fraud.is_some());
            }
        }
    }
}
