//! Movement on a road map: The ONE's WKT map files (`LINESTRING` and `MULTILINESTRING` lines,
//! as in its `data/` directory, Helsinki included) read into a graph whose nodes are the
//! points (equal coordinates are one node) and whose edges join consecutive points; nodes
//! walk shortest paths (Dijkstra) to random map points, as The ONE's
//! `ShortestPathMapBasedMovement`.
//!
//! Walkers live on the largest connected part of the map (The ONE refuses a map that is not
//! connected; here the rest is ignored and the report says how much).

use crate::groups::Walking;
use crate::mobility::{Leg, walk};
use crate::trace::ContactEvent;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore as _;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};

/// A map file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct MapError {
    /// Which of the files read together (0-based).
    pub file: usize,
    /// 1-based line number (0: the map as a whole).
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

/// A road graph.
#[derive(Debug, Clone, Default)]
pub struct RoadMap {
    /// Point coordinates, m, shifted so the smallest x and y are 0.
    pub points: Vec<(f64, f64)>,
    /// Neighbours of each point, with the edge length.
    pub edges: Vec<Vec<(u32, f64)>>,
    /// The points of the largest connected part.
    pub main: Vec<u32>,
}

fn coords(text: &str, line: usize) -> Result<Vec<(f64, f64)>, MapError> {
    text.split(',')
        .map(|p| {
            let mut it = p.split_whitespace().map(str::parse::<f64>);
            match (it.next(), it.next(), it.next()) {
                (Some(Ok(x)), Some(Ok(y)), None) if x.is_finite() && y.is_finite() => Ok((x, y)),
                _ => Err(MapError {
                    file: 0,
                    line,
                    why: format!("`{}` is not a point `x y`", p.trim()),
                }),
            }
        })
        .collect()
}

/// One WKT statement: the line it starts on, its type (upper case) and what is inside its
/// outer parentheses.
type Statement = (usize, String, String);

/// Splits WKT text into statements, which may span lines (`# …` lines are comments).
fn statements(text: &str) -> Result<Vec<Statement>, MapError> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    let line_at = |i: usize| text[..i].bytes().filter(|&b| b == b'\n').count() + 1;
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '#' {
            while chars.next_if(|&(_, c)| c != '\n').is_some() {}
            continue;
        }
        let line = line_at(i);
        let err = |why: &str| MapError {
            file: 0,
            line,
            why: why.to_owned(),
        };
        let mut kind = String::new();
        while let Some((_, c)) = chars.next_if(|&(_, c)| c.is_ascii_alphabetic()) {
            kind.push(c.to_ascii_uppercase());
        }
        if kind.is_empty() {
            return Err(err("expected LINESTRING, MULTILINESTRING or POINT"));
        }
        while chars.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        if chars.next().map(|(_, c)| c) != Some('(') {
            return Err(err("expected `(` after the type"));
        }
        let mut depth = 1;
        let mut body = String::new();
        for (_, c) in chars.by_ref() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                break;
            }
            body.push(c);
        }
        if depth != 0 {
            return Err(err("unbalanced parentheses"));
        }
        out.push((line, kind, body));
    }
    Ok(out)
}

/// The line strings of a statement; points are skipped, as The ONE's map reader skips them.
fn line_strings((line, kind, body): &Statement) -> Result<Vec<Vec<(f64, f64)>>, MapError> {
    let err = |why: &str| MapError {
        file: 0,
        line: *line,
        why: why.to_owned(),
    };
    match kind.as_str() {
        "LINESTRING" => Ok(vec![coords(body, *line)?]),
        "POINT" => Ok(Vec::new()),
        "MULTILINESTRING" => {
            let mut parts = Vec::new();
            let mut rest = body.trim();
            while !rest.is_empty() {
                let inner = rest
                    .strip_prefix('(')
                    .ok_or_else(|| err("expected `(` before each line string"))?;
                let end = inner
                    .find(')')
                    .ok_or_else(|| err("unbalanced parentheses"))?;
                parts.push(coords(&inner[..end], *line)?);
                rest = inner[end + 1..]
                    .trim_start()
                    .trim_start_matches(',')
                    .trim_start();
            }
            Ok(parts)
        }
        other => Err(err(&format!("{other} is not a type a map holds"))),
    }
}

impl RoadMap {
    /// Reads WKT map files' contents into one graph: `LINESTRING`s and `MULTILINESTRING`s,
    /// which may span lines; `POINT`s are skipped (The ONE lists its shops file among the
    /// maps) and so are `#` comment lines; anything else is refused with its line number.
    pub fn from_wkt(texts: &[&str]) -> Result<Self, MapError> {
        let mut index: HashMap<(u64, u64), u32> = HashMap::new();
        let mut raw: Vec<(f64, f64)> = Vec::new();
        let mut edges: Vec<Vec<(u32, f64)>> = Vec::new();
        let mut node = |p: (f64, f64), edges: &mut Vec<Vec<(u32, f64)>>| {
            *index
                .entry((p.0.to_bits(), p.1.to_bits()))
                .or_insert_with(|| {
                    raw.push(p);
                    edges.push(Vec::new());
                    u32::try_from(raw.len() - 1).expect("fewer than 2^32 points")
                })
        };
        for (file, text) in texts.iter().enumerate() {
            let in_file = |e: MapError| MapError { file, ..e };
            for st in statements(text).map_err(in_file)? {
                for ls in line_strings(&st).map_err(in_file)? {
                    for w in ls.windows(2) {
                        let (a, b) = (node(w[0], &mut edges), node(w[1], &mut edges));
                        if a != b {
                            let len =
                                ((w[0].0 - w[1].0).powi(2) + (w[0].1 - w[1].1).powi(2)).sqrt();
                            edges[a as usize].push((b, len));
                            edges[b as usize].push((a, len));
                        }
                    }
                }
            }
        }
        if raw.len() < 2 {
            return Err(MapError {
                file: 0,
                line: 0,
                why: "the map has fewer than two points".into(),
            });
        }
        let min_x = raw.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let min_y = raw.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let points = raw.iter().map(|p| (p.0 - min_x, p.1 - min_y)).collect();
        let main = largest_part(&edges);
        Ok(Self {
            points,
            edges,
            main,
        })
    }

    /// Width and height of the map's bounding box, m.
    pub fn size(&self) -> (f64, f64) {
        let w = self.points.iter().map(|p| p.0).fold(0.0, f64::max);
        let h = self.points.iter().map(|p| p.1).fold(0.0, f64::max);
        (w.max(1.0), h.max(1.0))
    }

    /// The shortest path from `from` to `to` (both ends included), by Dijkstra; `None` when
    /// they are not connected.
    pub fn shortest_path(&self, from: u32, to: u32) -> Option<Vec<u32>> {
        #[derive(PartialEq)]
        struct Next(f64, u32);
        impl Eq for Next {}
        impl Ord for Next {
            fn cmp(&self, o: &Self) -> Ordering {
                o.0.total_cmp(&self.0).then(o.1.cmp(&self.1))
            }
        }
        impl PartialOrd for Next {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        let n = self.points.len();
        let mut dist = vec![f64::INFINITY; n];
        let mut prev = vec![u32::MAX; n];
        let mut heap = BinaryHeap::new();
        dist[from as usize] = 0.0;
        heap.push(Next(0.0, from));
        while let Some(Next(d, u)) = heap.pop() {
            if u == to {
                break;
            }
            if d > dist[u as usize] {
                continue;
            }
            for &(v, len) in &self.edges[u as usize] {
                let nd = d + len;
                if nd < dist[v as usize] {
                    dist[v as usize] = nd;
                    prev[v as usize] = u;
                    heap.push(Next(nd, v));
                }
            }
        }
        if dist[to as usize].is_infinite() {
            return None;
        }
        let mut path = vec![to];
        let mut at = to;
        while at != from {
            at = prev[at as usize];
            path.push(at);
        }
        path.reverse();
        Some(path)
    }
}

fn largest_part(edges: &[Vec<(u32, f64)>]) -> Vec<u32> {
    let mut part = vec![u32::MAX; edges.len()];
    let mut best: Vec<u32> = Vec::new();
    for s in 0..edges.len() {
        if part[s] != u32::MAX {
            continue;
        }
        let id = u32::try_from(s).expect("fewer than 2^32 points");
        let mut members = vec![id];
        let mut queue = VecDeque::from([id]);
        part[s] = id;
        while let Some(u) = queue.pop_front() {
            for &(v, _) in &edges[u as usize] {
                if part[v as usize] == u32::MAX {
                    part[v as usize] = id;
                    members.push(v);
                    queue.push_back(v);
                }
            }
        }
        if members.len() > best.len() {
            best = members;
        }
    }
    best.sort_unstable();
    best
}

/// One walker's way across the map: the point it is at or heading to, the rest of its path,
/// its speed on that path.
pub struct MapWalker<'a> {
    map: &'a RoadMap,
    /// The map point it is at, or heading to.
    pub at: u32,
    rest: VecDeque<u32>,
    speed: f64,
}

impl<'a> MapWalker<'a> {
    /// A walker at a random point of the map's main part.
    pub fn new(map: &'a RoadMap, rng: &mut ChaCha20Rng) -> Self {
        let at = Self::pick(map, rng);
        Self {
            map,
            at,
            rest: VecDeque::new(),
            speed: 0.0,
        }
    }

    fn pick(map: &RoadMap, rng: &mut ChaCha20Rng) -> u32 {
        let len = u64::try_from(map.main.len()).expect("usize fits u64");
        map.main[usize::try_from(rng.next_u64() % len).expect("index fits usize")]
    }

    /// The next leg: to the next point of its path, at the path's speed, pausing at the end
    /// of the path (not before the first leg). A walker at the end of its path draws a new
    /// destination and speed.
    pub fn next_leg(&mut self, rng: &mut ChaCha20Rng, w: &Walking, first: bool) -> Leg {
        if self.rest.is_empty() {
            let to = Self::pick(self.map, rng);
            let path = self
                .map
                .shortest_path(self.at, to)
                .unwrap_or_else(|| vec![self.at]);
            self.rest.extend(path.into_iter().skip(1));
            self.speed = w.speed(rng);
            if self.rest.is_empty() {
                // A path of one point: stay a moment.
                self.rest.push_back(self.at);
            }
        }
        let next = self.rest.pop_front().expect("a path has a next point");
        self.at = next;
        let (x, y) = self.map.points[next as usize];
        Leg {
            x,
            y,
            speed: self.speed,
            pause: if self.rest.is_empty() {
                w.pause(rng, first)
            } else {
                0.0
            },
        }
    }
}

/// Generates the contacts of walkers on `map` over `duration` seconds, with contacts at
/// multiples of `step` seconds: each starts at a random point of the map's main part, walks
/// the shortest path to another at one speed, pauses, and again. Walker `i` walks as
/// `walking[i]` says, with radio range `ranges[i]`.
pub fn map_walk(
    map: &RoadMap,
    (walking, ranges): (&[Walking], &[f64]),
    step: f64,
    duration: f64,
    seed: u64,
) -> Vec<ContactEvent> {
    let walkers: std::cell::RefCell<Vec<MapWalker<'_>>> = std::cell::RefCell::new(Vec::new());
    walk(
        ranges,
        duration,
        step,
        map.size(),
        seed,
        |_, rng| {
            let v = MapWalker::new(map, rng);
            let p = map.points[v.at as usize];
            walkers.borrow_mut().push(v);
            p
        },
        |i, rng, first| walkers.borrow_mut()[i as usize].next_leg(rng, &walking[i as usize], first),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A square with a long way round: A(0,0) B(100,0) C(100,100) D(0,100), plus a
    /// diagonal A–C (141 m). A to C goes by the diagonal; B to D by A or C (200 m either way,
    /// the first found); an island E–F is not part of the main part.
    #[test]
    fn shortest_paths_and_parts_by_hand() {
        let wkt = "# a test map\n\
            LINESTRING (0 0, 100 0, 100 100)\n\
            \n\
            MULTILINESTRING ((100 100, 0 100, 0 0), (0 0, 100 100))\n\
            LINESTRING (500 500,\n   510 500)\nPOINT (7 7)\n";
        let m = RoadMap::from_wkt(&[wkt]).unwrap();
        assert_eq!(m.points.len(), 6);
        assert_eq!(m.main, vec![0, 1, 2, 3]);
        assert_eq!(m.shortest_path(0, 2), Some(vec![0, 2]));
        assert_eq!(m.shortest_path(1, 1), Some(vec![1]));
        let bd = m.shortest_path(1, 3).unwrap();
        assert_eq!(bd.len(), 3);
        assert!(bd[1] == 0 || bd[1] == 2);
        assert_eq!(m.shortest_path(0, 4), None);
        assert_eq!(m.size(), (510.0, 500.0));
    }

    #[test]
    fn bad_maps_are_refused_with_a_line() {
        for (text, line) in [
            ("LINESTRING (0 0, 1 1)\nPOLYGON ((3 4, 5 6))\n", 2),
            ("LINESTRING (0 0, 1)\n", 1),
            ("LINESTRING (0 0, 1 1\n", 1),
            ("MULTILINESTRING ((0 0, 1 1), 2 2, 3 3))\n", 1),
            ("LINESTRING (0 0, 1 1)\n\nLINESTRING 2 2\n", 3),
            ("LINESTRING (0 0, nan 1)\n", 1),
            ("", 0),
        ] {
            let e = RoadMap::from_wkt(&[text]).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
    }

    /// Walkers keep to the roads: every leg goes to a map point of the main part next to the
    /// one before (or stays put on a path of one point), at one speed per path, and pauses only
    /// at a path's end.
    #[test]
    fn walkers_keep_to_the_roads() {
        use rand_core::SeedableRng as _;
        let wkt = "LINESTRING (0 0, 100 0, 100 100, 0 100, 0 0)\nLINESTRING (0 0, 100 100)\n\
                   LINESTRING (100 0, 300 0)\nLINESTRING (900 900, 950 900)";
        let m = RoadMap::from_wkt(&[wkt]).unwrap();
        let w = Walking {
            speed_min: 1.0,
            speed_max: 2.0,
            pause_max: 5.0,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let mut v = MapWalker::new(&m, &mut rng);
        let mut at = v.at;
        let mut speed: Option<f64> = None;
        for k in 0..500 {
            let leg = v.next_leg(&mut rng, &w, k == 0);
            let to = v.at;
            assert!(m.main.contains(&to));
            assert_eq!((leg.x, leg.y), m.points[to as usize]);
            assert!(to == at || m.edges[at as usize].iter().any(|&(n, _)| n == to));
            assert!((1.0..2.0).contains(&leg.speed));
            if let Some(s) = speed {
                assert!(
                    (leg.speed - s).abs() < f64::EPSILON,
                    "speed changed mid-path"
                );
            }
            speed = if leg.pause > 0.0 {
                None
            } else {
                Some(leg.speed)
            };
            at = to;
        }
        let line = RoadMap::from_wkt(&["LINESTRING (0 0, 50 0, 100 0)"]).unwrap();
        let (walking, ranges) = ([w; 6], [2.0; 6]);
        let hosts = (walking.as_slice(), ranges.as_slice());
        let a = map_walk(&line, hosts, 1.0, 2_000.0, 1);
        assert!(!a.is_empty());
        assert_eq!(a, map_walk(&line, hosts, 1.0, 2_000.0, 1));
        assert_ne!(a, map_walk(&line, hosts, 1.0, 2_000.0, 2));
    }
}
