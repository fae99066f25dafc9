//! Settlement's rows: escrows (one per allowance, with its certificate, settled total and
//! release flag), slots (the IOU that claimed each `(allowance, counter)`), decided records
//! with their receipts, fraud proofs and revocations.
//!
//! Reads of what never changes once written (certificates, decided records) go through the
//! readers' pool, outside any transaction; everything else runs in the caller's transaction.
//! Writes a concurrent server could race are conditional ([`Conditional`]).

use super::{
    Conditional, Db, DbError, DbResult, Engine, ROWS_PER_STATEMENT, Raced, Tx, hash_of, i, list,
    on_sqlite, param, placeholders, u,
};
use meshpay_protocol::ledger::{Slot, SlotVerdict};
use meshpay_protocol::{
    AllowanceCert, AllowanceId, DeviceKey, FraudProof, Hash, Reason, Revocation, decode, encode,
};
use sqlx::Row;
use std::collections::BTreeMap;

/// The certificates of the allowances among `ids` that exist (read outside any transaction:
/// a certificate never changes once issued).
pub async fn certificates(
    db: &Db,
    ids: &[AllowanceId],
) -> DbResult<BTreeMap<AllowanceId, AllowanceCert>> {
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
    tx: &mut Tx,
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

/// Inserts slots claimed for the first time. `Err(Raced)` inside `Ok` means another
/// transaction claimed one of them meanwhile.
pub async fn insert_slots(tx: &mut Tx, slots: &[(AllowanceId, u32, Slot)]) -> Conditional {
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
    tx: &mut Tx,
    allowance: &AllowanceId,
    counter: u32,
    slot: &Slot,
) -> Conditional {
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
    tx: &mut Tx,
    allowance: &AllowanceId,
    before: u64,
    after: u64,
) -> Conditional {
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
    tx: &mut Tx,
    records: &[(Hash, u16, Vec<u8>)],
    now: u64,
) -> Conditional {
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

/// The settled total and release flag of `allowance`'s escrow, if it exists. On PostgreSQL the
/// row is locked for the transaction: callers lock a batch's escrows in id order, so concurrent
/// batches over the same allowances queue instead of deadlocking. (SQLite has one writer.)
pub async fn lock_escrow(tx: &mut Tx, allowance: &AllowanceId) -> DbResult<Option<(u64, bool)>> {
    let select = if on_sqlite(tx) {
        "SELECT settled, released FROM escrows WHERE id = $1"
    } else {
        "SELECT settled, released FROM escrows WHERE id = $1 FOR UPDATE"
    };
    let Some(row) = sqlx::query(select)
        .bind(allowance.0.to_vec())
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some((u(row.try_get(0)?), row.try_get::<i64, _>(1)? != 0)))
}

/// Stores the escrow of a certificate just signed (its money is moved by the caller).
pub async fn insert_escrow(tx: &mut Tx, cert: &AllowanceCert, now: u64) -> DbResult<()> {
    let c = cert.body();
    sqlx::query("INSERT INTO escrows (id, holder, cert, limit_amount, settled, released, settle_by, created_at) VALUES ($1, $2, $3, $4, 0, 0, $5, $6)")
        .bind(c.id.0.to_vec())
        .bind(c.holder.0.to_vec())
        .bind(encode(cert))
        .bind(i(c.limit)?)
        .bind(i(c.settle_by)?)
        .bind(i(now)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Whether `allowance` was issued here.
pub async fn escrow_exists(tx: &mut Tx, allowance: &AllowanceId) -> DbResult<bool> {
    Ok(sqlx::query("SELECT id FROM escrows WHERE id = $1")
        .bind(allowance.0.to_vec())
        .fetch_optional(&mut **tx)
        .await?
        .is_some())
}

/// Up to `limit` escrows not released whose settle-by time is before `now`: allowance and
/// holder, in id order.
pub async fn expired_escrows(
    tx: &mut Tx,
    now: u64,
    limit: i64,
) -> DbResult<Vec<(AllowanceId, DeviceKey)>> {
    let rows = sqlx::query(
        "SELECT id, holder FROM escrows WHERE released = 0 AND settle_by < $1 ORDER BY id LIMIT $2",
    )
    .bind(i(now)?)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: Vec<u8> = r.try_get(0)?;
        let holder: Vec<u8> = r.try_get(1)?;
        let id = AllowanceId(id.try_into().map_err(|_| DbError::Corrupt("escrow id"))?);
        let holder = DeviceKey(holder.try_into().map_err(|_| DbError::Corrupt("holder"))?);
        out.push((id, holder));
    }
    Ok(out)
}

/// Closes `allowance`'s escrow and returns what is left of it, in one statement: a settlement
/// that commits first is counted, one that commits later finds the escrow released. `None` if
/// another transaction closed it first.
pub async fn release_escrow(tx: &mut Tx, allowance: &AllowanceId) -> DbResult<Option<u64>> {
    let left = sqlx::query(
        "UPDATE escrows SET released = 1 WHERE id = $1 AND released = 0 RETURNING limit_amount - settled",
    )
    .bind(allowance.0.to_vec())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match left {
        Some(r) => Some(u(r.try_get::<i64, _>(0)?)),
        None => None,
    })
}

/// Lets one transaction at a time add to the feeds (receipts, fraud proofs, revocations) on
/// PostgreSQL, until it ends: feeds page by sequence number, so rows must become visible in
/// sequence order. (SQLite has one writer.)
pub async fn lock_feeds(tx: &mut Tx) -> DbResult<()> {
    if !on_sqlite(tx) {
        sqlx::query("SELECT pg_advisory_xact_lock(7434)")
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Stores a fraud proof unless its allowance has one: whether it is new.
pub async fn insert_fraud(tx: &mut Tx, proof: &FraudProof, now: u64) -> DbResult<bool> {
    let r = sqlx::query(
        "INSERT INTO frauds (allowance, proof, found_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(proof.allowance().0.to_vec())
    .bind(encode(proof))
    .bind(i(now)?)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Stores a revocation unless its allowance has one, and returns the one that stands (the
/// first: it is the one the mesh carries).
pub async fn insert_revocation(tx: &mut Tx, rev: &Revocation, now: u64) -> DbResult<Revocation> {
    let allowance = rev.body().allowance;
    let r = sqlx::query(
        "INSERT INTO revocations (allowance, revocation, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(allowance.0.to_vec())
    .bind(encode(rev))
    .bind(i(now)?)
    .execute(&mut **tx)
    .await?;
    if r.rows_affected() == 1 {
        return Ok(rev.clone());
    }
    let row = sqlx::query("SELECT revocation FROM revocations WHERE allowance = $1")
        .bind(allowance.0.to_vec())
        .fetch_one(&mut **tx)
        .await?;
    let bytes: Vec<u8> = row.try_get(0)?;
    decode(&bytes).map_err(|_| DbError::Corrupt("revocation"))
}

/// The holder of `allowance`, if it was issued here.
pub async fn escrow_holder(tx: &mut Tx, allowance: &AllowanceId) -> DbResult<Option<DeviceKey>> {
    let Some(row) = sqlx::query("SELECT holder FROM escrows WHERE id = $1")
        .bind(allowance.0.to_vec())
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(None);
    };
    let holder: Vec<u8> = row.try_get(0)?;
    Ok(Some(DeviceKey(
        holder.try_into().map_err(|_| DbError::Corrupt("holder"))?,
    )))
}
