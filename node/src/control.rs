//! The daemon's control API: one JSON request and one JSON answer per connection, over a Unix
//! socket in the node's home directory.
//!
//! Access control: the socket and the token file are created readable and writable by the
//! owner only (mode 0600), and every request must carry the token, so another local user can
//! neither connect nor spend.

use crate::api::{self, Answer, ApiError, ErrorKind, Request};
use crate::config::Home;
use crate::daemon::{InputError, Node, NodeError, now};
use crate::store::SentStatus;
use meshpay_protocol::device::DeviceError;
use meshpay_protocol::{
    AllowanceCert, DeviceKey, IssuerDescriptor, PaymentRequest, PrintableKey, decode,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    token: String,
    #[serde(flatten)]
    request: Request,
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
    let fail = |e: ApiError| json!({"ok": false, "kind": e.kind, "error": e.message});
    let answer = match serde_json::from_str::<Envelope>(&line) {
        Err(e) => fail(ApiError::new(
            ErrorKind::Input,
            format!("bad control request: {e}"),
        )),
        Ok(env) if !constant_time_eq(env.token.as_bytes(), token.as_bytes()) => fail(
            ApiError::new(ErrorKind::Unauthorized, "wrong control token"),
        ),
        Ok(env) => match run(&node, env.request).await {
            Ok(data) => json!({"ok": true, "data": data}),
            Err(e) => fail(api_error(&e)),
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

/// The kind of a node error, for the client.
pub fn api_error(e: &NodeError) -> ApiError {
    let kind = match e {
        NodeError::Pay(_) => ErrorKind::Pay,
        NodeError::Input(_) | NodeError::UntrustedIssuer { .. } | NodeError::OutOfTurn(_) => {
            ErrorKind::Input
        }
        NodeError::Link(_) | NodeError::NotADevice => ErrorKind::Peer,
        NodeError::Issuer(_) => ErrorKind::Issuer,
        NodeError::Store(_) => ErrorKind::Storage,
        NodeError::Stopped => ErrorKind::Stopped,
        NodeError::Device(d) => match d {
            DeviceError::Pay(_) => ErrorKind::Pay,
            DeviceError::Link(_) | DeviceError::Peer(_) => ErrorKind::Peer,
            DeviceError::Storage(_) | DeviceError::Sentinel(_) => ErrorKind::Storage,
            _ => ErrorKind::Input,
        },
    };
    ApiError::new(kind, e.to_string())
}

fn input(e: InputError) -> NodeError {
    NodeError::Input(e)
}

fn device_arg(s: &str) -> Result<DeviceKey, NodeError> {
    DeviceKey::from_text(s).map_err(|e| input(InputError::Payee(e)))
}

/// Carries out one control request on `node`: what the control socket, the web app and the
/// phone library all call.
// One arm per control request.
#[allow(clippy::too_many_lines)]
pub async fn run(node: &Node, request: Request) -> Result<Answer, NodeError> {
    Ok(match request {
        Request::Id => Answer::Id(api::IdInfo {
            device_key: node.device.to_text(),
            peer_id: meshpay_transports::p2p::peer_id_of(&node.device).map(|p| p.to_string()),
            listen: node.listen_addrs().await,
            restore_check: format!("{:?}", node.restore),
        }),
        Request::Peers => Answer::Peers(
            node.peers()
                .await
                .into_iter()
                .map(|p| api::Peer {
                    device_key: p.device.to_text(),
                    link: p.link.name().to_owned(),
                    address: p.address,
                })
                .collect(),
        ),
        Request::Request {
            amount,
            currency,
            memo,
        } => {
            if amount == 0 {
                return Err(input(InputError::Amount));
            }
            let currency = currency.unwrap_or_else(|| node.currency().to_owned());
            let req = node
                .new_request(amount, &currency, memo.as_deref().unwrap_or(""))
                .await?;
            Answer::Request(request_info(&req))
        }
        Request::Pay {
            request,
            to,
            amount,
            currency,
            memo,
            again,
            id,
        } => {
            if id.as_ref().is_some_and(|k| k.is_empty() || k.len() > 128) {
                return Err(input(InputError::IdempotencyKey));
            }
            Answer::Paid(match (request, to, amount) {
                (Some(text), None, None) => {
                    let req = PaymentRequest::from_text(&text)
                        .map_err(|e| input(InputError::RequestText(e)))?;
                    node.pay(&req, id.as_deref()).await?
                }
                (None, Some(to), Some(amount)) if amount > 0 => {
                    let payee = device_arg(&to)?;
                    let currency = currency.unwrap_or_else(|| node.currency().to_owned());
                    let memo = memo.as_deref().unwrap_or("");
                    node.pay_peer(&payee, amount, &currency, memo, again, id.as_deref())
                        .await?
                }
                _ => {
                    return Err(input(InputError::PayArguments));
                }
            })
        }
        Request::Balance => Answer::Balance(balance(node).await?),
        Request::History => Answer::History(history(node).await?),
        Request::Allowances => Answer::Allowances(
            node.allowances()
                .await
                .iter()
                .map(|a| {
                    let b = a.cert.body();
                    api::Allowance {
                        id: b.id.to_hex(),
                        issuer: b.issuer.to_text(),
                        currency: b.currency.clone(),
                        limit: b.limit,
                        spent: a.head.total,
                        available: a.available(),
                        counter: a.head.counter,
                        max_payment: b.max_payment,
                        valid_from: b.valid_from,
                        valid_until: b.valid_until,
                        settle_by: b.settle_by,
                        retired: a.retired,
                        usable: a.usable_at(now()),
                    }
                })
                .collect(),
        ),
        Request::AddAllowance { cert } => {
            let bytes =
                hex::decode(cert.trim()).map_err(|_| input(InputError::NotHex("certificate")))?;
            let cert: AllowanceCert = decode(&bytes).map_err(|e| input(e.into()))?;
            let new = node.add_allowance(&cert).await?;
            Answer::AllowanceAdded(api::AllowanceAdded {
                id: cert.id().to_hex(),
                new,
                limit: cert.body().limit,
                currency: cert.body().currency.clone(),
            })
        }
        Request::Trust { descriptor } => {
            let bytes = hex::decode(descriptor.trim())
                .map_err(|_| input(InputError::NotHex("descriptor")))?;
            let d: IssuerDescriptor = decode(&bytes).map_err(|e| input(e.into()))?;
            node.trust(&d).await?;
            Answer::Trusted(api::Trusted {
                issuer: d.body().issuer.to_text(),
                name: d.body().name.clone(),
            })
        }
        Request::Frauds => Answer::Frauds(
            node.store()
                .frauds()
                .await?
                .iter()
                .map(|(p, at)| api::Fraud {
                    allowance: p.allowance().to_hex(),
                    holder: p.cert.body().holder.to_text(),
                    issuer: p.cert.body().issuer.to_text(),
                    counter: p.first.counter,
                    found_at: *at,
                    proof: hex::encode(meshpay_protocol::encode(p)),
                })
                .collect(),
        ),
        Request::Topup {
            url,
            amount,
            currency,
            days,
        } => {
            if amount == 0 || days == 0 {
                return Err(input(InputError::TopupArguments));
            }
            let currency = currency.unwrap_or_else(|| node.currency().to_owned());
            let cert = node.topup(&url, amount, &currency, days * 86_400).await?;
            let b = cert.body();
            Answer::ToppedUp(api::ToppedUp {
                id: b.id.to_hex(),
                limit: b.limit,
                currency: b.currency.clone(),
                valid_until: b.valid_until,
                settle_by: b.settle_by,
            })
        }
        Request::SyncIssuer { url } => Answer::GatewayRound(node.sync_issuer(&url).await?),
        Request::Mesh => {
            let mut mesh = node.mesh_summary().await?;
            mesh.carried = node
                .handovers(100)
                .iter()
                .map(|h| {
                    let b = h.body();
                    api::Carried {
                        taker: b.taker.to_text(),
                        count: b.count,
                        bytes: b.bytes,
                        at: b.at,
                        receipt: hex::encode(meshpay_protocol::encode(h)),
                    }
                })
                .collect();
            mesh.gateway.clone_from(
                &node
                    .last_gateway
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            Answer::Mesh(mesh)
        }
        Request::Sync => {
            let (peers, took, gave) = node.sync_all().await?;
            Answer::Synced(api::Synced { peers, took, gave })
        }
        Request::Export { path } => {
            let (file, bundles) = node.export().await?;
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, &file)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| {
                    input(InputError::File {
                        path: path.clone(),
                        why: format!("cannot write it: {e}"),
                    })
                })?;
            Answer::Exported(api::Exported {
                bundles,
                bytes: file.len(),
                path,
            })
        }
        Request::Import { path } => {
            let file = read_bounded(&path, meshpay_protocol::bundle::MAX_FILE)
                .await
                .map_err(input)?;
            Answer::Imported(node.import(file).await.map_err(|e| match e {
                NodeError::Device(e) => input(InputError::File {
                    path: path.clone(),
                    why: e.to_string(),
                }),
                e => e,
            })?)
        }
        Request::Records => Answer::Records(
            node.store()
                .records()
                .await?
                .iter()
                .map(hex::encode)
                .collect(),
        ),
        Request::Alerts => Answer::Alerts(alerts(node).await?),
        Request::Pair => Answer::Paired(pair(node)?),
        Request::Refusals => {
            let mut list = node.notices.recent_refusals();
            list.reverse();
            Answer::Refusals(list)
        }
        Request::Dial { addr } => {
            let device = node.dial(&addr).await?;
            Answer::Dialed(api::Dialed {
                address: addr,
                device_key: device.to_text(),
                peer_id: meshpay_transports::p2p::peer_id_of(&device).map(|p| p.to_string()),
            })
        }
    })
}

/// Reads at most `limit` bytes of `path`, refusing anything longer. The size the file system
/// reports is not trusted (a FIFO or a device reports none, and a file can grow while read):
/// the read itself stops one byte past the limit.
async fn read_bounded(path: &str, limit: usize) -> Result<Vec<u8>, InputError> {
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
    .map_err(|_| InputError::FileTimeout(path.to_owned()))?;
    let buf = read.map_err(|e| InputError::Unreadable {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    if buf.len() > limit {
        return Err(InputError::FileTooLarge {
            path: path.to_owned(),
            limit_mib: limit >> 20,
        });
    }
    Ok(buf)
}

/// A request with its text form.
pub fn request_info(req: &PaymentRequest) -> api::RequestInfo {
    api::RequestInfo {
        text: req.to_text(),
        payee: req.payee.to_text(),
        amount: req.amount,
        currency: req.currency.clone(),
        memo: req.memo.clone(),
        nonce: req.nonce.to_hex(),
        expires: req.expires,
    }
}

/// The alerts: fraud proofs held (durable), a restore found at start, and the revocations
/// and dropped peers seen since start; newest first.
async fn alerts(node: &Node) -> Result<Vec<api::Alert>, NodeError> {
    use api::{Alert, AlertKind};
    let mut out = node.notices.recent_alerts();
    // Fraud proofs come from the wallet, where they outlive a restart.
    out.retain(|a| a.kind != AlertKind::Fraud);
    for (p, at) in node.store().frauds().await? {
        let b = p.cert.body();
        out.push(Alert {
            kind: AlertKind::Fraud,
            at,
            subject: p.allowance().to_hex(),
            detail: format!(
                "fraud proof: allowance {} of {} spent counter {} twice; its payments are refused since {at}",
                p.allowance().to_hex(),
                b.holder.short(),
                p.first.counter
            ),
        });
    }
    if !matches!(
        node.restore,
        meshpay_protocol::wallet::RestoreCheck::Current
    ) {
        out.push(Alert {
            kind: AlertKind::Restore,
            at: 0,
            subject: node.device.to_text(),
            detail: format!(
                "restore check at start: {:?}; allowances that may have been spent from the newer copy are retired",
                node.restore
            ),
        });
    }
    out.sort_by_key(|a| std::cmp::Reverse(a.at));
    Ok(out)
}

#[cfg(feature = "ui")]
fn pair(node: &Node) -> Result<api::PairLink, NodeError> {
    node.ui
        .get()
        .map(|ui| ui.pairing_link())
        .ok_or(NodeError::Input(InputError::NoUi))
}

#[cfg(not(feature = "ui"))]
fn pair(_: &Node) -> Result<api::PairLink, NodeError> {
    Err(NodeError::Input(InputError::NoUi))
}

async fn balance(node: &Node) -> Result<BTreeMap<String, api::Balance>, NodeError> {
    let mut rows: BTreeMap<String, api::Balance> = BTreeMap::new();
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
    Ok(rows)
}

pub(crate) async fn history(node: &Node) -> Result<Vec<api::HistoryItem>, NodeError> {
    let mut items: Vec<api::HistoryItem> = Vec::new();
    for s in node.store().sent().await? {
        items.push(api::HistoryItem {
            direction: api::Direction::Sent,
            iou: s.iou.id().to_hex(),
            counterparty: s.iou.payee.to_text(),
            amount: s.iou.amount,
            currency: s.currency,
            memo: s.memo,
            status: s.status,
            reason: s.reason,
            allowance: s.iou.allowance.to_hex(),
            counter: s.iou.counter,
            time: s.created_at,
            settlement: s.settlement.map(crate::actor::settlement_text),
            nonce: s.iou.nonce.to_hex(),
        });
    }
    items.extend(received(node).await?);
    items.sort_by_key(|h| h.time);
    Ok(items)
}

/// The payments received, oldest first as stored.
pub(crate) async fn received(node: &Node) -> Result<Vec<api::HistoryItem>, NodeError> {
    let mut items: Vec<api::HistoryItem> = Vec::new();
    for p in node.store().received().await? {
        items.push(api::HistoryItem {
            direction: api::Direction::Received,
            iou: p.iou.id().to_hex(),
            counterparty: p.payer.to_text(),
            amount: p.iou.amount,
            currency: p.currency,
            memo: p.memo,
            status: SentStatus::Acked,
            reason: None,
            allowance: p.iou.allowance.to_hex(),
            counter: p.iou.counter,
            time: p.received_at,
            settlement: p.settlement,
            nonce: p.iou.nonce.to_hex(),
        });
    }
    Ok(items)
}

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No daemon runs on the home.
    #[error("no meshpay daemon is running on {0} (start one with `meshpay run`)")]
    NoDaemon(String),
    /// The connection failed or the answer is unreadable.
    #[error("the daemon closed the connection without answering")]
    Broken,
    /// The daemon refused or failed the request.
    #[error(transparent)]
    Refused(#[from] ApiError),
}

/// Sends one request to the daemon in `home` and returns its answer.
pub async fn call(home: &Home, request: Request) -> Result<Answer, CallError> {
    let no_daemon = || CallError::NoDaemon(home.dir.display().to_string());
    let token = std::fs::read_to_string(home.token()).map_err(|_| no_daemon())?;
    let stream = UnixStream::connect(home.socket())
        .await
        .map_err(|_| no_daemon())?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(&Envelope {
        token: token.trim().to_owned(),
        request: request.clone(),
    })
    .map_err(|_| CallError::Broken)?;
    line.push(b'\n');
    write
        .write_all(&line)
        .await
        .map_err(|_| CallError::Broken)?;
    let mut answer = String::new();
    // The answer is one line; a history of many payments makes it long, never unbounded.
    BufReader::new(read)
        .take(256 << 20)
        .read_line(&mut answer)
        .await
        .map_err(|_| CallError::Broken)?;
    let v: Value = serde_json::from_str(&answer).map_err(|_| CallError::Broken)?;
    if v["ok"] == Value::Bool(true) {
        Answer::decode(&request, v["data"].clone()).map_err(|_| CallError::Broken)
    } else {
        let e: ApiError = serde_json::from_value(v).map_err(|_| CallError::Broken)?;
        Err(e.into())
    }
}
