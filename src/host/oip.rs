//! The host's Open Inference Protocol v2 endpoint over HTTP/1.1 (`host --oip-listen`): health,
//! server and model metadata, and inference with JSON tensors or the binary tensor extension,
//! for Triton's clients, KServe and anything else that speaks the protocol. Requests run
//! through the same `Host` as the framed link's (and its batcher, when on). Every bad request
//! gets a 4xx with an OIP error body, and the endpoint keeps serving.
//!
//! `GET /metrics` gives the host's `Metrics` (of both links and the batcher) in Prometheus'
//! text format; like everything but health it needs the token when the host has one.
//!
//! Connections wait in one poller thread (`poll`) until a request head has arrived whole; the
//! request is then served on a worker thread (at most `max_conns` at once; past that a request
//! waits a second for one, then gets 503) and the connection, kept alive, goes back to the
//! poller. So idle and slow clients hold no thread: a device holding a kept-alive connection
//! never delays another's (tiny_http, used before, queued new connections behind open ones),
//! and heads trickling in a byte at a time hold nothing but their socket until their deadline
//! (issue 18). Limits: the time a head and a
//! whole request may take to arrive (408), connections waiting with and without the token,
//! idle time, head and body sizes (431, 413).
//!
//! The model takes what the host model's graph takes: an image model one FP32 tensor, its
//! batch axis free (`[-1, 3, S, S]` for NCHW), already preprocessed as the manifest says; a
//! text model one BYTES tensor `text` `[-1]`, each element a UTF-8 text the host tokenizes and
//! runs on its own (`Host::run_text`: texts are never batched). Either gives one FP32 tensor
//! `[-1, classes]` of logits (or probabilities, as the manifest says).

use super::metrics::{self, ErrorKind, Protocol, Stage};
use super::poll::{self, After};
use crate::host::Host;
use crate::link::ErrorCode;
use crate::model::manifest::{OutputKind, Takes};
use crate::oip::http::{reason, Framing, HttpError, RequestHead, Wire};
use crate::oip::{
    decode_request, encode_response, error_body, ModelMetadata, ServerMetadata, Tensor, TensorMeta, BYTES, FP32,
};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The only version served.
pub const VERSION: &str = "1";

/// Limits of the endpoint.
#[derive(Clone, Debug)]
pub struct OipConfig {
    /// Requests served at once, each on a worker thread (past that a request waits up to a
    /// second for one, then gets 503). Connections waiting for their next request take none.
    pub max_conns: usize,
    /// Connections held that have not yet presented the host's token (on a host without one:
    /// not yet sent a whole request); past that the oldest of them is closed.
    pub max_waiting: usize,
    /// Kept-alive connections held that have presented it; past that the one idle longest is
    /// closed (its client connects again).
    pub max_kept: usize,
    /// The largest request body taken, in bytes.
    pub max_body: usize,
    /// The largest batch one request may carry.
    pub max_request_batch: usize,
    /// How long a kept-alive connection that has presented the token may wait for its next
    /// request.
    pub idle: Duration,
    /// How long a request head may take to arrive whole: from its first byte on a connection
    /// that has presented the token, from connecting (or the last answer) on one that has not.
    pub head_time: Duration,
    /// How long a request may take to arrive once it has started (head and body).
    pub request_time: Duration,
}

impl Default for OipConfig {
    fn default() -> Self {
        OipConfig {
            max_conns: 64,
            max_waiting: 1024,
            max_kept: 1024,
            max_body: 64 << 20,
            max_request_batch: 64,
            idle: Duration::from_secs(300),
            head_time: Duration::from_secs(20),
            request_time: Duration::from_secs(60),
        }
    }
}

/// Listens for OIP v2 on `addr` (`127.0.0.1:8000`; a bare port means loopback).
pub fn bind(addr: &str) -> Result<TcpListener, String> {
    let addr = if addr.parse::<u16>().is_ok() { format!("127.0.0.1:{addr}") } else { addr.to_owned() };
    TcpListener::bind(&addr).map_err(|e| format!("cannot listen for OIP v2 on {addr}: {e}"))
}

/// The name of the model's input and output tensors.
pub fn tensor_names(host: &Host) -> (String, String) {
    let m = &host.model.manifest;
    let input = match &m.takes {
        Takes::Image(i) => i.name.clone().unwrap_or_else(|| "input".into()),
        Takes::Text(_) => "text".into(),
    };
    let output = match m.output.kind {
        OutputKind::Logits => "logits",
        OutputKind::Probabilities => "probabilities",
    };
    (input, output.to_owned())
}

/// The model's metadata: its input and output with a free batch axis (a text model's input:
/// BYTES `[-1]`, one text per element).
pub fn model_metadata(host: &Host) -> ModelMetadata {
    let (input, output) = tensor_names(host);
    let (datatype, mut shape): (&str, Vec<i64>) = match &host.model.manifest.takes {
        Takes::Image(i) => (FP32, i.shape().iter().map(|&d| d as i64).collect()),
        Takes::Text(_) => (BYTES, vec![1]),
    };
    shape[0] = -1;
    ModelMetadata {
        name: host.model.name().to_owned(),
        versions: vec![VERSION.to_owned()],
        platform: "edgecascade_tract_onnx".into(),
        inputs: vec![TensorMeta { name: input, datatype: datatype.into(), shape }],
        outputs: vec![TensorMeta {
            name: output,
            datatype: FP32.into(),
            shape: vec![-1, host.model.classes.len() as i64],
        }],
    }
}

/// Serves until `stop` is set: connections wait in one poller thread, requests run on up to
/// `cfg.max_conns` worker threads (HTTP/1.1 keep-alive).
pub fn serve(host: Arc<Host>, listener: TcpListener, cfg: OipConfig, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    poll::run(listener, &cfg, &stop, &Endpoint { host: &host, cfg: &cfg })
}

/// The endpoint's side of the poller: requests and refusals.
struct Endpoint<'a> {
    host: &'a Host,
    cfg: &'a OipConfig,
}

impl poll::Serve for Endpoint<'_> {
    fn request(&self, wire: &mut Wire, head: RequestHead, started: Instant, peer: SocketAddr) -> After {
        let _serving = self.host.metrics.in_flight(Protocol::Oip).hold();
        serve_request(self.host, self.cfg, wire, head, started, &peer.to_string())
    }

    fn refusal(&self, status: u16, why: &str) -> Vec<u8> {
        self.host.metrics.answered(Protocol::Oip, ErrorKind::of_status(status));
        let mut r = Reply::error(status, why);
        if status == 503 {
            r.extra.push(("Retry-After", "1".to_owned()));
        }
        r.encode(false, false)
    }

    fn connections(&self, open: usize) {
        self.host.metrics.open(Protocol::Oip).set(open as i64);
    }
}

/// One request whose head has arrived: the token, then the body (given until `started` +
/// `request_time`), then the answer; says whether the connection stays open.
fn serve_request(
    host: &Host,
    cfg: &OipConfig,
    wire: &mut Wire,
    head: RequestHead,
    started: Instant,
    peer: &str,
) -> After {
    let deadline = started + cfg.request_time;
    let framing = match Framing::of(&head.headers, Framing::Empty) {
        Ok(Framing::Sized(n)) if n > cfg.max_body => {
            Err(HttpError::TooLarge(format!("the body has {n} bytes, this host takes at most {}", cfg.max_body)))
        }
        other => other,
    };
    let presented = head.header("Authorization").and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let proven = host.admits(presented);
    // A request without the token is refused before its body is read (and the connection
    // closed, the body unread), so that nobody without it can make the host take 64 MiB.
    if !is_health(&split_path(&head.target).1) {
        if let Some(refusal) = unauthorized(host, presented) {
            note_reply(host, peer, &head, &refusal);
            let keep = head.keep_alive() && matches!(framing, Ok(Framing::Empty));
            if write_reply(wire, refusal, head.method == "HEAD", keep).is_err() {
                return After::Close;
            }
            return if keep { After::Keep { proven } } else { After::Drain };
        }
    }
    let body = framing.and_then(|f| {
        if f != Framing::Empty && head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            wire.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        wire.read_body(f, cfg.max_body, deadline)
    });
    let body = match body {
        Ok(b) => b,
        Err(e) => return refuse(host, wire, peer, &head, e),
    };
    let keep_alive = head.keep_alive();
    let reply = route(host, cfg, &head, body);
    note_reply(host, peer, &head, &reply);
    if let Err(e) = write_reply(wire, reply, head.method == "HEAD", keep_alive) {
        log::info!("oip {peer}: client gone before the reply ({e})");
        return After::Close;
    }
    if keep_alive {
        After::Keep { proven }
    } else {
        After::Close
    }
}

/// Answers a request whose body could not be read whole with its 4xx, if the client is still
/// there to read it; the connection then closes (what is left of the request is unreadable).
fn refuse(host: &Host, wire: &mut Wire, peer: &str, head: &RequestHead, e: HttpError) -> After {
    let what = format!("{} {}: ", head.method, head.target);
    let reply = match &e {
        HttpError::TooLarge(why) => Reply::error(413, why),
        HttpError::Protocol(why) => Reply::error(400, why),
        e if e.is_timeout() => Reply::error(408, format!("{what}the request did not arrive in time")),
        e => {
            log::info!("oip {peer}: {what}connection ended: {e}");
            return After::Close;
        }
    };
    log::warn!("oip {peer}: {what}{} {}", reply.status, String::from_utf8_lossy(&reply.body));
    host.metrics.answered(Protocol::Oip, ErrorKind::of_status(reply.status));
    match write_reply(wire, reply, false, false) {
        Ok(()) => After::Drain,
        Err(_) => After::Close,
    }
}

/// Counts a reply and logs it (errors as warnings).
fn note_reply(host: &Host, peer: &str, head: &RequestHead, reply: &Reply) {
    host.metrics.answered(Protocol::Oip, ErrorKind::of_status(reply.status));
    if reply.status >= 400 {
        let why = String::from_utf8_lossy(&reply.body);
        log::warn!("oip {peer}: {} {} -> {} {why}", head.method, head.target, reply.status);
    } else {
        log::debug!("oip {peer}: {} {} -> {}", head.method, head.target, reply.status);
    }
}

/// What one request gets back.
struct Reply {
    status: u16,
    body: Vec<u8>,
    header_len: Option<usize>,
    /// The body's type when it is not JSON or binary tensors.
    content_type: Option<&'static str>,
    extra: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, body: Vec<u8>) -> Reply {
        Reply { status, body, header_len: None, content_type: None, extra: Vec::new() }
    }
    fn empty(status: u16) -> Reply {
        Reply::json(status, Vec::new())
    }
    fn error(status: u16, msg: impl AsRef<str>) -> Reply {
        Reply::json(status, error_body(msg.as_ref()))
    }

    /// The whole message: head and, unless `head_only` (a HEAD request), body.
    fn encode(self, head_only: bool, keep_alive: bool) -> Vec<u8> {
        let content_type = match (self.content_type, self.header_len) {
            (Some(t), _) => t,
            (None, Some(_)) => "application/octet-stream",
            (None, None) => "application/json",
        };
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            self.status,
            reason(self.status),
            self.body.len()
        );
        if let Some(n) = self.header_len {
            head.push_str(&format!("{}: {n}\r\n", crate::oip::HEADER_LEN));
        }
        for (k, v) in &self.extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(if keep_alive { "Connection: keep-alive\r\n\r\n" } else { "Connection: close\r\n\r\n" });
        let mut msg = head.into_bytes();
        if !head_only {
            msg.extend_from_slice(&self.body);
        }
        msg
    }
}

fn write_reply(wire: &mut Wire, reply: Reply, head_only: bool, keep_alive: bool) -> std::io::Result<()> {
    wire.write_all(&reply.encode(head_only, keep_alive))
}

/// A request target's path, and its segments.
fn split_path(target: &str) -> (&str, Vec<&str>) {
    let path = target.split('?').next().unwrap_or("");
    (path, path.trim_matches('/').split('/').collect())
}

/// Liveness and readiness stay open to probes (Kubernetes, a load balancer) without a token.
fn is_health(parts: &[&str]) -> bool {
    matches!(parts, ["v2", "health", "live" | "ready"])
}

/// The 401 a request gets when the host needs a token and the request does not carry it
/// (`presented`: the bearer token it carries, if any).
fn unauthorized(host: &Host, presented: Option<&str>) -> Option<Reply> {
    if host.admits(presented) {
        return None;
    }
    let why = if presented.is_some() {
        "wrong bearer token"
    } else {
        "this host needs a token: send `Authorization: Bearer <token>` (the host's --token)"
    };
    let mut r = Reply::error(401, why);
    r.extra.push(("WWW-Authenticate", "Bearer".to_owned()));
    Some(r)
}

fn route(host: &Host, cfg: &OipConfig, req: &RequestHead, body: Vec<u8>) -> Reply {
    let (path, parts) = split_path(&req.target);
    let method = req.method.as_str();
    let get = method == "GET" || method == "HEAD";
    let wrong_method = |allowed: &str| {
        let mut r = Reply::error(405, format!("{method} is not allowed on {path} (use {allowed})"));
        r.extra.push(("Allow", allowed.to_owned()));
        r
    };
    if is_health(&parts) {
        return if get { Reply::empty(200) } else { wrong_method("GET") };
    }
    if parts == ["metrics"] {
        if !get {
            return wrong_method("GET");
        }
        let mut r = Reply::json(200, host.metrics.render().into_bytes());
        r.content_type = Some(metrics::CONTENT_TYPE);
        return r;
    }
    // (A request without the host's token never gets here: `serve_request` answers it first.)
    let name = host.model.name();
    let (model, rest) = match parts.as_slice() {
        ["v2"] if get => {
            let meta = ServerMetadata {
                name: "edgecascade".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                extensions: vec![crate::oip::BINARY_EXTENSION.into()],
            };
            return Reply::json(200, serde_json::to_vec(&meta).expect("JSON"));
        }
        ["v2"] => return wrong_method("GET"),
        ["v2", "models", model, rest @ ..] => (*model, rest),
        _ => return Reply::error(404, format!("no such endpoint: {path}")),
    };
    if model != name {
        return Reply::error(404, format!("unknown model '{model}' (this host serves '{name}')"));
    }
    let rest = match rest {
        ["versions", v, rest @ ..] if *v == VERSION => rest,
        ["versions", v, ..] => {
            return Reply::error(404, format!("model '{name}' has no version '{v}' (it has version {VERSION})"))
        }
        rest => rest,
    };
    match rest {
        [] if get => Reply::json(200, serde_json::to_vec(&model_metadata(host)).expect("JSON")),
        ["ready"] if get => Reply::empty(200),
        ["stats"] if get => {
            // Triton's statistics extension, its counting fields: executions < inferences
            // shows requests being batched.
            let (inferences, executions) = host.counts();
            let stats = serde_json::json!({"model_stats": [{
                "name": name, "version": VERSION,
                "inference_count": inferences, "execution_count": executions,
            }]});
            Reply::json(200, serde_json::to_vec(&stats).expect("JSON"))
        }
        [] | ["ready"] | ["stats"] => wrong_method("GET"),
        ["infer"] if method == "POST" => {
            let start = Instant::now();
            let reply = infer(host, cfg, req, body);
            host.metrics.request_time(Protocol::Oip, start.elapsed());
            reply
        }
        ["infer"] => wrong_method("POST"),
        _ => Reply::error(404, format!("no such endpoint: {path}")),
    }
}

/// Runs one inference request. The body is dropped once decoded and the tensor's data moved,
/// not copied, into the model's inputs: a request holds one copy of its tensor while it waits.
fn infer(host: &Host, cfg: &OipConfig, req: &RequestHead, body: Vec<u8>) -> Reply {
    let header_len = match req.header(crate::oip::HEADER_LEN).map(|v| v.parse::<usize>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return Reply::error(400, format!("{} is not a number of bytes", crate::oip::HEADER_LEN)),
    };
    let start = Instant::now();
    let decoded = decode_request(&body, header_len);
    host.metrics.stage(Stage::Decode, start.elapsed());
    let mut request = match decoded {
        Ok(r) => r,
        Err(e) => return Reply::error(400, e.to_string()),
    };
    drop(body);
    if request.audit {
        log::debug!("request {}: an audit (served like any request)", request.id.as_deref().unwrap_or("without an id"));
    }
    let meta = model_metadata(host);
    let (want_in, want_out) = (&meta.inputs[0], &meta.outputs[0]);
    let [input] = request.inputs.as_slice() else {
        return Reply::error(
            400,
            format!(
                "the request has {} inputs, model '{}' takes one: '{}'",
                request.inputs.len(),
                meta.name,
                want_in.name
            ),
        );
    };
    let takes = |m: &TensorMeta| {
        let what = if m.datatype == BYTES { "text, one per element" } else { "preprocessed images" };
        format!("'{}' {} {:?} ({what})", m.name, m.datatype, m.shape)
    };
    if input.datatype() != want_in.datatype {
        return Reply::error(
            400,
            format!("input '{}' is {}; model '{}' takes {}", input.name, input.datatype(), meta.name, takes(want_in)),
        );
    }
    if input.name != want_in.name {
        return Reply::error(
            400,
            format!("unknown input '{}': model '{}' takes {}", input.name, meta.name, takes(want_in)),
        );
    }
    let shape_ok = input.shape.len() == want_in.shape.len()
        && input.shape.iter().zip(&want_in.shape).skip(1).all(|(a, b)| a == b)
        && (1..=cfg.max_request_batch as i64).contains(&input.shape[0]);
    if !shape_ok {
        return Reply::error(
            400,
            format!(
                "input '{}' has shape {:?}; model '{}' takes {:?} with a batch of 1 to {}",
                input.name, input.shape, meta.name, want_in.shape, cfg.max_request_batch
            ),
        );
    }
    if let Some(o) = request.outputs.iter().find(|o| o.name != want_out.name) {
        return Reply::error(
            400,
            format!("unknown output '{}': model '{}' gives '{}'", o.name, meta.name, want_out.name),
        );
    }
    let binary_out = request.binary_output || request.outputs.iter().any(|o| o.binary);
    let batch = input.shape[0] as usize;
    let outs = if input.bytes.is_some() {
        match run_texts(host, input) {
            Ok(o) => o,
            Err(r) => return r,
        }
    } else {
        let data = std::mem::take(&mut request.inputs[0].data);
        let items: Vec<Vec<f32>> = match batch {
            1 => vec![data],
            _ => data.chunks(data.len() / batch).map(|c| c.to_vec()).collect(),
        };
        match host.execute(items) {
            Ok(o) => o,
            Err((ErrorCode::Busy, why)) => {
                let mut r = Reply::error(503, why);
                r.extra.push(("Retry-After", "1".to_owned()));
                return r;
            }
            Err((_, why)) => return Reply::error(500, format!("inference failed: {why}")),
        }
    };
    let classes = host.model.classes.len();
    let data: Vec<f32> = outs.into_iter().flatten().collect();
    if data.len() != batch * classes {
        return Reply::error(500, format!("the model gave {} values for a batch of {batch}", data.len()));
    }
    let out = Tensor::new(want_out.name.clone(), vec![batch as i64, classes as i64], data);
    let start = Instant::now();
    let (body, header_len) = encode_response(&meta.name, VERSION, request.id.as_deref(), &[out], |_| binary_out);
    host.metrics.stage(Stage::Encode, start.elapsed());
    Reply { status: 200, body, header_len, content_type: None, extra: Vec::new() }
}

/// Runs each text of a BYTES input through the text model, one at a time (texts are never
/// batched: they differ in length). Every element is checked (UTF-8, not empty) before the
/// first runs; a bad one is a 400 naming the input and the element.
fn run_texts(host: &Host, input: &Tensor) -> Result<Vec<Vec<f32>>, Reply> {
    let texts = input.texts("input").map_err(|e| Reply::error(400, e.to_string()))?;
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(Reply::error(400, format!("input '{}' element {i} is empty (only white space)", input.name)));
    }
    let mut outs = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        match host.run_text(text, Instant::now()) {
            Ok((_, out)) => outs.push(out),
            Err((ErrorCode::BadPayload, why)) => {
                return Err(Reply::error(400, format!("input '{}' element {i}: {why}", input.name)))
            }
            Err((_, why)) => return Err(Reply::error(500, format!("inference failed: {why}"))),
        }
    }
    Ok(outs)
}

#[cfg(test)]
#[path = "oip_tests.rs"]
mod tests;
