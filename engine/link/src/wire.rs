//! The field encoding of PROTOCOL.md section 4: big-endian integers, `opt`, length-prefixed
//! bytes and strings, lists, and append-only records.
//!
//! [`Reader`] checks every length and count against its limit before it reads or
//! allocates, and never panics: running out of bytes is [`DecodeError::Truncated`].
//! [`Writer`] appends to a `BytesMut`; records get their length patched in afterwards.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

/// Why a body or a field did not decode.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes ended before a field did.
    #[error("truncated: `{0}` ends early")]
    Truncated(&'static str),
    /// A length or count is over its limit.
    #[error("`{field}` is {got}, over its limit of {limit}")]
    TooLong {
        field: &'static str,
        /// What the peer sent.
        got: usize,
        /// The most allowed.
        limit: usize,
    },
    /// A value out of its allowed set (a bool that is not 0 or 1, say).
    #[error("`{0}` has an invalid value")]
    Invalid(&'static str),
    /// A string that is not UTF-8.
    #[error("`{0}` is not utf-8")]
    Utf8(&'static str),
}

/// Reads fields from a body or a record, in order.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    #[must_use]
    pub const fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Whether every byte was read. Left-over bytes are fields of a newer version and are
    /// ignored (PROTOCOL.md 4.1), so this is for optional trailing fields.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// A `u8`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A big-endian two's complement `i64`.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// A `bool`: 0 or 1.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid(field)),
        }
    }

    /// An `opt<T>`: a presence byte, then the value.
    pub fn opt<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(DecodeError::Invalid(field)),
        }
    }

    /// A 32-byte digest.
    pub fn sha256(&mut self, field: &'static str) -> Result<[u8; 32], DecodeError> {
        self.array(field)
    }

    fn checked(len: usize, limit: usize, field: &'static str) -> Result<usize, DecodeError> {
        if len > limit {
            return Err(DecodeError::TooLong { field, got: len, limit });
        }
        Ok(len)
    }

    /// A `bytes8` of at most `limit` bytes, borrowed.
    pub fn bytes8(&mut self, limit: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = Self::checked(usize::from(self.u8(field)?), limit, field)?;
        self.take(len, field)
    }

    /// A `bytes16` of at most `limit` bytes, borrowed.
    pub fn bytes16(&mut self, limit: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = Self::checked(usize::from(self.u16(field)?), limit, field)?;
        self.take(len, field)
    }

    /// A `bytes32` of at most `limit` bytes, borrowed.
    pub fn bytes32(&mut self, limit: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let raw = usize::try_from(self.u32(field)?).map_err(|_| DecodeError::Invalid(field))?;
        let len = Self::checked(raw, limit, field)?;
        self.take(len, field)
    }

    /// A `str` of at most `limit` bytes.
    pub fn str(&mut self, limit: usize, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.bytes16(limit, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8(field))
    }

    /// A `list<T>` of at most `limit` values, each read by `read`. The count is checked
    /// before anything is allocated, and the allocation is bounded by the bytes left.
    pub fn list<T>(
        &mut self,
        limit: usize,
        field: &'static str,
        mut read: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = Self::checked(usize::from(self.u16(field)?), limit, field)?;
        let mut out = Vec::with_capacity(count.min(self.buf.len()));
        for _ in 0..count {
            out.push(read(self)?);
        }
        Ok(out)
    }

    /// A `rec{...}`: a `u16` length, then fields read by `read` from exactly those bytes;
    /// bytes `read` leaves are a newer version's fields and are skipped.
    pub fn rec<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let len = usize::from(self.u16(field)?);
        let mut inner = Reader::new(self.take(len, field)?);
        read(&mut inner)
    }
}

/// Appends fields to a buffer.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut BytesMut,
}

/// A value too large for its field, found while encoding (a caller bug, reported, never a
/// panic).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("`{field}` is {got}, over its limit of {limit}")]
pub struct EncodeError {
    pub field: &'static str,
    /// Its size.
    pub got: usize,
    /// The most allowed.
    pub limit: usize,
}

impl<'a> Writer<'a> {
    /// A writer appending to `buf`.
    pub fn new(buf: &'a mut BytesMut) -> Self {
        Writer { buf }
    }

    fn check(len: usize, limit: usize, field: &'static str) -> Result<(), EncodeError> {
        if len > limit {
            return Err(EncodeError { field, got: len, limit });
        }
        Ok(())
    }

    /// A `u8`.
    pub fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }

    /// A `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.put_u16(v);
    }

    /// A `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.put_u32(v);
    }

    /// A `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.put_u64(v);
    }

    /// An `i64`.
    pub fn i64(&mut self, v: i64) {
        self.buf.put_i64(v);
    }

    /// A `bool`.
    pub fn bool(&mut self, v: bool) {
        self.buf.put_u8(u8::from(v));
    }

    /// An `opt<T>`.
    pub fn opt<T>(
        &mut self,
        v: Option<T>,
        write: impl FnOnce(&mut Self, T) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        match v {
            None => {
                self.u8(0);
                Ok(())
            }
            Some(v) => {
                self.u8(1);
                write(self, v)
            }
        }
    }

    /// A 32-byte digest.
    pub fn sha256(&mut self, v: &[u8; 32]) {
        self.buf.put_slice(v);
    }

    /// A `bytes8` of at most `limit` (and 255) bytes.
    pub fn bytes8(&mut self, v: &[u8], limit: usize, field: &'static str) -> Result<(), EncodeError> {
        Self::check(v.len(), limit.min(usize::from(u8::MAX)), field)?;
        let len = u8::try_from(v.len()).map_err(|_| EncodeError {
            field,
            got: v.len(),
            limit,
        })?;
        self.buf.put_u8(len);
        self.buf.put_slice(v);
        Ok(())
    }

    /// A `bytes16` of at most `limit` (and 65,535) bytes.
    pub fn bytes16(&mut self, v: &[u8], limit: usize, field: &'static str) -> Result<(), EncodeError> {
        Self::check(v.len(), limit.min(usize::from(u16::MAX)), field)?;
        let len = u16::try_from(v.len()).map_err(|_| EncodeError {
            field,
            got: v.len(),
            limit,
        })?;
        self.buf.put_u16(len);
        self.buf.put_slice(v);
        Ok(())
    }

    /// A `bytes32` of at most `limit` bytes.
    pub fn bytes32(&mut self, v: &[u8], limit: usize, field: &'static str) -> Result<(), EncodeError> {
        Self::check(v.len(), limit, field)?;
        let len = u32::try_from(v.len()).map_err(|_| EncodeError {
            field,
            got: v.len(),
            limit,
        })?;
        self.buf.put_u32(len);
        self.buf.put_slice(v);
        Ok(())
    }

    /// A `str` of at most `limit` bytes.
    pub fn str(&mut self, v: &str, limit: usize, field: &'static str) -> Result<(), EncodeError> {
        self.bytes16(v.as_bytes(), limit, field)
    }

    /// A `list<T>` of at most `limit` (and 65,535) values.
    pub fn list<T>(
        &mut self,
        items: &[T],
        limit: usize,
        field: &'static str,
        mut write: impl FnMut(&mut Self, &T) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        Self::check(items.len(), limit.min(usize::from(u16::MAX)), field)?;
        let count = u16::try_from(items.len()).map_err(|_| EncodeError {
            field,
            got: items.len(),
            limit,
        })?;
        self.buf.put_u16(count);
        for item in items {
            write(self, item)?;
        }
        Ok(())
    }

    /// A `rec{...}`: writes the fields through `write`, then patches in their length.
    pub fn rec(
        &mut self,
        field: &'static str,
        write: impl FnOnce(&mut Writer<'_>) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let at = self.buf.len();
        self.buf.put_u16(0);
        write(&mut Writer { buf: self.buf })?;
        let len = self.buf.len() - at - 2;
        let len16 = u16::try_from(len).map_err(|_| EncodeError {
            field,
            got: len,
            limit: usize::from(u16::MAX),
        })?;
        if let Some(slot) = self.buf.get_mut(at..at + 2) {
            slot.copy_from_slice(&len16.to_be_bytes());
        }
        Ok(())
    }
}
