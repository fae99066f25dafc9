//! The node's driver of the device machine: one task owns the [`Device`] and feeds it link
//! events, control commands and timers; it carries out the device's outputs in order, writing
//! each [`Change`] to SQLite, sled or the restore sentinel before telling the device it is
//! written, sending frames on the links, and logging events.
//!
//! Nothing else touches the device: commands and queries reach it through a channel, and the
//! links' answers come back through another. The wallet database is read directly by queries
//! (history, balance), never written outside this task.

use crate::api::{Alert, AlertKind, Notice};
use crate::config::Sentinel;
use crate::mesh::MeshDisk;
use crate::notices::Notices;
use crate::store::Store;
use meshpay_protocol::device::{
    Answer, Change, Command, CommitError, Device, DeviceError, Event, Learned, Now, OpId, Output,
    ReplyId, RequestId,
};
use meshpay_protocol::message::{Request, Response};
use meshpay_protocol::objects::ReceiptStatus;
use meshpay_protocol::{DeviceKey, PrintableKey};
use meshpay_transports::{LinkEvent, Links, Reply};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Crash points for tests that prove durability (`MESHPAY_FAULT`). Each aborts the process,
/// like a power cut, at the named step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The payer aborts after committing an IOU, before sending it.
    PayerCrashAfterCommit,
    /// The payee aborts after committing a received IOU, before acking it.
    PayeeCrashAfterCommit,
}

impl Fault {
    /// The crash point named by `MESHPAY_FAULT`, if any.
    pub fn from_env() -> Option<Self> {
        match std::env::var("MESHPAY_FAULT").ok()?.as_str() {
            "payer-crash-after-commit" => Some(Fault::PayerCrashAfterCommit),
            "payee-crash-after-commit" => Some(Fault::PayeeCrashAfterCommit),
            _ => None,
        }
    }
}

/// A job for the device's task.
pub enum Msg {
    /// A user's command; the answer goes back on the sender.
    Command(Box<Command>, oneshot::Sender<Result<Answer, DeviceError>>),
    /// Run this on the device (a query, or a setting such as the gateway's issuers).
    With(Box<dyn FnOnce(&mut Device) + Send>),
}

/// The settlement state as the wallet database keeps it: `settled` or `rejected: <reason>`.
pub fn settlement_text(s: ReceiptStatus) -> String {
    match s {
        ReceiptStatus::Settled => "settled".to_owned(),
        ReceiptStatus::Rejected(reason) => format!("rejected: {reason}"),
    }
}

/// The settlement state from its stored text.
pub fn settlement_of(text: &str) -> Option<ReceiptStatus> {
    match text {
        "settled" => Some(ReceiptStatus::Settled),
        t => t
            .strip_prefix("rejected: ")
            .and_then(meshpay_protocol::Reason::from_name)
            .map(ReceiptStatus::Rejected),
    }
}

/// A link's answer to one of the device's requests.
type LinkAnswer = (RequestId, Result<Vec<u8>, String>);

/// The task that owns the device.
pub struct Actor {
    device: Device,
    store: Store,
    disk: Arc<MeshDisk>,
    sentinel: Sentinel,
    links: Links,
    fault: Option<Fault>,
    /// Crash at the next frame out (set by a fault once its write is done).
    crash_at_send: bool,
    jobs: mpsc::Receiver<Msg>,
    answers: (
        mpsc::UnboundedSender<LinkAnswer>,
        mpsc::UnboundedReceiver<LinkAnswer>,
    ),
    ops: BTreeMap<OpId, oneshot::Sender<Result<Answer, DeviceError>>>,
    replies: BTreeMap<ReplyId, Reply>,
    next_id: u64,
    origin: Instant,
    notices: Arc<Notices>,
}

impl Actor {
    /// The driver of `device`, started at `origin` (the device's monotonic clock's zero).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        device: Device,
        store: Store,
        disk: Arc<MeshDisk>,
        sentinel: Sentinel,
        links: Links,
        fault: Option<Fault>,
        jobs: mpsc::Receiver<Msg>,
        origin: Instant,
        notices: Arc<Notices>,
    ) -> Self {
        Self {
            device,
            store,
            disk,
            sentinel,
            links,
            fault,
            crash_at_send: false,
            jobs,
            answers: mpsc::unbounded_channel(),
            ops: BTreeMap::new(),
            replies: BTreeMap::new(),
            next_id: 0,
            origin,
            notices,
        }
    }

    fn now(&self) -> Now {
        Now {
            mono: u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX),
            unix: crate::daemon::now(),
        }
    }

    /// Runs until the links stop.
    pub async fn run(mut self, mut events: mpsc::Receiver<LinkEvent>) {
        loop {
            self.drain().await;
            let deadline = self
                .device
                .poll_timeout()
                .map(|t| self.origin + Duration::from_millis(t));
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_link(ev).await,
                    None => return,
                },
                job = self.jobs.recv() => match job {
                    Some(Msg::Command(cmd, answer)) => {
                        self.next_id += 1;
                        let op = OpId(self.next_id);
                        self.ops.insert(op, answer);
                        let now = self.now();
                        self.device.command(now, op, *cmd);
                    }
                    Some(Msg::With(f)) => f(&mut self.device),
                    None => return,
                },
                Some((id, answer)) = self.answers.1.recv() => {
                    let now = self.now();
                    self.device.handle_response(now, id, answer);
                }
                () = sleep_until(deadline) => {
                    let now = self.now();
                    self.device.handle_timeout(now);
                }
            }
        }
    }

    async fn on_link(&mut self, ev: LinkEvent) {
        let now = self.now();
        match ev {
            LinkEvent::Request { from, frame, reply } => {
                self.next_id += 1;
                let id = ReplyId(self.next_id);
                self.replies.insert(id, reply);
                self.device.handle_request(now, id, from, &frame);
            }
            LinkEvent::PeerConnected(p) => {
                tracing::info!(peer = %p.device.short(), link = p.link.name(), addr = %p.address, "peer connected");
                self.device.peer_up(now, p.device);
                self.notices.publish(Notice::Peers);
            }
            // Another link may still reach it.
            LinkEvent::PeerDisconnected { device }
                if !self.links.peers().await.iter().any(|p| p.device == device) =>
            {
                tracing::info!(peer = %device.short(), "peer disconnected");
                self.device.peer_down(now, device);
                self.notices.publish(Notice::Peers);
            }
            LinkEvent::PeerMisbehaved { device, what } => {
                tracing::warn!(peer = %device.short(), %what, "peer broke the framing rules and was dropped");
                self.misbehaved(&device, &what, now.unix);
            }
            LinkEvent::Listening { address } => tracing::info!(%address, "listening"),
            _ => {}
        }
    }

    /// Carries out the device's outputs, in order, until there are none.
    async fn drain(&mut self) {
        while let Some(out) = self.device.poll_output() {
            match out {
                Output::Commit { id, change } => {
                    let result = self.write(change).await;
                    let now = self.now();
                    self.device.committed(now, id, result);
                }
                Output::Request { id, to, frame } => {
                    if self.crash_at_send && matches!(Request::decode(&frame), Ok(Request::Pay(_)))
                    {
                        std::process::abort();
                    }
                    let links = self.links.clone();
                    let answers = self.answers.0.clone();
                    tokio::spawn(async move {
                        let answer = links.request(&to, frame).await.map_err(|e| e.to_string());
                        let _ = answers.send((id, answer));
                    });
                }
                Output::Reply {
                    to,
                    frame,
                    then_drop,
                } => {
                    if self.crash_at_send
                        && matches!(Response::decode(&frame), Ok(Response::Ack(_)))
                    {
                        std::process::abort();
                    }
                    if let Some(reply) = self.replies.remove(&to) {
                        if then_drop {
                            reply.send_and_drop(frame);
                        } else {
                            reply.send(frame);
                        }
                    }
                }
                Output::Disconnect(peer) => {
                    let links = self.links.clone();
                    tokio::spawn(async move { links.disconnect(&peer).await });
                }
                Output::Event(e) => self.on_event(e),
                _ => {}
            }
        }
    }

    /// Writes one change durably.
    // One arm per change the device can ask to write.
    #[allow(clippy::too_many_lines)]
    async fn write(&mut self, change: Change) -> Result<(), CommitError> {
        let failed = |e: &dyn std::fmt::Display| CommitError {
            committed: false,
            message: e.to_string(),
        };
        let s = &self.store;
        match change {
            Change::Spent {
                spend,
                currency,
                memo,
                key,
                at,
            } => {
                s.commit_spend(&spend, &currency, &memo, key.as_deref(), at)
                    .await
                    .map_err(|e| failed(&e))?;
                let first = spend.next.counter == 1;
                let sentinel = if first {
                    self.sentinel.record_spent(&spend.iou.allowance)
                } else {
                    Ok(())
                }
                .and_then(|()| self.sentinel.write(spend.epoch));
                if let Err(e) = sentinel {
                    return Err(CommitError {
                        committed: true,
                        message: e.to_string(),
                    });
                }
                self.crash_at_send |= self.fault == Some(Fault::PayerCrashAfterCommit);
                Ok(())
            }
            Change::Answered {
                iou,
                status,
                reason,
                ack,
                by,
                at,
            } => s
                .set_sent_outcome(&iou, status, reason.as_deref(), ack.as_ref(), by, at)
                .await
                .map_err(|e| failed(&e)),
            Change::Requested {
                request,
                asked_by,
                at,
            } => s
                .add_request(&request, asked_by.as_ref(), at)
                .await
                .map_err(|e| failed(&e)),
            Change::RequestClosed { nonce, asked_by } => s
                .close_asked_request(&nonce, &asked_by)
                .await
                .map(drop)
                .map_err(|e| failed(&e)),
            Change::RequestsPurged { before } => s
                .purge_requests(before)
                .await
                .map(drop)
                .map_err(|e| failed(&e)),
            Change::Received {
                iou,
                cert,
                request,
                record,
                ack,
                at,
            } => {
                s.commit_received(&iou, &cert, &request, &record, &ack, at)
                    .await
                    .map_err(|e| failed(&e))?;
                self.crash_at_send |= self.fault == Some(Fault::PayeeCrashAfterCommit);
                Ok(())
            }
            Change::Fraud { proof, at } => s
                .add_fraud(&proof, at)
                .await
                .map(drop)
                .map_err(|e| failed(&e)),
            Change::Settled { iou, status } => s
                .set_settlement(&iou, &settlement_text(status))
                .await
                .map(drop)
                .map_err(|e| failed(&e)),
            Change::Trusted { descriptor, at } => {
                s.add_issuer(&descriptor, at).await.map_err(|e| failed(&e))
            }
            Change::Allowance { cert, at } => s
                .add_allowance(&cert, at)
                .await
                .map(drop)
                .map_err(|e| failed(&e)),
            Change::Mesh(w) => self.disk.apply(&w).map_err(|e| {
                tracing::error!(error = %e, "the mesh store could not write to disk");
                failed(&format!("the mesh store could not write to disk: {e}"))
            }),
            Change::HandOver(h) => self.disk.record_handover(&h).map_err(|e| failed(&e)),
            _ => Err(failed(&"a change this node cannot write")),
        }
    }

    fn misbehaved(&self, peer: &DeviceKey, what: &str, at: u64) {
        self.notices.publish(Notice::Alert(Alert {
            kind: AlertKind::Misbehaved,
            at,
            subject: peer.to_text(),
            detail: format!("peer {} was dropped: {what}", peer.short()),
        }));
    }

    #[allow(clippy::too_many_lines)]
    fn on_event(&mut self, e: Event) {
        let at = crate::daemon::now();
        match e {
            Event::Done { op, result } => {
                if let Some(answer) = self.ops.remove(&op) {
                    let _ = answer.send(result);
                }
            }
            Event::Received { from, iou } => {
                tracing::info!(payer = %from.short(), amount = iou.amount, counter = iou.counter, "payment received");
                self.notices.publish(Notice::Received {
                    iou: iou.id().to_hex(),
                    payer: from.to_text(),
                    amount: iou.amount,
                    counter: iou.counter,
                    nonce: iou.nonce.to_hex(),
                    at,
                });
            }
            Event::Refused { from, reason } => {
                tracing::warn!(payer = %from.short(), %reason, "payment refused");
                self.notices.publish(Notice::Refused {
                    payer: from.to_text(),
                    reason: reason.to_string(),
                    at,
                });
            }
            Event::Resent(o) => {
                tracing::info!(iou = %o.iou, status = o.status.name(), "re-sent pending payment");
                self.notices.publish(Notice::Sent(o.into()));
            }
            Event::Learned(Learned::Fraud { allowance, .. }) => {
                tracing::warn!(%allowance, "fraud proof: allowance refused from now on");
                self.notices.publish(Notice::Alert(Alert {
                    kind: AlertKind::Fraud,
                    at,
                    subject: allowance.to_hex(),
                    detail: format!(
                        "fraud proof: allowance {} was spent twice; its payments are refused from now on",
                        allowance.to_hex()
                    ),
                }));
            }
            Event::Learned(Learned::Revoked { allowance }) => {
                tracing::warn!(%allowance, "revocation: allowance refused from now on");
                self.notices.publish(Notice::Alert(Alert {
                    kind: AlertKind::Revoked,
                    at,
                    subject: allowance.to_hex(),
                    detail: format!(
                        "the issuer revoked allowance {}; its payments are refused from now on",
                        allowance.to_hex()
                    ),
                }));
            }
            Event::Settled { iou, status } => {
                tracing::info!(record = %iou, status = %settlement_text(status), "payment settled");
                self.notices.publish(Notice::Settled {
                    iou: iou.to_hex(),
                    status: settlement_text(status),
                });
            }
            Event::Synced { peer, took, gave } if took + gave > 0 => {
                tracing::info!(peer = %peer.short(), took, gave, "synced bundles");
                self.notices.publish(Notice::Synced {
                    peer: peer.to_text(),
                    took,
                    gave,
                });
            }
            Event::SyncFailed { peer, why } => {
                tracing::info!(peer = %peer.short(), error = %why, "sync did not finish");
            }
            Event::Misbehaved { peer, what } => {
                tracing::warn!(peer = %peer.short(), %what, "peer broke the rules; dropping it");
                self.misbehaved(&peer, &what, at);
            }
            Event::WriteFailed { why } => tracing::error!(error = %why, "a write failed"),
            _ => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
