//! Keys: device identities, issuer identities, signatures, and the printable form of public
//! keys.
//!
//! A **device** has one Ed25519 key. It signs IOUs and payment acks, and the same key is the
//! device's libp2p identity, so a peer id names a payee. An **issuer** has an Ed25519 key that
//! signs descriptors, allowance certificates, receipts and revocations (its public half is the
//! issuer id) and an X25519 key that settlement records are sealed to.
//!
//! Secret keys never implement `Debug` or `Display` with their bytes, and are wiped on drop.
//! Generation takes a caller-supplied CSPRNG (the node passes the OS generator); this crate
//! never draws randomness itself.
//!
//! Signatures are always over `tag || 0x00 || bytes` with a tag per object type (SPEC.md §3),
//! and are checked with `verify_strict`, which refuses small-order keys and non-canonical
//! signatures.
//!
//! The **printable form** of a public key is Bech32m (BIP 350) with a human-readable part that
//! names the kind of key: `mpdev1…` for devices, `mpiss1…` for issuers. Its BCH checksum
//! catches any four wrong characters; parsing a mistyped key points at the characters to fix.

use crate::codec::{byte_newtype, tagged};
use crate::tags;
use bech32::primitives::correction::CorrectableError;
use bech32::primitives::decode::{
    CheckedHrpstring, CheckedHrpstringError, ChecksumError, UncheckedHrpstringError,
};
use bech32::{Bech32m, Fe32, Hrp};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

byte_newtype!(
    /// A device's Ed25519 public key: who pays, who is paid, who signed an ack.
    DeviceKey,
    32
);
byte_newtype!(
    /// An issuer's Ed25519 public key, which is also its identifier.
    IssuerId,
    32
);
byte_newtype!(
    /// An issuer's X25519 public key, to which settlement records are sealed.
    SealKey,
    32
);
byte_newtype!(
    /// An Ed25519 signature.
    Signature,
    64
);

/// A signature that does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify")]
pub struct BadSignature;

/// Verifies `sig` by `key` over `tag || 0 || msg` with strict Ed25519 rules.
pub(crate) fn verify(
    key: &[u8; 32],
    tag: &str,
    msg: &[u8],
    sig: &Signature,
) -> Result<(), BadSignature> {
    let key = verifying_key(key)?;
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    key.verify_strict(&tagged(tag, msg), &sig)
        .map_err(|_| BadSignature)
}

/// Most public keys a thread keeps decompressed; past it the cache starts over.
const KEY_CACHE: usize = 4096;

std::thread_local! {
    static KEYS: std::cell::RefCell<std::collections::HashMap<[u8; 32], VerifyingKey>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The Ed25519 public key `bytes` encode. Decompressing a point is a third of a signature
/// check, and a device checks the same few keys (its peers', its issuers') again and again,
/// so each thread keeps the last [`KEY_CACHE`] it decoded; a key that does not decode is
/// never kept.
fn verifying_key(bytes: &[u8; 32]) -> Result<VerifyingKey, BadSignature> {
    if let Some(k) = KEYS.with(|c| c.borrow().get(bytes).copied()) {
        return Ok(k);
    }
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| BadSignature)?;
    KEYS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= KEY_CACHE {
            c.clear();
        }
        c.insert(*bytes, key);
    });
    Ok(key)
}

fn sign_with(key: &SigningKey, tag: &str, msg: &[u8]) -> Signature {
    Signature(key.sign(&tagged(tag, msg)).to_bytes())
}

/// A device's secret key.
pub struct DeviceSecret(SigningKey);

impl DeviceSecret {
    /// A fresh key from a cryptographically secure generator.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self(SigningKey::generate(rng))
    }

    /// The key whose Ed25519 seed is `seed` (for restoring from encrypted storage and for test
    /// vectors).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The seed, for encrypted storage. Wiped when dropped.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key.
    pub fn public(&self) -> DeviceKey {
        DeviceKey(self.0.verifying_key().to_bytes())
    }

    /// Signs a link session's X25519 static key, binding it to this device (the BLE Noise
    /// handshake sends this signature; SPEC.md §3.3).
    pub fn sign_link_key(&self, static_key: &[u8; 32]) -> Signature {
        self.sign(tags::LINK_KEY, static_key)
    }

    /// Signs `tag || 0 || msg`.
    pub(crate) fn sign(&self, tag: &str, msg: &[u8]) -> Signature {
        sign_with(&self.0, tag, msg)
    }
}

impl DeviceKey {
    /// Checks that this device signed a link session's X25519 static key.
    pub fn verify_link_key(
        &self,
        static_key: &[u8; 32],
        sig: &Signature,
    ) -> Result<(), BadSignature> {
        verify(&self.0, tags::LINK_KEY, static_key, sig)
    }
}

impl core::fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DeviceSecret(public {})", self.public())
    }
}

/// An issuer's secret keys: Ed25519 for signing, X25519 for opening sealed records.
pub struct IssuerSecret {
    signing: SigningKey,
    seal: x25519_dalek::StaticSecret,
}

impl IssuerSecret {
    /// Fresh keys from a cryptographically secure generator.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let signing = SigningKey::generate(rng);
        let seal = x25519_dalek::StaticSecret::random_from_rng(rng);
        Self { signing, seal }
    }

    /// The keys whose Ed25519 seed and X25519 scalar are the two halves of `bytes`.
    pub fn from_bytes(bytes: &[u8; 64]) -> Self {
        let mut sign = [0u8; 32];
        let mut seal = [0u8; 32];
        sign.copy_from_slice(&bytes[..32]);
        seal.copy_from_slice(&bytes[32..]);
        let out = Self {
            signing: SigningKey::from_bytes(&sign),
            seal: x25519_dalek::StaticSecret::from(seal),
        };
        zeroize::Zeroize::zeroize(&mut sign);
        zeroize::Zeroize::zeroize(&mut seal);
        out
    }

    /// Both secrets, for encrypted storage. Wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 64]> {
        let mut out = Zeroizing::new([0u8; 64]);
        out[..32].copy_from_slice(&self.signing.to_bytes());
        out[32..].copy_from_slice(self.seal.as_bytes());
        out
    }

    /// The issuer id (public signing key).
    pub fn id(&self) -> IssuerId {
        IssuerId(self.signing.verifying_key().to_bytes())
    }

    /// The public sealing key.
    pub fn seal_key(&self) -> SealKey {
        SealKey(x25519_dalek::PublicKey::from(&self.seal).to_bytes())
    }

    /// Signs a link session's X25519 static key, binding it to this device (the BLE Noise
    /// handshake sends this signature; SPEC.md §3.3).
    pub fn sign_link_key(&self, static_key: &[u8; 32]) -> Signature {
        self.sign(tags::LINK_KEY, static_key)
    }

    /// Signs `tag || 0 || msg`.
    pub(crate) fn sign(&self, tag: &str, msg: &[u8]) -> Signature {
        sign_with(&self.signing, tag, msg)
    }

    /// The X25519 secret, for opening sealed records.
    pub(crate) fn seal_secret(&self) -> &x25519_dalek::StaticSecret {
        &self.seal
    }
}

impl core::fmt::Debug for IssuerSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "IssuerSecret(id {})", self.id())
    }
}

/// Why a printed key did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyTextError {
    /// The text is a key of another kind (an issuer key where a device key belongs, …).
    #[error(
        "this is not a {expected} key (it starts with '{found}1', a {expected} key starts with '{expected_prefix}1')"
    )]
    WrongKind {
        /// The kind asked for.
        expected: &'static str,
        /// Its prefix.
        expected_prefix: &'static str,
        /// The prefix found.
        found: String,
    },
    /// A character that never appears in a printed key.
    #[error(
        "character '{character}' at position {position} never appears in a key (keys use 0-9 and a-z without 1, b, i, o)"
    )]
    InvalidCharacter {
        /// The character.
        character: char,
        /// Its 1-based position.
        position: usize,
    },
    /// Upper and lower case mixed.
    #[error("a key is all lower case or all upper case, not mixed")]
    MixedCase,
    /// The checksum does not match: one or more characters are wrong.
    #[error("{}", typo_message(.positions, .suggestion.as_deref()))]
    Typo {
        /// 1-based positions of the characters that are probably wrong (empty if too many to
        /// locate).
        positions: Vec<usize>,
        /// The corrected key, when the error could be located. Check it against the source
        /// before using it.
        suggestion: Option<String>,
    },
    /// The text is not a whole key (too short, too long, or no `1` separator).
    #[error("this is not a whole key: {0}")]
    Incomplete(&'static str),
}

fn typo_message(positions: &[usize], suggestion: Option<&str>) -> String {
    match (positions, suggestion) {
        ([], _) | (_, None) => {
            "the key has a typo (checksum mismatch); copy it again from its source".to_owned()
        }
        (pos, Some(s)) => {
            let list: Vec<String> = pos.iter().map(ToString::to_string).collect();
            format!(
                "the key has a typo at position {} (checksum mismatch); did you mean {s}?",
                list.join(", ")
            )
        }
    }
}

/// Public keys with a printable, checksummed form.
pub trait PrintableKey: Sized {
    /// Human-readable prefix (Bech32m HRP).
    const PREFIX: &'static str;
    /// Name of the kind of key, for errors.
    const NAME: &'static str;
    /// The key bytes.
    fn key_bytes(&self) -> &[u8; 32];
    /// A key from bytes.
    fn from_key_bytes(bytes: [u8; 32]) -> Self;

    /// The printable form, e.g. `mpdev1…` (64 characters).
    fn to_text(&self) -> String {
        let hrp = Hrp::parse(Self::PREFIX).expect("prefixes are valid HRPs");
        bech32::encode::<Bech32m>(hrp, self.key_bytes()).expect("32 bytes fit Bech32m")
    }

    /// A short form for display next to names (prefix, first 8 and last 4 characters); it
    /// does not parse back.
    fn short(&self) -> String {
        let t = self.to_text();
        let head = Self::PREFIX.len() + 1;
        format!("{}…{}", &t[..head + 8], &t[t.len() - 4..])
    }

    /// Parses the printable form, explaining any mistake.
    fn from_text(text: &str) -> Result<Self, KeyTextError> {
        let text = text.trim();
        let checked = match CheckedHrpstring::new::<Bech32m>(text) {
            Ok(c) => c,
            Err(e) => return Err(explain::<Self>(text, &e)),
        };
        let found = checked.hrp().to_lowercase();
        if found != Self::PREFIX {
            return Err(KeyTextError::WrongKind {
                expected: Self::NAME,
                expected_prefix: Self::PREFIX,
                found,
            });
        }
        let bytes: Vec<u8> = checked.byte_iter().collect();
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyTextError::Incomplete("wrong length"))?;
        let key = Self::from_key_bytes(bytes);
        // One text per key: the last character carries 4 padding bits that must be zero.
        if !key.to_text().eq_ignore_ascii_case(text) {
            return Err(KeyTextError::Typo {
                positions: vec![text.len() - 6],
                suggestion: Some(key.to_text()),
            });
        }
        Ok(key)
    }
}

fn explain<K: PrintableKey>(text: &str, e: &CheckedHrpstringError) -> KeyTextError {
    use bech32::primitives::decode::CharError;
    match e {
        CheckedHrpstringError::Parse(UncheckedHrpstringError::Char(c)) => match c {
            CharError::MixedCase => KeyTextError::MixedCase,
            CharError::InvalidChar(ch) => {
                // Report the first bad character after the separator (or anywhere, if there
                // is none); the prefix is checked separately.
                let start = text.rfind('1').map_or(0, |i| i + 1);
                let position = text
                    .char_indices()
                    .skip_while(|(i, _)| *i < start)
                    .find(|(_, x)| x == ch)
                    .map_or(0, |(i, _)| text[..i].chars().count() + 1);
                KeyTextError::InvalidCharacter {
                    character: *ch,
                    position,
                }
            }
            CharError::MissingSeparator => KeyTextError::Incomplete("no '1' separator"),
            _ => KeyTextError::Incomplete("nothing after '1'"),
        },
        CheckedHrpstringError::Parse(_) => KeyTextError::Incomplete("bad prefix"),
        CheckedHrpstringError::Checksum(ChecksumError::InvalidResidue(_)) => {
            let prefix_ok = text
                .get(..=K::PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(&format!("{}1", K::PREFIX)));
            if !prefix_ok {
                let found = text.rsplit_once('1').map_or("", |(h, _)| h).to_lowercase();
                return KeyTextError::WrongKind {
                    expected: K::NAME,
                    expected_prefix: K::PREFIX,
                    found,
                };
            }
            locate_typos(text, e)
        }
        _ => KeyTextError::Incomplete("wrong length"),
    }
}

fn locate_typos(text: &str, e: &CheckedHrpstringError) -> KeyTextError {
    let no_location = KeyTextError::Typo {
        positions: Vec::new(),
        suggestion: None,
    };
    let Some(ctx) = e.correction_context::<Bech32m>() else {
        return no_location;
    };
    let Some(errors) = ctx.bch_errors() else {
        return no_location;
    };
    let upper = text.chars().any(|c| c.is_ascii_uppercase());
    let mut chars: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let data_start = text.rfind('1').map_or(0, |i| i + 1);
    let mut positions = Vec::new();
    for (neg, delta) in errors {
        let Some(idx) = chars.len().checked_sub(neg + 1) else {
            return no_location;
        };
        if idx < data_start {
            return no_location;
        }
        let Ok(fe) = Fe32::from_char(chars[idx]) else {
            return no_location;
        };
        chars[idx] = (fe + delta).to_char();
        positions.push(idx + 1);
    }
    positions.sort_unstable();
    let mut fixed: String = chars.into_iter().collect();
    if upper {
        fixed = fixed.to_ascii_uppercase();
    }
    if positions.is_empty() || CheckedHrpstring::new::<Bech32m>(&fixed).is_err() {
        return no_location;
    }
    KeyTextError::Typo {
        positions,
        suggestion: Some(fixed),
    }
}

impl PrintableKey for DeviceKey {
    const PREFIX: &'static str = "mpdev";
    const NAME: &'static str = "device";
    fn key_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    fn from_key_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl PrintableKey for IssuerId {
    const PREFIX: &'static str = "mpiss";
    const NAME: &'static str = "issuer";
    fn key_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    fn from_key_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

macro_rules! printable_display {
    ($($t:ty),*) => {$(
        impl core::fmt::Display for $t {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(&self.to_text())
            }
        }
        impl core::str::FromStr for $t {
            type Err = KeyTextError;
            fn from_str(s: &str) -> Result<Self, KeyTextError> {
                Self::from_text(s)
            }
        }
    )*};
}
printable_display!(DeviceKey, IssuerId);

impl core::fmt::Display for SealKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceKey {
        DeviceSecret::from_seed(&[7u8; 32]).public()
    }

    /// A key kept decompressed checks signatures exactly as a fresh one: the right one
    /// passes, a wrong one or another message fails, again and again; a key that does not
    /// decode fails every time; the cache stays bounded.
    #[test]
    fn kept_keys_check_signatures_as_fresh_ones() {
        let secret = DeviceSecret::from_seed(&[7u8; 32]);
        let sig = secret.sign_link_key(&[1u8; 32]);
        for _ in 0..3 {
            assert_eq!(device().verify_link_key(&[1u8; 32], &sig), Ok(()));
            assert_eq!(
                device().verify_link_key(&[2u8; 32], &sig),
                Err(BadSignature)
            );
            let other = DeviceSecret::from_seed(&[8u8; 32]).public();
            assert_eq!(other.verify_link_key(&[1u8; 32], &sig), Err(BadSignature));
        }
        // Not a point on the curve (y = 2 has no x).
        let mut bad = [0u8; 32];
        bad[0] = 2;
        for _ in 0..2 {
            assert_eq!(
                DeviceKey(bad).verify_link_key(&[1u8; 32], &sig),
                Err(BadSignature)
            );
        }
        for i in 0..u32::try_from(KEY_CACHE + 10).unwrap() {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let _ = verifying_key(&DeviceSecret::from_seed(&seed).public().0);
        }
        assert!(KEYS.with(|c| c.borrow().len()) <= KEY_CACHE);
    }

    #[test]
    fn printable_round_trip() {
        let k = device();
        let t = k.to_text();
        assert!(t.starts_with("mpdev1"), "{t}");
        assert_eq!(t.len(), 64);
        assert_eq!(DeviceKey::from_text(&t), Ok(k));
        assert_eq!(DeviceKey::from_text(&t.to_ascii_uppercase()), Ok(k));
        assert_eq!(t.parse::<DeviceKey>(), Ok(k));
        assert!(k.short().starts_with("mpdev1"));
    }

    #[test]
    fn one_typo_is_located_and_corrected() {
        let t = device().to_text();
        let mut chars: Vec<char> = t.chars().collect();
        chars[20] = if chars[20] == 'q' { 'p' } else { 'q' };
        let typo: String = chars.into_iter().collect();
        match DeviceKey::from_text(&typo) {
            Err(KeyTextError::Typo {
                positions,
                suggestion,
            }) => {
                assert_eq!(positions, vec![21]);
                assert_eq!(suggestion.as_deref(), Some(t.as_str()));
            }
            other => panic!("expected a located typo, got {other:?}"),
        }
    }

    #[test]
    fn wrong_kind_bad_char_and_mixed_case() {
        let issuer = IssuerSecret::from_bytes(&[9u8; 64]).id().to_text();
        assert!(matches!(
            DeviceKey::from_text(&issuer),
            Err(KeyTextError::WrongKind { found, .. }) if found == "mpiss"
        ));
        let t = device().to_text();
        let bad = format!("{}b{}", &t[..10], &t[11..]);
        assert!(matches!(
            DeviceKey::from_text(&bad),
            Err(KeyTextError::InvalidCharacter {
                character: 'b',
                position: 11
            })
        ));
        let mixed = format!("{}{}", &t[..10], t[10..].to_ascii_uppercase());
        assert_eq!(DeviceKey::from_text(&mixed), Err(KeyTextError::MixedCase));
        assert!(matches!(
            DeviceKey::from_text(&t[..40]),
            Err(KeyTextError::Typo { .. } | KeyTextError::Incomplete(_))
        ));
        let r = DeviceKey::from_text("mpdev1");
        assert!(matches!(r, Err(KeyTextError::Incomplete(_))), "{r:?}");
        assert_eq!(
            DeviceKey::from_text("hello"),
            Err(KeyTextError::InvalidCharacter {
                character: 'o',
                position: 5
            })
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = DeviceSecret::from_seed(&[1u8; 32]);
        let dbg = format!("{s:?}");
        assert!(!dbg.contains(&crate::codec::hex(&[1u8; 32])));
        let i = IssuerSecret::from_bytes(&[2u8; 64]);
        assert!(!format!("{i:?}").contains("0202020202"));
        assert_eq!(IssuerSecret::from_bytes(&i.to_bytes()).id(), i.id());
    }

    #[test]
    fn strict_verification() {
        let s = DeviceSecret::from_seed(&[3u8; 32]);
        let sig = s.sign("meshpay/test", b"hello");
        assert_eq!(
            verify(&s.public().0, "meshpay/test", b"hello", &sig),
            Ok(())
        );
        assert_eq!(
            verify(&s.public().0, "meshpay/other", b"hello", &sig),
            Err(BadSignature)
        );
        // The all-zero key is small-order: strict verification refuses it outright.
        assert_eq!(
            verify(&[0u8; 32], "meshpay/test", b"hello", &Signature([0u8; 64])),
            Err(BadSignature)
        );
    }
}
