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

/// Generates the contacts of `nodes` random-waypoint walkers over `duration` seconds, in time
/// order. Nodes start at uniform positions, already walking (no warm-up is discarded).
// Grid coordinates and step counts are small and non-negative.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
pub fn random_waypoint(w: &Waypoint, nodes: u32, duration: f64, seed: u64) -> Vec<ContactEvent> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x6d6f_6269_6c69_7479);
    let mut walkers: Vec<Walker> = (0..nodes)
        .map(|_| {
            let (x, y) = (
                uniform(&mut rng, 0.0, w.width),
                uniform(&mut rng, 0.0, w.height),
            );
            Walker {
                x,
                y,
                tx: uniform(&mut rng, 0.0, w.width),
                ty: uniform(&mut rng, 0.0, w.height),
                speed: uniform(&mut rng, w.speed_min, w.speed_max),
                pause_until: 0.0,
            }
        })
        .collect();
    let cell = w.range;
    let cols = (w.width / cell).ceil().max(1.0) as i64;
    let rows = (w.height / cell).ceil().max(1.0) as i64;
    let r2 = w.range * w.range;
    let steps = (duration / w.step).ceil() as u64;
    let mut up: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut events = Vec::new();
    // Cells one range wide, row-major; only the occupied ones are visited and cleared.
    let mut grid: Vec<Vec<u32>> = vec![Vec::new(); (cols * rows) as usize];
    let mut occupied: Vec<usize> = Vec::new();
    for k in 0..=steps {
        let t = k as f64 * w.step;
        if k > 0 {
            for v in &mut walkers {
                let mut left = w.step;
                while left > 0.0 {
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
                        v.pause_until = t - left + uniform(&mut rng, 0.0, w.pause_max);
                        v.tx = uniform(&mut rng, 0.0, w.width);
                        v.ty = uniform(&mut rng, 0.0, w.height);
                        v.speed = uniform(&mut rng, w.speed_min, w.speed_max);
                    }
                }
            }
        }
        for c in occupied.drain(..) {
            grid[c].clear();
        }
        for (i, v) in walkers.iter().enumerate() {
            let cx = ((v.x / cell) as i64).clamp(0, cols - 1);
            let cy = ((v.y / cell) as i64).clamp(0, rows - 1);
            let c = (cy * cols + cx) as usize;
            if grid[c].is_empty() {
                occupied.push(c);
            }
            grid[c].push(u32::try_from(i).expect("node count fits"));
        }
        let mut now: BTreeSet<(u32, u32)> = BTreeSet::new();
        for &c in &occupied {
            let (cx, cy) = (c as i64 % cols, c as i64 / cols);
            let members = &grid[c];
            for dx in -1..=1 {
                for dy in -1..=1 {
                    let (nx, ny) = (cx + dx, cy + dy);
                    if nx < 0 || ny < 0 || nx >= cols || ny >= rows {
                        continue;
                    }
                    let others = &grid[(ny * cols + nx) as usize];
                    for &a in members {
                        for &b in others {
                            if a < b {
                                let (p, q) = (&walkers[a as usize], &walkers[b as usize]);
                                let d2 = (p.x - q.x).powi(2) + (p.y - q.y).powi(2);
                                if d2 <= r2 {
                                    now.insert((a, b));
                                }
                            }
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
