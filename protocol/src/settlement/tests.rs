use super::*;
use crate::codec::encode;
use crate::testkit::{DAY, T0, allowance, device, issuer, pay, request, sealed, wallet};

fn upload(records: &[&Iou]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|i| encode(&sealed(&issuer(), i)))
        .collect()
}

fn statuses(r: &[Option<SettlementReceipt>]) -> Vec<Option<ReceiptStatus>> {
    r.iter()
        .map(|r| r.as_ref().map(SettlementReceipt::status))
        .collect()
}

#[test]
fn judge_answers_each_input_in_upload_order() {
    let iss = issuer();
    let (alice, bob, carol) = (device(1), device(2), device(3));
    let cert = allowance(&iss, 1, &alice, 1000);
    let mut w = wallet([cert.clone()]);
    let mut clone = w.clone();
    let a = pay(&mut w, &alice, &request(&bob, 600, 1));
    let fork = pay(&mut clone, &alice, &request(&carol, 700, 2));
    let mut tampered = pay(&mut w, &alice, &request(&bob, 10, 3));
    tampered.amount = 11;
    let to_nobody = pay(&mut w, &alice, &request(&device(9), 5, 4));
    let inputs = vec![
        Input::Record(a.id(), a.clone()),
        Input::Record(fork.id(), fork.clone()),
        Input::Record(a.id(), a.clone()),
        Input::Record(tampered.id(), tampered.clone()),
        Input::Record(to_nobody.id(), to_nobody.clone()),
        Input::Unopened(Hash([7; 32])),
        Input::Nothing,
    ];
    let mut ledger = Ledger::new(iss.id());
    ledger.open_allowance(cert.clone()).unwrap();
    let bad: BTreeSet<Hash> = bad_signatures(&to_verify(&inputs, &ledger))
        .into_iter()
        .collect();
    assert_eq!(bad, BTreeSet::from([tampered.id()]));
    let payees = BTreeSet::from([bob.public(), carol.public()]);
    let decided = BTreeMap::new();
    let facts = Facts {
        decided: &decided,
        bad_signatures: &bad,
        payees: Payees::Only(&payees),
    };
    let judged = judge(&inputs, &mut ledger, &facts, T0);
    assert_eq!(
        judged.answers,
        vec![
            Answer::Fresh(a.id(), ReceiptStatus::Settled),
            Answer::Fresh(fork.id(), ReceiptStatus::Rejected(Reason::CounterConflict)),
            Answer::SameAs(0),
            Answer::Ready(None),
            Answer::Fresh(
                to_nobody.id(),
                ReceiptStatus::Rejected(Reason::UnknownPayee)
            ),
            Answer::Ready(None),
            Answer::Ready(None),
        ]
    );
    assert_eq!(
        judged.credits,
        BTreeMap::from([(
            (cert.id(), bob.public()),
            Credit {
                amount: 600,
                records: 1
            }
        )])
    );
    assert_eq!(
        judged.conflicts,
        vec![Conflict {
            holder: alice.public(),
            victim: carol.public(),
            amount: 700,
            record: fork.id()
        }]
    );
    assert_eq!(judged.frauds.len(), 1);
    assert_eq!(judged.changes.new_slots.len(), 1);
    assert_eq!(judged.changes.totals, vec![(cert.id(), 0, 600)]);
    let signed: Vec<SettlementReceipt> = judged
        .to_sign()
        .into_iter()
        .map(|(id, s)| SettlementReceipt::issue(&iss, id, s, T0))
        .collect();
    assert_eq!(signed.len(), 3);
    let answered = judged.answer(signed);
    assert_eq!(
        statuses(&answered.receipts),
        vec![
            Some(ReceiptStatus::Settled),
            Some(ReceiptStatus::Rejected(Reason::CounterConflict)),
            Some(ReceiptStatus::Settled),
            None,
            Some(ReceiptStatus::Rejected(Reason::UnknownPayee)),
            None,
            None,
        ]
    );
    // unknown_payee is provisional: not kept.
    assert_eq!(answered.kept.len(), 2);
    assert_eq!(
        answered.tally,
        Tally {
            settled: 1,
            rejected: 2,
            repeated: 0
        }
    );
}

/// An IOU from `holder` under `cert` with the given counter, amount and running total.
fn draft(
    holder: &crate::keys::DeviceSecret,
    cert: &AllowanceCert,
    counter: u32,
    amount: Amount,
    total: Amount,
    payee: DeviceKey,
) -> Iou {
    crate::iou::IouDraft {
        allowance: cert.id(),
        counter,
        amount,
        total,
        prev: Hash::default(),
        payee,
        nonce: crate::objects::Nonce([u8::try_from(counter).unwrap_or(0); 16]),
        time: T0,
    }
    .sign(holder)
}

/// A ledger holding alice's allowance of 1000 after a first batch: 600 to bob (counter 1),
/// 500 more (counter 2, over the limit), 300 to device 9 (counter 3), judged at `T0`
/// with every payee credited.
fn first_batch() -> (Ledger, AllowanceCert, [Iou; 3], Judged) {
    let iss = issuer();
    let (alice, bob) = (device(1), device(2));
    let cert = allowance(&iss, 1, &alice, 1000);
    let a = draft(&alice, &cert, 1, 600, 600, bob.public());
    let over = draft(&alice, &cert, 2, 500, 1100, bob.public());
    let c = draft(&alice, &cert, 3, 300, 900, device(9).public());
    let mut ledger = Ledger::new(iss.id());
    ledger.open_allowance(cert.clone()).unwrap();
    let facts = Facts {
        decided: &BTreeMap::new(),
        bad_signatures: &BTreeSet::new(),
        payees: Payees::All,
    };
    let inputs = [&a, &over, &c].map(|i| Input::Record(i.id(), i.clone()));
    let judged = judge(&inputs, &mut ledger, &facts, T0);
    (ledger, cert, [a, over, c], judged)
}

#[test]
fn judge_known_answers_within_and_past_the_limit() {
    let (_, cert, [a, over, c], judged) = first_batch();
    // 600 settles; 500 more would pass the 1000 limit; 300 fits (900).
    assert_eq!(
        judged.answers,
        vec![
            Answer::Fresh(a.id(), ReceiptStatus::Settled),
            Answer::Fresh(over.id(), ReceiptStatus::Rejected(Reason::OverLimit)),
            Answer::Fresh(c.id(), ReceiptStatus::Settled),
        ]
    );
    let slots: Vec<(u32, Amount)> = judged
        .changes
        .new_slots
        .iter()
        .map(|(_, n, s)| (*n, s.amount))
        .collect();
    assert_eq!(slots, vec![(1, 600), (2, 500), (3, 300)]);
    assert!(judged.changes.settled_slots.is_empty());
    assert_eq!(judged.changes.totals, vec![(cert.id(), 0, 900)]);
    let credit = |amount| Credit { amount, records: 1 };
    assert_eq!(
        judged.credits,
        BTreeMap::from([
            ((cert.id(), device(2).public()), credit(600)),
            ((cert.id(), device(9).public()), credit(300)),
        ])
    );
    assert!(judged.conflicts.is_empty());
}

#[test]
fn judge_answers_kept_decisions_and_settles_a_refused_slot_again() {
    let iss = issuer();
    let (mut ledger, cert, [a, _, _], _) = first_batch();
    let kept_a = SettlementReceipt::issue(&iss, a.id(), ReceiptStatus::Settled, T0);
    // A decision kept answers its id, whether the bytes open or not; the slot the
    // over-limit IOU was refused in is settled by another IOU that fits (900 + 100).
    let decided = BTreeMap::from([(a.id(), kept_a.clone())]);
    let facts = Facts {
        decided: &decided,
        bad_signatures: &BTreeSet::new(),
        payees: Payees::All,
    };
    let fits = draft(&device(1), &cert, 2, 100, 700, device(2).public());
    let inputs = [
        Input::Record(a.id(), a.clone()),
        Input::Unopened(a.id()),
        Input::Record(fits.id(), fits.clone()),
    ];
    let judged = judge(&inputs, &mut ledger, &facts, T0 + 60);
    assert_eq!(
        judged.answers,
        vec![
            Answer::Ready(Some(kept_a.clone())),
            Answer::Ready(Some(kept_a)),
            Answer::Fresh(fits.id(), ReceiptStatus::Settled),
        ]
    );
    assert!(judged.changes.new_slots.is_empty());
    assert_eq!(judged.changes.settled_slots.len(), 1);
    assert_eq!(judged.changes.settled_slots[0].1, 2);
    assert_eq!(judged.changes.totals, vec![(cert.id(), 900, 1000)]);
    let fits_receipt = SettlementReceipt::issue(&iss, fits.id(), ReceiptStatus::Settled, T0 + 60);
    let answered = judged.answer(vec![fits_receipt.clone()]);
    assert_eq!(
        answered.tally,
        Tally {
            settled: 1,
            rejected: 0,
            repeated: 2
        }
    );
    assert_eq!(answered.kept, vec![fits_receipt]);
}

#[test]
fn judge_refuses_records_past_the_settle_by_time() {
    let (mut ledger, cert, _, _) = first_batch();
    let facts = Facts {
        decided: &BTreeMap::new(),
        bad_signatures: &BTreeSet::new(),
        payees: Payees::All,
    };
    // Past the settle-by time, a new record is refused late, and claims its slot.
    let late = draft(&device(1), &cert, 4, 1, 901, device(2).public());
    let judged = judge(
        &[Input::Record(late.id(), late.clone())],
        &mut ledger,
        &facts,
        T0 + 15 * DAY,
    );
    assert_eq!(
        judged.answers,
        vec![Answer::Fresh(
            late.id(),
            ReceiptStatus::Rejected(Reason::LateSettlement)
        )]
    );
    assert_eq!(judged.changes.new_slots.len(), 1);
    assert!(judged.changes.totals.is_empty());
    assert!(judged.credits.is_empty());
}

#[test]
fn memory_issuer_settles_once_proves_forks_and_repays_victims() {
    let iss = issuer();
    let (alice, bob, carol) = (device(1), device(2), device(3));
    let cert = allowance(&iss, 1, &alice, 1000);
    let mut m = MemoryIssuer::new(issuer(), false);
    m.open_allowance(cert.clone()).unwrap();
    m.open_account(bob.public());
    m.open_account(carol.public());
    m.credit(alice.public(), 500);
    let mut w = wallet([cert.clone()]);
    let mut clone = w.clone();
    let a = pay(&mut w, &alice, &request(&bob, 600, 1));
    let fork = pay(&mut clone, &alice, &request(&carol, 700, 2));
    let to_nobody = pay(&mut w, &alice, &request(&device(9), 5, 3));
    let unknown = crate::iou::IouDraft {
        allowance: AllowanceId([0xee; 16]),
        counter: 1,
        amount: 5,
        total: 5,
        prev: Hash::default(),
        payee: bob.public(),
        nonce: crate::objects::Nonce([5; 16]),
        time: T0,
    }
    .sign(&alice);
    let mut batch = upload(&[&a, &fork, &to_nobody, &unknown]);
    batch.push(b"junk".to_vec());
    let first = m.settle(&batch, T0);
    assert_eq!(
        statuses(&first),
        vec![
            Some(ReceiptStatus::Settled),
            Some(ReceiptStatus::Rejected(Reason::CounterConflict)),
            Some(ReceiptStatus::Rejected(Reason::UnknownPayee)),
            None,
            None,
        ]
    );
    assert!(first[0].as_ref().unwrap().verify(&iss.id()).is_ok());
    // The loss rule: carol is repaid from alice's 500.
    assert_eq!(m.balance(&bob.public()), Some(600));
    assert_eq!(m.balance(&carol.public()), Some(500));
    assert_eq!(m.balance(&alice.public()), Some(0));
    assert_eq!(m.fraud_proofs().len(), 1);
    assert_eq!(m.fraud_proofs()[0].verify(&iss.id()), Ok(()));
    assert_eq!(m.revocations().len(), 1);
    assert_eq!(m.revocations()[0].body().allowance, cert.id());
    assert_eq!(m.ledger().escrow(&cert.id()).unwrap().settled_total, 600);

    // Uploaded again, later: the kept receipts answer, byte for byte; the provisional
    // refusal is judged again, and settles once the payee has an account.
    m.open_account(device(9).public());
    let again = m.settle(&batch, T0 + 60);
    assert_eq!(again[0], first[0]);
    assert_eq!(again[1], first[1]);
    assert_eq!(
        statuses(&again)[2..],
        [Some(ReceiptStatus::Settled), None, None]
    );
    assert_eq!(m.balance(&bob.public()), Some(600));
    assert_eq!(m.fraud_proofs().len(), 1);

    // Bytes under a decided id that do not open get the kept receipt.
    let mut impostor = sealed(&iss, &a);
    impostor.ciphertext.0[3] ^= 1;
    assert_eq!(m.settle(&[encode(&impostor)], T0), vec![first[0].clone()]);

    // Release after settle-by returns the unspent escrow to the holder.
    let released = m.release_expired(T0 + 15 * DAY);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].amount, 1000 - 605);
    assert_eq!(m.balance(&alice.public()), Some(395));
}

#[test]
fn memory_issuer_for_the_simulator_credits_every_payee() {
    let iss = issuer();
    let (alice, bob) = (device(1), device(2));
    let cert = allowance(&iss, 1, &alice, 1000);
    let mut m = MemoryIssuer::new(issuer(), true);
    m.open_allowance(cert.clone()).unwrap();
    let mut w = wallet([cert]);
    let a = pay(&mut w, &alice, &request(&bob, 250, 1));
    let got = m.settle(&upload(&[&a]), T0);
    assert_eq!(statuses(&got), vec![Some(ReceiptStatus::Settled)]);
    assert_eq!(m.balance(&bob.public()), Some(250));
    assert_eq!(m.decision(&a.id()), got[0].as_ref());
}
