//! One-time enrolment codes (PROTOCOL.md 2.2): making them, and hashing them for storage.
//!
//! The API makes a code when an IQ is registered and keeps only its hash; the link hands
//! the code the IQ presents to [`crate::LinkBackend::redeem_enrolment_code`], which
//! compares hashes. A code is a secret: it is never logged.

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Crockford's base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in a code: 20 x 5 bits = 100 bits.
pub const CODE_LEN: usize = 20;

/// The system's random source failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("random source failed")]
pub struct RandomError;

/// A new enrolment code: 20 characters of Crockford base32.
pub fn new_code() -> Result<String, RandomError> {
    let mut bytes = [0u8; CODE_LEN];
    SystemRandom::new().fill(&mut bytes).map_err(|_| RandomError)?;
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET.get(usize::from(b & 0x1f)).copied().unwrap_or(b'0')))
        .collect())
}

/// A code as typed, made canonical: upper case, dashes and spaces removed, and the
/// letters Crockford reads as digits (`O` as 0, `I` and `L` as 1) replaced.
#[must_use]
pub fn normalize(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

/// The hash the API stores for a code: SHA-256 of the normalized code, lowercase hex.
/// (100 bits of entropy need no slow hash.)
#[must_use]
pub fn hash_code(code: &str) -> String {
    hex::encode(Sha256::digest(normalize(code).as_bytes()))
}
