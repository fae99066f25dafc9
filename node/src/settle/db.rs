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

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Row, Transaction};

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
    /// The URL names no supported database.
    #[error("unsupported database URL {0} (use sqlite://PATH or postgres://…)")]
    Url(String),
}

/// Result of storage calls.
pub type DbResult<T> = Result<T, DbError>;

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

/// The database.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
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
    pub async fn open(url: &str) -> DbResult<Self> {
        install_default_drivers();
        let (engine, url) = if let Some(path) = url.strip_prefix("sqlite://") {
            (Engine::Sqlite, format!("sqlite://{path}?mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Engine::Postgres, url.to_owned())
        } else {
            return Err(DbError::Url(url.to_owned()));
        };
        let pool = AnyPoolOptions::new()
            // SQLite has one writer; more connections would only wait on its lock.
            .max_connections(if engine == Engine::Sqlite { 1 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
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
                })
            })
            .connect(&url)
            .await?;
        let db = Self { pool, engine };
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
        if done.unwrap_or(0) < 1 {
            sqlx::raw_sql(&ddl).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES (1)")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> DbResult<Transaction<'static, Any>> {
        Ok(self.pool.begin().await?)
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
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

/// Moves `amount` from `src` to `dst`. `src` may not go negative unless it is `external`.
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
    let r = sqlx::query("UPDATE accounts SET balance = balance - $1 WHERE name = $2 AND (balance >= $1 OR name = 'external')")
        .bind(a)
        .bind(src)
        .execute(&mut **tx)
        .await?;
    if r.rows_affected() != 1 {
        return Err(if balance(tx, src).await?.is_some() {
            DbError::Insufficient(src.to_owned())
        } else {
            DbError::NoAccount(src.to_owned())
        });
    }
    let r = sqlx::query("UPDATE accounts SET balance = balance + $1 WHERE name = $2")
        .bind(a)
        .bind(dst)
        .execute(&mut **tx)
        .await?;
    if r.rows_affected() != 1 {
        return Err(DbError::NoAccount(dst.to_owned()));
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
