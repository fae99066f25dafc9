//! Writing the console's HTML: escaping, times and amounts for people, and the frame every
//! page shares (head, navigation, main). No inline script or style anywhere: the page's
//! Content-Security-Policy forbids both, so behaviour and looks come from the two embedded
//! assets.

use crate::live::LiveEvent;
use crate::risk::Alert;
use std::fmt::Write as _;

/// Text made safe for HTML text and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes `s` for a query string value.
pub(super) fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (the proleptic Gregorian calendar; the
/// days-to-date step is Howard Hinnant's `civil_from_days`).
pub(super) fn time(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(0);
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A `<time>` element for Unix seconds.
pub(super) fn time_el(unix: u64) -> String {
    let text = time(unix);
    // `YYYY-MM-DD HH:MM:SS UTC` → `YYYY-MM-DDTHH:MM:SSZ`
    let iso = format!("{}T{}Z", &text[..10], &text[11..19]);
    format!("<time datetime=\"{iso}\">{text}</time>")
}

/// An amount in minor units with thousands grouped (`1,234,567`; negative with a minus sign).
pub(super) fn amount(n: i128) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('−');
    }
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One sentence for a live event (the same as `console.js` writes for events that arrive
/// later).
pub(super) fn describe(e: &LiveEvent) -> (u64, String) {
    match e {
        LiveEvent::Upload {
            source,
            records,
            settled,
            rejected,
            unopened,
            at,
        } => (
            *at,
            format!(
                "upload from {source}: {records} records, {settled} settled, {rejected} refused, {unopened} unopened"
            ),
        ),
        LiveEvent::Receipt {
            record,
            status,
            amount,
            payee,
            allowance,
            at,
        } => (
            *at,
            format!(
                "receipt {}…: {status}, {amount} to {payee} under allowance {allowance}",
                record.get(..16).unwrap_or(record)
            ),
        ),
        LiveEvent::Fraud {
            allowance,
            holder,
            at,
        } => (
            *at,
            format!("fraud: allowance {allowance} of holder {holder} is forked"),
        ),
        LiveEvent::Alert(a) => (
            a.since,
            format!("alert {}: {} — {}", a.rule.name(), a.subject, a.detail),
        ),
    }
}

/// The kind of a live event, for its `data-kind`.
fn kind(e: &LiveEvent) -> &'static str {
    match e {
        LiveEvent::Upload { .. } => "upload",
        LiveEvent::Receipt { .. } => "receipt",
        LiveEvent::Fraud { .. } => "fraud",
        LiveEvent::Alert(_) => "alert",
    }
}

/// The live feed list (`id="feed"`), newest first.
pub(super) fn feed(events: &[std::sync::Arc<LiveEvent>]) -> String {
    let mut out = String::from(
        "<p class=\"live\" id=\"live\" role=\"status\">Live updates need JavaScript.</p><ul id=\"feed\" class=\"feed\" aria-label=\"Settlement events, newest first\">",
    );
    for e in events.iter().rev() {
        let (at, text) = describe(e);
        let _ = write!(
            out,
            "<li data-kind=\"{}\">{} {}</li>",
            kind(e),
            time_el(at),
            esc(&text)
        );
    }
    out.push_str("</ul>");
    if events.is_empty() {
        out.push_str("<p id=\"feed-empty\">Nothing settled since the server started. New uploads appear here as they are settled.</p>");
    } else {
        out.push_str("<p id=\"feed-empty\" hidden>Nothing yet.</p>");
    }
    out
}

/// The alerts list (`id="alerts"`): one item per alert, with its rule in `data-rule`; the
/// script keeps at most `max` when it refreshes the list.
pub(super) fn alerts(list: &[Alert], max: usize) -> String {
    let mut out =
        format!("<ul id=\"alerts\" class=\"alerts\" data-max=\"{max}\" aria-live=\"polite\">");
    for a in list {
        let _ = write!(
            out,
            "<li data-rule=\"{rule}\"><strong>{rule}</strong> <span class=\"subject\">{}</span> — {} <span class=\"since\">since {}</span></li>",
            esc(&a.subject),
            esc(&a.detail),
            time_el(a.since),
            rule = a.rule.name(),
        );
    }
    out.push_str("</ul>");
    let _ = write!(
        out,
        "<p id=\"no-alerts\"{}>No alerts stand.</p>",
        if list.is_empty() { "" } else { " hidden" }
    );
    out
}

/// A table in a scrolling region (keyboard users scroll it once focused).
pub(super) fn table(label: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(
        "<div class=\"scroll\" role=\"region\" aria-label=\"{}\" tabindex=\"0\"><table><thead><tr>",
        esc(label)
    );
    for h in head {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\">None.</td></tr>",
            head.len().max(1)
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

/// The console's pages, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Overview,
    Accounts,
    Settlement,
    Risk,
    Exposure,
    None,
}

const NAV: [(Nav, &str, &str); 5] = [
    (Nav::Overview, "/console", "Overview"),
    (Nav::Accounts, "/console/accounts", "Accounts"),
    (Nav::Settlement, "/console/settlement", "Settlement"),
    (Nav::Risk, "/console/risk", "Risk"),
    (Nav::Exposure, "/console/exposure", "Exposure"),
];

/// A whole page: `title`, the navigation with `active` marked (none on the login page, which
/// has no `csrf`), and `main`.
pub(super) fn page(title: &str, active: Nav, csrf: Option<&str>, main: &str) -> String {
    let mut out = String::with_capacity(main.len() + 2048);
    out.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if let Some(csrf) = csrf {
        let _ = write!(out, "<meta name=\"csrf-token\" content=\"{}\">", esc(csrf));
    }
    let _ = write!(
        out,
        "<title>{} · meshpay issuer console</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/console/assets/console.css\"><script src=\"/console/assets/console.js\" defer></script></head><body><a class=\"skip\" href=\"#main\">Skip to content</a><header><p class=\"brand\">meshpay issuer console</p>",
        esc(title)
    );
    if csrf.is_some() {
        out.push_str("<nav aria-label=\"Console\"><ul>");
        for (nav, href, label) in NAV {
            let current = if nav == active {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<li><a href=\"{href}\"{current}>{label}</a></li>");
        }
        out.push_str("</ul><form class=\"logout\" method=\"post\" action=\"/console/logout\" data-post=\"/console/logout\" data-then=\"/console/login\"><button type=\"submit\" id=\"logout\">Sign out</button></form></nav>");
    }
    let _ = write!(
        out,
        "</header><main id=\"main\" tabindex=\"-1\"><h1>{}</h1>{main}</main><footer><p>Times are UTC. Amounts are in minor units.</p></footer></body></html>",
        esc(title)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(query_value("mpdev1 a/b"), "mpdev1%20a%2Fb");
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(time(1_798_761_599), "2026-12-31 23:59:59 UTC");
        assert_eq!(time(4_107_542_400), "2100-03-01 00:00:00 UTC");
    }

    #[test]
    fn amounts_are_grouped() {
        assert_eq!(amount(0), "0");
        assert_eq!(amount(999), "999");
        assert_eq!(amount(1_000), "1,000");
        assert_eq!(amount(-1_234_567), "−1,234,567");
    }

    #[test]
    fn pages_carry_no_inline_script_or_style() {
        let html = page("T <x>", Nav::Risk, Some("tok"), "<p>body</p>");
        assert!(html.contains("<meta name=\"csrf-token\" content=\"tok\">"));
        assert!(html.contains("<a href=\"/console/risk\" aria-current=\"page\">Risk</a>"));
        assert!(html.contains("<title>T &lt;x&gt; · meshpay issuer console</title>"));
        assert!(!html.contains("<script>"));
        assert!(!html.contains("style="));
        assert!(!html.contains("<style"));
        let login = page("Sign in", Nav::None, None, "");
        assert!(!login.contains("csrf-token"));
        assert!(!login.contains("<nav"));
    }
}
