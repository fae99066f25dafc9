//! The wallet's money state in SQLite: keys, trusted issuers, allowances and their counters,
//! IOUs sent and received with their acks and sealed records, open requests, certificates,
//! spend notices and fraud proofs.
//!
//! Durability: WAL journal with `synchronous = FULL`, so a committed transaction survives a
//! power cut. The payer commits the IOU with its counter before sending it; the payee commits
//! the IOU and its sealed record before acking. Every multi-row change is one transaction.

use meshpay_protocol::wallet::{HeldAllowance, Spend, SpendHead};
use meshpay_protocol::{
    AllowanceCert, FraudProof, Hash, Iou, IssuerDescriptor, PaymentAck, PaymentRequest,
    SealedRecord, SpendNotice, Wire, decode, encode,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

/// A storage failure. The operation changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("wallet database: {0}")]
    Sql(#[from] sqlx::Error),
    /// A stored object does not decode: the database was altered or corrupted.
    #[error("wallet database holds a corrupt {0}")]
    Corrupt(&'static str),
    /// A value does not fit the database's signed 64-bit integers.
    #[error("amount {0} is too large for this wallet")]
    TooLarge(u64),
    /// The file holds no wallet (it is empty, truncated or not a wallet database).
    #[error(
        "{0} holds no wallet: it is empty or was truncated. Restore it from a backup, or move it away and run `meshpay init` to make a new wallet"
    )]
    NoWallet(String),
}

type Result<T> = std::result::Result<T, StoreError>;

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE issuers (id BLOB PRIMARY KEY, descriptor BLOB NOT NULL, added_at INTEGER NOT NULL);
     CREATE TABLE allowances (
        id BLOB PRIMARY KEY, cert BLOB NOT NULL, counter INTEGER NOT NULL, total INTEGER NOT NULL,
        last BLOB NOT NULL, retired INTEGER NOT NULL, added_at INTEGER NOT NULL);
     CREATE TABLE sent (
        iou_id BLOB PRIMARY KEY, allowance BLOB NOT NULL, counter INTEGER NOT NULL,
        payee BLOB NOT NULL, nonce BLOB NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL,
        memo TEXT NOT NULL, iou BLOB NOT NULL, created_at INTEGER NOT NULL,
        status TEXT NOT NULL, reason TEXT, ack BLOB,
        UNIQUE (allowance, counter), UNIQUE (payee, nonce));
     CREATE TABLE requests (
        nonce BLOB PRIMARY KEY, request BLOB NOT NULL, created_at INTEGER NOT NULL, paid_by BLOB);
     CREATE TABLE received (
        iou_id BLOB PRIMARY KEY, nonce BLOB NOT NULL UNIQUE, allowance BLOB NOT NULL,
        counter INTEGER NOT NULL, payer BLOB NOT NULL, amount INTEGER NOT NULL,
        currency TEXT NOT NULL, memo TEXT NOT NULL, iou BLOB NOT NULL, record BLOB NOT NULL,
        ack BLOB NOT NULL, received_at INTEGER NOT NULL);
     CREATE TABLE certs (allowance BLOB PRIMARY KEY, cert BLOB NOT NULL);
     CREATE TABLE notices (
        allowance BLOB NOT NULL, counter INTEGER NOT NULL, notice BLOB NOT NULL,
        PRIMARY KEY (allowance, counter));
     CREATE TABLE frauds (allowance BLOB PRIMARY KEY, proof BLOB NOT NULL, found_at INTEGER NOT NULL);",
    // 2: what the issuer decided about each payment (its receipt's status name).
    "ALTER TABLE sent ADD COLUMN settlement TEXT;
     ALTER TABLE received ADD COLUMN settlement TEXT;",
    // 3: which peer asked for a request (NULL: made here), and when it expires.
    "ALTER TABLE requests ADD COLUMN asked_by BLOB;
     ALTER TABLE requests ADD COLUMN expires INTEGER NOT NULL DEFAULT 0;",
    // 4: find pending payments without scanning them all.
    "CREATE INDEX sent_pending ON sent (status, payee);
     CREATE INDEX requests_open ON requests (paid_by, expires);",
    // 5: idempotency keys of payments, and when and how each was answered (a retry of a
    // payment answered by an automatic re-send is not a new payment).
    "ALTER TABLE sent ADD COLUMN idem_key TEXT;
     ALTER TABLE sent ADD COLUMN answered_at INTEGER;
     ALTER TABLE sent ADD COLUMN answered_by TEXT;
     CREATE UNIQUE INDEX sent_idem ON sent (idem_key) WHERE idem_key IS NOT NULL;
     CREATE INDEX requests_asked ON requests (asked_by, paid_by, expires);",
];

pub use meshpay_protocol::device::{AnsweredBy, SentPayment, SentStatus};

fn parse_status(s: &str) -> Result<SentStatus> {
    SentStatus::from_name(s).ok_or(StoreError::Corrupt("payment status"))
}

/// A payment this wallet received.
#[derive(Debug, Clone)]
pub struct ReceivedPayment {
    /// The IOU.
    pub iou: Iou,
    /// The payer's device key (the allowance holder).
    pub payer: meshpay_protocol::DeviceKey,
    /// Currency.
    pub currency: String,
    /// Memo of the request.
    pub memo: String,
    /// The ack sent.
    pub ack: PaymentAck,
    /// When it arrived.
    pub received_at: u64,
    /// The issuer's decision, as stored: `settled` or `rejected: <reason>`.
    pub settlement: Option<String>,
}

/// The wallet database.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

fn i64_of(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::TooLarge(v))
}

fn u64_of(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("negative number"))
}

fn obj<T: Wire>(bytes: &[u8], what: &'static str) -> Result<T> {
    decode(bytes).map_err(|_| StoreError::Corrupt(what))
}

impl Store {
    /// Opens (creating if asked) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path, create: bool) -> Result<Self> {
        if !create && std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            // Touch nothing: opening would turn the empty file into an empty database.
            return Err(StoreError::NoWallet(path.display().to_string()));
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // One connection: every change is serialised, which the wallet rules need anyway.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        let store = Self { pool };
        if !create {
            // Only `init` makes a wallet. A database with no schema here was emptied or
            // truncated: say so, and write nothing into it.
            let version: i64 = sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(&store.pool)
                .await?;
            if version == 0 {
                store.close().await;
                return Err(StoreError::NoWallet(path.display().to_string()));
            }
        }
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&self.pool)
            .await?;
        let start = usize::try_from(version).map_err(|_| StoreError::Corrupt("schema version"))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Reads a meta value.
    pub async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Writes a meta value.
    pub async fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The wallet epoch (0 if never spent).
    pub async fn epoch(&self) -> Result<u64> {
        Ok(match self.meta("epoch").await? {
            Some(b) => u64::from_be_bytes(b.try_into().map_err(|_| StoreError::Corrupt("epoch"))?),
            None => 0,
        })
    }

    /// Persists the outcome of a restore check: the allowances retired and the new epoch.
    pub async fn retire_all(&self, epoch: u64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE allowances SET retired = 1")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ('epoch', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(epoch.to_be_bytes().to_vec())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Trusts an issuer.
    pub async fn add_issuer(&self, d: &IssuerDescriptor, now: u64) -> Result<()> {
        sqlx::query("INSERT INTO issuers (id, descriptor, added_at) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET descriptor = excluded.descriptor")
            .bind(d.body().issuer.0.to_vec())
            .bind(encode(d))
            .bind(i64_of(now)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The trusted issuers.
    pub async fn issuers(&self) -> Result<Vec<IssuerDescriptor>> {
        let rows = sqlx::query("SELECT descriptor FROM issuers ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| obj(&r.get::<Vec<u8>, _>(0), "issuer descriptor"))
            .collect()
    }

    /// Adds an allowance (no-op if present). Returns whether it was new.
    pub async fn add_allowance(&self, cert: &AllowanceCert, now: u64) -> Result<bool> {
        i64_of(cert.body().limit)?;
        let r = sqlx::query("INSERT INTO allowances (id, cert, counter, total, last, retired, added_at) VALUES (?, ?, 0, 0, ?, 0, ?) ON CONFLICT (id) DO NOTHING")
            .bind(cert.id().0.to_vec())
            .bind(encode(cert))
            .bind(Hash::default().0.to_vec())
            .bind(i64_of(now)?)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Every allowance held.
    pub async fn allowances(&self) -> Result<Vec<HeldAllowance>> {
        let rows =
            sqlx::query("SELECT cert, counter, total, last, retired FROM allowances ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let last: Vec<u8> = r.get(3);
                Ok(HeldAllowance {
                    cert: obj(&r.get::<Vec<u8>, _>(0), "allowance certificate")?,
                    head: SpendHead {
                        counter: u32::try_from(r.get::<i64, _>(1))
                            .map_err(|_| StoreError::Corrupt("counter"))?,
                        total: u64_of(r.get(2))?,
                        last: Hash(last.try_into().map_err(|_| StoreError::Corrupt("head"))?),
                    },
                    retired: r.get::<i64, _>(4) != 0,
                })
            })
            .collect()
    }

    /// Commits a spend: the IOU, the allowance's new head and the wallet epoch, in one
    /// transaction. Nothing may be sent before this returns.
    pub async fn commit_spend(
        &self,
        spend: &Spend,
        currency: &str,
        memo: &str,
        idem_key: Option<&str>,
        now: u64,
    ) -> Result<()> {
        let iou = &spend.iou;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO sent (iou_id, allowance, counter, payee, nonce, amount, currency, memo, iou, created_at, status, idem_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)")
            .bind(iou.id().0.to_vec())
            .bind(iou.allowance.0.to_vec())
            .bind(i64::from(iou.counter))
            .bind(iou.payee.0.to_vec())
            .bind(iou.nonce.0.to_vec())
            .bind(i64_of(iou.amount)?)
            .bind(currency)
            .bind(memo)
            .bind(encode(iou))
            .bind(i64_of(now)?)
            .bind(idem_key)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query(
            "UPDATE allowances SET counter = ?, total = ?, last = ? WHERE id = ? AND counter = ?",
        )
        .bind(i64::from(spend.next.counter))
        .bind(i64_of(spend.next.total)?)
        .bind(spend.next.last.0.to_vec())
        .bind(iou.allowance.0.to_vec())
        .bind(i64::from(spend.next.counter - 1))
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            // The stored head moved under us: refuse rather than reuse a counter.
            return Err(StoreError::Corrupt("allowance head"));
        }
        sqlx::query("INSERT INTO meta (key, value) VALUES ('epoch', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(spend.epoch.to_be_bytes().to_vec())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every sent payment, oldest first.
    pub async fn sent(&self) -> Result<Vec<SentPayment>> {
        let rows = sqlx::query(&format!(
            "SELECT {SENT_COLUMNS} FROM sent ORDER BY created_at, counter"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sent_row).collect()
    }

    /// Records the payee's first answer to a sent IOU (later answers, from racing re-sends,
    /// change nothing).
    pub async fn set_sent_outcome(
        &self,
        iou: &Hash,
        status: SentStatus,
        reason: Option<&str>,
        ack: Option<&PaymentAck>,
        by: AnsweredBy,
        now: u64,
    ) -> Result<()> {
        sqlx::query("UPDATE sent SET status = ?, reason = ?, ack = ?, answered_by = ?, answered_at = ? WHERE iou_id = ? AND status = 'pending'")
            .bind(status.name())
            .bind(reason)
            .bind(ack.map(encode))
            .bind(by.name())
            .bind(i64_of(now)?)
            .bind(iou.0.to_vec())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes the unpaid request with `nonce` if `peer` asked for it. Returns whether it did.
    pub async fn close_asked_request(
        &self,
        nonce: &meshpay_protocol::Nonce,
        peer: &meshpay_protocol::DeviceKey,
    ) -> Result<bool> {
        let r = sqlx::query(
            "DELETE FROM requests WHERE nonce = ? AND asked_by = ? AND paid_by IS NULL",
        )
        .bind(nonce.0.to_vec())
        .bind(peer.0.to_vec())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Stores an open payment request, made here or asked for by the peer `asked_by`.
    pub async fn add_request(
        &self,
        req: &PaymentRequest,
        asked_by: Option<&meshpay_protocol::DeviceKey>,
        now: u64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO requests (nonce, request, created_at, asked_by, expires) VALUES (?, ?, ?, ?, ?)")
            .bind(req.nonce.0.to_vec())
            .bind(encode(req))
            .bind(i64_of(now)?)
            .bind(asked_by.map(|d| d.0.to_vec()))
            .bind(i64_of(req.expires)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every unpaid request: the request, who asked for it, when it was made.
    pub async fn unpaid_requests(
        &self,
    ) -> Result<Vec<(PaymentRequest, Option<meshpay_protocol::DeviceKey>, u64)>> {
        let rows = sqlx::query(
            "SELECT request, asked_by, created_at FROM requests WHERE paid_by IS NULL ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let asked_by: Option<Vec<u8>> = r.get(1);
                let asked_by = asked_by
                    .map(|k| {
                        k.try_into()
                            .map(meshpay_protocol::DeviceKey)
                            .map_err(|_| StoreError::Corrupt("request's asker"))
                    })
                    .transpose()?;
                Ok((
                    obj(&r.get::<Vec<u8>, _>(0), "payment request")?,
                    asked_by,
                    u64_of(r.get(2))?,
                ))
            })
            .collect()
    }

    /// Forgets unpaid requests that expired before `before`. Returns how many.
    pub async fn purge_requests(&self, before: u64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM requests WHERE paid_by IS NULL AND expires < ?")
                .bind(i64_of(before)?)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Commits an accepted payment: IOU, sealed record, ack, the request marked paid, the
    /// certificate and the spend notice. Nothing may be acked before this returns.
    pub async fn commit_received(
        &self,
        iou: &Iou,
        cert: &AllowanceCert,
        request: &PaymentRequest,
        record: &SealedRecord,
        ack: &PaymentAck,
        now: u64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO received (iou_id, nonce, allowance, counter, payer, amount, currency, memo, iou, record, ack, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(iou.id().0.to_vec())
            .bind(iou.nonce.0.to_vec())
            .bind(iou.allowance.0.to_vec())
            .bind(i64::from(iou.counter))
            .bind(cert.body().holder.0.to_vec())
            .bind(i64_of(iou.amount)?)
            .bind(&request.currency)
            .bind(&request.memo)
            .bind(encode(iou))
            .bind(encode(record))
            .bind(encode(ack))
            .bind(i64_of(now)?)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE requests SET paid_by = ? WHERE nonce = ?")
            .bind(iou.id().0.to_vec())
            .bind(iou.nonce.0.to_vec())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO certs (allowance, cert) VALUES (?, ?) ON CONFLICT (allowance) DO NOTHING",
        )
        .bind(cert.id().0.to_vec())
        .bind(encode(cert))
        .execute(&mut *tx)
        .await?;
        insert_notice(&mut tx, &iou.notice()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every received payment, oldest first.
    pub async fn received(&self) -> Result<Vec<ReceivedPayment>> {
        let rows = sqlx::query("SELECT iou, payer, currency, memo, ack, received_at, settlement FROM received ORDER BY received_at, rowid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let payer: Vec<u8> = r.get(1);
                Ok(ReceivedPayment {
                    iou: obj(&r.get::<Vec<u8>, _>(0), "IOU")?,
                    payer: meshpay_protocol::DeviceKey(
                        payer.try_into().map_err(|_| StoreError::Corrupt("payer"))?,
                    ),
                    currency: r.get(2),
                    memo: r.get(3),
                    ack: obj(&r.get::<Vec<u8>, _>(4), "payment ack")?,
                    received_at: u64_of(r.get(5))?,
                    settlement: r.get(6),
                })
            })
            .collect()
    }

    /// Every stored certificate of other wallets.
    pub async fn certs(&self) -> Result<Vec<AllowanceCert>> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT cert FROM certs ORDER BY allowance")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|b| obj(b, "allowance certificate"))
            .collect()
    }

    /// Every stored spend notice.
    pub async fn notices(&self) -> Result<Vec<SpendNotice>> {
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT notice FROM notices ORDER BY allowance, counter")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|b| obj(b, "spend notice")).collect()
    }

    /// Stores a fraud proof (the first per allowance is kept). Returns whether it was new.
    pub async fn add_fraud(&self, proof: &FraudProof, now: u64) -> Result<bool> {
        let r = sqlx::query("INSERT INTO frauds (allowance, proof, found_at) VALUES (?, ?, ?) ON CONFLICT (allowance) DO NOTHING")
            .bind(proof.allowance().0.to_vec())
            .bind(encode(proof))
            .bind(i64_of(now)?)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Every fraud proof held, with when it was found.
    pub async fn frauds(&self) -> Result<Vec<(FraudProof, u64)>> {
        let rows = sqlx::query("SELECT proof, found_at FROM frauds ORDER BY found_at, allowance")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    obj(&r.get::<Vec<u8>, _>(0), "fraud proof")?,
                    u64_of(r.get(1))?,
                ))
            })
            .collect()
    }

    /// The sealed records of received payments the issuer has not decided yet.
    pub async fn undecided_records(&self) -> Result<Vec<Vec<u8>>> {
        Ok(sqlx::query_scalar(
            "SELECT record FROM received WHERE settlement IS NULL ORDER BY received_at, rowid",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The sealed records of received payments.
    pub async fn records(&self) -> Result<Vec<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT record FROM received ORDER BY received_at, rowid")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Records the issuer's decision on the payment with IOU id `iou`, sent or received.
    /// Returns whether it changed what this wallet knew (a payment of this wallet matched and
    /// its settlement was not already that).
    pub async fn set_settlement(&self, iou: &Hash, status: &str) -> Result<bool> {
        let mut n = 0;
        for table in ["sent", "received"] {
            n += sqlx::query(&format!(
                "UPDATE {table} SET settlement = ?1 WHERE iou_id = ?2 AND (settlement IS NULL OR settlement <> ?1)"
            ))
            .bind(status)
            .bind(iou.0.to_vec())
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(n > 0)
    }

    /// Closes the database.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn insert_notice(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    n: &SpendNotice,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO notices (allowance, counter, notice) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(n.allowance.0.to_vec())
    .bind(i64::from(n.counter))
    .bind(encode(n))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The columns [`sent_row`] reads, in its order.
const SENT_COLUMNS: &str = "iou, currency, memo, created_at, status, reason, ack, idem_key, answered_at, answered_by, settlement";

fn sent_row(r: &sqlx::sqlite::SqliteRow) -> Result<SentPayment> {
    let ack: Option<Vec<u8>> = r.get(6);
    let answered_at: Option<i64> = r.get(8);
    let answered_by: Option<String> = r.get(9);
    let settlement: Option<String> = r.get(10);
    Ok(SentPayment {
        iou: obj(&r.get::<Vec<u8>, _>(0), "IOU")?,
        currency: r.get(1),
        memo: r.get(2),
        created_at: u64_of(r.get(3))?,
        status: parse_status(&r.get::<String, _>(4))?,
        reason: r.get(5),
        ack: ack.map(|b| obj(&b, "payment ack")).transpose()?,
        key: r.get(7),
        answered_at: answered_at.map(u64_of).transpose()?,
        answered_by_resend: answered_by.as_deref() == Some("resend"),
        settlement: settlement.as_deref().and_then(crate::actor::settlement_of),
    })
}
