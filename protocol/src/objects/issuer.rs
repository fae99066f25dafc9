//! The issuer's own objects: its self-signed descriptor (keys, currencies, settlement URLs,
//! validity) and the allowance certificates it grants, which payees check offline against the
//! descriptor's key (SPEC.md §4.2, §4.3).

use super::{
    AllowanceId, Amount, Body, Signed, UnixTime, amount_in_range, invalid, tags, valid_currency,
};
use crate::codec::{DecodeError, check_version};
use crate::keys::{BadSignature, DeviceKey, IssuerId, IssuerSecret, SealKey};
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

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
