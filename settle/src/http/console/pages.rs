//! The console's pages, rendered on the server from the same typed answers as the JSON API.
//! A part that cannot be read (storage failing) says so in place; the rest of the page is
//! still shown.

use super::super::admin::{self, Reconciliation};
use super::super::{ApiError, AppState, device};
use super::html::{self, Nav, amount, esc, query_value, table, time_el};
use super::{PageSession, html as respond};
use crate::exposure::Exposure;
use crate::risk::{RiskReport, Rule};
use crate::watch::Refusals;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use meshpay_protocol::objects::MAX_AMOUNT;
use serde::Deserialize;
use std::fmt::Write as _;

/// Alerts shown on the overview at most (the risk page shows more, the JSON all).
const OVERVIEW_ALERTS: usize = 50;
/// Alerts shown on the risk page at most.
const RISK_PAGE_ALERTS: usize = 100;
/// Statement lines shown at most (the newest).
const STATEMENT_LINES: usize = 100;
/// Characters of a transfer's reference shown in a statement (the JSON has it whole).
const REFERENCE_CHARS: usize = 60;

/// `text` cut to `max` characters, with an ellipsis if it was longer.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn failed(what: &str, e: &ApiError) -> String {
    format!(
        "<p class=\"error\" role=\"alert\">Could not read {what}: {}</p>",
        esc(&e.message)
    )
}

fn ok_page(title: &str, nav: Nav, session: &PageSession, main: &str) -> Response {
    respond(
        StatusCode::OK,
        html::page(title, nav, Some(&session.csrf), main),
    )
}

/// The books' check: `#conserved` and the totals.
fn books(r: &Reconciliation) -> String {
    let (class, word) = if r.conserved {
        ("ok", "The books balance")
    } else {
        (
            "bad",
            "The books do not balance: investigate before settling more",
        )
    };
    // `data-book` names the reconciliation's field: the script refreshes them as uploads settle.
    let figures = [
        ("User balances", "totals.users", amount(r.totals.users)),
        ("In escrow", "totals.escrow", amount(r.totals.escrow)),
        (
            "Credited, net",
            "totals.credited_net",
            amount(r.totals.credited_net),
        ),
        (
            "Records settled",
            "records.settled",
            amount(i128::from(r.records.settled)),
        ),
        (
            "Records refused",
            "records.rejected",
            amount(i128::from(r.records.rejected)),
        ),
        ("Value settled", "settled_amount", amount(r.settled_amount)),
        (
            "Fraud proofs",
            "fraud_proofs",
            amount(i128::from(r.fraud_proofs)),
        ),
    ];
    let mut out = format!(
        "<p id=\"conserved\" class=\"{class}\">conserved: {}</p><p class=\"hint\"><span id=\"conserved-text\">{word}</span>. Every balance sums to zero, and user balances plus escrow equal what was credited.</p><dl class=\"figures\">",
        r.conserved
    );
    for (name, field, value) in figures {
        let _ = write!(
            out,
            "<div><dt>{name}</dt><dd data-book=\"{field}\">{value}</dd></div>"
        );
    }
    out.push_str("</dl>");
    out
}

fn by_currency(x: &Exposure) -> String {
    let rows: Vec<Vec<String>> = x
        .by_currency
        .iter()
        .map(|c| {
            vec![
                esc(&c.currency),
                amount(i128::from(c.allowances)),
                amount(i128::from(c.limit)),
                amount(i128::from(c.settled)),
                amount(i128::from(c.outstanding)),
            ]
        })
        .collect();
    format!(
        "<p>Open allowances: {}. Holders: {}.{}</p>{}",
        amount(i128::from(x.allowances)),
        amount(i128::from(x.holders)),
        if x.truncated {
            " Only the 100,000 released soonest are counted."
        } else {
            ""
        },
        table(
            "Escrow by currency",
            &["Currency", "Allowances", "Limits", "Settled", "Outstanding"],
            &rows
        )
    )
}

fn alert_section(report: &RiskReport, shown: usize) -> String {
    let mut out = html::alerts(&report.alerts[..report.alerts.len().min(shown)], shown);
    let total: u64 = report.counts.values().sum();
    if total > shown as u64 {
        let _ = write!(
            out,
            "<p>The newest {shown} of {total} alerts are shown; <a href=\"/console/api/risk\">the JSON</a> lists up to 100 per rule.</p>"
        );
    }
    out
}

fn refusal_tables(r: &Refusals) -> String {
    let rows = |list: &[crate::watch::ReasonCount]| -> Vec<Vec<String>> {
        list.iter()
            .map(|c| vec![esc(&c.reason), amount(i128::from(c.count))])
            .collect()
    };
    format!(
        "<h3>Kept in the books</h3>{}<h3>Decided by this server since it started</h3>{}",
        table("Stored refusals", &["Reason", "Records"], &rows(&r.stored)),
        table(
            "Refusals since start",
            &["Reason", "Records"],
            &rows(&r.since_start)
        ),
    )
}

/// `GET /console`: the books, exposure, alerts and the live feed.
pub(super) async fn overview(session: PageSession, State(s): State<AppState>) -> Response {
    let mut main =
        String::from("<section aria-labelledby=\"h-books\"><h2 id=\"h-books\">Reconciliation</h2>");
    match admin::reconcile(&s).await {
        Ok(r) => main.push_str(&books(&r)),
        Err(e) => main.push_str(&failed("the books", &e)),
    }
    main.push_str(
        "</section><section aria-labelledby=\"h-risk\"><h2 id=\"h-risk\">Risk alerts</h2>",
    );
    match s.server.risk().await {
        Ok(r) => main.push_str(&alert_section(&r, OVERVIEW_ALERTS)),
        Err(e) => main.push_str(&failed("the alerts", &e.into())),
    }
    main.push_str("<p><a href=\"/console/risk\">All alerts and the rules</a></p></section><section aria-labelledby=\"h-exposure\"><h2 id=\"h-exposure\">Offline exposure</h2>");
    // The totals only, summed by the database: the report by holder and expiry reads every
    // open certificate, which the overview does not show.
    match s.server.exposure_totals().await {
        Ok(x) => main.push_str(&by_currency(&x)),
        Err(e) => main.push_str(&failed("the exposure", &e.into())),
    }
    main.push_str("<p><a href=\"/console/exposure\">By holder and expiry</a></p></section><section aria-labelledby=\"h-feed\"><h2 id=\"h-feed\">Live settlement</h2>");
    main.push_str(&html::feed(&s.server.live.recent()));
    main.push_str("</section>");
    ok_page("Overview", Nav::Overview, &session, &main)
}

/// `GET /console/settlement`: the live feed, refusals by reason, the books.
pub(super) async fn settlement(session: PageSession, State(s): State<AppState>) -> Response {
    let mut main = String::from(
        "<section aria-labelledby=\"h-feed\"><h2 id=\"h-feed\">Live feed</h2><p>Uploads and the receipts they got, newest first (the last 100 events; at most 100 receipts per upload).</p>",
    );
    main.push_str(&html::feed(&s.server.live.recent()));
    main.push_str("</section><section aria-labelledby=\"h-refusals\"><h2 id=\"h-refusals\">Refusals by reason</h2>");
    match s.server.refusals().await {
        Ok(r) => main.push_str(&refusal_tables(&r)),
        Err(e) => main.push_str(&failed("the refusals", &e.into())),
    }
    main.push_str(
        "</section><section aria-labelledby=\"h-books\"><h2 id=\"h-books\">Reconciliation</h2>",
    );
    match admin::reconcile(&s).await {
        Ok(r) => main.push_str(&books(&r)),
        Err(e) => main.push_str(&failed("the books", &e)),
    }
    main.push_str("</section>");
    ok_page("Settlement", Nav::Settlement, &session, &main)
}

const RULE_HELP: [(Rule, &str, &str); 6] = [
    (
        Rule::Fraud,
        "A fraud proof stands against an allowance still open: its holder signed two IOUs for one counter.",
        "books",
    ),
    (
        Rule::Revoked,
        "An allowance still open was revoked (a fork's revocation shows as its fraud alert).",
        "books",
    ),
    (
        Rule::Velocity,
        "One allowance settled at least this many payments (or this much value) within an hour.",
        "memory",
    ),
    (
        Rule::NearLimit,
        "An allowance still open has settled at least this percent of its limit.",
        "books",
    ),
    (
        Rule::ForkedPayee,
        "A payee received IOUs under an allowance later proven forked (flagged for a day).",
        "memory",
    ),
    (
        Rule::JunkSource,
        "One source uploaded at least this many inputs that do not open within an hour.",
        "memory",
    ),
];

fn threshold(r: &RiskReport, rule: Rule) -> String {
    let off = |n: u64, what: &str| {
        if n == 0 {
            "off".to_owned()
        } else {
            format!("{} {what}", amount(i128::from(n)))
        }
    };
    let rules = &r.rules;
    match rule {
        Rule::Fraud | Rule::Revoked | Rule::ForkedPayee => "always".to_owned(),
        Rule::Velocity => format!(
            "{}; {}",
            off(rules.velocity_payments, "payments per hour"),
            off(rules.velocity_value, "minor units per hour")
        ),
        Rule::NearLimit => off(rules.near_limit_percent, "percent"),
        Rule::JunkSource => off(rules.junk_per_hour, "inputs per hour"),
    }
}

fn rules_table(r: &RiskReport) -> String {
    let rows: Vec<Vec<String>> = RULE_HELP
        .iter()
        .map(|(rule, meaning, from)| {
            vec![
                format!("<code>{}</code>", rule.name()),
                esc(&threshold(r, *rule)),
                esc(meaning),
                (*from).to_owned(),
                format!(
                    "<span data-count=\"{}\">{}</span>",
                    rule.name(),
                    r.counts.get(rule).copied().unwrap_or(0)
                ),
            ]
        })
        .collect();
    table(
        "Rules and thresholds",
        &["Rule", "Threshold", "Raised when", "From", "Standing"],
        &rows,
    )
}

/// `GET /console/risk`: the alerts, and the rules with their thresholds.
pub(super) async fn risk(session: PageSession, State(s): State<AppState>) -> Response {
    let (alerts, rules) = match s.server.risk().await {
        Ok(r) => (alert_section(&r, RISK_PAGE_ALERTS), rules_table(&r)),
        Err(e) => (failed("the alerts", &e.into()), String::new()),
    };
    let main = format!(
        "<section aria-labelledby=\"h-alerts\"><h2 id=\"h-alerts\">Alerts</h2>{alerts}</section><section aria-labelledby=\"h-rules\"><h2 id=\"h-rules\">Rules</h2><p>Thresholds are set when the server starts (<code>meshpay settle serve --risk-…</code>; 0 turns a rule off). Rules read from the books survive a restart; those counted in memory start empty when the server starts.</p>{rules}</section>"
    );
    ok_page("Risk", Nav::Risk, &session, &main)
}

/// `GET /console/exposure`: escrow by currency and holder, and what expires when.
pub(super) async fn exposure(session: PageSession, State(s): State<AppState>) -> Response {
    let main = match s.server.exposure().await {
        Err(e) => failed("the exposure", &e.into()),
        Ok(x) => {
            let holders: Vec<Vec<String>> = x
                .by_holder
                .iter()
                .map(|h| {
                    vec![
                        format!(
                            "<a href=\"/console/accounts?device={}\"><code>{}</code></a>",
                            query_value(&h.holder),
                            esc(&h.holder)
                        ),
                        esc(&h.currency),
                        amount(i128::from(h.allowances)),
                        amount(i128::from(h.outstanding)),
                    ]
                })
                .collect();
            let expiries: Vec<Vec<String>> = x
                .expiries
                .iter()
                .map(|e| {
                    vec![
                        time_el(e.settle_by),
                        time_el(e.valid_until),
                        format!("<code>{}</code>", esc(&e.allowance)),
                        format!("<code>{}</code>", esc(&e.holder)),
                        esc(&e.currency),
                        amount(i128::from(e.outstanding)),
                        format!(
                            "{} of {}",
                            amount(i128::from(e.settled)),
                            amount(i128::from(e.limit))
                        ),
                    ]
                })
                .collect();
            format!(
                "<section aria-labelledby=\"h-currency\"><h2 id=\"h-currency\">By currency</h2><p>What open allowances may still settle: their escrow, limit minus settled.</p>{}</section><section aria-labelledby=\"h-holder\"><h2 id=\"h-holder\">By holder</h2><p>The largest exposures (at most 100).</p>{}</section><section aria-labelledby=\"h-expiry\"><h2 id=\"h-expiry\">What expires when</h2><p>Open allowances, soonest released first (at most 100). Offline payments end at <em>valid until</em>; the unspent escrow returns to the holder after <em>settle by</em>.</p>{}</section>",
                by_currency(&x),
                table(
                    "Escrow by holder",
                    &["Holder", "Currency", "Allowances", "Outstanding"],
                    &holders
                ),
                table(
                    "Expiries",
                    &[
                        "Settle by",
                        "Valid until",
                        "Allowance",
                        "Holder",
                        "Currency",
                        "Outstanding",
                        "Settled of limit"
                    ],
                    &expiries
                ),
            )
        }
    };
    ok_page("Exposure", Nav::Exposure, &session, &main)
}

/// The query of the accounts page.
#[derive(Debug, Default, Deserialize)]
pub(super) struct AccountQuery {
    device: Option<String>,
    done: Option<String>,
}

fn find_form(dev: &str) -> String {
    format!(
        "<form class=\"inline\" method=\"get\" action=\"/console/accounts\" role=\"search\"><label for=\"find-device\">Device key</label><input id=\"find-device\" name=\"device\" value=\"{}\" required autocomplete=\"off\" spellcheck=\"false\" placeholder=\"mpdev1…\"><button type=\"submit\" id=\"find\">Find</button></form>",
        esc(dev)
    )
}

fn open_form(dev: &str) -> String {
    format!(
        "<form class=\"inline\" method=\"post\" action=\"/console/api/accounts\" data-post=\"/console/api/accounts\" data-then=\"/console/accounts?device={{device}}&amp;done=open\"><label for=\"open-device\">Device key</label><input id=\"open-device\" name=\"device\" value=\"{}\" required autocomplete=\"off\" spellcheck=\"false\"><button type=\"submit\" id=\"open\">Open account</button><p class=\"status\" role=\"status\"></p></form>",
        esc(dev)
    )
}

fn adjust_form(dev: &str) -> String {
    format!(
        "<form class=\"stack\" method=\"get\" action=\"/console/accounts/confirm\"><label for=\"adjust-device\">Device key</label><input id=\"adjust-device\" name=\"device\" value=\"{}\" required autocomplete=\"off\" spellcheck=\"false\"><fieldset><legend>Action</legend><div class=\"choice\"><input type=\"radio\" id=\"action-credit\" name=\"action\" value=\"credit\" checked><label for=\"action-credit\">Credit: money in (a top-up)</label></div><div class=\"choice\"><input type=\"radio\" id=\"action-debit\" name=\"action\" value=\"debit\"><label for=\"action-debit\">Debit: money out (a withdrawal)</label></div></fieldset><label for=\"amount\">Amount, in minor units</label><input id=\"amount\" name=\"amount\" inputmode=\"numeric\" pattern=\"[0-9]+\" required autocomplete=\"off\"><label for=\"reference\">Reference (optional, kept with the transfer)</label><input id=\"reference\" name=\"reference\" maxlength=\"200\" autocomplete=\"off\"><button type=\"submit\" id=\"review\">Review</button></form>",
        esc(dev)
    )
}

/// `GET /console/accounts`: find an account and its statement; open one; credit or debit.
pub(super) async fn accounts(
    session: PageSession,
    State(s): State<AppState>,
    Query(q): Query<AccountQuery>,
) -> Response {
    let dev = q.device.as_deref().unwrap_or("").trim().to_owned();
    let mut main = String::new();
    if let Some(done) = q.done.as_deref() {
        let what = match done {
            "open" => "The account is open.",
            "credit" => "The credit is done.",
            "debit" => "The debit is done.",
            _ => "",
        };
        if !what.is_empty() {
            let _ = write!(
                main,
                "<p class=\"ok\" role=\"status\" id=\"done\">{what}</p>"
            );
        }
    }
    main.push_str("<section aria-labelledby=\"h-find\"><h2 id=\"h-find\">Find an account</h2>");
    main.push_str(&find_form(&dev));
    main.push_str("</section>");
    if !dev.is_empty() {
        main.push_str(
            "<section aria-labelledby=\"h-statement\"><h2 id=\"h-statement\">Statement</h2>",
        );
        let tail = match device(&dev) {
            Ok(d) => s
                .server
                .statement_tail(&d, STATEMENT_LINES)
                .await
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        match tail {
            Ok((balance, count, entries)) => {
                let _ = write!(
                    main,
                    "<p>Account <code>{}</code></p><p class=\"balance\">Balance: <strong id=\"balance\">{}</strong></p>",
                    esc(&dev),
                    amount(i128::from(balance))
                );
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.seq.to_string(),
                            time_el(u64::try_from(e.at).unwrap_or(0)),
                            esc(&e.kind),
                            amount(i128::from(e.amount)),
                            format!("<code>{}</code>", esc(&e.counterpart)),
                            esc(&clip(&e.reference, REFERENCE_CHARS)),
                        ]
                    })
                    .collect();
                if count > entries.len() as u64 {
                    let _ = write!(
                        main,
                        "<p>The newest {STATEMENT_LINES} of {count} transfers; <a href=\"/console/api/accounts/{}\">the JSON</a> has them all.</p>",
                        query_value(&dev)
                    );
                }
                main.push_str(&table(
                    "Statement, newest first",
                    &["#", "When", "Kind", "Amount", "Other account", "Reference"],
                    &rows,
                ));
            }
            Err(e) if e.code == "not_found" => {
                main.push_str(
                    "<p id=\"no-account\">This device has no account here. Open one below.</p>",
                );
            }
            Err(e) => main.push_str(&failed("the statement", &e)),
        }
        main.push_str("</section>");
    }
    main.push_str("<section aria-labelledby=\"h-open\"><h2 id=\"h-open\">Open an account</h2>");
    main.push_str(&open_form(&dev));
    main.push_str("</section><section aria-labelledby=\"h-adjust\"><h2 id=\"h-adjust\">Credit or debit</h2><p>You will see what will happen, and confirm it, before anything changes.</p>");
    main.push_str(&adjust_form(&dev));
    main.push_str("</section>");
    ok_page("Accounts", Nav::Accounts, &session, &main)
}

/// The query of the confirmation page.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ConfirmQuery {
    device: Option<String>,
    action: Option<String>,
    amount: Option<String>,
    reference: Option<String>,
}

/// What a credit or debit will do.
struct Plan {
    device: String,
    credit: bool,
    amount: u64,
    reference: String,
    before: u64,
    after: u64,
}

/// What a credit or debit would do, or why it cannot be done.
async fn plan(s: &AppState, q: &ConfirmQuery) -> Result<Plan, String> {
    let dev = q.device.as_deref().unwrap_or("").trim().to_owned();
    let d = device(&dev).map_err(|e| e.message)?;
    let credit = match q.action.as_deref() {
        Some("credit") => true,
        Some("debit") => false,
        _ => return Err("choose credit or debit".to_owned()),
    };
    let value = q
        .amount
        .as_deref()
        .unwrap_or("")
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|a| (1..=MAX_AMOUNT).contains(a))
        .ok_or_else(|| {
            format!("the amount must be a whole number of minor units, 1 to {MAX_AMOUNT}")
        })?;
    let reference = q.reference.as_deref().unwrap_or("").trim().to_owned();
    if reference.len() > 200 {
        return Err("the reference is over 200 bytes".to_owned());
    }
    // The balance alone: the statement may be long, and the step shows none of it.
    let balance = s
        .server
        .balance(&d)
        .await
        .map_err(|e| ApiError::from(e).message)?;
    let after = if credit {
        balance
            .checked_add(value)
            .filter(|b| i64::try_from(*b).is_ok())
    } else {
        balance.checked_sub(value)
    };
    let after = after.ok_or_else(|| {
        if credit {
            "the balance would pass what the books hold".to_owned()
        } else {
            format!(
                "the account holds {}, less than {}",
                amount(i128::from(balance)),
                amount(i128::from(value))
            )
        }
    })?;
    Ok(Plan {
        device: dev,
        credit,
        amount: value,
        reference,
        before: balance,
        after,
    })
}

/// `GET /console/accounts/confirm`: what a credit or debit will do, and the button that does
/// it.
pub(super) async fn confirm(
    session: PageSession,
    State(s): State<AppState>,
    Query(q): Query<ConfirmQuery>,
) -> Response {
    let back = format!(
        "/console/accounts?device={}",
        query_value(q.device.as_deref().unwrap_or("").trim())
    );
    let main = match plan(&s, &q).await {
        Err(why) => format!(
            "<p class=\"error\" role=\"alert\" id=\"plan-error\">This cannot be done: {}.</p><p><a id=\"cancel\" href=\"{}\">Back to the account</a></p>",
            esc(&why),
            esc(&back)
        ),
        Ok(p) => {
            let (verb, noun) = if p.credit {
                ("Credit", "credit")
            } else {
                ("Debit", "debit")
            };
            let dev = query_value(&p.device);
            let path = format!("/console/api/accounts/{dev}/{noun}");
            let then = format!("/console/accounts?device={dev}&done={noun}");
            let value = amount(i128::from(p.amount));
            format!(
                "<p id=\"plan\">{verb} <strong>{value}</strong> {} account <code>{}</code>.</p><dl class=\"figures\"><div><dt>Balance now</dt><dd id=\"before\">{}</dd></div><div><dt>{verb}</dt><dd>{value}</dd></div><div><dt>Balance after</dt><dd id=\"after\">{}</dd></div><div><dt>Reference</dt><dd>{}</dd></div></dl><form method=\"post\" action=\"{path}\" data-post=\"{path}\" data-then=\"{}\"><input type=\"hidden\" name=\"amount\" value=\"{}\" data-number><input type=\"hidden\" name=\"reference\" value=\"{}\"><button type=\"submit\" id=\"confirm\">{verb} {value} now</button> <a id=\"cancel\" href=\"{}\">Cancel</a><p class=\"status\" role=\"status\"></p></form>",
                if p.credit { "to" } else { "from" },
                esc(&p.device),
                amount(i128::from(p.before)),
                amount(i128::from(p.after)),
                if p.reference.is_empty() {
                    "(none)".to_owned()
                } else {
                    esc(&p.reference)
                },
                esc(&then),
                p.amount,
                esc(&p.reference),
                esc(&back),
            )
        }
    };
    ok_page("Confirm", Nav::Accounts, &session, &main)
}
