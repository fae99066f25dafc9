//! What travels between payer, payee and issuer around a payment: the payee's payment
//! request (unsigned, also as `mpreq1…` text for QR codes), the payee's signed payment ack
//! (the payer's proof of payment), and a wallet's signed request to its issuer (SPEC.md §4.4,
//! §4.7, §4.14).

use super::{
    Amount, Body, Hash, Nonce, Signed, UnixTime, amount_in_range, invalid, tags, valid_currency,
};
use crate::codec::{self, DecodeError, VERSION, Wire, check_version};
use crate::keys::{BadSignature, DeviceKey, DeviceSecret, IssuerId};
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

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
