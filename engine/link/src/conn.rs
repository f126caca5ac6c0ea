//! One side of a connection, shared by the server's sessions and the client: a reader
//! that checks sequence numbers and decodes messages, an [`Outbox`] that numbers outgoing
//! frames and queues them (bounded), and a writer task that writes the queue with a
//! timeout per frame.
//!
//! The queue is the session's backpressure: the server enqueues with
//! [`Outbox::try_push`] and treats a full queue as a peer that does not read, so one slow
//! IQ can never hold up anyone else.

use crate::codec::{Frame, FrameCodec, FrameError};
use crate::message::{ErrorCode, ErrorFrame, Message, MessageError};
use crate::wire::EncodeError;
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// A frame read and checked: its sequence numbers and its message (or why the body did
/// not decode, which the frame boundary makes survivable).
#[derive(Debug)]
pub struct Received {
    /// The peer's frame number.
    pub seq: u32,
    /// The frame it answers, or 0.
    pub reply_to: u32,
    /// The message type.
    pub msg_type: u16,
    /// The decoded message.
    pub message: Result<Message, MessageError>,
}

/// Why reading stopped.
#[derive(Debug, Error)]
pub enum ReadError {
    /// Framing failed (transport, a length out of bounds).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame number that is not the previous plus one.
    #[error("frame {got} out of sequence, expected {expected}")]
    OutOfSequence {
        /// What was expected.
        expected: u32,
        /// What came.
        got: u32,
    },
}

impl ReadError {
    /// The error frame this deserves, if the peer can still be told: `None` when the
    /// transport itself failed.
    #[must_use]
    pub fn error_frame(&self) -> Option<ErrorFrame> {
        let (code, message) = match self {
            ReadError::Frame(FrameError::Io(_)) => return None,
            ReadError::Frame(FrameError::TooLarge { len, max }) => (
                ErrorCode::FrameTooLarge,
                format!("frame of {len} bytes is over the limit of {max}"),
            ),
            ReadError::Frame(FrameError::TooShort(len)) => (
                ErrorCode::Malformed,
                format!("frame length {len} is under the header size"),
            ),
            ReadError::OutOfSequence { expected, got } => (
                ErrorCode::OutOfSequence,
                format!("frame {got} out of sequence, expected {expected}"),
            ),
        };
        Some(ErrorFrame {
            code,
            fatal: true,
            message,
        })
    }
}

/// The next frame number after `seq` (1, 2, ..., 2^32-1, 1, ...).
#[must_use]
pub const fn next_seq(seq: u32) -> u32 {
    if seq == u32::MAX { 1 } else { seq + 1 }
}

/// Reads frames from one half of a connection and checks their sequence numbers.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: FramedRead<R, FrameCodec>,
    expected: u32,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with `codec`'s size limit.
    pub fn new(read: R, codec: FrameCodec) -> Self {
        FrameReader {
            inner: FramedRead::new(read, codec),
            expected: 1,
        }
    }

    /// The next frame; `Ok(None)` when the peer closed the connection cleanly.
    pub async fn next(&mut self) -> Result<Option<Received>, ReadError> {
        let Some(frame) = self.inner.next().await.transpose()? else {
            return Ok(None);
        };
        if frame.seq != self.expected {
            return Err(ReadError::OutOfSequence {
                expected: self.expected,
                got: frame.seq,
            });
        }
        self.expected = next_seq(self.expected);
        Ok(Some(Received {
            seq: frame.seq,
            reply_to: frame.reply_to,
            msg_type: frame.msg_type,
            message: Message::decode(frame.msg_type, &frame.body),
        }))
    }
}

/// Why a frame could not be queued.
#[derive(Debug, Error)]
pub enum PushError {
    /// The message does not encode (a value over a limit: a bug of the caller).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The queue is full: the peer does not read.
    #[error("outgoing queue full")]
    Full,
    /// The writer is gone (the connection is closed).
    #[error("connection closed")]
    Closed,
}

/// Numbers outgoing frames and queues them for the writer task.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Frame>,
    next: u32,
    wait: Duration,
}

fn encode(message: &Message) -> Result<bytes::Bytes, EncodeError> {
    let mut body = BytesMut::new();
    message.encode_body(&mut body)?;
    Ok(body.freeze())
}

impl Outbox {
    /// The frame number the next queued frame will get.
    #[must_use]
    pub const fn peek_seq(&self) -> u32 {
        self.next
    }

    /// Queues `message` if there is room, returning its frame number.
    pub fn try_push(&mut self, message: &Message, reply_to: u32) -> Result<u32, PushError> {
        let body = encode(message)?;
        let permit = self.tx.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => PushError::Full,
            mpsc::error::TrySendError::Closed(()) => PushError::Closed,
        })?;
        let seq = self.next;
        permit.send(Frame {
            msg_type: message.msg_type(),
            flags: 0,
            seq,
            reply_to,
            body,
        });
        self.next = next_seq(seq);
        Ok(seq)
    }

    /// Queues `message`, waiting for room, returning its frame number.
    pub async fn push(&mut self, message: &Message, reply_to: u32) -> Result<u32, PushError> {
        let body = encode(message)?;
        let permit = self.tx.reserve().await.map_err(|_| PushError::Closed)?;
        let seq = self.next;
        permit.send(Frame {
            msg_type: message.msg_type(),
            flags: 0,
            seq,
            reply_to,
            body,
        });
        self.next = next_seq(seq);
        Ok(seq)
    }

    /// Queues `message`, waiting for room at most the write timeout: a queue that stays
    /// full that long belongs to a peer that does not read ([`PushError::Full`]). This is
    /// the session's backpressure: while it waits, it reads no more requests.
    pub async fn push_within(&mut self, message: &Message, reply_to: u32) -> Result<u32, PushError> {
        let wait = self.wait;
        match tokio::time::timeout(wait, self.push(message, reply_to)).await {
            Ok(pushed) => pushed,
            Err(_) => Err(PushError::Full),
        }
    }

    /// Queues a raw frame with the next number, whatever its type and body (tests send
    /// unknown types and bad bodies through it).
    pub async fn push_raw(&mut self, msg_type: u16, body: bytes::Bytes, reply_to: u32) -> Result<u32, PushError> {
        let permit = self.tx.reserve().await.map_err(|_| PushError::Closed)?;
        let seq = self.next;
        permit.send(Frame {
            msg_type,
            flags: 0,
            seq,
            reply_to,
            body,
        });
        self.next = next_seq(seq);
        Ok(seq)
    }
}

/// Starts the writer task for the write half `write`: it writes each queued frame within
/// `write_timeout`, and cancels `dead` when a write fails or times out. When every
/// [`Outbox`] is dropped it flushes and shuts the stream down (TLS close_notify).
pub fn spawn_writer<W>(
    write: W,
    codec: FrameCodec,
    queue: usize,
    write_timeout: Duration,
    dead: CancellationToken,
) -> (Outbox, tokio::task::JoinHandle<()>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Frame>(queue.max(1));
    let handle = tokio::spawn(async move {
        let mut sink = FramedWrite::new(write, codec);
        loop {
            let frame = tokio::select! {
                frame = rx.recv() => frame,
                () = dead.cancelled() => break,
            };
            let Some(frame) = frame else {
                break;
            };
            // Feed the frames already queued (a bounded batch), then flush once; the
            // whole write is bounded by the timeout, whatever the peer does.
            let written = tokio::time::timeout(write_timeout, async {
                sink.feed(frame).await?;
                for _ in 0..64 {
                    match rx.try_recv() {
                        Ok(more) => sink.feed(more).await?,
                        Err(_) => break,
                    }
                }
                sink.flush().await
            })
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "link write failed");
                    dead.cancel();
                    return;
                }
                Err(_) => {
                    tracing::info!("link write timed out; closing the connection");
                    dead.cancel();
                    return;
                }
            }
        }
        let mut write = sink.into_inner();
        let _closed = tokio::time::timeout(write_timeout, write.shutdown()).await;
    });
    (
        Outbox {
            tx,
            next: 1,
            wait: write_timeout,
        },
        handle,
    )
}
