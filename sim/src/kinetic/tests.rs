//! The contacts found from legs against a walk stepped scan by scan, the way they were found
//! before: the same walkers must give the same events.

use crate::mobility::{Leg, uniform};
use crate::trace::{ContactEvent, Link};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy)]
struct Walker {
    x: f64,
    y: f64,
    tx: f64,
    ty: f64,
    speed: f64,
    pause_until: f64,
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
fn stepped(
    ranges: &[f64],
    duration: f64,
    step: f64,
    (width, height): (f64, f64),
    seed: u64,
    mut start: impl FnMut(u32, &mut ChaCha20Rng) -> (f64, f64),
    mut next: impl FnMut(u32, &mut ChaCha20Rng, bool) -> Leg,
) -> Vec<ContactEvent> {
    let nodes = u32::try_from(ranges.len()).unwrap();
    let range = ranges.iter().copied().fold(0.0, f64::max);
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
            let r = ranges[a as usize].min(ranges[b as usize]);
            (p.x - q.x).powi(2) + (p.y - q.y).powi(2) <= r * r
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

/// Random-waypoint walkers in a `side` square, every fifth one stopping for good after its
/// first leg: the contacts from legs must be those of stepping, event for event.
fn compare(nodes: u32, duration: f64, step: f64, range: f64, side: f64, seed: u64) {
    compare_ranges(&vec![range; nodes as usize], duration, step, side, seed);
}

fn compare_ranges(ranges: &[f64], duration: f64, step: f64, side: f64, seed: u64) {
    let start = |_: u32, rng: &mut ChaCha20Rng| (uniform(rng, 0.0, side), uniform(rng, 0.0, side));
    let next = |i: u32, rng: &mut ChaCha20Rng, first: bool| Leg {
        x: uniform(rng, 0.0, side),
        y: uniform(rng, 0.0, side),
        // Every fifth walker stops for good after its first leg, as stalls do.
        speed: if i % 5 == 4 && !first {
            0.0
        } else {
            uniform(rng, 0.5, 1.5)
        },
        pause: if first { 0.0 } else { uniform(rng, 0.0, 60.0) },
    };
    let area = (side, side);
    let want = stepped(ranges, duration, step, area, seed, start, next);
    let got = crate::mobility::walk(ranges, duration, step, area, seed, start, next);
    assert!(want.len() > 20, "a case with contacts: {}", want.len());
    if got != want {
        let (g, w): (BTreeSet<_>, BTreeSet<_>) = (got.iter().collect(), want.iter().collect());
        let only = |x: &BTreeSet<_>, y| x.difference(y).take(8).copied().collect::<Vec<_>>();
        eprintln!(
            "only from legs: {:?}\nonly stepped: {:?}",
            only(&g, &w),
            only(&w, &g)
        );
    }
    assert_eq!(got.len(), want.len(), "seed {seed}, step {step}");
    assert_eq!(got, want, "seed {seed}, step {step}");
}

#[test]
fn legs_give_the_contacts_of_stepping() {
    for seed in 1..=4 {
        compare(40, 3_600.0, 1.0, 10.0, 300.0, seed);
    }
}

#[test]
fn fine_steps_and_odd_durations_give_the_contacts_of_stepping() {
    compare(30, 1_800.0, 0.1, 10.0, 200.0, 7);
    compare(30, 1_000.5, 1.0, 25.0, 400.0, 8);
}

#[test]
fn crowded_and_static_walkers_give_the_contacts_of_stepping() {
    compare(60, 600.0, 1.0, 10.0, 60.0, 9);
    compare(10, 0.0, 1.0, 10.0, 20.0, 10);
}

#[test]
fn hosts_with_their_own_ranges_meet_within_the_shorter() {
    let ranges: Vec<f64> = (0..40).map(|i| [5.0, 10.0, 30.0][i % 3]).collect();
    compare_ranges(&ranges, 3_600.0, 1.0, 300.0, 11);
}

/// A walker so slow it would arrive after any run: its leg ends beyond every scan, and the
/// contacts are still found (no overflow).
#[test]
fn a_walker_too_slow_to_arrive_is_no_trouble() {
    let start = |i: u32, _: &mut ChaCha20Rng| (f64::from(i) * 5.0, 0.0);
    let next = |_: u32, _: &mut ChaCha20Rng, _: bool| Leg {
        x: 100.0,
        y: 0.0,
        speed: 1e-300,
        pause: 0.0,
    };
    let got = crate::mobility::walk(&[10.0, 10.0], 60.0, 1.0, (200.0, 200.0), 1, start, next);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(super::scan_at_or_after(f64::INFINITY, 0.1), u64::MAX);
}
