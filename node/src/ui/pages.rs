//! The web app's pages: one HTML shell per screen, the script and the style sheet, all
//! embedded. The shells hold the screen's structure and labels; the script fills them from
//! the control API's answers and keeps them current from the event stream.

use std::fmt::Write as _;

/// The script of every page.
pub(super) const SCRIPT: &str = include_str!("assets/app.js");
/// The style sheet of every page.
pub(super) const STYLE: &str = include_str!("assets/app.css");

/// A screen of the web app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Screen {
    /// Take a payment: amount pad, QR code, paid.
    Pos,
    /// Today's payments, totals, CSV.
    Today,
    /// Fraud proofs, revocations, restores, dropped peers.
    Alerts,
    /// Allowances, pay, top up, history.
    Wallet,
    /// Peers, carried bundles, the gateway.
    Mesh,
}

impl Screen {
    fn id(self) -> &'static str {
        match self {
            Screen::Pos => "pos",
            Screen::Today => "today",
            Screen::Alerts => "alerts",
            Screen::Wallet => "wallet",
            Screen::Mesh => "mesh",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Screen::Pos => "Take a payment",
            Screen::Today => "Today",
            Screen::Alerts => "Alerts",
            Screen::Wallet => "Wallet",
            Screen::Mesh => "Mesh",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Screen::Pos => "/",
            Screen::Today => "/today",
            Screen::Alerts => "/alerts",
            Screen::Wallet => "/wallet",
            Screen::Mesh => "/mesh",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Screen::Pos => POS,
            Screen::Today => TODAY,
            Screen::Alerts => ALERTS,
            Screen::Wallet => WALLET,
            Screen::Mesh => MESH,
        }
    }
}

const SCREENS: [Screen; 5] = [
    Screen::Pos,
    Screen::Today,
    Screen::Alerts,
    Screen::Wallet,
    Screen::Mesh,
];

/// What a page shows besides its screen.
pub(super) struct Context<'a> {
    /// The session's CSRF token.
    pub(super) csrf: &'a str,
    /// The default currency.
    pub(super) currency: &'a str,
    /// Wallet payments above this ask for the PIN.
    pub(super) confirm_above: u64,
    /// This device, text form.
    pub(super) device: &'a str,
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn head(title: &str, extra: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{extra}<title>{} · meshpay</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/assets/app.css\"></head>",
        esc(title)
    )
}

/// The page of `screen`.
pub(super) fn render(screen: Screen, cx: &Context<'_>) -> String {
    let mut nav = String::new();
    for s in SCREENS {
        let current = if s == screen {
            " aria-current=\"page\""
        } else {
            ""
        };
        let badge = if s == Screen::Alerts {
            "<span id=\"alert-count\" class=\"badge\" hidden></span>"
        } else {
            ""
        };
        let _ = write!(
            nav,
            "<a href=\"{}\"{current}>{}{badge}</a>",
            s.path(),
            s.title()
        );
    }
    format!(
        "{}<body data-page=\"{}\" data-currency=\"{}\" data-confirm-above=\"{}\"><header><nav aria-label=\"Screens\">{nav}</nav><p id=\"device\" class=\"device\" title=\"{}\">{}</p></header><p id=\"status\" class=\"status\" role=\"status\" aria-live=\"polite\"></p><main id=\"main\">{}</main><script src=\"/assets/app.js\"></script></body></html>",
        head(
            screen.title(),
            &format!("<meta name=\"csrf-token\" content=\"{}\">", esc(cx.csrf))
        ),
        screen.id(),
        esc(cx.currency),
        cx.confirm_above,
        esc(cx.device),
        esc(&short(cx.device)),
        screen.body()
    )
}

fn short(key: &str) -> String {
    if key.len() > 16 {
        format!("{}…{}", &key[..10], &key[key.len() - 4..])
    } else {
        key.to_owned()
    }
}

/// The page a browser that is not paired gets.
pub(super) fn unpaired() -> String {
    format!(
        "{}<body><main class=\"notice\"><h1>Pair this browser first</h1><p>This meshpay node serves its pages only to paired browsers. On the node, run <code>meshpay pair</code> and open the link it prints (or scan its QR code) in this browser. A link works once, within 10 minutes.</p></main></body></html>",
        head("Not paired", "")
    )
}

/// The page a pairing link opens: it goes on to the app by itself (a same-site navigation, so
/// the new session cookie goes along).
pub(super) fn paired() -> String {
    format!(
        "{}<body><main class=\"notice\"><h1>This browser is paired</h1><p><a href=\"/\">Open the app</a>.</p></main></body></html>",
        head(
            "Paired",
            "<meta http-equiv=\"refresh\" content=\"0; url=/\">"
        )
    )
}

/// The page a used or expired pairing link gets.
pub(super) fn pairing_refused() -> String {
    format!(
        "{}<body><main class=\"notice\"><h1>This pairing link does not work</h1><p>It was used already or has expired (links work once, within 10 minutes). Run <code>meshpay pair</code> on the node for a new one.</p></main></body></html>",
        head("Pairing refused", "")
    )
}

const POS: &str = r#"<section id="pad-view" aria-labelledby="pad-title">
<h1 id="pad-title">Take a payment</h1>
<form id="pad" autocomplete="off">
<label for="amount">Amount (<span class="cur"></span>)</label>
<input id="amount" name="amount" inputmode="numeric" pattern="[0-9]*" maxlength="12" required aria-describedby="amount-shown">
<output id="amount-shown" class="big" for="amount">0.00</output>
<div class="keys" role="group" aria-label="Amount keys">
<button type="button" data-key="1">1</button><button type="button" data-key="2">2</button><button type="button" data-key="3">3</button>
<button type="button" data-key="4">4</button><button type="button" data-key="5">5</button><button type="button" data-key="6">6</button>
<button type="button" data-key="7">7</button><button type="button" data-key="8">8</button><button type="button" data-key="9">9</button>
<button type="button" data-key="clear" aria-label="Clear">C</button><button type="button" data-key="0">0</button><button type="button" data-key="back" aria-label="Delete last digit">⌫</button>
</div>
<label for="memo">Memo (optional)</label>
<input id="memo" name="memo" maxlength="80">
<button id="ask" type="submit" class="primary">Show payment request</button>
</form>
</section>
<section id="request-view" hidden aria-labelledby="req-amount">
<h1 id="req-amount" class="big"></h1>
<p id="req-memo"></p>
<img id="qr" alt="QR code of the payment request" width="320" height="320">
<label for="request-text">Request text (for the payer to paste)</label>
<textarea id="request-text" readonly rows="3"></textarea>
<p id="waiting" class="waiting">Waiting for the payment…</p>
<p id="req-expires"></p>
<div class="row"><button id="copy" type="button">Copy text</button><button id="cancel" type="button">New amount</button></div>
</section>
<section id="paid-view" hidden aria-live="assertive" class="paid">
<p class="tick" aria-hidden="true">✓</p>
<h1 id="paid-title">Paid</h1>
<p id="paid-detail"></p>
<button id="next" type="button" class="primary">Next payment</button>
</section>"#;

const TODAY: &str = r#"<h1>Today</h1>
<section aria-labelledby="totals-title"><h2 id="totals-title">Totals</h2><table id="totals"><thead><tr><th scope="col">Currency</th><th scope="col">Received</th><th scope="col">Sent</th><th scope="col">Pending</th><th scope="col">Settled</th></tr></thead><tbody></tbody></table></section>
<p><a id="csv" href="/today.csv" download>Download today as CSV</a></p>
<section aria-labelledby="ref-title"><h2 id="ref-title">Refused</h2><table id="refused"><thead><tr><th scope="col">Time</th><th scope="col">From</th><th scope="col">Why</th></tr></thead><tbody></tbody></table><p id="refused-empty">No payment refused today.</p></section>
<section aria-labelledby="pay-title"><h2 id="pay-title">Payments</h2><table id="today"><thead><tr><th scope="col">Time</th><th scope="col">Direction</th><th scope="col">Amount</th><th scope="col">With</th><th scope="col">Status</th><th scope="col">Settlement</th></tr></thead><tbody></tbody></table><p id="today-empty" hidden>No payments today yet.</p></section>"#;

const ALERTS: &str = r#"<h1>Alerts</h1>
<p>Fraud proofs (an allowance spent twice: its payments are refused from then on), revocations, a restore found at start, peers dropped for breaking the rules.</p>
<ul id="alerts" class="alerts"></ul>
<p id="alerts-empty" hidden>No alerts.</p>"#;

const WALLET: &str = r#"<h1>Wallet</h1>
<section aria-labelledby="bal-title"><h2 id="bal-title">Balance</h2><table id="balance"><thead><tr><th scope="col">Currency</th><th scope="col">Spendable</th><th scope="col">Sent</th><th scope="col">Pending</th><th scope="col">Received</th></tr></thead><tbody></tbody></table></section>
<section aria-labelledby="payform-title"><h2 id="payform-title">Pay</h2>
<form id="pay-form" autocomplete="off">
<label for="pay-request">Payment request (paste the text, or scan)</label>
<textarea id="pay-request" name="request" rows="3" required></textarea>
<div class="row"><button id="scan" type="button" hidden>Scan QR code</button></div>
<video id="camera" hidden muted playsinline></video>
<button id="pay" type="submit" class="primary">Check the request</button>
</form>
<div id="pay-confirm" hidden role="group" aria-labelledby="confirm-title">
<h3 id="confirm-title">Pay <span id="confirm-amount"></span>?</h3>
<dl class="facts"><dt>To</dt><dd id="confirm-payee"></dd><dt>For</dt><dd id="confirm-memo"></dd><dt>Open until</dt><dd id="confirm-expires"></dd></dl>
<div id="secret-row" hidden><label for="secret">PIN (or passphrase)</label><input id="secret" name="secret" type="password" inputmode="numeric" autocomplete="off"></div>
<div class="row"><button id="confirm-pay" type="button" class="primary">Pay now</button><button id="cancel-pay" type="button">Cancel</button></div>
</div>
<p id="pay-result" role="status" aria-live="polite"></p>
</section>
<section aria-labelledby="al-title"><h2 id="al-title">Allowances</h2><table id="allowances"><thead><tr><th scope="col">Allowance</th><th scope="col">Spendable</th><th scope="col">Limit</th><th scope="col">Counter</th><th scope="col">Valid until</th><th scope="col">State</th></tr></thead><tbody></tbody></table></section>
<section aria-labelledby="top-title"><h2 id="top-title">Top up (needs the issuer online)</h2>
<form id="topup-form" autocomplete="off">
<label for="topup-url">Settlement server</label><input id="topup-url" name="url" type="url" placeholder="https://settle.example.org" required>
<label for="topup-amount">Amount (minor units)</label><input id="topup-amount" name="amount" inputmode="numeric" pattern="[0-9]+" required>
<label for="topup-days">Days valid</label><input id="topup-days" name="days" inputmode="numeric" pattern="[0-9]+" value="30" required>
<button id="topup" type="submit">Top up</button>
</form>
<p id="topup-result" role="status" aria-live="polite"></p>
</section>
<section aria-labelledby="hist-title"><h2 id="hist-title">History</h2><table id="history"><thead><tr><th scope="col">Time</th><th scope="col">Direction</th><th scope="col">Amount</th><th scope="col">With</th><th scope="col">Status</th><th scope="col">Settlement</th></tr></thead><tbody></tbody></table></section>"#;

const MESH: &str = r#"<h1>Mesh</h1>
<section aria-labelledby="peers-title"><h2 id="peers-title">Peers nearby</h2><ul id="peers"></ul><p id="peers-empty" hidden>No peers connected.</p></section>
<section aria-labelledby="store-title"><h2 id="store-title">Carried bundles</h2><dl id="store" class="facts"></dl></section>
<section aria-labelledby="gw-title"><h2 id="gw-title">Gateway</h2><p id="gateway">No gateway round yet.</p><button id="sync" type="button">Sync with peers now</button></section>
<section aria-labelledby="carried-title"><h2 id="carried-title">Proof of carriage</h2><table id="carried"><thead><tr><th scope="col">Taken by</th><th scope="col">Bundles</th><th scope="col">Size</th><th scope="col">When</th></tr></thead><tbody></tbody></table></section>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_and_stay_small() {
        let cx = Context {
            csrf: "\"><script>",
            currency: "KES",
            confirm_above: 0,
            device: "mpdev1abcdefghijklmnop",
        };
        for s in SCREENS {
            let html = render(s, &cx);
            assert!(!html.contains("\"><script>"), "escaped");
            assert!(html.contains("&quot;&gt;&lt;script&gt;"));
            // Each page with its script and style sheet.
            let weight = html.len() + SCRIPT.len() + STYLE.len();
            assert!(weight < 150 * 1024, "{s:?} weighs {weight} bytes");
            assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
        }
    }
}
