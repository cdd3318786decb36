//! The host: serves the cascade's last stage (the large model) to devices over a link. Each
//! connection is a byte stream (a serial port, a TCP socket, a PTY) read through the framing
//! codec; every request is validated against the model's input before it runs, and anything
//! malformed gets an error reply while the host keeps serving. Over TCP each device gets its
//! own thread, up to a bound. With a batcher, requests from every connection (and from the
//! OIP endpoint, `oip::server`) run through the model together in batches. With a token, a
//! connection must present it (`Auth`) before anything else. What every path serves is
//! counted in one `metrics::Metrics`, which the OIP endpoint renders at `/metrics`.

pub mod batch;
#[cfg(test)]
mod framed_tests;
pub mod metrics;
pub mod oip;
mod poll;

use crate::core::policy::{mean_probs, softmax, top_k};
use crate::host::batch::{BatchConfig, BatchError, Batcher};
use crate::host::metrics::{ErrorKind, Metrics, Protocol, Stage};
use crate::link::{
    write_msg, Encoding, ErrorCode, ErrorMsg, FrameError, FrameReader, HostInput, InferRequest, InferResponse,
    LinkError, Message, Welcome, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use crate::model::manifest::Takes;
use crate::model::preprocess;
use crate::model::Model;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every encoding the host can take.
pub const HOST_ENCODINGS: [Encoding; 3] = [Encoding::Original, Encoding::CropJpeg, Encoding::CropRaw];

/// How many classes a reply's `top` lists.
pub const TOP_K: usize = 5;

/// How long a reply to a TCP device may wait for it to take bytes before the connection is
/// given up (serial ports have theirs: `link::MIN_SERIAL_WRITE_TIMEOUT`).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Host {
    pub model: Arc<Model>,
    pub host_id: String,
    pub max_frame: u32,
    /// Runs requests in batches when set; otherwise each runs on its connection's thread.
    pub batcher: Option<Batcher>,
    /// The pre-shared key devices must present, when set.
    pub token: Option<String>,
    /// What the host has served, from every connection and the batcher (`/metrics`).
    pub metrics: Arc<Metrics>,
    /// The host's power sensor, when it has one: each answer then carries the energy the host
    /// drew during the request (whole-board energy, so requests served at the same time each
    /// count the overlap). An estimate is not sent: `host_mj` is for measured figures only.
    pub energy: Option<crate::energy::EnergyContext>,
}

/// What one connection saw, for the log and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Requests, audits included.
    pub requests: u64,
    /// Of `requests`: audits (inputs the device answered itself, sent to check its answer).
    pub audits: u64,
    pub answered: u64,
    pub errors: u64,
}

impl Host {
    pub fn new(model: Model) -> Host {
        let host_id = format!("edgecascade-host-{}", std::process::id());
        Host {
            model: Arc::new(model),
            host_id,
            max_frame: DEFAULT_MAX_FRAME,
            batcher: None,
            token: None,
            metrics: Arc::default(),
            energy: None,
        }
    }

    /// Runs every request through a dynamic batcher from now on. Load the model with
    /// `Model::load_batched` for batches to run in one pass. Batches larger than the runner
    /// finds worth running (timed at start) are not formed: with none worth it, the batcher
    /// still queues and bounds the work, running one input at a time on `cfg.workers`.
    pub fn with_batching(mut self, mut cfg: BatchConfig) -> Host {
        match self.model.runner.warm_batches(cfg.max_batch, cfg.only_if_faster) {
            Ok(best) if best < cfg.max_batch => {
                log::info!(
                    "batches larger than {best} run no input faster here: batching at most {best} (asked {})",
                    cfg.max_batch
                );
                cfg.max_batch = best.max(1);
            }
            Ok(_) => {}
            Err(e) => log::warn!("cannot prepare batches of up to {}: {e}", cfg.max_batch),
        }
        let model = self.model.clone();
        self.batcher = Some(Batcher::start_counted(
            cfg,
            Arc::new(move |inputs: &[&[f32]]| model.runner.run_batch(inputs).map_err(|e| e.to_string())),
            self.metrics.clone(),
        ));
        self
    }

    pub fn with_token(mut self, token: Option<String>) -> Host {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// True when `presented` may talk to this host: no token is needed, or it is the token.
    /// Compared in constant time.
    pub fn admits(&self, presented: Option<&str>) -> bool {
        match (&self.token, presented) {
            (None, _) => true,
            (Some(want), Some(got)) => {
                let (a, b) = (want.as_bytes(), got.as_bytes());
                a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
            }
            (Some(_), None) => false,
        }
    }

    /// Runs preprocessed inputs through the model, in the batcher when there is one, and
    /// returns their raw outputs in order.
    pub fn execute(&self, inputs: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, (ErrorCode, String)> {
        match &self.batcher {
            Some(b) => b.run_all(inputs).map_err(|e| match e {
                BatchError::Busy(_) => (ErrorCode::Busy, e.to_string()),
                BatchError::Closed | BatchError::Run(_) => (ErrorCode::Internal, e.to_string()),
            }),
            None => {
                let refs: Vec<&[f32]> = inputs.iter().map(|i| i.as_slice()).collect();
                let start = Instant::now();
                let outs = self.model.runner.run_batch(&refs).map_err(|e| (ErrorCode::Internal, e.to_string()));
                self.metrics.executed(refs.len(), start.elapsed());
                outs
            }
        }
    }

    /// Tokenizes and runs one text (never batched: inputs differ in length), counted as an
    /// execution of one; returns when tokenizing ended (since `start`) and the raw output.
    pub fn run_text(&self, text: &str, start: Instant) -> Result<(Duration, Vec<f32>), (ErrorCode, String)> {
        let tok =
            self.model.tokenizer.as_ref().ok_or((ErrorCode::Internal, "the text model has no tokenizer".into()))?;
        let tokens = tok.encode(text).map_err(|e| (ErrorCode::BadPayload, e.to_string()))?;
        let decoded = start.elapsed();
        self.metrics.stage(Stage::Preprocess, decoded);
        let t = Instant::now();
        let out = self.model.runner.run_tokens(&tokens.ids).map_err(|e| (ErrorCode::Internal, e.to_string()));
        self.metrics.executed(1, t.elapsed());
        Ok((decoded, out?))
    }

    /// Inputs run so far and model executions they took (fewer when batched).
    pub fn counts(&self) -> (u64, u64) {
        self.metrics.counts()
    }

    /// The handshake's answer: the model, its input, the encodings it takes (a text model's
    /// only `text`, with no image input: size 0).
    pub fn welcome(&self) -> Welcome {
        let (input, accepts) = match &self.model.manifest.takes {
            Takes::Image(i) => {
                (HostInput { size: i.size, channels: 3, crop_fraction: i.crop_fraction }, HOST_ENCODINGS.to_vec())
            }
            Takes::Text(_) => (HostInput { size: 0, channels: 0, crop_fraction: 1.0 }, vec![Encoding::Text]),
        };
        Welcome {
            version: PROTOCOL_VERSION,
            host_id: self.host_id.clone(),
            model: self.model.name().to_owned(),
            input,
            classes: self.model.classes.len() as u32,
            accepts,
            max_frame: self.max_frame,
        }
    }

    /// Serves one connection until the peer closes it, `stop` is set, or the stream fails.
    /// Bad frames and bad requests get error replies; the connection goes on.
    pub fn serve<S: Read + Write>(&self, stream: S, peer: &str, stop: &AtomicBool) -> ConnStats {
        let _open = self.metrics.open(Protocol::Framed).hold();
        let answered = |reply: &Message| {
            let error = match reply {
                Message::Error(e) => Some(ErrorKind::of_code(e.code)),
                _ => None,
            };
            self.metrics.answered(Protocol::Framed, error);
        };
        let mut reader = FrameReader::new(stream, self.max_frame as usize);
        let mut stats = ConnStats::default();
        let mut authed = self.token.is_none();
        while !stop.load(Ordering::Relaxed) {
            let reply = match reader.read_msg() {
                Ok(Message::Auth { token }) => {
                    authed = self.admits(Some(&token));
                    if authed {
                        continue;
                    }
                    stats.errors += 1;
                    log::warn!("{peer}: refused: wrong token");
                    let reply = Message::Error(ErrorMsg::new(None, ErrorCode::Unauthorized, "wrong token"));
                    answered(&reply);
                    let _ = write_msg(reader.get_mut(), &reply);
                    break;
                }
                Ok(msg) if !authed => {
                    stats.errors += 1;
                    log::warn!("{peer}: refused: sent {} without the token this host needs", msg.kind());
                    let why = "this host needs a token: give the device the host's --token (or EDGECASCADE_TOKEN)";
                    let reply = Message::Error(ErrorMsg::new(None, ErrorCode::Unauthorized, why));
                    answered(&reply);
                    let _ = write_msg(reader.get_mut(), &reply);
                    break;
                }
                Ok(msg) => self.handle(msg, peer, &mut stats),
                Err(LinkError::Timeout) => continue,
                Err(LinkError::Closed) => {
                    log::info!("{peer}: closed the link");
                    break;
                }
                Err(LinkError::Frame(e)) => {
                    stats.errors += 1;
                    log::warn!("{peer}: {e}");
                    let code = match e {
                        FrameError::Version(_) => ErrorCode::BadVersion,
                        FrameError::Oversized { .. } => ErrorCode::TooLarge,
                        _ => ErrorCode::BadFrame,
                    };
                    Some(Message::Error(ErrorMsg::new(None, code, e.to_string())))
                }
                Err(e) => {
                    log::warn!("{peer}: link failed: {e}");
                    break;
                }
            };
            if let Some(reply) = reply {
                answered(&reply);
                if let Err(e) = write_msg(reader.get_mut(), &reply) {
                    // The peer is gone (a PTY hung up, a socket reset).
                    log::info!("{peer}: link closed while replying ({e})");
                    break;
                }
            }
        }
        stats
    }

    fn handle(&self, msg: Message, peer: &str, stats: &mut ConnStats) -> Option<Message> {
        let reply = match msg {
            Message::Hello(h) if h.version != PROTOCOL_VERSION => Message::Error(ErrorMsg::new(
                None,
                ErrorCode::BadVersion,
                format!("protocol version {} is not supported (this host speaks {PROTOCOL_VERSION})", h.version),
            )),
            Message::Hello(h) => {
                log::info!("{peer}: device '{}' connected (accepts {:?})", h.device_id, h.accepts);
                Message::Welcome(self.welcome())
            }
            Message::Infer(req) => {
                stats.requests += 1;
                stats.audits += req.is_audit() as u64;
                let seq = req.seq;
                let _serving = self.metrics.in_flight(Protocol::Framed).hold();
                let start = Instant::now();
                let outcome = self.infer(&req);
                self.metrics.request_time(Protocol::Framed, start.elapsed());
                match outcome {
                    Ok(r) => {
                        stats.answered += 1;
                        Message::Answer(r)
                    }
                    Err((code, why)) => {
                        stats.errors += 1;
                        log::warn!("{peer}: request {seq} refused: {why}");
                        Message::Error(ErrorMsg::new(Some(seq), code, why))
                    }
                }
            }
            Message::Ping { nonce } => Message::Pong { nonce },
            other => {
                stats.errors += 1;
                let why = format!("a device does not send {}", other.kind());
                log::warn!("{peer}: {why}");
                Message::Error(ErrorMsg::new(other.seq(), ErrorCode::BadRequest, why))
            }
        };
        Some(reply)
    }

    /// Validates and runs one request.
    pub fn infer(&self, req: &InferRequest) -> Result<InferResponse, (ErrorCode, String)> {
        let start = Instant::now();
        let classes = self.model.classes.len();
        if let Some(p) = &req.device_probs {
            if p.len() != classes {
                return Err((
                    ErrorCode::BadRequest,
                    format!("device_probs has {} values, the host model has {classes} classes", p.len()),
                ));
            }
        }
        let (decoded, out) = match &self.model.manifest.takes {
            Takes::Image(spec) => {
                // Decoding the payload into the model's crop (for `original`, with the crop and
                // resize) is timed apart from the normalisation after it.
                let t = Instant::now();
                let crop = crate::offload::payload::host_crop(req.encoding, &req.payload, spec);
                let decoding = t.elapsed();
                self.metrics.stage(Stage::Decode, decoding);
                let crop = crop.map_err(|e| (ErrorCode::BadPayload, e))?;
                let input = preprocess::normalise(&crop, spec.mean, spec.std, spec.layout);
                let decoded = start.elapsed();
                self.metrics.stage(Stage::Preprocess, decoded.saturating_sub(decoding));
                (decoded, self.execute(vec![input])?.pop().unwrap_or_default())
            }
            Takes::Text(_) => {
                if req.encoding != Encoding::Text {
                    return Err((
                        ErrorCode::BadPayload,
                        format!("the host model takes text; this payload is {}", req.encoding),
                    ));
                }
                let text =
                    crate::model::text::text_of(&req.payload).map_err(|e| (ErrorCode::BadPayload, e.to_string()))?;
                self.run_text(text, start)?
            }
        };
        let inferred = start.elapsed();
        let host_mj = self.energy.as_ref().and_then(|e| {
            let used = e.attribute(start, Instant::now());
            (!used.source.starts_with("estimate")).then_some(used.mj as f32)
        });
        let probs = softmax(&self.model.as_logits(out), 1.0);
        let top_of = match &req.device_probs {
            Some(d) => mean_probs(&[d.as_slice(), probs.as_slice()]),
            None => probs.clone(),
        };
        let top = top_k(&top_of, TOP_K).into_iter().map(|(c, p)| (c as u32, p)).collect();
        self.metrics.stage(Stage::Postprocess, start.elapsed().saturating_sub(inferred));
        Ok(InferResponse {
            seq: req.seq,
            top,
            probs: req.want_probs.then_some(probs),
            host_ms: start.elapsed().as_secs_f32() * 1e3,
            host_decode_ms: decoded.as_secs_f32() * 1e3,
            host_infer_ms: (inferred - decoded).as_secs_f32() * 1e3,
            host_mj,
        })
    }
}

/// Serves devices on `listener` until `stop`, each connection on its own thread, at most
/// `max_conns` at once (past that a connection is closed at once).
pub fn serve_tcp(
    host: Arc<Host>,
    listener: TcpListener,
    max_conns: usize,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    serve_connections(
        listener,
        max_conns,
        &stop,
        |_, peer| log::warn!("{peer}: refused, already serving {max_conns} devices"),
        |sock, peer| {
            // A device that stops reading fails the reply instead of holding this thread.
            if let Err(e) = sock.set_write_timeout(Some(WRITE_TIMEOUT)) {
                log::warn!("{peer}: cannot set up the socket: {e}");
                return;
            }
            let stats = host.serve(sock, peer, &stop);
            log::info!(
                "{peer}: {} requests ({} audits), {} answered, {} errors",
                stats.requests,
                stats.audits,
                stats.answered,
                stats.errors
            );
        },
    )
}

/// Accepts connections on `listener` until `stop`, each handed to `serve` on a thread of its
/// own, its socket blocking with a 250 ms read timeout (for polling `stop`) and no Nagle delay.
/// At most `max_conns` are served at once: past that a connection goes to `refuse`, then is
/// closed. (The OIP endpoint holds its connections in a poller instead: `oip::poll`.)
pub fn serve_connections(
    listener: TcpListener,
    max_conns: usize,
    stop: &AtomicBool,
    refuse: impl Fn(TcpStream, &str),
    serve: impl Fn(TcpStream, &str) + Sync,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let active = AtomicUsize::new(0);
    std::thread::scope(|s| {
        while !stop.load(Ordering::Relaxed) {
            let (sock, peer) = match listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    continue;
                }
            };
            let peer = peer.to_string();
            let ok = sock
                .set_nonblocking(false)
                .and_then(|_| sock.set_read_timeout(Some(Duration::from_millis(250))))
                .and_then(|_| sock.set_nodelay(true));
            if let Err(e) = ok {
                log::warn!("{peer}: cannot set up the socket: {e}");
                continue;
            }
            if active.load(Ordering::Relaxed) >= max_conns {
                refuse(sock, &peer);
                continue;
            }
            active.fetch_add(1, Ordering::Relaxed);
            let (serve, active) = (&serve, &active);
            s.spawn(move || {
                serve(sock, &peer);
                active.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    Ok(())
}
