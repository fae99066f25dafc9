//! The headless Chromium driver against pages served on loopback by the test itself: a page is
//! clicked, typed into and photographed at a phone's size, and what pages do behind the
//! person's back (console errors, requests off the machine) is seen.
//!
//! Skipped, saying so, where Chromium is missing and cannot be installed.

use meshpay_tests::browser::{self, Browser, Page};
use meshpay_tests::wait_for;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A shop's page: a payment to make, and a form.
const HOME: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Pay</title>
<link rel="icon" href="data:,">
<style>
  body { font: 18px sans-serif; margin: 16px; background: #f3f5f7; color: #123; }
  button { font-size: 22px; padding: 12px 28px; border: 0; border-radius: 8px;
           background: #0a7d5a; color: #fff; }
  #status { font-size: 30px; font-weight: bold; }
  input { font-size: 20px; width: 10em; }
</style>
<script src="/app.js" defer></script>
</head><body>
<h1>Coffee, 3.20</h1>
<p id="status">waiting</p>
<button id="pay">Pay</button>
<form id="send"><p><input id="amount" inputmode="decimal"></p><p id="echo"></p></form>
</body></html>"#;

/// The page's behaviour: a payment that completes shortly after the click, and a form.
const APP: &str = r"
document.getElementById('pay').addEventListener('click', () => {
  setTimeout(() => { document.getElementById('status').textContent = 'paid'; }, 150);
});
document.getElementById('send').addEventListener('submit', (e) => {
  e.preventDefault();
  document.getElementById('echo').textContent = 'sent ' + document.getElementById('amount').value;
});
";

/// A page that moves on to the home page before it has loaded (an image holds its load).
const MOVING: &str = "<!doctype html><title>moving</title><link rel=icon href=data:,>\
    <script>location.replace('/')</script><img src=/held>";

/// A page that logs an error, and loads an image its Content-Security-Policy forbids.
const ERRING: &str = "<!doctype html><title>x</title><link rel=icon href=data:,>\
    <script>console.error('x')</script><img src=http://127.0.0.2:9/x.png>";

/// A page that tries to reach off the machine, and so does a worker it starts.
const OFFSITE: &str = r#"<!doctype html><title>offsite</title><link rel=icon href=data:,>
<script>
fetch('http://example.com/').catch(() => {});
new Worker(URL.createObjectURL(new Blob(["fetch('http://example.org/w').catch(() => {})"])));
</script>"#;

/// Serves the pages above on a loopback port, each connection on a thread of its own (Chromium
/// opens connections it may never use); returns the base URL.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || answer(conn));
        }
    });
    base
}

fn answer(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(n) if n > 0 && head.len() < 16 * 1024 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, kind, extra, body) = match path {
        "/" => (
            "200 OK",
            "text/html; charset=utf-8",
            "Set-Cookie: session=s3cret; Path=/; HttpOnly; SameSite=Strict\r\n",
            HOME,
        ),
        "/app.js" => ("200 OK", "text/javascript", "", APP),
        "/error" => (
            "200 OK",
            "text/html",
            "Content-Security-Policy: img-src 'self' data:\r\n",
            ERRING,
        ),
        "/offsite" => ("200 OK", "text/html", "", OFFSITE),
        "/moving" => ("200 OK", "text/html", "", MOVING),
        "/held" => {
            // No answer: the connection is held until the browser gives up on it (or the read
            // timeout above).
            while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
            return;
        }
        _ => ("404 Not Found", "text/plain", "", "not found"),
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A browser, or `None` (saying SKIPPED and why) where there is no Chromium to be had.
fn browser(dir: &std::path::Path) -> Option<Browser> {
    if let Err(e) = browser::ensure_chromium() {
        eprintln!("SKIPPED: {e}");
        return None;
    }
    let b = Browser::launch(dir).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}", b.version());
    Some(b)
}

fn page(b: &Browser) -> Page {
    b.new_page().unwrap_or_else(|e| panic!("{e}\n{}", b.log()))
}

#[test]
fn a_page_is_clicked_typed_into_and_photographed_at_a_phones_size() {
    let root = tempfile::tempdir().unwrap();
    let Some(b) = browser(root.path()) else {
        return;
    };
    let site = serve();
    let page = page(&b);
    page.set_viewport(360, 640, true).unwrap();
    page.goto(&format!("{site}/")).unwrap();
    assert_eq!(page.text("#status").unwrap(), "waiting");

    page.click("#pay").unwrap();
    let took = page
        .wait_for(
            "document.getElementById('status').innerText === 'paid'",
            Duration::from_secs(5),
        )
        .unwrap();
    eprintln!("time from the click to the page changing: {took:?}");
    // The page takes 150 ms to answer: what is measured is the page, not the polling.
    assert!(took >= Duration::from_millis(50), "{took:?}");

    page.fill("#amount", "3.20").unwrap();
    page.press_enter("#amount").unwrap();
    page.wait_for(
        "document.getElementById('echo').innerText === 'sent 3.20'",
        Duration::from_secs(5),
    )
    .unwrap();

    let shot = browser::target_dir().join("browser-smoke/paid-360x640.png");
    page.screenshot(&shot).unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 1024, "{} bytes", png.len());
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!(
        (size(16), size(20)),
        (360, 640),
        "the IHDR's width and height"
    );

    // The session cookie is there, and out of the page's scripts' reach.
    let cookies = page.cookies().unwrap();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "session")
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"));
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");
    assert_eq!(page.eval("document.cookie").unwrap(), "");

    assert!(
        page.requests().iter().any(|u| u.ends_with("/app.js")),
        "{:?}",
        page.requests()
    );
    assert_eq!(page.console_errors(), Vec::<String>::new());
    assert_eq!(page.offsite_requests(), Vec::<String>::new());

    // A page that moves on by itself before it loads still ends a `goto`.
    page.goto(&format!("{site}/moving")).unwrap();
    page.wait_for("location.pathname === '/'", Duration::from_secs(5))
        .unwrap();

    // What fails says why.
    let e = page.eval("null.x").unwrap_err();
    assert!(e.contains("TypeError"), "{e}");
    let e = page.click("#nothing").unwrap_err();
    assert!(e.contains("no element matches #nothing"), "{e}");
    let e = page
        .wait_for("window.never", Duration::from_millis(200))
        .unwrap_err();
    assert!(e.contains("window.never"), "{e}");
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = page.goto(&format!("http://{closed}/")).unwrap_err();
    assert!(e.contains("ERR_CONNECTION_REFUSED"), "{e}");
}

#[test]
fn console_errors_and_requests_off_the_machine_are_seen() {
    let root = tempfile::tempdir().unwrap();
    let Some(b) = browser(root.path()) else {
        return;
    };
    let site = serve();

    let erring = page(&b);
    erring.goto(&format!("{site}/error")).unwrap();
    let errors = wait_for("a console error and a CSP violation", || {
        let errors = erring.console_errors();
        (errors.iter().any(|e| e.starts_with("console.error: x"))
            && errors
                .iter()
                .any(|e| e.contains("violates the following Content Security Policy")))
        .then_some(errors)
    });
    eprintln!("{errors:#?}");

    let offsite = page(&b);
    offsite.goto(&format!("{site}/offsite")).unwrap();
    let tried = wait_for(
        "the page's and its worker's requests off the machine",
        || {
            let mut tried = offsite.offsite_requests();
            tried.sort();
            (tried.len() >= 2).then_some(tried)
        },
    );
    assert_eq!(tried, ["http://example.com/", "http://example.org/w"]);
    assert!(
        offsite.requests().iter().any(|u| u.starts_with(&site)),
        "{:?}",
        offsite.requests()
    );
}
