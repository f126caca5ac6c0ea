//! One-time IQ enrolment codes (the link's PROTOCOL.md, 2.2): making them, and hashing
//! them for storage.
//!
//! The HTTP API makes a code when an admin registers or resets an IQ and keeps only its
//! hash ([`Devices::issue_enrolment_code`](crate::Devices::issue_enrolment_code)); the link
//! hashes the code an IQ presents and redeems it. Both sides use this module, so they
//! cannot disagree on the hash. A code is a secret: it is never logged.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

/// Crockford's base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in a code: 20 x 5 bits = 100 bits.
pub const CODE_LEN: usize = 20;

/// A new enrolment code: 20 characters of Crockford base32 from the operating system's
/// generator.
#[must_use]
pub fn new_code() -> String {
    let mut bytes = [0u8; CODE_LEN];
    OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(ALPHABET.get(usize::from(b & 0x1f)).copied().unwrap_or(b'0')))
        .collect()
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

/// The hash stored for a code: SHA-256 of the normalized code, lowercase hex. (100 bits
/// of entropy need no slow hash.)
#[must_use]
pub fn hash_code(code: &str) -> String {
    hex::encode(Sha256::digest(normalize(code).as_bytes()))
}
