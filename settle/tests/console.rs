//! The issuer console over real HTTP: the router served on a loopback listener the way
//! `meshpay settle serve` serves it, spoken to with plain HTTP/1.1 over a TCP stream.
//!
//! Checks the sign-in (redirects without a session, a wrong token refused, the cookie's
//! attributes, throttling), CSRF and origin checks on changes, the security headers, the
//! admin routes of risk and exposure behind the bearer token, the risk gauges on `/metrics`,
//! and that a double spend settled through `/v1/settle` reaches the live event stream, the
//! risk JSON and the pages as a `fraud` alert naming the allowance and its holder.

use meshpay_protocol::testkit::{DAY, T0, descriptor, issuer, sealed};
use meshpay_protocol::{
    AllowanceCert, DeviceSecret, Nonce, PaymentRequest, PrintableKey as _, WalletAction,
    WalletRequest, encode,
};
use meshpay_settle::db::Db;
use meshpay_settle::http::{AppState, UploadLimits, router};
use meshpay_settle::httpd::{self, ServeLimits};
use meshpay_settle::{Clock, Policy, Server};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "console-test-admin-token-0123";
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'";
/// Longest wait for anything in these tests.
const WAIT: Duration = Duration::from_secs(20);

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Splits a raw answer into status, headers and (de-chunked) body.
fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn head(method: &str, path: &str, headers: &[(&str, &str)], body_len: usize) -> String {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: console.test\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    if method == "POST" || body_len > 0 {
        let _ = write!(req, "Content-Length: {body_len}\r\n");
    }
    req.push_str("\r\n");
    req
}

/// One request on a fresh connection.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("connects");
        s.write_all(head(method, path, headers, body.len()).as_bytes())
            .await
            .expect("sent");
        s.write_all(body).await.expect("sent");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer"));
    parse(&raw)
}

struct Console {
    addr: SocketAddr,
    server: Arc<Server>,
    holder: DeviceSecret,
    _dir: tempfile::TempDir,
}

impl Console {
    /// Two payees with accounts, for a double spend between them.
    async fn payees(&self) -> [DeviceSecret; 2] {
        let payees = [
            DeviceSecret::from_seed(&[10; 32]),
            DeviceSecret::from_seed(&[11; 32]),
        ];
        for p in &payees {
            self.server.open_account(&p.public()).await.expect("opened");
        }
        payees
    }

    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("settlement.db").display());
        let db = Db::open(&url).await.expect("the database opens");
        let iss = issuer();
        let server = Server::new(
            db,
            issuer(),
            descriptor(&iss),
            Clock::new(true),
            Policy::default(),
        );
        server.clock.set(T0);
        let server = Arc::new(server);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("an address");
        let app = router(AppState::new(
            Arc::clone(&server),
            TOKEN.to_owned(),
            &UploadLimits::default(),
        ));
        tokio::spawn(httpd::serve(
            listener,
            app,
            ServeLimits::default(),
            None,
            std::future::pending(),
        ));
        Self {
            addr,
            server,
            holder: DeviceSecret::from_seed(&[1; 32]),
            _dir: dir,
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        call(self.addr, "GET", path, headers, b"").await
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        call(self.addr, "POST", path, headers, body).await
    }

    async fn login(&self, token: &str) -> Reply {
        let body = format!("token={token}");
        self.post(
            "/console/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
        .await
    }

    /// A session: its cookie header value and its CSRF token.
    async fn session(&self) -> (String, String) {
        let r = self.login(TOKEN).await;
        assert_eq!(r.status, 303, "{}", r.body);
        let set = r.header("set-cookie").expect("a cookie");
        let cookie = set.split(';').next().expect("name=value").to_owned();
        let page = self.get("/console", &[("Cookie", &cookie)]).await;
        assert_eq!(page.status, 200);
        let csrf = page
            .body
            .split("<meta name=\"csrf-token\" content=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a csrf-token meta tag")
            .to_owned();
        (cookie, csrf)
    }

    /// An allowance of `limit` for the holder, from a funded account.
    async fn allowance(&self, limit: u64) -> AllowanceCert {
        let key = self.holder.public();
        self.server.open_account(&key).await.expect("opened");
        self.server
            .adjust(&key, 5_000, true, "start")
            .await
            .expect("credited");
        let req = WalletRequest::sign(
            &self.holder,
            issuer().id(),
            WalletAction::Allowance {
                amount: limit,
                valid_secs: 7 * DAY,
            },
            "KES",
            T0,
            Nonce([7; 16]),
        );
        self.server.issue_allowance(&req).await.expect("issued")
    }
}

fn secured(r: &Reply) {
    assert_eq!(r.header("content-security-policy"), Some(CSP));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_pages_redirect_and_json_is_refused() {
    let c = Console::start().await;
    for page in [
        "/console",
        "/console/accounts",
        "/console/settlement",
        "/console/risk",
        "/console/exposure",
    ] {
        let r = c.get(page, &[]).await;
        assert_eq!(r.status, 303, "{page}");
        assert_eq!(r.header("location"), Some("/console/login"), "{page}");
        secured(&r);
    }
    for path in [
        "/console/api/risk",
        "/console/api/exposure",
        "/console/events",
    ] {
        let r = c.get(path, &[]).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["code"], "unauthorized", "{path}");
    }
    let json = ("Content-Type", "application/json");
    for path in ["/console/api/accounts", "/console/logout"] {
        let r = c.post(path, &[json], b"{}").await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["code"], "unauthorized", "{path}");
    }
    // A cookie that is no session is no better.
    let forged = format!("mp_console={}", "ab".repeat(32));
    let r = c.get("/console", &[("Cookie", &forged)]).await;
    assert_eq!(r.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_form_and_its_assets() {
    let c = Console::start().await;
    let r = c.get("/console/login", &[]).await;
    assert_eq!(r.status, 200);
    secured(&r);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    for needle in [
        "<label for=\"token\">Admin token</label>",
        "<input id=\"token\" name=\"token\" type=\"password\"",
        "id=\"login\"",
    ] {
        assert!(r.body.contains(needle), "{needle} in {}", r.body);
    }
    for (asset, kind) in [
        ("/console/assets/console.js", "text/javascript"),
        ("/console/assets/console.css", "text/css"),
    ] {
        let r = c.get(asset, &[]).await;
        assert_eq!(r.status, 200, "{asset}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with(kind))
        );
        let tag = r.header("etag").expect("an ETag").to_owned();
        let again = c.get(asset, &[("If-None-Match", &tag)]).await;
        assert_eq!(again.status, 304, "{asset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_sets_a_strict_cookie_and_wrong_tokens_are_limited() {
    let c = Console::start().await;
    // A wrong token: 401 with a clear message, no cookie.
    let r = c.login("not-the-token").await;
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    assert!(r.body.contains("That is not the admin token"), "{}", r.body);
    // From another site: refused.
    let r = c
        .post(
            "/console/login",
            &[("Origin", "https://elsewhere.example")],
            format!("token={TOKEN}").as_bytes(),
        )
        .await;
    assert_eq!(r.status, 403);
    // A browser's form post under `Referrer-Policy: no-referrer` says `Origin: null`: fine.
    let r = c
        .post(
            "/console/login",
            &[("Origin", "null")],
            format!("token={TOKEN}").as_bytes(),
        )
        .await;
    assert_eq!(r.status, 303);

    // The right one: a cookie of 32 random bytes, HttpOnly, SameSite=Strict, Path=/console.
    let r = c.login(TOKEN).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/console"));
    let set = r.header("set-cookie").expect("a session cookie");
    let value = set
        .strip_prefix("mp_console=")
        .and_then(|v| v.split(';').next())
        .expect("mp_console=…");
    assert_eq!(value.len(), 64);
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()));
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(
            set.split("; ").any(|a| a == attribute),
            "{attribute} in {set}"
        );
    }

    // Signed in: the overview, with the books' check and a CSRF token.
    let (cookie, _) = c.session().await;
    let r = c.get("/console", &[("Cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    secured(&r);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(
        r.body
            .contains("id=\"conserved\" class=\"ok\">conserved: true<")
    );
    for id in ["id=\"alerts\"", "id=\"feed\"", "<nav"] {
        assert!(r.body.contains(id), "{id}");
    }
    assert!(!r.body.contains("style=") && !r.body.contains("<script>"));

    // Failed logins are limited per source (signing in clears them): five, then 429 even for
    // the right token.
    for _ in 0..5 {
        assert_eq!(c.login("wrong").await.status, 401);
    }
    let r = c.login(TOKEN).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_need_the_csrf_token_and_the_same_origin() {
    let c = Console::start().await;
    let (cookie, csrf) = c.session().await;
    let device = DeviceSecret::from_seed(&[9; 32]).public().to_text();
    let open = format!("{{\"device\":\"{device}\"}}");
    let json = ("Content-Type", "application/json");
    let with_cookie = ("Cookie", cookie.as_str());
    let with_csrf = ("X-CSRF-Token", csrf.as_str());
    let r = c
        .post(
            "/console/api/accounts",
            &[json, with_cookie],
            open.as_bytes(),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("forbidden"))
    );
    let r = c
        .post(
            "/console/api/accounts",
            &[json, with_cookie, ("X-CSRF-Token", "0000")],
            open.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .post(
            "/console/api/accounts",
            &[
                json,
                with_cookie,
                with_csrf,
                ("Origin", "https://elsewhere.example"),
            ],
            open.as_bytes(),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("forbidden"))
    );
    let statement = c
        .get(&format!("/console/api/accounts/{device}"), &[with_cookie])
        .await;
    assert_eq!(statement.status, 404, "nothing was opened");
    // With it (and the page's own origin): done.
    let r = c
        .post(
            "/console/api/accounts",
            &[
                json,
                with_cookie,
                with_csrf,
                ("Origin", "http://console.test"),
            ],
            open.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["new"], true);

    // Signing out ends the session.
    let r = c
        .post("/console/logout", &[with_cookie, with_csrf], b"")
        .await;
    assert_eq!(r.status, 204);
    assert!(
        r.header("set-cookie")
            .is_some_and(|v| v.contains("Max-Age=0"))
    );
    let r = c.get("/console", &[with_cookie]).await;
    assert_eq!(r.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_is_shown_before_it_is_done() {
    let c = Console::start().await;
    let (cookie, csrf) = c.session().await;
    let device = DeviceSecret::from_seed(&[9; 32]).public().to_text();
    c.server
        .open_account(&DeviceSecret::from_seed(&[9; 32]).public())
        .await
        .expect("opened");
    let json = ("Content-Type", "application/json");
    let with_cookie = ("Cookie", cookie.as_str());
    let with_csrf = ("X-CSRF-Token", csrf.as_str());
    let confirm = c
        .get(
            &format!(
                "/console/accounts/confirm?device={device}&action=credit&amount=1500&reference=top-up"
            ),
            &[with_cookie],
        )
        .await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("id=\"confirm\""), "{}", confirm.body);
    assert!(confirm.body.contains("<dd id=\"before\">0</dd>"));
    assert!(confirm.body.contains("<dd id=\"after\">1,500</dd>"));
    // Nothing changed yet.
    let statement = c
        .get(&format!("/console/api/accounts/{device}"), &[with_cookie])
        .await;
    assert_eq!(statement.json()["balance"], 0);
    let r = c
        .post(
            &format!("/console/api/accounts/{device}/credit"),
            &[json, with_cookie, with_csrf],
            b"{\"amount\":1500,\"reference\":\"top-up\"}",
        )
        .await;
    assert_eq!((r.status, r.json()["balance"].as_u64()), (200, Some(1_500)));
    // A debit past the balance cannot be confirmed.
    let too_much = c
        .get(
            &format!("/console/accounts/confirm?device={device}&action=debit&amount=2000"),
            &[with_cookie],
        )
        .await;
    assert!(too_much.body.contains("id=\"plan-error\""));
    assert!(!too_much.body.contains("id=\"confirm\""));
    let page = c
        .get(
            &format!("/console/accounts?device={device}"),
            &[with_cookie],
        )
        .await;
    assert!(page.body.contains("<strong id=\"balance\">1,500</strong>"));
    assert!(page.body.contains("top-up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_risk_exposure_and_metrics() {
    let c = Console::start().await;
    let cert = c.allowance(1_000).await;
    for path in ["/admin/risk", "/admin/exposure"] {
        let r = c.get(path, &[]).await;
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (401, Some("unauthorized"))
        );
        let r = c
            .get(path, &[("Authorization", "Bearer wrong-token-0123456789")])
            .await;
        assert_eq!(r.status, 401);
    }
    let bearer = format!("Bearer {TOKEN}");
    let risk = c.get("/admin/risk", &[("Authorization", &bearer)]).await;
    assert_eq!(risk.status, 200, "{}", risk.body);
    let risk = risk.json();
    assert_eq!(risk["alerts"], serde_json::json!([]));
    assert_eq!(risk["rules"]["velocity_payments"], 60);
    assert_eq!(risk["rules"]["near_limit_percent"], 90);
    assert_eq!(risk["counts"]["fraud"], 0);
    let exposure = c
        .get("/admin/exposure", &[("Authorization", &bearer)])
        .await;
    assert_eq!(exposure.status, 200);
    let exposure = exposure.json();
    assert_eq!(exposure["allowances"], 1);
    assert_eq!(exposure["by_currency"][0]["currency"], "KES");
    assert_eq!(exposure["by_currency"][0]["outstanding"], 1_000);
    assert_eq!(exposure["expiries"][0]["allowance"], cert.id().to_hex());
    // The console's JSON is the same answer.
    let (cookie, _) = c.session().await;
    let same = c.get("/console/api/exposure", &[("Cookie", &cookie)]).await;
    assert_eq!(same.json(), exposure);

    let metrics = c.get("/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("# TYPE meshpay_risk_alerts gauge"));
    for rule in [
        "fraud",
        "revoked",
        "velocity",
        "near_limit",
        "forked_payee",
        "junk_source",
    ] {
        let line = format!("meshpay_risk_alerts{{rule=\"{rule}\"}} 0\n");
        assert!(metrics.body.contains(&line), "{line} in {}", metrics.body);
    }
    let doc = c.get("/openapi.json", &[]).await.json();
    for path in ["/admin/risk", "/admin/exposure"] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} in the OpenAPI document"
        );
    }
    assert!(doc["paths"].get("/console").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_from_the_books_stand_while_the_allowance_is_open() {
    let c = Console::start().await;
    let cert = c.allowance(1_000).await;
    let bearer = format!("Bearer {TOKEN}");
    // Seen once, so the gauges are counted (and kept for 5 s) before the alerts are raised.
    assert!(
        c.get("/metrics", &[])
            .await
            .body
            .contains("meshpay_risk_alerts{rule=\"near_limit\"} 0\n")
    );
    // An allowance nearly spent, and a revoked one, stand as alerts from the books.
    let payee = DeviceSecret::from_seed(&[12; 32]);
    c.server
        .open_account(&payee.public())
        .await
        .expect("opened");
    let wallet = meshpay_protocol::testkit::wallet([cert.clone()]);
    let request = PaymentRequest::new(payee.public(), 950, "KES", Nonce([3; 16]), T0 + 3600);
    let spend = wallet
        .prepare(&c.holder, &request, T0)
        .expect("within the allowance");
    let answers = c
        .server
        .settle(vec![encode(&sealed(&issuer(), &spend.iou))], None)
        .await
        .expect("settled");
    assert_eq!(
        answers[0]
            .as_ref()
            .map(meshpay_protocol::SettlementReceipt::status),
        Some(meshpay_protocol::ReceiptStatus::Settled)
    );
    let revoke = format!("{{\"allowance\":\"{}\"}}", cert.id().to_hex());
    let r = c
        .post(
            "/admin/revocations",
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            revoke.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let risk = c
        .get("/admin/risk", &[("Authorization", &bearer)])
        .await
        .json();
    let rules: Vec<(&str, u64)> = risk["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap_or(""),
                a["value"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(rules.contains(&("near_limit", 95)), "{risk}");
    assert!(rules.contains(&("revoked", 1)), "{risk}");
    let holder = c.holder.public().to_text();
    assert!(
        risk["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .all(|a| a["subject"] == cert.id().to_hex().as_str()
                && a["detail"].as_str().is_some_and(|d| d.contains(&holder)))
    );
    let metrics = c.get("/metrics", &[]).await;
    assert!(
        metrics
            .body
            .contains("meshpay_risk_alerts{rule=\"near_limit\"} 1\n")
    );
    assert!(
        metrics
            .body
            .contains("meshpay_risk_alerts{rule=\"revoked\"} 1\n")
    );
    // Once the allowance's escrow is released, they no longer stand.
    c.server.clock.set(T0 + 30 * DAY);
    c.server.release_expired().await.expect("released");
    let risk = c
        .get("/admin/risk", &[("Authorization", &bearer)])
        .await
        .json();
    assert_eq!(risk["alerts"], serde_json::json!([]), "{risk}");
    let exposure = c
        .get("/admin/exposure", &[("Authorization", &bearer)])
        .await
        .json();
    assert_eq!(exposure["allowances"], 0);
}

/// Reads the event stream until `needle` arrives.
async fn wait_for(stream: &mut TcpStream, seen: &mut String, needle: &str) {
    let read = async {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = stream.read(&mut buf).await.expect("the stream reads");
            assert!(n > 0, "the event stream ended before {needle}: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("no {needle} on the event stream: {seen}"));
}

/// A wallet and its restored backup each pay counter 1 of `cert` to a different payee,
/// uploaded through `/v1/settle` with some junk that does not open.
async fn double_spend(c: &Console, cert: &AllowanceCert, payees: &[DeviceSecret; 2]) {
    let wallet = meshpay_protocol::testkit::wallet([cert.clone()]);
    let mut clone = wallet.clone();
    let mut wallet = wallet;
    let mut records = Vec::new();
    for (k, (w, payee)) in [(&mut wallet, &payees[0]), (&mut clone, &payees[1])]
        .into_iter()
        .enumerate()
    {
        let nonce = Nonce([u8::try_from(k).expect("small") + 1; 16]);
        let request = PaymentRequest::new(payee.public(), 100, "KES", nonce, T0 + 3600);
        let spend = w
            .prepare(&c.holder, &request, T0)
            .expect("within the allowance");
        w.commit(&spend);
        records.push(hex::encode(encode(&sealed(&issuer(), &spend.iou))));
    }
    // And some junk that does not open.
    records.push("00".repeat(40));
    let upload = serde_json::json!({ "records": records }).to_string();
    let r = c
        .post(
            "/v1/settle",
            &[("Content-Type", "application/json")],
            upload.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let statuses: Vec<serde_json::Value> = r.json()["receipts"]
        .as_array()
        .expect("receipts")
        .iter()
        .map(|x| x["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![
            serde_json::json!("settled"),
            serde_json::json!("counter_conflict"),
            serde_json::Value::Null
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_spend_reaches_the_feed_the_alerts_and_the_gauges() {
    let c = Console::start().await;
    let cert = c.allowance(1_000).await;
    let payees = c.payees().await;
    let (cookie, _) = c.session().await;

    // Listen to the live feed first.
    let mut events = TcpStream::connect(c.addr).await.expect("connects");
    events
        .write_all(head("GET", "/console/events", &[("Cookie", &cookie)], 0).as_bytes())
        .await
        .expect("sent");
    let mut seen = String::new();
    wait_for(&mut events, &mut seen, "text/event-stream").await;

    double_spend(&c, &cert, &payees).await;

    // The live feed: both receipts, the fraud, the upload's summary.
    let allowance = cert.id().to_hex();
    let holder = c.holder.public().to_text();
    wait_for(&mut events, &mut seen, "\"kind\":\"upload\"").await;
    for needle in [
        "\"status\":\"settled\"".to_owned(),
        "\"status\":\"rejected: counter_conflict\"".to_owned(),
        format!("\"kind\":\"fraud\",\"allowance\":\"{allowance}\",\"holder\":\"{holder}\""),
        "\"records\":3,\"settled\":1,\"rejected\":1,\"unopened\":1".to_owned(),
        "\"rule\":\"forked_payee\"".to_owned(),
    ] {
        assert!(seen.contains(&needle), "{needle} in {seen}");
    }

    // The risk JSON: the fraud, its payees; the pages show the same.
    let risk = c
        .get("/console/api/risk", &[("Cookie", &cookie)])
        .await
        .json();
    let alerts = risk["alerts"].as_array().expect("alerts");
    let fraud = alerts
        .iter()
        .find(|a| a["rule"] == "fraud")
        .unwrap_or_else(|| panic!("a fraud alert in {risk}"));
    assert_eq!(fraud["subject"], allowance.as_str());
    assert!(
        fraud["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&holder))
    );
    let flagged: Vec<&str> = alerts
        .iter()
        .filter(|a| a["rule"] == "forked_payee")
        .filter_map(|a| a["subject"].as_str())
        .collect();
    for p in &payees {
        assert!(
            flagged.contains(&p.public().to_text().as_str()),
            "{flagged:?}"
        );
    }
    assert_eq!(risk["counts"]["fraud"], 1);
    assert_eq!(risk["counts"]["forked_payee"], 2);

    let page = c.get("/console", &[("Cookie", &cookie)]).await;
    let item = page
        .body
        .split("<li data-rule=\"fraud\">")
        .nth(1)
        .and_then(|rest| rest.split("</li>").next())
        .unwrap_or_else(|| panic!("a fraud alert on the overview: {}", page.body));
    assert!(
        item.contains(&allowance) && item.contains(&holder),
        "{item}"
    );
    assert!(page.body.contains("conserved: true"));
    let risk_page = c.get("/console/risk", &[("Cookie", &cookie)]).await;
    assert!(risk_page.body.contains("<li data-rule=\"fraud\">"));
    assert!(risk_page.body.contains("<code>near_limit</code>"));
    let settlement = c.get("/console/settlement", &[("Cookie", &cookie)]).await;
    assert!(settlement.body.contains("counter_conflict"));

    let metrics = c.get("/metrics", &[]).await;
    assert!(
        metrics
            .body
            .contains("meshpay_risk_alerts{rule=\"fraud\"} 1\n"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("meshpay_risk_alerts{rule=\"forked_payee\"} 2\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_sums_the_exposure_in_the_database() {
    let c = Console::start().await;
    let cert = c.allowance(1_000).await;
    let payees = c.payees().await;
    let empty = c.server.exposure_totals().await.expect("the totals");
    assert_eq!(empty.allowances, 1);
    double_spend(&c, &cert, &payees).await;
    // The overview's exposure, summed by the database, is the full report's.
    let full = c.server.exposure().await.expect("the exposure");
    let totals = c.server.exposure_totals().await.expect("the totals");
    assert_eq!(
        (totals.allowances, totals.holders, &totals.by_currency),
        (full.allowances, full.holders, &full.by_currency)
    );
    assert_eq!(totals.by_currency[0].settled, 100);
    assert_eq!(totals.by_currency[0].outstanding, 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_the_event_stream_at_once() {
    let c = Console::start().await;
    let (cookie, _) = c.session().await;
    let mut events = TcpStream::connect(c.addr).await.expect("connects");
    events
        .write_all(head("GET", "/console/events", &[("Cookie", &cookie)], 0).as_bytes())
        .await
        .expect("sent");
    let mut seen = String::new();
    wait_for(&mut events, &mut seen, "text/event-stream").await;
    // Signing out ends the session's event stream at once.
    let (other, csrf) = c.session().await;
    let mut theirs = TcpStream::connect(c.addr).await.expect("connects");
    theirs
        .write_all(head("GET", "/console/events", &[("Cookie", &other)], 0).as_bytes())
        .await
        .expect("sent");
    let mut their_seen = String::new();
    wait_for(&mut theirs, &mut their_seen, "text/event-stream").await;
    let r = c
        .post(
            "/console/logout",
            &[("Cookie", &other), ("X-CSRF-Token", &csrf)],
            b"",
        )
        .await;
    assert_eq!(r.status, 204);
    let ended = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = theirs.read(&mut buf).await.expect("the stream reads");
            if n == 0 {
                break;
            }
            their_seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            // Chunked encoding: the last chunk ends the answer.
            if their_seen.ends_with("0\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, ended)
        .await
        .unwrap_or_else(|_| panic!("the stream outlived its session: {their_seen}"));
    // The other session's stream goes on.
    c.server
        .settle(
            vec![vec![0u8; 40]],
            Some(std::net::IpAddr::from([10, 9, 9, 9])),
        )
        .await
        .expect("settled");
    wait_for(&mut events, &mut seen, "10.9.9.9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_tokens_are_limited_but_the_right_one_always_passes() {
    let c = Console::start().await;
    let wrong = ("Authorization", "Bearer wrong-token-0123456789");
    for k in 0..5 {
        assert_eq!(c.get("/admin/risk", &[wrong]).await.status, 401, "try {k}");
    }
    let r = c.get("/admin/risk", &[wrong]).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert!(r.header("retry-after").is_some());
    assert_eq!(c.get("/admin/risk", &[]).await.status, 429);
    // The right token is never locked out, and clears nothing.
    let bearer = format!("Bearer {TOKEN}");
    let right = c.get("/admin/risk", &[("Authorization", &bearer)]).await;
    assert_eq!(right.status, 200, "{}", right.body);
    assert_eq!(c.get("/admin/risk", &[wrong]).await.status, 429);
    // Guesses through the API count against the console's sign-in too.
    assert_eq!(c.login("still-wrong").await.status, 429);
    // Other routes are not affected.
    assert_eq!(c.get("/healthz", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_sent_at_once_cannot_pass_the_limit() {
    let c = Arc::new(Console::start().await);
    let tries: Vec<_> = (0..20)
        .map(|_| {
            let c = Arc::clone(&c);
            tokio::spawn(async move { c.login("wrong").await.status })
        })
        .collect();
    let mut compared = 0;
    for t in tries {
        match t.await.expect("the try ran") {
            401 => compared += 1,
            429 => {}
            other => panic!("status {other}"),
        }
    }
    assert!(compared <= 5, "{compared} wrong tokens compared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_stay_small() {
    let c = Console::start().await;
    c.allowance(1_000).await;
    // Full lists: a long statement with long references, and more sources of junk (each an
    // alert and two events) than any page lists.
    let key = c.holder.public();
    for _ in 0..150 {
        c.server
            .adjust(&key, 1, true, &"&<".repeat(100))
            .await
            .expect("credited");
    }
    for n in 0..150u32 {
        let source = std::net::IpAddr::from((0x0a00_0000 + n).to_be_bytes());
        c.server
            .settle(vec![vec![0u8; 40]; 10], Some(source))
            .await
            .expect("settled");
    }
    let (cookie, _) = c.session().await;
    let js = c.get("/console/assets/console.js", &[]).await.body.len();
    let css = c.get("/console/assets/console.css", &[]).await.body.len();
    let device = c.holder.public().to_text();
    for page in [
        "/console/login".to_owned(),
        "/console".to_owned(),
        format!("/console/accounts?device={device}"),
        "/console/settlement".to_owned(),
        "/console/risk".to_owned(),
        "/console/exposure".to_owned(),
    ] {
        // Signed in, the login page sends to the overview: read it signed out.
        let headers: &[(&str, &str)] = if page == "/console/login" {
            &[]
        } else {
            &[("Cookie", &cookie)]
        };
        let r = c.get(&page, headers).await;
        assert_eq!(r.status, 200, "{page}");
        let total = r.body.len() + js + css;
        println!(
            "{page}: HTML {} + JS {js} + CSS {css} = {total} bytes",
            r.body.len()
        );
        assert!(total < 150_000, "{page} weighs {total} bytes");
        if page.starts_with("/console/accounts") {
            // Only the newest lines are read, and the page says how many there are.
            assert!(
                r.body.contains("The newest 100 of 152 transfers"),
                "{}",
                r.body
            );
        }
    }
}
