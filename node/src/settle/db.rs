//! The settlement server's storage: one SQL layer (sqlx `Any`) over SQLite (one file, the
//! default) or PostgreSQL (a connection string).
//!
//! Statements use `$1, $2, …` placeholders in order, which both engines read the same way;
//! only the table definitions differ per engine. SQLite runs with WAL and `synchronous = FULL`;
//! PostgreSQL with its default durable commits.
//!
//! Money is double-entry: every movement is one row of `transfers` and two balance updates in
//! the same transaction, between named accounts: `user:<device hex>`, `escrow:<allowance
//! hex>` and `external` (money from and to the outside world; its balance is minus everything
//! credited). The sum of all balances is always zero.

use meshpay_protocol::ledger::{Slot, SlotVerdict};
use meshpay_protocol::{AllowanceId, Hash, Reason, decode};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Connection as _, Row, Transaction};
use std::collections::{BTreeMap, BTreeSet};

/// Which engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database failed.
    #[error("settlement database: {0}")]
    Sql(#[from] sqlx::Error),
    /// An account has too little money for a transfer.
    #[error("account {0} has too little money")]
    Insufficient(String),
    /// An account does not exist.
    #[error("no account {0}")]
    NoAccount(String),
    /// A value does not fit a signed 64-bit integer.
    #[error("amount {0} is too large")]
    TooLarge(u64),
    /// A transfer would take an account past what a signed 64-bit balance holds.
    #[error("account {0} cannot hold this amount: its balance would pass the books' range")]
    Overflow(String),
    /// The URL names no supported database.
    #[error("unsupported database URL {0} (use sqlite://PATH or postgres://…)")]
    Url(String),
}

/// Result of storage calls.
pub type DbResult<T> = Result<T, DbError>;

/// Schema version 1 (kept as it was, so databases made by it migrate the same way).
const TABLES: &str = "
CREATE TABLE accounts (name TEXT PRIMARY KEY, balance BIGINT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE transfers (seq SERIALKEY, src TEXT NOT NULL, dst TEXT NOT NULL, amount BIGINT NOT NULL,
    kind TEXT NOT NULL, reference TEXT NOT NULL, at BIGINT NOT NULL);
CREATE TABLE escrows (id BYTES PRIMARY KEY, holder BYTES NOT NULL, cert BYTES NOT NULL,
    limit_amount BIGINT NOT NULL, settled BIGINT NOT NULL, released BIGINT NOT NULL,
    settle_by BIGINT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE slots (allowance BYTES NOT NULL, counter BIGINT NOT NULL, iou BYTES NOT NULL,
    digest BYTES NOT NULL, sig BYTES NOT NULL, amount BIGINT NOT NULL, verdict BIGINT NOT NULL,
    PRIMARY KEY (allowance, counter));
CREATE TABLE records (seq SERIALKEY, id BYTES NOT NULL UNIQUE, status BIGINT NOT NULL,
    receipt BYTES NOT NULL, decided_at BIGINT NOT NULL);
CREATE TABLE frauds (seq SERIALKEY, allowance BYTES NOT NULL UNIQUE, proof BYTES NOT NULL,
    found_at BIGINT NOT NULL);
CREATE TABLE revocations (seq SERIALKEY, allowance BYTES NOT NULL UNIQUE, revocation BYTES NOT NULL,
    at BIGINT NOT NULL);
CREATE TABLE nonces (device BYTES NOT NULL, nonce BYTES NOT NULL, at BIGINT NOT NULL,
    PRIMARY KEY (device, nonce));
INSERT INTO accounts (name, balance, created_at) VALUES ('external', 0, 0);
";

/// The range rules every amount column keeps (schema version 2): money columns hold integers
/// only, user and escrow balances never go below zero, and escrows never settle past their
/// limit. On SQLite the tables are rebuilt `STRICT`, so a value that is not an integer (a
/// float from an overflowing expression, say) is refused instead of stored.
const STRICT_SQLITE: &str = "
CREATE TABLE accounts2 (name TEXT PRIMARY KEY, balance INTEGER NOT NULL
        CHECK (name = 'external' OR balance >= 0),
    created_at INTEGER NOT NULL) STRICT;
INSERT INTO accounts2 SELECT name, balance, created_at FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts2 RENAME TO accounts;
CREATE TABLE transfers2 (seq INTEGER PRIMARY KEY AUTOINCREMENT, src TEXT NOT NULL,
    dst TEXT NOT NULL, amount INTEGER NOT NULL CHECK (amount > 0), kind TEXT NOT NULL,
    reference TEXT NOT NULL, at INTEGER NOT NULL) STRICT;
INSERT INTO transfers2 SELECT seq, src, dst, amount, kind, reference, at FROM transfers;
DROP TABLE transfers;
ALTER TABLE transfers2 RENAME TO transfers;
CREATE TABLE escrows2 (id BLOB PRIMARY KEY, holder BLOB NOT NULL, cert BLOB NOT NULL,
    limit_amount INTEGER NOT NULL CHECK (limit_amount > 0),
    settled INTEGER NOT NULL CHECK (settled >= 0 AND settled <= limit_amount),
    released INTEGER NOT NULL, settle_by INTEGER NOT NULL, created_at INTEGER NOT NULL) STRICT;
INSERT INTO escrows2 SELECT id, holder, cert, limit_amount, settled, released, settle_by, created_at FROM escrows;
DROP TABLE escrows;
ALTER TABLE escrows2 RENAME TO escrows;
CREATE TABLE slots2 (allowance BLOB NOT NULL, counter INTEGER NOT NULL, iou BLOB NOT NULL,
    digest BLOB NOT NULL, sig BLOB NOT NULL, amount INTEGER NOT NULL CHECK (amount >= 0),
    verdict INTEGER NOT NULL, PRIMARY KEY (allowance, counter)) STRICT;
INSERT INTO slots2 SELECT allowance, counter, iou, digest, sig, amount, verdict FROM slots;
DROP TABLE slots;
ALTER TABLE slots2 RENAME TO slots;
CREATE TABLE records2 (seq INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE,
    status INTEGER NOT NULL, receipt BLOB NOT NULL, decided_at INTEGER NOT NULL) STRICT;
INSERT INTO records2 SELECT seq, id, status, receipt, decided_at FROM records;
DROP TABLE records;
ALTER TABLE records2 RENAME TO records;
CREATE TABLE frauds2 (seq INTEGER PRIMARY KEY AUTOINCREMENT, allowance BLOB NOT NULL UNIQUE,
    proof BLOB NOT NULL, found_at INTEGER NOT NULL) STRICT;
INSERT INTO frauds2 SELECT seq, allowance, proof, found_at FROM frauds;
DROP TABLE frauds;
ALTER TABLE frauds2 RENAME TO frauds;
CREATE TABLE revocations2 (seq INTEGER PRIMARY KEY AUTOINCREMENT, allowance BLOB NOT NULL UNIQUE,
    revocation BLOB NOT NULL, at INTEGER NOT NULL) STRICT;
INSERT INTO revocations2 SELECT seq, allowance, revocation, at FROM revocations;
DROP TABLE revocations;
ALTER TABLE revocations2 RENAME TO revocations;
CREATE TABLE nonces2 (device BLOB NOT NULL, nonce BLOB NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (device, nonce)) STRICT;
INSERT INTO nonces2 SELECT device, nonce, at FROM nonces;
DROP TABLE nonces;
ALTER TABLE nonces2 RENAME TO nonces;
CREATE INDEX nonces_at ON nonces (at);
";

/// Schema version 2 on PostgreSQL: its `BIGINT` columns already refuse anything but 64-bit
/// integers (an overflowing expression is an error, never a float); add the range rules.
const STRICT_POSTGRES: &str = "
ALTER TABLE accounts ADD CONSTRAINT accounts_balance CHECK (name = 'external' OR balance >= 0);
ALTER TABLE transfers ADD CONSTRAINT transfers_amount CHECK (amount > 0);
ALTER TABLE escrows ADD CONSTRAINT escrows_amounts
    CHECK (limit_amount > 0 AND settled >= 0 AND settled <= limit_amount);
ALTER TABLE slots ADD CONSTRAINT slots_amount CHECK (amount >= 0);
CREATE INDEX nonces_at ON nonces (at);
";

/// The database.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// Connections for reads outside transactions (feeds, statements, look-ups before a
    /// decision). On SQLite these are apart from the one writer, so a long upload does not
    /// hold up a gateway reading its feeds; on PostgreSQL they are the same pool.
    readers: AnyPool,
    /// The engine behind it.
    pub engine: Engine,
}

/// Converts an amount to the database's integers.
pub fn i(v: u64) -> DbResult<i64> {
    i64::try_from(v).map_err(|_| DbError::TooLarge(v))
}

/// Converts a database integer back (negative values only occur on `external`).
pub fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Db {
    /// Connects to `url` (`sqlite://PATH` creates the file) and migrates the schema.
    ///
    /// One connection is made and used first, outside the pool, so a database that cannot be
    /// used (a corrupt file, a refused login) fails here at once with its own error rather than
    /// after the pool's wait for a connection that never comes.
    pub async fn open(url: &str) -> DbResult<Self> {
        install_default_drivers();
        let (engine, url) = if let Some(path) = url.strip_prefix("sqlite://") {
            (Engine::Sqlite, format!("sqlite://{path}?mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Engine::Postgres, url.to_owned())
        } else {
            return Err(DbError::Url(url.to_owned()));
        };
        {
            let mut first = sqlx::AnyConnection::connect(&url).await?;
            prepare(&mut first, engine).await?;
            // Reading the schema touches the file's first pages: a corrupt SQLite file fails here.
            let probe = match engine {
                Engine::Sqlite => "SELECT COUNT(*) FROM sqlite_master",
                Engine::Postgres => "SELECT 1",
            };
            sqlx::query(probe).fetch_one(&mut first).await?;
            sqlx::Connection::close(first).await?;
        }
        let pool = AnyPoolOptions::new()
            // SQLite has one writer; more connections would only wait on its lock.
            .max_connections(if engine == Engine::Sqlite { 1 } else { 8 })
            .acquire_timeout(std::time::Duration::from_secs(10))
            .after_connect(move |conn, _| Box::pin(async move { prepare(conn, engine).await }))
            .connect(&url)
            .await?;
        let readers = match engine {
            Engine::Sqlite => AnyPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        prepare(conn, engine).await?;
                        sqlx::Executor::execute(&mut *conn, "PRAGMA query_only = 1").await?;
                        Ok(())
                    })
                })
                .connect_lazy(&url)?,
            Engine::Postgres => pool.clone(),
        };
        let db = Self {
            pool,
            readers,
            engine,
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> DbResult<()> {
        let ddl = match self.engine {
            Engine::Sqlite => TABLES
                .replace("SERIALKEY", "INTEGER PRIMARY KEY AUTOINCREMENT")
                .replace("BYTES", "BLOB"),
            Engine::Postgres => TABLES
                .replace("SERIALKEY", "BIGSERIAL PRIMARY KEY")
                .replace("BYTES", "BYTEA"),
        };
        let strict = match self.engine {
            Engine::Sqlite => STRICT_SQLITE,
            Engine::Postgres => STRICT_POSTGRES,
        };
        let mut tx = self.pool.begin().await?;
        if self.engine == Engine::Postgres {
            // Several servers may start at once on one database: one migrates, the others
            // wait for it and then find the work done.
            sqlx::query("SELECT pg_advisory_xact_lock(7433)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(&mut *tx)
            .await?;
        let done: Option<i64> = sqlx::query("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        for (version, sql) in [(1, ddl.as_str()), (2, strict)] {
            if done.unwrap_or(0) < version {
                sqlx::raw_sql(sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> DbResult<Transaction<'static, Any>> {
        Ok(self.pool.begin().await?)
    }

    /// The pool for reads outside transactions.
    pub fn readers(&self) -> &AnyPool {
        &self.readers
    }

    /// Closes the pools.
    pub async fn close(&self) {
        self.readers.close().await;
        self.pool.close().await;
    }
}

/// Settings every connection gets: SQLite in WAL mode with full fsync and a lock wait.
async fn prepare(conn: &mut sqlx::AnyConnection, engine: Engine) -> Result<(), sqlx::Error> {
    if engine == Engine::Sqlite {
        for pragma in [
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = FULL",
            "PRAGMA busy_timeout = 5000",
        ] {
            sqlx::Executor::execute(&mut *conn, pragma).await?;
        }
    }
    Ok(())
}

/// Opens an account if it does not exist. Returns whether it was new.
pub async fn open_account(tx: &mut Transaction<'_, Any>, name: &str, now: u64) -> DbResult<bool> {
    let r = sqlx::query("INSERT INTO accounts (name, balance, created_at) VALUES ($1, 0, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(i(now)?)
        .execute(&mut **tx)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Moves `amount` from `src` to `dst`. `src` may not go negative unless it is `external`,
/// and no balance may leave the signed 64-bit range: each update is conditional on the
/// balance it starts from, so the database never evaluates an overflowing sum.
pub async fn transfer(
    tx: &mut Transaction<'_, Any>,
    src: &str,
    dst: &str,
    amount: u64,
    kind: &str,
    reference: &str,
    now: u64,
) -> DbResult<()> {
    let a = i(amount)?;
    // The lowest balance `src` may start from: `amount` for a user or escrow account; for
    // `external`, the lowest from which subtracting `amount` stays in range.
    let floor = if src == "external" { i64::MIN + a } else { a };
    let r =
        sqlx::query("UPDATE accounts SET balance = balance - $1 WHERE name = $2 AND balance >= $3")
            .bind(a)
            .bind(src)
            .bind(floor)
            .execute(&mut **tx)
            .await?;
    if r.rows_affected() != 1 {
        return Err(match balance(tx, src).await? {
            None => DbError::NoAccount(src.to_owned()),
            Some(_) if src == "external" => DbError::Overflow(src.to_owned()),
            Some(_) => DbError::Insufficient(src.to_owned()),
        });
    }
    let r =
        sqlx::query("UPDATE accounts SET balance = balance + $1 WHERE name = $2 AND balance <= $3")
            .bind(a)
            .bind(dst)
            .bind(i64::MAX - a)
            .execute(&mut **tx)
            .await?;
    if r.rows_affected() != 1 {
        return Err(match balance(tx, dst).await? {
            None => DbError::NoAccount(dst.to_owned()),
            Some(_) => DbError::Overflow(dst.to_owned()),
        });
    }
    sqlx::query("INSERT INTO transfers (src, dst, amount, kind, reference, at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(src)
        .bind(dst)
        .bind(a)
        .bind(kind)
        .bind(reference)
        .bind(i(now)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// An account's balance, if it exists.
pub async fn balance(tx: &mut Transaction<'_, Any>, name: &str) -> DbResult<Option<i64>> {
    let row = sqlx::query("SELECT balance FROM accounts WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// Rows per multi-row statement: 2,800 parameters at most, well under both engines' limits
/// (SQLite 32,766; PostgreSQL 65,535).
const ROWS_PER_STATEMENT: usize = 400;

/// Whether `tx` runs on SQLite.
fn on_sqlite(tx: &Transaction<'_, Any>) -> bool {
    tx.backend_name() == "SQLite"
}

/// The parameter numbered `k`: `$k` on PostgreSQL; on SQLite an anonymous `?` (the statements
/// here bind their parameters in order). SQLite looks named parameters up by a linear scan,
/// which made binding a 2,800-parameter insert quadratic.
fn param(sqlite: bool, k: usize) -> String {
    if sqlite {
        "?".to_owned()
    } else {
        format!("${k}")
    }
}

fn placeholders(sqlite: bool, rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=cols).map(|c| param(sqlite, r * cols + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(sqlite: bool, from: usize, n: usize) -> String {
    (from..from + n)
        .map(|k| param(sqlite, k))
        .collect::<Vec<_>>()
        .join(", ")
}

fn hash_of(v: Vec<u8>) -> Hash {
    Hash(v.try_into().unwrap_or([0; 32]))
}

/// The certificates of the allowances among `ids` that exist (read outside any transaction:
/// a certificate never changes once issued).
pub async fn certificates(
    db: &Db,
    ids: &[AllowanceId],
) -> DbResult<BTreeMap<AllowanceId, meshpay_protocol::AllowanceCert>> {
    let sqlite = db.engine == Engine::Sqlite;
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id, cert FROM escrows WHERE id IN ({})",
            list(sqlite, 1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id.0.to_vec());
        }
        for r in q.fetch_all(&db.readers).await? {
            let id: Vec<u8> = r.try_get(0)?;
            let bytes: Vec<u8> = r.try_get(1)?;
            if let (Ok(id), Ok(cert)) = (<[u8; 16]>::try_from(id), decode(&bytes)) {
                out.insert(AllowanceId(id), cert);
            }
        }
    }
    Ok(out)
}

/// The stored slots of `allowance` among `counters`.
pub async fn load_slots(
    tx: &mut Transaction<'static, Any>,
    allowance: &AllowanceId,
    counters: &[u32],
) -> DbResult<BTreeMap<u32, Slot>> {
    let mut slots = BTreeMap::new();
    let sqlite = on_sqlite(tx);
    // A batch usually holds a run of counters: one range scan reads them all. Sparse ones are
    // listed.
    let (lo, hi) = (
        counters.iter().min().copied().unwrap_or(0),
        counters.iter().max().copied().unwrap_or(0),
    );
    let dense = !counters.is_empty() && u64::from(hi - lo) < 2 * counters.len() as u64 + 64;
    let chunks: Vec<&[u32]> = if dense {
        vec![counters]
    } else {
        counters.chunks(ROWS_PER_STATEMENT).collect()
    };
    for chunk in chunks {
        let sql = if dense {
            format!(
                "SELECT counter, iou, digest, sig, amount, verdict FROM slots WHERE allowance = {} AND counter BETWEEN {} AND {}",
                param(sqlite, 1),
                param(sqlite, 2),
                param(sqlite, 3)
            )
        } else {
            format!(
                "SELECT counter, iou, digest, sig, amount, verdict FROM slots WHERE allowance = {} AND counter IN ({})",
                param(sqlite, 1),
                list(sqlite, 2, chunk.len())
            )
        };
        let mut q = sqlx::query(&sql).bind(allowance.0.to_vec());
        if dense {
            q = q.bind(i64::from(lo)).bind(i64::from(hi));
        } else {
            for c in chunk {
                q = q.bind(i64::from(*c));
            }
        }
        for r in q.fetch_all(&mut **tx).await? {
            let counter = u32::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0);
            let sig: Vec<u8> = r.try_get(3)?;
            let verdict: i64 = r.try_get(5)?;
            slots.insert(
                counter,
                Slot {
                    iou: hash_of(r.try_get(1)?),
                    digest: hash_of(r.try_get(2)?),
                    sig: meshpay_protocol::Signature(sig.try_into().unwrap_or([0; 64])),
                    amount: u(r.try_get(4)?),
                    verdict: if verdict == 0 {
                        SlotVerdict::Settled
                    } else {
                        SlotVerdict::Rejected(
                            Reason::from_code(u16::try_from(verdict).unwrap_or(0))
                                .unwrap_or(Reason::Malformed),
                        )
                    },
                },
            );
        }
    }
    Ok(slots)
}

/// The stored decisions of the records among `ids`: status code, decision time and the
/// receipt's bytes, by record id (read outside any transaction).
pub async fn load_receipts(db: &Db, ids: &[Hash]) -> DbResult<BTreeMap<Hash, (u16, u64, Vec<u8>)>> {
    let sqlite = db.engine == Engine::Sqlite;
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id, status, decided_at, receipt FROM records WHERE id IN ({})",
            list(sqlite, 1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id.0.to_vec());
        }
        for r in q.fetch_all(&db.readers).await? {
            let status = u16::try_from(r.try_get::<i64, _>(1)?).unwrap_or(u16::MAX);
            out.insert(
                hash_of(r.try_get(0)?),
                (status, u(r.try_get(2)?), r.try_get(3)?),
            );
        }
    }
    Ok(out)
}

/// Which of `names` are accounts.
pub async fn existing_accounts(
    tx: &mut Transaction<'static, Any>,
    names: &[String],
) -> DbResult<BTreeSet<String>> {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    let mut out = BTreeSet::new();
    for chunk in names.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT name FROM accounts WHERE name IN ({})",
            list(on_sqlite(tx), 1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for n in chunk {
            q = q.bind(n.clone());
        }
        for r in q.fetch_all(&mut **tx).await? {
            out.insert(r.try_get::<String, _>(0)?);
        }
    }
    Ok(out)
}

/// Whether another transaction got to a row first (a conditional insert found it taken).
#[derive(Debug)]
pub struct Raced;

/// Inserts slots claimed for the first time. `Err(Raced)` inside `Ok` means another
/// transaction claimed one of them meanwhile.
pub async fn insert_slots(
    tx: &mut Transaction<'static, Any>,
    slots: &[(AllowanceId, u32, Slot)],
) -> DbResult<Result<(), Raced>> {
    for chunk in slots.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO slots (allowance, counter, iou, digest, sig, amount, verdict) VALUES {} ON CONFLICT DO NOTHING",
            placeholders(on_sqlite(tx), chunk.len(), 7)
        );
        let mut q = sqlx::query(&sql);
        for (allowance, counter, slot) in chunk {
            let verdict = match slot.verdict {
                SlotVerdict::Settled => 0,
                SlotVerdict::Rejected(r) => i64::from(r.code()),
            };
            q = q
                .bind(allowance.0.to_vec())
                .bind(i64::from(*counter))
                .bind(slot.iou.0.to_vec())
                .bind(slot.digest.0.to_vec())
                .bind(slot.sig.0.to_vec())
                .bind(i(slot.amount)?)
                .bind(verdict);
        }
        let r = q.execute(&mut **tx).await?;
        if usize::try_from(r.rows_affected()).unwrap_or(0) != chunk.len() {
            return Ok(Err(Raced));
        }
    }
    Ok(Ok(()))
}

/// Settles a slot that held a refused IOU (conditional on it still being refused).
/// `Err(Raced)` inside `Ok` means another transaction settled it meanwhile.
pub async fn settle_refused_slot(
    tx: &mut Transaction<'static, Any>,
    allowance: &AllowanceId,
    counter: u32,
    slot: &Slot,
) -> DbResult<Result<(), Raced>> {
    let r = sqlx::query("UPDATE slots SET iou = $3, digest = $4, sig = $5, amount = $6, verdict = 0 WHERE allowance = $1 AND counter = $2 AND verdict <> 0")
        .bind(allowance.0.to_vec())
        .bind(i64::from(counter))
        .bind(slot.iou.0.to_vec())
        .bind(slot.digest.0.to_vec())
        .bind(slot.sig.0.to_vec())
        .bind(i(slot.amount)?)
        .execute(&mut **tx)
        .await?;
    Ok(if r.rows_affected() == 1 {
        Ok(())
    } else {
        Err(Raced)
    })
}

/// Moves an escrow's settled total from `before` to `after` (conditional on `before`, and on
/// the escrow not being released). `Err(Raced)` inside `Ok` means it moved meanwhile.
pub async fn move_settled_total(
    tx: &mut Transaction<'static, Any>,
    allowance: &AllowanceId,
    before: u64,
    after: u64,
) -> DbResult<Result<(), Raced>> {
    let r = sqlx::query(
        "UPDATE escrows SET settled = $3 WHERE id = $1 AND settled = $2 AND released = 0",
    )
    .bind(allowance.0.to_vec())
    .bind(i(before)?)
    .bind(i(after)?)
    .execute(&mut **tx)
    .await?;
    Ok(if r.rows_affected() == 1 {
        Ok(())
    } else {
        Err(Raced)
    })
}

/// Stores decided records with their receipts. `Err(Raced)` inside `Ok` means another
/// transaction decided one of them meanwhile.
pub async fn insert_records(
    tx: &mut Transaction<'static, Any>,
    records: &[(Hash, u16, Vec<u8>)],
    now: u64,
) -> DbResult<Result<(), Raced>> {
    for chunk in records.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO records (id, status, receipt, decided_at) VALUES {} ON CONFLICT DO NOTHING",
            placeholders(on_sqlite(tx), chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for (id, status, receipt) in chunk {
            q = q
                .bind(id.0.to_vec())
                .bind(i64::from(*status))
                .bind(receipt.clone())
                .bind(i(now)?);
        }
        let r = q.execute(&mut **tx).await?;
        if usize::try_from(r.rows_affected()).unwrap_or(0) != chunk.len() {
            return Ok(Err(Raced));
        }
    }
    Ok(Ok(()))
}

/// One line of an account statement.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Entry {
    /// Sequence number of the transfer (the books' order).
    pub seq: i64,
    /// `credit`, `debit`, `escrow`, `settle`, `release` or `fraud-recovery`.
    pub kind: String,
    /// Signed amount: positive into the account, negative out of it.
    pub amount: i64,
    /// The other account of the transfer.
    pub counterpart: String,
    /// The transfer's reference (an allowance id, the admin's note, …).
    pub reference: String,
    /// When, in Unix seconds.
    pub at: i64,
}

/// Every transfer into or out of the account `name`, in the books' order.
pub async fn statement(tx: &mut Transaction<'_, Any>, name: &str) -> DbResult<Vec<Entry>> {
    let rows = sqlx::query("SELECT seq, src, dst, amount, kind, reference, at FROM transfers WHERE src = $1 OR dst = $1 ORDER BY seq")
        .bind(name)
        .fetch_all(&mut **tx)
        .await?;
    let mut entries = Vec::with_capacity(rows.len());
    for r in rows {
        let src: String = r.try_get(1)?;
        let dst: String = r.try_get(2)?;
        let amount: i64 = r.try_get(3)?;
        let (amount, counterpart) = if src == name {
            (-amount, dst)
        } else {
            (amount, src)
        };
        entries.push(Entry {
            seq: r.try_get(0)?,
            kind: r.try_get(4)?,
            amount,
            counterpart,
            reference: r.try_get(5)?,
            at: r.try_get(6)?,
        });
    }
    Ok(entries)
}
