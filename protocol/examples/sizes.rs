//! Prints the encoded sizes of meshpay's wire objects against the size budget, and the
//! signing and verification rates of this machine.
//!
//! ```sh
//! cargo run -p meshpay-protocol --example sizes --release
//! ```

use ed25519_dalek::{Signer, SigningKey, Verifier as _};
use meshpay_protocol::testkit::{self, T0};
use meshpay_protocol::{PaymentAck, SealedRecord, encode};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::hint::black_box;
use std::time::Instant;

fn rate(n: u32, f: impl FnMut(u32)) -> f64 {
    let mut f = f;
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

fn main() {
    let issuer = testkit::issuer();
    let (alice, bob) = (testkit::device(1), testkit::device(2));
    let cert = testkit::allowance(&issuer, 1, &alice, 50_000);
    let mut req = testkit::request(&bob, 1_250, 7);
    req.issuers = vec![issuer.id()];
    req.memo = "2 mangoes".into();
    let mut wallet = testkit::wallet([cert.clone()]);
    let iou = testkit::pay(&mut wallet, &alice, &req);
    let ack = PaymentAck::sign(&bob, iou.id(), T0);
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let record = SealedRecord::seal(
        &iou,
        issuer.id(),
        &issuer.seal_key(),
        T0,
        T0 + 86_400,
        &mut rng,
    )
    .expect("valid key");
    let notice = iou.notice();

    println!("encoded sizes (bytes)");
    let rows = [
        ("IOU with signature", encode(&iou).len(), Some(200)),
        ("allowance certificate", encode(&cert).len(), None),
        ("payment request (1 issuer, memo)", encode(&req).len(), None),
        ("payment ack", encode(&ack).len(), None),
        ("spend notice", encode(&notice).len(), None),
        ("sealed settlement record", encode(&record).len(), None),
        (
            "issuer descriptor",
            encode(&testkit::descriptor(&issuer)).len(),
            None,
        ),
    ];
    for (name, size, target) in rows {
        let t = target.map_or(String::new(), |t| format!("  (target <= {t})"));
        println!("  {name:<42} {size:>5}{t}");
    }
    let exchange =
        encode(&req).len() + encode(&iou).len() + encode(&cert).len() + encode(&ack).len();
    println!(
        "  {:<42} {exchange:>5}  (target <= 1024)",
        "first payment exchange (req+IOU+cert+ack)"
    );
    println!(
        "  {:<42} {:>5}",
        "payment request as text (mpreq1…)",
        req.to_text().len()
    );

    println!("\nrates on this machine (operations per second, one core)");
    let n = 20_000;
    let r = rate(n, |i| {
        let mut r = req.clone();
        r.nonce.0[..4].copy_from_slice(&i.to_le_bytes());
        black_box(wallet.prepare(&alice, &r, T0).expect("pays"));
    });
    println!("  {:<42} {r:>10.0}", "make + sign IOU (Wallet::prepare)");
    let r = rate(n, |_| {
        assert!(black_box(&iou).verify(&alice.public()).is_ok());
    });
    println!("  {:<42} {r:>10.0}", "verify IOU (strict)");
    let r = rate(n, |_| assert!(black_box(&cert).verify().is_ok()));
    println!("  {:<42} {r:>10.0}", "verify allowance certificate");
    let r = rate(n / 4, |_| {
        black_box(
            SealedRecord::seal(&iou, issuer.id(), &issuer.seal_key(), T0, T0 + 1, &mut rng)
                .expect("seals"),
        );
    });
    println!("  {:<42} {r:>10.0}", "seal settlement record (HPKE)");
    let r = rate(n / 4, |_| assert!(black_box(&record).open(&issuer).is_ok()));
    println!("  {:<42} {r:>10.0}", "open settlement record (HPKE)");

    // Raw Ed25519, for comparison: single and batch verification of 64-byte messages.
    let key = SigningKey::from_bytes(&[9; 32]);
    let msgs: Vec<[u8; 64]> = (0..256u32)
        .map(|i| {
            let mut m = [0u8; 64];
            m[..4].copy_from_slice(&i.to_le_bytes());
            m
        })
        .collect();
    let sigs: Vec<_> = msgs.iter().map(|m| key.sign(m)).collect();
    let vk = key.verifying_key();
    let r = rate(n, |i| {
        let k = usize::try_from(i).expect("fits") % msgs.len();
        assert!(vk.verify(&msgs[k], &sigs[k]).is_ok());
    });
    println!("  {:<42} {r:>10.0}", "raw Ed25519 verify");
    let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
    let keys = vec![vk; msgs.len()];
    let batches = 100u32;
    let r = rate(batches, |_| {
        assert!(ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok());
    }) * 256.0;
    println!("  {:<42} {r:>10.0}", "raw Ed25519 batch verify (256/batch)");
}
