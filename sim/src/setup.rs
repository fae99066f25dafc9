//! Setting up a run: the contacts (from a mobility model or a trace), the messages (from the
//! generator or a trace), and the nodes' devices.

use crate::clock::now;
use crate::engine::{Node, RunError, ms};
use crate::groups::{Hosts, Walking};
use crate::market::{Market, Role};
use crate::mobility::{self, Waypoint};
use crate::scenario::{Mobility, Scenario};
use crate::trace::{ContactEvent, MessageEvent};
use meshpay_protocol::DeviceSecret;
use meshpay_protocol::bundle::{Bundle, BundleKind, Content, MAX_BUNDLE, PlainMessage};
use meshpay_protocol::codec::{Blob, VERSION};
use meshpay_protocol::device::{Device, DeviceConfig, DeviceInit};
use meshpay_protocol::store::{BodyPool, BundleStore, StoreConfig};
use meshpay_protocol::wallet::{HeldAllowance, Wallet};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::BTreeSet;

fn read(path: &std::path::Path) -> Result<String, RunError> {
    std::fs::read_to_string(path).map_err(|e| RunError::Trace {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

/// The contacts of walkers on the road map in `files`.
fn map_contacts(
    scenario: &Scenario,
    files: &[std::path::PathBuf],
    hosts: (&[Walking], &[f64]),
    (step_s, warmup_s): (f64, f64),
) -> Result<Vec<ContactEvent>, RunError> {
    let texts = files
        .iter()
        .map(|f| read(f))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let map = crate::map::RoadMap::from_wkt(&refs).map_err(|e| RunError::Trace {
        path: files
            .get(e.file)
            .map_or_else(String::new, |f| f.display().to_string()),
        why: e.to_string(),
    })?;
    let walked = crate::map::map_walk(
        &map,
        hosts,
        step_s,
        scenario.duration_s + warmup_s,
        scenario.seed,
    );
    Ok(mobility::after_warmup(walked, crate::engine::ms(warmup_s)))
}

/// The contacts a run replays: from the mobility model (drawn from the seed) or a trace.
pub(crate) fn contacts(
    scenario: &Scenario,
    hosts: &Hosts,
    duration_ms: u64,
) -> Result<Vec<ContactEvent>, RunError> {
    let n = scenario.nodes;
    let ranges = hosts.ranges();
    let walking: Vec<Walking> = (0..n).filter_map(|i| hosts.of_host(i).walking).collect();
    Ok(match &scenario.mobility {
        Mobility::RandomWaypoint {
            width_m,
            height_m,
            step_s,
            warmup_s,
            ..
        }
        | Mobility::RandomWalk {
            width_m,
            height_m,
            step_s,
            warmup_s,
            ..
        } => {
            let w = Waypoint {
                width: *width_m,
                height: *height_m,
                step: *step_s,
            };
            let (duration, seed) = (scenario.duration_s + warmup_s, scenario.seed);
            let walked = match &scenario.mobility {
                Mobility::RandomWalk { distance_max_m, .. } => {
                    mobility::random_walk(&w, *distance_max_m, (&walking, &ranges), duration, seed)
                }
                _ => mobility::random_waypoint(&w, &walking, &ranges, duration, seed),
            };
            mobility::after_warmup(walked, crate::engine::ms(*warmup_s))
        }
        Mobility::Market {
            width_m,
            height_m,
            signal_distance_m,
            agents,
            speed_min,
            speed_max,
            browse_max_s,
            agent_wait_s,
            step_s,
        } => mobility::market_day(
            &mobility::MarketDay {
                width: *width_m,
                height: *height_m,
                signal_distance: *signal_distance_m,
                vendors: scenario.payments.vendors.min(n),
                gateways: scenario.payments.gateways,
                agents: *agents,
                speed_min: *speed_min,
                speed_max: *speed_max,
                browse_max: *browse_max_s,
                agent_wait: *agent_wait_s,
                step: *step_s,
                range: scenario.radio.range_m,
            },
            n,
            scenario.duration_s,
            scenario.seed,
        ),
        Mobility::Map {
            files,
            step_s,
            warmup_s,
            ..
        } => map_contacts(scenario, files, (&walking, &ranges), (*step_s, *warmup_s))?,
        Mobility::Trace { path } => {
            let c = crate::trace::parse_connections(&read(path)?).map_err(|e| RunError::Trace {
                path: path.display().to_string(),
                why: e.to_string(),
            })?;
            if let Some(e) = c.iter().find(|e| e.b >= n) {
                return Err(RunError::Host(e.b, n));
            }
            c.into_iter().filter(|e| e.t_ms <= duration_ms).collect()
        }
    })
}

/// The nodes' devices: each with its key, its allowance and the issuer it trusts (in a
/// payments run), a bundle store of the scenario's buffer size, and no timers of its own.
pub(crate) fn devices(
    scenario: &Scenario,
    hosts: &Hosts,
    seeds: &[[u8; 32]],
    market: Option<&Market>,
) -> Vec<Node> {
    // The devices' own choices draw from a stream of their own, so the workload drawn
    // below is the same whatever the devices do.
    let mut device_rng = ChaCha20Rng::seed_from_u64(scenario.seed ^ 0x6465_7669_6365);
    let bodies = BodyPool::new();
    (0..scenario.nodes)
        .map(|i| {
            let host = hosts.of_host(i);
            let config = DeviceConfig {
                routing: host.routing,
                // Timers are the engine's: sessions run at contacts and on its re-sync ticks.
                resend_every: None,
                sync_every: None,
                request_ttl_secs: 600,
                ..DeviceConfig::default()
            };
            let mut seed = [0u8; 32];
            device_rng.fill_bytes(&mut seed);
            let init = DeviceInit {
                secret: DeviceSecret::from_seed(&seeds[i as usize]),
                wallet: Wallet::open(
                    0,
                    market
                        .and_then(|m| m.allowance_of(i))
                        .cloned()
                        .map(HeldAllowance::new),
                    None,
                )
                .0,
                spent: BTreeSet::new(),
                issuers: market.iter().map(|m| m.descriptor().clone()).collect(),
                certs: Vec::new(),
                notices: Vec::new(),
                frauds: Vec::new(),
                sent: Vec::new(),
                received: Vec::new(),
                requests: Vec::new(),
                store: {
                    let mut store = BundleStore::new(StoreConfig {
                        max_bytes: host.buffer_kb << 10,
                        max_bundles: usize::MAX,
                        max_bytes_per_origin: host.buffer_kb << 10,
                        issuers: None,
                        bodies_in_memory: true,
                        accept_messages: true,
                    });
                    store.set_drop_oldest(scenario.routing.drop == "oldest");
                    // Every node holds copies of the same bundles: keep each body once.
                    store.share_bodies(bodies.clone());
                    store.set_drop_costliest(scenario.routing.drop == "maxprop");
                    store
                },
                seed,
                secrets: Box::new(ChaCha20Rng::from_seed(seed.map(|b| b ^ 0x5a))),
            };
            let mut device = Device::new(init, config);
            device.start(now(0));
            if let Some(m) = market.filter(|m| m.role(i) == Role::Gateway) {
                device.set_gateway_for(vec![m.issuer()]);
            }
            Node { device }
        })
        .collect()
}

/// The messages a run creates: read from the scenario's trace, or generated from the seed.
pub(crate) fn workload(
    scenario: &Scenario,
    rng: &mut ChaCha20Rng,
    duration_ms: u64,
) -> Result<Vec<MessageEvent>, RunError> {
    let n = scenario.nodes;
    let w = &scenario.workload;
    let creations = if let Some(path) = &w.trace {
        let m = crate::trace::parse_messages(&read(path)?).map_err(|e| RunError::Trace {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        if let Some(e) = m.iter().find(|e| e.from.max(e.to) >= n) {
            return Err(RunError::Host(e.from.max(e.to), n));
        }
        m
    } else if w.messages {
        let mut out = Vec::new();
        let until = if w.until_s > 0.0 {
            ms(w.until_s).min(duration_ms)
        } else {
            duration_ms
        };
        let mut t = ms(gap(rng, w.interval_min_s, w.interval_max_s));
        while t < until {
            let from = pick(rng, n);
            let mut to = pick(rng, n - 1);
            if to >= from {
                to += 1;
            }
            out.push(MessageEvent {
                t_ms: t,
                id: format!("M{}", out.len() + 1),
                from,
                to,
                size: w.size,
                response_size: w.response_size,
            });
            t += ms(gap(rng, w.interval_min_s, w.interval_max_s)).max(1);
        }
        out
    } else {
        Vec::new()
    };
    Ok(creations)
}

/// The gap before the next generated message. Whole-second bounds draw as The ONE's message
/// generator does: whole seconds, `min` plus a uniform draw from `0..max - min` (so `max`
/// itself never comes), or `min` when they are equal. Other bounds draw uniformly between them.
pub(crate) fn gap(rng: &mut ChaCha20Rng, min: f64, max: f64) -> f64 {
    let whole = |x: f64| x.fract() == 0.0 && (0.0..9.0e15).contains(&x);
    if whole(min) && whole(max) {
        // Whole and below 2^53: exact as integers.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let (lo, hi) = (min as u64, max as u64);
        if hi <= lo {
            return min;
        }
        #[allow(clippy::cast_precision_loss)]
        return (lo + rng.next_u64() % (hi - lo)) as f64;
    }
    mobility::uniform(rng, min, max)
}

fn pick(rng: &mut ChaCha20Rng, n: u32) -> u32 {
    u32::try_from(rng.next_u64() % u64::from(n)).expect("below n")
}

/// A message bundle of exactly `size` encoded bytes (or as close as the encoding allows).
pub(crate) fn sized_message(
    from: &DeviceSecret,
    to: &DeviceSecret,
    created: u64,
    expires: u64,
    n: u64,
    size: u32,
) -> Bundle {
    let make = |len: usize| {
        let mut payload = vec![0u8; len.max(8)];
        payload[..8].copy_from_slice(&n.to_le_bytes());
        Bundle::new(Content::Message(Box::new(PlainMessage {
            version: VERSION,
            from: from.public(),
            to: to.public(),
            created,
            expires,
            payload: Blob(payload),
        })))
    };
    let target = size as usize;
    let mut len = target.saturating_sub(make(8).bytes().len()) + 8;
    for _ in 0..4 {
        let got = make(len).bytes().len();
        if got == target {
            break;
        }
        len = (len + target).saturating_sub(got).min(MAX_BUNDLE);
    }
    let b = make(len.min(MAX_BUNDLE));
    debug_assert_eq!(b.meta().kind, BundleKind::Message);
    b
}

/// The largest message a run carries: 16 MiB, in 1,024-byte bundles.
pub(crate) const MAX_MESSAGE: u32 = 16 << 20;

/// The largest message bundle a peer takes: a plain message carries at most 900 bytes of
/// payload, which encodes to 981 bytes.
pub(crate) const MAX_PIECE: u32 = 981;

/// The bundle sizes a message of `size` bytes travels in: itself up to [`MAX_PIECE`] bytes;
/// beyond, the fewest bundles of at most that size, as even as can be (they add up to exactly
/// `size`, and being over 490 bytes each none hits a size the encoding cannot make).
pub(crate) fn fragment_sizes(size: u32) -> Vec<u32> {
    let k = size.div_ceil(MAX_PIECE).max(1);
    let (base, extra) = (size / k, size % k);
    (0..k).map(|i| base + u32::from(i < extra)).collect()
}

/// Checks that every message of `creations` can be made at exactly its size, in one bundle or
/// in [`fragment_sizes`]: a run never changes a size it was given.
pub(crate) fn check_sizes(creations: &[MessageEvent]) -> Result<(), RunError> {
    let key = DeviceSecret::from_seed(&[0; 32]);
    let mut seen = BTreeSet::new();
    for m in creations {
        if !seen.insert(m.size) {
            continue;
        }
        if m.size > MAX_MESSAGE {
            return Err(RunError::Scenario(format!(
                "message {}: {} bytes, more than the {MAX_MESSAGE} a run carries",
                m.id, m.size
            )));
        }
        if m.size > MAX_PIECE {
            // Fragments are all between 491 and MAX_PIECE bytes, which are all exact.
            continue;
        }
        let made = sized_message(&key, &key, 0, 0, 0, m.size).bytes().len();
        if made != m.size as usize {
            return Err(RunError::Scenario(format!(
                "message {}: a message bundle cannot be exactly {} bytes (the nearest is {made}; its encoding's length fields grow there)",
                m.id, m.size
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_message_is_made_at_exactly_its_size_or_refused() {
        let k = meshpay_protocol::DeviceSecret::from_seed(&[1; 32]);
        let inexact: Vec<u32> = (86..=1024u32)
            .filter(|&size| {
                super::sized_message(&k, &k, 1, 2, 7, size).bytes().len() != size as usize
            })
            .collect();
        // Where a CBOR length field grows by a byte, one size is skipped.
        assert_eq!(inexact, [102, 261, 336]);
        let event = |size| crate::trace::MessageEvent {
            t_ms: 0,
            id: "M1".into(),
            from: 0,
            to: 1,
            size,
            response_size: 0,
        };
        assert!(super::check_sizes(&[event(500), event(1024), event(86)]).is_ok());
        assert!(super::check_sizes(&[event(5000), event(1_000_000)]).is_ok());
        let big = super::check_sizes(&[event(super::MAX_MESSAGE + 1)])
            .unwrap_err()
            .to_string();
        assert!(big.contains("message M1: 16777217 bytes"), "{big}");
        // The largest message bundle a peer decodes, and the one past it.
        let decodes = |size| {
            let b = super::sized_message(&k, &k, 1, 2, 7, size);
            meshpay_protocol::bundle::Bundle::decode(b.bytes()).is_ok()
        };
        assert!(decodes(super::MAX_PIECE) && !decodes(super::MAX_PIECE + 1));
        // Fragments: the fewest, even, exact, adding up.
        assert_eq!(super::fragment_sizes(981), vec![981]);
        assert_eq!(super::fragment_sizes(982), vec![491, 491]);
        assert_eq!(super::fragment_sizes(1024), vec![512, 512]);
        assert_eq!(super::fragment_sizes(5886), vec![981; 6]);
        let f = super::fragment_sizes(1_000_001);
        assert_eq!(f.len(), 1020);
        assert_eq!(f.iter().map(|&s| u64::from(s)).sum::<u64>(), 1_000_001);
        assert!(f.iter().all(|&s| (491..=981).contains(&s) && decodes(s)));
        for &s in &f[..2] {
            assert_eq!(
                super::sized_message(&k, &k, 1, 2, 7, s).bytes().len(),
                s as usize
            );
        }
        let odd = super::check_sizes(&[event(261)]).unwrap_err().to_string();
        assert!(odd.contains("exactly 261 bytes"), "{odd}");
    }
}

#[cfg(test)]
mod gap_tests {
    use super::gap;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng as _;

    #[test]
    fn whole_second_bounds_draw_whole_seconds_below_the_upper_bound() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let g = gap(&mut rng, 25.0, 35.0);
            assert!(g.fract().abs() < f64::EPSILON, "{g}");
            assert!((25.0..35.0).contains(&g), "{g}");
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            seen.insert(g as u64);
        }
        assert_eq!(seen, (25..35).collect(), "every whole second from 25 to 34");
        assert!((gap(&mut rng, 30.0, 30.0) - 30.0).abs() < f64::EPSILON);
        let g = gap(&mut rng, 0.5, 1.5);
        assert!((0.5..=1.5).contains(&g) && g.fract().abs() > f64::EPSILON);
    }
}
