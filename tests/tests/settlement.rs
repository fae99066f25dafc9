//! The settlement server as a real process over HTTP: top-up, offline payments, uploads that
//! settle once however often and however concurrently they come, typed rejections, bad
//! bodies, escrow release, conservation of money, and SIGKILL in the middle of a batch.

// Tests that walk through a scenario read best as one function.
#![allow(clippy::too_many_lines)]

use meshpay_protocol::codec::Blob;
use meshpay_protocol::{
    DeviceSecret, FraudProof, IssuerDescriptor, IssuerSecret, Nonce, PrintableKey as _, Reason,
    ReceiptStatus, RecordBatch, SealedRecord, WalletAction, WalletRequest, decode, encode,
};
use meshpay_tests::issuer_api::server_on;
use meshpay_tests::issuer_api::{Admin, Backend, Device, descriptor, now, seal, upload};
use meshpay_tests::on_both_backends;
use meshpay_tests::{ServerOptions, TestNode};
use serde_json::{Value, json};

async fn settle_once(backend: Backend) {
    let root = tempfile::tempdir().unwrap();
    let Some((server, _pg)) = server_on(root.path(), backend, ServerOptions::default()) else {
        return;
    };
    let http = reqwest::Client::new();
    let admin = Admin::of(&server, &http);
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut shopper = TestNode::init(root.path(), "shopper");
    vendor.start(&[]);
    shopper.start(&["--peer", &vendor.tcp_addr()]);
    for n in [&vendor, &shopper] {
        n.json(&["trust", server.descriptor().to_str().unwrap(), "--json"]);
    }
    admin.account(&shopper.device, 10_000).await;
    admin.account(&vendor.device, 0).await;
    admin.conserved(10_000).await;
    let a = shopper.json(&["topup", "5000", "--issuer", &server.url, "--json"]);
    assert_eq!(a["limit"], 5000);
    let r = admin.conserved(10_000).await;
    assert_eq!(r["totals"]["escrow"], 5000);
    assert_eq!(r["totals"]["users"], 5000);

    // Offline: the server plays no part in paying.
    for amount in ["1250", "300"] {
        let p = shopper.json(&["pay", "--to", &vendor.device, "--amount", amount, "--json"]);
        assert_eq!(p["status"], "acked");
    }
    let records: Vec<Vec<u8>> = vendor
        .json(&["records", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(records.len(), 2);

    // Two gateways upload the same records at the same time, then once more each.
    let (a, b) = tokio::join!(
        upload(&http, &server.url, &records),
        upload(&http, &server.url, &records)
    );
    assert_eq!(a, vec![Some(ReceiptStatus::Settled); 2]);
    assert_eq!(a, b);
    assert_eq!(upload(&http, &server.url, &records).await, a);
    let r = admin.conserved(10_000).await;
    assert_eq!(r["records"]["settled"], 2);
    assert_eq!(r["settled_amount"], 1550);
    let statement = admin
        .get(&format!("/admin/accounts/{}", vendor.device))
        .await;
    assert_eq!(statement["balance"], 1550);

    // Both wallets see the receipts.
    shopper.json(&["sync-issuer", "--issuer", &server.url, "--json"]);
    vendor.json(&["sync-issuer", "--issuer", &server.url, "--json"]);
    for n in [&shopper, &vendor] {
        let h = n.history();
        assert_eq!(h.len(), 2);
        assert!(h.iter().all(|p| p["settlement"] == "settled"), "{h:?}");
    }

    // The escrow's remainder returns to the shopper after settle-by (test clock).
    let settle_by = shopper.json(&["allowance", "--json"])[0]["settle_by"]
        .as_u64()
        .unwrap();
    admin
        .post("/admin/clock", json!({"now": settle_by + 1}))
        .await;
    let released = admin.post("/admin/release", json!({})).await;
    assert_eq!(released["released"][0]["returned"], 5000 - 1550);
    let r = admin.conserved(10_000).await;
    assert_eq!(r["totals"]["escrow"], 0);
    assert_eq!(r["totals"]["users"], 10_000);
}

async fn rejections(backend: Backend) {
    let root = tempfile::tempdir().unwrap();
    let Some((server, _pg)) = server_on(root.path(), backend, ServerOptions::default()) else {
        return;
    };
    let http = reqwest::Client::new();
    let admin = Admin::of(&server, &http);
    let issuer: IssuerDescriptor = descriptor(&server);
    let holder = Device {
        key: DeviceSecret::from_seed(&[1; 32]),
    };
    let payee = DeviceSecret::from_seed(&[2; 32]);
    let victim = DeviceSecret::from_seed(&[3; 32]);
    admin.account(&holder.key.public().to_text(), 2_000).await;
    admin.account(&payee.public().to_text(), 0).await;
    admin.account(&victim.public().to_text(), 0).await;
    let cert = holder.allowance(&http, &server, &issuer, 1_000).await;
    let t = now();

    let good = holder.iou(&cert, 1, 400, 400, &payee, t);
    let fork = holder.iou(&cert, 1, 300, 300, &victim, t);
    let over = holder.iou(&cert, 2, 700, 1_100, &payee, t);
    let expired = holder.iou(&cert, 3, 10, 410, &payee, t + 7200);
    let mut tampered = holder.iou(&cert, 4, 10, 420, &payee, t);
    tampered.amount = 11;
    tampered.total = 421;
    let nobody = holder.iou(&cert, 5, 10, 430, &DeviceSecret::from_seed(&[4; 32]), t);
    let unissued = meshpay_protocol::IouDraft {
        allowance: meshpay_protocol::AllowanceId([0xee; 16]),
        counter: 1,
        amount: 10,
        total: 10,
        prev: meshpay_protocol::Hash::default(),
        payee: payee.public(),
        nonce: meshpay_protocol::Nonce([8; 16]),
        time: t,
    }
    .sign(&holder.key);
    let stranger = IssuerSecret::from_bytes(&[0x77; 64]);
    let foreign = encode(
        &SealedRecord::seal(
            &holder.iou(&cert, 6, 10, 440, &payee, t),
            stranger.id(),
            &stranger.seal_key(),
            t,
            t + 10,
            &mut rand_core::OsRng,
        )
        .unwrap(),
    );
    let mut garbled = SealedRecord::seal(
        &holder.iou(&cert, 7, 10, 450, &payee, t),
        issuer.body().issuer,
        &issuer.body().seal_key,
        t,
        t + 10,
        &mut rand_core::OsRng,
    )
    .unwrap();
    garbled.ciphertext.0[5] ^= 1;

    let batch = vec![
        seal(&good, &issuer),
        seal(&fork, &issuer),
        seal(&over, &issuer),
        seal(&expired, &issuer),
        seal(&tampered, &issuer),
        seal(&nobody, &issuer),
        seal(&unissued, &issuer),
        foreign,
        encode(&garbled),
        b"not a record".to_vec(),
    ];
    let got = upload(&http, &server.url, &batch).await;
    // What anyone can make gets no decision and costs the issuer no signature: bytes that
    // do not open (sealed to another issuer, altered), and IOUs that open but that no
    // holder of this issuer signed (tampered, under an allowance it never issued).
    assert_eq!(
        got,
        vec![
            Some(ReceiptStatus::Settled),
            Some(ReceiptStatus::Rejected(Reason::CounterConflict)),
            Some(ReceiptStatus::Rejected(Reason::OverLimit)),
            Some(ReceiptStatus::Rejected(Reason::Expired)),
            None,
            Some(ReceiptStatus::Rejected(Reason::UnknownPayee)),
            None,
            None,
            None,
            None,
        ]
    );
    // Anyone can upload bytes under a settled record's id: the answer is the stored receipt,
    // never a contradicting one. (Receipts for bytes that do not open are not final.)
    let mut impostor = SealedRecord::seal(
        &holder.iou(&cert, 9, 10, 460, &payee, t),
        stranger.id(),
        &stranger.seal_key(),
        t,
        t + 10,
        &mut rand_core::OsRng,
    )
    .unwrap();
    impostor.id = good.id();
    assert_eq!(
        upload(&http, &server.url, &[encode(&impostor)]).await,
        vec![Some(ReceiptStatus::Settled)]
    );
    assert!(!ReceiptStatus::Rejected(Reason::ForeignIssuer).is_final());
    // The fork is proven, and the proof checks out with nothing but the issuer's key.
    let proofs = admin.get("/v1/fraud-proofs").await;
    let proof: FraudProof =
        decode(&hex::decode(proofs["fraud_proofs"][0]["proof"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(proof.verify(&issuer.body().issuer), Ok(()));
    // The loss rule: the victim is repaid 300 from the holder's account (2000 - 1000 escrowed).
    // ... and revokes the allowance, signed, for the mesh to carry.
    let revs = admin.get("/v1/revocations").await;
    let rev: meshpay_protocol::Revocation =
        decode(&hex::decode(revs["revocations"][0]["revocation"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(rev.verify(&issuer.body().issuer), Ok(()));
    assert_eq!(rev.body().allowance, cert.id());
    // The holder reads its own statement with a signed request.
    let req = WalletRequest::sign(
        &holder.key,
        issuer.body().issuer,
        WalletAction::Statement,
        "",
        now(),
        Nonce([3; 16]),
    );
    let r = http
        .post(format!("{}/v1/statement", server.url))
        .header("content-type", "application/cbor")
        .body(encode(&req))
        .send()
        .await
        .unwrap();
    let st: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(st["balance"], 2_000 - 1_000 - 300, "{st}");
    let victim_stmt = admin
        .get(&format!("/admin/accounts/{}", victim.public().to_text()))
        .await;
    assert_eq!(victim_stmt["balance"], 300);
    let before = admin.conserved(2_000).await;

    // Bad bodies: a clear 4xx and nothing changes.
    let post = |ct: &'static str, body: Vec<u8>| {
        let http = http.clone();
        let url = format!("{}/v1/settle", server.url);
        async move {
            http.post(url)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let r = post("application/cbor", vec![0xff, 0x00, 0x13]).await;
    assert_eq!(r.status(), 400);
    assert!(String::from_utf8_lossy(&r.bytes().await.unwrap()).contains("record batch"));
    assert_eq!(post("text/plain", b"hello".to_vec()).await.status(), 415);
    assert_eq!(
        post("application/json", b"{\"records\": 5}".to_vec())
            .await
            .status(),
        400
    );
    assert_eq!(
        post("application/json", b"{\"records\": [\"zz\"]}".to_vec())
            .await
            .status(),
        400
    );
    // An oversized upload, on its own connection (the server closes it after refusing).
    let lone = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = lone
        .post(format!("{}/v1/settle", server.url))
        .header("content-type", "application/cbor")
        .body(vec![0u8; 3 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = http
        .post(format!("{}/v1/allowances", server.url))
        .header("content-type", "application/cbor")
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{}/admin/accounts", server.url))
        .header("content-type", "application/json")
        .body(json!({"device": "x"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let after = admin.conserved(2_000).await;
    assert_eq!(before, after);

    // A wallet request cannot be replayed.
    let req = WalletRequest::sign(
        &holder.key,
        issuer.body().issuer,
        WalletAction::Allowance {
            amount: 10,
            valid_secs: 60,
        },
        "KES",
        now(),
        Nonce([9; 16]),
    );
    let send = || {
        http.post(format!("{}/v1/allowances", server.url))
            .header("content-type", "application/cbor")
            .body(encode(&req))
            .send()
    };
    assert!(send().await.unwrap().status().is_success());
    assert_eq!(send().await.unwrap().status(), 409);
}

async fn sigkill(backend: Backend) {
    let root = tempfile::tempdir().unwrap();
    let Some((mut server, _pg)) = server_on(root.path(), backend, ServerOptions::default()) else {
        return;
    };
    let http = reqwest::Client::new();
    let issuer: IssuerDescriptor = descriptor(&server);
    let holder = Device {
        key: DeviceSecret::from_seed(&[5; 32]),
    };
    let payee = DeviceSecret::from_seed(&[6; 32]);
    {
        let admin = Admin::of(&server, &http);
        admin
            .account(&holder.key.public().to_text(), 1_000_000)
            .await;
        admin.account(&payee.public().to_text(), 0).await;
    }
    let cert = holder.allowance(&http, &server, &issuer, 1_000_000).await;
    let t = now();
    let records: Vec<Vec<u8>> = (1..=1500u32)
        .map(|c| {
            seal(
                &holder.iou(&cert, c, 3, u64::from(c) * 3, &payee, t),
                &issuer,
            )
        })
        .collect();
    // Upload in the background and kill the server while it works.
    let url = server.url.clone();
    let h2 = http.clone();
    let big = records.clone();
    let inflight = tokio::spawn(async move {
        h2.post(format!("{url}/v1/settle"))
            .header("content-type", "application/cbor")
            .body(encode(&RecordBatch(big.into_iter().map(Blob).collect())))
            .send()
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    server.kill();
    let first = inflight.await.unwrap();
    // If an answer came back before the kill, everything in it is kept; otherwise nothing was
    // acknowledged.
    let acked = first.as_ref().is_ok_and(|r| r.status().is_success());
    server.start();
    let admin = Admin::of(&server, &http);
    if acked {
        assert_eq!(
            admin.get("/admin/reconciliation").await["records"]["settled"],
            1500
        );
    }
    let again = upload(&http, &server.url, &records).await;
    assert!(again.iter().all(|r| *r == Some(ReceiptStatus::Settled)));
    let r = admin.conserved(1_000_000).await;
    assert_eq!(r["records"]["settled"], 1500);
    assert_eq!(r["settled_amount"], 4_500);
    assert_eq!(
        admin
            .get(&format!("/admin/accounts/{}", payee.public().to_text()))
            .await["balance"],
        4_500
    );
}

on_both_backends!(
    settle_once,
    top_up_pay_offline_and_settle_once_on_sqlite,
    top_up_pay_offline_and_settle_once_on_postgres
);
on_both_backends!(
    rejections,
    bad_records_and_bodies_on_sqlite,
    bad_records_and_bodies_on_postgres
);
on_both_backends!(
    sigkill,
    sigkill_mid_batch_on_sqlite,
    sigkill_mid_batch_on_postgres
);

/// Several server processes on one PostgreSQL database, the same records uploaded to all of
/// them at once: each settles exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_servers_on_one_postgres_settle_each_record_once() {
    let root = tempfile::tempdir().unwrap();
    let Some((a, _pg)) = server_on(root.path(), Backend::Postgres, ServerOptions::default()) else {
        return;
    };
    let b = a.twin();
    let http = reqwest::Client::new();
    let issuer: IssuerDescriptor = descriptor(&a);
    let holder = Device {
        key: DeviceSecret::from_seed(&[8; 32]),
    };
    let payee = DeviceSecret::from_seed(&[9; 32]);
    let admin = Admin::of(&a, &http);
    admin.account(&holder.key.public().to_text(), 100_000).await;
    admin.account(&payee.public().to_text(), 0).await;
    let cert = holder.allowance(&http, &a, &issuer, 50_000).await;
    let t = now();
    let records: Vec<Vec<u8>> = (1..=300u32)
        .map(|c| {
            seal(
                &holder.iou(&cert, c, 7, u64::from(c) * 7, &payee, t),
                &issuer,
            )
        })
        .collect();
    let (mut first_half, second_half) = (records[..200].to_vec(), records[100..].to_vec());
    first_half.reverse();
    let (r1, r2, r3, r4) = tokio::join!(
        upload(&http, &a.url, &records),
        upload(&http, &b.url, &records),
        upload(&http, &a.url, &second_half),
        upload(&http, &b.url, &first_half),
    );
    for r in [&r1, &r2, &r3, &r4] {
        assert!(r.iter().all(|s| *s == Some(ReceiptStatus::Settled)));
    }
    let rec = admin.conserved(100_000).await;
    assert_eq!(rec["records"]["settled"], 300);
    assert_eq!(rec["settled_amount"], 2_100);
    assert_eq!(
        admin
            .get(&format!("/admin/accounts/{}", payee.public().to_text()))
            .await["balance"],
        2_100
    );
}
