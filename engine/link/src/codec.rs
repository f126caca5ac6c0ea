//! The frame codec (PROTOCOL.md section 3): a `u32` length, a 12-byte header and a body.
//!
//! The decoder follows mini-redis's check-then-parse: it looks at the length prefix
//! first and refuses a length under the header size or over the port's maximum before it
//! reserves or reads anything else; only a complete frame is split off and parsed.
//! Sequence numbers are checked by the connection, not here.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

/// The bytes of the header after the length prefix: type, flags, seq, reply_to.
pub const HEADER_LEN: usize = 12;
/// The largest `length` the control port (40000) accepts.
pub const CONTROL_MAX_FRAME: usize = 65_536;
/// The largest `length` the bulk port (40001) accepts.
pub const BULK_MAX_FRAME: usize = 1_048_576;

/// One frame: a message type, its sequence numbers and its undecoded body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The message type.
    pub msg_type: u16,
    /// Reserved flags; sent as 0, ignored when received.
    pub flags: u16,
    /// The sender's frame number on this connection (1, 2, 3, ...).
    pub seq: u32,
    /// The `seq` of the peer's frame this one answers, or 0.
    pub reply_to: u32,
    /// The message's fields.
    pub body: Bytes,
}

/// What can go wrong reading or writing frames.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The transport failed.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// A length prefix over the port's maximum.
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// The length announced (or, when sending, the length needed).
        len: usize,
        /// The port's maximum.
        max: usize,
    },
    /// A length prefix under the header's size.
    #[error("frame length {0} is under the header size")]
    TooShort(usize),
}

/// The codec for one port: frames of at most `max_len` bytes after the length prefix.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_len: usize,
}

impl FrameCodec {
    /// A codec refusing frames longer than `max_len`.
    #[must_use]
    pub const fn new(max_len: usize) -> Self {
        FrameCodec { max_len }
    }

    /// The control port's codec.
    #[must_use]
    pub const fn control() -> Self {
        FrameCodec::new(CONTROL_MAX_FRAME)
    }

    /// The bulk port's codec.
    #[must_use]
    pub const fn bulk() -> Self {
        FrameCodec::new(BULK_MAX_FRAME)
    }

    /// The largest frame length accepted.
    #[must_use]
    pub const fn max_len(&self) -> usize {
        self.max_len
    }

    /// Checks a buffer for a complete frame, reading nothing beyond the length prefix:
    /// [`Check::Incomplete`] if more bytes are needed (with the total size wanted, once
    /// the prefix is there), [`Check::Complete`] if a whole frame is there, an error if
    /// the length prefix is out of bounds.
    pub fn check(&self, src: &[u8]) -> Result<Check, FrameError> {
        let Some(prefix) = src.get(..4) else {
            return Ok(Check::Incomplete { total: None });
        };
        let mut raw = [0u8; 4];
        raw.copy_from_slice(prefix);
        let len = usize::try_from(u32::from_be_bytes(raw)).unwrap_or(usize::MAX);
        if len < HEADER_LEN {
            return Err(FrameError::TooShort(len));
        }
        if len > self.max_len {
            return Err(FrameError::TooLarge { len, max: self.max_len });
        }
        if src.len() - 4 < len {
            return Ok(Check::Incomplete { total: Some(4 + len) });
        }
        Ok(Check::Complete { len })
    }
}

/// What [`FrameCodec::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// More bytes are needed; `total` is the whole frame's size once the prefix is known.
    Incomplete {
        /// Prefix plus frame, when known.
        total: Option<usize>,
    },
    /// A whole frame of `len` bytes (after the prefix) is buffered.
    Complete {
        /// The frame's length field.
        len: usize,
    },
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let len = match self.check(src)? {
            Check::Incomplete { total } => {
                // The length is within bounds here: reserve for the rest of the frame so
                // that it arrives in one buffer.
                if let Some(total) = total {
                    src.reserve(total.saturating_sub(src.len()));
                }
                return Ok(None);
            }
            Check::Complete { len } => len,
        };
        src.advance(4);
        let mut frame = src.split_to(len);
        let msg_type = frame.get_u16();
        let flags = frame.get_u16();
        let seq = frame.get_u32();
        let reply_to = frame.get_u32();
        Ok(Some(Frame {
            msg_type,
            flags,
            seq,
            reply_to,
            body: frame.freeze(),
        }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = HEADER_LEN + frame.body.len();
        if len > self.max_len {
            return Err(FrameError::TooLarge { len, max: self.max_len });
        }
        let len32 = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max: self.max_len })?;
        dst.reserve(4 + len);
        dst.put_u32(len32);
        dst.put_u16(frame.msg_type);
        dst.put_u16(frame.flags);
        dst.put_u32(frame.seq);
        dst.put_u32(frame.reply_to);
        dst.put_slice(&frame.body);
        Ok(())
    }
}
