//! Contacts from movement: random waypoint on a plane, stepped in time, with a grid of cells
//! one radio range wide so each step checks only neighbouring cells.

use crate::trace::{ContactEvent, Link};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::BTreeSet;

/// A uniform draw in `[lo, hi)` from 53 random bits.
// 53-bit values convert to f64 exactly.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn uniform(rng: &mut ChaCha20Rng, lo: f64, hi: f64) -> f64 {
    let u = (rng.next_u64() >> 11) as f64 / 9_007_199_254_740_992.0;
    lo + (hi - lo) * u
}

#[derive(Debug, Clone, Copy)]
struct Walker {
    x: f64,
    y: f64,
    tx: f64,
    ty: f64,
    speed: f64,
    pause_until: f64,
}

/// Random-waypoint settings.
#[derive(Debug, Clone, Copy)]
pub struct Waypoint {
    /// Area width, m.
    pub width: f64,
    /// Area height, m.
    pub height: f64,
    /// Slowest speed, m/s.
    pub speed_min: f64,
    /// Fastest speed, m/s.
    pub speed_max: f64,
    /// Longest pause, s.
    pub pause_max: f64,
    /// Time step, s.
    pub step: f64,
    /// Radio range, m.
    pub range: f64,
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

/// Generates the contacts of `nodes` random-waypoint walkers over `duration` seconds, in time
/// order. Nodes start at uniform positions, already walking; [`after_warmup`] discards a
/// warm-up.
pub fn random_waypoint(w: &Waypoint, nodes: u32, duration: f64, seed: u64) -> Vec<ContactEvent> {
    let (width, height) = (w.width, w.height);
    let (smin, smax, pmax) = (w.speed_min, w.speed_max, w.pause_max);
    walk(
        nodes,
        duration,
        w.step,
        w.range,
        (width, height),
        seed,
        |_, rng| (uniform(rng, 0.0, width), uniform(rng, 0.0, height)),
        |_, rng, first| Leg {
            x: uniform(rng, 0.0, width),
            y: uniform(rng, 0.0, height),
            speed: uniform(rng, smin, smax),
            pause: if first { 0.0 } else { uniform(rng, 0.0, pmax) },
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

/// Generates the contacts of `nodes` random walkers (see
/// [`crate::scenario::Mobility::RandomWalk`]) over `duration` seconds, in time order.
pub fn random_walk(
    w: &Waypoint,
    distance_max: f64,
    nodes: u32,
    duration: f64,
    seed: u64,
) -> Vec<ContactEvent> {
    let (width, height) = (w.width, w.height);
    let (smin, smax, pmax) = (w.speed_min, w.speed_max, w.pause_max);
    // Where each walker's current leg ends: the start of its next one. Both closures below
    // use it, one at a time.
    let ends: std::cell::RefCell<Vec<(f64, f64)>> = std::cell::RefCell::new(Vec::new());
    walk(
        nodes,
        duration,
        w.step,
        w.range,
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
            Leg {
                x,
                y,
                speed: uniform(rng, smin, smax),
                pause: if first { 0.0 } else { uniform(rng, 0.0, pmax) },
            }
        },
    )
}

/// Steps walkers through `duration` seconds and reports who is within `range` of whom.
/// `start` places node `i`; `next` gives its next leg (`first` is true for the first one).
// Grid coordinates and step counts are small and non-negative.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::too_many_arguments
)]
// One time-stepped loop: move, then find who is in range.
#[allow(clippy::too_many_lines)]
pub fn walk(
    nodes: u32,
    duration: f64,
    step: f64,
    range: f64,
    (width, height): (f64, f64),
    seed: u64,
    mut start: impl FnMut(u32, &mut ChaCha20Rng) -> (f64, f64),
    mut next: impl FnMut(u32, &mut ChaCha20Rng, bool) -> Leg,
) -> Vec<ContactEvent> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x6d6f_6269_6c69_7479);
    let mut walkers: Vec<Walker> = (0..nodes)
        .map(|i| {
            let (x, y) = start(i, &mut rng);
            let leg = next(i, &mut rng, true);
            Walker {
                x,
                y,
                tx: leg.x,
                ty: leg.y,
                speed: leg.speed,
                pause_until: leg.pause,
            }
        })
        .collect();
    let cell = range;
    let cols = (width / cell).ceil().max(1.0) as i64;
    let rows = (height / cell).ceil().max(1.0) as i64;
    let r2 = range * range;
    let steps = (duration / step).ceil() as u64;
    let mut up: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut events = Vec::new();
    // Cells one range wide, row-major; only the occupied ones are visited and cleared. A bit
    // per cell says whether it is occupied, so looking at an empty neighbour touches one word
    // that stays in cache instead of the cell's list.
    let mut grid: Vec<Vec<u32>> = vec![Vec::new(); (cols * rows) as usize];
    let mut taken: Vec<u64> = vec![0; (cols * rows) as usize / 64 + 1];
    let mut occupied: Vec<usize> = Vec::new();
    for k in 0..=steps {
        let t = k as f64 * step;
        if k > 0 {
            for (i, v) in walkers.iter_mut().enumerate() {
                let mut left = step;
                while left > 0.0 {
                    if v.speed <= 0.0 {
                        break;
                    }
                    if v.pause_until > t - left {
                        let wait = (v.pause_until - (t - left)).min(left);
                        left -= wait;
                        continue;
                    }
                    let (dx, dy) = (v.tx - v.x, v.ty - v.y);
                    let dist = (dx * dx + dy * dy).sqrt();
                    let reach = v.speed * left;
                    if reach < dist {
                        v.x += dx / dist * reach;
                        v.y += dy / dist * reach;
                        left = 0.0;
                    } else {
                        left -= dist / v.speed;
                        v.x = v.tx;
                        v.y = v.ty;
                        let leg = next(u32::try_from(i).expect("node count fits"), &mut rng, false);
                        v.pause_until = t - left + leg.pause;
                        v.tx = leg.x;
                        v.ty = leg.y;
                        v.speed = leg.speed;
                    }
                }
            }
        }
        for c in occupied.drain(..) {
            grid[c].clear();
            taken[c / 64] = 0;
        }
        for (i, v) in walkers.iter().enumerate() {
            let cx = ((v.x / cell) as i64).clamp(0, cols - 1);
            let cy = ((v.y / cell) as i64).clamp(0, rows - 1);
            let c = (cy * cols + cx) as usize;
            if grid[c].is_empty() {
                occupied.push(c);
                taken[c / 64] |= 1 << (c % 64);
            }
            grid[c].push(u32::try_from(i).expect("node count fits"));
        }
        let mut now: BTreeSet<(u32, u32)> = BTreeSet::new();
        let close = |a: u32, b: u32| {
            let (p, q) = (&walkers[a as usize], &walkers[b as usize]);
            (p.x - q.x).powi(2) + (p.y - q.y).powi(2) <= r2
        };
        for &c in &occupied {
            let (cx, cy) = (c as i64 % cols, c as i64 / cols);
            let members = &grid[c];
            // Pairs within the cell, then with the four neighbours ahead of it (the other four
            // see this cell as ahead of them), so each pair of cells is looked at once.
            for (i, &a) in members.iter().enumerate() {
                for &b in &members[i + 1..] {
                    if close(a, b) {
                        now.insert((a.min(b), a.max(b)));
                    }
                }
            }
            for (dx, dy) in [(1, 0), (-1, 1), (0, 1), (1, 1)] {
                let (nx, ny) = (cx + dx, cy + dy);
                if nx < 0 || ny < 0 || nx >= cols || ny >= rows {
                    continue;
                }
                let n = (ny * cols + nx) as usize;
                if taken[n / 64] & (1 << (n % 64)) == 0 {
                    continue;
                }
                for &a in members {
                    for &b in &grid[n] {
                        if close(a, b) {
                            now.insert((a.min(b), a.max(b)));
                        }
                    }
                }
            }
        }
        let ms = (t * 1000.0).round() as u64;
        for &(a, b) in up.difference(&now) {
            events.push(ContactEvent {
                t_ms: ms,
                a,
                b,
                link: Link::Down,
            });
        }
        for &(a, b) in now.difference(&up) {
            events.push(ContactEvent {
                t_ms: ms,
                a,
                b,
                link: Link::Up,
            });
        }
        up = now;
    }
    let end = (duration * 1000.0).round() as u64;
    for &(a, b) in &up {
        events.push(ContactEvent {
            t_ms: end,
            a,
            b,
            link: Link::Down,
        });
    }
    events
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
        nodes,
        duration,
        m.step,
        m.range,
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
