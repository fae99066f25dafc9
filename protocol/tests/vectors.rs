//! Test vectors: every wire object built from fixed seeds, compared byte for byte with the
//! frozen files in `tests/vectors/`. The files are the interoperability contract of SPEC.md §9.
//!
//! A missing file is written and the test fails, so a vector is never accepted unseen; set
//! `MESHPAY_WRITE_VECTORS=1` to rewrite them all after a deliberate format change.

mod frozen;

use meshpay_protocol::objects::{Body, Signed, tags};
use meshpay_protocol::testkit::{self, T0};
use meshpay_protocol::{
    AllowanceCert, FraudProof, Iou, IssuerDescriptor, PaymentAck, PaymentRequest, PrintableKey,
    Reason, ReceiptStatus, Revocation, RevocationReason, SealedRecord, SettlementReceipt,
    SpendNotice, Wire, decode, encode,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::{Value, json};

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn signing_input(tag: &str, msg: &[u8]) -> String {
    let mut v = tag.as_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(msg);
    h(&v)
}

/// The common part of a vector for a `[body, signature]` object.
fn signed<B: Body>(obj: &Signed<B>, fields: &Value) -> Value {
    json!({
        "fields": fields,
        "encoded": h(&encode(obj)),
        "signing_input": signing_input(B::TAG, &obj.signed_bytes()),
        "signature": h(&obj.signature().0),
    })
}

/// Compares `vector` with the frozen file `tests/vectors/<name>.json` (see
/// [`frozen::frozen_vector`]).
fn frozen(name: &str, vector: &Value) {
    frozen::frozen_vector(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors")),
        name,
        vector,
    );
}

fn check<T: Wire + PartialEq + std::fmt::Debug>(name: &str, object: &T, mut vector: Value) {
    vector["object"] = json!(name);
    frozen(name, &vector);
    // The frozen bytes decode to the same object.
    let bytes = hex::decode(vector["encoded"].as_str().expect("encoded is a string"))
        .expect("encoded is hex");
    assert_eq!(&decode::<T>(&bytes).expect("frozen bytes decode"), object);
}

fn check_frame(name: &str, frame: &[u8], decodes: bool, mut vector: Value) {
    assert!(decodes, "{name}: the frame does not decode to its message");
    vector["object"] = json!(name);
    vector["encoded"] = json!(h(frame));
    frozen(name, &vector);
}

#[test]
fn link_message_vectors() {
    use meshpay_protocol::message::{Ask, Pay, Request, Response};
    let issuer = testkit::issuer();
    let (alice, bob) = (testkit::device(1), testkit::device(2));
    let cert = testkit::allowance(&issuer, 0xa1, &alice, 50_000);
    let req = testkit::request(&bob, 1_250, 0x5e);
    let mut wallet = testkit::wallet([cert.clone()]);
    let iou = testkit::pay(&mut wallet, &alice, &req);
    let ask = Request::Ask(Ask::new(1_250, "KES", "tea"));
    let pay = Request::Pay(Box::new(Pay::new(iou.clone(), Some(cert.clone()))));
    let answer = Response::Request(req.clone());
    let ack = Response::Ack(PaymentAck::sign(&bob, iou.id(), T0 + 1));
    let refused = Response::Refused(Reason::CounterConflict);
    for (name, r, note) in [
        (
            "message_ask",
            &ask,
            "kind 1: ask for a request of 1250 KES, memo \"tea\"",
        ),
        (
            "message_pay",
            &pay,
            "kind 2: the IOU of iou_first-like fields for request nonce 5e.., with the allowance certificate (first contact)",
        ),
    ] {
        let f = r.encode();
        check_frame(
            name,
            &f,
            Request::decode(&f).as_ref() == Ok(r),
            json!({"note": note}),
        );
    }
    for (name, r, note) in [
        ("message_request", &answer, "kind 16: the payment request"),
        (
            "message_ack",
            &ack,
            "kind 17: the payee's ack of the IOU in message_pay",
        ),
        (
            "message_refused",
            &refused,
            "kind 18: refused, reason 15 (counter_conflict)",
        ),
    ] {
        let f = r.encode();
        check_frame(
            name,
            &f,
            Response::decode(&f).as_ref() == Ok(r),
            json!({"note": note}),
        );
    }
    // The whole first exchange on the wire, frames only (libp2p adds a 4-byte length each).
    let total =
        ask.encode().len() + answer.encode().len() + pay.encode().len() + ack.encode().len();
    assert!(total <= 1024, "first exchange with ask: {total} bytes");
}

#[test]
fn vectors() {
    let issuer = testkit::issuer();
    let alice = testkit::device(1);
    let bob = testkit::device(2);
    let seeds = json!({
        "issuer_secret": h(&testkit::ISSUER_SEED),
        "alice_seed": h(&[1u8; 32]),
        "bob_seed": h(&[2u8; 32]),
    });

    // Keys and their printable forms.
    let keys = json!({
        "seeds": seeds,
        "alice_key": h(&alice.public().0),
        "alice_text": alice.public().to_text(),
        "bob_key": h(&bob.public().0),
        "bob_text": bob.public().to_text(),
        "issuer_id": h(&issuer.id().0),
        "issuer_text": issuer.id().to_text(),
        "issuer_seal_key": h(&issuer.seal_key().0),
    });
    frozen("keys", &keys);

    let desc: IssuerDescriptor = testkit::descriptor(&issuer);
    let b = desc.body();
    check(
        "issuer_descriptor",
        &desc,
        signed(
            &desc,
            &json!({
                "version": b.version, "issuer": h(&b.issuer.0), "seal_key": h(&b.seal_key.0),
                "name": b.name, "currencies": b.currencies, "urls": b.urls,
                "valid_from": b.valid_from, "valid_until": b.valid_until,
                "max_allowance": b.max_allowance, "max_payment": b.max_payment,
            }),
        ),
    );

    let cert: AllowanceCert = testkit::allowance(&issuer, 0xa1, &alice, 50_000);
    let b = cert.body();
    check(
        "allowance_certificate",
        &cert,
        signed(
            &cert,
            &json!({
                "version": b.version, "id": h(&b.id.0), "issuer": h(&b.issuer.0),
                "holder": h(&b.holder.0), "currency": b.currency, "limit": b.limit,
                "max_payment": b.max_payment, "valid_from": b.valid_from,
                "valid_until": b.valid_until, "settle_by": b.settle_by,
            }),
        ),
    );

    let mut req: PaymentRequest = testkit::request(&bob, 1_250, 0x5e);
    req.issuers = vec![issuer.id()];
    req.memo = "2 mangoes".to_owned();
    check(
        "payment_request",
        &req,
        json!({
            "fields": {
                "version": req.version, "payee": h(&req.payee.0), "amount": req.amount,
                "currency": req.currency, "nonce": h(&req.nonce.0), "expires": req.expires,
                "issuers": [h(&issuer.id().0)], "memo": req.memo,
            },
            "encoded": h(&encode(&req)),
            "text": req.to_text(),
        }),
    );
    assert_eq!(PaymentRequest::from_text(&req.to_text()), Ok(req.clone()));

    let mut wallet = testkit::wallet([cert.clone()]);
    let first: Iou = testkit::pay(&mut wallet, &alice, &testkit::request(&bob, 300, 0x01));
    let iou: Iou = testkit::pay(&mut wallet, &alice, &req);
    for (name, iou) in [("iou_first", &first), ("iou", &iou)] {
        let statement = iou.statement();
        let rest = encode(&(
            iou.version,
            iou.amount,
            iou.total,
            &iou.prev,
            &iou.payee,
            &iou.nonce,
            iou.time,
        ));
        check(
            name,
            iou,
            json!({
                "fields": {
                    "version": iou.version, "allowance": h(&iou.allowance.0),
                    "counter": iou.counter, "amount": iou.amount, "total": iou.total,
                    "prev": h(&iou.prev.0), "payee": h(&iou.payee.0), "nonce": h(&iou.nonce.0),
                    "time": iou.time,
                },
                "encoded": h(&encode(iou)),
                "rest_encoded": h(&rest),
                "digest": h(&iou.digest().0),
                "statement_encoded": h(&statement.signed_bytes()),
                "signing_input": signing_input(tags::SPEND, &statement.signed_bytes()),
                "signature": h(&iou.sig.0),
                "spend_id": h(&iou.spend_id().0),
                "iou_id": h(&iou.id().0),
            }),
        );
        assert_eq!(iou.verify(&alice.public()), Ok(()));
    }
    assert_eq!(iou.prev, first.spend_id());

    let notice: SpendNotice = iou.notice();
    check(
        "spend_notice",
        &notice,
        json!({
            "fields": {
                "version": notice.version, "allowance": h(&notice.allowance.0),
                "counter": notice.counter, "digest": h(&notice.digest.0),
            },
            "encoded": h(&encode(&notice)),
            "signature": h(&notice.sig.0),
            "spend_id": h(&notice.id().0),
        }),
    );

    let ack = PaymentAck::sign(&bob, iou.id(), T0 + 2);
    check(
        "payment_ack",
        &ack,
        signed(
            &ack,
            &json!({ "version": ack.body().version, "iou": h(&ack.body().iou.0), "accepted_at": ack.body().accepted_at }),
        ),
    );
    assert_eq!(ack.verify(&bob.public()), Ok(()));

    // A clone of Alice's wallet spends counter 2 again, for Carol.
    let carol = testkit::device(3);
    let mut clone = testkit::wallet([cert.clone()]);
    testkit::pay(&mut clone, &alice, &testkit::request(&bob, 300, 0x01));
    let forked = testkit::pay(&mut clone, &alice, &testkit::request(&carol, 900, 0x77));
    let proof = FraudProof::new(cert.clone(), iou.notice(), forked.notice()).expect("a fork");
    check(
        "fraud_proof",
        &proof,
        json!({
            "encoded": h(&encode(&proof)),
            "first_digest": h(&proof.first.digest.0),
            "second_digest": h(&proof.second.digest.0),
            "fraud_id": h(&proof.id().0),
        }),
    );
    assert_eq!(proof.verify(&issuer.id()), Ok(()));

    let mut rng = ChaCha20Rng::from_seed([0x42; 32]);
    let record = SealedRecord::seal(
        &iou,
        issuer.id(),
        &issuer.seal_key(),
        T0 + 2,
        T0 + 14 * 86_400,
        &mut rng,
    )
    .expect("valid seal key");
    check(
        "sealed_record",
        &record,
        json!({
            "rng": "ChaCha20Rng::from_seed([0x42; 32]), first use",
            "plaintext": h(&encode(&(1u8, &iou))),
            "aad": h(&encode(&(record.version, &record.id, &record.issuer, record.created, record.expires))),
            "enc": h(&record.enc.0),
            "encoded": h(&encode(&record)),
        }),
    );
    assert_eq!(record.open(&issuer), Ok(iou.clone()));

    let receipt = SettlementReceipt::issue(&issuer, iou.id(), ReceiptStatus::Settled, T0 + 86_400);
    check(
        "settlement_receipt",
        &receipt,
        signed(
            &receipt,
            &json!({ "version": 1, "issuer": h(&issuer.id().0), "record": h(&iou.id().0), "status": 0, "decided_at": T0 + 86_400 }),
        ),
    );
    let rejected = SettlementReceipt::issue(
        &issuer,
        forked.id(),
        ReceiptStatus::Rejected(Reason::CounterConflict),
        T0 + 86_400,
    );
    check(
        "settlement_receipt_rejected",
        &rejected,
        signed(
            &rejected,
            &json!({ "version": 1, "issuer": h(&issuer.id().0), "record": h(&forked.id().0), "status": 15, "decided_at": T0 + 86_400 }),
        ),
    );

    let wreq = meshpay_protocol::WalletRequest::sign(
        &alice,
        issuer.id(),
        meshpay_protocol::WalletAction::Allowance {
            amount: 50_000,
            valid_secs: 7 * 86_400,
        },
        "KES",
        T0 - 86_400,
        meshpay_protocol::Nonce([0x77; 16]),
    );
    let b = wreq.body();
    check(
        "wallet_request",
        &wreq,
        signed(
            &wreq,
            &json!({
                "version": b.version, "device": h(&b.device.0), "issuer": h(&b.issuer.0),
                "action": b.action, "currency": b.currency, "amount": b.amount,
                "valid_secs": b.valid_secs, "time": b.time, "nonce": h(&b.nonce.0),
            }),
        ),
    );
    assert_eq!(wreq.verify(), Ok(()));

    let rev = Revocation::issue(&issuer, cert.id(), RevocationReason::Fraud, T0 + 86_400);
    check(
        "revocation",
        &rev,
        signed(
            &rev,
            &json!({ "version": 1, "issuer": h(&issuer.id().0), "allowance": h(&cert.id().0), "reason": 1, "revoked_at": T0 + 86_400 }),
        ),
    );
}

#[test]
fn mesh_vectors() {
    use meshpay_protocol::bundle::Bundle;
    use meshpay_protocol::store::{BundleStore, Origin, StoreConfig};
    use meshpay_protocol::sync::{self, Session, ids_digest};

    let receipt = testkit::receipt_bundle(1);
    let issuer = testkit::issuer();
    let alice = testkit::device(1);
    let cert = testkit::allowance(&issuer, 1, &alice, 100_000);
    let iou = testkit::pay(
        &mut testkit::wallet([cert.clone()]),
        &alice,
        &testkit::request(&testkit::device(2), 2500, 1),
    );
    let notice = Bundle::notice(cert, iou.notice());
    let meta = |b: &Bundle| {
        let m = b.meta();
        json!({
            "id": h(&m.id.0), "kind": m.kind.code(), "issuer": h(&m.issuer.0),
            "created": m.created, "expires": m.expires, "size": m.size,
            "subject": m.subject.map(|s| h(&s.0)),
        })
    };
    let vector = json!({
        "object": "bundle",
        "receipt": { "encoded": h(receipt.bytes()), "meta": meta(&receipt) },
        "notice": { "encoded": h(notice.bytes()), "meta": meta(&notice) },
        "file": h(&meshpay_protocol::bundle::pack_file([receipt.bytes(), notice.bytes()])),
    });
    for b in [&receipt, &notice] {
        assert_eq!(Bundle::decode(b.bytes()).as_ref(), Ok(b));
        assert_eq!(b.verify(T0), Ok(()));
    }
    frozen("bundle", &vector);

    // Sync: keys, symbol indices, coded symbols, the initiator's first message, a hand-over.
    let salt = 0x0123_4567_89ab_cdef_u64;
    let ids = [receipt.id(), notice.id(), testkit::receipt_bundle(2).id()];
    let keys: Vec<u64> = ids.iter().map(sync::sync_key).collect();
    let mut store = BundleStore::new(StoreConfig::default());
    for b in [&receipt, &notice] {
        store.insert_bundle(b, Origin::Local, 0, T0);
    }
    let (_, open) = Session::initiate(testkit::session_config(1, 2, 1 << 20), &store, salt);
    // The hand-over receipt device 2 signs after taking both bundles from device 1.
    let mut taker = BundleStore::new(StoreConfig::default());
    let (k1, k2) = (testkit::device(1), testkit::device(2));
    let c = sync::contact(
        sync::Party {
            store: &mut store,
            cfg: testkit::session_config(1, 2, 1 << 20),
            key: &k1,
        },
        sync::Party {
            store: &mut taker,
            cfg: testkit::session_config(2, 1, 1 << 20),
            key: &k2,
        },
        salt,
        u32::MAX,
    )
    .expect("honest peers");
    let handover = c.initiator.proof().expect("a hand-over receipt").clone();
    assert_eq!(handover.body().ids, ids_digest(&ids[..2]));
    assert_eq!(handover.verify(), Ok(()));
    let vector = json!({
        "object": "sync",
        "salt": salt,
        "ids": ids.iter().map(|i| h(&i.0)).collect::<Vec<_>>(),
        "keys": keys.iter().map(|k| format!("{k:016x}")).collect::<Vec<_>>(),
        "indices_below_1000": keys.iter().map(|k| sync::symbol_indices(*k, 1000)).collect::<Vec<_>>(),
        "symbols_16": h(&sync::coded_symbols(&keys, 16)),
        "open_encoded": h(&open.encode()),
        "hand_over": signed(&handover, &json!({
            "giver": h(&handover.body().giver.0), "taker": h(&handover.body().taker.0),
            "count": 2, "bytes": handover.body().bytes, "ids": h(&handover.body().ids.0), "at": T0,
        })),
    });
    frozen("sync", &vector);
}
