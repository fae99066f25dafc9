//! The settlement server's storage: one SQL layer (sqlx `Any`) over SQLite (one file, the
//! default) or PostgreSQL (a connection string). Every SQL statement of the server is in this
//! module: [`accounts`] (the books, statements, wallet-request nonces), [`settlement`] (escrows,
//! slots, decided records, fraud proofs, revocations) and [`reports`] (the feeds and the
//! reconciliation); [`schema`] holds the tables.
//!
//! Statements use `$1, $2, …` placeholders in order, which both engines read the same way;
//! only the table definitions differ per engine. SQLite runs with WAL and `synchronous = FULL`;
//! PostgreSQL with its default durable commits.
//!
//! Money is double-entry: every movement is one row of `transfers` and two balance updates in
//! the same transaction, between named accounts: `user:<device hex>`, `escrow:<allowance
//! hex>` and `external` (money from and to the outside world; its balance is minus everything
//! credited). The sum of all balances is always zero.

pub mod accounts;
pub mod reports;
mod schema;
pub mod settlement;

pub use accounts::{Entry, balance, open_account, statement, statement_tail, transfer};

use meshpay_protocol::Hash;
use schema::{STRICT_POSTGRES, STRICT_SQLITE, TABLES};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Connection as _, Row, Transaction};

/// A transaction on the server's database.
pub type Tx = Transaction<'static, Any>;

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
    /// A stored value does not decode.
    #[error("the settlement database holds a corrupt {0}")]
    Corrupt(&'static str),
}

/// Result of storage calls.
pub type DbResult<T> = Result<T, DbError>;

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
    pub async fn begin(&self) -> DbResult<Tx> {
        Ok(self.pool.begin().await?)
    }

    /// The pool for reads outside transactions.
    pub(crate) fn readers(&self) -> &AnyPool {
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
///
/// `sqlx::QueryBuilder` writes the placeholders of its database's argument type, and the
/// `Any` driver's are always `?`, which PostgreSQL refuses; a builder per engine would need
/// the statements written twice. These three helpers are the whole of it.
fn param(sqlite: bool, k: usize) -> String {
    if sqlite {
        "?".to_owned()
    } else {
        format!("${k}")
    }
}

/// `(…), (…)`: `rows` groups of `cols` parameters, numbered from 1.
fn placeholders(sqlite: bool, rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=cols).map(|c| param(sqlite, r * cols + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `n` parameters numbered from `from`, separated by commas (an `IN` list).
fn list(sqlite: bool, from: usize, n: usize) -> String {
    (from..from + n)
        .map(|k| param(sqlite, k))
        .collect::<Vec<_>>()
        .join(", ")
}

fn hash_of(v: Vec<u8>) -> Hash {
    Hash(v.try_into().unwrap_or([0; 32]))
}

/// Whether another transaction got to a row first (a conditional write found it taken).
#[derive(Debug)]
pub struct Raced;

/// The result of a conditional write: `Err(Raced)` inside `Ok` means another transaction
/// changed the row meanwhile, and the batch must be judged again.
pub type Conditional = DbResult<Result<(), Raced>>;
