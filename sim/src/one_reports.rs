//! Reports in The ONE's own text formats, so a run's files can be read by the scripts written
//! for The ONE and compared with its runs file by file:
//!
//! - `ContactTimesReport`: how many contacts lasted each duration (bins of `granularity`
//!   seconds, `<bin start> <count>` lines, a last line with zero), counting contacts that
//!   ended within the run;
//! - `InterContactTimesReport`: the same for the gaps between two contacts of one pair;
//! - `CreatedMessagesReport` and `DeliveredMessagesReport`: one line per message created, and
//!   per message delivered (its first arrival);
//! - `EventLogReport`: one line per event, as The ONE's GUI event log shows them (see
//!   [`event_log`]).
//!
//! Hosts are named as The ONE names them: their group's id and their number (`p12`; see
//! [`crate::groups`]). Times are seconds with four decimals, as The ONE's `Report.format` writes them, except in `EventLogReport`, which
//! prints The ONE's clock as Java prints a number (`2.5`, `10.0`).
//!
//! ## `EventLogReport`: bundles, not messages
//!
//! meshpay sends bundles, and one sync message may carry several, while The ONE sends whole
//! messages one at a time. The log has one `S`, `A`, `DE`, `DR` and `R` line per bundle,
//! named by its message:
//!
//! - a flight carrying several bundles writes an `S` line for each when it goes on the air
//!   (in the order the sync message carries them), and a `DE` or `A` line for each when it
//!   lands or is lost: every `S` line is closed by exactly one `DE` or `A` line of the same
//!   hosts and message. A bundle its receiver refuses on arrival (it took it meanwhile over
//!   another link, or has no room) closes with `A`, as The ONE never starts such a transfer;
//! - a message larger than 981 bytes travels in several bundles, so its `S`, `A`, `DE` and
//!   `DR` lines repeat, one per bundle. Its `DE … D` line is written once, for the bundle
//!   that completes it at its destination, at the time `DeliveredMessagesReport` gives; its
//!   other bundles reaching the destination before that are written `DE … R` (each is
//!   relayed towards the destination; `A` stays for arrivals after the delivery). So the
//!   `D` lines count delivered messages, the `DE` lines `relayed` and the `DR` lines
//!   `dropped` as `MessageStatsReport` counts them (bundles), and the `S` lines bundles sent;
//! - the `DE` and `A` lines of a landing come before what it set off at the same time (a
//!   copy dropped to make room, or a copy handed on leaving its sender), as The ONE logs a
//!   transfer's end before its consequences.

use crate::engine::{Arrival, Event, Outcome};
use crate::trace::{ContactEvent, Link};
use std::collections::HashMap;
use std::fmt::Write as _;

fn secs(ms: u64) -> String {
    format!("{}.{:04}", ms / 1000, (ms % 1000) * 10)
}

/// Durations counted into bins of `granularity_s`, printed as The ONE prints them.
fn histogram(durations_ms: &[u64], granularity_s: f64) -> String {
    let g_ms = (granularity_s * 1000.0).max(1.0);
    let mut bins: Vec<u64> = Vec::new();
    for &d in durations_ms {
        // Durations and bins are small enough for f64 to hold exactly.
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let i = (d as f64 / g_ms) as usize;
        if i + 2 > bins.len() {
            // One bin past the last used one, so the last line is always zero.
            bins.resize(i + 2, 0);
        }
        bins[i] += 1;
    }
    let mut s = String::new();
    for (i, n) in bins.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let start = i as f64 * granularity_s;
        let _ = writeln!(s, "{start:?} {n}");
    }
    s
}

/// For each pair, the time from an event of kind `opens` to its next event of the other
/// kind, ms.
fn spans(events: &[ContactEvent], opens: Link) -> Vec<u64> {
    let mut open: HashMap<(u32, u32), u64> = HashMap::new();
    let mut out = Vec::new();
    for e in events {
        if e.link == opens {
            open.insert((e.a, e.b), e.t_ms);
        } else if let Some(start) = open.remove(&(e.a, e.b)) {
            out.push(e.t_ms - start);
        }
    }
    out
}

/// The durations of the contacts that ended within the run, ms.
pub fn contact_durations(events: &[ContactEvent]) -> Vec<u64> {
    spans(events, Link::Up)
}

/// The gaps between a pair's contacts (from one going down to the next coming up), ms.
pub fn inter_contact_durations(events: &[ContactEvent]) -> Vec<u64> {
    spans(events, Link::Down)
}

/// `ContactTimesReport`.
pub fn contact_times(events: &[ContactEvent], granularity_s: f64) -> String {
    histogram(&contact_durations(events), granularity_s)
}

/// `InterContactTimesReport`.
pub fn inter_contact_times(events: &[ContactEvent], granularity_s: f64) -> String {
    histogram(&inter_contact_durations(events), granularity_s)
}

fn ttl(ttl_s: f64) -> String {
    if ttl_s > 0.0 {
        // The ONE keeps TTLs in whole minutes.
        #[allow(clippy::cast_possible_truncation)]
        let minutes = (ttl_s / 60.0).round() as i64;
        minutes.to_string()
    } else {
        "n/a".to_owned()
    }
}

/// `CreatedMessagesReport`: `time ID size fromHost toHost TTL isResponse`, in creation order.
pub fn created_messages(outcome: &Outcome, ttl_s: f64) -> String {
    let mut s = "# time  ID  size  fromHost  toHost  TTL  isResponse\n".to_owned();
    let mut list: Vec<_> = outcome.messages.iter().collect();
    list.sort_by_key(|m| m.created_ms);
    for m in list {
        let _ = writeln!(
            s,
            "{} {} {} {} {} {} N ",
            secs(m.created_ms),
            m.name,
            m.size,
            outcome.hosts.name(m.from),
            outcome.hosts.name(m.to),
            ttl(ttl_s)
        );
    }
    s
}

/// `DeliveredMessagesReport`: `time ID size hopcount deliveryTime fromHost toHost remainingTtl
/// isResponse path`, in delivery order. meshpay bundles carry no list of the hosts they
/// passed, so the path names the source and the destination only (`p3->…->p7`, or
/// `p3->p7` for one hop).
pub fn delivered_messages(outcome: &Outcome, ttl_s: f64) -> String {
    let mut s = "# time  ID  size  hopcount  deliveryTime  fromHost  toHost  remainingTtl  isResponse  path\n".to_owned();
    let mut list: Vec<_> = outcome
        .messages
        .iter()
        .filter_map(|m| Some((m.delivered_ms?, m)))
        .collect();
    list.sort_by_key(|(t, _)| *t);
    for (t, m) in list {
        let hops = m.hops.unwrap_or(0);
        let remaining = if ttl_s > 0.0 {
            // The ONE prints the remaining TTL in whole minutes, rounded down.
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            let left = ((ttl_s * 1000.0 - (t - m.created_ms) as f64) / 60_000.0).floor() as i64;
            left.to_string()
        } else {
            "n/a".to_owned()
        };
        let (from, to) = (outcome.hosts.name(m.from), outcome.hosts.name(m.to));
        let path = if hops <= 1 {
            format!("{from}->{to}")
        } else {
            format!("{from}->…->{to}")
        };
        let _ = writeln!(
            s,
            "{} {} {} {} {} {from} {to} {} N {}",
            secs(t),
            m.name,
            m.size,
            hops,
            secs(t - m.created_ms),
            remaining,
            path
        );
    }
    s
}

/// Seconds as Java prints a `double` (`Double.toString`), for a whole number of ms: the
/// shortest decimal with at least one digit after the point, and from 10^7 s on one digit
/// before the point and an exponent (`1.00000005E7`).
fn java_secs(ms: u64) -> String {
    let (s, frac) = (ms / 1000, ms % 1000);
    if s < 10_000_000 {
        let frac = format!("{frac:03}");
        let frac = frac.trim_end_matches('0');
        return format!("{s}.{}", if frac.is_empty() { "0" } else { frac });
    }
    let digits = format!("{s}{frac:03}");
    let rest = digits[1..].trim_end_matches('0');
    let exponent = s.ilog10();
    format!(
        "{}.{}E{exponent}",
        &digits[..1],
        if rest.is_empty() { "0" } else { rest }
    )
}

/// `EventLogReport`: one line per event, `time code hosts… [message] [extra]`, in the order
/// the run met them, with The ONE's codes:
///
/// - `CONN p1 p2 up` and `CONN p1 p2 down`: a contact, hosts in the order the contact's event
///   names them;
/// - `C p1 M7`: a message created at its source;
/// - `S p1 p2 M7`: a transfer started (a bundle went on the air);
/// - `A p1 p2 M7`: a transfer aborted, written after the `CONN … down` that caused it;
/// - `DE p1 p2 M7 D`: a transfer done, with `D` for the message's first delivery, `A` for a
///   delivery again, `R` for a relay;
/// - `DR p1 M7`: a copy dropped (expired, or evicted from a full buffer, or refused by its
///   source's full buffer when created), and `R p1 M7`: a copy removed without being dropped
///   (handed on by spray-and-focus, deleted on an acknowledgement of its delivery under
///   MaxProp, or the destination's own copy of a message delivered).
///
/// How bundles map onto The ONE's messages: see the [module doc](self).
///
/// The time is The ONE's clock as Java prints it (`2.5`, `10.0`, `1.0E7`), not `Report.format`.
pub fn event_log(outcome: &Outcome) -> String {
    let mut s = String::new();
    let name = |i: usize| &outcome.messages[i].name;
    let h = |n: u32| outcome.hosts.name(n);
    for e in &outcome.events {
        let t = java_secs(e.t_ms);
        let _ = match e.event {
            Event::Connection { a, b, up } => {
                writeln!(
                    s,
                    "{t} CONN {} {} {}",
                    h(a),
                    h(b),
                    if up { "up" } else { "down" }
                )
            }
            Event::Created { message } => {
                let from = outcome.messages[message].from;
                writeln!(s, "{t} C {} {}", h(from), name(message))
            }
            Event::Started { from, to, message } => {
                writeln!(s, "{t} S {} {} {}", h(from), h(to), name(message))
            }
            Event::Aborted { from, to, message } => {
                writeln!(s, "{t} A {} {} {}", h(from), h(to), name(message))
            }
            Event::Arrived {
                from,
                to,
                message,
                how,
            } => {
                let extra = match how {
                    Arrival::Delivered => "D",
                    Arrival::Again => "A",
                    Arrival::Relayed => "R",
                };
                writeln!(s, "{t} DE {} {} {} {extra}", h(from), h(to), name(message))
            }
            Event::Deleted {
                at,
                message,
                dropped,
            } => {
                let code = if dropped { "DR" } else { "R" };
                writeln!(s, "{t} {code} {} {}", h(at), name(message))
            }
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t_s: u64, a: u32, b: u32, up: bool) -> ContactEvent {
        ContactEvent {
            t_ms: t_s * 1000,
            a,
            b,
            link: if up { Link::Up } else { Link::Down },
        }
    }

    /// A pair meets for 3 s, parts for 5 s, meets for 3.5 s; another pair meets for 0.2 s and
    /// is still up at the end (not counted). By hand: contacts of 3 s, 3.5 s and 0.2 s
    /// (ended), gaps of 5 s.
    #[test]
    fn contact_and_inter_contact_histograms_count_by_hand() {
        let mut events = vec![
            ev(10, 1, 2, true),
            ev(13, 1, 2, false),
            ev(18, 1, 2, true),
            ContactEvent {
                t_ms: 21_500,
                a: 1,
                b: 2,
                link: Link::Down,
            },
            ev(30, 3, 4, true),
            ContactEvent {
                t_ms: 30_200,
                a: 3,
                b: 4,
                link: Link::Down,
            },
            ev(40, 3, 4, true),
        ];
        events.sort_by_key(|e| e.t_ms);
        assert_eq!(contact_durations(&events), vec![3000, 3500, 200]);
        assert_eq!(inter_contact_durations(&events), vec![5000, 9800]);
        assert_eq!(
            contact_times(&events, 1.0),
            "0.0 1\n1.0 0\n2.0 0\n3.0 2\n4.0 0\n"
        );
        assert_eq!(inter_contact_times(&events, 5.0), "0.0 0\n5.0 2\n10.0 0\n");
        assert_eq!(contact_times(&[], 1.0), "");
    }

    #[test]
    fn times_print_with_four_decimals() {
        assert_eq!(secs(0), "0.0000");
        assert_eq!(secs(12_345), "12.3450");
        assert_eq!(ttl(18_000.0), "300");
        assert_eq!(ttl(0.0), "n/a");
    }

    /// As Java 17's `Double.toString` prints these seconds.
    #[test]
    fn event_times_print_as_java_prints_a_double() {
        assert_eq!(java_secs(0), "0.0");
        assert_eq!(java_secs(2_500), "2.5");
        assert_eq!(java_secs(10_000), "10.0");
        assert_eq!(java_secs(12_345), "12.345");
        assert_eq!(java_secs(1), "0.001");
        assert_eq!(java_secs(9_999_999_999), "9999999.999");
        assert_eq!(java_secs(10_000_000_000), "1.0E7");
        assert_eq!(java_secs(10_000_000_500), "1.00000005E7");
        assert_eq!(java_secs(123_456_789_000), "1.23456789E8");
    }
}
