//! What the server reports from its books: the feeds gateways read (receipts, fraud proofs,
//! revocations, each paged by sequence number), the figures of the reconciliation, and what
//! the issuer console shows (open escrows, standing fraud proofs and revocations, refusals).
//! Read outside any transaction, on the readers' pool.

use super::{Db, DbError, DbResult, i, u};
use meshpay_protocol::{AllowanceCert, AllowanceId, DeviceKey, FraudProof, Revocation, decode};
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

/// An open escrow (not released), as the console reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenEscrow {
    /// The allowance.
    pub allowance: AllowanceId,
    /// Its holder.
    pub holder: DeviceKey,
    /// Its currency (from the certificate; empty if the certificate does not decode).
    pub currency: String,
    /// The start of its validity (from the certificate; 0 if it does not decode).
    pub valid_from: u64,
    /// The end of its validity (from the certificate; 0 if it does not decode).
    pub valid_until: u64,
    /// Its limit.
    pub limit: u64,
    /// What has settled under it.
    pub settled: u64,
    /// When its unspent escrow is released.
    pub settle_by: u64,
}

/// An open escrow as stored, its certificate still encoded (decoding many is CPU work, for
/// the caller to place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowRow {
    allowance: AllowanceId,
    holder: DeviceKey,
    cert: Vec<u8>,
    limit: u64,
    settled: u64,
    settle_by: u64,
}

impl EscrowRow {
    /// Decodes the certificate's currency and validity.
    pub fn open(&self) -> OpenEscrow {
        let cert: Option<AllowanceCert> = decode(&self.cert).ok();
        let body = cert.as_ref().map(AllowanceCert::body);
        OpenEscrow {
            allowance: self.allowance,
            holder: self.holder,
            currency: body.map(|b| b.currency.clone()).unwrap_or_default(),
            valid_from: body.map_or(0, |b| b.valid_from),
            valid_until: body.map_or(0, |b| b.valid_until),
            limit: self.limit,
            settled: self.settled,
            settle_by: self.settle_by,
        }
    }
}

fn escrow_row(r: &sqlx::any::AnyRow) -> DbResult<EscrowRow> {
    let id: Vec<u8> = r.try_get(0)?;
    let holder: Vec<u8> = r.try_get(1)?;
    Ok(EscrowRow {
        allowance: AllowanceId(id.try_into().map_err(|_| DbError::Corrupt("escrow id"))?),
        holder: DeviceKey(holder.try_into().map_err(|_| DbError::Corrupt("holder"))?),
        cert: r.try_get(2)?,
        limit: u(r.try_get(3)?),
        settled: u(r.try_get(4)?),
        settle_by: u(r.try_get(5)?),
    })
}

const OPEN_ESCROW: &str = "SELECT id, holder, cert, limit_amount, settled, settle_by FROM escrows";

/// Up to `limit` open escrows, the first to be released first.
pub async fn open_escrows(db: &Db, limit: i64) -> DbResult<Vec<EscrowRow>> {
    let sql = format!("{OPEN_ESCROW} WHERE released = 0 ORDER BY settle_by, id LIMIT $1");
    let rows = sqlx::query(&sql)
        .bind(limit)
        .fetch_all(db.readers())
        .await?;
    rows.iter().map(escrow_row).collect()
}

/// The totals of the open escrows, summed by the database: how many, how many holders, the
/// sum of their limits and of what settled under them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTotals {
    /// Open escrows.
    pub allowances: u64,
    /// Their distinct holders.
    pub holders: u64,
    /// Sum of their limits.
    pub limit: u128,
    /// Sum settled under them.
    pub settled: u128,
}

/// Sums amounts in two parts (the `2^20`s and the rest), each well inside a `BIGINT` whatever
/// the number of rows (amounts stay under `2^53`): SQLite's `SUM` fails on overflow, and
/// PostgreSQL's `SUM(BIGINT)` is a `NUMERIC` the driver does not read.
const SPLIT: i64 = 1 << 20;

/// The totals of the open escrows, without reading one certificate.
pub async fn open_totals(db: &Db) -> DbResult<OpenTotals> {
    let sum = |column: &str| {
        format!(
            "CAST(COALESCE(SUM({column} / {SPLIT}), 0) AS BIGINT), CAST(COALESCE(SUM({column} % {SPLIT}), 0) AS BIGINT)"
        )
    };
    let sql = format!(
        "SELECT COUNT(*), COUNT(DISTINCT holder), {}, {} FROM escrows WHERE released = 0",
        sum("limit_amount"),
        sum("settled")
    );
    let r = sqlx::query(&sql).fetch_one(db.readers()).await?;
    let joined = |high: usize| -> DbResult<u128> {
        let (h, l): (i64, i64) = (r.try_get(high)?, r.try_get(high + 1)?);
        Ok(u128::from(u(h)) * u128::from(u(SPLIT)) + u128::from(u(l)))
    };
    Ok(OpenTotals {
        allowances: u(r.try_get(0)?),
        holders: u(r.try_get(1)?),
        limit: joined(2)?,
        settled: joined(4)?,
    })
}

/// How many open escrows have settled at least `percent` of their limit, and up to `limit` of
/// them, the fullest first.
pub async fn near_limit_escrows(
    db: &Db,
    percent: u64,
    limit: i64,
) -> DbResult<(u64, Vec<OpenEscrow>)> {
    let percent = i(percent.min(100))?;
    let filter = "WHERE released = 0 AND settled * 100 >= limit_amount * $1";
    let count: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM escrows {filter}"))
        .bind(percent)
        .fetch_one(db.readers())
        .await?
        .try_get(0)?;
    let sql =
        format!("{OPEN_ESCROW} {filter} ORDER BY settled * 100 / limit_amount DESC, id LIMIT $2");
    let rows = sqlx::query(&sql)
        .bind(percent)
        .bind(limit)
        .fetch_all(db.readers())
        .await?;
    let rows = rows.iter().map(escrow_row).collect::<DbResult<Vec<_>>>()?;
    Ok((u(count), rows.iter().map(EscrowRow::open).collect()))
}

/// How many rows `from` (a `FROM … WHERE …` clause) matches, and the `columns` of the newest
/// `limit` of them by `seq`, newest first.
async fn count_and_page(
    db: &Db,
    columns: &str,
    from: &str,
    seq: &str,
    limit: i64,
) -> DbResult<(i64, Vec<sqlx::any::AnyRow>)> {
    let count: i64 = sqlx::query(&format!("SELECT COUNT(*) {from}"))
        .fetch_one(db.readers())
        .await?
        .try_get(0)?;
    let rows = sqlx::query(&format!(
        "SELECT {columns} {from} ORDER BY {seq} DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db.readers())
    .await?;
    Ok((count, rows))
}

/// How many fraud proofs stand against open allowances, and up to `limit` of them with the
/// time found, the newest first.
pub async fn standing_frauds(db: &Db, limit: i64) -> DbResult<(u64, Vec<(FraudProof, u64)>)> {
    let from = "FROM frauds f JOIN escrows e ON e.id = f.allowance WHERE e.released = 0";
    let (count, rows) = count_and_page(db, "f.proof, f.found_at", from, "f.seq", limit).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let bytes: Vec<u8> = r.try_get(0)?;
        let proof = decode(&bytes).map_err(|_| DbError::Corrupt("fraud proof"))?;
        out.push((proof, u(r.try_get(1)?)));
    }
    Ok((u(count), out))
}

/// How many open allowances are revoked without a fraud proof, and up to `limit` of their
/// revocations with the holder, the newest first.
pub async fn standing_revocations(
    db: &Db,
    limit: i64,
) -> DbResult<(u64, Vec<(Revocation, DeviceKey)>)> {
    let from = "FROM revocations r JOIN escrows e ON e.id = r.allowance WHERE e.released = 0 \
        AND NOT EXISTS (SELECT 1 FROM frauds f WHERE f.allowance = r.allowance)";
    let (count, rows) = count_and_page(db, "r.revocation, e.holder", from, "r.seq", limit).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let bytes: Vec<u8> = r.try_get(0)?;
        let holder: Vec<u8> = r.try_get(1)?;
        let rev = decode(&bytes).map_err(|_| DbError::Corrupt("revocation"))?;
        let holder = DeviceKey(holder.try_into().map_err(|_| DbError::Corrupt("holder"))?);
        out.push((rev, holder));
    }
    Ok((u(count), out))
}

/// Stored refusals by status code (the refusals kept as final decisions).
pub async fn refusals(db: &Db) -> DbResult<Vec<(u16, u64)>> {
    let rows = sqlx::query(
        "SELECT status, COUNT(*) FROM records WHERE status <> 0 GROUP BY status ORDER BY status",
    )
    .fetch_all(db.readers())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let status = u16::try_from(r.try_get::<i64, _>(0)?).unwrap_or(u16::MAX);
        out.push((status, u(r.try_get(1)?)));
    }
    Ok(out)
}
