//! Contacts from straight-line legs, found by solving when two moving points come within range
//! instead of stepping every walker through time.
//!
//! A walker's way is a list of points `(t, x, y)`: it moves in a straight line at a constant
//! speed from one to the next (a pause is two points at the same place). Two walkers are in
//! range while `|p_a(t) − p_b(t)| ≤ r`, `r` the smaller of their ranges; on each piece where
//! both move in straight lines that is a quadratic in `t`, so its roots give the exact times
//! they enter and leave range.
//!
//! The contacts are reported as a scan every `step` seconds would see them: a pair comes up at
//! the first multiple of `step` at which it is in range and goes down at the first one at
//! which it is not, and a meeting that falls between two scans is not seen. So `step` keeps its
//! meaning (the time resolution of the contacts, 0.1 s in The ONE's default settings) but no
//! longer costs time: the work grows with the number of legs and of close pairs, not with the
//! number of steps.
//!
//! Close pairs are found window by window: each walker's box over a window (widened by half
//! its range) goes into a grid, and only walkers sharing a cell are solved for. A window is as
//! long as the fastest walker takes to cross two ranges, so boxes stay small.

use crate::mobility::Leg;
use crate::trace::{ContactEvent, Link};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// One point of a walker's way: time (s), x (m), y (m).
pub(crate) type Point = [f64; 3];

/// The first multiple of `step` at or after `t`, as a scan index.
// Scan indexes of simulated runs fit in f64's exact range.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
fn scan_at_or_after(t: f64, step: f64) -> u64 {
    // Beyond 2^53 scans (a walker that would take longer than any run to arrive) there is no
    // exact scan to name.
    if t.is_nan() || t / step >= 9.0e15 {
        return u64::MAX;
    }
    let mut k = (t / step).ceil().max(0.0) as u64;
    while k > 0 && (k - 1) as f64 * step >= t {
        k -= 1;
    }
    while (k as f64 * step) < t {
        k += 1;
    }
    k
}

/// The last multiple of `step` at or before `t` (`None` before 0).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
fn scan_at_or_before(t: f64, step: f64) -> Option<u64> {
    if t < 0.0 {
        return None;
    }
    if t.is_nan() || t / step >= 9.0e15 {
        return Some(u64::MAX - 1);
    }
    let mut k = (t / step).floor().max(0.0) as u64;
    while k as f64 * step > t {
        if k == 0 {
            return None;
        }
        k -= 1;
    }
    while ((k + 1) as f64 * step) <= t {
        k += 1;
    }
    Some(k)
}

/// The ways of `nodes` walkers up to scan `steps` (`step` seconds apart). `start` places
/// walker `i` and `next` draws its next leg (`first` for its first one).
///
/// Legs are drawn in the order a stepped walk draws them (by the scan in which a walker
/// arrives, then by walker), so a model's contacts stay those of stepping the same seed.
/// A walker given a leg of speed 0 stays where it is from then on.
pub(crate) fn ways(
    nodes: u32,
    steps: u64,
    step: f64,
    seed: u64,
    mut start: impl FnMut(u32, &mut ChaCha20Rng) -> (f64, f64),
    mut next: impl FnMut(u32, &mut ChaCha20Rng, bool) -> Leg,
) -> Vec<Vec<Point>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x6d6f_6269_6c69_7479);
    let mut ways: Vec<Vec<Point>> = Vec::with_capacity(nodes as usize);
    // (scan of the walker's next arrival, walker)
    let mut arrivals: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
    // Appends a leg from the way's last point; gives its arrival time if the walker moves.
    let add = |way: &mut Vec<Point>, leg: &Leg| -> Option<f64> {
        let [t, x, y] = *way.last().expect("a way starts with a point");
        if leg.speed.is_nan() || leg.speed <= 0.0 {
            return None;
        }
        let go = t + leg.pause;
        if leg.pause > 0.0 {
            way.push([go, x, y]);
        }
        let arrive = go + (leg.x - x).hypot(leg.y - y) / leg.speed;
        way.push([arrive, leg.x, leg.y]);
        Some(arrive)
    };
    for i in 0..nodes {
        let (x, y) = start(i, &mut rng);
        let leg = next(i, &mut rng, true);
        let mut way = vec![[0.0, x, y]];
        if let Some(t) = add(&mut way, &leg) {
            arrivals.push(Reverse((scan_at_or_after(t, step).max(1), i)));
        }
        ways.push(way);
    }
    while let Some(Reverse((k, i))) = arrivals.pop() {
        if k > steps {
            break;
        }
        let leg = next(i, &mut rng, false);
        if let Some(t) = add(&mut ways[i as usize], &leg) {
            arrivals.push(Reverse((scan_at_or_after(t, step).max(k), i)));
        }
    }
    ways
}

/// A way read forward in time: where its walker is, and the box it covers over a window.
struct Cursor {
    /// Index of the last point at or before the time read last.
    at: usize,
}

impl Cursor {
    fn seek(&mut self, way: &[Point], t: f64) {
        seek(way, &mut self.at, t);
    }

    /// Position at `t` (at or after the last seek).
    fn position(&self, way: &[Point], t: f64) -> (f64, f64) {
        position(way, self.at, t)
    }
}

/// Moves `at` forward to the last point of `way` at or before `t`.
fn seek(way: &[Point], at: &mut usize, t: f64) {
    while *at + 1 < way.len() && way[*at + 1][0] <= t {
        *at += 1;
    }
}

/// Position at `t` on the piece of `way` starting at point `i`.
fn position(way: &[Point], i: usize, t: f64) -> (f64, f64) {
    let [t0, x0, y0] = way[i];
    match way.get(i + 1) {
        Some(&[t1, x1, y1]) if t1 > t0 && t > t0 => {
            let f = ((t - t0) / (t1 - t0)).min(1.0);
            (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f)
        }
        _ => (x0, y0),
    }
}

/// The times in `[from, to]` at which two ways are within `r` of each other, as closed
/// intervals; `ia`, `ib` index the points at or before `from`.
fn in_range(
    (wa, mut ia): (&[Point], usize),
    (wb, mut ib): (&[Point], usize),
    r: f64,
    (from, to): (f64, f64),
    out: &mut Vec<(f64, f64)>,
) {
    if from >= to {
        let ((xa, ya), (xb, yb)) = (position(wa, ia, from), position(wb, ib, from));
        if (xa - xb).hypot(ya - yb) <= r {
            push(out, from, from);
        }
        return;
    }
    let mut at = from;
    while at < to {
        seek(wa, &mut ia, at);
        seek(wb, &mut ib, at);
        let na = wa.get(ia + 1).map_or(f64::INFINITY, |p| p[0]);
        let nb = wb.get(ib + 1).map_or(f64::INFINITY, |p| p[0]);
        let end = to.min(na).min(nb);
        let (pa, pb) = (position(wa, ia, at), position(wb, ib, at));
        let (qa, qb) = (position(wa, ia, end), position(wb, ib, end));
        let span = end - at;
        let (dx, dy) = (pa.0 - pb.0, pa.1 - pb.1);
        let (vx, vy) = (
            ((qa.0 - pa.0) - (qb.0 - pb.0)) / span,
            ((qa.1 - pa.1) - (qb.1 - pb.1)) / span,
        );
        let qa2 = vx * vx + vy * vy;
        let qb2 = 2.0 * (dx * vx + dy * vy);
        let qc = dx * dx + dy * dy - r * r;
        if qa2 <= f64::EPSILON * f64::EPSILON {
            if qc <= 0.0 {
                push(out, at, end);
            }
        } else {
            let disc = qb2 * qb2 - 4.0 * qa2 * qc;
            if disc >= 0.0 {
                let root = disc.sqrt();
                let lo = ((-qb2 - root) / (2.0 * qa2)).max(0.0);
                let hi = ((-qb2 + root) / (2.0 * qa2)).min(span);
                if lo <= hi {
                    push(out, at + lo, at + hi);
                }
            }
        }
        at = end;
    }
}

/// Adds `[lo, hi]`, joining it to the last interval if they touch.
fn push(out: &mut Vec<(f64, f64)>, lo: f64, hi: f64) {
    match out.last_mut() {
        Some(last) if last.1 >= lo => last.1 = last.1.max(hi),
        _ => out.push((lo, hi)),
    }
}

/// The contacts of `ways` as a scan every `step` seconds, from scan 0 to scan `steps`, would
/// report them; pairs still in range at the last scan go down at `end_ms`. Walker `i` has
/// radio range `ranges[i]`; a pair is in range within the smaller of the two. `area` bounds
/// the grid (walkers outside it share its edge cells).
// Grid coordinates and scan counts are small and non-negative.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::too_many_lines
)]
pub(crate) fn contacts(
    ways: &[Vec<Point>],
    ranges: &[f64],
    step: f64,
    steps: u64,
    end_ms: u64,
    (width, height): (f64, f64),
) -> Vec<ContactEvent> {
    let count = ways.len();
    let r_max = ranges.iter().copied().fold(0.0, f64::max);
    let v_max = ways
        .iter()
        .flat_map(|w| w.windows(2))
        .filter(|p| p[1][0] > p[0][0])
        .map(|p| (p[1][1] - p[0][1]).hypot(p[1][2] - p[0][2]) / (p[1][0] - p[0][0]))
        .fold(0.0, f64::max);
    // A window: the time the fastest walker takes to cross two ranges, in whole steps.
    let per_window = if v_max > 0.0 && r_max > 0.0 {
        ((2.0 * r_max / v_max / step).ceil() as u64).clamp(1, steps.max(1))
    } else {
        steps.max(1)
    };
    let cell = (4.0 * r_max).max(1.0);
    let cols = ((width / cell).ceil() as i64).max(1);
    let rows = ((height / cell).ceil() as i64).max(1);
    let cell_of = |x: f64, y: f64| -> (i64, i64) {
        (
            ((x / cell).floor() as i64).clamp(0, cols - 1),
            ((y / cell).floor() as i64).clamp(0, rows - 1),
        )
    };
    let mut grid: Vec<Vec<u32>> = vec![Vec::new(); (cols * rows) as usize];
    let mut occupied: Vec<usize> = Vec::new();
    let mut cursors: Vec<Cursor> = (0..count).map(|_| Cursor { at: 0 }).collect();
    let mut boxes: Vec<[f64; 4]> = vec![[0.0; 4]; count];
    // (a, b, first scan in range, last scan in range)
    let mut seen: Vec<(u32, u32, u64, u64)> = Vec::new();
    let mut times: Vec<(f64, f64)> = Vec::new();
    let mut k0 = 0u64;
    while k0 <= steps {
        let k1 = (k0 + per_window).min(steps);
        let (t0, t1) = (k0 as f64 * step, k1 as f64 * step);
        for (i, way) in ways.iter().enumerate() {
            let c = &mut cursors[i];
            c.seek(way, t0);
            let (x0, y0) = c.position(way, t0);
            let mut bx = [x0, y0, x0, y0];
            let mut end = c.at;
            for p in way[c.at + 1..].iter().take_while(|p| p[0] <= t1) {
                bx = [
                    bx[0].min(p[1]),
                    bx[1].min(p[2]),
                    bx[2].max(p[1]),
                    bx[3].max(p[2]),
                ];
                end += 1;
            }
            let (x1, y1) = position(way, end, t1);
            bx = [bx[0].min(x1), bx[1].min(y1), bx[2].max(x1), bx[3].max(y1)];
            let h = ranges[i] / 2.0;
            bx = [bx[0] - h, bx[1] - h, bx[2] + h, bx[3] + h];
            boxes[i] = bx;
            let (cx0, cy0) = cell_of(bx[0], bx[1]);
            let (cx1, cy1) = cell_of(bx[2], bx[3]);
            for cy in cy0..=cy1 {
                for cx in cx0..=cx1 {
                    let c = (cy * cols + cx) as usize;
                    if grid[c].is_empty() {
                        occupied.push(c);
                    }
                    grid[c].push(i as u32);
                }
            }
        }
        for &c in &occupied {
            let members = &grid[c];
            for (j, &a) in members.iter().enumerate() {
                for &b in &members[j + 1..] {
                    let (ba, bb) = (&boxes[a as usize], &boxes[b as usize]);
                    if ba[0] > bb[2] || bb[0] > ba[2] || ba[1] > bb[3] || bb[1] > ba[3] {
                        continue;
                    }
                    // Solve each pair once: in the cell holding its boxes' common corner.
                    let (cx, cy) = cell_of(ba[0].max(bb[0]), ba[1].max(bb[1]));
                    if (cy * cols + cx) as usize != c {
                        continue;
                    }
                    let (a, b) = (a.min(b), a.max(b));
                    let (wa, wb) = (&ways[a as usize], &ways[b as usize]);
                    times.clear();
                    in_range(
                        (wa, cursors[a as usize].at),
                        (wb, cursors[b as usize].at),
                        ranges[a as usize].min(ranges[b as usize]),
                        (t0, t1.max(t0)),
                        &mut times,
                    );
                    for &(lo, hi) in &times {
                        let ka = scan_at_or_after(lo, step).max(k0);
                        let Some(kb) = scan_at_or_before(hi, step) else {
                            continue;
                        };
                        let kb = kb.min(k1);
                        if ka <= kb {
                            seen.push((a, b, ka, kb));
                        }
                    }
                }
            }
        }
        for c in occupied.drain(..) {
            grid[c].clear();
        }
        if k1 >= steps {
            break;
        }
        k0 = k1;
    }
    events(seen, step, steps, end_ms)
}

/// Scan ranges per pair, joined where they meet, as up and down events in the order a scan
/// reports them: by time, downs before ups, then by pair; downs at the end last.
fn events(
    mut seen: Vec<(u32, u32, u64, u64)>,
    step: f64,
    steps: u64,
    end_ms: u64,
) -> Vec<ContactEvent> {
    seen.sort_unstable();
    let mut spans: Vec<(u32, u32, u64, u64)> = Vec::with_capacity(seen.len());
    for s in seen {
        match spans.last_mut() {
            Some(l) if l.0 == s.0 && l.1 == s.1 && s.2 <= l.3 + 1 => l.3 = l.3.max(s.3),
            _ => spans.push(s),
        }
    }
    // Scan counts of simulated runs fit in f64's exact range.
    #[allow(clippy::cast_precision_loss)]
    let at = |k: u64| crate::engine::ms(k as f64 * step);
    // (ms, 0 for down / 1 for up, a, b)
    let mut timed: Vec<(u64, u8, u32, u32)> = Vec::with_capacity(2 * spans.len());
    let mut open: Vec<(u32, u32)> = Vec::new();
    for &(a, b, ka, kb) in &spans {
        timed.push((at(ka), 1, a, b));
        if kb < steps {
            timed.push((at(kb + 1), 0, a, b));
        } else {
            open.push((a, b));
        }
    }
    timed.sort_unstable();
    open.sort_unstable();
    let event = |t_ms, a, b, link| ContactEvent { t_ms, a, b, link };
    timed
        .into_iter()
        .map(|(t, kind, a, b)| event(t, a, b, if kind == 0 { Link::Down } else { Link::Up }))
        .chain(
            open.into_iter()
                .map(|(a, b)| event(end_ms, a, b, Link::Down)),
        )
        .collect()
}

#[cfg(test)]
mod tests;
