//! Framing: turns [`Message`]s into self-delimiting, checksummed frames on a byte stream and
//! back. Both ends use it over whatever [`super::Stream`] connects them (a UART, a PTY, TCP).
//!
//! A frame on the wire is `COBS([PROTOCOL_VERSION] ++ postcard(Message) ++ crc32_le) ++ 0x00`,
//! where the CRC (IEEE, as crc32fast computes it) covers the version byte and the postcard
//! bytes. COBS removes every 0 from the frame so 0 marks its end: a reader that starts in the
//! middle of a stream, or loses bytes, finds the next frame at the next 0.

use super::msg::{Message, PROTOCOL_VERSION};
use std::io::{self, Read, Write};
use thiserror::Error;

/// Bytes of the CRC trailer inside a frame.
const CRC_LEN: usize = 4;
/// Bytes [`FrameReader`] asks its reader for at a time.
pub const READ_CHUNK: usize = 8192;

/// Why one frame could not be turned into a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The bytes between two 0s are not valid COBS.
    #[error("bad frame: invalid COBS encoding")]
    Cobs,
    /// Too few bytes for a version byte and a CRC.
    #[error("bad frame: too short for a version byte and a CRC")]
    Short,
    /// The CRC carried by the frame (`expected`) differs from the one computed over the bytes
    /// received (`got`).
    #[error("bad frame: CRC mismatch (frame carries {expected:#010x}, bytes give {got:#010x})")]
    Crc { expected: u32, got: u32 },
    /// The frame is intact but made by another protocol version.
    #[error("bad frame: protocol version {0}, this end speaks version {PROTOCOL_VERSION}")]
    Version(u8),
    /// The checksum holds but postcard could not read a message from the bytes.
    #[error("bad frame: cannot decode message: {0}")]
    Decode(String),
    /// The frame is longer than the reader accepts; `len` is how many of its bytes had
    /// arrived when the reader gave up on it (its full length may be larger).
    #[error("bad frame: {len} bytes or more, larger than the {max}-byte limit")]
    Oversized { len: usize, max: usize },
}

/// Why reading or writing a message failed.
#[derive(Debug, Error)]
pub enum LinkError {
    #[error("link I/O error: {0}")]
    Io(#[source] io::Error),
    /// No data within the stream's timeout (io `WouldBlock` / `TimedOut`).
    #[error("link timed out")]
    Timeout,
    /// A write the other end took no bytes of within the stream's write timeout (it stopped
    /// reading: a dead peer behind a PTY bridge or flow control, a full buffer). Part of the
    /// frame may have gone out; a 0 ([`write_sync`]) ends it before the next frame.
    #[error("link write timed out: the other end is not taking bytes")]
    WriteTimeout,
    /// The other end went away (end of stream, broken pipe, connection reset).
    #[error("link closed by the other end")]
    Closed,
    /// One frame was bad; the stream is still usable and the next read goes on with the next
    /// frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl LinkError {
    /// Whether this was one bad frame (the link itself is still usable).
    pub fn is_frame(&self) -> bool {
        matches!(self, LinkError::Frame(_))
    }

    /// Whether this was a timeout (the link may still be usable).
    pub fn is_timeout(&self) -> bool {
        matches!(self, LinkError::Timeout)
    }
}

impl LinkError {
    /// A failed write: a timeout is [`LinkError::WriteTimeout`] (unlike a read's, it may have
    /// left a frame half sent), the rest as `From` maps them.
    pub fn from_write(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => LinkError::WriteTimeout,
            _ => e.into(),
        }
    }
}

impl From<io::Error> for LinkError {
    fn from(e: io::Error) -> Self {
        use io::ErrorKind::*;
        match e.kind() {
            WouldBlock | TimedOut => LinkError::Timeout,
            UnexpectedEof | BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected => LinkError::Closed,
            _ => LinkError::Io(e),
        }
    }
}

/// The whole frame for `msg`, trailing 0 included.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut raw = Vec::with_capacity(64);
    raw.push(PROTOCOL_VERSION);
    // Serialising these types to a Vec cannot fail: every field is a plain value, string,
    // sequence or option, with lengths postcard can always write.
    let raw = postcard::to_extend(msg, raw).expect("postcard serialises every Message");
    let mut body = raw;
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    let mut out = vec![0u8; cobs::max_encoding_length(body.len()) + 1];
    let n = cobs::encode(&body, &mut out);
    out.truncate(n);
    out.push(0);
    out
}

/// The message in one frame (`frame` without its trailing 0).
pub fn decode(frame: &[u8]) -> Result<Message, FrameError> {
    let mut buf = frame.to_vec();
    decode_in_place(&mut buf)
}

/// [`decode`] that COBS-decodes in `buf`, overwriting it.
fn decode_in_place(buf: &mut [u8]) -> Result<Message, FrameError> {
    if buf.is_empty() {
        return Err(FrameError::Short);
    }
    if buf.contains(&0) {
        return Err(FrameError::Cobs);
    }
    let report = cobs::decode_in_place_report(buf).map_err(|_| FrameError::Cobs)?;
    if report.src_used != buf.len() {
        return Err(FrameError::Cobs);
    }
    let raw = &buf[..report.dst_used];
    if raw.len() < 1 + CRC_LEN {
        return Err(FrameError::Short);
    }
    let (body, trailer) = raw.split_at(raw.len() - CRC_LEN);
    let expected = u32::from_le_bytes(trailer.try_into().expect("4 bytes"));
    let got = crc32fast::hash(body);
    if expected != got {
        return Err(FrameError::Crc { expected, got });
    }
    if body[0] != PROTOCOL_VERSION {
        return Err(FrameError::Version(body[0]));
    }
    let (msg, rest) =
        postcard::take_from_bytes::<Message>(&body[1..]).map_err(|e| FrameError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Decode(format!("{} bytes left after the message", rest.len())));
    }
    Ok(msg)
}

/// Writes one frame for `msg`, flushes, and returns the bytes written (trailing 0 included).
/// On a [`super::Stream`] it ends within the stream's write timeout: a peer that takes no
/// bytes fails it with [`LinkError::WriteTimeout`].
pub fn write_msg<W: Write>(w: &mut W, msg: &Message) -> Result<usize, LinkError> {
    let frame = encode(msg);
    w.write_all(&frame).map_err(LinkError::from_write)?;
    w.flush().map_err(LinkError::from_write)?;
    Ok(frame.len())
}

/// Writes a lone 0 and flushes. A reader counts it as an empty frame and skips it; its use is
/// to end whatever line noise (a board's boot messages, a half-sent frame) came before, so the
/// next frame is not joined to it. Worth sending once when a serial link is opened.
pub fn write_sync<W: Write>(w: &mut W) -> Result<(), LinkError> {
    w.write_all(&[0]).map_err(LinkError::from_write)?;
    w.flush().map_err(LinkError::from_write)?;
    Ok(())
}

/// Reads messages from a byte stream, frame by frame.
///
/// It reads in chunks of [`READ_CHUNK`] bytes and keeps what follows a frame for the next
/// call. A bad frame is reported once as [`LinkError::Frame`] and the next call goes on with
/// the frame after it. It never holds more than `max_frame` + one chunk: a frame longer than
/// `max_frame` (COBS bytes, terminator excluded) is reported once as
/// [`FrameError::Oversized`] and the rest of it is discarded as it arrives, up to its 0.
/// A timeout of the underlying reader is returned as [`LinkError::Timeout`] and loses nothing:
/// a frame half read stays buffered for the next call.
pub struct FrameReader<R: Read> {
    inner: R,
    max_frame: usize,
    /// Bytes read and not yet consumed are `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    /// `buf[start..scanned]` holds no 0.
    scanned: usize,
    /// Inside an oversized frame: drop bytes up to the next 0.
    discarding: bool,
    /// Bytes of the stream taken past so far (see `consumed`).
    consumed: u64,
    /// Bytes read from `inner` so far.
    read: u64,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R, max_frame: usize) -> Self {
        FrameReader {
            inner,
            max_frame: max_frame.max(1),
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            discarding: false,
            consumed: 0,
            read: 0,
        }
    }

    /// The next message. See the type's documentation for what errors mean.
    pub fn read_msg(&mut self) -> Result<Message, LinkError> {
        loop {
            if let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == 0) {
                let end = self.scanned + pos;
                let (start, discarding) = (self.start, self.discarding);
                self.start = end + 1;
                self.scanned = self.start;
                self.consumed += (end + 1 - start) as u64;
                self.discarding = false;
                let len = end - start;
                if discarding || len == 0 {
                    continue;
                }
                if len > self.max_frame {
                    return Err(FrameError::Oversized { len, max: self.max_frame }.into());
                }
                return decode_in_place(&mut self.buf[start..end]).map_err(LinkError::Frame);
            }
            self.scanned = self.buf.len();
            let pending = self.buf.len() - self.start;
            if self.discarding {
                self.consumed += pending as u64;
                self.clear();
            } else if pending > self.max_frame {
                self.consumed += pending as u64;
                self.clear();
                self.discarding = true;
                return Err(FrameError::Oversized { len: pending, max: self.max_frame }.into());
            }
            self.fill()?;
        }
    }

    /// Reads one chunk onto the end of the buffer, compacting it first.
    fn fill(&mut self) -> Result<(), LinkError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        loop {
            match self.inner.read(&mut self.buf[old..]) {
                Ok(0) => {
                    self.buf.truncate(old);
                    return Err(LinkError::Closed);
                }
                Ok(n) => {
                    self.buf.truncate(old + n);
                    self.read += n as u64;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e.into());
                }
            }
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
    }

    /// Bytes received and not yet returned as messages (part of a frame, or further frames).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes of the stream the reader has finished with: every frame returned or rejected
    /// with its 0, empty frames, and discarded bytes. The difference across a `read_msg` call
    /// is what that call took off the link.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Bytes read from the underlying reader so far (`consumed()` + `buffered()`).
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Changes the frame limit, e.g. to what the handshake agreed.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame.max(1);
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The reader back; bytes still buffered are lost.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
