//! The wire codec: every byte that meshpay puts on a link, in a file or in a QR code goes
//! through this module and nowhere else.
//!
//! Objects are CBOR (RFC 8949) arrays with a fixed schema: integers are unsigned and minimally
//! encoded, byte strings are definite-length byte strings, text strings are UTF-8, there are no
//! maps, no floats and no tags. Every object's first element is its format version.
//!
//! Decoding is strict: the input must fit the type's size limit, decode into the typed value,
//! pass the type's own field checks, and re-encode to exactly the same bytes. The last rule
//! makes the encoding canonical, so a signature over the bytes is a signature over the value
//! and two byte strings that differ are two different objects.
//!
//! To swap the codec, change this module only: the rules elsewhere see typed values,
//! [`encode`] and [`decode`].

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format version every object of this release carries in its first field.
pub const VERSION: u8 = 1;

/// Why bytes were refused by [`decode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than the type allows; nothing was parsed.
    #[error("{kind} is {len} bytes, over its limit of {limit} bytes")]
    TooLarge {
        /// The object type.
        kind: &'static str,
        /// Length of the input.
        len: usize,
        /// The type's limit.
        limit: usize,
    },
    /// The input is not a CBOR encoding of the type (truncated, wrong shape, trailing bytes).
    #[error("{kind} is malformed: {detail}")]
    Malformed {
        /// The object type.
        kind: &'static str,
        /// What the decoder stumbled on.
        detail: String,
    },
    /// The input decodes but is not the canonical encoding of what it decodes to.
    #[error("{kind} is not canonically encoded")]
    NotCanonical {
        /// The object type.
        kind: &'static str,
    },
    /// The object carries a format version this release does not speak.
    #[error("{kind} has format version {found}, this release reads version {VERSION}")]
    UnsupportedVersion {
        /// The object type.
        kind: &'static str,
        /// The version found.
        found: u8,
    },
    /// A field is out of its allowed range (a string too long, a counter of zero, …).
    #[error("{kind} has an invalid field: {field}")]
    InvalidField {
        /// The object type.
        kind: &'static str,
        /// Which field and why.
        field: &'static str,
    },
}

/// A type with a fixed wire schema.
pub trait Wire: Serialize + DeserializeOwned {
    /// Human name of the type, used in errors.
    const KIND: &'static str;
    /// Largest encoding a decoder accepts, in bytes.
    const MAX_SIZE: usize;

    /// Field checks that the schema alone cannot express. Called by [`decode`] after parsing.
    fn check(&self) -> Result<(), DecodeError> {
        Ok(())
    }
}

/// Encodes a value. Infallible for the types of this crate: they hold no maps with
/// non-string keys and no floats, the only things serde_cbor can refuse.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_into(value, Vec::with_capacity(128))
}

/// [`encode`] into `out` (whose capacity saves the regrowing of a growing buffer).
pub fn encode_into<T: Serialize>(value: &T, mut out: Vec<u8>) -> Vec<u8> {
    serde_cbor::to_writer(&mut out, value).expect("meshpay wire types always encode");
    out
}

/// Decodes bytes into `T` under its size limit, field checks and the canonical-encoding rule.
pub fn decode<T: Wire>(bytes: &[u8]) -> Result<T, DecodeError> {
    within_limit::<T>(bytes.len())?;
    let value: T = serde_cbor::from_slice(bytes).map_err(|e| {
        // An object of another version may have another shape: name the version, not the
        // shape, when it can be read.
        match leading_version(bytes) {
            Some(found) if found != VERSION => DecodeError::UnsupportedVersion {
                kind: T::KIND,
                found,
            },
            _ => DecodeError::Malformed {
                kind: T::KIND,
                detail: e.to_string(),
            },
        }
    })?;
    value.check()?;
    if encode(&value) != bytes {
        return Err(DecodeError::NotCanonical { kind: T::KIND });
    }
    Ok(value)
}

/// Refuses an encoding of `len` bytes over `T`'s size limit.
pub(crate) fn within_limit<T: Wire>(len: usize) -> Result<(), DecodeError> {
    if len > T::MAX_SIZE {
        return Err(DecodeError::TooLarge {
            kind: T::KIND,
            len,
            limit: T::MAX_SIZE,
        });
    }
    Ok(())
}

/// The version of an object: the first item that is not an array header, if it is a small
/// unsigned integer. Every object starts `[version, …]` or `[[version, …], …]`.
fn leading_version(bytes: &[u8]) -> Option<u8> {
    let mut i = 0;
    loop {
        match *bytes.get(i)? {
            0x80..=0x97 => i += 1,
            0x98 => i += 2,
            0x99 => i += 3,
            v @ 0x00..=0x17 => return Some(v),
            0x18 => return bytes.get(i + 1).copied(),
            _ => return None,
        }
    }
}

/// Returns the version check error for `kind` unless `found` is [`VERSION`].
pub(crate) fn check_version(kind: &'static str, found: u8) -> Result<(), DecodeError> {
    if found == VERSION {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedVersion { kind, found })
    }
}

/// The bytes a signature or a hash covers: the domain tag, one zero byte, then the message.
pub(crate) fn tagged(tag: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tag.len() + 1 + message.len());
    out.extend_from_slice(tag.as_bytes());
    out.push(0);
    out.extend_from_slice(message);
    out
}

/// Defines a fixed-length byte-string newtype that travels as a CBOR byte string.
macro_rules! byte_newtype {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lowercase hex of the bytes.
            pub fn to_hex(&self) -> String {
                crate::codec::hex(&self.0)
            }

            /// Parses lowercase or uppercase hex of exactly the right length.
            pub fn from_hex(s: &str) -> Option<Self> {
                crate::codec::unhex::<$len>(s).map(Self)
            }
        }

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl ::core::default::Default for $name {
            fn default() -> Self {
                Self([0; $len])
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                ::serde_bytes::ByteArray::<$len>::deserialize(d).map(|b| Self(b.into_array()))
            }
        }
    };
}
pub(crate) use byte_newtype;

/// A variable-length byte string that travels as a CBOR byte string.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl core::fmt::Debug for Blob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl serde::Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|b| Self(b.into_vec()))
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Parses hex of exactly `N` bytes.
pub(crate) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_tuple::{Deserialize_tuple, Serialize_tuple};

    #[derive(Debug, PartialEq, Serialize_tuple, Deserialize_tuple)]
    struct Probe {
        v: u8,
        n: u64,
    }
    impl Wire for Probe {
        const KIND: &'static str = "probe";
        const MAX_SIZE: usize = 16;
        fn check(&self) -> Result<(), DecodeError> {
            check_version(Self::KIND, self.v)
        }
    }

    #[test]
    fn canonical_round_trip() {
        let bytes = encode(&Probe { v: 1, n: 500 });
        assert_eq!(bytes, [0x82, 0x01, 0x19, 0x01, 0xf4]);
        assert_eq!(decode::<Probe>(&bytes), Ok(Probe { v: 1, n: 500 }));
    }

    #[test]
    fn non_minimal_integer_is_refused() {
        // 500 written with an 8-byte argument instead of 2.
        let bytes = [0x82, 0x01, 0x1b, 0, 0, 0, 0, 0, 0, 0x01, 0xf4];
        assert_eq!(
            decode::<Probe>(&bytes),
            Err(DecodeError::NotCanonical { kind: "probe" })
        );
    }

    #[test]
    fn indefinite_array_is_refused() {
        let bytes = [0x9f, 0x01, 0x02, 0xff];
        assert_eq!(
            decode::<Probe>(&bytes),
            Err(DecodeError::NotCanonical { kind: "probe" })
        );
    }

    #[test]
    fn oversized_and_trailing_input_is_refused() {
        assert!(matches!(
            decode::<Probe>(&[0u8; 17]),
            Err(DecodeError::TooLarge {
                len: 17,
                limit: 16,
                ..
            })
        ));
        assert!(matches!(
            decode::<Probe>(&[0x82, 0x01, 0x02, 0x00]),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            decode::<Probe>(&[0x82, 0x01]),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn other_versions_are_named_even_in_another_shape() {
        // A version-2 object with a text field where version 1 has an integer.
        let bytes = [0x82, 0x02, 0x61, b'x'];
        assert_eq!(
            decode::<Probe>(&bytes),
            Err(DecodeError::UnsupportedVersion {
                kind: "probe",
                found: 2
            })
        );
        assert_eq!(
            decode::<Probe>(&[0x82, 0x02, 0x05]),
            Err(DecodeError::UnsupportedVersion {
                kind: "probe",
                found: 2
            })
        );
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(unhex::<3>("00ABff"), Some([0x00, 0xab, 0xff]));
        assert_eq!(unhex::<3>("00abf"), None);
        assert_eq!(unhex::<2>("zz00"), None);
    }
}
