//! The host's counters for scraping (issue 19): one `Metrics` per `Host`, shared by the framed
//! link's sessions, the OIP endpoint and the batcher, rendered in the Prometheus text
//! exposition format (0.0.4) for `GET /metrics` on the OIP port. Lock-free: counters, gauges
//! and fixed-bucket histograms of atomics, so recording costs a few atomic additions and a
//! scrape takes no lock. Pure apart from the clock its callers read: `render` builds a string.

use crate::link::ErrorCode;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The `Content-Type` of `render`'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Batch sizes' bucket bounds (a batch is at most 256: `--batch-max`).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Times' bucket bounds, in seconds: 0.5 ms to 10 s.
pub const SECONDS_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How a request reached the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The framed link (TCP, serial, PTY): `Host::serve`.
    Framed,
    /// OIP v2 over HTTP: `host::oip`.
    Oip,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Framed, Protocol::Oip];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Framed => "framed",
            Protocol::Oip => "oip",
        }
    }
}

/// Why a request was answered with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A frame that failed its checks or spoke another protocol version (framed link).
    BadFrame,
    /// A malformed or wrong request: path, method, model, tensor, payload, HTTP framing.
    BadRequest,
    /// No token or a wrong one.
    Unauthorized,
    /// A frame, head or body over the host's limit.
    TooLarge,
    /// A request that did not arrive in time (OIP: 408).
    Timeout,
    /// Refused for load: the batcher's queue full, or every OIP worker busy (503).
    Busy,
    /// The model failed (500).
    Model,
    /// Anything else.
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::BadFrame,
        ErrorKind::BadRequest,
        ErrorKind::Unauthorized,
        ErrorKind::TooLarge,
        ErrorKind::Timeout,
        ErrorKind::Busy,
        ErrorKind::Model,
        ErrorKind::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::BadFrame => "bad_frame",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Busy => "busy",
            ErrorKind::Model => "model",
            ErrorKind::Other => "other",
        }
    }

    /// The kind of a framed link's error reply.
    pub fn of_code(code: ErrorCode) -> ErrorKind {
        match code {
            ErrorCode::BadFrame | ErrorCode::BadVersion => ErrorKind::BadFrame,
            ErrorCode::BadRequest | ErrorCode::BadPayload => ErrorKind::BadRequest,
            ErrorCode::TooLarge => ErrorKind::TooLarge,
            ErrorCode::Internal => ErrorKind::Model,
            ErrorCode::Unauthorized => ErrorKind::Unauthorized,
            ErrorCode::Busy => ErrorKind::Busy,
        }
    }

    /// The kind of an HTTP status, None for a success.
    pub fn of_status(status: u16) -> Option<ErrorKind> {
        Some(match status {
            100..=399 => return None,
            401 => ErrorKind::Unauthorized,
            408 => ErrorKind::Timeout,
            413 | 431 => ErrorKind::TooLarge,
            400..=499 => ErrorKind::BadRequest,
            500 => ErrorKind::Model,
            503 => ErrorKind::Busy,
            _ => ErrorKind::Other,
        })
    }
}

/// A timed piece of serving a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Framed: the payload to an image; OIP: the request body to a tensor.
    Decode,
    /// Framed: the image's crop, resize and normalisation (OIP requests come preprocessed).
    Preprocess,
    /// In the batcher's queue until a worker took the input into a batch (per input).
    QueueWait,
    /// One model execution (per batch).
    Infer,
    /// Framed: softmax and top-k of the outputs.
    Postprocess,
    /// OIP: the response body.
    Encode,
}

impl Stage {
    pub const ALL: [Stage; 6] =
        [Stage::Decode, Stage::Preprocess, Stage::QueueWait, Stage::Infer, Stage::Postprocess, Stage::Encode];

    pub fn label(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Preprocess => "preprocess",
            Stage::QueueWait => "queue_wait",
            Stage::Infer => "infer",
            Stage::Postprocess => "postprocess",
            Stage::Encode => "encode",
        }
    }
}

/// A histogram over fixed buckets. Each observation adds to one bucket (not cumulative) and to
/// the sum, kept as an integer in `1/scale` units (nanoseconds for times) so that it is exact
/// and lock-free; the count is the buckets' total, so a scrape's `+Inf` bucket always equals
/// its `_count`.
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the one above every bound.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    scale: f64,
}

impl Histogram {
    /// Observes values in units of `1/scale` (`observe(n)` adds `n / scale` to the sum).
    pub fn new(bounds: &'static [f64], scale: f64) -> Histogram {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, buckets, sum: AtomicU64::new(0), scale }
    }

    /// A histogram of times in seconds, observed as `Duration`s.
    pub fn seconds() -> Histogram {
        Histogram::new(SECONDS_BUCKETS, 1e9)
    }

    /// Observes `units` (of `1/scale`).
    pub fn observe(&self, units: u64) {
        let value = units as f64 / self.scale;
        let i = self.bounds.iter().position(|&b| value <= b).unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(units, Ordering::Relaxed);
    }

    pub fn observe_time(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Cumulative counts per bound (then `+Inf`), and the sum.
    fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        (cumulative, self.sum.load(Ordering::Relaxed) as f64 / self.scale)
    }
}

/// A gauge that goes up while a guard lives.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed)
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    /// One more until the guard is dropped.
    pub fn hold(&self) -> Held<'_> {
        self.add(1);
        Held(self)
    }
}

/// One count of a `Gauge`, given back on drop.
pub struct Held<'a>(&'a Gauge);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// Everything the host counts.
pub struct Metrics {
    /// Per protocol: answered without an error, and errors per `ErrorKind`.
    ok: [AtomicU64; 2],
    errors: [[AtomicU64; ErrorKind::ALL.len()]; 2],
    inferences: AtomicU64,
    batch_size: Histogram,
    stages: [Histogram; Stage::ALL.len()],
    /// Per protocol: an inference request from its arrival to its answer.
    request_seconds: [Histogram; 2],
    /// Inputs in the batcher's queue (set by the batcher).
    pub queue_depth: Gauge,
    in_flight: [Gauge; 2],
    open: [Gauge; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            ok: Default::default(),
            errors: Default::default(),
            inferences: AtomicU64::new(0),
            batch_size: Histogram::new(BATCH_BUCKETS, 1.0),
            stages: std::array::from_fn(|_| Histogram::seconds()),
            request_seconds: std::array::from_fn(|_| Histogram::seconds()),
            queue_depth: Gauge::default(),
            in_flight: Default::default(),
            open: Default::default(),
        }
    }
}

impl Metrics {
    /// A request answered: without an error (`None`) or with one of `kind`.
    pub fn answered(&self, p: Protocol, error: Option<ErrorKind>) {
        match error {
            None => &self.ok[p as usize],
            Some(k) => &self.errors[p as usize][k as usize],
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// A model execution of `inputs` inputs that took `took`.
    pub fn executed(&self, inputs: usize, took: Duration) {
        self.inferences.fetch_add(inputs as u64, Ordering::Relaxed);
        self.batch_size.observe(inputs as u64);
        self.stage(Stage::Infer, took);
    }

    pub fn stage(&self, s: Stage, took: Duration) {
        self.stages[s as usize].observe_time(took);
    }

    /// An inference request's whole time at the host.
    pub fn request_time(&self, p: Protocol, took: Duration) {
        self.request_seconds[p as usize].observe_time(took);
    }

    /// Requests being served now; hold while serving one.
    pub fn in_flight(&self, p: Protocol) -> &Gauge {
        &self.in_flight[p as usize]
    }

    /// Connections open now.
    pub fn open(&self, p: Protocol) -> &Gauge {
        &self.open[p as usize]
    }

    /// Inputs run through the model, and model executions (batches), so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.inferences.load(Ordering::Relaxed), self.batch_size.count())
    }

    /// Every metric in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 << 10);
        let protocols = Protocol::ALL.map(|p| [("protocol", p.label())]);
        let build = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("EDGECASCADE_GIT_COMMIT")),
            ("target", env!("EDGECASCADE_TARGET")),
        ];
        family(
            &mut out,
            "edgecascade_build_info",
            "gauge",
            "The build serving: version, git commit, target.",
            &[(&build[..], 1)],
        );
        let (mut requests, mut errors) = (Vec::new(), Vec::new());
        for p in Protocol::ALL {
            let e = &self.errors[p as usize];
            let failed: u64 = e.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            requests
                .push((vec![("protocol", p.label()), ("outcome", "ok")], self.ok[p as usize].load(Ordering::Relaxed)));
            requests.push((vec![("protocol", p.label()), ("outcome", "error")], failed));
            for k in ErrorKind::ALL {
                errors
                    .push((vec![("protocol", p.label()), ("kind", k.label())], e[k as usize].load(Ordering::Relaxed)));
            }
        }
        family(
            &mut out,
            "edgecascade_requests_total",
            "counter",
            "Requests answered (framed: every reply frame; OIP: every HTTP response), by protocol and outcome.",
            &samples(&requests),
        );
        family(
            &mut out,
            "edgecascade_errors_total",
            "counter",
            "Requests answered with an error, by protocol and kind (their sum is requests_total's error outcome).",
            &samples(&errors),
        );
        family(
            &mut out,
            "edgecascade_inferences_total",
            "counter",
            "Inputs run through the model.",
            &[(&[], self.inferences.load(Ordering::Relaxed) as i64)],
        );
        histograms(&mut out, "edgecascade_batch_size", "Inputs per model execution.", &[(&[], &self.batch_size)]);
        let stages: Vec<[(&str, &str); 1]> = Stage::ALL.iter().map(|s| [("stage", s.label())]).collect();
        let stage_series: Vec<_> = stages.iter().zip(&self.stages).map(|(l, h)| (&l[..], h)).collect();
        histograms(
            &mut out,
            "edgecascade_stage_seconds",
            "Time per stage of serving: decode, preprocess, queue_wait (per input), infer (per execution), \
             postprocess, encode.",
            &stage_series,
        );
        let request_series: Vec<_> = protocols.iter().zip(&self.request_seconds).map(|(l, h)| (&l[..], h)).collect();
        histograms(
            &mut out,
            "edgecascade_request_seconds",
            "An inference request's time at the host, from its arrival to its answer.",
            &request_series,
        );
        family(
            &mut out,
            "edgecascade_queue_depth",
            "gauge",
            "Inputs waiting in the batcher's queue.",
            &[(&[], self.queue_depth.get())],
        );
        let gauges = |g: &[Gauge; 2]| -> Vec<(&[(&str, &str)], i64)> {
            protocols.iter().zip(g).map(|(l, g)| (&l[..], g.get())).collect()
        };
        family(
            &mut out,
            "edgecascade_requests_in_flight",
            "gauge",
            "Requests being served now (OIP: busy workers).",
            &gauges(&self.in_flight),
        );
        family(&mut out, "edgecascade_open_connections", "gauge", "Connections open now.", &gauges(&self.open));
        out
    }
}

type Labels<'a> = &'a [(&'a str, &'a str)];

/// Owned label lists with their values, as `family` takes them.
fn samples<'a>(v: &'a [(Vec<(&'a str, &'a str)>, u64)]) -> Vec<(Labels<'a>, i64)> {
    v.iter().map(|(l, n)| (&l[..], *n as i64)).collect()
}

/// One metric family of plain samples: its HELP and TYPE lines, then a line per sample.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(Labels, i64)]) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{} {v}", label_set(labels, None));
    }
}

/// One histogram family: for each series, its cumulative buckets (`le`), `_sum` and `_count`.
pub fn histograms(out: &mut String, name: &str, help: &str, series: &[(Labels, &Histogram)]) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, h) in series {
        let (cumulative, sum) = h.snapshot();
        for (i, n) in cumulative.iter().enumerate() {
            let le = h.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{} {n}", label_set(labels, Some(&le)));
        }
        let count = cumulative.last().copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_sum{} {sum}", label_set(labels, None));
        let _ = writeln!(out, "{name}_count{} {count}", label_set(labels, None));
    }
}

/// `{a="x",b="y"}` (empty without labels), with `le` last when given.
fn label_set(labels: Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_value(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A label value: backslash, double quote and line feed escaped.
fn escape_value(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// A HELP text: backslash and line feed escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
