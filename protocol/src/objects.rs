//! The signed objects issuers and payees produce, and the payment request.
//!
//! Every signed object here is a two-element array `[body, signature]`; the signature is over
//! `tag || 0x00 || encode(body)` with the tag of [`Body::TAG`]. The IOU and the spend notice
//! are signed differently (see [`crate::iou`]) so that a notice can be cut from an IOU
//! without a second signature.

use crate::codec::{self, DecodeError, VERSION, Wire, byte_newtype, check_version};
use crate::keys::{
    BadSignature, DeviceKey, DeviceSecret, IssuerId, IssuerSecret, SealKey, Signature,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_tuple::{Deserialize_tuple, Serialize_tuple};
use sha2::{Digest as _, Sha256};

/// Seconds since the Unix epoch (UTC). Wall-clock time is always an explicit input.
pub type UnixTime = u64;

/// An amount in the currency's minor units (cents, …).
pub type Amount = u64;

/// The largest amount anything may carry: 2^53 − 1 minor units (SPEC.md §1.2).
///
/// Every amount, limit, running total and maximum on the wire is at most this; decoders refuse
/// larger values. It keeps every sum an issuer forms from any 1,024 of them inside a signed
/// 64-bit integer (the settlement database's), and every amount exact as a JSON number in any
/// language (IEEE-754 doubles hold integers up to 2^53 exactly).
pub const MAX_AMOUNT: Amount = (1 << 53) - 1;

/// Whether `amount` is within [`MAX_AMOUNT`].
pub fn amount_in_range(amount: Amount) -> bool {
    amount <= MAX_AMOUNT
}

byte_newtype!(
    /// Identifies an allowance; chosen at random by the issuer.
    AllowanceId,
    16
);
byte_newtype!(
    /// A payment request's nonce; chosen at random by the payee.
    Nonce,
    16
);
byte_newtype!(
    /// SHA-256 of something, under a domain tag.
    Hash,
    32
);

macro_rules! hex_display {
    ($($t:ty),*) => {$(
        impl core::fmt::Display for $t {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    )*};
}
hex_display!(AllowanceId, Nonce, Hash);

/// SHA-256 of `tag || 0 || bytes`.
pub(crate) fn hash(tag: &str, bytes: &[u8]) -> Hash {
    Hash(Sha256::digest(codec::tagged(tag, bytes)).into())
}

/// Signature and hash domain tags (SPEC.md §3), re-exported from [`crate::tags`].
pub use crate::tags;

/// Checks a currency code: 1 to 12 characters of `A-Z`, `0-9` and `-` (ISO 4217 codes, or an
/// issuer's own unit).
pub fn valid_currency(code: &str) -> bool {
    (1..=12).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
}

/// The body of a signed object.
pub trait Body: Serialize + DeserializeOwned + Clone {
    /// Signature domain tag.
    const TAG: &'static str;
    /// Human name of the object type.
    const KIND: &'static str;
    /// Largest encoding of the whole signed object.
    const MAX_SIZE: usize;
    /// Field checks beyond the schema.
    fn check(&self) -> Result<(), DecodeError>;
}

/// A body and a signature over it: `[body, signature]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<B>(B, Signature);

impl<B: Body> Signed<B> {
    /// The signed content.
    pub fn body(&self) -> &B {
        &self.0
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.1
    }

    /// Exactly the bytes the signature covers, after the tag.
    pub fn signed_bytes(&self) -> Vec<u8> {
        codec::encode(&self.0)
    }

    /// Checks the signature against `key` (strict Ed25519).
    pub fn verify_by(&self, key: &[u8; 32]) -> Result<(), BadSignature> {
        crate::keys::verify(key, B::TAG, &self.signed_bytes(), &self.1)
    }

    pub(crate) fn by_device(body: B, key: &DeviceSecret) -> Self {
        let sig = key.sign(B::TAG, &codec::encode(&body));
        Self(body, sig)
    }

    pub(crate) fn by_issuer(body: B, key: &IssuerSecret) -> Self {
        let sig = key.sign(B::TAG, &codec::encode(&body));
        Self(body, sig)
    }

    /// Reassembles a signed object from its parts (for tests and tools; nothing is checked).
    pub fn from_parts(body: B, sig: Signature) -> Self {
        Self(body, sig)
    }
}

impl<B: Body> Wire for Signed<B> {
    const KIND: &'static str = B::KIND;
    const MAX_SIZE: usize = B::MAX_SIZE;
    fn check(&self) -> Result<(), DecodeError> {
        self.0.check()
    }
}

fn invalid(kind: &'static str, field: &'static str) -> DecodeError {
    DecodeError::InvalidField { kind, field }
}

// ---------------------------------------------------------------------------------------------
// Issuer descriptor

/// What an issuer publishes about itself, self-signed with its issuer key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct DescriptorBody {
    /// Format version.
    pub version: u8,
    /// The issuer's signing key, which is its id.
    pub issuer: IssuerId,
    /// The key settlement records are sealed to.
    pub seal_key: SealKey,
    /// Display name, at most 64 bytes of UTF-8.
    pub name: String,
    /// Currencies it issues allowances in (1 to 8).
    pub currencies: Vec<String>,
    /// Settlement server URLs (0 to 4, each at most 200 bytes).
    pub urls: Vec<String>,
    /// Start of validity.
    pub valid_from: UnixTime,
    /// End of validity.
    pub valid_until: UnixTime,
    /// Largest allowance it grants.
    pub max_allowance: Amount,
    /// Largest single payment it settles.
    pub max_payment: Amount,
}

/// An issuer descriptor.
pub type IssuerDescriptor = Signed<DescriptorBody>;

impl Body for DescriptorBody {
    const TAG: &'static str = tags::DESCRIPTOR;
    const KIND: &'static str = "issuer descriptor";
    const MAX_SIZE: usize = 2048;
    fn check(&self) -> Result<(), DecodeError> {
        let k = Self::KIND;
        check_version(k, self.version)?;
        if self.name.len() > 64 {
            return Err(invalid(k, "name is over 64 bytes"));
        }
        if self.currencies.is_empty() || self.currencies.len() > 8 {
            return Err(invalid(k, "currencies must list 1 to 8 codes"));
        }
        if !self.currencies.iter().all(|c| valid_currency(c)) {
            return Err(invalid(k, "currency code"));
        }
        if self.urls.len() > 4 || self.urls.iter().any(|u| u.len() > 200) {
            return Err(invalid(k, "urls: at most 4 of at most 200 bytes"));
        }
        if self.valid_from >= self.valid_until {
            return Err(invalid(k, "valid_from must precede valid_until"));
        }
        if self.max_payment == 0 || self.max_payment > self.max_allowance {
            return Err(invalid(k, "max_payment must be 1..=max_allowance"));
        }
        if !amount_in_range(self.max_allowance) {
            return Err(invalid(k, "max_allowance is over the largest amount"));
        }
        Ok(())
    }
}

impl IssuerDescriptor {
    /// Signs a descriptor for `key`'s issuer. The body's `issuer` and `seal_key` are set from
    /// the key.
    pub fn issue(key: &IssuerSecret, mut body: DescriptorBody) -> Self {
        body.issuer = key.id();
        body.seal_key = key.seal_key();
        Self::by_issuer(body, key)
    }

    /// Checks the self-signature.
    pub fn verify(&self) -> Result<(), BadSignature> {
        self.verify_by(&self.body().issuer.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Allowance certificate

/// The issuer's promise that `holder` may spend up to `limit` offline, backed by escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct AllowanceBody {
    /// Format version.
    pub version: u8,
    /// The allowance id.
    pub id: AllowanceId,
    /// The issuer that holds the escrow.
    pub issuer: IssuerId,
    /// The device key allowed to spend.
    pub holder: DeviceKey,
    /// Currency code.
    pub currency: String,
    /// Most that all IOUs under this allowance may add up to.
    pub limit: Amount,
    /// Most a single IOU may carry.
    pub max_payment: Amount,
    /// First second IOUs may be made.
    pub valid_from: UnixTime,
    /// Last second IOUs may be made.
    pub valid_until: UnixTime,
    /// Last second the issuer settles records; unspent escrow is released after it.
    pub settle_by: UnixTime,
}

/// An allowance certificate.
pub type AllowanceCert = Signed<AllowanceBody>;

impl Body for AllowanceBody {
    const TAG: &'static str = tags::ALLOWANCE;
    const KIND: &'static str = "allowance certificate";
    const MAX_SIZE: usize = 256;
    fn check(&self) -> Result<(), DecodeError> {
        let k = Self::KIND;
        check_version(k, self.version)?;
        if !valid_currency(&self.currency) {
            return Err(invalid(k, "currency code"));
        }
        if self.limit == 0 || self.max_payment == 0 || self.max_payment > self.limit {
            return Err(invalid(
                k,
                "limit and max_payment must satisfy 1 <= max_payment <= limit",
            ));
        }
        if !amount_in_range(self.limit) {
            return Err(invalid(k, "limit is over the largest amount"));
        }
        if self.valid_from >= self.valid_until || self.valid_until > self.settle_by {
            return Err(invalid(
                k,
                "times must satisfy valid_from < valid_until <= settle_by",
            ));
        }
        Ok(())
    }
}

impl AllowanceCert {
    /// Signs an allowance (issuer side). The body's `issuer` is set from the key.
    pub fn issue(key: &IssuerSecret, mut body: AllowanceBody) -> Self {
        body.issuer = key.id();
        Self::by_issuer(body, key)
    }

    /// Checks the issuer's signature.
    pub fn verify(&self) -> Result<(), BadSignature> {
        self.verify_by(&self.body().issuer.0)
    }

    /// The allowance id.
    pub fn id(&self) -> AllowanceId {
        self.body().id
    }
}

// ---------------------------------------------------------------------------------------------
// Payment request

/// What a payee asks for. Unsigned: it travels to the payer over the link or as a QR code,
/// and the IOU that answers it is bound to its payee key and nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct PaymentRequest {
    /// Format version.
    pub version: u8,
    /// Who is to be paid.
    pub payee: DeviceKey,
    /// How much, in minor units.
    pub amount: Amount,
    /// Currency code.
    pub currency: String,
    /// Fresh random nonce; the IOU repeats it.
    pub nonce: Nonce,
    /// Last second the payee accepts an IOU for this request.
    pub expires: UnixTime,
    /// Issuers the payee accepts (0 to 4; empty means any issuer the payee trusts).
    pub issuers: Vec<IssuerId>,
    /// Free text for the payer, at most 80 bytes of UTF-8.
    pub memo: String,
}

impl Wire for PaymentRequest {
    const KIND: &'static str = "payment request";
    const MAX_SIZE: usize = 512;
    fn check(&self) -> Result<(), DecodeError> {
        let k = Self::KIND;
        check_version(k, self.version)?;
        if self.amount == 0 || !amount_in_range(self.amount) {
            return Err(invalid(k, "amount must be 1 to the largest amount"));
        }
        if !valid_currency(&self.currency) {
            return Err(invalid(k, "currency code"));
        }
        if self.issuers.len() > 4 {
            return Err(invalid(k, "at most 4 issuers"));
        }
        if self.memo.len() > 80 {
            return Err(invalid(k, "memo is over 80 bytes"));
        }
        Ok(())
    }
}

/// Human-readable prefix of a payment request's text form.
pub const REQUEST_TEXT_PREFIX: &str = "mpreq";

/// Why a request's text form did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestTextError {
    /// Not Bech32m text with the request prefix, or its checksum fails (a typo or a cut).
    #[error(
        "not a meshpay payment request (it should start with 'mpreq1'), or it was cut or mistyped"
    )]
    NotARequest,
    /// The text is intact but the request inside is invalid.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl PaymentRequest {
    /// A request for `amount` of `currency` to `payee`.
    pub fn new(
        payee: DeviceKey,
        amount: Amount,
        currency: &str,
        nonce: Nonce,
        expires: UnixTime,
    ) -> Self {
        Self {
            version: VERSION,
            payee,
            amount,
            currency: currency.to_owned(),
            nonce,
            expires,
            issuers: Vec::new(),
            memo: String::new(),
        }
    }

    /// Bech32m text (`mpreq1…`) for a QR code or a chat message.
    pub fn to_text(&self) -> String {
        let hrp = bech32::Hrp::parse(REQUEST_TEXT_PREFIX).expect("valid HRP");
        bech32::encode::<bech32::Bech32m>(hrp, &codec::encode(self))
            .expect("a request under 512 bytes fits Bech32m's 1023-character code length")
    }

    /// Parses the text form.
    pub fn from_text(text: &str) -> Result<Self, RequestTextError> {
        let checked =
            bech32::primitives::decode::CheckedHrpstring::new::<bech32::Bech32m>(text.trim())
                .map_err(|_| RequestTextError::NotARequest)?;
        if checked.hrp().to_lowercase() != REQUEST_TEXT_PREFIX {
            return Err(RequestTextError::NotARequest);
        }
        let bytes: Vec<u8> = checked.byte_iter().collect();
        let request: Self = codec::decode(&bytes)?;
        // One text per request: refuse non-zero padding bits.
        if !request.to_text().eq_ignore_ascii_case(text.trim()) {
            return Err(RequestTextError::NotARequest);
        }
        Ok(request)
    }
}

// ---------------------------------------------------------------------------------------------
// Payment ack

/// The payee's signed statement that it accepted and durably stored an IOU: the payer's proof
/// of payment. Verified with the IOU's payee key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct AckBody {
    /// Format version.
    pub version: u8,
    /// The IOU acknowledged.
    pub iou: Hash,
    /// When the payee accepted it.
    pub accepted_at: UnixTime,
}

/// A payment ack.
pub type PaymentAck = Signed<AckBody>;

impl Body for AckBody {
    const TAG: &'static str = tags::ACK;
    const KIND: &'static str = "payment ack";
    const MAX_SIZE: usize = 160;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)
    }
}

impl PaymentAck {
    /// The payee acknowledges the IOU with id `iou`.
    pub fn sign(key: &DeviceSecret, iou: Hash, accepted_at: UnixTime) -> Self {
        Self::by_device(
            AckBody {
                version: VERSION,
                iou,
                accepted_at,
            },
            key,
        )
    }

    /// Checks that `payee` signed this ack.
    pub fn verify(&self, payee: &DeviceKey) -> Result<(), BadSignature> {
        self.verify_by(&payee.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Reasons, receipts, revocations

/// Why an IOU was refused, by a payee or by the settlement server. The numeric code is what
/// receipts carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The IOU's signature does not verify under the allowance holder's key.
    BadSignature,
    /// The allowance certificate's signature does not verify.
    BadCertificate,
    /// The allowance's issuer is not one this node trusts, or not one the request accepts.
    UnknownIssuer,
    /// No certificate is known for the IOU's allowance.
    UnknownAllowance,
    /// The allowance is not valid yet.
    NotYetValid,
    /// The allowance's validity window is over.
    Expired,
    /// The running total would pass the allowance limit.
    OverLimit,
    /// The payment is over the allowance's per-payment maximum.
    OverPaymentLimit,
    /// The IOU pays someone else.
    WrongPayee,
    /// The IOU's nonce matches no open request.
    NonceMismatch,
    /// The request has expired.
    RequestExpired,
    /// The allowance was revoked by its issuer.
    Revoked,
    /// A fraud proof against the allowance is known: it is refused everywhere.
    KnownFraud,
    /// The request was already paid by another IOU.
    Replay,
    /// Another IOU holds the same counter: a double spend.
    CounterConflict,
    /// The IOU's `prev` does not name the known spend before it.
    ChainBreak,
    /// The currency is not the request's.
    CurrencyMismatch,
    /// The amount is not the request's.
    AmountMismatch,
    /// The record arrived after the allowance's settle-by time.
    LateSettlement,
    /// The sealed record did not open or did not decode.
    Malformed,
    /// The record is sealed for another issuer.
    ForeignIssuer,
    /// The payee has no account at the issuer.
    UnknownPayee,
    /// The issuer could not decide the record now (its storage failed on this record alone);
    /// upload it again later.
    RetryLater,
}

impl Reason {
    const ALL: [Reason; 23] = [
        Reason::BadSignature,
        Reason::BadCertificate,
        Reason::UnknownIssuer,
        Reason::UnknownAllowance,
        Reason::NotYetValid,
        Reason::Expired,
        Reason::OverLimit,
        Reason::OverPaymentLimit,
        Reason::WrongPayee,
        Reason::NonceMismatch,
        Reason::RequestExpired,
        Reason::Revoked,
        Reason::KnownFraud,
        Reason::Replay,
        Reason::CounterConflict,
        Reason::ChainBreak,
        Reason::CurrencyMismatch,
        Reason::AmountMismatch,
        Reason::LateSettlement,
        Reason::Malformed,
        Reason::ForeignIssuer,
        Reason::UnknownPayee,
        Reason::RetryLater,
    ];

    /// The stable wire code (1-based; 0 means settled in a receipt).
    pub fn code(self) -> u16 {
        let i = Self::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is listed in ALL");
        u16::try_from(i + 1).expect("fewer than 65535 reasons")
    }

    /// The reason with wire code `code`.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// A short machine name (snake case), for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Reason::BadSignature => "bad_signature",
            Reason::BadCertificate => "bad_certificate",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::UnknownAllowance => "unknown_allowance",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Expired => "expired",
            Reason::OverLimit => "over_limit",
            Reason::OverPaymentLimit => "over_payment_limit",
            Reason::WrongPayee => "wrong_payee",
            Reason::NonceMismatch => "nonce_mismatch",
            Reason::RequestExpired => "request_expired",
            Reason::Revoked => "revoked",
            Reason::KnownFraud => "known_fraud",
            Reason::Replay => "replay",
            Reason::CounterConflict => "counter_conflict",
            Reason::ChainBreak => "chain_break",
            Reason::CurrencyMismatch => "currency_mismatch",
            Reason::AmountMismatch => "amount_mismatch",
            Reason::LateSettlement => "late_settlement",
            Reason::Malformed => "malformed",
            Reason::ForeignIssuer => "foreign_issuer",
            Reason::UnknownPayee => "unknown_payee",
            Reason::RetryLater => "retry_later",
        }
    }
}

impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a receipt says happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// Settled: the payee was credited.
    Settled,
    /// Refused, with the reason.
    Rejected(Reason),
}

impl ReceiptStatus {
    /// Whether the receipt is the issuer's last word on the record. `malformed` and
    /// `foreign_issuer` describe the bytes that were uploaded, which anyone can pair with any
    /// record id, `unknown_payee` lasts only until the payee opens an account, and
    /// `retry_later` only until the issuer's storage recovers: nodes keep carrying a record
    /// after such a receipt, and wallets do not change a payment's state on it.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            ReceiptStatus::Rejected(
                Reason::Malformed
                    | Reason::ForeignIssuer
                    | Reason::UnknownPayee
                    | Reason::RetryLater
            )
        )
    }

    /// Wire code: 0 for settled, else the reason's code.
    pub fn code(self) -> u16 {
        match self {
            ReceiptStatus::Settled => 0,
            ReceiptStatus::Rejected(r) => r.code(),
        }
    }

    /// The status with wire code `code`.
    pub fn from_code(code: u16) -> Option<Self> {
        if code == 0 {
            Some(ReceiptStatus::Settled)
        } else {
            Reason::from_code(code).map(ReceiptStatus::Rejected)
        }
    }
}

/// The issuer's signed verdict on one settlement record. It names only the record, so it can
/// travel back through the mesh without telling relays who paid whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct ReceiptBody {
    /// Format version.
    pub version: u8,
    /// The issuer.
    pub issuer: IssuerId,
    /// The record (= IOU id).
    pub record: Hash,
    /// [`ReceiptStatus`] code.
    pub status: u16,
    /// When the issuer decided.
    pub decided_at: UnixTime,
}

/// A settlement receipt.
pub type SettlementReceipt = Signed<ReceiptBody>;

impl Body for ReceiptBody {
    const TAG: &'static str = tags::RECEIPT;
    const KIND: &'static str = "settlement receipt";
    const MAX_SIZE: usize = 192;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        if ReceiptStatus::from_code(self.status).is_none() {
            return Err(invalid(Self::KIND, "unknown status code"));
        }
        Ok(())
    }
}

impl SettlementReceipt {
    /// The issuer's receipt for `record`.
    pub fn issue(
        key: &IssuerSecret,
        record: Hash,
        status: ReceiptStatus,
        decided_at: UnixTime,
    ) -> Self {
        Self::by_issuer(
            ReceiptBody {
                version: VERSION,
                issuer: key.id(),
                record,
                status: status.code(),
                decided_at,
            },
            key,
        )
    }

    /// Checks the issuer's signature and that it is `issuer`'s.
    pub fn verify(&self, issuer: &IssuerId) -> Result<(), BadSignature> {
        if self.body().issuer != *issuer {
            return Err(BadSignature);
        }
        self.verify_by(&issuer.0)
    }

    /// The decoded status.
    pub fn status(&self) -> ReceiptStatus {
        ReceiptStatus::from_code(self.body().status).expect("checked at decode and issue")
    }
}

/// Why an issuer revoked an allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevocationReason {
    /// A double spend was proven.
    Fraud,
    /// The holder reported the device lost or stolen.
    DeviceLost,
    /// The issuer's own decision.
    Issuer,
}

impl RevocationReason {
    /// Wire code.
    pub fn code(self) -> u16 {
        match self {
            RevocationReason::Fraud => 1,
            RevocationReason::DeviceLost => 2,
            RevocationReason::Issuer => 3,
        }
    }

    /// From a wire code.
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(RevocationReason::Fraud),
            2 => Some(RevocationReason::DeviceLost),
            3 => Some(RevocationReason::Issuer),
            _ => None,
        }
    }
}

/// The issuer's signed order to refuse an allowance from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct RevocationBody {
    /// Format version.
    pub version: u8,
    /// The issuer.
    pub issuer: IssuerId,
    /// The allowance revoked.
    pub allowance: AllowanceId,
    /// [`RevocationReason`] code.
    pub reason: u16,
    /// When it was revoked.
    pub revoked_at: UnixTime,
}

/// A revocation.
pub type Revocation = Signed<RevocationBody>;

impl Body for RevocationBody {
    const TAG: &'static str = tags::REVOCATION;
    const KIND: &'static str = "revocation";
    const MAX_SIZE: usize = 192;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        if RevocationReason::from_code(self.reason).is_none() {
            return Err(invalid(Self::KIND, "unknown reason code"));
        }
        Ok(())
    }
}

impl Revocation {
    /// The issuer revokes `allowance`.
    pub fn issue(
        key: &IssuerSecret,
        allowance: AllowanceId,
        reason: RevocationReason,
        revoked_at: UnixTime,
    ) -> Self {
        Self::by_issuer(
            RevocationBody {
                version: VERSION,
                issuer: key.id(),
                allowance,
                reason: reason.code(),
                revoked_at,
            },
            key,
        )
    }

    /// Checks the issuer's signature and that it is `issuer`'s.
    pub fn verify(&self, issuer: &IssuerId) -> Result<(), BadSignature> {
        if self.body().issuer != *issuer {
            return Err(BadSignature);
        }
        self.verify_by(&issuer.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Wallet requests to the issuer

/// What a wallet asks its issuer for, online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalletAction {
    /// Lock `amount` of the account in escrow and return an allowance certificate valid for
    /// `valid_secs` seconds.
    Allowance {
        /// Amount to lock.
        amount: Amount,
        /// Validity in seconds from the issuer's now.
        valid_secs: u64,
    },
    /// The account's statement.
    Statement,
}

/// A wallet's request to its issuer, signed by the device key. `time` and `nonce` make it
/// single-use: the issuer refuses a request more than five minutes off its clock or with a
/// nonce it has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct WalletRequestBody {
    /// Format version.
    pub version: u8,
    /// The device asking (and signing).
    pub device: DeviceKey,
    /// The issuer asked.
    pub issuer: IssuerId,
    /// 1 = allowance, 2 = statement.
    pub action: u8,
    /// Currency (allowance) or empty.
    pub currency: String,
    /// Amount (allowance) or 0.
    pub amount: Amount,
    /// Validity in seconds (allowance) or 0.
    pub valid_secs: u64,
    /// The wallet's clock.
    pub time: UnixTime,
    /// Random, never reused.
    pub nonce: Nonce,
}

/// A signed wallet request.
pub type WalletRequest = Signed<WalletRequestBody>;

impl Body for WalletRequestBody {
    const TAG: &'static str = tags::WALLET_REQUEST;
    const KIND: &'static str = "wallet request";
    const MAX_SIZE: usize = 256;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        match self.action {
            1 if self.amount > 0
                && amount_in_range(self.amount)
                && self.valid_secs > 0
                && valid_currency(&self.currency) =>
            {
                Ok(())
            }
            2 if self.amount == 0 && self.valid_secs == 0 && self.currency.is_empty() => Ok(()),
            _ => Err(invalid(Self::KIND, "action and its fields")),
        }
    }
}

impl WalletRequest {
    /// The device signs a request to `issuer`.
    pub fn sign(
        key: &DeviceSecret,
        issuer: IssuerId,
        action: WalletAction,
        currency: &str,
        time: UnixTime,
        nonce: Nonce,
    ) -> Self {
        let (code, amount, valid_secs, currency) = match action {
            WalletAction::Allowance { amount, valid_secs } => (1, amount, valid_secs, currency),
            WalletAction::Statement => (2, 0, 0, ""),
        };
        Self::by_device(
            WalletRequestBody {
                version: VERSION,
                device: key.public(),
                issuer,
                action: code,
                currency: currency.to_owned(),
                amount,
                valid_secs,
                time,
                nonce,
            },
            key,
        )
    }

    /// Checks the device's signature.
    pub fn verify(&self) -> Result<(), BadSignature> {
        self.verify_by(&self.body().device.0)
    }

    /// The action asked for.
    pub fn action(&self) -> WalletAction {
        let b = self.body();
        match b.action {
            1 => WalletAction::Allowance {
                amount: b.amount,
                valid_secs: b.valid_secs,
            },
            _ => WalletAction::Statement,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_stable_and_round_trip() {
        assert_eq!(Reason::BadSignature.code(), 1);
        assert_eq!(Reason::CounterConflict.code(), 15);
        assert_eq!(Reason::UnknownPayee.code(), 22);
        assert_eq!(Reason::RetryLater.code(), 23);
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.code()), Some(r));
            assert_eq!(
                ReceiptStatus::from_code(r.code()),
                Some(ReceiptStatus::Rejected(r))
            );
        }
        assert_eq!(Reason::from_code(0), None);
        assert_eq!(Reason::from_code(24), None);
        assert_eq!(ReceiptStatus::from_code(0), Some(ReceiptStatus::Settled));
    }

    #[test]
    fn currency_codes() {
        assert!(valid_currency("KES"));
        assert!(valid_currency("MARKET-TOKEN"));
        assert!(!valid_currency(""));
        assert!(!valid_currency("kes"));
        assert!(!valid_currency("THIRTEEN-CHAR"));
    }
}

/// A settlement upload: sealed records, each as the bytes of its encoding, in one CBOR array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBatch(pub Vec<crate::codec::Blob>);

impl RecordBatch {
    /// At most this many records per upload.
    pub const MAX_RECORDS: usize = 4096;
}

impl Wire for RecordBatch {
    const KIND: &'static str = "record batch";
    const MAX_SIZE: usize = 2 * 1024 * 1024;
    fn check(&self) -> Result<(), DecodeError> {
        if self.0.len() > Self::MAX_RECORDS {
            return Err(invalid(Self::KIND, "more than 4096 records"));
        }
        Ok(())
    }
}

/// The answer to a [`RecordBatch`]: one receipt per record, in order, `null` where an input
/// was not a sealed record at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBatch(pub Vec<Option<SettlementReceipt>>);

impl Wire for ReceiptBatch {
    const KIND: &'static str = "receipt batch";
    const MAX_SIZE: usize = 1024 * 1024;
    fn check(&self) -> Result<(), DecodeError> {
        for r in self.0.iter().flatten() {
            r.check()?;
        }
        Ok(())
    }
}
