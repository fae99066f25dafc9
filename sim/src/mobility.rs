//! Contacts from movement: random waypoint and random walk on a plane, and a market day; the
//! contacts come from the walkers' legs ([`crate::kinetic`]).

use crate::groups::Walking;
use crate::trace::{ContactEvent, Link};
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use std::collections::BTreeSet;

/// A uniform draw in `[lo, hi)` from 53 random bits.
// 53-bit values convert to f64 exactly.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn uniform(rng: &mut ChaCha20Rng, lo: f64, hi: f64) -> f64 {
    let u = (rng.next_u64() >> 11) as f64 / 9_007_199_254_740_992.0;
    lo + (hi - lo) * u
}

/// The area and time resolution of random-waypoint and random-walk movement.
#[derive(Debug, Clone, Copy)]
pub struct Waypoint {
    /// Area width, m.
    pub width: f64,
    /// Area height, m.
    pub height: f64,
    /// Time resolution of the contacts, s.
    pub step: f64,
}

/// Where a walker goes next: a target, a speed (0: it stays), and a pause on arrival.
#[derive(Debug, Clone, Copy)]
pub struct Leg {
    /// Target x, m.
    pub x: f64,
    /// Target y, m.
    pub y: f64,
    /// Speed, m/s (0: stays where it is).
    pub speed: f64,
    /// Pause on arrival, s.
    pub pause: f64,
}

/// The contacts of a run whose first `warmup_ms` are a warm-up: what happened before is
/// dropped, the clock starts after it, and pairs in range at that moment come up at 0.
pub fn after_warmup(events: Vec<ContactEvent>, warmup_ms: u64) -> Vec<ContactEvent> {
    if warmup_ms == 0 {
        return events;
    }
    let mut up: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut after = Vec::new();
    for e in events {
        if e.t_ms <= warmup_ms {
            match e.link {
                Link::Up => up.insert((e.a, e.b)),
                Link::Down => up.remove(&(e.a, e.b)),
            };
        } else {
            after.push(ContactEvent {
                t_ms: e.t_ms - warmup_ms,
                ..e
            });
        }
    }
    let mut out: Vec<ContactEvent> = up
        .into_iter()
        .map(|(a, b)| ContactEvent {
            t_ms: 0,
            a,
            b,
            link: Link::Up,
        })
        .collect();
    out.extend(after);
    out
}

/// Generates the contacts of random-waypoint walkers over `duration` seconds, in time order:
/// walker `i` walks as `walking[i]` says, with radio range `ranges[i]`. Nodes start at uniform
/// positions, already walking; [`after_warmup`] discards a warm-up.
pub fn random_waypoint(
    w: &Waypoint,
    walking: &[Walking],
    ranges: &[f64],
    duration: f64,
    seed: u64,
) -> Vec<ContactEvent> {
    let (width, height) = (w.width, w.height);
    walk(
        ranges,
        duration,
        w.step,
        (width, height),
        seed,
        |_, rng| (uniform(rng, 0.0, width), uniform(rng, 0.0, height)),
        |i, rng, first| {
            let to = (uniform(rng, 0.0, width), uniform(rng, 0.0, height));
            walking[i as usize].leg(rng, to, first)
        },
    )
}

/// The next point of a random walk from `(x, y)`: a uniform direction and a uniform distance
/// up to `distance_max`, redrawn until the point lies inside the area (at most 1,000 draws;
/// then the walker stays where it is).
pub fn walk_leg(
    rng: &mut ChaCha20Rng,
    (x, y): (f64, f64),
    distance_max: f64,
    (width, height): (f64, f64),
) -> (f64, f64) {
    for _ in 0..1000 {
        let angle = uniform(rng, 0.0, std::f64::consts::TAU);
        let d = uniform(rng, 0.0, distance_max);
        let (nx, ny) = (x + d * angle.cos(), y + d * angle.sin());
        if nx > 0.0 && ny > 0.0 && nx < width && ny < height {
            return (nx, ny);
        }
    }
    (x, y)
}

/// Generates the contacts of random walkers (see [`crate::scenario::Mobility::RandomWalk`])
/// over `duration` seconds, in time order; `walking` and `ranges` as for [`random_waypoint`].
pub fn random_walk(
    w: &Waypoint,
    distance_max: f64,
    (walking, ranges): (&[Walking], &[f64]),
    duration: f64,
    seed: u64,
) -> Vec<ContactEvent> {
    let (width, height) = (w.width, w.height);
    // Where each walker's current leg ends: the start of its next one. Both closures below
    // use it, one at a time.
    let ends: std::cell::RefCell<Vec<(f64, f64)>> = std::cell::RefCell::new(Vec::new());
    walk(
        ranges,
        duration,
        w.step,
        (width, height),
        seed,
        |_, rng| {
            let p = (uniform(rng, 0.0, width), uniform(rng, 0.0, height));
            ends.borrow_mut().push(p);
            p
        },
        |i, rng, first| {
            let mut ends = ends.borrow_mut();
            let from = ends[i as usize];
            let (x, y) = walk_leg(rng, from, distance_max, (width, height));
            ends[i as usize] = (x, y);
            walking[i as usize].leg(rng, (x, y), first)
        },
    )
}

/// The contacts of walkers over `duration` seconds, as a scan every `step` seconds reports
/// who is within range of whom (see [`crate::kinetic`]: found from the legs, not by
/// stepping). Walker `i` has radio range `ranges[i]`, and a pair is in range within the
/// shorter of theirs. `start` places walker `i`; `next` gives its next leg (`first` is true
/// for the first one).
// Scan counts are small and non-negative.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn walk(
    ranges: &[f64],
    duration: f64,
    step: f64,
    area: (f64, f64),
    seed: u64,
    start: impl FnMut(u32, &mut ChaCha20Rng) -> (f64, f64),
    next: impl FnMut(u32, &mut ChaCha20Rng, bool) -> Leg,
) -> Vec<ContactEvent> {
    let steps = (duration / step).ceil() as u64;
    let nodes = u32::try_from(ranges.len()).expect("node count fits u32");
    let ways = crate::kinetic::ways(nodes, steps, step, seed, start, next);
    crate::kinetic::contacts(
        &ways,
        ranges,
        step,
        steps,
        crate::engine::ms(duration),
        area,
    )
}

/// Market-day settings (see [`crate::scenario::Mobility::Market`]).
#[derive(Debug, Clone, Copy)]
pub struct MarketDay {
    /// Market width, m.
    pub width: f64,
    /// Market depth, m.
    pub height: f64,
    /// Distance from the market's east edge to the signal, m.
    pub signal_distance: f64,
    /// Vendors (nodes `0..vendors`).
    pub vendors: u32,
    /// Gateways (the next nodes).
    pub gateways: u32,
    /// Commuting agents (the next nodes).
    pub agents: u32,
    /// Slowest speed, m/s.
    pub speed_min: f64,
    /// Fastest speed, m/s.
    pub speed_max: f64,
    /// Longest browse, s.
    pub browse_max: f64,
    /// An agent's wait at the signal, s.
    pub agent_wait: f64,
    /// Time step, s.
    pub step: f64,
    /// Radio range, m.
    pub range: f64,
}

/// Generates the contacts of a market day.
// Stall counts are small.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
pub fn market_day(m: &MarketDay, nodes: u32, duration: f64, seed: u64) -> Vec<ContactEvent> {
    let cols = f64::from(m.vendors.max(1)).sqrt().ceil();
    let rows = (f64::from(m.vendors.max(1)) / cols).ceil();
    let stall = |i: u32| {
        let (c, r) = (f64::from(i) % cols, (f64::from(i) / cols).floor());
        (
            m.width * (c + 1.0) / (cols + 1.0),
            m.height * (r + 1.0) / (rows + 1.0),
        )
    };
    let signal = (m.width + m.signal_distance, m.height / 2.0);
    let agents_end = m.vendors + m.gateways + m.agents;
    // Agents alternate: odd legs to the signal, even legs back into the market.
    let mut legs = vec![0u32; nodes as usize];
    walk(
        &vec![m.range; nodes as usize],
        duration,
        m.step,
        (
            m.width + m.signal_distance + 10.0,
            m.height.max(signal.1 + 10.0),
        ),
        seed,
        |i, rng| {
            if i < m.vendors {
                stall(i)
            } else if i < m.vendors + m.gateways {
                (
                    signal.0 + uniform(rng, -3.0, 3.0),
                    signal.1 + uniform(rng, -3.0, 3.0),
                )
            } else {
                (uniform(rng, 0.0, m.width), uniform(rng, 0.0, m.height))
            }
        },
        |i, rng, first| {
            if i < m.vendors + m.gateways {
                return Leg {
                    x: 0.0,
                    y: 0.0,
                    speed: 0.0,
                    pause: 0.0,
                };
            }
            let speed = uniform(rng, m.speed_min, m.speed_max);
            if i < agents_end {
                let n = &mut legs[i as usize];
                *n += 1;
                if *n % 2 == 1 {
                    Leg {
                        x: signal.0 + uniform(rng, -3.0, 3.0),
                        y: signal.1 + uniform(rng, -3.0, 3.0),
                        speed,
                        pause: if first {
                            0.0
                        } else {
                            uniform(rng, 0.0, m.browse_max)
                        },
                    }
                } else {
                    Leg {
                        x: uniform(rng, 0.0, m.width),
                        y: uniform(rng, 0.0, m.height),
                        speed,
                        pause: m.agent_wait,
                    }
                }
            } else {
                let (sx, sy) = stall((rng.next_u64() % u64::from(m.vendors.max(1))) as u32);
                Leg {
                    x: (sx + uniform(rng, -2.0, 2.0)).clamp(0.0, m.width),
                    y: (sy + uniform(rng, -2.0, 2.0)).clamp(0.0, m.height),
                    speed,
                    pause: if first {
                        0.0
                    } else {
                        uniform(rng, 0.0, m.browse_max)
                    },
                }
            }
        },
    )
}
