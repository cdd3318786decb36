//! The host's Open Inference Protocol v2 endpoint over HTTP/1.1 (`host --oip-listen`): health,
//! server and model metadata, and inference with JSON tensors or the binary tensor extension,
//! for Triton's clients, KServe and anything else that speaks the protocol. Requests run
//! through the same `Host` as the framed link's (and its batcher, when on). Every bad request
//! gets a 4xx with an OIP error body, and the endpoint keeps serving.
//!
//! The model takes what the host model's graph takes: one FP32 tensor, its batch axis free
//! (`[-1, 3, S, S]` for NCHW), already preprocessed as the manifest says; it gives one FP32
//! tensor `[-1, classes]` of logits (or probabilities, as the manifest says).

use super::{decode_request, encode_response, error_body, ModelMetadata, ServerMetadata, Tensor, TensorMeta, FP32};
use crate::host::Host;
use crate::link::ErrorCode;
use crate::manifest::OutputKind;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tiny_http::{Header, Method, Request, Response, Server};

/// The only version served.
pub const VERSION: &str = "1";

/// Limits of the endpoint.
#[derive(Clone, Debug)]
pub struct OipConfig {
    /// Requests served at once (threads).
    pub workers: usize,
    /// The largest request body taken, in bytes.
    pub max_body: usize,
    /// The largest batch one request may carry.
    pub max_request_batch: usize,
}

impl Default for OipConfig {
    fn default() -> Self {
        OipConfig { workers: 16, max_body: 64 << 20, max_request_batch: 64 }
    }
}

/// Starts serving OIP v2 on `addr` (`127.0.0.1:8000`; a bare port means loopback). Returns
/// the server, whose `server_addr` gives the bound port; `serve` then runs it.
pub fn bind(addr: &str) -> Result<Server, String> {
    let addr = if addr.parse::<u16>().is_ok() { format!("127.0.0.1:{addr}") } else { addr.to_owned() };
    Server::http(&addr).map_err(|e| format!("cannot listen for OIP v2 on {addr}: {e}"))
}

/// The name of the model's input and output tensors.
pub fn tensor_names(host: &Host) -> (String, String) {
    let m = &host.model.manifest;
    let input = m.input.name.clone().unwrap_or_else(|| "input".into());
    let output = match m.output.kind {
        OutputKind::Logits => "logits",
        OutputKind::Probabilities => "probabilities",
    };
    (input, output.to_owned())
}

/// The model's metadata: its input and output with a free batch axis.
pub fn model_metadata(host: &Host) -> ModelMetadata {
    let (input, output) = tensor_names(host);
    let mut shape: Vec<i64> = host.model.manifest.input.shape().iter().map(|&d| d as i64).collect();
    shape[0] = -1;
    ModelMetadata {
        name: host.model.name().to_owned(),
        versions: vec![VERSION.to_owned()],
        platform: "edgecascade_tract_onnx".into(),
        inputs: vec![TensorMeta { name: input, datatype: FP32.into(), shape }],
        outputs: vec![TensorMeta {
            name: output,
            datatype: FP32.into(),
            shape: vec![-1, host.model.classes.len() as i64],
        }],
    }
}

/// Serves until `stop` is set, with `cfg.workers` threads taking requests.
pub fn serve(host: Arc<Host>, server: Server, cfg: OipConfig, stop: Arc<AtomicBool>) {
    let server = Arc::new(server);
    std::thread::scope(|s| {
        for i in 0..cfg.workers.max(1) {
            let (host, server, cfg, stop) = (host.clone(), server.clone(), cfg.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("oip-{i}"))
                .spawn_scoped(s, move || {
                    while !stop.load(Ordering::Relaxed) {
                        match server.recv_timeout(Duration::from_millis(250)) {
                            Ok(Some(req)) => handle(&host, &cfg, req),
                            Ok(None) => {}
                            Err(e) => log::warn!("oip: cannot take a request: {e}"),
                        }
                    }
                })
                .expect("cannot start an OIP worker thread");
        }
    });
}

/// What one request gets back.
struct Reply {
    status: u16,
    body: Vec<u8>,
    header_len: Option<usize>,
    extra: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, body: Vec<u8>) -> Reply {
        Reply { status, body, header_len: None, extra: Vec::new() }
    }
    fn empty(status: u16) -> Reply {
        Reply::json(status, Vec::new())
    }
    fn error(status: u16, msg: impl AsRef<str>) -> Reply {
        Reply::json(status, error_body(msg.as_ref()))
    }
}

fn handle(host: &Host, cfg: &OipConfig, mut req: Request) {
    let peer = req.remote_addr().map_or_else(|| "?".into(), |a| a.to_string());
    let (method, url) = (req.method().clone(), req.url().to_owned());
    let reply = route(host, cfg, &mut req);
    if reply.status >= 400 {
        let why = String::from_utf8_lossy(&reply.body);
        log::warn!("oip {peer}: {method} {url} -> {} {why}", reply.status);
    } else {
        log::debug!("oip {peer}: {method} {url} -> {}", reply.status);
    }
    let content_type = if reply.header_len.is_some() { "application/octet-stream" } else { "application/json" };
    let mut resp = Response::from_data(reply.body).with_status_code(reply.status);
    let mut headers = vec![("Content-Type", content_type.to_owned())];
    if let Some(n) = reply.header_len {
        headers.push((super::HEADER_LEN, n.to_string()));
    }
    headers.extend(reply.extra);
    for (k, v) in headers {
        if let Ok(h) = Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            resp.add_header(h);
        }
    }
    if let Err(e) = req.respond(resp) {
        log::info!("oip {peer}: client gone before the reply ({e})");
    }
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().iter().find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
}

fn route(host: &Host, cfg: &OipConfig, req: &mut Request) -> Reply {
    let path = req.url().split('?').next().unwrap_or("").to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let get = method == Method::Get || method == Method::Head;
    let wrong_method = |allowed: &str| {
        let mut r = Reply::error(405, format!("{method} is not allowed on {path} (use {allowed})"));
        r.extra.push(("Allow", allowed.to_owned()));
        r
    };
    // Liveness and readiness stay open to probes (Kubernetes, a load balancer) without a token.
    if let ["v2", "health", "live" | "ready"] = parts.as_slice() {
        return if get { Reply::empty(200) } else { wrong_method("GET") };
    }
    if host.token.is_some() {
        let presented = header(req, "Authorization").and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        if !host.admits(presented) {
            let why = if presented.is_some() {
                "wrong bearer token"
            } else {
                "this host needs a token: send `Authorization: Bearer <token>` (the host's --token)"
            };
            let mut r = Reply::error(401, why);
            r.extra.push(("WWW-Authenticate", "Bearer".to_owned()));
            return r;
        }
    }
    let name = host.model.name();
    let (model, rest) = match parts.as_slice() {
        ["v2"] if get => {
            let meta = ServerMetadata {
                name: "edgecascade".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                extensions: vec![super::BINARY_EXTENSION.into()],
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
        ["infer"] if method == Method::Post => infer(host, cfg, req),
        ["infer"] => wrong_method("POST"),
        _ => Reply::error(404, format!("no such endpoint: {path}")),
    }
}

fn infer(host: &Host, cfg: &OipConfig, req: &mut Request) -> Reply {
    if let Some(n) = req.body_length().filter(|&n| n > cfg.max_body) {
        return Reply::error(413, format!("the body has {n} bytes, this host takes at most {}", cfg.max_body));
    }
    let header_len = match header(req, super::HEADER_LEN).map(|v| v.trim().parse::<usize>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return Reply::error(400, format!("{} is not a number of bytes", super::HEADER_LEN)),
    };
    let mut body = Vec::with_capacity(req.body_length().unwrap_or(0).min(cfg.max_body));
    let read = req.as_reader().take(cfg.max_body as u64 + 1).read_to_end(&mut body);
    if let Err(e) = read {
        return Reply::error(400, format!("cannot read the request body: {e}"));
    }
    if body.len() > cfg.max_body {
        return Reply::error(413, format!("the body is larger than the {} bytes this host takes", cfg.max_body));
    }
    let request = match decode_request(&body, header_len) {
        Ok(r) => r,
        Err(e) => return Reply::error(400, e.to_string()),
    };
    drop(body);
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
    if input.name != want_in.name {
        return Reply::error(
            400,
            format!(
                "unknown input '{}': model '{}' takes '{}' {FP32} {:?}",
                input.name, meta.name, want_in.name, want_in.shape
            ),
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
    let per = input.data.len() / batch;
    let items: Vec<Vec<f32>> = input.data.chunks(per).map(|c| c.to_vec()).collect();
    let outs = match host.execute(items) {
        Ok(o) => o,
        Err((ErrorCode::Busy, why)) => {
            let mut r = Reply::error(503, why);
            r.extra.push(("Retry-After", "1".to_owned()));
            return r;
        }
        Err((_, why)) => return Reply::error(500, format!("inference failed: {why}")),
    };
    let classes = host.model.classes.len();
    let data: Vec<f32> = outs.into_iter().flatten().collect();
    if data.len() != batch * classes {
        return Reply::error(500, format!("the model gave {} values for a batch of {batch}", data.len()));
    }
    let out = Tensor::new(want_out.name.clone(), vec![batch as i64, classes as i64], data);
    let (body, header_len) = encode_response(&meta.name, VERSION, request.id.as_deref(), &[out], |_| binary_out);
    Reply { status: 200, body, header_len, extra: Vec::new() }
}
