//! The daemon's control API: one JSON request and one JSON answer per connection, over a Unix
//! socket in the node's home directory.
//!
//! Access control: the socket and the token file are created readable and writable by the
//! owner only (mode 0600), and every request must carry the token, so another local user can
//! neither connect nor spend.

use crate::config::Home;
use crate::daemon::{Node, NodeError, now};
use crate::store::SentStatus;
use meshpay_protocol::{
    AllowanceCert, DeviceKey, IssuerDescriptor, PaymentRequest, PrintableKey, decode,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// A control command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// This device.
    Id,
    /// Connected peers.
    Peers,
    /// Make a payment request.
    Request {
        /// Minor units.
        amount: u64,
        /// Currency (default from config).
        currency: Option<String>,
        /// Memo.
        memo: Option<String>,
    },
    /// Pay a request, or a peer an amount.
    Pay {
        /// A request in text form.
        request: Option<String>,
        /// Or: the payee's device key.
        to: Option<String>,
        /// With: the amount.
        amount: Option<u64>,
        /// Currency (default from config).
        currency: Option<String>,
        /// Memo.
        memo: Option<String>,
        /// Pay again even if the same payment was made moments ago.
        #[serde(default)]
        again: bool,
        /// Idempotency key: a payment already made under it is answered instead.
        #[serde(default)]
        id: Option<String>,
    },
    /// Balances per currency.
    Balance,
    /// Payments sent and received.
    History,
    /// Allowances held.
    Allowances,
    /// Add an allowance certificate (hex of its encoding).
    AddAllowance {
        /// Hex.
        cert: String,
    },
    /// Trust an issuer (hex of its descriptor's encoding).
    Trust {
        /// Hex.
        descriptor: String,
    },
    /// Fraud proofs held.
    Frauds,
    /// Get an allowance from the issuer at `url`.
    Topup {
        /// The settlement server.
        url: String,
        /// Amount to lock.
        amount: u64,
        /// Currency (default from config).
        currency: Option<String>,
        /// Validity in days.
        days: u64,
    },
    /// Upload sealed records to the issuer at `url` and fetch its receipts.
    SyncIssuer {
        /// The settlement server.
        url: String,
    },
    /// The sealed records of received payments (hex).
    Records,
    /// The mesh store and proof of carriage.
    Mesh,
    /// Sync with every connected peer now.
    Sync,
    /// Write every carried bundle to a file.
    Export {
        /// Absolute path.
        path: String,
    },
    /// Import a bundle file.
    Import {
        /// Absolute path.
        path: String,
    },
    /// Dial a peer.
    Dial {
        /// Multiaddress.
        addr: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    token: String,
    #[serde(flatten)]
    command: Command,
}

/// Creates the token file (owner-only) and returns the token.
pub fn make_token(home: &Home) -> std::io::Result<String> {
    let mut t = [0u8; 32];
    OsRng.fill_bytes(&mut t);
    let token = hex::encode(t);
    let path = home.token();
    let _ = std::fs::remove_file(&path);
    // Created owner-only from the first byte, never readable by others.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(&mut f, token.as_bytes())?;
    Ok(token)
}

/// Binds the control socket (owner-only). Bind before announcing the node as ready.
pub fn bind(home: &Home) -> std::io::Result<UnixListener> {
    let path = home.socket();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the control socket until the process ends.
pub async fn serve(node: Arc<Node>, listener: UnixListener, token: String) -> std::io::Result<()> {
    let token = Arc::new(token);
    loop {
        let (stream, _) = listener.accept().await?;
        let node = Arc::clone(&node);
        let token = Arc::clone(&token);
        tokio::spawn(async move {
            let _ = handle(node, stream, &token).await;
        });
    }
}

async fn handle(node: Arc<Node>, stream: UnixStream, token: &str) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // One line of at most 64 KiB.
    let mut reader = BufReader::new(read).take(64 * 1024);
    reader.read_line(&mut line).await?;
    let answer = match serde_json::from_str::<Envelope>(&line) {
        Err(e) => json!({"ok": false, "error": format!("bad control request: {e}")}),
        Ok(env) if !constant_time_eq(env.token.as_bytes(), token.as_bytes()) => {
            json!({"ok": false, "error": "wrong control token"})
        }
        Ok(env) => match run(&node, env.command).await {
            Ok(data) => json!({"ok": true, "data": data}),
            Err(e) => json!({"ok": false, "error": e.to_string()}),
        },
    };
    let mut out = serde_json::to_vec(&answer).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn input(msg: impl Into<String>) -> NodeError {
    NodeError::Input(msg.into())
}

fn device_arg(s: &str) -> Result<DeviceKey, NodeError> {
    DeviceKey::from_text(s).map_err(|e| input(format!("payee: {e}")))
}

async fn run(node: &Node, cmd: Command) -> Result<Value, NodeError> {
    match cmd {
        Command::Id => Ok(json!({
            "device_key": node.device.to_text(),
            "peer_id": meshpay_transports::p2p::peer_id_of(&node.device).map(|p| p.to_string()),
            "listen": node.listen_addrs().await,
            "restore_check": format!("{:?}", node.restore),
        })),
        Command::Peers => Ok(Value::Array(
            node.peers()
                .await
                .into_iter()
                .map(|p| json!({"device_key": p.device.to_text(), "link": p.link.name(), "address": p.address}))
                .collect(),
        )),
        Command::Request { amount, currency, memo } => {
            if amount == 0 {
                return Err(input("the amount must be positive"));
            }
            let currency = currency.unwrap_or_else(|| node.currency().to_owned());
            let req = node
                .new_request(amount, &currency, memo.as_deref().unwrap_or(""))
                .await?;
            Ok(request_json(&req))
        }
        Command::Pay { request, to, amount, currency, memo, again, id } => {
            if id.as_ref().is_some_and(|k| k.is_empty() || k.len() > 128) {
                return Err(input("--id: 1 to 128 characters"));
            }
            let outcome = match (request, to, amount) {
                (Some(text), None, None) => {
                    let req = PaymentRequest::from_text(&text).map_err(|e| input(e.to_string()))?;
                    node.pay(&req, id.as_deref()).await?
                }
                (None, Some(to), Some(amount)) if amount > 0 => {
                    let payee = device_arg(&to)?;
                    let currency = currency.unwrap_or_else(|| node.currency().to_owned());
                    node.pay_peer(
                        &payee,
                        amount,
                        &currency,
                        memo.as_deref().unwrap_or(""),
                        again,
                        id.as_deref(),
                    )
                    .await?
                }
                _ => return Err(input("pay takes a request text, or a payee (--to) and a positive amount")),
            };
            Ok(serde_json::to_value(outcome).unwrap_or(Value::Null))
        }
        Command::Balance => balance(node).await,
        Command::History => history(node).await,
        Command::Allowances => Ok(Value::Array(
            node.allowances()
                .await
                .iter()
                .map(|a| {
                    let b = a.cert.body();
                    json!({
                        "id": b.id.to_hex(), "issuer": b.issuer.to_text(), "currency": b.currency,
                        "limit": b.limit, "spent": a.head.total, "available": a.available(),
                        "counter": a.head.counter, "max_payment": b.max_payment,
                        "valid_from": b.valid_from, "valid_until": b.valid_until,
                        "settle_by": b.settle_by, "retired": a.retired,
                        "usable": a.usable_at(now()),
                    })
                })
                .collect(),
        )),
        Command::AddAllowance { cert } => {
            let bytes = hex::decode(cert.trim()).map_err(|_| input("the certificate is not hex"))?;
            let cert: AllowanceCert = decode(&bytes).map_err(|e| input(e.to_string()))?;
            let new = node.add_allowance(&cert).await?;
            Ok(json!({"id": cert.id().to_hex(), "new": new, "limit": cert.body().limit, "currency": cert.body().currency}))
        }
        Command::Trust { descriptor } => {
            let bytes = hex::decode(descriptor.trim()).map_err(|_| input("the descriptor is not hex"))?;
            let d: IssuerDescriptor = decode(&bytes).map_err(|e| input(e.to_string()))?;
            node.trust(&d).await?;
            Ok(json!({"issuer": d.body().issuer.to_text(), "name": d.body().name}))
        }
        Command::Frauds => {
            let frauds = node.store().frauds().await?;
            Ok(Value::Array(
                frauds
                    .iter()
                    .map(|(p, at)| json!({
                        "allowance": p.allowance().to_hex(), "holder": p.cert.body().holder.to_text(),
                        "issuer": p.cert.body().issuer.to_text(), "counter": p.first.counter,
                        "found_at": at, "proof": hex::encode(meshpay_protocol::encode(p)),
                    }))
                    .collect(),
            ))
        }
        Command::Topup { url, amount, currency, days } => {
            if amount == 0 || days == 0 {
                return Err(input("amount and days must be positive"));
            }
            let currency = currency.unwrap_or_else(|| node.currency().to_owned());
            let cert = node.topup(&url, amount, &currency, days * 86_400).await?;
            let b = cert.body();
            Ok(json!({"id": b.id.to_hex(), "limit": b.limit, "currency": b.currency, "valid_until": b.valid_until, "settle_by": b.settle_by}))
        }
        Command::SyncIssuer { url } => {
            let round = node.sync_issuer(&url).await?;
            Ok(serde_json::to_value(round).unwrap_or(Value::Null))
        }
        Command::Mesh => {
            let mut v = node.mesh_summary().await?;
            v["carried"] = node
                .handovers(100)
                .iter()
                .map(|h| {
                    let b = h.body();
                    json!({"taker": b.taker.to_text(), "count": b.count, "bytes": b.bytes, "at": b.at,
                           "receipt": hex::encode(meshpay_protocol::encode(h))})
                })
                .collect();
            Ok(v)
        }
        Command::Sync => {
            let (peers, took, gave) = node.sync_all().await?;
            Ok(json!({"peers": peers, "took": took, "gave": gave}))
        }
        Command::Export { path } => {
            let (file, bundles) = node.export().await?;
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, &file)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| input(format!("cannot write {path}: {e}")))?;
            Ok(json!({"bundles": bundles, "bytes": file.len(), "path": path}))
        }
        Command::Import { path } => {
            let file = read_bounded(&path, meshpay_protocol::bundle::MAX_FILE)
                .await
                .map_err(input)?;
            let report = node.import(file).await.map_err(|e| match e {
                NodeError::Device(e) => input(format!("{path}: {e}")),
                e => e,
            })?;
            Ok(serde_json::to_value(report).unwrap_or(Value::Null))
        }
        Command::Records => {
            let records = node.store().records().await?;
            Ok(Value::Array(records.iter().map(|r| json!(hex::encode(r))).collect()))
        }
        Command::Dial { addr } => {
            let device = node.dial(&addr).await?;
            Ok(json!({"address": addr, "device_key": device.to_text(),
                      "peer_id": meshpay_transports::p2p::peer_id_of(&device).map(|p| p.to_string())}))
        }
    }
}

/// Reads at most `limit` bytes of `path`, refusing anything longer. The size the file system
/// reports is not trusted (a FIFO or a device reports none, and a file can grow while read):
/// the read itself stops one byte past the limit.
async fn read_bounded(path: &str, limit: usize) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt as _;
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    // The open is inside the deadline too: opening a FIFO waits for a writer.
    let read = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let f = tokio::fs::File::open(path).await?;
        let mut buf = Vec::new();
        f.take(cap).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .map_err(|_| format!("{path}: no end of file within 60 s"))?;
    let buf = read.map_err(|e| format!("cannot read {path}: {e}"))?;
    if buf.len() > limit {
        return Err(format!(
            "{path} is over the limit of {} MiB for a bundle file",
            limit >> 20
        ));
    }
    Ok(buf)
}

/// A request as JSON, with its text form.
pub fn request_json(req: &PaymentRequest) -> Value {
    json!({
        "text": req.to_text(), "payee": req.payee.to_text(), "amount": req.amount,
        "currency": req.currency, "memo": req.memo, "nonce": req.nonce.to_hex(), "expires": req.expires,
    })
}

async fn balance(node: &Node) -> Result<Value, NodeError> {
    #[derive(Default, Serialize)]
    struct Row {
        allowance_limit: u64,
        spendable: u64,
        sent_acked: u64,
        sent_pending: u64,
        sent_refused: u64,
        received: u64,
    }
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let t = now();
    for a in node.allowances().await {
        let r = rows.entry(a.cert.body().currency.clone()).or_default();
        r.allowance_limit += a.cert.body().limit;
        if a.usable_at(t) {
            r.spendable += a.available();
        }
    }
    for s in node.store().sent().await? {
        let r = rows.entry(s.currency.clone()).or_default();
        match s.status {
            SentStatus::Acked => r.sent_acked += s.iou.amount,
            SentStatus::Pending => r.sent_pending += s.iou.amount,
            SentStatus::Refused => r.sent_refused += s.iou.amount,
        }
    }
    for p in node.store().received().await? {
        rows.entry(p.currency.clone()).or_default().received += p.iou.amount;
    }
    Ok(serde_json::to_value(rows).unwrap_or(Value::Null))
}

async fn history(node: &Node) -> Result<Value, NodeError> {
    let settlements = node.store().settlements().await?;
    let settled = |id: &meshpay_protocol::Hash| settlements.get(id.0.as_slice()).cloned();
    let mut items: Vec<(u64, Value)> = Vec::new();
    for s in node.store().sent().await? {
        items.push((s.created_at, json!({
            "direction": "sent", "iou": s.iou.id().to_hex(), "counterparty": s.iou.payee.to_text(),
            "amount": s.iou.amount, "currency": s.currency, "memo": s.memo,
            "status": match s.status { SentStatus::Acked => "acked", SentStatus::Pending => "pending", SentStatus::Refused => "refused" },
            "reason": s.reason, "allowance": s.iou.allowance.to_hex(), "counter": s.iou.counter, "time": s.created_at,
            "settlement": settled(&s.iou.id()),
        })));
    }
    for p in node.store().received().await? {
        items.push((p.received_at, json!({
            "direction": "received", "iou": p.iou.id().to_hex(), "counterparty": p.payer.to_text(),
            "amount": p.iou.amount, "currency": p.currency, "memo": p.memo, "status": "acked",
            "allowance": p.iou.allowance.to_hex(), "counter": p.iou.counter, "time": p.received_at,
            "settlement": settled(&p.iou.id()),
        })));
    }
    items.sort_by_key(|(t, _)| *t);
    Ok(Value::Array(items.into_iter().map(|(_, v)| v).collect()))
}

/// Sends one command to the daemon in `home` and returns its data, or its error as text.
pub async fn call(home: &Home, cmd: Command) -> anyhow::Result<Value> {
    let token = std::fs::read_to_string(home.token()).map_err(|_| {
        anyhow::anyhow!(
            "no meshpay daemon is running on {} (start one with `meshpay run`)",
            home.dir.display()
        )
    })?;
    let stream = UnixStream::connect(home.socket()).await.map_err(|_| {
        anyhow::anyhow!(
            "no meshpay daemon is running on {} (start one with `meshpay run`)",
            home.dir.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(&Envelope {
        token: token.trim().to_owned(),
        command: cmd,
    })?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    let v: Value = serde_json::from_str(&answer)
        .map_err(|_| anyhow::anyhow!("the daemon closed the connection without answering"))?;
    if v["ok"] == Value::Bool(true) {
        Ok(v["data"].clone())
    } else {
        Err(anyhow::anyhow!(
            "{}",
            v["error"]
                .as_str()
                .unwrap_or("the daemon refused the command")
        ))
    }
}

use tokio::io::AsyncReadExt as _;
