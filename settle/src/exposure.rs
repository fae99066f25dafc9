//! Offline exposure: the money wallets may still spend offline. Every open allowance (its
//! escrow not released) may still be settled up to its limit, so what is locked in its escrow
//! (limit minus settled) is what the issuer has promised and not yet paid out. Reported by
//! currency, by holder, and as the list of what expires when.

use crate::db::reports::OpenEscrow;
use meshpay_protocol::PrintableKey as _;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Open escrows read at most for one report; past it the report says it is `truncated`.
pub const MAX_SCANNED: usize = 100_000;
/// Holders listed at most (the largest exposures).
pub const MAX_HOLDERS: usize = 100;
/// Expiries listed at most (the soonest).
pub const MAX_EXPIRIES: usize = 100;

/// Exposure in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CurrencyExposure {
    /// The currency code.
    pub currency: String,
    /// Open allowances.
    pub allowances: u64,
    /// Sum of their limits (minor units).
    pub limit: u64,
    /// Sum settled under them.
    pub settled: u64,
    /// Still in escrow: what may yet be settled.
    pub outstanding: u64,
}

/// One holder's exposure in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct HolderExposure {
    /// The holder (`mpdev1…`).
    pub holder: String,
    /// The currency code.
    pub currency: String,
    /// Its open allowances.
    pub allowances: u64,
    /// Still in escrow under them.
    pub outstanding: u64,
}

/// An open allowance and when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Expiry {
    /// The allowance (hex).
    pub allowance: String,
    /// The holder (`mpdev1…`).
    pub holder: String,
    /// The currency code.
    pub currency: String,
    /// Its limit.
    pub limit: u64,
    /// Settled under it.
    pub settled: u64,
    /// Still in escrow.
    pub outstanding: u64,
    /// Last second IOUs may be made under it (Unix seconds).
    pub valid_until: u64,
    /// When its unspent escrow returns to the holder (Unix seconds).
    pub settle_by: u64,
}

/// What wallets may still spend offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Exposure {
    /// When it was read (Unix seconds).
    pub at: u64,
    /// Open allowances.
    pub allowances: u64,
    /// Distinct holders of open allowances.
    pub holders: u64,
    /// By currency, in code order.
    pub by_currency: Vec<CurrencyExposure>,
    /// The largest exposures by holder and currency, largest first (at most 100).
    pub by_holder: Vec<HolderExposure>,
    /// Open allowances in the order their escrow is released, soonest first (at most 100).
    pub expiries: Vec<Expiry>,
    /// Whether there were more open allowances than one report reads (100,000): the figures
    /// cover the 100,000 released soonest.
    pub truncated: bool,
}

/// The report over `open` (open escrows, soonest released first) read at `at`.
pub fn summarize(open: &[OpenEscrow], at: u64, truncated: bool) -> Exposure {
    let mut by_currency: BTreeMap<&str, CurrencyExposure> = BTreeMap::new();
    let mut by_holder: BTreeMap<(meshpay_protocol::DeviceKey, &str), (u64, u64)> = BTreeMap::new();
    for e in open {
        let outstanding = e.limit.saturating_sub(e.settled);
        let c = by_currency
            .entry(&e.currency)
            .or_insert_with(|| CurrencyExposure {
                currency: e.currency.clone(),
                allowances: 0,
                limit: 0,
                settled: 0,
                outstanding: 0,
            });
        c.allowances += 1;
        c.limit = c.limit.saturating_add(e.limit);
        c.settled = c.settled.saturating_add(e.settled);
        c.outstanding = c.outstanding.saturating_add(outstanding);
        let h = by_holder.entry((e.holder, &e.currency)).or_default();
        h.0 += 1;
        h.1 = h.1.saturating_add(outstanding);
    }
    let holders = {
        let mut keys: Vec<_> = by_holder.keys().map(|(k, _)| *k).collect();
        keys.dedup();
        keys.len() as u64
    };
    let mut largest: Vec<HolderExposure> = by_holder
        .into_iter()
        .map(
            |((holder, currency), (allowances, outstanding))| HolderExposure {
                holder: holder.to_text(),
                currency: currency.to_owned(),
                allowances,
                outstanding,
            },
        )
        .collect();
    // Largest first; ties in holder order, so the report is the same every time.
    largest.sort_by_key(|h| std::cmp::Reverse(h.outstanding));
    largest.truncate(MAX_HOLDERS);
    Exposure {
        at,
        allowances: open.len() as u64,
        holders,
        by_currency: by_currency.into_values().collect(),
        by_holder: largest,
        expiries: open
            .iter()
            .take(MAX_EXPIRIES)
            .map(|e| Expiry {
                allowance: e.allowance.to_hex(),
                holder: e.holder.to_text(),
                currency: e.currency.clone(),
                limit: e.limit,
                settled: e.settled,
                outstanding: e.limit.saturating_sub(e.settled),
                valid_until: e.valid_until,
                settle_by: e.settle_by,
            })
            .collect(),
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshpay_protocol::{AllowanceId, DeviceKey};

    fn escrow(id: u8, holder: u8, currency: &str, limit: u64, settled: u64) -> OpenEscrow {
        OpenEscrow {
            allowance: AllowanceId([id; 16]),
            holder: DeviceKey([holder; 32]),
            currency: currency.into(),
            valid_from: 0,
            valid_until: 1_000 + u64::from(id),
            limit,
            settled,
            settle_by: 2_000 + u64::from(id),
        }
    }

    #[test]
    fn sums_by_currency_and_holder_and_lists_expiries_in_order() {
        let open = [
            escrow(1, 1, "KES", 1_000, 100),
            escrow(2, 2, "KES", 500, 0),
            escrow(3, 1, "KES", 300, 300),
            escrow(4, 1, "UGX", 50, 10),
        ];
        let x = summarize(&open, 7, false);
        assert_eq!((x.at, x.allowances, x.holders), (7, 4, 2));
        assert_eq!(
            x.by_currency,
            vec![
                CurrencyExposure {
                    currency: "KES".into(),
                    allowances: 3,
                    limit: 1_800,
                    settled: 400,
                    outstanding: 1_400,
                },
                CurrencyExposure {
                    currency: "UGX".into(),
                    allowances: 1,
                    limit: 50,
                    settled: 10,
                    outstanding: 40,
                },
            ]
        );
        let holders: Vec<(String, &str, u64, u64)> = x
            .by_holder
            .iter()
            .map(|h| {
                (
                    h.holder.clone(),
                    h.currency.as_str(),
                    h.allowances,
                    h.outstanding,
                )
            })
            .collect();
        assert_eq!(
            holders,
            vec![
                (DeviceKey([1; 32]).to_text(), "KES", 2, 900),
                (DeviceKey([2; 32]).to_text(), "KES", 1, 500),
                (DeviceKey([1; 32]).to_text(), "UGX", 1, 40),
            ]
        );
        let order: Vec<u64> = x.expiries.iter().map(|e| e.settle_by).collect();
        assert_eq!(order, vec![2_001, 2_002, 2_003, 2_004]);
        assert_eq!(x.expiries[2].outstanding, 0);
    }

    #[test]
    fn lists_are_capped() {
        let open: Vec<OpenEscrow> = (0..=255u8).map(|n| escrow(n, n, "KES", 10, 0)).collect();
        let x = summarize(&open, 0, true);
        assert_eq!(x.by_holder.len(), MAX_HOLDERS);
        assert_eq!(x.expiries.len(), MAX_EXPIRIES);
        assert_eq!(x.allowances, 256);
        assert!(x.truncated);
    }
}
