//! Load and attacks against a settlement server, shared by the tests that reproduce attacks
//! and the benchmark that prints their figures: slow clients, many concurrent uploads with
//! health probes alongside, floods of forged records from several source addresses.

use crate::issuer_api::try_upload;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The `host:port` of an `http://` URL.
fn socket_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .parse()
        .expect("an http://IP:port URL")
}

/// A TCP connection from the local address `from` (any `127.x.y.z` on loopback) to `url`.
pub async fn connect_from(from: IpAddr, url: &str) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(socket_of(url)).await
}

/// Times one `GET path` on a fresh connection (at most 5 s).
pub async fn probe(url: &str, path: &str) -> Result<Duration, String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let r = client
        .get(format!("{url}{path}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(r.status().to_string());
    }
    r.bytes().await.map_err(|e| e.to_string())?;
    Ok(start.elapsed())
}

/// Opens `n` connections from `from` that each send part of a request head and then wait.
pub async fn slow_clients(url: &str, from: IpAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        // A server out of files leaves connections in the kernel's queue: do not wait on them.
        let Ok(Ok(mut c)) =
            tokio::time::timeout(Duration::from_secs(1), connect_from(from, url)).await
        else {
            continue;
        };
        let _ = c
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: meshpay\r\nX-Slow: ")
            .await;
        held.push(c);
    }
    held
}

/// Latencies of probes, sorted.
#[derive(Debug, Clone)]
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    /// The `q`-quantile (0.0 to 1.0).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[i.min(self.0.len() - 1)]
    }

    /// In milliseconds: p50, p99 and max.
    pub fn summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "{} probes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.0.len(),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            ms(self.quantile(1.0))
        )
    }
}

/// Uploads each of `batches` from its own gateway, all at once (each retrying on `503` and
/// `429`), while probing `/healthz` and the descriptor every 50 ms. Returns every upload's
/// answers and the probes' latencies.
pub async fn uploads_under_probes(
    url: &str,
    batches: Vec<Arc<Vec<Vec<u8>>>>,
) -> (Vec<Vec<Option<meshpay_protocol::ReceiptStatus>>>, Latencies) {
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let (url, done) = (url.to_owned(), done.clone());
        tokio::spawn(async move {
            let mut times = Vec::new();
            while !done.load(Ordering::Relaxed) && times.len() < 20_000 {
                for path in ["/healthz", "/.well-known/meshpay-issuer"] {
                    times.push(probe(&url, path).await.expect("the server answers"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            times
        })
    };
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for records in batches {
        let (http, url) = (http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            for _ in 0..600 {
                let (status, answers) = try_upload(&http, &url, &records).await;
                match status {
                    200 => return answers,
                    429 | 503 => tokio::time::sleep(Duration::from_millis(500)).await,
                    other => panic!("upload answered {other}"),
                }
            }
            panic!("an upload was never taken");
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("upload task"));
    }
    done.store(true, Ordering::Relaxed);
    let mut times = prober.await.expect("prober");
    times.sort();
    (answers, Latencies(times))
}

/// Floods `url` with `forged` from `sources` addresses (`127.0.0.2` on), until `stop`. Each
/// task returns how many uploads it sent and how many got `429`.
pub fn junk_flood(
    url: &str,
    forged: &Arc<Vec<Vec<u8>>>,
    sources: u8,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u32, u32)>> {
    (0..sources)
        .map(|i| {
            let (url, forged, stop) = (url.to_owned(), forged.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .local_address(IpAddr::from([127, 0, 0, 2 + i]))
                    .build()
                    .expect("client");
                let (mut sent, mut limited) = (0u32, 0u32);
                for _ in 0..10_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (status, _) = try_upload(&client, &url, &forged).await;
                    sent += 1;
                    if status == 429 {
                        limited += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                (sent, limited)
            })
        })
        .collect()
}
