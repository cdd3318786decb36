//! Link rehearsal: [`Paced`] wraps a [`Stream`] and shapes what goes through it as a slow,
//! lossy radio or UART link would ([`Shaping`]: line rate, latency, loss), so a fast link
//! (a PTY, loopback TCP) stands in for the field's.

use super::rng::Rng;
use super::transport::{fmt_duration, parse_duration, parse_pairs, parse_rate, ParseError, Stream};
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How a [`Paced`] stream shapes what is written through it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shaping {
    /// Line rate; each byte costs 10 bits (start, 8 data, stop) as on a UART. None: no limit.
    pub bits_per_sec: Option<u64>,
    /// One-way latency added once per write call (per frame, with [`super::write_msg`]).
    pub latency: Duration,
    /// Probability that each written byte is lost.
    pub loss: f64,
    /// Seed of the loss draws; the same seed loses the same bytes.
    pub seed: u64,
}

impl Shaping {
    /// Whether any of rate, latency or loss is set.
    pub fn is_active(&self) -> bool {
        self.bits_per_sec.is_some_and(|b| b > 0) || !self.latency.is_zero() || self.loss > 0.0
    }

    /// How long `bytes` take on this link, latency included.
    pub fn transfer_time(&self, bytes: usize) -> Duration {
        transfer_time(bytes, self.bits_per_sec, self.latency)
    }
}

impl FromStr for Shaping {
    type Err = ParseError;

    /// `baud=115200,latency=20ms,loss=0.01,seed=7`; every key optional (`bps` is a synonym of
    /// `baud`); an empty string or `none` shapes nothing.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut out = Shaping::default();
        parse_pairs(s, "link shaping", |k, v| {
            match k {
                "baud" | "bps" => {
                    let b = v.parse::<u64>().ok().filter(|&b| b > 0).ok_or_else(|| {
                        format!("bad baud '{v}' (expected a whole number of bits per second above 0)")
                    })?;
                    out.bits_per_sec = Some(b);
                }
                "latency" => out.latency = parse_duration(v)?,
                "loss" => out.loss = parse_rate("loss", v)?,
                "seed" => out.seed = v.parse().map_err(|_| format!("bad seed '{v}' (expected a whole number)"))?,
                _ => return Err(format!("unknown key '{k}' (expected baud, latency, loss or seed)")),
            }
            Ok(())
        })?;
        Ok(out)
    }
}

impl fmt::Display for Shaping {
    /// The syntax [`FromStr`] reads, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(b) = self.bits_per_sec {
            parts.push(format!("baud={b}"));
        }
        if !self.latency.is_zero() {
            parts.push(format!("latency={}", fmt_duration(self.latency)));
        }
        if self.loss > 0.0 {
            parts.push(format!("loss={}", self.loss));
            parts.push(format!("seed={}", self.seed));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

/// The time `bytes` take on a link of `bits_per_sec` (10 bits per byte, as on a UART; None is
/// unlimited) after a one-way `latency`.
pub fn transfer_time(bytes: usize, bits_per_sec: Option<u64>, latency: Duration) -> Duration {
    let wire = match bits_per_sec {
        Some(bps) if bps > 0 => {
            let nanos = (bytes as u128) * 10 * 1_000_000_000 / (bps as u128);
            Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
        }
        _ => Duration::ZERO,
    };
    latency.saturating_add(wire)
}

/// A stream whose writes are paced like a slow link: each write call waits the one-way
/// latency, then lets its bytes out at `bits_per_sec / 10` bytes per second in slices of about
/// 20 ms (so a reader sees them trickle in), losing each byte with probability `loss`.
/// Reads pass straight through unless [`Paced::pace_reads`] is set. Wrapping one end shapes
/// that end's sending only; wrap both ends, or use `pace_reads`, to shape both directions.
/// The model holds one frame in flight: latency is spent by the writer, not overlapped.
pub struct Paced<S> {
    inner: S,
    shaping: Shaping,
    rng: Rng,
    pace_reads: bool,
    /// For `pace_reads`: the last call was a write, so the next read pays the latency.
    turnaround: bool,
    written: u64,
    lost: u64,
    clones: AtomicU64,
}

impl<S> Paced<S> {
    pub fn new(inner: S, shaping: Shaping) -> Self {
        let rng = Rng::new(shaping.seed);
        Paced {
            inner,
            shaping,
            rng,
            pace_reads: false,
            turnaround: false,
            written: 0,
            lost: 0,
            clones: AtomicU64::new(0),
        }
    }

    /// Also pace what is read (the other direction of the link): each read's bytes cost their
    /// wire time, and the first read after a write also costs the latency. No bytes are lost
    /// on reads.
    pub fn pace_reads(mut self, on: bool) -> Self {
        self.pace_reads = on;
        self
    }

    /// Whether this stream shapes anything (rate, latency or loss).
    pub fn is_paced(&self) -> bool {
        self.shaping.is_active()
    }

    pub fn shaping(&self) -> &Shaping {
        &self.shaping
    }

    /// Bytes handed to the inner stream, and bytes lost on the way, so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.written, self.lost)
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Bytes per ~20 ms slice at the shaped rate.
    fn slice_len(&self) -> usize {
        match self.shaping.bits_per_sec {
            Some(bps) if bps > 0 => ((bps / 10 / 50) as usize).max(1),
            _ => usize::MAX,
        }
    }

    /// The bytes of `piece` that survive loss.
    fn survivors(&mut self, piece: &[u8]) -> Vec<u8> {
        if self.shaping.loss <= 0.0 {
            return piece.to_vec();
        }
        let loss = self.shaping.loss;
        let kept: Vec<u8> = piece.iter().copied().filter(|_| !self.rng.chance(loss)).collect();
        self.lost += (piece.len() - kept.len()) as u64;
        kept
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

impl<S: Write> Write for Paced<S> {
    /// Takes the whole buffer (or fails): pacing and loss apply to all of it.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.turnaround = true;
        let start = Instant::now() + self.shaping.latency;
        let mut done = 0;
        for piece in buf.chunks(self.slice_len()) {
            done += piece.len();
            sleep_until(start + transfer_time(done, self.shaping.bits_per_sec, Duration::ZERO));
            let kept = self.survivors(piece);
            self.inner.write_all(&kept)?;
            self.written += kept.len() as u64;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S: Read> Read for Paced<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.pace_reads && n > 0 {
            let latency = if self.turnaround { self.shaping.latency } else { Duration::ZERO };
            self.turnaround = false;
            thread::sleep(transfer_time(n, self.shaping.bits_per_sec, latency));
        }
        Ok(n)
    }
}

impl<S: Stream> Stream for Paced<S> {
    fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(t)
    }

    /// A clone shapes the same way; its losses come from a sub-stream of the seed.
    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
        let inner = self.inner.try_clone_box()?;
        let mut clone = Paced::new(inner, self.shaping.clone()).pace_reads(self.pace_reads);
        clone.rng = Rng::derived(self.shaping.seed, self.clones.fetch_add(1, Ordering::Relaxed) + 1);
        Ok(Box::new(clone))
    }

    fn shaping(&self) -> Option<&Shaping> {
        Some(&self.shaping)
    }
}
