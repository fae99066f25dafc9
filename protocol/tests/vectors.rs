//! Test vectors: every wire object built from fixed seeds, compared byte for byte with the
//! frozen files in `tests/vectors/`. The files are the interoperability contract of SPEC.md §9.
//!
//! A missing file is written and the test fails, so a vector is never accepted unseen; set
//! `MESHPAY_WRITE_VECTORS=1` to rewrite them all after a deliberate format change.
//!
//! The files also carry every input another implementation needs to rebuild their bytes (seeds,
//! field values, the HPKE ephemeral key material). For the fraud proof, the sealed record, the
//! settlement batches, the bundles and the sync messages, whose inputs are more than one
//! object's field values, the `rebuild_*` functions read the compared file back and rebuild its
//! bytes from the inputs it lists alone, so an input that no longer produces the frozen bytes
//! fails the test.

// Tests that walk through a scenario read best as one function.
#![allow(clippy::too_many_lines)]

mod frozen;

use meshpay_protocol::codec::Blob;
use meshpay_protocol::maxprop::acks;
use meshpay_protocol::objects::{Body, Signed, tags};
use meshpay_protocol::testkit::{self, T0};
use meshpay_protocol::{
    AllowanceBody, AllowanceCert, AllowanceId, DeviceKey, DeviceSecret, FraudProof, Hash, Iou,
    IouDraft, IssuerDescriptor, IssuerId, IssuerSecret, Nonce, PaymentAck, PaymentRequest,
    PrintableKey, Reason, ReceiptBatch, ReceiptStatus, RecordBatch, Revocation, RevocationReason,
    SealedRecord, SettlementReceipt, SpendNotice, Wire, decode, encode,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

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

// ---------------------------------------------------------------------------------------------
// Reading inputs back from the frozen files

/// The frozen file `tests/vectors/<name>.json`, read back after [`frozen`] compared it.
fn load(name: &str) -> Value {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors"))
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).expect("the vector file was just compared");
    serde_json::from_str(&text).expect("vector files are JSON")
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string"))
}

fn bytes(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(text(v, key)).unwrap_or_else(|_| panic!("{key} is hex"))
}

fn fixed<const N: usize>(v: &Value, key: &str) -> [u8; N] {
    bytes(v, key)
        .try_into()
        .unwrap_or_else(|_| panic!("{key} is {N} bytes"))
}

fn int(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is an unsigned integer"))
}

fn small<T: TryFrom<u64>>(v: &Value, key: &str) -> T {
    T::try_from(int(v, key)).unwrap_or_else(|_| panic!("{key} is in range"))
}

/// `SHA-256(tag || 0x00 || message)`, written out from SPEC.md §3.4.
fn tagged_hash(tag: &str, message: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(tag.as_bytes())
        .chain_update([0])
        .chain_update(message)
        .finalize()
        .into()
}

// ---------------------------------------------------------------------------------------------
// Field lists, shared by the files that describe the same kind of object

fn iou_fields(iou: &Iou) -> Value {
    json!({
        "version": iou.version, "allowance": h(&iou.allowance.0),
        "counter": iou.counter, "amount": iou.amount, "total": iou.total,
        "prev": h(&iou.prev.0), "payee": h(&iou.payee.0), "nonce": h(&iou.nonce.0),
        "time": iou.time,
    })
}

fn iou_from_fields(f: &Value, holder: &DeviceSecret) -> Iou {
    assert_eq!(int(f, "version"), 1);
    IouDraft {
        allowance: AllowanceId(fixed(f, "allowance")),
        counter: small(f, "counter"),
        amount: int(f, "amount"),
        total: int(f, "total"),
        prev: Hash(fixed(f, "prev")),
        payee: DeviceKey(fixed(f, "payee")),
        nonce: Nonce(fixed(f, "nonce")),
        time: int(f, "time"),
    }
    .sign(holder)
}

fn cert_fields(cert: &AllowanceCert) -> Value {
    let b = cert.body();
    json!({
        "version": b.version, "id": h(&b.id.0), "issuer": h(&b.issuer.0),
        "holder": h(&b.holder.0), "currency": b.currency, "limit": b.limit,
        "max_payment": b.max_payment, "valid_from": b.valid_from,
        "valid_until": b.valid_until, "settle_by": b.settle_by,
    })
}

fn cert_from_fields(f: &Value, issuer: &IssuerSecret) -> AllowanceCert {
    let cert = AllowanceCert::issue(
        issuer,
        AllowanceBody {
            version: small(f, "version"),
            id: AllowanceId(fixed(f, "id")),
            issuer: IssuerId(fixed(f, "issuer")),
            holder: DeviceKey(fixed(f, "holder")),
            currency: text(f, "currency").to_owned(),
            limit: int(f, "limit"),
            max_payment: int(f, "max_payment"),
            valid_from: int(f, "valid_from"),
            valid_until: int(f, "valid_until"),
            settle_by: int(f, "settle_by"),
        },
    );
    assert_eq!(
        cert.body().issuer.0,
        fixed(f, "issuer"),
        "signed by that issuer"
    );
    cert
}

fn receipt_fields(receipt: &SettlementReceipt) -> Value {
    let b = receipt.body();
    json!({
        "version": b.version, "issuer": h(&b.issuer.0), "record": h(&b.record.0),
        "status": b.status, "decided_at": b.decided_at,
    })
}

fn receipt_from_fields(f: &Value, issuer: &IssuerSecret) -> SettlementReceipt {
    assert_eq!(int(f, "version"), 1);
    assert_eq!(issuer.id().0, fixed(f, "issuer"), "signed by that issuer");
    SettlementReceipt::issue(
        issuer,
        Hash(fixed(f, "record")),
        ReceiptStatus::from_code(small(f, "status")).expect("a known status"),
        int(f, "decided_at"),
    )
}

fn issuer_from(v: &Value, key: &str) -> IssuerSecret {
    IssuerSecret::from_bytes(&fixed(v, key))
}

fn device_from(v: &Value, key: &str) -> DeviceSecret {
    DeviceSecret::from_seed(&fixed(v, key))
}

// ---------------------------------------------------------------------------------------------
// HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, written
// out step by step so that the sealed record's intermediate values can be published and checked

const KEM_SUITE: &[u8] = b"KEM\x00\x20";
const HPKE_SUITE: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x03";

fn hmac_sha256(key: &[u8], message: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new().chain_update(block.map(|b| b ^ 0x36));
    for part in message {
        inner.update(part);
    }
    Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner.finalize())
        .finalize()
        .into()
}

fn labeled_extract(suite: &[u8], salt: &[u8], label: &str, ikm: &[u8]) -> [u8; 32] {
    hmac_sha256(salt, &[b"HPKE-v1", suite, label.as_bytes(), ikm])
}

fn labeled_expand<const L: usize>(
    suite: &[u8],
    prk: &[u8; 32],
    label: &str,
    info: &[u8],
) -> [u8; L] {
    let length = u16::try_from(L).expect("short output").to_be_bytes();
    let labeled = [&length[..], b"HPKE-v1", suite, label.as_bytes(), info].concat();
    let mut out = Vec::with_capacity(L + 32);
    let mut block: Vec<u8> = Vec::new();
    let mut counter = 1u8;
    while out.len() < L {
        block = hmac_sha256(prk, &[&block, &labeled, &[counter]]).to_vec();
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(L);
    out.try_into().expect("L bytes")
}

/// The values of one single-shot HPKE seal, from the ephemeral key's `ikm` on.
#[derive(Debug, PartialEq, Eq)]
struct HpkeTrace {
    /// `skE`: `DeriveKeyPair(ikm)`'s secret key.
    ephemeral_secret: [u8; 32],
    /// `pkE`, which is `enc`.
    enc: [u8; 32],
    shared_secret: [u8; 32],
    key: [u8; 32],
    base_nonce: [u8; 12],
}

fn hpke_trace(ikm: &[u8; 32], recipient: &[u8; 32], info: &[u8]) -> HpkeTrace {
    // DeriveKeyPair (RFC 9180 §7.1.3).
    let dkp_prk = labeled_extract(KEM_SUITE, b"", "dkp_prk", ikm);
    let ephemeral_secret = labeled_expand::<32>(KEM_SUITE, &dkp_prk, "sk", b"");
    let sk = x25519_dalek::StaticSecret::from(ephemeral_secret);
    let enc = x25519_dalek::PublicKey::from(&sk).to_bytes();
    // Encap (§4.1).
    let dh = sk
        .diffie_hellman(&x25519_dalek::PublicKey::from(*recipient))
        .to_bytes();
    let eae_prk = labeled_extract(KEM_SUITE, b"", "eae_prk", &dh);
    let shared_secret = labeled_expand::<32>(
        KEM_SUITE,
        &eae_prk,
        "shared_secret",
        &[enc, *recipient].concat(),
    );
    // KeySchedule, base mode (§5.1).
    let psk_id_hash = labeled_extract(HPKE_SUITE, b"", "psk_id_hash", b"");
    let info_hash = labeled_extract(HPKE_SUITE, b"", "info_hash", info);
    let context = [&[0u8][..], &psk_id_hash, &info_hash].concat();
    let secret = labeled_extract(HPKE_SUITE, &shared_secret, "secret", b"");
    HpkeTrace {
        ephemeral_secret,
        enc,
        shared_secret,
        key: labeled_expand(HPKE_SUITE, &secret, "key", &context),
        base_nonce: labeled_expand(HPKE_SUITE, &secret, "base_nonce", &context),
    }
}

/// The ChaCha20 (RFC 8439) keystream for `key` and a 12-byte `nonce` from block 1 on, XORed
/// into `data`: what ChaCha20-Poly1305 does to the plaintext. rand_chacha's generator is
/// ChaCha20 with a 64-bit block counter and a 64-bit stream id; RFC 8439's 32-bit counter
/// and first nonce word together are that 64-bit counter.
fn chacha20_from_block_1(key: &[u8; 32], nonce: &[u8; 12], data: &[u8]) -> Vec<u8> {
    let mut rng = ChaCha20Rng::from_seed(*key);
    let first = u32::from_le_bytes(nonce[..4].try_into().expect("4 bytes"));
    rng.set_stream(u64::from_le_bytes(nonce[4..].try_into().expect("8 bytes")));
    rng.set_word_pos(u128::from((u64::from(first) << 32) | 1) * 16);
    let mut stream = vec![0u8; data.len()];
    rng.fill_bytes(&mut stream);
    data.iter().zip(stream).map(|(d, k)| d ^ k).collect()
}

/// A generator that hands out exactly the given bytes, and counts what was taken.
struct Replay {
    bytes: Vec<u8>,
    taken: usize,
}

impl RngCore for Replay {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let end = self.taken + dest.len();
        dest.copy_from_slice(
            self.bytes
                .get(self.taken..end)
                .expect("sealing draws only the ephemeral key's ikm"),
        );
        self.taken = end;
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for Replay {}

#[test]
fn hpke_steps_match_rfc_9180() {
    // RFC 9180 appendix A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, base
    // mode, and its first encryption.
    let hx = |s: &str| hex::decode(s).expect("hex");
    let ikm: [u8; 32] = hx("909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b")
        .try_into()
        .expect("32 bytes");
    let recipient: [u8; 32] =
        hx("4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a")
            .try_into()
            .expect("32 bytes");
    let trace = hpke_trace(
        &ikm,
        &recipient,
        &hx("4f6465206f6e2061204772656369616e2055726e"),
    );
    assert_eq!(
        h(&trace.ephemeral_secret),
        "f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600"
    );
    assert_eq!(
        h(&trace.enc),
        "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a"
    );
    assert_eq!(
        h(&trace.shared_secret),
        "0bbe78490412b4bbea4812666f7916932b828bba79942424abb65244930d69a7"
    );
    assert_eq!(
        h(&trace.key),
        "ad2744de8e17f4ebba575b3f5f5a8fa1f69c2a07f6e7500bc60ca6e3e3ec1c91"
    );
    assert_eq!(h(&trace.base_nonce), "5c4d98150661b848853b547f");
    let ct = hx(
        "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28",
    );
    assert_eq!(
        h(&chacha20_from_block_1(
            &trace.key,
            &trace.base_nonce,
            &ct[..ct.len() - 16]
        )),
        "4265617574792069732074727574682c20747275746820626561757479"
    );
}

// ---------------------------------------------------------------------------------------------
// Rebuilding vectors from the inputs their files give

/// `fraud_proof.json`: both IOUs from their fields and the holder's seed, the notices cut from
/// them, the proof from the certificate and the notices in digest order.
fn rebuild_fraud_proof(v: &Value) {
    let holder = device_from(v, "holder_seed");
    let cert: AllowanceCert = decode(&bytes(v, "cert")).expect("the certificate decodes");
    let mut notices = Vec::new();
    for name in ["spent_iou", "forked_iou"] {
        let iou = iou_from_fields(&v[name]["fields"], &holder);
        assert_eq!(h(&encode(&iou)), text(&v[name], "encoded"), "{name}");
        notices.push(iou.notice());
    }
    assert_eq!(
        h(&device_from(v, "carol_seed").public().0),
        text(&v["forked_iou"]["fields"], "payee"),
        "the forked IOU pays Carol"
    );
    let (a, b) = (notices[0].clone(), notices[1].clone());
    let first = if a.digest < b.digest { &a } else { &b };
    let second = if a.digest < b.digest { &b } else { &a };
    assert_eq!(h(&encode(first)), text(v, "first_notice"));
    assert_eq!(h(&encode(second)), text(v, "second_notice"));
    assert_eq!(h(&first.digest.0), text(v, "first_digest"));
    assert_eq!(h(&second.digest.0), text(v, "second_digest"));
    // [1, cert, first, second], written out.
    let by_hand = [
        &[0x84, 0x01][..],
        &bytes(v, "cert"),
        &encode(first),
        &encode(second),
    ]
    .concat();
    assert_eq!(h(&by_hand), text(v, "encoded"));
    let proof = FraudProof::new(cert, a, b).expect("a fork");
    assert_eq!(h(&encode(&proof)), text(v, "encoded"));
    assert_eq!(
        h(&tagged_hash(tags::FRAUD_ID, &by_hand)),
        text(v, "fraud_id")
    );
}

/// `sealed_record.json`: the record from the IOU, the header fields and the ephemeral key's
/// `ikm`, and every HPKE step from that `ikm` on.
fn rebuild_sealed_record(v: &Value) {
    let issuer = issuer_from(v, "issuer_secret");
    assert_eq!(h(&issuer.id().0), text(v, "issuer"));
    assert_eq!(h(&issuer.seal_key().0), text(v, "seal_key"));
    assert_eq!(text(v, "info"), h(b"meshpay/v1/sealed-record"));
    let iou: Iou = decode(&bytes(v, "iou")).expect("the IOU decodes");
    // The generator's first 32 bytes are the ikm.
    let mut ikm = [0u8; 32];
    ChaCha20Rng::from_seed(fixed(v, "rng_seed")).fill_bytes(&mut ikm);
    assert_eq!(h(&ikm), text(v, "ikm"));
    // Plaintext [1, IOU] and aad [1, id, issuer, created, expires], written out.
    assert_eq!(
        h(&[&[0x82, 0x01][..], &bytes(v, "iou")].concat()),
        text(v, "plaintext")
    );
    let mut aad = vec![0x85, 0x01, 0x58, 0x20];
    aad.extend_from_slice(&tagged_hash(tags::IOU_ID, &bytes(v, "iou")));
    aad.extend_from_slice(&[0x58, 0x20]);
    aad.extend_from_slice(&issuer.id().0);
    aad.push(0x1a);
    aad.extend_from_slice(&small::<u32>(v, "created").to_be_bytes());
    aad.push(0x1a);
    aad.extend_from_slice(&small::<u32>(v, "expires").to_be_bytes());
    assert_eq!(h(&aad), text(v, "aad"));
    // Every HPKE step from the ikm.
    let trace = hpke_trace(&fixed(v, "ikm"), &fixed(v, "seal_key"), &bytes(v, "info"));
    assert_eq!(
        trace,
        HpkeTrace {
            ephemeral_secret: fixed(v, "ephemeral_secret"),
            enc: fixed(v, "enc"),
            shared_secret: fixed(v, "shared_secret"),
            key: fixed(v, "key"),
            base_nonce: fixed(v, "base_nonce"),
        }
    );
    let ciphertext = bytes(v, "ciphertext");
    assert_eq!(ciphertext.len(), bytes(v, "plaintext").len() + 16);
    assert_eq!(
        h(&chacha20_from_block_1(
            &trace.key,
            &trace.base_nonce,
            &ciphertext[..ciphertext.len() - 16]
        )),
        text(v, "plaintext")
    );
    // Sealing with exactly the ikm as randomness gives the frozen record.
    let mut replay = Replay {
        bytes: fixed::<32>(v, "ikm").to_vec(),
        taken: 0,
    };
    let record = SealedRecord::seal(
        &iou,
        issuer.id(),
        &issuer.seal_key(),
        int(v, "created"),
        int(v, "expires"),
        &mut replay,
    )
    .expect("valid seal key");
    assert_eq!(
        replay.taken, 32,
        "sealing draws the 32-byte ikm and nothing else"
    );
    assert_eq!(h(&record.ciphertext.0), text(v, "ciphertext"));
    assert_eq!(h(&encode(&record)), text(v, "encoded"));
    assert_eq!(record.open(&issuer), Ok(iou));
}

/// The head of a CBOR byte string of `len` bytes (SPEC.md §2.1, rule 2).
fn bstr_head(len: usize) -> Vec<u8> {
    match u16::try_from(len) {
        Ok(n @ 0..=23) => vec![0x40 | u8::try_from(n).expect("small")],
        Ok(n @ 24..=255) => vec![0x58, u8::try_from(n).expect("one byte")],
        Ok(n) => [&[0x59][..], &n.to_be_bytes()].concat(),
        Err(_) => unreachable!("batch elements here are short"),
    }
}

/// `settlement_batch.json`: both batches written out byte by byte from their elements.
fn rebuild_settlement_batch(v: &Value) {
    let upload = &v["record_batch"];
    let records = upload["records"].as_array().expect("records is a list");
    let mut by_hand = vec![0x80 | u8::try_from(records.len()).expect("a short list")];
    for r in records {
        let r = hex::decode(r.as_str().expect("hex")).expect("hex");
        by_hand.extend(bstr_head(r.len()));
        by_hand.extend(r);
    }
    assert_eq!(h(&by_hand), text(upload, "encoded"));
    let answer = &v["receipt_batch"];
    let receipts = answer["receipts"].as_array().expect("receipts is a list");
    assert_eq!(receipts.len(), records.len(), "one answer per upload");
    let mut by_hand = vec![0x80 | u8::try_from(receipts.len()).expect("a short list")];
    for r in receipts {
        if let Some(r) = r.as_str() {
            // The receipt's own encoding, nested as it is: no byte-string head.
            by_hand.extend(hex::decode(r).expect("hex"));
        } else {
            assert!(r.is_null());
            by_hand.push(0xf6);
        }
    }
    assert_eq!(h(&by_hand), text(answer, "encoded"));
}

/// `bundle.json`: the receipt, the certificate and the IOU from their fields and seeds, each
/// bundle `[1, kind, body]` written out, its id, metadata and the bundle file.
fn rebuild_bundles(v: &Value) {
    use meshpay_protocol::bundle::{Bundle, Content};
    let issuer = issuer_from(&v["seeds"], "issuer_secret");
    let holder = device_from(&v["seeds"], "holder_seed");
    let (r, n) = (&v["receipt"], &v["notice"]);
    let receipt = receipt_from_fields(&r["fields"], &issuer);
    assert_eq!(h(&encode(&receipt)), text(r, "body"));
    let cert = cert_from_fields(&n["cert_fields"], &issuer);
    let iou = iou_from_fields(&n["iou_fields"], &holder);
    // [1, cert, notice]
    let body = [&[0x83, 0x01][..], &encode(&cert), &encode(&iou.notice())].concat();
    assert_eq!(h(&body), text(n, "body"));
    let mut file = b"MESHPAY-BUNDLES\x01".to_vec();
    for (b, kind, bundle) in [
        (r, 2u8, Bundle::new(Content::Receipt(receipt))),
        (n, 3u8, Bundle::notice(cert, iou.notice())),
    ] {
        let body = bytes(b, "body");
        let by_hand = [&[0x83, 0x01, kind][..], &bstr_head(body.len()), &body].concat();
        assert_eq!(h(&by_hand), text(b, "encoded"));
        assert_eq!(h(bundle.bytes()), text(b, "encoded"));
        let meta = &b["meta"];
        assert_eq!(
            h(&tagged_hash("meshpay/v1/bundle", &by_hand)),
            text(meta, "id")
        );
        assert_eq!(int(meta, "kind"), u64::from(kind));
        assert_eq!(
            int(meta, "size"),
            u64::try_from(by_hand.len()).expect("short")
        );
        file.extend(u32::try_from(by_hand.len()).expect("short").to_be_bytes());
        file.extend(&by_hand);
    }
    assert_eq!(h(&file), text(v, "file"));
    let (rf, rm) = (&r["fields"], &r["meta"]);
    assert_eq!(text(rm, "issuer"), text(rf, "issuer"));
    assert_eq!(int(rm, "created"), int(rf, "decided_at"));
    assert_eq!(int(rm, "expires"), int(rf, "decided_at") + 30 * 86_400);
    assert_eq!(text(rm, "subject"), text(rf, "record"));
    let (cf, nm) = (&n["cert_fields"], &n["meta"]);
    assert_eq!(text(nm, "issuer"), text(cf, "issuer"));
    assert_eq!(int(nm, "created"), int(cf, "valid_from"));
    assert_eq!(int(nm, "expires"), int(cf, "settle_by"));
    assert!(nm["subject"].is_null());
}

/// SplitMix64 (SPEC.md §11.3).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The coded-symbol indices of `key` below `below` (SPEC.md §11.3).
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn symbol_indices(key: u64, below: u64) -> Vec<u64> {
    let (mut state, mut index, mut out) = (key, 0u64, Vec::new());
    while index < below {
        out.push(index);
        let u = ((splitmix(&mut state) >> 11) as f64 + 1.0) / 9_007_199_254_740_992.0;
        let gap = ((index as f64 + 1.5) * (1.0 / u.sqrt() - 1.0)).ceil();
        index += (gap as u64).max(1);
    }
    out
}

/// The first `n` coded symbols of `keys`, packed (SPEC.md §11.3).
fn coded_symbols(keys: &[u64], n: u64) -> Vec<u8> {
    let mut cells = vec![(0i64, 0u64, 0u64); usize::try_from(n).expect("few")];
    for &key in keys {
        let mut state = key ^ 0x6D65_7368_7061_7921;
        let check = splitmix(&mut state);
        for i in symbol_indices(key, n) {
            let cell = &mut cells[usize::try_from(i).expect("below n")];
            *cell = (cell.0 + 1, cell.1 ^ key, cell.2 ^ check);
        }
    }
    let mut out = Vec::new();
    for (count, key_sum, check_sum) in cells {
        out.extend(key_sum.to_le_bytes());
        out.extend(check_sum.to_le_bytes());
        let mut z = u64::from_ne_bytes(((count << 1) ^ (count >> 63)).to_ne_bytes());
        while z >= 0x80 {
            out.push(u8::try_from(z & 0x7f).expect("7 bits") | 0x80);
            z >>= 7;
        }
        out.push(u8::try_from(z).expect("7 bits"));
    }
    out
}

/// `sync.json`: the bundles (the third from its receipt fields), their ids and keys, symbol
/// indices and symbols, the `open` message from its fields, and the hand-over receipt from its
/// fields and the taker's seed.
fn rebuild_sync(v: &Value, bundle_vector: &Value) {
    use ed25519_dalek::Signer as _;
    use meshpay_protocol::sync::{HandOver, HandOverBody, SyncMessage};
    let seeds = &v["seeds"];
    let list = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} is a list"))
            .iter()
            .map(|x| x.as_str().expect("a string").to_owned())
            .collect()
    };
    let bundles: Vec<Vec<u8>> = list("bundles")
        .iter()
        .map(|b| hex::decode(b).expect("hex"))
        .collect();
    assert_eq!(h(&bundles[0]), text(&bundle_vector["receipt"], "encoded"));
    assert_eq!(h(&bundles[1]), text(&bundle_vector["notice"], "encoded"));
    let third = encode(&receipt_from_fields(
        &v["third_receipt_fields"],
        &issuer_from(seeds, "issuer_secret"),
    ));
    let by_hand = [&[0x83, 0x01, 0x02][..], &bstr_head(third.len()), &third].concat();
    assert_eq!(by_hand, bundles[2]);

    let ids: Vec<[u8; 32]> = bundles
        .iter()
        .map(|b| tagged_hash("meshpay/v1/bundle", b))
        .collect();
    assert_eq!(ids.iter().map(|i| h(i)).collect::<Vec<_>>(), list("ids"));
    let keys: Vec<u64> = ids
        .iter()
        .map(|id| {
            splitmix(&mut u64::from_le_bytes(
                id[..8].try_into().expect("8 bytes"),
            ))
        })
        .collect();
    assert_eq!(
        keys.iter().map(|k| format!("{k:016x}")).collect::<Vec<_>>(),
        list("keys")
    );
    let indices: Vec<Vec<u64>> = keys.iter().map(|k| symbol_indices(*k, 1000)).collect();
    assert_eq!(json!(indices), v["indices_below_1000"]);
    assert_eq!(h(&coded_symbols(&keys, 16)), text(v, "symbols_16"));

    // The initiator holds the first two bundles: at most 64, so it lists their keys, ascending.
    let o = &v["open_fields"];
    let mut held = keys[..2].to_vec();
    held.sort_unstable();
    let packed: Vec<u8> = held.iter().flat_map(|k| k.to_le_bytes()).collect();
    assert_eq!(h(&packed), text(o, "keys"));
    assert_eq!(int(o, "salt"), int(v, "salt"));
    assert_eq!(int(o, "count"), 2);
    assert_eq!(o["gateway_for"], json!([]));
    assert_eq!(o["bundles"], json!([]));
    assert!(o["handover"].is_null());
    let open = SyncMessage {
        version: small(o, "version"),
        step: small(o, "step"),
        salt: int(o, "salt"),
        count: small(o, "count"),
        gateway_for: Vec::new(),
        symbols: Blob(bytes(o, "symbols")),
        keys: Blob(packed),
        last: o["last"].as_bool().expect("last is a boolean"),
        bundles: Vec::new(),
        done: o["done"].as_bool().expect("done is a boolean"),
        handover: None,
        room: int(o, "room"),
        predictions: Blob(bytes(o, "predictions")),
        likelihoods: Blob(bytes(o, "likelihoods")),
        acks: Blob(bytes(o, "acks")),
    };
    assert_eq!(h(&open.encode()), text(v, "open_encoded"));
    // Under PRoPHET, an initiator that met device 2 once sends its vector: device 2's
    // endpoint (the first 8 bytes of a tagged hash of its key) and 0.75 · 2^32.
    let taker = device_from(seeds, "taker_seed").public();
    let endpoint = u64::from_le_bytes(
        tagged_hash(tags::PROPHET_DEVICE, &taker.0)[..8]
            .try_into()
            .expect("8 bytes"),
    );
    assert_eq!(
        format!("{endpoint:016x}"),
        text(v, "prophet_device_2_endpoint")
    );
    let mut predictions = endpoint.to_le_bytes().to_vec();
    predictions.extend(0xC000_0000_u32.to_le_bytes());
    let prophet_open = SyncMessage {
        predictions: Blob(predictions),
        ..open.clone()
    };
    assert_eq!(h(&prophet_open.encode()), text(v, "prophet_open_encoded"));
    // Under MaxProp, an initiator that met device 2 once sends its own vector: its device
    // endpoint, age 0, one entry, device 2's endpoint with likelihood 1 (2^16 − 1 units).
    let giver = device_from(seeds, "giver_seed").public();
    let giver_endpoint = u64::from_le_bytes(
        tagged_hash(tags::PROPHET_DEVICE, &giver.0)[..8]
            .try_into()
            .expect("8 bytes"),
    );
    let mut likelihoods = giver_endpoint.to_le_bytes().to_vec();
    likelihoods.extend(0u32.to_le_bytes());
    likelihoods.push(1);
    likelihoods.extend(endpoint.to_le_bytes());
    likelihoods.extend(u16::MAX.to_le_bytes());
    let maxprop_open = SyncMessage {
        likelihoods: Blob(likelihoods),
        ..open
    };
    assert_eq!(h(&maxprop_open.encode()), text(v, "maxprop_open_encoded"));

    // The taker (device 2) took both bundles from the giver (device 1).
    let mut taken = ids[..2].to_vec();
    taken.sort_unstable();
    let ids_input = taken.concat();
    assert_eq!(h(&ids_input), text(v, "hand_over_ids_input"));
    let (ho, f) = (&v["hand_over"], &v["hand_over"]["fields"]);
    assert_eq!(
        h(&tagged_hash(tags::HAND_OVER_IDS, &ids_input)),
        text(f, "ids")
    );
    assert_eq!(
        int(f, "bytes"),
        u64::try_from(bundles[0].len() + bundles[1].len()).expect("short")
    );
    assert_eq!(
        h(&device_from(seeds, "giver_seed").public().0),
        text(f, "giver")
    );
    assert_eq!(
        h(&device_from(seeds, "taker_seed").public().0),
        text(f, "taker")
    );
    let body = HandOverBody {
        version: small(f, "version"),
        giver: DeviceKey(fixed(f, "giver")),
        taker: DeviceKey(fixed(f, "taker")),
        count: small(f, "count"),
        bytes: int(f, "bytes"),
        ids: Hash(fixed(f, "ids")),
        at: int(f, "at"),
    };
    let input = [tags::HAND_OVER.as_bytes(), &[0], &encode(&body)].concat();
    assert_eq!(h(&input), text(ho, "signing_input"));
    let sig = ed25519_dalek::SigningKey::from_bytes(&fixed(seeds, "taker_seed"))
        .sign(&input)
        .to_bytes();
    assert_eq!(h(&sig), text(ho, "signature"));
    let handover = HandOver::from_parts(body, meshpay_protocol::Signature(sig));
    assert_eq!(h(&encode(&handover)), text(ho, "encoded"));
    assert_eq!(handover.verify(), Ok(()));

    // The MaxProp acknowledgement: device 2 signs the bundle id; on the wire, id ‖ signature.
    let a = &v["maxprop_ack"];
    let id = fixed::<32>(a, "id");
    assert_eq!(text(a, "id"), list("ids")[0].as_str());
    let input = [tags::MAXPROP_ACK.as_bytes(), &[0], &id].concat();
    assert_eq!(h(&input), text(a, "signing_input"));
    let sig = ed25519_dalek::SigningKey::from_bytes(&fixed(seeds, "taker_seed"))
        .sign(&input)
        .to_bytes();
    assert_eq!(h(&sig), text(a, "signature"));
    assert_eq!(h(&[id.as_slice(), &sig].concat()), text(a, "encoded"));
    let ack = acks::Ack {
        id: Hash(id),
        sig: meshpay_protocol::Signature(sig),
    };
    assert_eq!(acks::unpack(&bytes(a, "encoded")), Some(vec![ack]));
    assert_eq!(
        ack.verify(&device_from(seeds, "taker_seed").public()),
        Ok(())
    );
}

/// SPEC.md §2.1 rule 3 and §2.3: where `false`, `true` and `null` may appear, and which
/// inputs outside the CBOR subset are `Malformed` or `NotCanonical`.
#[test]
fn simple_values_and_subset_edges() {
    use meshpay_protocol::DecodeError;
    use meshpay_protocol::sync::SyncMessage;
    fn kind(r: &Result<(), DecodeError>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(DecodeError::Malformed { .. }) => "malformed",
            Err(DecodeError::NotCanonical { .. }) => "not canonical",
            Err(_) => "other",
        }
    }
    // The `open` of sync.json ends `… last: f5, bundles: 80, done: f4, handover: f6, room,
    // predictions: 40, likelihoods: 40, acks: 40`; `n` is where the room hint (an unsigned
    // integer) starts.
    let vector = load("sync");
    let open = bytes(&vector, "open_encoded");
    let room = int(&vector["open_fields"], "room");
    let room_len = match room {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    };
    let n = open.len() - 3 - room_len;
    assert_eq!(&open[n - 4..n], [0xf5, 0x80, 0xf4, 0xf6]);
    let sync = |at: usize, byte: u8| {
        let mut m = open.clone();
        m[at] = byte;
        kind(&decode::<SyncMessage>(&m).map(drop))
    };
    assert_eq!(sync(n - 4, 0xf4), "ok", "last = false");
    assert_eq!(sync(n - 4, 0x01), "malformed", "a boolean is not 1");
    assert_eq!(sync(n - 4, 0xf6), "malformed", "a boolean is not null");
    assert_eq!(sync(n - 2, 0xf7), "malformed", "undefined");
    assert_eq!(
        sync(n - 1, 0xf7),
        "malformed",
        "undefined for an absent hand-over"
    );
    assert_eq!(
        sync(n - 1, 0xf4),
        "malformed",
        "false for an absent hand-over"
    );
    assert_eq!(sync(n - 1, 0xe0), "malformed", "an unassigned simple value");
    assert_eq!(sync(n - 1, 0xf9), "malformed", "a float");
    // A tag, and text in place of bytes, parse as what they enclose: NotCanonical.
    let mut tagged = open.clone();
    tagged.insert(3, 0xc1);
    assert_eq!(
        kind(&decode::<SyncMessage>(&tagged).map(drop)),
        "not canonical"
    );
    assert_eq!(
        sync(14, 0x60),
        "not canonical",
        "symbols as an empty text string"
    );
    let receipts = |b: &[u8]| kind(&decode::<ReceiptBatch>(b).map(drop));
    assert_eq!(receipts(&[0x80]), "ok");
    assert_eq!(receipts(&[0x81, 0xf6]), "ok");
    assert_eq!(receipts(&[0x81, 0xf7]), "malformed");
    assert_eq!(receipts(&[0x81, 0xf4]), "malformed");
    let records = |b: &[u8]| kind(&decode::<RecordBatch>(b).map(drop));
    assert_eq!(records(&[0x81, 0x41, 0x00]), "ok");
    assert_eq!(records(&[0x81, 0xf6]), "malformed", "null is no record");
    // A receipt wrapped in a byte string, or a record nested as an array, is refused.
    let batch = load("settlement_batch");
    let receipt = hex::decode(
        batch["receipt_batch"]["receipts"][0]
            .as_str()
            .expect("a receipt"),
    )
    .expect("hex");
    let wrapped = [&[0x81][..], &bstr_head(receipt.len()), &receipt].concat();
    assert_eq!(receipts(&wrapped), "malformed");
    let record = hex::decode(
        batch["record_batch"]["records"][0]
            .as_str()
            .expect("a record"),
    )
    .expect("hex");
    assert_ne!(records(&[&[0x81][..], &record].concat()), "ok");
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
        "object": "keys",
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
    check(
        "allowance_certificate",
        &cert,
        signed(&cert, &cert_fields(&cert)),
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
                "fields": iou_fields(iou),
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
            "holder_seed": h(&[1u8; 32]),
            "carol_seed": h(&[3u8; 32]),
            "cert": h(&encode(&cert)),
            "spent_iou": { "fields": iou_fields(&iou), "encoded": h(&encode(&iou)) },
            "forked_iou": { "fields": iou_fields(&forked), "encoded": h(&encode(&forked)) },
            "first_notice": h(&encode(&proof.first)),
            "second_notice": h(&encode(&proof.second)),
        }),
    );
    assert_eq!(proof.verify(&issuer.id()), Ok(()));
    assert_eq!(
        proof.first,
        iou.notice(),
        "the spent IOU has the smaller digest"
    );
    rebuild_fraud_proof(&load("fraud_proof"));

    let rng_seed = [0x42; 32];
    let mut rng = ChaCha20Rng::from_seed(rng_seed);
    let record = SealedRecord::seal(
        &iou,
        issuer.id(),
        &issuer.seal_key(),
        T0 + 2,
        T0 + 14 * 86_400,
        &mut rng,
    )
    .expect("valid seal key");
    let mut ikm = [0u8; 32];
    ChaCha20Rng::from_seed(rng_seed).fill_bytes(&mut ikm);
    let info = tags::SEALED_RECORD.as_bytes();
    let trace = hpke_trace(&ikm, &issuer.seal_key().0, info);
    check(
        "sealed_record",
        &record,
        json!({
            "rng": "ChaCha20Rng::from_seed([0x42; 32]), first use",
            "plaintext": h(&encode(&(1u8, &iou))),
            "aad": h(&encode(&(record.version, &record.id, &record.issuer, record.created, record.expires))),
            "enc": h(&record.enc.0),
            "encoded": h(&encode(&record)),
            "iou": h(&encode(&iou)),
            "issuer_secret": h(&testkit::ISSUER_SEED),
            "issuer": h(&issuer.id().0),
            "seal_key": h(&issuer.seal_key().0),
            "created": record.created,
            "expires": record.expires,
            "info": h(info),
            "rng_seed": h(&rng_seed),
            "ikm": h(&ikm),
            "ephemeral_secret": h(&trace.ephemeral_secret),
            "shared_secret": h(&trace.shared_secret),
            "key": h(&trace.key),
            "base_nonce": h(&trace.base_nonce),
            "ciphertext": h(&record.ciphertext.0),
        }),
    );
    assert_eq!(record.open(&issuer), Ok(iou.clone()));
    rebuild_sealed_record(&load("sealed_record"));

    let receipt = SettlementReceipt::issue(&issuer, iou.id(), ReceiptStatus::Settled, T0 + 86_400);
    check(
        "settlement_receipt",
        &receipt,
        signed(
            &receipt,
            &json!({ "version": 1, "issuer": h(&issuer.id().0), "record": h(&iou.id().0), "status": 0, "decided_at": T0 + 86_400 }),
        ),
    );
    // A settlement upload of the sealed record and of one byte that is no record, and its answer.
    let upload = RecordBatch(vec![Blob(encode(&record)), Blob(vec![0])]);
    let answer = ReceiptBatch(vec![Some(receipt.clone()), None]);
    let batch_vector = json!({
        "object": "settlement_batch",
        "record_batch": {
            "records": [h(&encode(&record)), "00"],
            "encoded": h(&encode(&upload)),
        },
        "receipt_batch": {
            "receipts": [h(&encode(&receipt)), null],
            "encoded": h(&encode(&answer)),
        },
    });
    frozen("settlement_batch", &batch_vector);
    let frozen_batches = load("settlement_batch");
    assert_eq!(
        decode::<RecordBatch>(&bytes(&frozen_batches["record_batch"], "encoded")),
        Ok(upload)
    );
    assert_eq!(
        decode::<ReceiptBatch>(&bytes(&frozen_batches["receipt_batch"], "encoded")),
        Ok(answer)
    );
    rebuild_settlement_batch(&frozen_batches);

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
    use meshpay_protocol::bundle::{Bundle, Content};
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
    let notice = Bundle::notice(cert.clone(), iou.notice());
    let receipt_of = |b: &Bundle| match b.content() {
        Content::Receipt(r) => r.clone(),
        other => panic!("a receipt bundle, not {other:?}"),
    };
    let body_of = |b: &Bundle| match b.content() {
        Content::Receipt(r) => encode(r),
        Content::Notice(n) => encode(n.as_ref()),
        other => panic!("a receipt or notice bundle, not {other:?}"),
    };
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
        "seeds": {
            "issuer_secret": h(&testkit::ISSUER_SEED),
            "holder_seed": h(&[1u8; 32]),
        },
        "receipt": {
            "encoded": h(receipt.bytes()),
            "meta": meta(&receipt),
            "fields": receipt_fields(&receipt_of(&receipt)),
            "body": h(&body_of(&receipt)),
        },
        "notice": {
            "encoded": h(notice.bytes()),
            "meta": meta(&notice),
            "cert_fields": cert_fields(&cert),
            "iou_fields": iou_fields(&iou),
            "body": h(&body_of(&notice)),
        },
        "file": h(&meshpay_protocol::bundle::pack_file([receipt.bytes(), notice.bytes()])),
    });
    for b in [&receipt, &notice] {
        assert_eq!(Bundle::decode(b.bytes()).as_ref(), Ok(b));
        assert_eq!(b.verify(T0), Ok(()));
    }
    frozen("bundle", &vector);
    rebuild_bundles(&load("bundle"));

    // Sync: keys, symbol indices, coded symbols, the initiator's first message, a hand-over.
    let salt = 0x0123_4567_89ab_cdef_u64;
    let third = testkit::receipt_bundle(2);
    let ids = [receipt.id(), notice.id(), third.id()];
    let keys: Vec<u64> = ids.iter().map(sync::sync_key).collect();
    let mut store = BundleStore::new(StoreConfig::default());
    for b in [&receipt, &notice] {
        store.insert_bundle(b, Origin::Local, 0, T0);
    }
    let (_, open) = Session::initiate(testkit::session_config(1, 2, 1 << 20), &store, salt);
    // The same `open` under PRoPHET, from an initiator that met device 2 once at T0.
    let met = meshpay_protocol::prophet::device_endpoint(&testkit::device(2).public());
    store.predictions_mut().meet(&[met], &[], &[], T0);
    let mut prophet = testkit::session_config(1, 2, 1 << 20);
    prophet.routing = sync::Routing::Prophet;
    let (_, prophet_open) = Session::initiate(prophet, &store, salt);
    // And under MaxProp, from an initiator that met device 2 once at T0.
    store.likelihoods_mut().meet(&[met], T0);
    let mut maxprop = testkit::session_config(1, 2, 1 << 20);
    maxprop.routing = sync::Routing::MaxProp;
    let (_, maxprop_open) = Session::initiate(maxprop, &store, salt);
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
    // Device 2's MaxProp acknowledgement of the first bundle id (the format; a real one
    // names a plain message addressed to device 2).
    let ack = acks::Ack::sign(ids[0], &k2);
    assert_eq!(ack.verify(&k2.public()), Ok(()));
    let mut taken = ids[..2].to_vec();
    taken.sort_unstable();
    let hb = handover.body();
    let vector = json!({
        "object": "sync",
        "seeds": {
            "issuer_secret": h(&testkit::ISSUER_SEED),
            "giver_seed": h(&[1u8; 32]),
            "taker_seed": h(&[2u8; 32]),
        },
        "bundles": [h(receipt.bytes()), h(notice.bytes()), h(third.bytes())],
        "third_receipt_fields": receipt_fields(&receipt_of(&third)),
        "salt": salt,
        "ids": ids.iter().map(|i| h(&i.0)).collect::<Vec<_>>(),
        "keys": keys.iter().map(|k| format!("{k:016x}")).collect::<Vec<_>>(),
        "indices_below_1000": keys.iter().map(|k| sync::symbol_indices(*k, 1000)).collect::<Vec<_>>(),
        "symbols_16": h(&sync::coded_symbols(&keys, 16)),
        "open_encoded": h(&open.encode()),
        "open_fields": {
            "version": open.version, "step": open.step, "salt": open.salt, "count": open.count,
            "gateway_for": open.gateway_for.iter().map(|i| h(&i.0)).collect::<Vec<_>>(),
            "symbols": h(&open.symbols.0), "keys": h(&open.keys.0), "last": open.last,
            "bundles": open.bundles.iter().map(|b| json!([b.copies, h(&b.bundle.0), b.hops])).collect::<Vec<_>>(),
            "done": open.done, "handover": open.handover.as_ref().map(|o| h(&encode(o))),
            "room": open.room, "predictions": h(&open.predictions.0),
            "likelihoods": h(&open.likelihoods.0), "acks": h(&open.acks.0),
        },
        "prophet_device_2_endpoint": format!("{met:016x}"),
        "prophet_open_encoded": h(&prophet_open.encode()),
        "maxprop_open_encoded": h(&maxprop_open.encode()),
        "maxprop_ack": {
            "id": h(&ids[0].0),
            "signing_input": h(&[tags::MAXPROP_ACK.as_bytes(), &[0], &ids[0].0].concat()),
            "signature": h(&ack.sig.0),
            "encoded": h(&acks::pack(&[ack])),
        },
        "hand_over_ids_input": h(&taken.iter().flat_map(|i| i.0).collect::<Vec<_>>()),
        "hand_over": signed(&handover, &json!({
            "version": hb.version, "giver": h(&hb.giver.0), "taker": h(&hb.taker.0),
            "count": 2, "bytes": hb.bytes, "ids": h(&hb.ids.0), "at": T0,
        })),
    });
    frozen("sync", &vector);
    rebuild_sync(&load("sync"), &load("bundle"));
}
