//! HTTP/1.1 framing for both ends of OIP v2: one buffered reader of message heads and bodies
//! (Content-Length or chunked, with limits and deadlines) over a link `Stream`, that counts the
//! bytes it moves. The device's client (`offload::oip::HttpConn`) reads responses with it, the host's
//! endpoint (`server`) request bodies; the endpoint's poller reads request heads with
//! `parse_request_head`. Heads are parsed by httparse (hyper's parser).

use crate::link::Stream;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest message head taken.
pub const MAX_HEAD: usize = 64 << 10;
/// The most header lines a head may have.
const MAX_HEADERS: usize = 64;

/// Why reading or writing a message failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("bad HTTP message: {0}")]
    Protocol(String),
    /// A head or body over its limit.
    #[error("{0}")]
    TooLarge(String),
}

impl HttpError {
    /// The deadline passed before the message was whole.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HttpError::Io(e) if e.kind() == io::ErrorKind::TimedOut)
    }
}

/// A header's value by name, in any case.
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Sized(usize),
    Chunked,
    /// Up to the end of the connection (responses only).
    UntilClose,
}

impl Framing {
    /// The framing a head's headers give; `otherwise` when they name none.
    pub fn of(headers: &[(String, String)], otherwise: Framing) -> Result<Framing, HttpError> {
        if let Some(te) = find_header(headers, "transfer-encoding") {
            // Chunked must be the last coding; no other coding is taken.
            return if te.eq_ignore_ascii_case("chunked") {
                Ok(Framing::Chunked)
            } else {
                Err(HttpError::Protocol(format!("Transfer-Encoding '{te}' is not supported (only chunked)")))
            };
        }
        match find_header(headers, "content-length") {
            Some(v) => v
                .parse()
                .map(Framing::Sized)
                .map_err(|_| HttpError::Protocol(format!("Content-Length '{v}' is not a number of bytes"))),
            None => Ok(otherwise),
        }
    }
}

/// A connection's bytes, buffered: reads heads and bodies, writes whole messages.
pub struct Wire {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    pub sent: u64,
    pub received: u64,
    /// Reading gives up when this is set (the host shutting down).
    stop: Option<Arc<AtomicBool>>,
}

impl Wire {
    /// `stream` should have a short read timeout set (it is polled up to each deadline).
    pub fn new(stream: Box<dyn Stream>) -> Wire {
        Wire { stream, buf: Vec::new(), sent: 0, received: 0, stop: None }
    }

    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Wire {
        self.stop = Some(stop);
        self
    }

    /// Starts with `bytes` already read from the stream (by whoever read it before).
    pub fn with_buffered(mut self, bytes: Vec<u8>) -> Wire {
        self.buf = bytes;
        self
    }

    /// Takes the bytes read but not yet taken (the start of a next request), to read on elsewhere.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub fn set_read_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(t))
    }

    /// Bytes read but not yet taken.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()?;
        self.sent += bytes.len() as u64;
        Ok(())
    }

    /// Reads more bytes; an error when the peer closes, at the deadline, or on stop.
    pub fn fill(&mut self, deadline: Instant) -> io::Result<()> {
        let mut chunk = [0u8; 16 << 10];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection")),
                Ok(n) => {
                    self.received += n as u64;
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no message in time"));
            }
            if self.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "shutting down"));
            }
        }
    }

    /// Reads one head with `parse` (httparse's request or response parser on the buffered
    /// bytes: the parsed head and its length once complete), and takes it from the buffer.
    fn read_head<T>(
        &mut self,
        deadline: Instant,
        mut parse: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, String>,
    ) -> Result<T, HttpError> {
        loop {
            match head_within_limit(&self.buf, &mut parse)? {
                Some((head, n)) => {
                    self.buf.drain(..n);
                    return Ok(head);
                }
                None => self.fill(deadline)?,
            }
        }
    }

    /// A request head: method, target, HTTP minor version, headers.
    pub fn read_request_head(&mut self, deadline: Instant) -> Result<RequestHead, HttpError> {
        self.read_head(deadline, parse_request)
    }

    /// A response head: status and headers.
    pub fn read_response_head(&mut self, deadline: Instant) -> Result<(u16, Vec<(String, String)>), HttpError> {
        self.read_head(deadline, |buf| {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut slots);
            match resp.parse(buf).map_err(|e| format!("{e}"))? {
                httparse::Status::Complete(n) => Ok(Some(((resp.code.unwrap_or(0), owned(resp.headers)), n))),
                httparse::Status::Partial => Ok(None),
            }
        })
    }

    /// A body as `framing` delimits it, refused past `max` bytes.
    pub fn read_body(&mut self, framing: Framing, max: usize, deadline: Instant) -> Result<Vec<u8>, HttpError> {
        match framing {
            Framing::Empty => Ok(Vec::new()),
            Framing::Sized(len) if len > max => {
                Err(HttpError::TooLarge(format!("a body of {len} bytes is more than the {max} taken")))
            }
            Framing::Sized(len) => Ok(self.read_sized(len, deadline)?),
            Framing::Chunked => self.read_chunked(max, deadline),
            Framing::UntilClose => {
                loop {
                    match self.fill(deadline) {
                        Ok(()) if self.buf.len() > max => {
                            return Err(HttpError::TooLarge(format!("a body of more than {max} bytes")))
                        }
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(std::mem::take(&mut self.buf))
            }
        }
    }

    fn read_sized(&mut self, len: usize, deadline: Instant) -> io::Result<Vec<u8>> {
        while self.buf.len() < len {
            self.fill(deadline)?;
        }
        let rest = self.buf.split_off(len);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// One CRLF-ended line, without its CRLF.
    fn read_line(&mut self, deadline: Instant) -> Result<Vec<u8>, HttpError> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(HttpError::Protocol("a chunk line without its end".into()));
            }
            self.fill(deadline)?;
        }
    }

    fn read_chunked(&mut self, max: usize, deadline: Instant) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line(deadline)?;
            let line = String::from_utf8_lossy(&line);
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| HttpError::Protocol(format!("bad chunk size '{line}'")))?;
            if size == 0 {
                // Trailers up to the blank line.
                while !self.read_line(deadline)?.is_empty() {}
                return Ok(body);
            }
            if body.len().saturating_add(size) > max {
                return Err(HttpError::TooLarge(format!("a chunked body of more than the {max} bytes taken")));
            }
            let chunk = self.read_sized(size + 2, deadline)?;
            if &chunk[size..] != b"\r\n" {
                return Err(HttpError::Protocol("a chunk longer than its size".into()));
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
}

/// The head `parse` finds at the start of `buf` and its length, `None` while it is incomplete;
/// too large past `MAX_HEAD` bytes, whole or not.
fn head_within_limit<T>(
    buf: &[u8],
    parse: impl FnOnce(&[u8]) -> Result<Option<(T, usize)>, String>,
) -> Result<Option<(T, usize)>, HttpError> {
    match parse(buf).map_err(HttpError::Protocol)? {
        Some((_, n)) if n > MAX_HEAD => {
            Err(HttpError::TooLarge(format!("a message head longer than {MAX_HEAD} bytes")))
        }
        None if buf.len() > MAX_HEAD => {
            Err(HttpError::TooLarge(format!("a message head longer than {MAX_HEAD} bytes")))
        }
        other => Ok(other),
    }
}

/// httparse's request parser on `buf`: the head and its length once whole.
fn parse_request(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, String> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(buf).map_err(|e| format!("{e}"))? {
        httparse::Status::Complete(n) => Ok(Some((
            RequestHead {
                method: req.method.unwrap_or_default().to_owned(),
                target: req.path.unwrap_or_default().to_owned(),
                minor_version: req.version.unwrap_or(1),
                headers: owned(req.headers),
            },
            n,
        ))),
        httparse::Status::Partial => Ok(None),
    }
}

/// The request head at the start of bytes read so far, and its length; `None` while it is
/// incomplete (for a reader that is not a `Wire`: the host's poller of waiting connections).
pub fn parse_request_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HttpError> {
    head_within_limit(buf, parse_request)
}

fn owned(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers.iter().map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned())).collect()
}

/// A request's first line and headers.
#[derive(Clone, Debug)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (`/v2/models/m/infer?x=1`).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Whether the client keeps the connection open after this exchange.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(str::to_ascii_lowercase);
        let has = |token: &str| conn.as_deref().is_some_and(|c| c.split(',').any(|t| t.trim() == token));
        if self.minor_version == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }
}

/// The reason phrase of the status codes the host sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A scripted peer: reads come from `input` in pieces of `step` bytes.
    struct Script {
        input: Vec<u8>,
        at: usize,
        step: usize,
        out: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.input.len() - self.at);
            buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }
    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Stream for Script {
        fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
        fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
            Err(io::Error::other("no clone"))
        }
    }

    fn wire(input: &[u8], step: usize) -> Wire {
        Wire::new(Box::new(Script { input: input.to_vec(), at: 0, step, out: Vec::new() }))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn requests_keep_their_boundaries_byte_by_byte_and_in_one_piece() {
        let two = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /v2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in [1, 7, two.len()] {
            let mut w = wire(two, step);
            let h = w.read_request_head(soon()).unwrap();
            assert_eq!((h.method.as_str(), h.target.as_str(), h.minor_version), ("POST", "/v2/models/m/infer", 1));
            assert!(h.keep_alive());
            let body = w.read_body(Framing::of(&h.headers, Framing::Empty).unwrap(), 100, soon()).unwrap();
            assert_eq!(body, b"hello");
            let h = w.read_request_head(soon()).unwrap();
            assert_eq!((h.target.as_str(), h.minor_version, h.keep_alive()), ("/v2", 0, true));
            assert_eq!(Framing::of(&h.headers, Framing::Empty).unwrap(), Framing::Empty);
            let h = w.read_request_head(soon()).unwrap();
            assert!(!h.keep_alive());
            let body = w.read_body(Framing::of(&h.headers, Framing::Empty).unwrap(), 100, soon()).unwrap();
            assert_eq!(body, b"abcde");
            assert_eq!(w.buffered(), 0);
            assert_eq!(w.received, two.len() as u64);
            assert!(w.read_request_head(soon()).is_err(), "the peer closed");
        }
    }

    #[test]
    fn limits_and_malformed_framing_are_refused_with_what_was_wrong() {
        let heads: [(&[u8], &str); 3] = [
            (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", "Content-Length 'x'"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "'gzip' is not supported"),
            (b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", "101 bytes is more than the 100"),
        ];
        for (head, want) in heads {
            let mut w = wire(head, 3);
            let h = w.read_request_head(soon()).unwrap();
            let err = Framing::of(&h.headers, Framing::Empty).and_then(|f| w.read_body(f, 100, soon())).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
        let mut w = wire(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n", 64);
        let h = w.read_request_head(soon()).unwrap();
        let f = Framing::of(&h.headers, Framing::Empty).unwrap();
        assert!(matches!(w.read_body(f, 10, soon()), Err(HttpError::TooLarge(_))));
        let mut w = wire(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 64);
        let h = w.read_request_head(soon()).unwrap();
        let err = w.read_body(Framing::of(&h.headers, Framing::Empty).unwrap(), 10, soon()).unwrap_err();
        assert!(err.to_string().contains("bad chunk size 'zz'"), "{err}");
        let long = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &vec![b'a'; MAX_HEAD + 10]].concat();
        assert!(matches!(wire(&long, 4096).read_request_head(soon()), Err(HttpError::TooLarge(_))));
        let whole = [long.as_slice(), b"\r\n\r\n"].concat();
        assert!(matches!(wire(&whole, whole.len()).read_request_head(soon()), Err(HttpError::TooLarge(_))));
        let err = wire(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 64).read_request_head(soon()).unwrap_err();
        assert!(matches!(err, HttpError::Protocol(_)), "{err}");
        // A body cut short by the peer is an error, not a shorter body.
        let mut w = wire(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 64);
        let h = w.read_request_head(soon()).unwrap();
        assert!(w.read_body(Framing::of(&h.headers, Framing::Empty).unwrap(), 100, soon()).is_err());
    }

    #[test]
    fn responses_read_to_the_end_of_the_connection_when_unframed() {
        let mut w = wire(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nall of it", 4);
        let (status, headers) = w.read_response_head(soon()).unwrap();
        assert_eq!(status, 200);
        let body = w.read_body(Framing::of(&headers, Framing::UntilClose).unwrap(), 100, soon()).unwrap();
        assert_eq!(body, b"all of it");
    }
}
