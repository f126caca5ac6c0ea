//! Running one piece of SQL on whichever backend the store opened.
//!
//! The store's modules write their SQL once inside a macro that is expanded for SQLite and
//! for PostgreSQL (see `sql.rs`). [`on_backend!`] picks the expansion at run time and
//! hands the body a connection: a pooled reader for `read`, a transaction for `write`
//! that commits when the body succeeds and rolls back (on drop) when it returns early
//! with an error.

/// `on_backend!(store, sqlite_mod, pg_mod, read|write, |conn, m| body)`: run `body` with
/// `conn` a connection of the store's backend and `m` the module expanded for it.
macro_rules! on_backend {
    ($store:expr, $sqlite:ident, $pg:ident, write, |$conn:ident, $m:ident| $body:expr) => {
        match &$store.inner.db {
            $crate::db::Db::Sqlite { write, .. } => {
                use $sqlite as $m;
                let mut tx = write.begin().await?;
                let $conn = &mut *tx;
                let out = $body;
                tx.commit().await?;
                // After the commit: a read that starts now sees the write (auth_cache).
                $store.inner.auth.invalidate();
                out
            }
            $crate::db::Db::Postgres { pool, .. } => {
                use $pg as $m;
                let mut tx = pool.begin().await?;
                let $conn = &mut *tx;
                let out = $body;
                $crate::auth_cache::notify_nodes(&mut tx).await?;
                tx.commit().await?;
                $store.inner.auth.invalidate();
                out
            }
        }
    };
    // A write that changes nothing authentication reads (a token's last use), so it
    // leaves the auth cache alone.
    ($store:expr, $sqlite:ident, $pg:ident, write_untracked, |$conn:ident, $m:ident| $body:expr) => {
        match &$store.inner.db {
            $crate::db::Db::Sqlite { write, .. } => {
                use $sqlite as $m;
                let mut tx = write.begin().await?;
                let $conn = &mut *tx;
                let out = $body;
                tx.commit().await?;
                out
            }
            $crate::db::Db::Postgres { pool, .. } => {
                use $pg as $m;
                let mut tx = pool.begin().await?;
                let $conn = &mut *tx;
                let out = $body;
                tx.commit().await?;
                out
            }
        }
    };
    ($store:expr, $sqlite:ident, $pg:ident, read, |$conn:ident, $m:ident| $body:expr) => {
        match &$store.inner.db {
            $crate::db::Db::Sqlite { read, .. } => {
                use $sqlite as $m;
                let mut c = read.acquire().await?;
                let $conn = &mut *c;
                $body
            }
            $crate::db::Db::Postgres { pool, .. } => {
                use $pg as $m;
                let mut c = pool.acquire().await?;
                let $conn = &mut *c;
                $body
            }
        }
    };
}

/// Random secrets handed to people once (reset links, invitations, API tokens) and the
/// hashes the store keeps instead of them.
///
/// A secret is 32 bytes from the operating system's generator, shown as 64 hex digits.
/// It carries 256 bits of entropy, so a plain SHA-256 is a sound way to store it: no
/// salt or slow hash is needed against guessing, and lookups by hash stay indexed.
pub(crate) mod secrets {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    use sha2::{Digest, Sha256};

    /// A fresh secret, with `prefix` in front (e.g. `kw_` for API tokens, so leaked
    /// tokens are recognisable to secret scanners).
    pub(crate) fn fresh(prefix: &str) -> String {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        format!("{prefix}{}", hex::encode(bytes))
    }

    /// The hash stored for `secret`.
    pub(crate) fn hash(secret: &str) -> String {
        hex::encode(Sha256::digest(secret.as_bytes()))
    }

    /// The SHA-256 of `bytes`, as hex.
    pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }
}
