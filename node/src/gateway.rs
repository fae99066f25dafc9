//! A gateway round: the node, online, uploads the sealed records that have no decision yet to
//! an issuer's settlement server and brings back what the mesh needs from it — receipts, fraud
//! proofs, revocations. The HTTP runs here, outside the device's task; what comes back goes to
//! the device as commands ([`Command::Receipts`], [`Command::Alerts`]), which check every
//! signature and put what is new into the mesh.

use crate::daemon::{Node, NodeError};
use crate::issuer::{self, IssuerClient, IssuerError};
use meshpay_protocol::bundle::Content;
use meshpay_protocol::device::{Answer, Command};
use meshpay_protocol::{Hash, IssuerId, SealedRecord, SettlementReceipt, decode, encode};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Feed pages a gateway reads per feed and round; the rest waits for the next round.
const MAX_FEED_PAGES: usize = 100;

/// What a gateway round did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct GatewayRound {
    /// Records uploaded.
    pub uploaded: usize,
    /// Final receipts received for them.
    pub receipts: usize,
    /// This wallet's payments whose settlement state changed.
    pub updated: usize,
    /// New fraud proofs and revocations put into the mesh.
    pub alerts: usize,
    /// The payments whose settlement changed.
    #[serde(skip)]
    changed: BTreeSet<Hash>,
}

/// Records the issuer took no decision on: misses so far and the round to try again.
#[derive(Default)]
pub struct Backoff {
    rounds: AtomicU64,
    map: std::sync::Mutex<BTreeMap<Hash, (u32, u64)>>,
}

impl Backoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Hash, (u32, u64)>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes that the issuer took no decision on record `id` in round `round`: it is
    /// uploaded again after 2, 4, then every 8 rounds.
    fn miss(&self, id: Hash, round: u64) {
        const MAX_REMEMBERED: usize = 100_000;
        let mut map = self.lock();
        if map.len() >= MAX_REMEMBERED && !map.contains_key(&id) {
            // Full: forget the entries already due (they would be uploaded anyway); if that
            // frees less than half, start over. One scan per half-filling, not per record.
            map.retain(|_, (_, next)| *next > round);
            if map.len() > MAX_REMEMBERED / 2 {
                map.clear();
            }
        }
        let misses = map.get(&id).map_or(0, |(m, _)| *m) + 1;
        let wait = 1u64 << misses.min(3);
        map.insert(id, (misses, round + wait));
    }

    fn due(&self, records: BTreeMap<Hash, Vec<u8>>, round: u64) -> Vec<(Hash, Vec<u8>)> {
        let map = self.lock();
        records
            .into_iter()
            .filter(|(id, _)| map.get(id).is_none_or(|(_, next)| *next <= round))
            .collect()
    }
}

/// A settlement server feed a gateway brings into the mesh: path, list key, item key, and
/// what an item is as a bundle.
type Feed = (
    &'static str,
    &'static str,
    &'static str,
    fn(&[u8], &IssuerId) -> Option<Content>,
);

impl Node {
    /// Gateway rounds against `url`, every `period`, for as long as the node runs. A round
    /// that cannot reach the server is tried again at the next tick.
    pub async fn gateway_loop(self: Arc<Self>, url: String, period: std::time::Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            match self.sync_issuer(&url).await {
                Ok(r) if r.uploaded + r.alerts + r.updated > 0 => {
                    tracing::info!(url = %url, uploaded = r.uploaded, receipts = r.receipts, alerts = r.alerts, "gateway round");
                }
                Ok(_) => {}
                Err(e) => tracing::info!(url = %url, error = %e, "settlement server not reachable"),
            }
        }
    }

    /// Settles online, as a gateway: uploads the sealed records that have no decision yet
    /// (this wallet's and those the mesh store holds for the issuer at `url`), puts the
    /// issuer's receipts, fraud proofs and revocations into the mesh, and marks this wallet's
    /// payments settled or rejected. The round is remembered as the last gateway contact.
    pub async fn sync_issuer(&self, url: &str) -> Result<GatewayRound, NodeError> {
        let result = self.gateway_round(url).await;
        let contact = crate::api::GatewayContact {
            url: url.to_owned(),
            at: crate::daemon::now(),
            round: result.as_ref().ok().cloned(),
            error: result.as_ref().err().map(ToString::to_string),
        };
        *self
            .last_gateway
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(contact.clone());
        self.notices.publish(crate::api::Notice::Gateway(contact));
        result
    }

    async fn gateway_round(&self, url: &str) -> Result<GatewayRound, NodeError> {
        let client = self.issuer_client(url)?;
        let d = match self.trusted_issuer_at(&client).await {
            Ok(d) => d,
            Err(e) => {
                self.with(|dev| dev.set_gateway_for(Vec::new())).await?;
                return Err(e);
            }
        };
        let issuer = d.body().issuer;
        // This wallet's own records go first and in batches of their own: records carried
        // for strangers cannot crowd them out of a round or share a batch with them.
        let mut own: BTreeMap<Hash, Vec<u8>> = BTreeMap::new();
        for bytes in self.store().undecided_records().await? {
            if let Ok(r) = decode::<SealedRecord>(&bytes) {
                if r.issuer == issuer {
                    own.insert(r.id, bytes);
                }
            }
        }
        let carried: BTreeMap<Hash, Vec<u8>> = self
            .with(move |dev| dev.records_for(&issuer))
            .await?
            .into_iter()
            .filter(|(id, _)| !own.contains_key(id))
            .collect();
        let mut round = self.upload(&client, issuer, own, carried).await?;
        let mut changed = std::mem::take(&mut round.changed);
        changed.extend(self.receipt_feed(&client, issuer).await?);
        round.updated = changed.len();
        round.alerts = self.alert_feeds(&client, issuer).await?;
        self.with(move |dev| dev.set_gateway_for(vec![issuer]))
            .await?;
        Ok(round)
    }

    /// Uploads the records due this round, own first, in batches of at most 1,024, and hands
    /// the decided ones' receipts to the device.
    async fn upload(
        &self,
        client: &IssuerClient,
        issuer: IssuerId,
        own: BTreeMap<Hash, Vec<u8>>,
        carried: BTreeMap<Hash, Vec<u8>>,
    ) -> Result<GatewayRound, NodeError> {
        let backoff = &self.gateway;
        let round_no = backoff.rounds.fetch_add(1, Ordering::Relaxed);
        let (own, carried) = (backoff.due(own, round_no), backoff.due(carried, round_no));
        let mut round = GatewayRound {
            uploaded: own.len() + carried.len(),
            ..GatewayRound::default()
        };
        for chunk in own.chunks(1024).chain(carried.chunks(1024)) {
            let batch = meshpay_protocol::RecordBatch(
                chunk
                    .iter()
                    .map(|(_, b)| meshpay_protocol::codec::Blob(b.clone()))
                    .collect(),
            );
            let bytes = client
                .post_cbor("/v1/settle", encode(&batch), issuer::limits::RECEIPTS)
                .await?;
            let answer: meshpay_protocol::ReceiptBatch =
                decode(&bytes).map_err(|e| IssuerError::Invalid(format!("its receipts: {e}")))?;
            if answer.0.len() != chunk.len() {
                return Err(IssuerError::Invalid(format!(
                    "{} answers to {} records",
                    answer.0.len(),
                    chunk.len()
                ))
                .into());
            }
            let mut decided = Vec::new();
            for ((id, _), r) in chunk.iter().zip(answer.0) {
                match r.filter(|r| {
                    r.body().record == *id && r.verify(&issuer).is_ok() && r.status().is_final()
                }) {
                    Some(r) => {
                        backoff.lock().remove(id);
                        decided.push(r);
                    }
                    // No decision (it did not open, or the issuer deferred it): ask again in
                    // a later round, later each time it stays undecided.
                    None => backoff.miss(*id, round_no),
                }
            }
            let (taken, updated) = self.take_receipts(issuer, decided, true).await?;
            round.receipts += taken;
            round.changed.extend(updated);
        }
        Ok(round)
    }

    /// Reads the issuer's receipt feed (receipts for payments this wallet made, which the
    /// payees uploaded), a page at a time. Returns the payments whose settlement changed.
    async fn receipt_feed(
        &self,
        client: &IssuerClient,
        issuer: IssuerId,
    ) -> Result<Vec<Hash>, NodeError> {
        let mut changed = Vec::new();
        let mut cursor = self.feed_cursor(&issuer, "receipts").await?;
        let mut pages = 0;
        while pages < MAX_FEED_PAGES {
            let Some((items, next)) =
                feed_page(client, "receipts", "receipts", "receipt", cursor).await?
            else {
                break;
            };
            pages += 1;
            let receipts = items
                .iter()
                .filter_map(|b| decode::<SettlementReceipt>(b).ok())
                .collect();
            changed.extend(self.take_receipts(issuer, receipts, false).await?.1);
            cursor = next;
            self.set_feed_cursor(&issuer, "receipts", cursor).await?;
        }
        Ok(changed)
    }

    /// Reads the issuer's fraud-proof and revocation feeds into the mesh. Returns how many
    /// were new to it.
    async fn alert_feeds(
        &self,
        client: &IssuerClient,
        issuer: IssuerId,
    ) -> Result<usize, NodeError> {
        let mut added_all = 0;
        // Fraud proofs and revocations go into the mesh, to travel before anything else.
        // Only the issuer's own: a server cannot use this gateway to put another issuer's
        // alerts into the mesh (the device checks it again).
        let feeds: [Feed; 2] = [
            ("fraud-proofs", "fraud_proofs", "proof", |b, issuer| {
                decode::<meshpay_protocol::FraudProof>(b)
                    .ok()
                    .filter(|p| p.cert.body().issuer == *issuer)
                    .map(|p| Content::Fraud(Box::new(p)))
            }),
            ("revocations", "revocations", "revocation", |b, issuer| {
                decode::<meshpay_protocol::Revocation>(b)
                    .ok()
                    .filter(|r| r.body().issuer == *issuer)
                    .map(Content::Revocation)
            }),
        ];
        for (path, list, item, content_of) in feeds {
            let mut cursor = self.feed_cursor(&issuer, path).await?;
            let mut pages = 0;
            while pages < MAX_FEED_PAGES {
                let Some((items, next)) = feed_page(client, path, list, item, cursor).await? else {
                    break;
                };
                pages += 1;
                let alerts = items
                    .iter()
                    .filter_map(|b| content_of(b, &issuer))
                    .collect();
                match self.command(Command::Alerts { issuer, alerts }).await? {
                    Answer::Alerts { added } => added_all += added,
                    other => return Err(NodeError::OutOfTurn(format!("{other:?}"))),
                }
                cursor = next;
                self.set_feed_cursor(&issuer, path, cursor).await?;
            }
        }
        Ok(added_all)
    }

    /// Hands `issuer`'s receipts to the device: (final receipts taken, payments updated).
    async fn take_receipts(
        &self,
        issuer: IssuerId,
        receipts: Vec<SettlementReceipt>,
        carry: bool,
    ) -> Result<(usize, Vec<Hash>), NodeError> {
        if receipts.is_empty() {
            return Ok((0, Vec::new()));
        }
        match self
            .command(Command::Receipts {
                issuer,
                receipts,
                carry,
            })
            .await?
        {
            Answer::Receipts { taken, updated, .. } => Ok((taken, updated)),
            other => Err(NodeError::OutOfTurn(format!("{other:?}"))),
        }
    }

    async fn feed_cursor(&self, issuer: &IssuerId, path: &str) -> Result<i64, NodeError> {
        Ok(self
            .store()
            .meta(&format!("{path}_cursor:{}", issuer.to_hex()))
            .await?
            .and_then(|b| b.try_into().ok().map(i64::from_be_bytes))
            .unwrap_or(0))
    }

    async fn set_feed_cursor(
        &self,
        issuer: &IssuerId,
        path: &str,
        cursor: i64,
    ) -> Result<(), NodeError> {
        self.store()
            .set_meta(
                &format!("{path}_cursor:{}", issuer.to_hex()),
                &cursor.to_be_bytes(),
            )
            .await?;
        Ok(())
    }
}

/// Reads one page of a settlement server feed after `since`: its items' bytes and the cursor
/// after them, or `None` at the end of the feed.
async fn feed_page(
    client: &IssuerClient,
    path: &str,
    list: &str,
    item: &str,
    since: i64,
) -> Result<Option<(Vec<Vec<u8>>, i64)>, NodeError> {
    let bytes = client
        .get(
            &format!("/v1/{path}?since={since}&limit=1000"),
            issuer::limits::FEED_PAGE,
        )
        .await?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| IssuerError::Invalid(format!("its {path} feed: {e}")))?;
    let items = v[list].as_array().cloned().unwrap_or_default();
    let next = v["next"].as_i64().unwrap_or(since);
    // An empty page, or a cursor that does not move forward, ends the feed: a server cannot
    // keep this node reading for ever.
    if items.is_empty() || next <= since {
        return Ok(None);
    }
    Ok(Some((
        items
            .iter()
            .filter_map(|i| i[item].as_str().and_then(|h| hex::decode(h).ok()))
            .collect(),
        next,
    )))
}
