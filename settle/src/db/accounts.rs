//! The books: accounts, transfers between them, statements, and the nonces of wallet
//! requests (spent in a transaction of their own, whatever the answer to the request).

use super::{DbError, DbResult, ROWS_PER_STATEMENT, i, list, on_sqlite};
use meshpay_protocol::{AllowanceId, DeviceKey, Nonce};
use sqlx::{Any, Row, Transaction};
use std::collections::BTreeSet;

/// The name of a device's account.
pub fn user(d: &DeviceKey) -> String {
    format!("user:{}", d.to_hex())
}

/// The name of an allowance's escrow account.
pub fn escrow(id: &AllowanceId) -> String {
    format!("escrow:{}", id.to_hex())
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

/// Which of `names` are accounts.
pub async fn existing_accounts(
    tx: &mut Transaction<'_, Any>,
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
    rows.iter().map(|r| entry(r, name)).collect()
}

/// How many transfers went into or out of the account `name`, and the newest `limit` of
/// them, newest first: what a page shows, without reading the whole statement.
pub async fn statement_tail(
    tx: &mut Transaction<'_, Any>,
    name: &str,
    limit: i64,
) -> DbResult<(u64, Vec<Entry>)> {
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM transfers WHERE src = $1 OR dst = $1")
        .bind(name)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    let rows = sqlx::query("SELECT seq, src, dst, amount, kind, reference, at FROM transfers WHERE src = $1 OR dst = $1 ORDER BY seq DESC LIMIT $2")
        .bind(name)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?;
    let entries = rows
        .iter()
        .map(|r| entry(r, name))
        .collect::<DbResult<_>>()?;
    Ok((u64::try_from(count).unwrap_or(0), entries))
}

/// A transfer row as a line of the statement of `name`.
fn entry(r: &sqlx::any::AnyRow, name: &str) -> DbResult<Entry> {
    let src: String = r.try_get(1)?;
    let dst: String = r.try_get(2)?;
    let amount: i64 = r.try_get(3)?;
    let (amount, counterpart) = if src == name {
        (-amount, dst)
    } else {
        (amount, src)
    };
    Ok(Entry {
        seq: r.try_get(0)?,
        kind: r.try_get(4)?,
        amount,
        counterpart,
        reference: r.try_get(5)?,
        at: r.try_get(6)?,
    })
}

/// Spends the nonce of a wallet request from `device`: `false` if it was spent before (a
/// replay).
pub async fn spend_nonce(
    tx: &mut Transaction<'_, Any>,
    device: &DeviceKey,
    nonce: &Nonce,
    now: u64,
) -> DbResult<bool> {
    let r = sqlx::query(
        "INSERT INTO nonces (device, nonce, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(device.0.to_vec())
    .bind(nonce.0.to_vec())
    .bind(i(now)?)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Forgets the nonces spent before `before`.
pub async fn forget_nonces(tx: &mut Transaction<'_, Any>, before: u64) -> DbResult<()> {
    sqlx::query("DELETE FROM nonces WHERE at < $1")
        .bind(i(before)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
