//! Talking to a settlement server the way a wallet, a gateway and the issuer's staff do:
//! admin calls, uploads of sealed records, and a device that makes allowance requests and
//! IOUs with the protocol crate directly.

use crate::SettleServer;
use meshpay_protocol::codec::Blob;
use meshpay_protocol::{
    AllowanceCert, DeviceSecret, Hash, Iou, IouDraft, IssuerDescriptor, Nonce, ReceiptBatch,
    ReceiptStatus, RecordBatch, SealedRecord, WalletAction, WalletRequest, decode, encode,
};
use serde_json::Value;

/// Wall-clock seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Sixteen random bytes.
pub fn rand16() -> [u8; 16] {
    use rand_core::RngCore as _;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

/// The issuer descriptor of a server.
pub fn descriptor(s: &SettleServer) -> IssuerDescriptor {
    decode(&std::fs::read(s.descriptor()).expect("descriptor file")).expect("a descriptor")
}

/// The issuer's staff: admin calls with the bearer token.
pub struct Admin {
    /// The server's base URL.
    pub url: String,
    /// The admin token.
    pub token: String,
    /// The HTTP client.
    pub http: reqwest::Client,
}

impl Admin {
    /// The admin of `s`, with the client `http`.
    pub fn of(s: &SettleServer, http: &reqwest::Client) -> Self {
        Self {
            url: s.url.clone(),
            token: s.token.clone(),
            http: http.clone(),
        }
    }

    /// `POST path` with a JSON body: the status and the JSON answer.
    pub async fn try_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("the server answers");
        let status = r.status().as_u16();
        let bytes = r.bytes().await.expect("a body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `POST path`, which must succeed.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.try_post(path, &body).await;
        assert!((200..300).contains(&status), "{path}: {status} {v}");
        v
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("the server answers");
        serde_json::from_slice(&r.bytes().await.expect("a body")).expect("JSON")
    }

    /// Opens an account for `device` and credits it.
    pub async fn account(&self, device: &str, credit: u64) {
        self.post("/admin/accounts", serde_json::json!({"device": device}))
            .await;
        if credit > 0 {
            self.post(
                &format!("/admin/accounts/{device}/credit"),
                serde_json::json!({"amount": credit, "reference": "test"}),
            )
            .await;
        }
    }

    /// Conservation: users + escrow == everything credited, and every balance sums to zero.
    pub async fn conserved(&self, credited: i64) -> Value {
        let r = self.get("/admin/reconciliation").await;
        assert_eq!(r["conserved"], true, "{r}");
        assert_eq!(r["totals"]["credited_net"], credited, "{r}");
        r
    }
}

/// Uploads `records` as one CBOR batch: the status of each answer (`None`: no decision).
pub async fn upload(
    http: &reqwest::Client,
    url: &str,
    records: &[Vec<u8>],
) -> Vec<Option<ReceiptStatus>> {
    let (status, answers) = try_upload(http, url, records).await;
    assert_eq!(status, 200, "the upload failed");
    answers
}

/// Uploads `records` as one CBOR batch: the HTTP status (0 if the connection broke) and, on
/// success, each answer.
pub async fn try_upload(
    http: &reqwest::Client,
    url: &str,
    records: &[Vec<u8>],
) -> (u16, Vec<Option<ReceiptStatus>>) {
    let body = encode(&RecordBatch(records.iter().cloned().map(Blob).collect()));
    let Ok(r) = http
        .post(format!("{url}/v1/settle"))
        .header("content-type", "application/cbor")
        .body(body)
        .send()
        .await
    else {
        // The connection broke before an answer: status 0.
        return (0, Vec::new());
    };
    let status = r.status().as_u16();
    if status != 200 {
        return (status, Vec::new());
    }
    let batch: ReceiptBatch = decode(&r.bytes().await.expect("a body")).expect("a receipt batch");
    (
        status,
        batch
            .0
            .iter()
            .map(|r| r.as_ref().map(meshpay_protocol::SettlementReceipt::status))
            .collect(),
    )
}

/// A device that talks to the server directly with the protocol crate.
pub struct Device {
    /// Its key.
    pub key: DeviceSecret,
}

impl Device {
    /// A device from a fixed seed.
    pub fn seeded(seed: u8) -> Self {
        Self {
            key: DeviceSecret::from_seed(&[seed; 32]),
        }
    }

    /// The signed request for an allowance of `amount`.
    pub fn allowance_request(&self, issuer: &IssuerDescriptor, amount: u64) -> WalletRequest {
        WalletRequest::sign(
            &self.key,
            issuer.body().issuer,
            WalletAction::Allowance {
                amount,
                valid_secs: 3600,
            },
            "KES",
            now(),
            Nonce(rand16()),
        )
    }

    /// Gets an allowance of `amount` (which must succeed).
    pub async fn allowance(
        &self,
        http: &reqwest::Client,
        s: &SettleServer,
        issuer: &IssuerDescriptor,
        amount: u64,
    ) -> AllowanceCert {
        let req = self.allowance_request(issuer, amount);
        let r = http
            .post(format!("{}/v1/allowances", s.url))
            .header("content-type", "application/cbor")
            .body(encode(&req))
            .send()
            .await
            .expect("the server answers");
        assert!(r.status().is_success(), "{}", r.status());
        decode(&r.bytes().await.expect("a body")).expect("a certificate")
    }

    /// An IOU under `cert` (chain links are not kept: the server does not check them).
    pub fn iou(
        &self,
        cert: &AllowanceCert,
        counter: u32,
        amount: u64,
        total: u64,
        payee: &DeviceSecret,
        time: u64,
    ) -> Iou {
        IouDraft {
            allowance: cert.id(),
            counter,
            amount,
            total,
            prev: if counter == 1 {
                Hash::default()
            } else {
                Hash([1; 32])
            },
            payee: payee.public(),
            nonce: Nonce(rand16()),
            time,
        }
        .sign(&self.key)
    }
}

/// `iou` sealed to the issuer, encoded.
pub fn seal(iou: &Iou, issuer: &IssuerDescriptor) -> Vec<u8> {
    encode(
        &SealedRecord::seal(
            iou,
            issuer.body().issuer,
            &issuer.body().seal_key,
            now(),
            now() + 86_400,
            &mut rand_core::OsRng,
        )
        .expect("seals"),
    )
}

/// Forged records: random ciphertext under the issuer's id, `created = 0` and a far expiry,
/// as a stranger with no allowance can make them.
pub fn forged_records(issuer: &IssuerDescriptor, n: usize) -> Vec<Vec<u8>> {
    use rand_core::RngCore as _;
    (0..n)
        .map(|_| {
            let mut id = [0u8; 32];
            let mut enc = [0u8; 32];
            let mut ct = vec![0u8; 140];
            rand_core::OsRng.fill_bytes(&mut id);
            rand_core::OsRng.fill_bytes(&mut enc);
            rand_core::OsRng.fill_bytes(&mut ct);
            encode(&SealedRecord {
                version: 1,
                id: Hash(id),
                issuer: issuer.body().issuer,
                created: 0,
                expires: now() + 365 * 86_400,
                enc: meshpay_protocol::record::EncapsulatedKey(enc),
                ciphertext: Blob(ct),
            })
        })
        .collect()
}

/// Forged records that open: IOUs sealed to the issuer's public seal key (anyone can seal
/// to it), half signed by a stranger under the genuine allowance `cert` (a bad signature),
/// half under an allowance id the issuer never issued.
pub fn opening_forgeries(
    issuer: &IssuerDescriptor,
    cert: &AllowanceCert,
    payee: &DeviceSecret,
    n: usize,
) -> Vec<Vec<u8>> {
    let stranger = DeviceSecret::generate(&mut rand_core::OsRng);
    (0..n)
        .map(|i| {
            let allowance = if i % 2 == 0 {
                cert.id()
            } else {
                meshpay_protocol::AllowanceId(rand16())
            };
            let iou = IouDraft {
                allowance,
                counter: u32::try_from(i + 1).unwrap_or(u32::MAX),
                amount: 1,
                total: 1,
                prev: Hash::default(),
                payee: payee.public(),
                nonce: Nonce(rand16()),
                time: now(),
            }
            .sign(&stranger);
            seal(&iou, issuer)
        })
        .collect()
}

/// The database a settlement server runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// A SQLite file in the issuer's directory.
    Sqlite,
    /// A throwaway PostgreSQL cluster started for the test.
    Postgres,
}

/// A settlement server in `root/issuer` on `backend`, with the PostgreSQL cluster it needs
/// kept alive; `None` (saying SKIPPED and why) where PostgreSQL cannot run here.
pub fn server_on(
    root: &std::path::Path,
    backend: Backend,
    options: crate::ServerOptions,
) -> Option<(SettleServer, Option<crate::Postgres>)> {
    match backend {
        Backend::Sqlite => Some((
            SettleServer::with_options(root, "issuer", None, options),
            None,
        )),
        Backend::Postgres => match crate::Postgres::start() {
            Ok(pg) => {
                let url = pg.database("meshpay");
                Some((
                    SettleServer::with_options(root, "issuer", Some(&url), options),
                    Some(pg),
                ))
            }
            Err(e) => {
                eprintln!("SKIPPED on PostgreSQL: {e}");
                None
            }
        },
    }
}

/// Two tests from one scenario `async fn(Backend)`: one on SQLite, one on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($scenario:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $scenario($crate::issuer_api::Backend::Sqlite).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            $scenario($crate::issuer_api::Backend::Postgres).await;
        }
    };
}

/// A holder with an account and an allowance, and a payee with an account, at one server.
pub struct Funded {
    /// The issuer's staff.
    pub admin: Admin,
    /// The issuer's descriptor.
    pub issuer: IssuerDescriptor,
    /// The allowance holder.
    pub holder: Device,
    /// The payee.
    pub payee: DeviceSecret,
    /// The holder's allowance.
    pub cert: AllowanceCert,
}

/// Opens accounts for a holder (device `seed`, credited `credit`) and a payee (device
/// `seed + 1`), and gets the holder an allowance of `allowance`.
pub async fn funded(
    server: &SettleServer,
    http: &reqwest::Client,
    seed: u8,
    credit: u64,
    allowance: u64,
) -> Funded {
    use meshpay_protocol::PrintableKey as _;
    let admin = Admin::of(server, http);
    let issuer = descriptor(server);
    let holder = Device::seeded(seed);
    let payee = DeviceSecret::from_seed(&[seed.wrapping_add(1); 32]);
    admin.account(&holder.key.public().to_text(), credit).await;
    admin.account(&payee.public().to_text(), 0).await;
    let cert = holder.allowance(http, server, &issuer, allowance).await;
    Funded {
        admin,
        issuer,
        holder,
        payee,
        cert,
    }
}
