//! What the server reports from its books: the feeds gateways read (receipts, fraud proofs,
//! revocations, each paged by sequence number) and the figures of the reconciliation. Read
//! outside any transaction, on the readers' pool.

use super::{Db, DbResult};
use sqlx::Row;
use std::collections::BTreeMap;

/// A feed: rows in the order they were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Final receipts, in the order decided.
    Receipts,
    /// Fraud proofs, in the order found.
    FraudProofs,
    /// Revocations, in the order made.
    Revocations,
}

impl Feed {
    fn select(self) -> &'static str {
        match self {
            Feed::Receipts => {
                "SELECT seq, receipt FROM records WHERE seq > $1 ORDER BY seq LIMIT $2"
            }
            Feed::FraudProofs => {
                "SELECT seq, proof FROM frauds WHERE seq > $1 ORDER BY seq LIMIT $2"
            }
            Feed::Revocations => {
                "SELECT seq, revocation FROM revocations WHERE seq > $1 ORDER BY seq LIMIT $2"
            }
        }
    }
}

/// Up to `limit` items of `feed` after sequence number `since`: `(seq, encoding)`.
pub async fn feed(db: &Db, feed: Feed, since: i64, limit: i64) -> DbResult<Vec<(i64, Vec<u8>)>> {
    let rows = sqlx::query(feed.select())
        .bind(since)
        .bind(limit)
        .fetch_all(db.readers())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push((r.try_get(0)?, r.try_get(1)?));
    }
    Ok(out)
}

/// The figures a reconciliation checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Books {
    /// Every account's balance, by name.
    pub accounts: BTreeMap<String, i64>,
    /// Records settled.
    pub settled_records: i64,
    /// Records refused with a stored (final) receipt.
    pub rejected_records: i64,
    /// Sum of every settlement transfer.
    pub settled_amount: i128,
    /// Fraud proofs found.
    pub fraud_proofs: i64,
}

/// Reads the books' figures.
pub async fn books(db: &Db) -> DbResult<Books> {
    let pool = db.readers();
    let mut accounts = BTreeMap::new();
    for r in sqlx::query("SELECT name, balance FROM accounts ORDER BY name")
        .fetch_all(pool)
        .await?
    {
        accounts.insert(r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?);
    }
    let mut settled_amount = 0i128;
    for r in sqlx::query("SELECT amount FROM transfers WHERE kind = 'settle'")
        .fetch_all(pool)
        .await?
    {
        settled_amount += i128::from(r.try_get::<i64, _>(0)?);
    }
    let count = |sql: &'static str| async move {
        sqlx::query(sql)
            .fetch_one(pool)
            .await
            .and_then(|r| r.try_get::<i64, _>(0))
    };
    Ok(Books {
        accounts,
        settled_records: count("SELECT COUNT(*) FROM records WHERE status = 0").await?,
        rejected_records: count("SELECT COUNT(*) FROM records WHERE status <> 0").await?,
        settled_amount,
        fraud_proofs: count("SELECT COUNT(*) FROM frauds").await?,
    })
}
