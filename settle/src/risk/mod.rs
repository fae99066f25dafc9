//! Risk rules: what the issuer's staff are warned about, and the live signals behind them.
//!
//! Six rules raise [`Alert`]s:
//!
//! | rule | raised when | from |
//! |---|---|---|
//! | `fraud` | a fraud proof stands against an allowance still open | the database |
//! | `revoked` | an open allowance was revoked (other than for a proven fork) | the database |
//! | `near_limit` | an open allowance has settled at least [`RiskRules::near_limit_percent`] of its limit | the database |
//! | `velocity` | one allowance decided at least [`RiskRules::velocity_payments`] payments (refusals that claimed a slot included), or settled [`RiskRules::velocity_value`] minor units, within an hour | memory |
//! | `forked_payee` | a payee received IOUs under an allowance later proven forked | memory |
//! | `junk_source` | one source uploaded at least [`RiskRules::junk_per_hour`] inputs that do not open within an hour | memory |
//!
//! The durable rules read the books each time they are asked, so they survive a restart. The
//! live ones are counted here, in a [`Monitor`], as settlement decides records: they start
//! empty when the server starts, and every map the monitor keeps is capped (the entry touched
//! longest ago goes first), so a flood of records or sources costs bounded memory.
//!
//! The monitor is sans-IO: every call takes the time (`now`, Unix seconds, the server's
//! clock), and returns the alerts it newly raised, which the server publishes on the live
//! feed. Call [`Monitor::payment`] for each payment decided at settlement,
//! [`Monitor::escrow_moved`] for each escrow whose settled total moved, [`Monitor::fork`] for
//! each allowance newly proven forked, [`Monitor::junk`] for inputs from a source that did not
//! open, and [`Monitor::alerts`] for the live alerts standing now.
//!
//! Windows slide over the last hour at a one-minute resolution: a payment counts while the
//! minute it was seen in started less than an hour ago. A payment is counted once per
//! `(allowance, counter)` within the window, so a record uploaded again, or both sides of a
//! double spend, count once.

use meshpay_protocol::{AllowanceId, DeviceKey, PrintableKey as _};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use utoipa::ToSchema;

/// Length of the sliding windows, in seconds.
pub const WINDOW_SECS: u64 = 3600;
/// How long a payee stays flagged after its last IOU under a forked allowance, in seconds.
pub const FORKED_PAYEE_SECS: u64 = 86_400;

/// Allowances whose velocity is watched at once.
const MAX_WATCHED: usize = 16_384;
/// `(allowance, counter)` pairs remembered to count each payment once.
const MAX_SEEN: usize = 65_536;
/// Allowances whose recent payees are remembered.
const MAX_PAYEE_SETS: usize = 4_096;
/// Payees remembered per allowance: the most recent, so a clone cannot hide its victims by
/// paying throwaway payees first.
const MAX_PAYEES_PER_ALLOWANCE: usize = 32;
/// Allowances remembered as forked.
const MAX_FORKED: usize = 4_096;
/// Payees flagged at once.
const MAX_FORKED_PAYEES: usize = 4_096;
/// Forked allowances remembered per flagged payee.
const MAX_FORKS_PER_PAYEE: usize = 16;
/// Sources whose junk is counted at once.
const MAX_SOURCES: usize = 4_096;
/// Allowances whose near-limit crossing time is remembered.
const MAX_NEAR: usize = 16_384;

/// The thresholds of the rules, from the server's configuration (`meshpay settle serve
/// --risk-…`). A threshold of 0 turns its rule off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RiskRules {
    /// `velocity`: payments settled under one allowance within an hour (0: off).
    pub velocity_payments: u64,
    /// `velocity`: value settled under one allowance within an hour, in minor units (0: off).
    pub velocity_value: u64,
    /// `near_limit`: percent of an open allowance's limit settled (1 to 100; 0: off).
    pub near_limit_percent: u64,
    /// `junk_source`: inputs that do not open from one source within an hour (0: off).
    pub junk_per_hour: u64,
}

impl Default for RiskRules {
    fn default() -> Self {
        Self {
            velocity_payments: 60,
            velocity_value: 0,
            near_limit_percent: 90,
            junk_per_hour: 10,
        }
    }
}

impl RiskRules {
    /// Whether `settled` out of `limit` is near the limit (never when the rule is off).
    pub fn near_limit(&self, limit: u64, settled: u64) -> bool {
        self.near_limit_percent > 0
            && limit > 0
            && u128::from(settled) * 100 >= u128::from(limit) * u128::from(self.near_limit_percent)
    }
}

/// A rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A fraud proof stands against an open allowance.
    Fraud,
    /// An open allowance was revoked.
    Revoked,
    /// An allowance settles fast.
    Velocity,
    /// An open allowance has settled most of its limit.
    NearLimit,
    /// A payee received IOUs under a forked allowance.
    ForkedPayee,
    /// A source uploads inputs that do not open.
    JunkSource,
}

impl Rule {
    /// Every rule, in the order pages and metrics list them.
    pub const ALL: [Rule; 6] = [
        Rule::Fraud,
        Rule::Revoked,
        Rule::Velocity,
        Rule::NearLimit,
        Rule::ForkedPayee,
        Rule::JunkSource,
    ];

    /// The rule's name, as in JSON and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Fraud => "fraud",
            Rule::Revoked => "revoked",
            Rule::Velocity => "velocity",
            Rule::NearLimit => "near_limit",
            Rule::ForkedPayee => "forked_payee",
            Rule::JunkSource => "junk_source",
        }
    }
}

/// An alert: one rule's finding about one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Alert {
    /// The rule.
    pub rule: Rule,
    /// What it is about: an allowance id (hex), a payee key (`mpdev1…`) or a source address.
    pub subject: String,
    /// One sentence for people.
    pub detail: String,
    /// The measured value (payments, minor units, percent, count; 1 for a fact).
    pub value: u64,
    /// The threshold it reached.
    pub threshold: u64,
    /// Since when, in Unix seconds.
    pub since: u64,
}

impl Alert {
    /// A fraud proof against `allowance` of `holder`, at `counter`, found at `since`.
    pub fn fraud(allowance: &AllowanceId, holder: &DeviceKey, counter: u32, since: u64) -> Self {
        Self {
            rule: Rule::Fraud,
            subject: allowance.to_hex(),
            detail: format!(
                "forked by its holder {}: two IOUs signed for counter {counter}",
                holder.to_text()
            ),
            value: 1,
            threshold: 1,
            since,
        }
    }

    /// A revocation of `allowance` of `holder` for `reason`, made at `since`.
    pub fn revoked(allowance: &AllowanceId, holder: &DeviceKey, reason: &str, since: u64) -> Self {
        Self {
            rule: Rule::Revoked,
            subject: allowance.to_hex(),
            detail: format!("revoked ({reason}); its holder is {}", holder.to_text()),
            value: 1,
            threshold: 1,
            since,
        }
    }

    /// `allowance` of `holder` has settled `settled` of `limit` (`currency`).
    pub fn near_limit(
        rules: &RiskRules,
        allowance: &AllowanceId,
        holder: &DeviceKey,
        currency: &str,
        limit: u64,
        settled: u64,
        since: u64,
    ) -> Self {
        let percent = u128::from(settled) * 100 / u128::from(limit.max(1));
        Self {
            rule: Rule::NearLimit,
            subject: allowance.to_hex(),
            detail: format!(
                "allowance of holder {} has settled {settled} of its {limit} {currency} ({percent}%)",
                holder.to_text()
            ),
            value: u64::try_from(percent).unwrap_or(u64::MAX),
            threshold: rules.near_limit_percent,
            since,
        }
    }
}

/// Alerts listed at most per rule in a report (the newest); the counts cover all.
pub const MAX_ALERTS_PER_RULE: usize = 100;

/// The alerts standing now and the rules' thresholds: what `/admin/risk` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RiskReport {
    /// When it was made (Unix seconds).
    pub at: u64,
    /// The alerts standing, newest first (at most 100 per rule).
    pub alerts: Vec<Alert>,
    /// The thresholds.
    pub rules: RiskRules,
    /// How many alerts stand per rule, every rule listed (0 included).
    pub counts: BTreeMap<Rule, u64>,
}

impl RiskReport {
    /// A report at `at` from the alerts of each rule (the durable ones with their full counts,
    /// which may pass what the lists hold).
    pub fn new(at: u64, rules: RiskRules, mut alerts: Vec<Alert>, counted: &[(Rule, u64)]) -> Self {
        let mut counts: BTreeMap<Rule, u64> = Rule::ALL.iter().map(|r| (*r, 0)).collect();
        for a in &alerts {
            *counts.entry(a.rule).or_default() += 1;
        }
        for (rule, n) in counted {
            counts.insert(*rule, *n);
        }
        alerts.sort_by(|a, b| {
            b.since
                .cmp(&a.since)
                .then(a.rule.cmp(&b.rule))
                .then_with(|| a.subject.cmp(&b.subject))
        });
        let mut listed: BTreeMap<Rule, usize> = BTreeMap::new();
        alerts.retain(|a| {
            let n = listed.entry(a.rule).or_default();
            *n += 1;
            *n <= MAX_ALERTS_PER_RULE
        });
        Self {
            at,
            alerts,
            rules,
            counts,
        }
    }
}

/// A payment decided at settlement, as the monitor counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    /// The allowance it was paid under.
    pub allowance: AllowanceId,
    /// Its counter.
    pub counter: u32,
    /// The allowance's holder.
    pub holder: DeviceKey,
    /// Who was paid.
    pub payee: DeviceKey,
    /// How much, in minor units.
    pub amount: u64,
    /// Whether it settled. A refused record that claimed its slot (a double spend, a spend
    /// past the limit, an expired allowance…) still counts as a payment toward `velocity` —
    /// the holder tried to pay — but its amount moved nothing, so it counts no value.
    pub settled: bool,
}

/// A map of at most `cap` entries: making one past the cap drops the entry touched longest
/// ago.
#[derive(Debug)]
struct Capped<K, V> {
    cap: usize,
    next: u64,
    entries: BTreeMap<K, (u64, V)>,
    order: BTreeMap<u64, K>,
}

impl<K: Ord + Clone, V> Capped<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            next: 0,
            entries: BTreeMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.entries.get(k).map(|e| &e.1)
    }

    fn contains(&self, k: &K) -> bool {
        self.entries.contains_key(k)
    }

    /// The entry for `k` (made by `make` if absent), now the newest.
    fn touch(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        // Already the newest (a run of payments under one allowance): nothing to reorder.
        let newest = self.next.checked_sub(1);
        if self.entries.get(&k).is_some_and(|e| Some(e.0) == newest) {
            return &mut self.entries.get_mut(&k).expect("just found").1;
        }
        let stamp = self.next;
        self.next += 1;
        if let Some((old, _)) = self.entries.get(&k) {
            self.order.remove(old);
        } else if self.entries.len() >= self.cap {
            if let Some((_, oldest)) = self.order.pop_first() {
                self.entries.remove(&oldest);
            }
        }
        self.order.insert(stamp, k.clone());
        let e = self.entries.entry(k).or_insert_with(|| (stamp, make()));
        e.0 = stamp;
        &mut e.1
    }

    /// Keeps the entries for which `keep` is true.
    fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let order = &mut self.order;
        self.entries.retain(|k, (stamp, v)| {
            let kept = keep(k, v);
            if !kept {
                order.remove(stamp);
            }
            kept
        });
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, (_, v))| (k, v))
    }
}

/// Payments counted lately, by `(allowance, counter)`, forgotten in the order counted: once
/// out of the window, or past the cap.
#[derive(Debug)]
struct Seen {
    cap: usize,
    set: BTreeSet<(AllowanceId, u32)>,
    queue: VecDeque<(u64, AllowanceId, u32)>,
}

impl Seen {
    fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            set: BTreeSet::new(),
            queue: VecDeque::new(),
        }
    }

    /// Counts `(allowance, counter)` at `now`: whether it is new.
    fn first(&mut self, allowance: AllowanceId, counter: u32, now: u64) -> bool {
        while let Some(&(at, a, c)) = self.queue.front() {
            if at.saturating_add(WINDOW_SECS) > now && self.queue.len() < self.cap {
                break;
            }
            self.queue.pop_front();
            self.set.remove(&(a, c));
        }
        if !self.set.insert((allowance, counter)) {
            return false;
        }
        self.queue.push_back((now, allowance, counter));
        true
    }

    fn len(&self) -> usize {
        self.set.len()
    }
}

/// Counts and sums over the last hour, by minute. The sums are `u128` and every step
/// saturates both ways, so no run of amounts (each up to `u64::MAX`) can overflow a total or
/// take one below zero as minutes leave the window.
#[derive(Debug, Clone, Default)]
struct Window {
    /// `(minute, count, value)`, oldest first.
    minutes: VecDeque<(u64, u128, u128)>,
    count: u128,
    value: u128,
}

impl Window {
    /// Drops the minutes that started an hour or more before `now`.
    fn slide(&mut self, now: u64) {
        while let Some(&(minute, count, value)) = self.minutes.front() {
            if minute.saturating_mul(60).saturating_add(WINDOW_SECS) > now {
                break;
            }
            self.minutes.pop_front();
            self.count = self.count.saturating_sub(count);
            self.value = self.value.saturating_sub(value);
        }
    }

    fn add(&mut self, now: u64, count: u64, value: u64) {
        self.slide(now);
        let (count, value) = (u128::from(count), u128::from(value));
        let minute = now / 60;
        match self.minutes.back_mut() {
            // A clock set back counts into the newest minute.
            Some(last) if last.0 >= minute => {
                last.1 = last.1.saturating_add(count);
                last.2 = last.2.saturating_add(value);
            }
            _ => self.minutes.push_back((minute, count, value)),
        }
        self.count = self.count.saturating_add(count);
        self.value = self.value.saturating_add(value);
    }

    /// The payments (or inputs) in the window.
    fn count(&self) -> u64 {
        u64::try_from(self.count).unwrap_or(u64::MAX)
    }

    /// The value in the window.
    fn value(&self) -> u64 {
        u64::try_from(self.value).unwrap_or(u64::MAX)
    }

    fn is_empty(&self) -> bool {
        self.minutes.is_empty()
    }
}

/// Whether `measured` reached a threshold that is on; `over` holds since when, and is set on
/// crossing (`true` returned) and cleared once under.
fn crossed(threshold: u64, measured: u64, over: &mut Option<u64>, now: u64) -> bool {
    if threshold > 0 && measured >= threshold {
        if over.is_none() {
            *over = Some(now);
            return true;
        }
    } else {
        *over = None;
    }
    false
}

#[derive(Debug)]
struct Velocity {
    holder: DeviceKey,
    window: Window,
    payments_over: Option<u64>,
    value_over: Option<u64>,
}

impl Velocity {
    /// Re-checks both thresholds at `now`: the alerts newly crossed, then (with `all`) those
    /// standing.
    fn check(
        &mut self,
        allowance: &AllowanceId,
        rules: &RiskRules,
        now: u64,
        all: bool,
    ) -> Vec<Alert> {
        self.window.slide(now);
        let new_payments = crossed(
            rules.velocity_payments,
            self.window.count(),
            &mut self.payments_over,
            now,
        );
        let new_value = crossed(
            rules.velocity_value,
            self.window.value(),
            &mut self.value_over,
            now,
        );
        let mut out = Vec::new();
        if let Some(since) = self.payments_over.filter(|_| all || new_payments) {
            out.push(Alert {
                rule: Rule::Velocity,
                subject: allowance.to_hex(),
                detail: format!(
                    "holder {} paid {} times under this allowance in the last hour",
                    self.holder.to_text(),
                    self.window.count()
                ),
                value: self.window.count(),
                threshold: rules.velocity_payments,
                since,
            });
        }
        if let Some(since) = self.value_over.filter(|_| all || new_value) {
            out.push(Alert {
                rule: Rule::Velocity,
                subject: allowance.to_hex(),
                detail: format!(
                    "holder {} paid {} minor units under this allowance in the last hour",
                    self.holder.to_text(),
                    self.window.value()
                ),
                value: self.window.value(),
                threshold: rules.velocity_value,
                since,
            });
        }
        out
    }
}

#[derive(Debug)]
struct ForkedPayee {
    allowances: BTreeSet<AllowanceId>,
    since: u64,
    last: u64,
}

impl ForkedPayee {
    fn alert(&self, payee: &DeviceKey) -> Alert {
        let ids: Vec<String> = self.allowances.iter().map(AllowanceId::to_hex).collect();
        Alert {
            rule: Rule::ForkedPayee,
            subject: payee.to_text(),
            detail: format!(
                "received IOUs under {} allowance(s) proven forked: {}",
                ids.len(),
                ids.join(", ")
            ),
            value: ids.len() as u64,
            threshold: 1,
            since: self.since,
        }
    }
}

#[derive(Debug, Default)]
struct Junk {
    window: Window,
    over: Option<u64>,
}

impl Junk {
    fn alert(&self, source: &IpAddr, rules: &RiskRules) -> Option<Alert> {
        self.over.map(|since| Alert {
            rule: Rule::JunkSource,
            subject: source.to_string(),
            detail: format!(
                "uploaded {} inputs that do not open in the last hour",
                self.window.count()
            ),
            value: self.window.count(),
            threshold: rules.junk_per_hour,
            since,
        })
    }
}

/// The live signals: velocity per allowance, recent payees of allowances, forked payees and
/// junk per source, each in a capped map (see the module doc).
#[derive(Debug)]
pub struct Monitor {
    rules: RiskRules,
    velocity: Capped<AllowanceId, Velocity>,
    /// The payments counted in the window.
    seen: Seen,
    /// The most recent payees of each allowance, oldest first. Only memory: the books cannot
    /// complete the list cheaply when a fork is proven. `slots` keeps the payee only inside
    /// each encoded IOU (no column to select or index on), so finding an allowance's payees
    /// there means decoding every slot it claimed; and it keeps one IOU per counter, the
    /// first to claim it, so the other side of a double spend is only in its fraud proof
    /// (`records` keeps receipts, which do not name the payee).
    payees: Capped<AllowanceId, VecDeque<DeviceKey>>,
    /// Allowances proven forked, and when.
    forked: Capped<AllowanceId, u64>,
    forked_payees: Capped<DeviceKey, ForkedPayee>,
    junk: Capped<IpAddr, Junk>,
    /// When open allowances crossed the near-limit threshold.
    near: Capped<AllowanceId, u64>,
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new(RiskRules::default())
    }
}

impl Monitor {
    /// An empty monitor for `rules`.
    pub fn new(rules: RiskRules) -> Self {
        Self {
            rules,
            velocity: Capped::new(MAX_WATCHED),
            seen: Seen::new(MAX_SEEN),
            payees: Capped::new(MAX_PAYEE_SETS),
            forked: Capped::new(MAX_FORKED),
            forked_payees: Capped::new(MAX_FORKED_PAYEES),
            junk: Capped::new(MAX_SOURCES),
            near: Capped::new(MAX_NEAR),
        }
    }

    /// The thresholds.
    pub fn rules(&self) -> &RiskRules {
        &self.rules
    }

    /// Counts a payment decided at settlement at `now` (a refusal that claims no slot, such as
    /// `unknown_payee`, is not one). Returns the alerts it raised: `velocity` on crossing a
    /// threshold, `forked_payee` if its allowance is known to be forked.
    pub fn payment(&mut self, p: &Payment, now: u64) -> Vec<Alert> {
        let mut out = Vec::new();
        // Every payee counts, the victim of a double spend too (same counter, other payee).
        // The most recent payees are kept: paid again, a payee becomes the newest; past the
        // cap, the one paid longest ago goes.
        let payees = self.payees.touch(p.allowance, VecDeque::new);
        if let Some(at) = payees.iter().position(|k| *k == p.payee) {
            payees.remove(at);
        }
        payees.push_back(p.payee);
        if payees.len() > MAX_PAYEES_PER_ALLOWANCE {
            payees.pop_front();
        }
        if self.forked.contains(&p.allowance) {
            out.extend(self.flag_payee(p.payee, p.allowance, now));
        }
        if !self.seen.first(p.allowance, p.counter, now) {
            return out;
        }
        let rules = self.rules;
        let v = self.velocity.touch(p.allowance, || Velocity {
            holder: p.holder,
            window: Window::default(),
            payments_over: None,
            value_over: None,
        });
        v.window.add(now, 1, if p.settled { p.amount } else { 0 });
        out.extend(v.check(&p.allowance, &rules, now, false));
        out
    }

    /// Notes that `allowance` was proven forked at `now`. Returns a `forked_payee` alert for
    /// each of its recent payees newly flagged.
    pub fn fork(&mut self, allowance: AllowanceId, now: u64) -> Vec<Alert> {
        if self.forked.contains(&allowance) {
            return Vec::new();
        }
        self.forked.touch(allowance, || now);
        let payees: Vec<DeviceKey> = self
            .payees
            .get(&allowance)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        payees
            .into_iter()
            .filter_map(|payee| self.flag_payee(payee, allowance, now))
            .collect()
    }

    /// Flags `payee` as paid under forked `allowance`: the alert if this is news.
    fn flag_payee(&mut self, payee: DeviceKey, allowance: AllowanceId, now: u64) -> Option<Alert> {
        let f = self.forked_payees.touch(payee, || ForkedPayee {
            allowances: BTreeSet::new(),
            since: now,
            last: now,
        });
        f.last = now;
        let new = !f.allowances.contains(&allowance) && f.allowances.len() < MAX_FORKS_PER_PAYEE;
        if new {
            f.allowances.insert(allowance);
        }
        new.then(|| f.alert(&payee))
    }

    /// Counts `n` inputs from `source` that did not open at `now`. Returns the `junk_source`
    /// alert if the source just crossed the threshold.
    pub fn junk(&mut self, source: IpAddr, n: u64, now: u64) -> Option<Alert> {
        if n == 0 {
            return None;
        }
        let rules = self.rules;
        let j = self.junk.touch(source, Junk::default);
        j.window.add(now, n, 0);
        if crossed(rules.junk_per_hour, j.window.count(), &mut j.over, now) {
            j.alert(&source, &rules)
        } else {
            None
        }
    }

    /// Notes that the settled total of `allowance` (limit `limit`, `currency`, holder
    /// `holder`) moved from `before` to `after` at `now`. Returns the `near_limit` alert if it
    /// just crossed the threshold.
    #[allow(clippy::too_many_arguments)] // the facts of one escrow move, all needed
    pub fn escrow_moved(
        &mut self,
        allowance: AllowanceId,
        holder: &DeviceKey,
        currency: &str,
        limit: u64,
        before: u64,
        after: u64,
        now: u64,
    ) -> Option<Alert> {
        let rules = self.rules;
        if rules.near_limit(limit, before) || !rules.near_limit(limit, after) {
            return None;
        }
        *self.near.touch(allowance, || now) = now;
        Some(Alert::near_limit(
            &rules, &allowance, holder, currency, limit, after, now,
        ))
    }

    /// When `allowance` was seen crossing the near-limit threshold, if it was since the
    /// server started.
    pub fn near_limit_since(&self, allowance: &AllowanceId) -> Option<u64> {
        self.near.get(allowance).copied()
    }

    /// The live alerts standing at `now`: `velocity`, `forked_payee` and `junk_source`. Also
    /// forgets what has slid out of its window.
    pub fn alerts(&mut self, now: u64) -> Vec<Alert> {
        let rules = self.rules;
        let mut out = Vec::new();
        self.velocity.retain(|allowance, v| {
            out.extend(v.check(allowance, &rules, now, true));
            !v.window.is_empty()
        });
        self.forked_payees
            .retain(|_, f| f.last.saturating_add(FORKED_PAYEE_SECS) > now);
        out.extend(self.forked_payees.iter().map(|(p, f)| f.alert(p)));
        self.junk.retain(|source, j| {
            j.window.slide(now);
            crossed(rules.junk_per_hour, j.window.count(), &mut j.over, now);
            out.extend(j.alert(source, &rules));
            !j.window.is_empty()
        });
        out
    }

    /// How many entries each map holds: velocity, seen, payee sets, forked, forked payees,
    /// sources, near-limit.
    pub fn sizes(&self) -> [usize; 7] {
        [
            self.velocity.len(),
            self.seen.len(),
            self.payees.len(),
            self.forked.len(),
            self.forked_payees.len(),
            self.junk.len(),
            self.near.len(),
        ]
    }
}

#[cfg(test)]
mod tests;
