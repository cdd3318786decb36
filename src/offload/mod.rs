//! The device's side of the link: `Remote` is the cascade's last stage reached over a link.
//! It connects and shakes hands, encodes the payload, sends the request and waits for the
//! answer with the same sequence number, retrying with backoff on timeouts and damaged
//! frames and reconnecting when the host comes back. When the host cannot answer it returns
//! `StageFailure::Unavailable`, so the cascade answers locally, marked degraded: every input
//! gets exactly one answer.
//!
//! `RemoteStage` is the seam every kind of remote last stage fills: `Remote` here (the framed
//! link over serial or TCP) and `oip::client::OipRemote` (any Open Inference Protocol v2
//! server over HTTP). Both share `Backoff` and `LinkReport`.

pub mod oip;

use crate::core::cascade::StageFailure;
use crate::link::{
    connect, write_msg, write_sync, Encoding, ErrorCode, FrameReader, Hello, InferRequest, InferResponse, LinkAddr,
    LinkError, Message, Paced, Shaping, Stream, Welcome, DEFAULT_MAX_FRAME,
};
use crate::model::preprocess;
use crate::run::spans::Spans;
use image::RgbImage;
use serde::Serialize;
use std::time::{Duration, Instant};

/// How the device reaches the host and how hard it tries.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    pub addr: LinkAddr,
    /// Pace the link (rehearsal of a slower one); figures then say they came from a paced link.
    pub shaping: Option<Shaping>,
    /// Encodings to offer, preferred first; the first the host accepts is used.
    pub encodings: Vec<Encoding>,
    pub jpeg_quality: u8,
    pub device_id: String,
    pub connect_timeout: Duration,
    /// How long to wait for one answer before sending the request again.
    pub reply_timeout: Duration,
    /// Sends per request (the first and the retries).
    pub tries: u32,
    /// Ask for every probability (needed to ensemble on the device).
    pub want_probs: bool,
    /// The host's pre-shared key, when it needs one.
    pub token: Option<String>,
    /// How to preprocess for a host that takes tensors (an OIP v2 server): the host model's
    /// manifest input (mean, std, crop). The size comes from the server's metadata.
    pub tensor_spec: Option<crate::model::manifest::InputSpec>,
}

impl RemoteConfig {
    /// True when the link is paced to rehearse a slower one.
    pub fn is_paced(&self) -> bool {
        self.shaping.as_ref().is_some_and(|s| s.is_active())
    }

    pub fn new(addr: LinkAddr) -> RemoteConfig {
        RemoteConfig {
            addr,
            shaping: None,
            encodings: vec![Encoding::CropJpeg, Encoding::Original, Encoding::CropRaw],
            jpeg_quality: 90,
            device_id: format!("edgecascade-device-{}", std::process::id()),
            connect_timeout: Duration::from_secs(2),
            reply_timeout: Duration::from_secs(5),
            tries: 3,
            want_probs: false,
            token: None,
            tensor_spec: None,
        }
    }
}

/// What a remote last stage serves, learned when it connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteInfo {
    pub model: String,
    pub classes: usize,
}

/// Why a remote stage could not connect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The host is there but will not serve this device as configured (a missing or wrong
    /// token, a model it cannot feed): retrying will not help, the configuration must change.
    #[error("{0}")]
    Refused(String),
    /// The host is not reachable now; inputs are answered locally (degraded) until it is.
    #[error("{0}")]
    Unreachable(String),
}

/// The cascade's last stage reached over a link: the framed link (`Remote`) or an OIP v2
/// server (`oip::client::OipRemote`).
pub trait RemoteStage: Send {
    /// Connects now if not connected (at start, to fail early and learn the host's model).
    fn connect(&mut self) -> Result<RemoteInfo, ConnectError>;
    /// Offloads one input and returns the host's logits (log-probabilities). `bytes` are the
    /// input as read, `img` its decoded pixels. `StageFailure::Unavailable` when the host
    /// cannot answer: the cascade then answers locally, marked degraded.
    fn infer(
        &mut self,
        bytes: &[u8],
        img: &RgbImage,
        spans: &mut Spans,
        stage: usize,
        report: &mut LinkReport,
    ) -> Result<Vec<f32>, StageFailure>;
    /// True when the link is paced to rehearse a slower one (its times are then modelled).
    fn is_paced(&self) -> bool;
}

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// After a request finds no host, the next ones answer locally at once until a backoff
/// (by default doubling from 250 ms to 8 s) has passed, instead of each waiting out its own
/// timeouts.
#[derive(Clone, Debug)]
pub struct Backoff {
    down_until: Option<Instant>,
    delay: Duration,
    min: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(MIN_BACKOFF, MAX_BACKOFF)
    }
}

impl Backoff {
    /// Waits doubling from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { down_until: None, delay: min, min, max: max.max(min) }
    }

    /// `Unavailable` while the host is known to be down.
    pub fn check(&self) -> Result<(), StageFailure> {
        match self.down_until {
            Some(until) if Instant::now() < until => Err(StageFailure::Unavailable(format!(
                "host unreachable; next try in {:.1} s",
                (until - Instant::now()).as_secs_f64()
            ))),
            _ => Ok(()),
        }
    }

    pub fn succeeded(&mut self) {
        *self = Backoff::new(self.min, self.max);
    }

    /// Starts the next wait and returns how long it is.
    pub fn failed(&mut self) -> Duration {
        let wait = self.delay;
        self.down_until = Some(Instant::now() + wait);
        self.delay = (self.delay * 2).min(self.max);
        wait
    }
}

/// What the link did for one offloaded input, logged beside the answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LinkReport {
    pub encoding: Option<String>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub tries: u32,
    /// The host's own time on the request (decode, preprocess, inference), as it reported it.
    pub host_ms: Option<f32>,
    /// Of `host_ms`: the host's decode and preprocessing, and its model's inference.
    pub host_decode_ms: Option<f32>,
    pub host_infer_ms: Option<f32>,
    pub host_mj: Option<f32>,
    /// True when the link was paced to rehearse a slower one: its times are modelled.
    pub paced: bool,
}

struct Conn {
    reader: FrameReader<Box<dyn Stream>>,
    welcome: Welcome,
    encoding: Encoding,
}

/// The remote last stage.
pub struct Remote {
    cfg: RemoteConfig,
    open: Box<dyn FnMut() -> Result<Box<dyn Stream>, LinkError> + Send>,
    conn: Option<Conn>,
    seq: u64,
    backoff: Backoff,
    /// Answers that arrived for a request already answered (duplicates, late replies).
    pub stale: u64,
}

impl Remote {
    /// A remote stage that opens its link from `cfg.addr`.
    pub fn new(cfg: RemoteConfig) -> Remote {
        let (addr, timeout) = (cfg.addr.clone(), cfg.connect_timeout);
        Remote::with_opener(cfg, move || connect(&addr, timeout))
    }

    /// A remote stage over streams made by `open` (a PTY end, an in-memory pipe).
    pub fn with_opener(
        cfg: RemoteConfig,
        open: impl FnMut() -> Result<Box<dyn Stream>, LinkError> + Send + 'static,
    ) -> Remote {
        Remote { cfg, open: Box::new(open), conn: None, seq: 0, backoff: Backoff::default(), stale: 0 }
    }

    pub fn welcome(&self) -> Option<&Welcome> {
        self.conn.as_ref().map(|c| &c.welcome)
    }

    /// Connects now if not connected (at start, to fail early and learn the host's model).
    pub fn ensure_connected(&mut self) -> Result<&Welcome, ConnectError> {
        if self.conn.is_none() {
            let conn = self.handshake()?;
            self.conn = Some(conn);
        }
        Ok(&self.conn.as_ref().expect("connected").welcome)
    }

    fn handshake(&mut self) -> Result<Conn, ConnectError> {
        use ConnectError::{Refused, Unreachable};
        let addr = &self.cfg.addr;
        let stream = (self.open)().map_err(|e| Unreachable(format!("cannot open link {addr}: {e}")))?;
        let mut stream: Box<dyn Stream> = match &self.cfg.shaping {
            Some(s) if s.is_active() => Box::new(Paced::new(stream, s.clone())),
            _ => stream,
        };
        stream.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| Unreachable(format!("{addr}: {e}")))?;
        let mut reader = FrameReader::new(stream, DEFAULT_MAX_FRAME as usize);
        let hello = Hello::new(self.cfg.device_id.clone(), self.cfg.encodings.clone());
        let deadline = Instant::now() + self.cfg.connect_timeout;
        // A lone 0 first ends whatever came before on a serial line (a frame a timed-out write
        // left half sent), so the host does not take our first frame as part of it.
        let sent = write_sync(reader.get_mut()).and_then(|_| match &self.cfg.token {
            Some(token) => write_msg(reader.get_mut(), &Message::Auth { token: token.clone() }),
            None => Ok(0),
        });
        sent.and_then(|_| write_msg(reader.get_mut(), &Message::Hello(hello.clone())))
            .map_err(|e| Unreachable(format!("link {addr}: handshake: {e}")))?;
        loop {
            match reader.read_msg() {
                Ok(Message::Welcome(w)) => {
                    let encoding = w.choose_encoding(&self.cfg.encodings).ok_or_else(|| {
                        Refused(format!(
                            "the host accepts none of the encodings {:?} (it takes {:?})",
                            self.cfg.encodings, w.accepts
                        ))
                    })?;
                    reader.set_max_frame(w.agreed_max_frame(&hello) as usize);
                    log::info!(
                        "link {}: host '{}' serves {} ({}x{}), sending {}",
                        self.cfg.addr,
                        w.host_id,
                        w.model,
                        w.input.size,
                        w.input.size,
                        encoding
                    );
                    return Ok(Conn { reader, welcome: w, encoding });
                }
                Ok(Message::Error(e)) if e.code == ErrorCode::Unauthorized => {
                    return Err(Refused(format!("host {addr} refused the device: {e}")))
                }
                // The host saw line noise before our frames (the rest of a half-sent frame).
                Ok(Message::Error(e)) if e.code == ErrorCode::BadFrame && e.seq.is_none() => {}
                Ok(Message::Error(e)) => return Err(Unreachable(format!("host {addr} refused the handshake: {e}"))),
                Ok(_) | Err(LinkError::Frame(_)) => {}
                Err(LinkError::Timeout) if Instant::now() < deadline => {}
                Err(LinkError::Timeout) => {
                    return Err(Unreachable(format!(
                        "link {addr}: no answer to the handshake within {:?} (is the host running at the other end?)",
                        self.cfg.connect_timeout
                    )))
                }
                Err(e) => return Err(Unreachable(format!("link {addr}: handshake: {e}"))),
            }
        }
    }

    fn await_answer(&mut self, seq: u64, report: &mut LinkReport) -> Result<InferResponse, Wait> {
        let deadline = Instant::now() + self.cfg.reply_timeout;
        let conn = self.conn.as_mut().expect("connected");
        loop {
            let before = conn.reader.consumed();
            let msg = conn.reader.read_msg();
            report.bytes_received += conn.reader.consumed() - before;
            match msg {
                Ok(Message::Answer(a)) if a.seq == seq => return Ok(a),
                Ok(Message::Answer(_)) => self.stale += 1,
                Ok(Message::Error(e)) if e.seq == Some(seq) => return Err(Wait::Refused(e.code, e.message)),
                // An error without a sequence number: the host saw a damaged frame, most
                // likely our request; send it again.
                Ok(Message::Error(e)) if e.seq.is_none() => return Err(Wait::Retry(format!("host: {e}"))),
                Ok(_) => {}
                Err(LinkError::Frame(e)) => log::debug!("damaged frame from the host: {e}"),
                Err(LinkError::Timeout) if Instant::now() < deadline => {}
                Err(LinkError::Timeout) => {
                    return Err(Wait::Retry(format!("no answer within {:?}", self.cfg.reply_timeout)))
                }
                Err(e) => return Err(Wait::Broken(format!("link failed: {e}"))),
            }
        }
    }
}

impl RemoteStage for Remote {
    fn connect(&mut self) -> Result<RemoteInfo, ConnectError> {
        let w = self.ensure_connected()?;
        Ok(RemoteInfo { model: w.model.clone(), classes: w.classes as usize })
    }

    /// Spans: encode, send, wait.
    fn infer(
        &mut self,
        bytes: &[u8],
        img: &RgbImage,
        spans: &mut Spans,
        stage: usize,
        report: &mut LinkReport,
    ) -> Result<Vec<f32>, StageFailure> {
        report.paced = self.is_paced();
        self.backoff.check()?;
        self.seq += 1;
        let seq = self.seq;
        let mut last_error = String::new();
        let mut payload: Option<(Encoding, Vec<u8>)> = None;
        for attempt in 1..=self.cfg.tries.max(1) {
            report.tries = attempt;
            if let Err(e) = self.ensure_connected() {
                last_error = e.to_string();
                break;
            }
            let conn = self.conn.as_mut().expect("connected");
            if payload.as_ref().is_none_or(|(enc, _)| *enc != conn.encoding) {
                let enc = conn.encoding;
                let w = &conn.welcome;
                let p = spans
                    .time("encode", Some(stage), || encode_payload(enc, bytes, img, w, self.cfg.jpeg_quality))
                    .map_err(StageFailure::Input)?;
                payload = Some((enc, p));
            }
            let (encoding, data) = payload.as_ref().expect("encoded");
            report.encoding = Some(encoding.to_string());
            let req = InferRequest {
                seq,
                encoding: *encoding,
                payload: data.clone(),
                device_probs: None,
                want_probs: self.cfg.want_probs,
            };
            let sent = spans.time("send", Some(stage), || write_msg(conn.reader.get_mut(), &Message::Infer(req)));
            // A send that fails (the host not taking bytes within the write timeout, a closed
            // link) ends the try like a missing answer; the next try opens the link again.
            let waited = match sent {
                Ok(n) => {
                    report.bytes_sent += n as u64;
                    spans.time("wait", Some(stage), || self.await_answer(seq, report))
                }
                Err(e) => Err(Wait::Broken(format!("send failed: {e}"))),
            };
            match waited {
                Ok(answer) => {
                    self.backoff.succeeded();
                    report.host_ms = Some(answer.host_ms);
                    report.host_decode_ms = Some(answer.host_decode_ms);
                    report.host_infer_ms = Some(answer.host_infer_ms);
                    report.host_mj = answer.host_mj;
                    let classes = self.conn.as_ref().map_or(0, |c| c.welcome.classes as usize);
                    return Ok(answer_logits(&answer, classes));
                }
                Err(Wait::Refused(code, why)) if code == ErrorCode::BadPayload || code == ErrorCode::BadRequest => {
                    // The host cannot take this input; sending it again will not help.
                    return Err(StageFailure::Unavailable(format!("host refused the input: {why}")));
                }
                Err(Wait::Refused(_, why)) | Err(Wait::Retry(why)) => last_error = why,
                Err(Wait::Broken(why)) => {
                    last_error = why;
                    self.conn = None;
                }
            }
            log::warn!("link {}: request {seq} try {attempt}: {last_error}", self.cfg.addr);
        }
        self.conn = None;
        self.backoff.failed();
        Err(StageFailure::Unavailable(format!("no answer from the host after {} tries: {last_error}", report.tries)))
    }

    fn is_paced(&self) -> bool {
        self.cfg.is_paced()
    }
}

enum Wait {
    /// The host answered with an error for this request.
    Refused(ErrorCode, String),
    /// Try again on the same connection.
    Retry(String),
    /// The connection is gone.
    Broken(String),
}

/// The host's answer as logits for the cascade driver: its full probabilities when sent,
/// otherwise its top-k with the remaining mass spread over the other classes.
fn answer_logits(a: &InferResponse, classes: usize) -> Vec<f32> {
    let probs = match &a.probs {
        Some(p) => p.clone(),
        None => {
            let listed: f32 = a.top.iter().map(|(_, p)| p).sum();
            let rest = classes.saturating_sub(a.top.len()).max(1);
            let fill = ((1.0 - listed).max(0.0) / rest as f32).min(a.top.last().map_or(1.0, |t| t.1));
            let mut p = vec![fill; classes.max(1)];
            for &(c, v) in &a.top {
                if let Some(slot) = p.get_mut(c as usize) {
                    *slot = v;
                }
            }
            p
        }
    };
    crate::core::policy::log_probs(probs)
}

/// The request's payload in `encoding`: the bytes as read, or the host model's centre crop
/// as JPEG or raw RGB.
pub fn encode_payload(
    encoding: Encoding,
    bytes: &[u8],
    img: &RgbImage,
    w: &Welcome,
    quality: u8,
) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Original => Ok(bytes.to_vec()),
        Encoding::CropJpeg => crop_jpeg(img, w.input.size, w.input.crop_fraction, quality),
        Encoding::CropRaw => Ok(preprocess::crop_resize(img, w.input.size, w.input.crop_fraction).into_raw()),
    }
}

/// The centre crop at `size`, encoded as JPEG at `quality`.
pub fn crop_jpeg(img: &RgbImage, size: u32, crop_fraction: f64, quality: u8) -> Result<Vec<u8>, String> {
    let crop = preprocess::crop_resize(img, size, crop_fraction);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .encode_image(&crop)
        .map_err(|e| format!("cannot encode the crop as JPEG: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_answers_become_a_distribution_with_the_same_argmax() {
        let a = InferResponse {
            seq: 1,
            top: vec![(7, 0.6), (3, 0.2)],
            probs: None,
            host_ms: 1.0,
            host_decode_ms: 0.5,
            host_infer_ms: 0.5,
            host_mj: None,
        };
        let l = answer_logits(&a, 10);
        let p = crate::core::policy::softmax(&l, 1.0);
        assert_eq!(crate::core::policy::argmax(&p), 7);
        assert!((p[7] - 0.6).abs() < 1e-5 && (p[3] - 0.2).abs() < 1e-5, "{p:?}");
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
