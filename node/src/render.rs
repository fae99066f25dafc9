//! What the command line prints for each control answer, when `--json` is not given. (With
//! `--json` it prints the answer as the control API returns it.)

use crate::api::{Answer, Direction};
use meshpay_protocol::device::SentStatus;
use std::fmt::Write as _;

/// The answer as text for a person.
// One arm per control answer.
#[allow(clippy::too_many_lines)]
pub fn text(a: &Answer) -> String {
    match a {
        Answer::Id(d) => format!(
            "device key  {}\npeer id     {}\nlistening   {}",
            d.device_key,
            d.peer_id.as_deref().unwrap_or(""),
            d.listen.join("\n            ")
        ),
        Answer::Peers(peers) if peers.is_empty() => "no peers connected".into(),
        Answer::Peers(peers) => lines(
            peers
                .iter()
                .map(|p| format!("{}  {:<5} {}", p.device_key, p.link, p.address)),
        ),
        Answer::Request(r) => format!(
            "{}\n\n{}\n\nrequest for {} {}, open until {} (unix time)",
            crate::qr::render(&r.text),
            r.text,
            r.amount,
            r.currency,
            r.expires
        ),
        Answer::Paid(o) => match o.status {
            SentStatus::Acked => format!(
                "paid {} {} to {} (counter {}, acknowledged)",
                o.amount, o.currency, o.payee, o.counter
            ),
            SentStatus::Refused => format!(
                "refused by the payee: {}",
                o.reason.as_deref().unwrap_or("")
            ),
            SentStatus::Pending => format!(
                "sent, not yet acknowledged: {}",
                o.reason.as_deref().unwrap_or("")
            ),
        },
        Answer::Balance(rows) if rows.is_empty() => "no allowances and no payments yet".into(),
        Answer::Balance(rows) => lines(rows.iter().map(|(cur, r)| {
            format!(
                "{cur}: spendable {}, sent {} (+{} pending), received {}",
                r.spendable, r.sent_acked, r.sent_pending, r.received
            )
        })),
        Answer::History(items) if items.is_empty() => "no payments yet".into(),
        Answer::History(items) => lines(items.iter().map(|h| {
            let direction = match h.direction {
                Direction::Sent => "sent",
                Direction::Received => "received",
            };
            format!(
                "{}  {:<8} {:>10} {:<5} {:<8} {}",
                h.time,
                direction,
                h.amount,
                h.currency,
                h.status.name(),
                h.counterparty
            )
        })),
        Answer::Allowances(list) if list.is_empty() => {
            "no allowances: get one from your issuer".into()
        }
        Answer::Allowances(list) => lines(list.iter().map(|a| {
            format!(
                "{}  {} {}/{} left, counter {}, valid until {}{}",
                a.id,
                a.currency,
                a.available,
                a.limit,
                a.counter,
                a.valid_until,
                if a.retired { " (retired)" } else { "" }
            )
        })),
        Answer::AllowanceAdded(a) => {
            format!("added allowance {} ({} {})", a.id, a.limit, a.currency)
        }
        Answer::Trusted(t) => format!("trusting issuer {} ({})", t.issuer, t.name),
        Answer::Frauds(list) if list.is_empty() => "no fraud proofs".into(),
        Answer::Frauds(list) => lines(list.iter().map(|f| {
            format!(
                "allowance {} of {}: counter {} spent twice",
                f.allowance, f.holder, f.counter
            )
        })),
        Answer::ToppedUp(t) => format!(
            "new allowance {}: {} {} valid until {} (unix time)",
            t.id, t.limit, t.currency, t.valid_until
        ),
        Answer::GatewayRound(r) => format!(
            "uploaded {} records, {} final receipts into the mesh; {} payments got the issuer's decision; {} new fraud proofs or revocations",
            r.uploaded, r.receipts, r.updated, r.alerts
        ),
        Answer::Records(records) => records.join("\n"),
        Answer::Mesh(m) => {
            let mut out = format!(
                "{} bundles, {} bytes (quota {} bytes); {} settled records remembered\n",
                m.bundles, m.bytes, m.max_bytes, m.tombstones
            );
            for (k, n) in &m.by_kind {
                let _ = writeln!(out, "  {k:<12} {n}");
            }
            let _ = writeln!(
                out,
                "hand-over receipts (proof of carriage): {}",
                m.carried.len()
            );
            for h in &m.carried {
                let _ = writeln!(
                    out,
                    "  {} took {} bundles ({} bytes) at {}",
                    h.taker, h.count, h.bytes, h.at
                );
            }
            match &m.gateway {
                Some(g) => match (&g.round, &g.error) {
                    (Some(r), _) => {
                        let _ = writeln!(
                            out,
                            "last gateway round: {} at {}: uploaded {}, receipts {}",
                            g.url, g.at, r.uploaded, r.receipts
                        );
                    }
                    (None, e) => {
                        let _ = writeln!(
                            out,
                            "last gateway round: {} at {} failed: {}",
                            g.url,
                            g.at,
                            e.as_deref().unwrap_or("")
                        );
                    }
                },
                None => out.push_str("no gateway round yet\n"),
            }
            out.trim_end().to_owned()
        }
        Answer::Synced(s) => format!(
            "synced with {} peers: took {} bundles, gave {}",
            s.peers, s.took, s.gave
        ),
        Answer::Exported(e) => format!(
            "wrote {} bundles ({} bytes) to {}",
            e.bundles, e.bytes, e.path
        ),
        Answer::Imported(r) => format!(
            "{} bundles in the file: {} added, {} already held, {} already settled, {} refused{}",
            r.bundles,
            r.added,
            r.duplicate,
            r.settled,
            r.refused,
            if r.reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.reasons.join("; "))
            }
        ),
        Answer::Dialed(d) => format!("connected to {} at {}", d.device_key, d.address),
        Answer::Alerts(list) if list.is_empty() => "no alerts".into(),
        Answer::Alerts(list) => lines(list.iter().map(|a| a.detail.clone())),
        Answer::Refusals(list) if list.is_empty() => {
            "no payment refused since the node started".into()
        }
        Answer::Refusals(list) => lines(
            list.iter()
                .map(|r| format!("{}  from {}: {}", r.at, r.payer, r.reason)),
        ),
        Answer::Paired(p) => format!(
            "{}\n\nopen once to pair a browser: {}\n(valid until {} unix time)",
            crate::qr::render(&p.url),
            p.url,
            p.expires
        ),
    }
}

fn lines(rows: impl Iterator<Item = String>) -> String {
    rows.collect::<Vec<_>>().join("\n")
}
