//! Sealed settlement records: an IOU encrypted to its issuer with HPKE (RFC 9180), base mode,
//! suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20-Poly1305.
//!
//! Relays and gateways carry records as opaque bytes. In the clear they see only the header:
//! record id (= IOU id), issuer id, creation and expiry times, and the size. The header is the
//! HPKE associated data, so changing any of it makes the record fail to open.

use crate::codec::{self, Blob, DecodeError, VERSION, Wire, byte_newtype, check_version};
use crate::iou::Iou;
use crate::keys::{IssuerId, IssuerSecret, SealKey};
use crate::objects::{Hash, UnixTime};
use crate::tags;
use hpke::{Deserializable as _, OpModeR, OpModeS, Serializable as _};
use rand_core::CryptoRngCore;
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

byte_newtype!(
    /// An HPKE encapsulated key: the sender's ephemeral X25519 public key.
    EncapsulatedKey,
    32
);

/// A settlement record sealed to an issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct SealedRecord {
    /// Format version.
    pub version: u8,
    /// The id of the IOU inside.
    pub id: Hash,
    /// The issuer it is sealed to.
    pub issuer: IssuerId,
    /// When the payee sealed it.
    pub created: UnixTime,
    /// When carriers may drop it (the allowance's settle-by time).
    pub expires: UnixTime,
    /// HPKE encapsulated key (32 bytes for X25519).
    pub enc: EncapsulatedKey,
    /// HPKE ciphertext of the plaintext `[version, IOU]`.
    pub ciphertext: Blob,
}

impl Wire for SealedRecord {
    const KIND: &'static str = "sealed settlement record";
    const MAX_SIZE: usize = 512;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        if self.created > self.expires {
            return Err(DecodeError::InvalidField {
                kind: Self::KIND,
                field: "created after expiry",
            });
        }
        Ok(())
    }
}

/// The plaintext inside a record: `[version, IOU]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
struct RecordPlaintext {
    version: u8,
    iou: Iou,
}

impl Wire for RecordPlaintext {
    const KIND: &'static str = "settlement record plaintext";
    const MAX_SIZE: usize = 256;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        self.iou.check()
    }
}

/// Why a record did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Sealed to another issuer.
    #[error("the record is sealed to another issuer")]
    ForeignIssuer,
    /// Decryption failed: wrong key, or the header or ciphertext was altered.
    #[error("the record does not decrypt (altered, or not sealed to this key)")]
    Decrypt,
    /// Decrypted, but the content is not a valid IOU record.
    #[error("the record's content is invalid: {0}")]
    Content(#[from] DecodeError),
    /// Decrypted, but the IOU inside is not the one the header names.
    #[error("the record's id does not match the IOU inside")]
    IdMismatch,
}

/// Why sealing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The issuer's seal key is not a valid X25519 public key.
    #[error("the issuer's seal key is invalid")]
    BadSealKey,
}

impl SealedRecord {
    fn header_bytes(&self) -> Vec<u8> {
        codec::encode(&(
            self.version,
            &self.id,
            &self.issuer,
            self.created,
            self.expires,
        ))
    }

    /// Seals `iou` to the issuer with id `issuer` and seal key `seal_key`.
    pub fn seal(
        iou: &Iou,
        issuer: IssuerId,
        seal_key: &SealKey,
        created: UnixTime,
        expires: UnixTime,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, SealError> {
        let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&seal_key.0)
            .map_err(|_| SealError::BadSealKey)?;
        let mut rec = Self {
            version: VERSION,
            id: iou.id(),
            issuer,
            created,
            expires,
            enc: EncapsulatedKey::default(),
            ciphertext: Blob(Vec::new()),
        };
        let plaintext = codec::encode(&RecordPlaintext {
            version: VERSION,
            iou: iou.clone(),
        });
        let (enc, ct) = hpke::single_shot_seal::<Aead, Kdf, Kem, _>(
            &OpModeS::Base,
            &pk,
            tags::SEALED_RECORD.as_bytes(),
            &plaintext,
            &rec.header_bytes(),
            rng,
        )
        .map_err(|_| SealError::BadSealKey)?;
        rec.enc = EncapsulatedKey(enc.to_bytes().into());
        rec.ciphertext = Blob(ct);
        Ok(rec)
    }

    /// Opens the record with the issuer's secret and returns the IOU inside.
    pub fn open(&self, key: &IssuerSecret) -> Result<Iou, OpenError> {
        if self.issuer != key.id() {
            return Err(OpenError::ForeignIssuer);
        }
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(key.seal_secret().as_bytes())
            .map_err(|_| OpenError::Decrypt)?;
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&self.enc.0)
            .map_err(|_| OpenError::Decrypt)?;
        let plaintext = hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Base,
            &sk,
            &enc,
            tags::SEALED_RECORD.as_bytes(),
            &self.ciphertext.0,
            &self.header_bytes(),
        )
        .map_err(|_| OpenError::Decrypt)?;
        let inner: RecordPlaintext = codec::decode(&plaintext)?;
        if inner.iou.id() != self.id {
            return Err(OpenError::IdMismatch);
        }
        Ok(inner.iou)
    }
}
