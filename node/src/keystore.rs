//! Secret keys at rest (a device's Ed25519 seed, an issuer's two keys) encrypted with a key
//! derived from a passphrase by Argon2id, sealed with XChaCha20-Poly1305.
//!
//! Layout (all integers big-endian): `"MPK1" || salt (16) || m_cost KiB (4) || t_cost (4) ||
//! p_cost (4) || nonce (24) || ciphertext + tag (secret length + 16)`. The header is the AEAD's
//! associated data, so the parameters cannot be altered to weaken a brute-force attack.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"MPK1";
const HEADER: usize = 4 + 16 + 12 + 24;

/// Why the key could not be unlocked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeystoreError {
    /// The passphrase is wrong (or the file was altered).
    #[error("wrong passphrase, or the key file was altered")]
    WrongPassphrase,
    /// Not a meshpay key blob.
    #[error("the stored key is not in a format this meshpay reads")]
    Format,
    /// Argon2 refused the parameters.
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// Argon2id cost: memory in KiB, iterations, lanes. The default is OWASP's minimum for
/// Argon2id (19 MiB, 2 passes).
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Memory in KiB.
    pub m: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for Cost {
    fn default() -> Self {
        Self {
            m: 19_456,
            t: 2,
            p: 1,
        }
    }
}

fn derive(pass: &[u8], salt: &[u8], cost: Cost) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let params = Params::new(cost.m, cost.t, cost.p, Some(32))
        .map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pass, salt, key.as_mut())
        .map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    Ok(key)
}

/// Encrypts a secret of up to 64 bytes under `passphrase`.
pub fn seal(secret: &[u8], passphrase: &str, cost: Cost) -> Result<Vec<u8>, KeystoreError> {
    if secret.is_empty() || secret.len() > 64 {
        return Err(KeystoreError::Format);
    }
    let mut out = Vec::with_capacity(HEADER + secret.len() + 16);
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&cost.m.to_be_bytes());
    out.extend_from_slice(&cost.t.to_be_bytes());
    out.extend_from_slice(&cost.p.to_be_bytes());
    out.extend_from_slice(&nonce);
    let key = derive(passphrase.as_bytes(), &salt, cost)?;
    let cipher = XChaCha20Poly1305::new(key.as_ref().into());
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: &out,
            },
        )
        .map_err(|_| KeystoreError::Format)?;
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts a blob made by [`seal`] of a `N`-byte secret.
pub fn open<const N: usize>(
    blob: &[u8],
    passphrase: &str,
) -> Result<Zeroizing<[u8; N]>, KeystoreError> {
    if blob.len() != HEADER + N + 16 || &blob[..4] != MAGIC {
        return Err(KeystoreError::Format);
    }
    let word = |i: usize| u32::from_be_bytes(blob[i..i + 4].try_into().expect("4 bytes"));
    let cost = Cost {
        m: word(20),
        t: word(24),
        p: word(28),
    };
    // Refuse absurd parameters from an altered file before spending memory on them.
    if cost.m > 4 * 1024 * 1024 || cost.t > 64 || cost.p > 64 {
        return Err(KeystoreError::Format);
    }
    let key = derive(passphrase.as_bytes(), &blob[4..20], cost)?;
    let cipher = XChaCha20Poly1305::new(key.as_ref().into());
    let pt = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(&blob[32..56]),
                Payload {
                    msg: &blob[HEADER..],
                    aad: &blob[..HEADER],
                },
            )
            .map_err(|_| KeystoreError::WrongPassphrase)?,
    );
    let mut out = Zeroizing::new([0u8; N]);
    out.copy_from_slice(&pt);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: Cost = Cost { m: 64, t: 1, p: 1 };

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let blob = seal(&[7; 32], "correct horse", CHEAP).unwrap();
        assert_eq!(blob.len(), HEADER + 32 + 16);
        assert_eq!(*open::<32>(&blob, "correct horse").unwrap(), [7; 32]);
        assert_eq!(
            open::<32>(&blob, "wrong").unwrap_err(),
            KeystoreError::WrongPassphrase
        );
        assert_eq!(
            open::<64>(&blob, "correct horse").unwrap_err(),
            KeystoreError::Format
        );
        let mut altered = blob.clone();
        altered[21] ^= 1; // the memory cost
        assert!(open::<32>(&altered, "correct horse").is_err());
        assert_eq!(
            open::<32>(&blob[..10], "x").unwrap_err(),
            KeystoreError::Format
        );
        let issuer = seal(&[9; 64], "pw", CHEAP).unwrap();
        assert_eq!(*open::<64>(&issuer, "pw").unwrap(), [9; 64]);
    }
}
