//! Fault injection for the link tests (tests/offload.rs, tests/link_tcp.rs; its own tests are
//! tests/relay.rs): a TCP relay that sits between a device and a host (or between a test's two
//! ends) and drops, corrupts, duplicates and delays the bytes it forwards, in both directions,
//! so the framing and the protocol can be exercised against a bad link on one machine.
//!
//! Drop, corrupt and duplicate are rates **per byte**, so a seeded run faults the same bytes
//! however the operating system splits the stream into reads. Delay is **per chunk** (each
//! read's worth of bytes waits `delay` before it is passed on).

use edgecascade::link::rng::Rng;
use edgecascade::link::transport::{fmt_duration, parse_duration, parse_pairs, parse_rate, ParseError};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often blocked relay threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// How long the relay waits to reach the upstream for each accepted connection.
const UPSTREAM_CONNECT: Duration = Duration::from_secs(3);

/// What the relay does to the bytes it forwards.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability that a byte is dropped.
    pub drop: f64,
    /// Probability that a byte (one not dropped) has one random bit flipped.
    pub corrupt: f64,
    /// Probability that a byte (one not dropped) is sent twice.
    pub duplicate: f64,
    /// Wait before each chunk is passed on.
    pub delay: Duration,
    /// Seed of the draws; each connection and direction gets its own sub-stream of it.
    pub seed: u64,
}

impl Faults {
    /// Whether the relay changes anything.
    pub fn is_active(&self) -> bool {
        self.drop > 0.0 || self.corrupt > 0.0 || self.duplicate > 0.0 || !self.delay.is_zero()
    }
}

impl FromStr for Faults {
    type Err = ParseError;

    /// `drop=0.01,corrupt=0.01,dup=0.01,delay=5ms,seed=7`; every key optional (`duplicate` is
    /// a synonym of `dup`; rates may be written `1%`); empty or `none` is no faults.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut f = Faults::default();
        parse_pairs(s, "relay faults", |k, v| {
            match k {
                "drop" => f.drop = parse_rate("drop", v)?,
                "corrupt" => f.corrupt = parse_rate("corrupt", v)?,
                "dup" | "duplicate" => f.duplicate = parse_rate("dup", v)?,
                "delay" => f.delay = parse_duration(v)?,
                "seed" => f.seed = v.parse().map_err(|_| format!("bad seed '{v}' (expected a whole number)"))?,
                _ => return Err(format!("unknown key '{k}' (expected drop, corrupt, dup, delay or seed)")),
            }
            Ok(())
        })?;
        Ok(f)
    }
}

impl fmt::Display for Faults {
    /// The syntax [`FromStr`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "drop={},corrupt={},dup={},delay={},seed={}",
            self.drop,
            self.corrupt,
            self.duplicate,
            fmt_duration(self.delay),
            self.seed
        )
    }
}

/// What [`apply`] did to one chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub dropped: u64,
    pub corrupted: u64,
    pub duplicated: u64,
}

/// `chunk` with the faults applied byte by byte (drop, else maybe flip one bit, then maybe
/// send twice). Delay is not applied here. Draws come from `rng`; with no rates set, no draw
/// is made and the chunk comes back unchanged.
pub fn apply(faults: &Faults, rng: &mut Rng, chunk: &[u8]) -> Vec<u8> {
    apply_counted(faults, rng, chunk).0
}

/// [`apply`], also saying how many bytes were dropped, corrupted and duplicated.
pub fn apply_counted(faults: &Faults, rng: &mut Rng, chunk: &[u8]) -> (Vec<u8>, FaultCounts) {
    let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 8);
    let mut counts = FaultCounts::default();
    for &b in chunk {
        if rng.chance(faults.drop) {
            counts.dropped += 1;
            continue;
        }
        let mut b = b;
        if rng.chance(faults.corrupt) {
            b ^= 1 << rng.below(8);
            counts.corrupted += 1;
        }
        out.push(b);
        if rng.chance(faults.duplicate) {
            out.push(b);
            counts.duplicated += 1;
        }
    }
    (out, counts)
}

/// Totals over a relay's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Connections accepted and joined to the upstream.
    pub connections: u64,
    /// Connections accepted whose upstream could not be reached (closed at once).
    pub failed: u64,
    /// Bytes read from either side, and bytes written to the other.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub dropped: u64,
    pub corrupted: u64,
    pub duplicated: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    failed: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    dropped: AtomicU64,
    corrupted: AtomicU64,
    duplicated: AtomicU64,
}

/// One relayed connection: handles on its two sockets (to shut them on stop) and its two
/// forwarding threads.
struct Conn {
    sockets: [TcpStream; 2],
    threads: [JoinHandle<()>; 2],
}

impl Conn {
    fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct Shared {
    stop: AtomicBool,
    counters: Counters,
    conns: Mutex<Vec<Conn>>,
}

/// A running relay; stops (and joins its threads) on [`RelayHandle::stop`] or drop.
pub struct RelayHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl RelayHandle {
    /// The address the relay listens on (with the port chosen, if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> RelayStats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RelayStats {
            connections: g(&c.connections),
            failed: g(&c.failed),
            bytes_in: g(&c.bytes_in),
            bytes_out: g(&c.bytes_out),
            dropped: g(&c.dropped),
            corrupted: g(&c.corrupted),
            duplicated: g(&c.duplicated),
        }
    }

    /// Stops accepting, closes every relayed connection and joins all threads.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let conns = std::mem::take(&mut *lock(&self.shared.conns));
        for s in conns.iter().flat_map(|c| &c.sockets) {
            let _ = s.shutdown(Shutdown::Both);
        }
        conns.into_iter().for_each(Conn::join);
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a relay listening on `listen` (`HOST:PORT`, or a bare port meaning 127.0.0.1:PORT;
/// port 0 picks a free one) that joins each accepted connection to a new connection to
/// `upstream` and forwards both ways with `faults` applied.
pub fn spawn_tcp_relay(listen: &str, upstream: String, faults: Faults) -> io::Result<RelayHandle> {
    let listener = match listen.trim().parse::<u16>() {
        Ok(port) => TcpListener::bind(("127.0.0.1", port))?,
        Err(_) => TcpListener::bind(listen.trim())?,
    };
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let shared =
        Arc::new(Shared { stop: AtomicBool::new(false), counters: Counters::default(), conns: Mutex::new(Vec::new()) });
    let sh = Arc::clone(&shared);
    let accept = thread::Builder::new()
        .name(format!("relay-accept-{}", addr.port()))
        .spawn(move || accept_loop(listener, upstream, faults, sh))?;
    Ok(RelayHandle { addr, shared, accept: Some(accept) })
}

fn accept_loop(listener: TcpListener, upstream: String, faults: Faults, shared: Arc<Shared>) {
    let mut index = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let down = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // WouldBlock (nothing to accept) or a transient error.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let up = match join_upstream(&down, &upstream) {
            Ok(up) => up,
            Err(e) => {
                log::warn!("relay: cannot reach upstream {upstream}: {e}");
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                let _ = down.shutdown(Shutdown::Both);
                continue;
            }
        };
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = start_forwarding(down, up, &faults, index, &shared) {
            log::warn!("relay: cannot start forwarding: {e}");
        }
        index += 1;
        // Forget connections that have ended.
        let mut conns = lock(&shared.conns);
        let (done, open): (Vec<_>, Vec<_>) = conns.drain(..).partition(Conn::is_finished);
        *conns = open;
        drop(conns);
        done.into_iter().for_each(Conn::join);
    }
}

fn join_upstream(down: &TcpStream, upstream: &str) -> io::Result<TcpStream> {
    down.set_nonblocking(false)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "upstream resolves to no address");
    for target in upstream.to_socket_addrs()? {
        match TcpStream::connect_timeout(&target, UPSTREAM_CONNECT) {
            Ok(up) => return Ok(up),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn start_forwarding(
    down: TcpStream,
    up: TcpStream,
    faults: &Faults,
    index: u64,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    for s in [&down, &up] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(POLL))?;
        s.set_write_timeout(Some(POLL))?;
    }
    let (d2, u2) = (down.try_clone()?, up.try_clone()?);
    let (d3, u3) = (down.try_clone()?, up.try_clone()?);
    let spawn = |name: String, src: TcpStream, dst: TcpStream, stream: u64| {
        let sh = Arc::clone(shared);
        let f = faults.clone();
        thread::Builder::new().name(name).spawn(move || {
            let rng = Rng::derived(f.seed, stream);
            forward(src, dst, &f, rng, &sh)
        })
    };
    let t1 = spawn(format!("relay-{index}-up"), down, up, 2 * index)?;
    let t2 = spawn(format!("relay-{index}-down"), u2, d2, 2 * index + 1)?;
    lock(&shared.conns).push(Conn { sockets: [d3, u3], threads: [t1, t2] });
    Ok(())
}

/// Copies `src` to `dst` with faults until either side ends or the relay stops.
fn forward(mut src: TcpStream, mut dst: TcpStream, faults: &Faults, mut rng: Rng, shared: &Shared) {
    let stopped = || shared.stop.load(Ordering::SeqCst);
    let mut buf = vec![0u8; 16 * 1024];
    let c = &shared.counters;
    while !stopped() {
        let n = match src.read(&mut buf) {
            Ok(0) => {
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if is_retry(&e) => continue,
            Err(_) => {
                let _ = dst.shutdown(Shutdown::Both);
                let _ = src.shutdown(Shutdown::Both);
                return;
            }
        };
        c.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let (out, counts) = apply_counted(faults, &mut rng, &buf[..n]);
        c.dropped.fetch_add(counts.dropped, Ordering::Relaxed);
        c.corrupted.fetch_add(counts.corrupted, Ordering::Relaxed);
        c.duplicated.fetch_add(counts.duplicated, Ordering::Relaxed);
        if !faults.delay.is_zero() {
            let until = Instant::now() + faults.delay;
            while !stopped() && Instant::now() < until {
                thread::sleep((until - Instant::now()).min(POLL));
            }
        }
        if write_all_until_stopped(&mut dst, &out, &stopped).is_err() {
            let _ = dst.shutdown(Shutdown::Both);
            let _ = src.shutdown(Shutdown::Both);
            return;
        }
        c.bytes_out.fetch_add(out.len() as u64, Ordering::Relaxed);
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

/// `write_all` that survives write timeouts, checking `stopped` between tries.
fn write_all_until_stopped(dst: &mut TcpStream, mut out: &[u8], stopped: &dyn Fn() -> bool) -> io::Result<()> {
    while !out.is_empty() {
        if stopped() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "relay stopped"));
        }
        match dst.write(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out = &out[n..],
            Err(e) if is_retry(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
