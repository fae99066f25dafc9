//! What the issuer watches: the hooks settlement calls once a batch is committed (the risk
//! monitor, the live feed), and the reports the console and the admin API read (risk alerts,
//! exposure, refusals).
//!
//! The hooks read nothing from the database: what they need (the batch's inputs, the
//! decisions, the certificates of its allowances) is at hand after a batch, so watching costs
//! settlement a lock and a few allocations per batch. The reports read the books each time.

use crate::cpu::cpu;
use crate::db::reports;
use crate::error::ServerError;
use crate::exposure::{self, CurrencyExposure, Exposure, MAX_SCANNED};
use crate::live::{LiveEvent, RECEIPTS_PER_BATCH};
use crate::risk::{Alert, MAX_ALERTS_PER_RULE, Payment, RiskReport, Rule};
use crate::server::Server;
use meshpay_protocol::settlement::{Answer, Input, Judged};
use meshpay_protocol::{
    AllowanceCert, AllowanceId, DeviceKey, PrintableKey as _, Reason, ReceiptStatus, Revocation,
    RevocationReason, SettlementReceipt,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::PoisonError;
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// A refusal reason and how many records it refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReasonCount {
    /// The reason's name (SPEC.md §4.10).
    pub reason: String,
    /// Records.
    pub count: u64,
}

/// Refusals by reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Refusals {
    /// Refusals kept as final decisions, in the books (every server sharing the database).
    pub stored: Vec<ReasonCount>,
    /// Every refusal this server decided since it started, provisional ones too
    /// (`unknown_payee`).
    pub since_start: Vec<ReasonCount>,
}

fn status_text(status: ReceiptStatus) -> String {
    match status {
        ReceiptStatus::Settled => "settled".to_owned(),
        ReceiptStatus::Rejected(r) => format!("rejected: {}", r.name()),
    }
}

fn revocation_reason(code: u16) -> &'static str {
    match RevocationReason::from_code(code) {
        Some(RevocationReason::Fraud) => "fraud",
        Some(RevocationReason::DeviceLost) => "device lost",
        Some(RevocationReason::Issuer) => "the issuer's decision",
        _ => "unknown reason",
    }
}

/// The risk alerts per rule as last counted for `/metrics`: when, and whether an alert was
/// raised since (then they are stale, but still answered while they are counted again).
#[derive(Debug, Default)]
pub(crate) struct CountsCache {
    counts: Option<(Instant, u64, BTreeMap<Rule, u64>)>,
    /// Bumped by each new alert; counts made before the last bump are stale.
    epoch: u64,
}

impl CountsCache {
    /// The counts if they are fresh: counted less than `max_age` before `now`, and no alert
    /// raised since.
    fn fresh(&self, now: Instant, max_age: Duration) -> Option<BTreeMap<Rule, u64>> {
        self.counts
            .as_ref()
            .filter(|(at, epoch, _)| {
                *epoch == self.epoch && now.saturating_duration_since(*at) < max_age
            })
            .map(|(_, _, c)| c.clone())
    }

    /// The last counts, however old.
    fn last(&self) -> Option<BTreeMap<Rule, u64>> {
        self.counts.as_ref().map(|(_, _, c)| c.clone())
    }

    /// A new alert was raised: the counts are stale (kept, to answer while recounted).
    pub(crate) fn mark_stale(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// `counts`, counted from `now` as of `epoch`.
    fn store(&mut self, now: Instant, epoch: u64, counts: BTreeMap<Rule, u64>) {
        self.counts = Some((now, epoch, counts));
    }
}

/// The counts of `cache`, counted again by `count` if they are not fresh — by one request at a
/// time: the one that takes `gate` counts, the others meanwhile answer the last counts (or,
/// before any, wait for it). Counting reads the books with the readers gateways use, so a
/// burst of scrapes must not run it once each.
pub(crate) async fn counts_once(
    cache: &std::sync::Mutex<CountsCache>,
    gate: &tokio::sync::Mutex<()>,
    now: Instant,
    max_age: Duration,
    count: impl Future<Output = Option<BTreeMap<Rule, u64>>>,
) -> Option<BTreeMap<Rule, u64>> {
    let lock = || cache.lock().unwrap_or_else(PoisonError::into_inner);
    let _counting = loop {
        let last = {
            let c = lock();
            if let Some(fresh) = c.fresh(now, max_age) {
                return Some(fresh);
            }
            c.last()
        };
        if let Ok(g) = gate.try_lock() {
            break g;
        }
        if last.is_some() {
            return last;
        }
        // Nothing counted yet: wait for the request counting, then look again.
        drop(gate.lock().await);
    };
    // Counted by another request while this one took the gate.
    let epoch = {
        let c = lock();
        if let Some(fresh) = c.fresh(now, max_age) {
            return Some(fresh);
        }
        c.epoch
    };
    let counts = count.await?;
    lock().store(now, epoch, counts.clone());
    Some(counts)
}

impl Server {
    /// After a batch's decisions are committed at `now`: counts its payments, escrow moves and
    /// newly proven forks in the risk monitor, and publishes its receipts, frauds and the
    /// alerts raised on the live feed.
    pub(crate) fn observe_batch(
        &self,
        inputs: &[Input],
        judged: &Judged,
        certs: &BTreeMap<AllowanceId, AllowanceCert>,
        new_frauds: &[(AllowanceId, DeviceKey)],
        now: u64,
    ) {
        let mut events = Vec::new();
        let mut alerts = Vec::new();
        let mut refused: BTreeMap<&'static str, u64> = BTreeMap::new();
        {
            let mut monitor = self.lock_monitor();
            for (input, answer) in inputs.iter().zip(&judged.answers) {
                let (Input::Record(id, iou), Answer::Fresh(_, status)) = (input, answer) else {
                    continue;
                };
                if let ReceiptStatus::Rejected(r) = status {
                    *refused.entry(r.name()).or_default() += 1;
                }
                let counted = !matches!(
                    status,
                    ReceiptStatus::Rejected(Reason::UnknownPayee | Reason::RetryLater)
                );
                if let (true, Some(cert)) = (counted, certs.get(&iou.allowance)) {
                    let payment = Payment {
                        allowance: iou.allowance,
                        counter: iou.counter,
                        holder: cert.body().holder,
                        payee: iou.payee,
                        amount: iou.amount,
                        settled: *status == ReceiptStatus::Settled,
                    };
                    alerts.extend(monitor.payment(&payment, now));
                }
                if events.len() < RECEIPTS_PER_BATCH {
                    events.push(LiveEvent::Receipt {
                        record: id.to_hex(),
                        status: status_text(*status),
                        amount: iou.amount,
                        payee: iou.payee.to_text(),
                        allowance: iou.allowance.to_hex(),
                        at: now,
                    });
                }
            }
            for (allowance, before, after) in &judged.changes.totals {
                if let Some(cert) = certs.get(allowance) {
                    let b = cert.body();
                    alerts.extend(monitor.escrow_moved(
                        *allowance,
                        &b.holder,
                        &b.currency,
                        b.limit,
                        *before,
                        *after,
                        now,
                    ));
                }
            }
            for (allowance, holder) in new_frauds {
                events.push(LiveEvent::Fraud {
                    allowance: allowance.to_hex(),
                    holder: holder.to_text(),
                    at: now,
                });
                alerts.extend(monitor.fork(*allowance, now));
            }
        }
        self.live.count_refusals(&refused);
        if !alerts.is_empty() || !new_frauds.is_empty() {
            self.forget_risk_counts();
        }
        events.extend(alerts.into_iter().map(LiveEvent::Alert));
        self.live.publish(events);
    }

    /// After an upload from `source` was answered at `now`: counts the inputs that got no
    /// decision against the source (`unopened`, inputs left for later not included) and
    /// publishes the upload's summary.
    pub(crate) fn observe_upload(
        &self,
        source: Option<IpAddr>,
        answers: &[Option<SettlementReceipt>],
        unopened: u64,
        now: u64,
    ) {
        let (mut settled, mut rejected) = (0u64, 0u64);
        for r in answers.iter().flatten() {
            if r.status() == ReceiptStatus::Settled {
                settled += 1;
            } else {
                rejected += 1;
            }
        }
        let mut events = vec![LiveEvent::Upload {
            source: source.map_or_else(|| "local".to_owned(), |s| s.to_string()),
            records: answers.len() as u64,
            settled,
            rejected,
            unopened,
            at: now,
        }];
        if let Some(source) = source {
            if let Some(alert) = self.lock_monitor().junk(source, unopened, now) {
                self.forget_risk_counts();
                events.push(LiveEvent::Alert(alert));
            }
        }
        self.live.publish(events);
    }

    /// After `allowance` of `holder` was revoked.
    pub(crate) fn revoked(&self, allowance: &AllowanceId, holder: &DeviceKey, rev: &Revocation) {
        let b = rev.body();
        self.forget_risk_counts();
        self.live.publish([LiveEvent::Alert(Alert::revoked(
            allowance,
            holder,
            revocation_reason(b.reason),
            b.revoked_at,
        ))]);
    }

    fn forget_risk_counts(&self) {
        self.risk_counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .mark_stale();
    }

    /// The risk alerts standing now and the rules: fraud proofs and revocations against open
    /// allowances and open allowances near their limit from the books, the live signals from
    /// the monitor.
    pub async fn risk(&self) -> Result<RiskReport, ServerError> {
        let now = self.clock.now();
        let rules = *self.lock_monitor().rules();
        let max = i64::try_from(MAX_ALERTS_PER_RULE).expect("a small constant");
        let (n_frauds, frauds) = reports::standing_frauds(&self.db, max).await?;
        let (n_revoked, revoked) = reports::standing_revocations(&self.db, max).await?;
        let (n_near, near) = if rules.near_limit_percent > 0 {
            reports::near_limit_escrows(&self.db, rules.near_limit_percent, max).await?
        } else {
            (0, Vec::new())
        };
        let mut alerts = Vec::new();
        for (proof, found) in &frauds {
            let holder = proof.cert.body().holder;
            alerts.push(Alert::fraud(
                &proof.allowance(),
                &holder,
                proof.first.counter,
                *found,
            ));
        }
        for (rev, holder) in &revoked {
            let b = rev.body();
            alerts.push(Alert::revoked(
                &b.allowance,
                holder,
                revocation_reason(b.reason),
                b.revoked_at,
            ));
        }
        {
            let mut monitor = self.lock_monitor();
            for e in &near {
                // Crossed before this server started: since the allowance was issued.
                let since = monitor
                    .near_limit_since(&e.allowance)
                    .unwrap_or(e.valid_from);
                alerts.push(Alert::near_limit(
                    &rules,
                    &e.allowance,
                    &e.holder,
                    &e.currency,
                    e.limit,
                    e.settled,
                    since,
                ));
            }
            alerts.extend(monitor.alerts(now));
        }
        Ok(RiskReport::new(
            now,
            rules,
            alerts,
            &[
                (Rule::Fraud, n_frauds),
                (Rule::Revoked, n_revoked),
                (Rule::NearLimit, n_near),
            ],
        ))
    }

    /// How many alerts stand per rule, counted at most `max_age` ago (for `/metrics`, which
    /// needs no login and a scraper may call often); `None` if they cannot be counted now.
    /// One request at a time counts them again ([`counts_once`]).
    pub async fn risk_counts(&self, max_age: Duration) -> Option<BTreeMap<Rule, u64>> {
        counts_once(
            &self.risk_counts,
            &self.risk_recount,
            Instant::now(),
            max_age,
            async {
                match self.risk().await {
                    Ok(report) => Some(report.counts),
                    Err(e) => {
                        tracing::warn!(error = %e, "risk alerts could not be counted");
                        None
                    }
                }
            },
        )
        .await
    }

    /// What wallets may still spend offline: the open escrows by currency, by holder and by
    /// expiry.
    pub async fn exposure(&self) -> Result<Exposure, ServerError> {
        let now = self.clock.now();
        let scan = i64::try_from(MAX_SCANNED + 1).expect("a small constant");
        let mut rows = reports::open_escrows(&self.db, scan).await?;
        let truncated = rows.len() > MAX_SCANNED;
        rows.truncate(MAX_SCANNED);
        // Up to 100,000 certificates to decode: CPU work, off the async workers.
        cpu(move || {
            let open: Vec<_> = rows.iter().map(reports::EscrowRow::open).collect();
            exposure::summarize(&open, now, truncated)
        })
        .await
    }

    /// The exposure's totals, for the overview. When this issuer issues a single currency (its
    /// descriptor's), every open escrow is in it, so the database sums them and no certificate
    /// is read; otherwise this is the whole report ([`Server::exposure`]). Only `allowances`,
    /// `holders` and `by_currency` are filled in (and `truncated`, false).
    pub async fn exposure_totals(&self) -> Result<Exposure, ServerError> {
        let [currency] = self.descriptor.body().currencies.as_slice() else {
            return self.exposure().await;
        };
        let at = self.clock.now();
        let t = reports::open_totals(&self.db).await?;
        let sat = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        let by_currency = if t.allowances == 0 {
            Vec::new()
        } else {
            vec![CurrencyExposure {
                currency: currency.clone(),
                allowances: t.allowances,
                limit: sat(t.limit),
                settled: sat(t.settled),
                outstanding: sat(t.limit.saturating_sub(t.settled)),
            }]
        };
        Ok(Exposure {
            at,
            allowances: t.allowances,
            holders: t.holders,
            by_currency,
            by_holder: Vec::new(),
            expiries: Vec::new(),
            truncated: false,
        })
    }

    /// Refusals by reason: the stored ones, and all decided since this server started.
    pub async fn refusals(&self) -> Result<Refusals, ServerError> {
        let stored = reports::refusals(&self.db)
            .await?
            .into_iter()
            .map(|(code, count)| ReasonCount {
                reason: Reason::from_code(code)
                    .map_or_else(|| format!("code {code}"), |r| r.name().to_owned()),
                count,
            })
            .collect();
        let since_start = self
            .live
            .refusals()
            .into_iter()
            .map(|(reason, count)| ReasonCount {
                reason: reason.to_owned(),
                count,
            })
            .collect();
        Ok(Refusals {
            stored,
            since_start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn counts(n: u64) -> BTreeMap<Rule, u64> {
        BTreeMap::from([(Rule::Fraud, n)])
    }

    fn counted(n: u64) -> impl Future<Output = Option<BTreeMap<Rule, u64>>> {
        std::future::ready(Some(counts(n)))
    }

    fn never() -> impl Future<Output = Option<BTreeMap<Rule, u64>>> {
        std::future::poll_fn(|_| panic!("counted again when it should not be"))
    }

    #[tokio::test]
    async fn one_request_counts_the_others_answer_the_last_counts() {
        let cache = Mutex::new(CountsCache::default());
        let gate = tokio::sync::Mutex::new(());
        let t0 = Instant::now();
        let age = Duration::from_secs(5);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            counts_once(&cache, &gate, t0, age, counted(1)).await,
            Some(counts(1))
        );
        // Fresh: answered without counting.
        assert_eq!(
            counts_once(&cache, &gate, at(1), age, never()).await,
            Some(counts(1))
        );
        // A new alert makes them stale, but keeps them: while one request counts again (it
        // holds the gate), the others answer the last counts instead of counting too.
        cache.lock().expect("not poisoned").mark_stale();
        let counting = gate.try_lock().expect("free");
        assert_eq!(
            counts_once(&cache, &gate, at(2), age, never()).await,
            Some(counts(1))
        );
        drop(counting);
        assert_eq!(
            counts_once(&cache, &gate, at(2), age, counted(2)).await,
            Some(counts(2))
        );
        // Too old: counted again.
        assert_eq!(
            counts_once(&cache, &gate, at(10), age, counted(3)).await,
            Some(counts(3))
        );
        // An alert raised while counting leaves the new counts stale.
        cache.lock().expect("not poisoned").mark_stale();
        let racing = async {
            cache.lock().expect("not poisoned").mark_stale();
            Some(counts(4))
        };
        assert_eq!(
            counts_once(&cache, &gate, at(11), age, racing).await,
            Some(counts(4))
        );
        assert_eq!(
            counts_once(&cache, &gate, at(11), age, counted(5)).await,
            Some(counts(5))
        );
        // A failed count stores nothing; the last counts stay for the others.
        cache.lock().expect("not poisoned").mark_stale();
        assert_eq!(
            counts_once(&cache, &gate, at(12), age, async { None }).await,
            None
        );
        assert_eq!(cache.lock().expect("not poisoned").last(), Some(counts(5)));
    }
}
