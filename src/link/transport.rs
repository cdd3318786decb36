//! Transports: the byte streams that carry frames between the device and the host. A link is
//! named by a [`LinkAddr`] (`serial:/dev/ttyUSB0?baud=921600` or `tcp:HOST:PORT`), opened by
//! [`connect`] into a boxed [`Stream`] (a UART through serialport, or a TCP socket), and can be
//! wrapped in [`Paced`] to rehearse a slow, lossy radio or UART link over a fast one.

use super::codec::LinkError;
use super::paced::Shaping;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

use std::thread;
use std::time::{Duration, Instant};
use thiserror::Error;

/// The baud rate of a `serial:` address that names none.
pub const DEFAULT_BAUD: u32 = 921_600;
/// The timeout a [`Stream`] gets for "no timeout" where the platform needs a number (serial).
pub const LONG_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A link address, a [`Shaping`] or a `key=value` list that could not be parsed; the message
/// says what was wrong and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn perr(msg: String) -> ParseError {
    ParseError(msg)
}

/// Where the other end of the link is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkAddr {
    /// A UART (or USB CDC, or PTY) device.
    Serial { path: PathBuf, baud: u32 },
    /// `addr` is `HOST:PORT`, resolved when connecting.
    Tcp { addr: String },
    /// An Open Inference Protocol v2 server over HTTP: `oip+http://HOST:PORT/v2/models/NAME`
    /// (optionally `/versions/V`). Its stream is a TCP connection to `addr`.
    Oip { addr: String, model: String, version: Option<String> },
}

impl FromStr for LinkAddr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(perr(format!(
                "unknown link scheme '{s}' (expected serial: or tcp:, as in \
                 serial:/dev/ttyUSB0?baud=921600 or tcp:HOST:PORT)"
            )));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "serial" => {
                let (path, query) = match rest.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (rest, None),
                };
                if path.is_empty() {
                    return Err(perr(format!(
                        "missing device path in '{s}' (expected serial:/dev/ttyUSB0?baud=921600)"
                    )));
                }
                let mut baud = DEFAULT_BAUD;
                for opt in query.into_iter().flat_map(|q| q.split('&')).filter(|o| !o.is_empty()) {
                    match opt.split_once('=') {
                        Some(("baud", v)) => {
                            baud = v.parse::<u32>().ok().filter(|&b| b > 0).ok_or_else(|| {
                                perr(format!(
                                    "bad baud '{v}' in '{s}' (expected a whole number of bits \
                                     per second above 0, e.g. baud=115200)"
                                ))
                            })?;
                        }
                        _ => {
                            return Err(perr(format!("unknown serial option '{opt}' in '{s}' (only baud=N is known)")))
                        }
                    }
                }
                Ok(LinkAddr::Serial { path: PathBuf::from(path), baud })
            }
            "tcp" => {
                let addr = rest.strip_prefix("//").unwrap_or(rest);
                let Some((host, port)) = addr.rsplit_once(':') else {
                    return Err(perr(format!("missing port in '{s}' (expected tcp:HOST:PORT)")));
                };
                if host.is_empty() {
                    return Err(perr(format!("missing host in '{s}' (expected tcp:HOST:PORT)")));
                }
                if port.is_empty() {
                    return Err(perr(format!("missing port in '{s}' (expected tcp:HOST:PORT)")));
                }
                // Port 0 is allowed: a listener then takes any free port (and says which).
                if port.parse::<u16>().is_err() {
                    return Err(perr(format!("bad port '{port}' in '{s}' (expected a number from 0 to 65535)")));
                }
                Ok(LinkAddr::Tcp { addr: addr.to_string() })
            }
            "oip+http" => parse_oip(s, rest),
            other => Err(perr(format!("unknown link scheme '{other}' in '{s}' (expected serial:, tcp: or oip+http:)"))),
        }
    }
}

/// `//HOST:PORT/v2/models/NAME[/versions/V]`, the part of an `oip+http:` link after the scheme.
fn parse_oip(s: &str, rest: &str) -> Result<LinkAddr, ParseError> {
    let expected = "expected oip+http://HOST:PORT/v2/models/NAME";
    let rest = rest.strip_prefix("//").ok_or_else(|| perr(format!("bad OIP link '{s}' ({expected})")))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(perr(format!("missing host in '{s}' ({expected})")));
    }
    let addr = match authority.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok_and(|p| p > 0) => authority.to_owned(),
        Some((_, port)) if !authority.ends_with(']') => {
            return Err(perr(format!("bad port '{port}' in '{s}' (expected a number from 1 to 65535)")))
        }
        _ => format!("{authority}:80"),
    };
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let (model, version) = match parts.as_slice() {
        ["v2", "models", m] if !m.is_empty() => (m.to_string(), None),
        ["v2", "models", m, "versions", v] if !m.is_empty() && !v.is_empty() => (m.to_string(), Some(v.to_string())),
        _ => return Err(perr(format!("bad OIP model path '/{path}' in '{s}' ({expected}[/versions/V])"))),
    };
    Ok(LinkAddr::Oip { addr, model, version })
}

impl fmt::Display for LinkAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkAddr::Serial { path, baud } => write!(f, "serial:{}?baud={baud}", path.display()),
            LinkAddr::Tcp { addr } => write!(f, "tcp:{addr}"),
            LinkAddr::Oip { addr, model, version: None } => write!(f, "oip+http://{addr}/v2/models/{model}"),
            LinkAddr::Oip { addr, model, version: Some(v) } => {
                write!(f, "oip+http://{addr}/v2/models/{model}/versions/{v}")
            }
        }
    }
}

/// A byte stream a link runs over.
///
/// Every write finishes or fails within the stream's write timeout, as every read does within
/// its read timeout: a peer that stops reading (a dead host behind a PTY bridge or RTS/CTS flow
/// control, a full socket buffer) makes a write fail with `TimedOut`, never block for ever.
/// [`connect`] sets a write timeout on every stream it opens; a `TcpStream` made elsewhere
/// needs `set_write_timeout`, and a serial port goes through [`SerialStream`].
pub trait Stream: Read + Write + Send {
    /// `None` waits for ever (on serial: [`LONG_TIMEOUT`]). Reads only: see [`Stream`] for writes.
    fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()>;
    /// A second handle on the same stream, e.g. to read in one thread and write in another.
    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>>;
    /// The shaping applied to writes, when this stream is (or wraps) a [`Paced`] one, so that
    /// reports can say a figure came from a rehearsed link.
    fn shaping(&self) -> Option<&Shaping> {
        None
    }
}

impl Stream for TcpStream {
    fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }

    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(self.try_clone()?))
    }
}

/// The least time a serial write may wait for the other end to take bytes before failing.
pub const MIN_SERIAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A serial port (UART, USB CDC, PTY) with separate read and write timeouts. Its descriptor is
/// non-blocking: a write takes what the driver has room for and waits (poll) for more room at
/// most the write timeout, so a peer that stops reading fails the write instead of blocking it
/// in the kernel for ever (a blocking write of a large frame into a full tty buffer does).
/// The timeout runs from the last byte taken, so a slow UART draining a large frame at a low
/// baud rate is not cut short. `flush` waits for the driver's output queue to empty, on the
/// same terms. (serialport's `TTYPort` alone has one timeout for both directions and blocks
/// in `write` and `flush`: it is not a [`Stream`].)
#[cfg(unix)]
pub struct SerialStream {
    port: serialport::TTYPort,
    read_timeout: Duration,
    write_timeout: Duration,
}

#[cfg(unix)]
impl SerialStream {
    /// Wraps `port` and makes its descriptor non-blocking (shared by its clones); its current
    /// timeout becomes the read timeout, and the write timeout is that or
    /// [`MIN_SERIAL_WRITE_TIMEOUT`], whichever is longer.
    pub fn new(port: serialport::TTYPort) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        let fd = port.as_raw_fd();
        // SAFETY: fcntl on a descriptor `port` owns and keeps open; no memory is passed.
        let ok = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0
        };
        if !ok {
            return Err(io::Error::last_os_error());
        }
        let read_timeout = serialport::SerialPort::timeout(&port);
        Ok(SerialStream { port, read_timeout, write_timeout: read_timeout.max(MIN_SERIAL_WRITE_TIMEOUT) })
    }

    /// How long a write (or flush) may wait for the other end to take a byte.
    pub fn set_write_timeout(&mut self, t: Duration) {
        self.write_timeout = t;
    }

    /// The port; its descriptor is non-blocking.
    pub fn port(&self) -> &serialport::TTYPort {
        &self.port
    }

    fn timeout(&mut self, t: Duration) -> io::Result<()> {
        serialport::SerialPort::set_timeout(&mut self.port, t).map_err(io::Error::from)
    }

    /// The error of a write the other end took no bytes of in time. The frame is abandoned:
    /// what the driver still holds of it is discarded (TCOFLUSH), so that closing the port
    /// does not wait for it to drain (a UART's close waits up to 30 s behind flow control).
    fn stalled(&self) -> io::Error {
        use std::os::fd::AsRawFd;
        // SAFETY: tcflush on a descriptor `port` owns and keeps open; no memory is passed.
        unsafe { libc::tcflush(self.port.as_raw_fd(), libc::TCOFLUSH) };
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the other end took no bytes for {:?} (it is not reading)", self.write_timeout),
        )
    }

    /// Bytes the driver holds that have not gone out on the line yet.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn output_queued(&self) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one int through the pointer, which points at `n`.
        if unsafe { libc::ioctl(self.port.as_raw_fd(), libc::TIOCOUTQ, &mut n) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n.max(0) as usize)
    }
}

#[cfg(unix)]
impl Read for SerialStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.timeout(self.read_timeout)?;
        self.port.read(buf)
    }
}

#[cfg(unix)]
impl Write for SerialStream {
    /// Writes what the driver takes at once, waiting at most the write timeout for room.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = Instant::now() + self.write_timeout;
        loop {
            // serialport polls for room up to its timeout, then writes without blocking.
            self.timeout(deadline.saturating_duration_since(Instant::now()))?;
            match self.port.write(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(self.stalled()),
                // Room seen, then taken (a clone writing too): wait again.
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    thread::sleep(Duration::from_millis(1))
                }
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(self.stalled());
            }
        }
    }

    /// Waits until the driver's output queue is empty (what `tcdrain` does, which has no
    /// deadline), failing once it has not shrunk for the write timeout.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn flush(&mut self) -> io::Result<()> {
        let mut last = usize::MAX;
        let mut deadline = Instant::now() + self.write_timeout;
        loop {
            let queued = self.output_queued()?;
            if queued == 0 {
                return Ok(());
            }
            if queued < last {
                last = queued;
                deadline = Instant::now() + self.write_timeout;
            } else if Instant::now() >= deadline {
                return Err(self.stalled());
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// The bytes are the driver's once written (as on a socket).
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(unix)]
impl Stream for SerialStream {
    fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.read_timeout = t.unwrap_or(LONG_TIMEOUT);
        Ok(())
    }

    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
        let port = self.port.try_clone_native().map_err(io::Error::from)?;
        Ok(Box::new(SerialStream { port, read_timeout: self.read_timeout, write_timeout: self.write_timeout }))
    }
}

impl Stream for Box<dyn Stream> {
    fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        (**self).set_read_timeout(t)
    }

    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
        (**self).try_clone_box()
    }

    fn shaping(&self) -> Option<&Shaping> {
        (**self).shaping()
    }
}

/// Opens the link at `addr`. `timeout` bounds the TCP connect and becomes the stream's read
/// and write timeout (on serial the write timeout is at least [`MIN_SERIAL_WRITE_TIMEOUT`]).
/// A serial link comes back as a [`SerialStream`], a TCP one as a `TcpStream` with
/// TCP_NODELAY set. Errors say what is wrong (the callers name the link): on serial, a path
/// that does not exist is `NotFound`, one that is not a terminal `InvalidInput`, a port in
/// use `ResourceBusy`.
pub fn connect(addr: &LinkAddr, timeout: Duration) -> Result<Box<dyn Stream>, LinkError> {
    // Every failure to open is an I/O error, a connect that timed out included (not the
    // read timeout `LinkError::Timeout` stands for).
    open(addr, timeout).map_err(LinkError::Io)
}

fn open(addr: &LinkAddr, timeout: Duration) -> io::Result<Box<dyn Stream>> {
    match addr {
        LinkAddr::Serial { path, baud } => open_serial(path, *baud, timeout),
        LinkAddr::Tcp { addr: hostport } | LinkAddr::Oip { addr: hostport, .. } => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "host name resolves to no address");
            for target in hostport.to_socket_addrs()? {
                match TcpStream::connect_timeout(&target, timeout) {
                    Ok(s) => {
                        s.set_nodelay(true)?;
                        s.set_read_timeout(Some(timeout))?;
                        s.set_write_timeout(Some(timeout))?;
                        return Ok(Box::new(s));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

#[cfg(unix)]
fn open_serial(path: &std::path::Path, baud: u32, timeout: Duration) -> io::Result<Box<dyn Stream>> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let shown = path.display();
    let not_a_terminal =
        || io::Error::new(io::ErrorKind::InvalidInput, format!("{shown} is not a terminal (not a serial device)"));
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{shown} does not exist")))
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("{shown}: {e}"))),
        Ok(m) if !m.file_type().is_char_device() => return Err(not_a_terminal()),
        Ok(_) => {}
    }
    match serialport::new(path.to_string_lossy(), baud).timeout(timeout).open_native() {
        Ok(port) => Ok(Box::new(SerialStream::new(port)?)),
        Err(e) => {
            // A device that is no terminal (/dev/null) fails serialport's termios calls.
            let tty = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
                .open(path)
                .map(|f| std::io::IsTerminal::is_terminal(&f));
            if matches!(tty, Ok(false)) {
                return Err(not_a_terminal());
            }
            let e = io::Error::from(e);
            // serialport reports a port in use (EBUSY, or held by another process) as NotFound.
            let kind = if e.kind() == io::ErrorKind::NotFound { io::ErrorKind::ResourceBusy } else { e.kind() };
            let hint = if kind == io::ErrorKind::PermissionDenied {
                " (is this user in the group owning the device, e.g. dialout?)"
            } else {
                ""
            };
            Err(io::Error::new(kind, format!("{shown}: {e}{hint}")))
        }
    }
}

#[cfg(not(unix))]
fn open_serial(_path: &std::path::Path, _baud: u32, _timeout: Duration) -> io::Result<Box<dyn Stream>> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "serial links are only built for unix"))
}

/// Parses `20ms`, `1.5s`, `250us`, `0` into a duration.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(format!("bad duration '{v}' (expected a number with ms, us or s, e.g. 20ms)"));
    };
    match num.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 && x * scale < 1e9 => Ok(Duration::from_secs_f64(x * scale)),
        _ => Err(format!("bad duration '{v}' (expected a number with ms, us or s, e.g. 20ms)")),
    }
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn fmt_duration(d: Duration) -> String {
    if d.is_zero() {
        "0".into()
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

/// Parses a probability: `0.01` or `1%`.
pub fn parse_rate(key: &str, v: &str) -> Result<f64, String> {
    let v = v.trim();
    let x = match v.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
        None => v.parse::<f64>(),
    };
    match x {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("bad {key} '{v}' (expected a probability from 0 to 1, e.g. 0.01 or 1%)")),
    }
}

/// Splits `k=v,k=v` and hands each pair to `set`.
pub fn parse_pairs(
    s: &str,
    what: &str,
    mut set: impl FnMut(&str, &str) -> Result<(), String>,
) -> Result<(), ParseError> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Ok(());
    }
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) =
            item.split_once('=').ok_or_else(|| perr(format!("bad {what} '{s}': '{item}' is not KEY=VALUE")))?;
        set(k.trim().to_ascii_lowercase().as_str(), v.trim()).map_err(|e| perr(format!("bad {what} '{s}': {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
