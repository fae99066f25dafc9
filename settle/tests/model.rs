//! The server settles like the protocol's model: random upload batches go to the SQLite
//! server and to [`MemoryIssuer`] (the protocol's settlement steps in memory), and after every
//! batch both give the same receipts (byte for byte: receipts are deterministic signatures),
//! the same balances, the same escrow left and the same fraud proofs. The batches mix fresh
//! payments, duplicates within and across batches, double spends from cloned wallets, IOUs
//! under an allowance never issued, IOUs whose signature does not verify, payees without an
//! account, and bytes that are no record at all.
//!
//! `SEED=n` picks another sequence (default 1); `BATCHES=n` runs more batches.

use meshpay_protocol::iou::IouDraft;
use meshpay_protocol::settlement::MemoryIssuer;
use meshpay_protocol::testkit::{DAY, T0, descriptor, issuer, sealed};
use meshpay_protocol::wallet::Wallet;
use meshpay_protocol::{
    AllowanceCert, AllowanceId, DeviceKey, DeviceSecret, Hash, Iou, Nonce, PaymentRequest,
    ReceiptStatus, SettlementReceipt, WalletAction, WalletRequest, encode,
};
use meshpay_settle::db::{self, Db};
use meshpay_settle::{Clock, JunkBudget, Policy, Server};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;

const START_BALANCE: u64 = 5_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A payer: its key, its allowance, its wallet and a clone of it (a restored backup, which
/// reuses counters: every payment from it is a double spend once the original paid too).
struct Payer {
    key: DeviceSecret,
    cert: AllowanceCert,
    wallet: Wallet,
    clone: Wallet,
}

struct World {
    server: Arc<Server>,
    model: MemoryIssuer,
    payers: Vec<Payer>,
    /// Payees with an account, then one without.
    payees: Vec<DeviceSecret>,
    /// Every input uploaded so far, to upload again.
    uploaded: Vec<Vec<u8>>,
    rng: ChaCha20Rng,
    nonce: u64,
    /// How often each answer came (status name, or `none`), to check the batches covered
    /// every case.
    seen: BTreeMap<String, usize>,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new(seed: u64) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("settlement.db").display());
        let db = Db::open(&url).await.expect("the database opens");
        let iss = issuer();
        let mut server = Server::new(
            db,
            issuer(),
            descriptor(&iss),
            Clock::new(true),
            Policy::default(),
        );
        server.junk = JunkBudget::new(u32::MAX, u32::MAX);
        server.clock.set(T0);
        let mut w = Self {
            server: Arc::new(server),
            model: MemoryIssuer::new(iss, false),
            payers: Vec::new(),
            payees: (10..14)
                .map(|n| DeviceSecret::from_seed(&[n; 32]))
                .collect(),
            uploaded: Vec::new(),
            rng: ChaCha20Rng::seed_from_u64(seed),
            nonce: 0,
            seen: BTreeMap::new(),
            _dir: dir,
        };
        let with_account: Vec<DeviceKey> = w.payees[..3].iter().map(DeviceSecret::public).collect();
        for p in with_account {
            w.server.open_account(&p).await.expect("opened");
            w.model.open_account(p);
        }
        for n in 1..4u8 {
            let key = DeviceSecret::from_seed(&[n; 32]);
            let limit = 600 + 200 * u64::from(n);
            let cert = w.allowance(&key, limit).await;
            w.model
                .open_allowance(cert.clone())
                .expect("a fresh allowance");
            w.model.credit(key.public(), START_BALANCE - limit);
            let wallet = meshpay_protocol::testkit::wallet([cert.clone()]);
            w.payers.push(Payer {
                key,
                cert,
                clone: wallet.clone(),
                wallet,
            });
        }
        w
    }

    fn next_nonce(&mut self) -> Nonce {
        self.nonce += 1;
        let mut n = [0u8; 16];
        n[..8].copy_from_slice(&self.nonce.to_be_bytes());
        Nonce(n)
    }

    /// An allowance of `limit` from the server, for a holder with an account of
    /// [`START_BALANCE`].
    async fn allowance(&mut self, key: &DeviceSecret, limit: u64) -> AllowanceCert {
        self.server
            .open_account(&key.public())
            .await
            .expect("opened");
        self.server
            .adjust(&key.public(), START_BALANCE, true, "start")
            .await
            .expect("credited");
        let req = WalletRequest::sign(
            key,
            issuer().id(),
            WalletAction::Allowance {
                amount: limit,
                valid_secs: 7 * DAY,
            },
            "KES",
            T0,
            self.next_nonce(),
        );
        self.server.issue_allowance(&req).await.expect("issued")
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.rng.next_u64() % n as u64).expect("small")
    }

    /// A payment from payer `i`'s wallet (or its clone) to a random payee, if the wallet
    /// still has room.
    fn pay(&mut self, i: usize, from_clone: bool) -> Option<Iou> {
        let k = self.below(self.payees.len());
        let payee = self.payees[k].public();
        let amount = 1 + self.rng.next_u64() % 150;
        let request = PaymentRequest::new(payee, amount, "KES", self.next_nonce(), T0 + 3600);
        let p = &mut self.payers[i];
        let wallet = if from_clone {
            &mut p.clone
        } else {
            &mut p.wallet
        };
        let spend = wallet.prepare(&p.key, &request, T0).ok()?;
        wallet.commit(&spend);
        Some(spend.iou)
    }

    /// One random input.
    fn input(&mut self) -> Vec<u8> {
        let i = self.below(self.payers.len());
        let iss = issuer();
        match self.below(12) {
            // A fresh payment (most inputs).
            0..=4 => match self.pay(i, false) {
                Some(iou) => encode(&sealed(&iss, &iou)),
                None => b"spent".to_vec(),
            },
            // A double spend from the restored backup.
            5 => match self.pay(i, true) {
                Some(iou) => encode(&sealed(&iss, &iou)),
                None => b"spent".to_vec(),
            },
            // Something uploaded before.
            6 | 7 if !self.uploaded.is_empty() => {
                let k = self.below(self.uploaded.len());
                self.uploaded[k].clone()
            }
            // A signature that does not verify: the amount changed after signing.
            8 => match self.pay(i, false) {
                Some(mut iou) => {
                    iou.amount += 1;
                    encode(&sealed(&iss, &iou))
                }
                None => b"spent".to_vec(),
            },
            // An IOU under an allowance the issuer never granted.
            9 => {
                let mut id = [0u8; 16];
                self.rng.fill_bytes(&mut id);
                let iou = IouDraft {
                    allowance: AllowanceId(id),
                    counter: 1,
                    amount: 5,
                    total: 5,
                    prev: Hash::default(),
                    payee: self.payees[0].public(),
                    nonce: self.next_nonce(),
                    time: T0,
                }
                .sign(&self.payers[i].key);
                encode(&sealed(&iss, &iou))
            }
            // A record whose ciphertext was altered (it does not open).
            10 => match self.pay(i, false) {
                Some(iou) => {
                    let mut r = sealed(&iss, &iou);
                    r.ciphertext.0[0] ^= 1;
                    encode(&r)
                }
                None => b"spent".to_vec(),
            },
            // Not a record at all.
            _ => {
                let mut b = vec![0u8; 1 + self.below(40)];
                self.rng.fill_bytes(&mut b);
                b
            }
        }
    }

    /// Uploads one batch to both at `now` and checks they agree.
    async fn settle(&mut self, batch: Vec<Vec<u8>>, now: u64) {
        self.server.clock.set(now);
        let model = self.model.settle(&batch, now);
        let server = self
            .server
            .settle(batch.clone(), None)
            .await
            .expect("the server settles");
        assert_eq!(server.len(), batch.len());
        for (k, (s, m)) in server.iter().zip(&model).enumerate() {
            assert_eq!(
                s.as_ref().map(SettlementReceipt::status),
                m.as_ref().map(SettlementReceipt::status),
                "input {k} of the batch at {now}"
            );
            assert_eq!(s, m, "input {k}: the receipts differ");
            let name = match s.as_ref().map(SettlementReceipt::status) {
                None => "none".to_owned(),
                Some(ReceiptStatus::Settled) => "settled".to_owned(),
                Some(ReceiptStatus::Rejected(r)) => r.name().to_owned(),
            };
            *self.seen.entry(name).or_default() += 1;
        }
        self.uploaded.extend(batch);
        self.same_books().await;
    }

    /// Balances, escrow left and fraud proofs agree.
    async fn same_books(&self) {
        let mut tx = self.server.db.begin().await.expect("a transaction");
        let devices = self
            .payers
            .iter()
            .map(|p| &p.key)
            .chain(&self.payees)
            .map(DeviceSecret::public);
        for d in devices {
            let server = db::balance(&mut tx, &db::accounts::user(&d))
                .await
                .expect("read");
            let model = self.model.balance(&d);
            assert_eq!(server.map(db::u), model, "balance of {}", d.to_hex());
        }
        for p in &self.payers {
            let id = p.cert.id();
            let left = db::balance(&mut tx, &db::accounts::escrow(&id))
                .await
                .expect("read")
                .map(db::u);
            let escrow = self.model.ledger().escrow(&id).expect("opened");
            let model_left = if escrow.released {
                0
            } else {
                p.cert.body().limit - escrow.settled_total
            };
            assert_eq!(left, Some(model_left), "escrow of {id}");
        }
        tx.commit().await.expect("committed");
        let frauds = self
            .server
            .metrics
            .frauds
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(frauds, self.model.fraud_proofs().len() as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_settles_as_the_memory_issuer_does() {
    let seed = env_u64("SEED", 1);
    let batches = env_u64("BATCHES", 40);
    let mut w = World::new(seed).await;
    for b in 0..batches {
        let n = 1 + w.below(24);
        let batch: Vec<Vec<u8>> = (0..n).map(|_| w.input()).collect();
        w.settle(batch, T0 + 10 * b).await;
    }
    // A payee opens an account: the records refused `unknown_payee` settle when uploaded again.
    let late = w.payees[3].public();
    w.server.open_account(&late).await.expect("opened");
    w.model.open_account(late);
    let again = w.uploaded.clone();
    for (k, part) in again.chunks(64).enumerate() {
        w.settle(part.to_vec(), T0 + 10 * batches + k as u64).await;
    }
    for answer in ["settled", "counter_conflict", "unknown_payee", "none"] {
        assert!(
            w.seen.contains_key(answer),
            "seed {seed}: no input was answered {answer}: {:?}",
            w.seen
        );
    }
    assert!(
        !w.model.fraud_proofs().is_empty(),
        "seed {seed}: the batches held no double spend"
    );
    // After settle-by, the unspent escrow goes back to the holders, the same on both.
    let after = T0 + 30 * DAY;
    w.server.clock.set(after);
    let mut released = w.server.release_expired().await.expect("released");
    released.sort();
    let mut model: Vec<(AllowanceId, u64)> = w
        .model
        .release_expired(after)
        .into_iter()
        .map(|r| (r.allowance, r.amount))
        .collect();
    model.sort();
    assert_eq!(released, model);
    w.same_books().await;
}
