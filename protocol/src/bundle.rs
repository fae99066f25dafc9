//! Bundles: what the mesh carries hand to hand (DESIGN "Store-and-forward").
//!
//! A bundle is an envelope `[version, kind, body]` around one signed or sealed object. Its
//! metadata (id, kind, issuer, creation time, expiry, size, and the record it is *about*) is
//! derived from the body, never sent beside it, so a carrier cannot change it without changing
//! the bundle's id.
//!
//! | kind | body | created | expires | check a carrier can do |
//! |---|---|---|---|---|
//! | 1 record | [`SealedRecord`] | header `created` | header `expires` | header sanity only (sealed) |
//! | 2 receipt | final [`SettlementReceipt`] | `decided_at` | `decided_at` + [`RECEIPT_TTL`] | issuer signature |
//! | 3 notice | [`CertifiedNotice`] | certificate `valid_from` | certificate `settle_by` | issuer and holder signatures |
//! | 4 fraud proof | [`FraudProof`] | certificate `valid_from` | certificate `settle_by` + [`RECEIPT_TTL`] | full proof |
//! | 5 revocation | [`Revocation`] | `revoked_at` | `revoked_at` + [`REVOCATION_TTL`] | issuer signature |
//! | 6 descriptor | [`IssuerDescriptor`] | `valid_from` | `valid_until` | self-signature |
//! | 7 message | [`PlainMessage`]: simulation traffic, refused by nodes | `created` | `expires` | none |
//!
//! The bundle id is `SHA-256("meshpay/v1/bundle" ‖ 0x00 ‖ encoding)`: two carriers holding the
//! same bytes hold the same bundle, and a forged copy of a record's header with other
//! ciphertext is a different bundle that cannot shadow the genuine one.

use crate::codec::{self, Blob, DecodeError, VERSION, Wire, check_version};
use crate::iou::{FraudProof, SpendNotice};
use crate::keys::{DeviceKey, IssuerId};
use crate::objects::{
    AllowanceCert, Hash, IssuerDescriptor, Revocation, SettlementReceipt, UnixTime, hash,
};
use crate::record::SealedRecord;
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

/// How long a receipt travels after the issuer decided, in seconds (30 days).
pub const RECEIPT_TTL: u64 = 30 * 86_400;
/// How long a revocation travels, in seconds (90 days).
pub const REVOCATION_TTL: u64 = 90 * 86_400;
/// Largest bundle encoding, in bytes.
pub const MAX_BUNDLE: usize = 1024;

/// Domain tag of bundle ids.
pub const BUNDLE_ID_TAG: &str = "meshpay/v1/bundle";

/// The kind of a bundle, in the order the mesh forwards them (most urgent first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum BundleKind {
    /// A fraud proof: a forked allowance.
    Fraud,
    /// An issuer's revocation of an allowance.
    Revocation,
    /// An issuer's receipt for a record.
    Receipt,
    /// A spend notice with its allowance certificate.
    Notice,
    /// An issuer descriptor.
    Descriptor,
    /// A sealed settlement record.
    Record,
    /// A plain unicast message (simulation traffic for comparisons with DTN studies).
    Message,
}

impl BundleKind {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            BundleKind::Record => 1,
            BundleKind::Receipt => 2,
            BundleKind::Notice => 3,
            BundleKind::Fraud => 4,
            BundleKind::Revocation => 5,
            BundleKind::Descriptor => 6,
            BundleKind::Message => 7,
        }
    }

    /// From a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => BundleKind::Record,
            2 => BundleKind::Receipt,
            3 => BundleKind::Notice,
            4 => BundleKind::Fraud,
            5 => BundleKind::Revocation,
            6 => BundleKind::Descriptor,
            7 => BundleKind::Message,
            _ => return None,
        })
    }

    /// Forwarding class: 0 for the urgent kinds (fraud proofs, revocations, receipts), which
    /// go before everything else; 1 for the rest, which go oldest first.
    pub fn class(self) -> u8 {
        match self {
            BundleKind::Fraud | BundleKind::Revocation | BundleKind::Receipt => 0,
            _ => 1,
        }
    }

    /// Lower-case name, for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            BundleKind::Record => "record",
            BundleKind::Receipt => "receipt",
            BundleKind::Notice => "notice",
            BundleKind::Fraud => "fraud_proof",
            BundleKind::Revocation => "revocation",
            BundleKind::Descriptor => "descriptor",
            BundleKind::Message => "message",
        }
    }
}

/// A spend notice with the certificate that names its holder, so that any carrier can check
/// it and spot a fork.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct CertifiedNotice {
    /// Format version.
    pub version: u8,
    /// The allowance certificate.
    pub cert: AllowanceCert,
    /// The notice.
    pub notice: SpendNotice,
}

impl Wire for CertifiedNotice {
    const KIND: &'static str = "certified spend notice";
    const MAX_SIZE: usize = 448;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        crate::objects::Body::check(self.cert.body())?;
        self.notice.check()?;
        if self.notice.allowance != self.cert.id() {
            return Err(DecodeError::InvalidField {
                kind: Self::KIND,
                field: "notice is for another allowance",
            });
        }
        Ok(())
    }
}

/// A plain unicast message from one device to another: the traffic of classic DTN studies,
/// which the simulator carries through the same sync machine. Unsigned; nodes do not carry
/// it ([`crate::store::StoreConfig::accept_messages`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct PlainMessage {
    /// Format version.
    pub version: u8,
    /// Sender.
    pub from: DeviceKey,
    /// Destination.
    pub to: DeviceKey,
    /// Creation time.
    pub created: UnixTime,
    /// Carriers drop it after this time.
    pub expires: UnixTime,
    /// Content, at most 900 bytes.
    pub payload: Blob,
}

impl Wire for PlainMessage {
    const KIND: &'static str = "plain message";
    const MAX_SIZE: usize = 1000;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        if self.payload.0.len() > 900 || self.created > self.expires {
            return Err(DecodeError::InvalidField {
                kind: Self::KIND,
                field: "payload over 900 bytes, or created after expiry",
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
struct Envelope {
    version: u8,
    kind: u8,
    body: Blob,
}

impl Wire for Envelope {
    const KIND: &'static str = "bundle";
    const MAX_SIZE: usize = MAX_BUNDLE;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        if BundleKind::from_code(self.kind).is_none() {
            return Err(DecodeError::InvalidField {
                kind: Self::KIND,
                field: "unknown bundle kind",
            });
        }
        Ok(())
    }
}

/// A bundle's content, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Content {
    /// A sealed settlement record.
    Record(SealedRecord),
    /// A settlement receipt.
    Receipt(SettlementReceipt),
    /// A spend notice.
    Notice(Box<CertifiedNotice>),
    /// A fraud proof.
    Fraud(Box<FraudProof>),
    /// A revocation.
    Revocation(Revocation),
    /// An issuer descriptor.
    Descriptor(Box<IssuerDescriptor>),
    /// A plain message.
    Message(Box<PlainMessage>),
}

/// What anyone can tell about a bundle without opening it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Bundle id.
    pub id: Hash,
    /// Kind.
    pub kind: BundleKind,
    /// The issuer it concerns.
    pub issuer: IssuerId,
    /// Creation time.
    pub created: UnixTime,
    /// Carriers drop it after this time.
    pub expires: UnixTime,
    /// Encoded size in bytes.
    pub size: u32,
    /// The settlement record it is about: the record's own id for a record, the receipted
    /// record for a receipt. A final receipt purges every bundle with the same subject.
    pub subject: Option<Hash>,
    /// The addressee, for a plain message (sent in clear).
    pub to: Option<crate::keys::DeviceKey>,
}

/// A decoded bundle: its content, its bytes and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    content: Content,
    bytes: Vec<u8>,
    meta: Meta,
}

/// Why a bundle was refused at the door.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The bytes are not a bundle.
    #[error("not a bundle: {0}")]
    Decode(#[from] DecodeError),
    /// A signature in it does not verify.
    #[error("{0} carries a signature that does not verify")]
    BadSignature(&'static str),
    /// A receipt that is not final does not travel.
    #[error("a provisional receipt does not travel in the mesh")]
    ProvisionalReceipt,
    /// Past its expiry.
    #[error("the bundle expired")]
    Expired,
    /// A plain message, and this store does not carry them.
    #[error("plain messages are simulation traffic; this node does not carry them")]
    PlainMessage,
}

impl Bundle {
    /// Wraps a content.
    pub fn new(content: Content) -> Self {
        let (kind, body) = match &content {
            Content::Record(r) => (BundleKind::Record, codec::encode(r)),
            Content::Receipt(r) => (BundleKind::Receipt, codec::encode(r)),
            Content::Notice(n) => (BundleKind::Notice, codec::encode(n.as_ref())),
            Content::Fraud(f) => (BundleKind::Fraud, codec::encode(f.as_ref())),
            Content::Revocation(r) => (BundleKind::Revocation, codec::encode(r)),
            Content::Descriptor(d) => (BundleKind::Descriptor, codec::encode(d.as_ref())),
            Content::Message(m) => (BundleKind::Message, codec::encode(m.as_ref())),
        };
        let bytes = codec::encode(&Envelope {
            version: VERSION,
            kind: kind.code(),
            body: Blob(body),
        });
        let meta = meta_of(&content, kind, &bytes, bundle_id(&bytes));
        Self {
            content,
            bytes,
            meta,
        }
    }

    /// A notice bundle.
    pub fn notice(cert: AllowanceCert, notice: SpendNotice) -> Self {
        Self::new(Content::Notice(Box::new(CertifiedNotice {
            version: VERSION,
            cert,
            notice,
        })))
    }

    /// Decodes a bundle (shape and field rules only; see [`Bundle::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_as(bytes, bundle_id(bytes))
    }

    /// [`Bundle::decode`] of bytes whose bundle id (`bundle_id(bytes)`) the caller has.
    pub(crate) fn decode_as(bytes: &[u8], id: Hash) -> Result<Self, DecodeError> {
        let env: Envelope = codec::decode(bytes)?;
        let kind = BundleKind::from_code(env.kind).expect("checked at decode");
        let body = &env.body.0;
        let content = match kind {
            BundleKind::Record => Content::Record(codec::decode(body)?),
            BundleKind::Receipt => Content::Receipt(codec::decode(body)?),
            BundleKind::Notice => Content::Notice(Box::new(codec::decode(body)?)),
            BundleKind::Fraud => Content::Fraud(Box::new(codec::decode(body)?)),
            BundleKind::Revocation => Content::Revocation(codec::decode(body)?),
            BundleKind::Descriptor => Content::Descriptor(Box::new(codec::decode(body)?)),
            BundleKind::Message => Content::Message(Box::new(codec::decode(body)?)),
        };
        let meta = meta_of(&content, kind, bytes, id);
        Ok(Self {
            content,
            bytes: bytes.to_vec(),
            meta,
        })
    }

    /// Checks everything a carrier can check at time `now`: every signature it can verify
    /// with the keys inside (issuer ids are public keys), that a receipt is final, and expiry.
    pub fn verify(&self, now: UnixTime) -> Result<(), BundleError> {
        if self.meta.expires < now {
            return Err(BundleError::Expired);
        }
        match &self.content {
            // Sealed or unsigned: nothing a carrier can check beyond the shape.
            Content::Record(_) | Content::Message(_) => Ok(()),
            Content::Receipt(r) => {
                r.verify(&r.body().issuer)
                    .map_err(|_| BundleError::BadSignature("receipt"))?;
                if r.status().is_final() {
                    Ok(())
                } else {
                    Err(BundleError::ProvisionalReceipt)
                }
            }
            Content::Notice(n) => {
                n.cert
                    .verify()
                    .map_err(|_| BundleError::BadSignature("allowance certificate"))?;
                n.notice
                    .verify(&n.cert.body().holder)
                    .map_err(|_| BundleError::BadSignature("spend notice"))
            }
            Content::Fraud(f) => f
                .verify(&f.cert.body().issuer)
                .map_err(|_| BundleError::BadSignature("fraud proof")),
            Content::Revocation(r) => r
                .verify(&r.body().issuer)
                .map_err(|_| BundleError::BadSignature("revocation")),
            Content::Descriptor(d) => d
                .verify()
                .map_err(|_| BundleError::BadSignature("issuer descriptor")),
        }
    }

    /// The content.
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// The encoding.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The metadata.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The bundle id.
    pub fn id(&self) -> Hash {
        self.meta.id
    }
}

/// The kind an encoding declares, if it reads as a bundle envelope (its body unchecked).
pub(crate) fn kind_of(bytes: &[u8]) -> Option<BundleKind> {
    codec::decode::<Envelope>(bytes)
        .ok()
        .and_then(|env| BundleKind::from_code(env.kind))
}

/// The bundle id of an encoding.
pub fn bundle_id(bytes: &[u8]) -> Hash {
    hash(BUNDLE_ID_TAG, bytes)
}

/// First bytes of a bundle file (sneakernet export): `"MESHPAY-BUNDLES"`, then format 1.
pub const FILE_MAGIC: &[u8; 16] = b"MESHPAY-BUNDLES\x01";
/// Largest bundle file, in bytes (64 MiB).
pub const MAX_FILE: usize = 64 << 20;

/// Why a bundle file was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Over [`MAX_FILE`].
    #[error("the file is {0} bytes, over the limit of 64 MiB for a bundle file")]
    TooLarge(usize),
    /// It does not start with [`FILE_MAGIC`].
    #[error("not a meshpay bundle file (wrong header)")]
    NotBundleFile,
    /// A length prefix runs past the end or over [`MAX_BUNDLE`].
    #[error("the bundle file is corrupted at byte {0}")]
    Corrupted(usize),
}

/// Writes a bundle file: [`FILE_MAGIC`], then each bundle as a 4-byte big-endian length and
/// its encoding.
pub fn pack_file<'a>(bundles: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = FILE_MAGIC.to_vec();
    for b in bundles {
        out.extend_from_slice(
            &u32::try_from(b.len())
                .expect("bundles are small")
                .to_be_bytes(),
        );
        out.extend_from_slice(b);
    }
    out
}

/// Splits a bundle file into bundle encodings, refusing the whole file if its framing is
/// broken. The bundles themselves still go through the store's admission.
pub fn unpack_file(file: &[u8]) -> Result<Vec<&[u8]>, FileError> {
    if file.len() > MAX_FILE {
        return Err(FileError::TooLarge(file.len()));
    }
    let Some(mut rest) = file.strip_prefix(FILE_MAGIC.as_slice()) else {
        return Err(FileError::NotBundleFile);
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let at = file.len() - rest.len();
        if rest.len() < 4 {
            return Err(FileError::Corrupted(at));
        }
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_BUNDLE || rest.len() - 4 < len {
            return Err(FileError::Corrupted(at));
        }
        out.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    Ok(out)
}

fn meta_of(content: &Content, kind: BundleKind, bytes: &[u8], id: Hash) -> Meta {
    let (issuer, created, expires, subject) = match content {
        Content::Record(r) => (r.issuer, r.created, r.expires, Some(r.id)),
        Content::Receipt(r) => {
            let b = r.body();
            (
                b.issuer,
                b.decided_at,
                b.decided_at.saturating_add(RECEIPT_TTL),
                Some(b.record),
            )
        }
        Content::Notice(n) => {
            let c = n.cert.body();
            (c.issuer, c.valid_from, c.settle_by, None)
        }
        Content::Fraud(f) => {
            let c = f.cert.body();
            (
                c.issuer,
                c.valid_from,
                c.settle_by.saturating_add(RECEIPT_TTL),
                None,
            )
        }
        Content::Revocation(r) => {
            let b = r.body();
            (
                b.issuer,
                b.revoked_at,
                b.revoked_at.saturating_add(REVOCATION_TTL),
                None,
            )
        }
        Content::Descriptor(d) => {
            let b = d.body();
            (b.issuer, b.valid_from, b.valid_until, None)
        }
        // No issuer: the all-zero id.
        Content::Message(m) => (IssuerId([0; 32]), m.created, m.expires, None),
    };
    Meta {
        id,
        kind,
        issuer,
        created,
        expires,
        size: u32::try_from(bytes.len()).expect("bundles are at most 1 KiB"),
        subject,
        to: match content {
            Content::Message(m) => Some(m.to),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReceiptStatus;
    use crate::objects::Reason;
    use crate::testkit::{T0, allowance, device, issuer, pay, request, sealed, wallet};

    #[test]
    fn every_kind_round_trips_and_verifies() {
        let iss = issuer();
        let alice = device(1);
        let cert = allowance(&iss, 1, &alice, 1000);
        let iou = pay(
            &mut wallet([cert.clone()]),
            &alice,
            &request(&device(2), 10, 1),
        );
        let rec = sealed(&iss, &iou);
        let bundles = [
            Bundle::new(Content::Record(rec.clone())),
            Bundle::new(Content::Receipt(SettlementReceipt::issue(
                &iss,
                rec.id,
                ReceiptStatus::Settled,
                T0,
            ))),
            Bundle::notice(cert.clone(), iou.notice()),
        ];
        for b in bundles {
            let back = Bundle::decode(b.bytes()).expect("decodes");
            assert_eq!(back, b);
            assert_eq!(back.verify(T0), Ok(()));
            assert!(b.bytes().len() <= MAX_BUNDLE);
        }
        let provisional = Bundle::new(Content::Receipt(SettlementReceipt::issue(
            &iss,
            rec.id,
            ReceiptStatus::Rejected(Reason::Malformed),
            T0,
        )));
        assert_eq!(provisional.verify(T0), Err(BundleError::ProvisionalReceipt));
        let r = Bundle::new(Content::Record(rec));
        assert_eq!(r.verify(r.meta().expires + 1), Err(BundleError::Expired));
    }

    #[test]
    fn bundle_files_round_trip_and_broken_ones_are_refused() {
        let a = vec![1u8; 10];
        let b = vec![2u8; 300];
        let file = pack_file([a.as_slice(), b.as_slice()]);
        assert_eq!(unpack_file(&file), Ok(vec![a.as_slice(), b.as_slice()]));
        assert_eq!(
            unpack_file(&file[..file.len() - 1]),
            Err(FileError::Corrupted(30))
        );
        assert_eq!(unpack_file(b"hello"), Err(FileError::NotBundleFile));
        let mut huge = FILE_MAGIC.to_vec();
        huge.extend_from_slice(&5000u32.to_be_bytes());
        huge.extend_from_slice(&[0; 5000]);
        assert_eq!(unpack_file(&huge), Err(FileError::Corrupted(16)));
    }

    #[test]
    fn a_forged_notice_is_refused() {
        let iss = issuer();
        let alice = device(1);
        let cert = allowance(&iss, 1, &alice, 1000);
        let iou = pay(
            &mut wallet([cert.clone()]),
            &alice,
            &request(&device(2), 10, 1),
        );
        let mut notice = iou.notice();
        notice.digest.0[0] ^= 1;
        let b = Bundle::notice(cert, notice);
        assert_eq!(b.verify(T0), Err(BundleError::BadSignature("spend notice")));
    }
}
