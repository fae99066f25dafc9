//! Contact traces and message traces in The ONE simulator's text formats, so traces from The
//! ONE and from real-world data sets (converted to it) can be replayed, and ours exported.
//!
//! - Connection events (`StandardEventsReader`): `<time> CONN <host1> <host2> up|down`.
//! - Message creation: `<time> C <msgId> <from> <to> <size> [<responseSize>]`.
//!
//! Times are seconds (decimals allowed); hosts are integers, optionally with a letter prefix
//! as The ONE writes them (`p12` is host 12). Lines starting with `#` and blank lines are
//! skipped.

use std::fmt::Write as _;

/// Up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Link {
    /// The two hosts came into range.
    Up,
    /// They left it.
    Down,
}

/// One connection event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContactEvent {
    /// Time, ms.
    pub t_ms: u64,
    /// Smaller host index.
    pub a: u32,
    /// Larger host index.
    pub b: u32,
    /// Up or down.
    pub link: Link,
}

/// One message creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEvent {
    /// Time, ms.
    pub t_ms: u64,
    /// Message name.
    pub id: String,
    /// Source host.
    pub from: u32,
    /// Destination host.
    pub to: u32,
    /// Size, bytes.
    pub size: u32,
    /// Size of the response its destination sends back on delivery (0: none), as The ONE's
    /// optional last column.
    pub response_size: u32,
}

/// A line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct TraceError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

fn host(s: &str) -> Option<u32> {
    s.trim_start_matches(|c: char| c.is_ascii_alphabetic())
        .parse()
        .ok()
}

// Trace times are non-negative seconds well within u64 milliseconds.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn time(s: &str) -> Option<u64> {
    let t: f64 = s.parse().ok()?;
    (t.is_finite() && t >= 0.0).then(|| (t * 1000.0).round() as u64)
}

/// Parses connection events. Lines that are not `CONN` events are skipped; the result is in
/// time order (a stable sort, so simultaneous events keep the file's order).
pub fn parse_connections(text: &str) -> Result<Vec<ContactEvent>, TraceError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() || f[0].starts_with('#') || f.get(1) != Some(&"CONN") {
            continue;
        }
        let err = |why: &str| TraceError {
            line: i + 1,
            why: why.to_owned(),
        };
        // The ONE's external events may name the interface before the state.
        if f.len() != 5 && f.len() != 6 {
            return Err(err(
                "expected `<time> CONN <host1> <host2> [<interface>] up|down`",
            ));
        }
        let t_ms = time(f[0]).ok_or_else(|| err("bad time"))?;
        let (h1, h2) = (
            host(f[2]).ok_or_else(|| err("bad host"))?,
            host(f[3]).ok_or_else(|| err("bad host"))?,
        );
        if h1 == h2 {
            return Err(err("a host cannot connect to itself"));
        }
        let state = f[f.len() - 1];
        let link = if state.eq_ignore_ascii_case("up") {
            Link::Up
        } else if state.eq_ignore_ascii_case("down") {
            Link::Down
        } else {
            return Err(err("the last field must be up or down"));
        };
        out.push(ContactEvent {
            t_ms,
            a: h1.min(h2),
            b: h1.max(h2),
            link,
        });
    }
    out.sort_by_key(|e| e.t_ms);
    Ok(out)
}

/// Parses message-creation events (`C` lines); other lines are skipped.
pub fn parse_messages(text: &str) -> Result<Vec<MessageEvent>, TraceError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() || f[0].starts_with('#') || f.get(1) != Some(&"C") {
            continue;
        }
        let err = |why: &str| TraceError {
            line: i + 1,
            why: why.to_owned(),
        };
        if f.len() < 6 {
            return Err(err("expected `<time> C <msgId> <from> <to> <size>`"));
        }
        out.push(MessageEvent {
            t_ms: time(f[0]).ok_or_else(|| err("bad time"))?,
            id: f[2].to_owned(),
            from: host(f[3]).ok_or_else(|| err("bad host"))?,
            to: host(f[4]).ok_or_else(|| err("bad host"))?,
            size: f[5].parse().map_err(|_| err("bad size"))?,
            response_size: match f.get(6) {
                Some(r) => r.parse().map_err(|_| err("bad response size"))?,
                None => 0,
            },
        });
    }
    out.sort_by_key(|e| e.t_ms);
    Ok(out)
}

fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Writes connection events in The ONE's format.
pub fn write_connections(events: &[ContactEvent]) -> String {
    let mut s = String::new();
    for e in events {
        let _ = writeln!(
            s,
            "{} CONN {} {} {}",
            secs(e.t_ms),
            e.a,
            e.b,
            if e.link == Link::Up { "up" } else { "down" }
        );
    }
    s
}

/// Writes message-creation events in The ONE's format.
pub fn write_messages(events: &[MessageEvent]) -> String {
    let mut s = String::new();
    for e in events {
        let _ = write!(
            s,
            "{} C {} {} {} {}",
            secs(e.t_ms),
            e.id,
            e.from,
            e.to,
            e.size
        );
        if e.response_size > 0 {
            let _ = write!(s, " {}", e.response_size);
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_may_name_their_interface_and_say_up_in_any_case() {
        let text = "1 CONN 0 1 btInterface UP\n2 CONN 1 0 btInterface down\n3 CONN 2 3 Up\n";
        let c = parse_connections(text).expect("parses");
        let states: Vec<(u64, Link)> = c.iter().map(|e| (e.t_ms, e.link)).collect();
        assert_eq!(
            states,
            vec![(1000, Link::Up), (2000, Link::Down), (3000, Link::Up)]
        );
        let e = parse_connections("1 CONN 0 1 bt wifi up\n").expect_err("too many fields");
        assert_eq!(e.line, 1);
        let e = parse_connections("1 CONN 0 1 bt sideways\n").expect_err("no state");
        assert!(e.why.contains("up or down"), "{}", e.why);
    }

    #[test]
    fn one_formats_round_trip() {
        let text = "# a trace\n0.5 CONN 3 1 up\n12 CONN p1 p3 down\n";
        let c = parse_connections(text).expect("parses");
        assert_eq!(
            c,
            vec![
                ContactEvent {
                    t_ms: 500,
                    a: 1,
                    b: 3,
                    link: Link::Up
                },
                ContactEvent {
                    t_ms: 12_000,
                    a: 1,
                    b: 3,
                    link: Link::Down
                },
            ]
        );
        assert_eq!(parse_connections(&write_connections(&c)), Ok(c));
        let m = parse_messages("10 C M1 0 4 500\n11 C M2 4 0 500 300\n").expect("parses");
        assert_eq!(m[0].id, "M1");
        assert_eq!((m[0].response_size, m[1].response_size), (0, 300));
        assert_eq!(
            write_messages(&m),
            "10.000 C M1 0 4 500\n11.000 C M2 4 0 500 300\n"
        );
        assert_eq!(parse_messages(&write_messages(&m)), Ok(m));
        assert!(parse_messages("1 C M1 0 1 500 lots").is_err());
        assert!(parse_connections("1 CONN 1 2 sideways").is_err());
        assert!(parse_connections("x CONN 1 2 up").is_err());
    }
}
