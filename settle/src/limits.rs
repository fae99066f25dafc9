//! What the settlement server lets one source cost it.
//!
//! Uploads carry no identity: a gateway is whoever reaches the server. Opening a sealed record
//! costs an X25519 agreement whether the record is genuine or random bytes with the issuer's
//! id, so a source is charged for every input that turns out not to open, and once its budget
//! is spent its uploads are refused before they are read (`429`, `Retry-After`). Genuine
//! records cost their source nothing, so a gateway is never slowed by its own uploads, only a
//! source of junk by its junk.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most sources remembered at once; past it, sources whose budget is whole are forgotten
/// first, then the ones refilled longest ago.
const MAX_SOURCES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per source address for inputs that do not open.
#[derive(Debug)]
pub struct JunkBudget {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<BTreeMap<IpAddr, Bucket>>,
}

impl Default for JunkBudget {
    fn default() -> Self {
        Self::new(1024, 128)
    }
}

impl JunkBudget {
    /// `burst` inputs that do not open at once per source, refilled at `per_sec` a second.
    pub fn new(burst: u32, per_sec: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_sec.max(1)),
            buckets: Mutex::new(BTreeMap::new()),
        }
    }

    fn with<R>(&self, source: IpAddr, f: impl FnOnce(&mut Bucket) -> R) -> R {
        let now = Instant::now();
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_SOURCES && !map.contains_key(&source) {
            let (burst, per_sec) = (self.burst, self.per_sec);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
            if map.len() >= MAX_SOURCES {
                if let Some(oldest) = map.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        let b = map.entry(source).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.at = now;
        f(b)
    }

    /// Whether `source` may have more inputs opened now (an unknown source always may).
    pub fn allows(&self, source: Option<IpAddr>) -> bool {
        source.is_none_or(|s| self.with(s, |b| b.tokens > 0.0))
    }

    /// Charges `source` for `n` inputs that did not open.
    pub fn charge(&self, source: Option<IpAddr>, n: u64) {
        if let (Some(s), true) = (source, n > 0) {
            #[allow(clippy::cast_precision_loss)] // batches hold at most 4,096 inputs
            self.with(s, |b| b.tokens -= n as f64);
        }
    }

    /// How long until `source` may upload again, if its budget is spent now.
    pub fn retry_after(&self, source: Option<IpAddr>) -> Option<Duration> {
        let s = source?;
        let per_sec = self.per_sec;
        self.with(s, |b| {
            (b.tokens <= 0.0).then(|| Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_spends_a_source_budget_and_others_keep_theirs() {
        let budget = JunkBudget::new(100, 10);
        let (a, b) = (
            Some(IpAddr::from([127, 0, 0, 2])),
            Some(IpAddr::from([127, 0, 0, 3])),
        );
        assert!(budget.allows(a));
        budget.charge(a, 99);
        assert!(budget.allows(a));
        assert_eq!(budget.retry_after(a), None);
        budget.charge(a, 50);
        assert!(!budget.allows(a));
        let wait = budget.retry_after(a).expect("spent");
        assert!(
            wait > Duration::from_secs(4) && wait < Duration::from_secs(6),
            "{wait:?}"
        );
        assert!(budget.allows(b));
        assert!(budget.allows(None));
        budget.charge(None, 1_000_000);
        assert!(budget.allows(None));
    }
}
