//! The web faces in a real browser (headless Chromium over the DevTools protocol): a vendor
//! takes a payment on the node's web app, a shopper pays it from the wallet screen, the
//! vendor's screen turns to paid without a reload; a gateway upload shows on the issuer's
//! console, and a cloned wallet's double spend raises the alert on the vendor's screen and on
//! the console. No page may log a console error or reach past loopback; the pairing, session
//! and CSRF rules are checked from outside the browser too.
//!
//! SKIPPED (with the reason) where Chromium cannot be installed.

// A walk through one scenario reads best as one function.
#![allow(clippy::too_many_lines)]

use meshpay_tests::browser::{Browser, Page, ensure_chromium, target_dir};
use meshpay_tests::issuer_api::Admin;
use meshpay_tests::{SettleServer, TestNode, meshpay_bin};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PIN: &str = "2468";
const WAIT: Duration = Duration::from_secs(15);

/// A wallet made with `init --pin`.
fn node_with_pin(root: &Path, name: &str) -> TestNode {
    let home = root.join(name);
    let state = root.join(format!("{name}-state"));
    let out = std::process::Command::new(meshpay_bin())
        .arg("--home")
        .arg(&home)
        .args(["init", "--pin", "--json"])
        .env("MESHPAY_PASSPHRASE", "test passphrase")
        .env("MESHPAY_PIN", PIN)
        .env("MESHPAY_STATE_DIR", &state)
        .output()
        .expect("run meshpay init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("init --json");
    TestNode::existing(home, state, name, v["device_key"].as_str().unwrap())
}

/// A screenshot of `page` at `size`, from the top of the page (the page brought to the front
/// first: a background tab may not paint).
fn shot(page: &Page, dir: &Path, name: &str, size: (u32, u32)) -> PathBuf {
    shot_of(page, dir, name, size, None)
}

/// [`shot`], with the element `css` in the middle of the screen instead.
fn shot_of(page: &Page, dir: &Path, name: &str, size: (u32, u32), css: Option<&str>) -> PathBuf {
    page.call("Page.bringToFront", json!({})).expect("front");
    page.set_viewport(size.0, size.1, false).expect("viewport");
    let scroll = css.map_or_else(
        || "window.scrollTo(0, 0); true".to_owned(),
        |c| format!("document.querySelector('{c}').scrollIntoView({{block: 'center'}}); true"),
    );
    page.eval(&scroll).expect("scroll");
    let path = dir.join(format!("{name}-{}x{}.png", size.0, size.1));
    page.screenshot(&path).expect("screenshot");
    path
}

fn ui_urls(node: &TestNode) -> (String, String) {
    (
        node.ready["ui"]
            .as_str()
            .expect("ui in the ready line")
            .to_owned(),
        node.ready["ui_pair"]
            .as_str()
            .expect("ui_pair in the ready line")
            .to_owned(),
    )
}

/// Opens a new page paired with `node`'s web app on `path`: the first page of a node pairs with
/// the link of its ready line, the others with a fresh one (`meshpay pair`); each works once.
fn paired_page(browser: &Browser, node: &TestNode, path: &str, first: bool) -> Page {
    let (base, ready_link) = ui_urls(node);
    let pair = if first {
        ready_link
    } else {
        node.json(&["pair", "--json"])["url"]
            .as_str()
            .expect("a pairing link")
            .to_owned()
    };
    let page = browser.new_page().expect("page");
    page.set_viewport(360, 640, false).expect("viewport");
    // Ready (the controls answer) and loaded (the screen's data is in, so its layout no
    // longer moves under a click made by coordinates).
    let ready = "location.pathname === '{path}' && document.body && document.body.dataset.ready === 'yes' && document.body.dataset.loaded === 'yes'";
    // The pairing page goes on to the app by itself.
    page.goto(&pair).expect("pair");
    page.wait_for(&ready.replace("{path}", "/"), WAIT)
        .unwrap_or_else(|e| panic!("{}: pairing did not open the app: {e}", node.name));
    if path != "/" {
        page.goto(&format!("{}{}", base.trim_end_matches('/'), path))
            .expect("open");
        page.wait_for(&ready.replace("{path}", path), WAIT)
            .unwrap_or_else(|e| panic!("{}: not a paired page: {e}", node.name));
    }
    page
}

/// The session a pairing's `Set-Cookie` opened, and the CSRF token of its pages.
async fn session_of(http: &reqwest::Client, base: &str, set_cookie: &str) -> (String, String) {
    let session = set_cookie.split(';').next().unwrap().to_owned();
    let page = http
        .get(base)
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf token in the page")
        .to_owned();
    (session, csrf)
}

/// Checks the pairing, session and CSRF rules from outside the browser.
fn check_access_rules(rt: &tokio::runtime::Runtime, node: &TestNode) {
    let (base, pair) = ui_urls(node);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    rt.block_on(async {
        // No session: pages and queries refused.
        let r = http.get(&base).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = http.get(format!("{base}api/balance")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        // The pairing link was used by the browser already: it opens nothing again.
        let r = http.get(&pair).send().await.unwrap();
        assert_eq!(r.status(), 403, "a pairing link works once");
        // A fresh link (`meshpay pair`) opens a session with the right cookie flags.
        let link = node.json(&["pair", "--json"]);
        let r = http
            .get(link["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cookie = r
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let (session, csrf) = session_of(&http, &base, &cookie).await;
        let change = json!({"call": {"cmd": "request", "amount": 5}});
        // A change without the session: refused.
        let r = http
            .post(format!("{base}api/call"))
            .header("x-csrf-token", &csrf)
            .header("content-type", "application/json")
            .body(change.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // Without the token, or with a wrong one, or from another origin: refused.
        for (token, origin) in [
            (None, None),
            (Some("0".repeat(64)), None),
            (Some(csrf.clone()), Some("http://evil.example")),
        ] {
            let mut req = http
                .post(format!("{base}api/call"))
                .header("cookie", &session)
                .header("content-type", "application/json")
                .body(change.to_string());
            if let Some(t) = token {
                req = req.header("x-csrf-token", t);
            }
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 403);
            let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            assert_eq!(v["kind"], "forbidden", "{v}");
        }
        // With the session and its token: done.
        let r = http
            .post(format!("{base}api/call"))
            .header("cookie", &session)
            .header("x-csrf-token", &csrf)
            .header("content-type", "application/json")
            .body(change.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Another Host (DNS rebinding) is refused before anything else.
        let r = http
            .get(format!("{base}api/balance"))
            .header("host", "evil.example")
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 421);
    });
}

#[test]
fn a_payment_taken_and_watched_in_a_browser_and_a_double_spend_on_the_console() {
    let chromium = match ensure_chromium() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    eprintln!("chromium: {}", chromium.display());
    let root = tempfile::tempdir().unwrap();
    let shots = target_dir().join("web-screens");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();

    // 1. An issuer, a vendor with the web app, a shopper with a PIN and the web app.
    let server = SettleServer::new(root.path(), "issuer");
    let admin = Admin::of(&server, &http);
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut shopper = node_with_pin(root.path(), "shopper");
    let mut stall = TestNode::init(root.path(), "stall");
    vendor.start(&["--ui", "127.0.0.1:0"]);
    let vendor_addr = vendor.tcp_addr();
    shopper.start(&["--peer", &vendor_addr]);
    stall.start(&[]);
    for n in [&vendor, &shopper, &stall] {
        n.json(&["trust", server.descriptor().to_str().unwrap(), "--json"]);
    }
    rt.block_on(async {
        admin.account(&shopper.device, 10_000).await;
        admin.account(&vendor.device, 0).await;
        admin.account(&stall.device, 0).await;
    });
    let a = shopper.json(&["topup", "5000", "--issuer", &server.url, "--json"]);
    assert_eq!(a["limit"], 5000);
    // A whole-device copy of the shopper, made before it pays: the same allowance and counters.
    shopper.stop();
    let mut clone = shopper.clone_device(root.path(), "clone");
    shopper.start(&["--peer", &vendor_addr, "--ui", "127.0.0.1:0"]);

    let browser = Browser::launch(&root.path().join("chromium")).expect("launch chromium");

    // 2. The vendor enters 1250 and reads the request next to the QR code.
    let pos = paired_page(&browser, &vendor, "/", true);
    pos.fill("#amount", "1250").unwrap();
    pos.wait_for(
        "document.querySelector('#amount-shown').textContent.startsWith('12.50')",
        WAIT,
    )
    .expect("the pad shows 12.50");
    pos.click("#ask").unwrap();
    pos.wait_for(
        "document.querySelector('#request-text').value.startsWith('mpreq1')",
        WAIT,
    )
    .expect("the request is shown");
    pos.wait_for(
        "document.querySelector('#qr').complete && document.querySelector('#qr').naturalWidth > 0",
        WAIT,
    )
    .expect("the QR code is drawn");
    let request = pos
        .eval("document.querySelector('#request-text').value")
        .unwrap();
    let request = request.as_str().unwrap().to_owned();
    assert!(pos.text("#req-amount").unwrap().starts_with("12.50"));
    shot(&pos, &shots, "take-payment-request", (360, 640));
    shot(&pos, &shots, "take-payment-request", (1280, 800));
    pos.set_viewport(360, 640, false).unwrap();

    // 3. The shopper pays it from the wallet screen: the screen shows what the request asks
    // for first, and a wrong PIN pays nothing.
    let wallet = paired_page(&browser, &shopper, "/wallet", true);
    wallet.fill("#pay-request", &request).unwrap();
    wallet.click("#pay").unwrap();
    wallet
        .wait_for("!document.querySelector('#pay-confirm').hidden", WAIT)
        .unwrap_or_else(|e| {
            panic!(
                "the wallet shows the request before paying: {e}: {:?} {:?} {:?}",
                wallet.text("#pay-result"),
                wallet.eval("location.href"),
                wallet.console_errors()
            )
        });
    assert!(wallet.text("#confirm-amount").unwrap().starts_with("12.50"));
    assert_eq!(wallet.text("#confirm-payee").unwrap(), vendor.device);
    shot_of(
        &wallet,
        &shots,
        "wallet-confirm",
        (360, 640),
        Some("#pay-confirm"),
    );
    wallet.set_viewport(360, 640, false).unwrap();
    wallet.fill("#secret", "0000").unwrap();
    wallet.click("#confirm-pay").unwrap();
    wallet
        .wait_for(
            "document.querySelector('#pay-result').textContent.includes('wrong PIN')",
            WAIT,
        )
        .unwrap_or_else(|e| {
            panic!(
                "a wrong PIN is refused: {e}: {:?}",
                wallet.text("#pay-result")
            )
        });
    assert_eq!(shopper.balance("KES")["sent_acked"], 0, "nothing was paid");
    wallet.fill("#secret", PIN).unwrap();
    let paid_at = Instant::now();
    wallet.click("#confirm-pay").unwrap();

    // 4. The vendor's screen turns to paid without a reload.
    pos.wait_for(
        "!document.querySelector('#paid-view').hidden",
        Duration::from_secs(2),
    )
    .unwrap_or_else(|e| {
        panic!(
            "the vendor's screen shows the payment within 2 s: {e}; the wallet says {:?}, the shopper sent {}, the vendor received {}, the vendor's page says {:?}",
            wallet.text("#pay-result"),
            shopper.balance("KES")["sent_acked"],
            vendor.balance("KES")["received"],
            pos.eval("JSON.stringify([document.querySelector('#waiting').textContent, document.querySelector('#status').textContent, document.visibilityState])"),
        )
    });
    let to_screen = paid_at.elapsed();
    eprintln!(
        "payment to the vendor's screen: {} ms",
        to_screen.as_millis()
    );
    assert!(pos.text("#paid-title").unwrap().contains("12.50"));
    assert!(pos.text("#paid-detail").unwrap().contains("counter 1"));
    wallet
        .wait_for(
            "document.querySelector('#pay-result').textContent.startsWith('Paid')",
            WAIT,
        )
        .expect("the wallet says paid");
    shot(&pos, &shots, "take-payment-paid", (360, 640));
    shot(&wallet, &shots, "wallet", (360, 640));
    shot(&wallet, &shots, "wallet", (1280, 800));

    // A till that hears no events at all (a phone that slept through the notice, a stream
    // cut by the Wi-Fi) still turns to paid: it asks the node while the QR code is shown.
    let deaf = browser.new_page().unwrap();
    deaf.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": "window.EventSource = class { constructor() {} addEventListener() {} close() {} };"}),
    )
    .unwrap();
    deaf.set_viewport(360, 640, false).unwrap();
    let link = vendor.json(&["pair", "--json"]);
    deaf.goto(link["url"].as_str().unwrap()).unwrap();
    deaf.wait_for(
        "location.pathname === '/' && document.body.dataset.ready === 'yes'",
        WAIT,
    )
    .unwrap();
    deaf.fill("#amount", "300").unwrap();
    deaf.click("#ask").unwrap();
    deaf.wait_for(
        "document.querySelector('#request-text').value.startsWith('mpreq1')",
        WAIT,
    )
    .unwrap();
    let text = deaf
        .eval("document.querySelector('#request-text').value")
        .unwrap();
    let p = shopper.json(&["pay", text.as_str().unwrap(), "--json"]);
    assert_eq!(p["status"], "acked", "{p}");
    deaf.wait_for("!document.querySelector('#paid-view').hidden", WAIT)
        .expect("a till with no event stream finds the payment by asking");
    assert!(deaf.text("#paid-title").unwrap().contains("3.00"));
    drop(deaf);

    // 5. The issuer's console: log in, watch the upload settle.
    let console = browser.new_page().unwrap();
    console.set_viewport(1280, 800, false).unwrap();
    console
        .goto(&format!("{}/console", server.url))
        .expect("console");
    console
        .wait_for("location.pathname === '/console/login'", WAIT)
        .expect("the console asks for a login first");
    console.fill("#token", &server.token).unwrap();
    console.click("#login").unwrap();
    console
        .wait_for(
            "location.pathname === '/console' && !!document.querySelector('#feed')",
            WAIT,
        )
        .expect("logged in");
    console
        .wait_for(
            "document.querySelector('#live').textContent.includes('connected')",
            WAIT,
        )
        .expect("the console's live feed connects");
    let up = vendor.json(&["sync-issuer", "--issuer", &server.url, "--json"]);
    assert_eq!(up["uploaded"], 2, "{up}");
    console
        .wait_for(
            "document.querySelector('#feed').textContent.includes('settled')",
            WAIT,
        )
        .expect("the console shows the settlement live");
    console
        .wait_for(
            "document.querySelector('#conserved').textContent.includes('conserved: true')",
            WAIT,
        )
        .expect("the books balance");
    shot(&console, &shots, "console", (1280, 800));

    // The vendor's screens after the upload.
    let today = paired_page(&browser, &vendor, "/today", false);
    today
        .wait_for(
            "document.querySelector('#today tbody').textContent.includes('settled')",
            WAIT,
        )
        .expect("today shows the payment settled");
    shot(&today, &shots, "today", (360, 640));
    shot(&today, &shots, "today", (1280, 800));
    let mesh = paired_page(&browser, &vendor, "/mesh", false);
    mesh.wait_for(
        "document.querySelector('#gateway').textContent.includes('uploaded 2')",
        WAIT,
    )
    .expect("mesh shows the gateway round");
    shot(&mesh, &shots, "mesh", (360, 640));

    // 6. A cloned wallet spends the same counter at another stall; both records reach the
    // issuer, which proves the fork; the proof comes back to the vendor through its gateway.
    wallet.goto("about:blank").unwrap();
    clone.start(&["--peer", &stall.tcp_addr()]);
    let forked = clone.json(&["pay", "--to", &stall.device, "--amount", "700", "--json"]);
    assert_eq!(forked["status"], "acked", "the stall cannot know: {forked}");
    assert_eq!(forked["counter"], 1, "the clone reuses the counter");
    stall.json(&["sync-issuer", "--issuer", &server.url, "--json"]);
    console
        .wait_for(
            "!!document.querySelector('#alerts li[data-rule=\"fraud\"]')",
            WAIT,
        )
        .expect("the console raises the fraud alert");
    let alert = console.text("#alerts li[data-rule=\"fraud\"]").unwrap();
    let allowance = a["id"].as_str().unwrap();
    assert!(alert.contains(&allowance[..16]), "{alert}");
    shot(&console, &shots, "console-fraud", (1280, 800));
    let risk = browser.new_page().unwrap();
    risk.set_viewport(1280, 800, false).unwrap();
    risk.goto(&format!("{}/console/risk", server.url)).unwrap();
    risk.wait_for(
        "!!document.querySelector('#alerts li[data-rule=\"fraud\"]')",
        WAIT,
    )
    .expect("the risk page lists the alert");
    shot(&risk, &shots, "console-risk", (1280, 800));
    for screen in ["settlement", "exposure", "accounts"] {
        risk.goto(&format!("{}/console/{screen}", server.url))
            .unwrap();
        risk.wait_for("!!document.querySelector('main h1')", WAIT)
            .unwrap_or_else(|e| panic!("console {screen}: {e}"));
        shot(&risk, &shots, &format!("console-{screen}"), (1280, 800));
    }

    // The vendor's open page learns of it live at its next gateway round.
    vendor.json(&["sync-issuer", "--issuer", &server.url, "--json"]);
    pos.wait_for("!document.querySelector('#alert-count').hidden", WAIT)
        .expect("the vendor's page shows the alert count");
    let alerts = paired_page(&browser, &vendor, "/alerts", false);
    alerts
        .wait_for(
            "!!document.querySelector('#alerts li[data-kind=\"fraud\"]')",
            WAIT,
        )
        .expect("the vendor's alerts list the fraud proof");
    assert!(alerts.text("#alerts").unwrap().contains(&allowance[..16]));
    shot(&alerts, &shots, "alerts", (360, 640));
    shot(&alerts, &shots, "alerts", (1280, 800));
    // The clone tries the vendor too: refused, and the vendor's Today says why.
    clone.json(&["dial", &vendor_addr, "--json"]);
    let out = clone.cli(&["pay", "--to", &vendor.device, "--amount", "100", "--json"]);
    let refused: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(refused["status"], "refused", "{refused}");
    let reason = refused["reason"].as_str().unwrap().replace('_', " ");
    today.goto(&format!("{}today", ui_urls(&vendor).0)).unwrap();
    today
        .wait_for(
            &format!("document.querySelector('#refused tbody').textContent.includes('{reason}')"),
            WAIT,
        )
        .expect("today lists the refused payment with its reason");
    shot(&today, &shots, "today", (360, 640));
    rt.block_on(admin.conserved(10_000));

    // 7. The rules, from outside the browser.
    check_access_rules(&rt, &vendor);

    // No page logged an error, and no page asked for anything beyond loopback.
    for (name, page) in [
        ("vendor", &pos),
        ("shopper", &wallet),
        ("console", &console),
        ("today", &today),
        ("mesh", &mesh),
        ("risk", &risk),
        ("alerts", &alerts),
    ] {
        let mut errors = page.console_errors();
        if name == "shopper" {
            // The one refusal provoked on purpose: the wrong PIN's 403 from /api/call, which
            // the browser logs for any answer of 400 and above.
            let wrong_pin = errors
                .iter()
                .position(|e| e.contains("403") && e.contains("/api/call"));
            assert!(
                wrong_pin.is_some(),
                "the wrong PIN's refusal is seen: {errors:?}"
            );
            errors.remove(wrong_pin.unwrap());
        }
        assert_eq!(errors, Vec::<String>::new(), "{name}");
        assert_eq!(page.offsite_requests(), Vec::<String>::new(), "{name}");
        // Every control is named for a screen reader: inputs by a label, buttons by text.
        let unnamed = page
            .eval(
                "[...document.querySelectorAll('input:not([type=hidden]), textarea, select')]
                   .filter((e) => !e.labels.length && !e.getAttribute('aria-label')).map((e) => e.id)
                 .concat([...document.querySelectorAll('button')]
                   .filter((b) => !b.textContent.trim() && !b.getAttribute('aria-label')).map((b) => b.id))",
            )
            .unwrap();
        assert_eq!(unnamed, json!([]), "{name}: controls without a name");
        assert!(!page.requests().is_empty(), "{name}: requests are seen");
    }
    eprintln!("screenshots in {}", shots.display());
    drop(clone);
}

/// The web app's rules that need no browser: HTTPS with a `Secure` cookie; a payment only of
/// the request shown; payments without the PIN that add up past `[ui] confirm_above` ask for
/// it; paying a key directly and pointing the node at an unknown server are refused.
#[test]
fn the_web_app_over_https_pays_only_what_it_showed_and_sums_what_it_paid_without_the_pin() {
    let root = tempfile::tempdir().unwrap();
    let ca = meshpay_tests::TestCa::new(root.path());
    let files = ca.server("ui", &["127.0.0.1"]).args;
    let issuer = meshpay_tests::DevIssuer::new(root.path());
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut shopper = node_with_pin(root.path(), "shopper");
    shopper.edit_config("confirm_above = 0", "confirm_above = 1000");
    vendor.start(&[]);
    shopper.start(&[
        "--peer",
        &vendor.tcp_addr(),
        "--ui",
        "127.0.0.1:0",
        "--ui-tls-cert",
        &files[1],
        "--ui-tls-key",
        &files[3],
    ]);
    issuer.trusted_by(&vendor);
    issuer.trusted_by(&shopper);
    issuer.fund(&shopper, 5_000);
    let (base, pair) = ui_urls(&shopper);
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let http = ca.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let r = http.get(&pair).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.contains("; Secure"), "{cookie}");
        let (session, csrf) = session_of(&http, &base, &cookie).await;
        let call = |body: Value| {
            http.post(format!("{base}api/call"))
                .header("cookie", &session)
                .header("x-csrf-token", &csrf)
                .header("origin", base.trim_end_matches('/'))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
        };
        let answer = |r: reqwest::Response| async move {
            let status = r.status().as_u16();
            let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            (status, v)
        };
        let request = |amount: u64| {
            vendor.json(&["request", &amount.to_string(), "--json"])["text"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let payee = vendor.device.clone();
        let pay = |text: &str, amount: u64, secret: Option<&str>| {
            let mut body = json!({"call": {"cmd": "pay", "request": text},
                "shown": {"amount": amount, "payee": payee}});
            if let Some(s) = secret {
                body["secret"] = json!(s);
            }
            body
        };

        // A request other than the one shown: refused, nothing paid.
        let text = request(600);
        let (status, v) = answer(call(pay(&text, 60, None)).await.unwrap()).await;
        assert_eq!((status, v["kind"].as_str()), (400, Some("input")), "{v}");
        // Paying a key directly: the web app pays requests only.
        let direct = json!({"call": {"cmd": "pay", "to": payee, "amount": 10}});
        let (status, v) = answer(call(direct).await.unwrap()).await;
        assert_eq!(status, 400, "{v}");
        // An unknown settlement server.
        let topup =
            json!({"call": {"cmd": "topup", "url": "http://10.0.0.1:80", "amount": 10, "days": 1}});
        let (status, v) = answer(call(topup).await.unwrap()).await;
        assert_eq!(status, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains("trusts"), "{v}");
        assert_eq!(shopper.balance("KES")["sent_acked"], 0);

        // 600 needs no PIN under a threshold of 1000; another 600 in the same hours does.
        let (status, v) = answer(call(pay(&text, 600, None)).await.unwrap()).await;
        assert_eq!(
            (status, v["data"]["status"].as_str()),
            (200, Some("acked")),
            "{v}"
        );
        let second = request(600);
        let (status, v) = answer(call(pay(&second, 600, None)).await.unwrap()).await;
        assert_eq!(
            (status, v["kind"].as_str()),
            (403, Some("authorize")),
            "{v}"
        );
        // The passphrase does not stand in for a PIN that is set.
        let (status, _) = answer(
            call(pay(&second, 600, Some("test passphrase")))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 403);
        let (status, v) = answer(call(pay(&second, 600, Some(PIN))).await.unwrap()).await;
        assert_eq!(
            (status, v["data"]["status"].as_str()),
            (200, Some("acked")),
            "{v}"
        );
        assert_eq!(shopper.balance("KES")["sent_acked"], 1200);
    });
}
