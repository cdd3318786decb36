//! The device's remote stage for any Open Inference Protocol v2 server (edgecascade's own
//! host, Triton, KServe, MLServer), reached by a link `oip+http://HOST:PORT/v2/models/NAME`.
//!
//! At start it checks the server is ready, reads the model's metadata and plans what to send:
//! the one FP32 image tensor the model takes (NCHW or NHWC, its size from the metadata), made
//! with the host model's preprocessing from the cascade config (the manifest of its last
//! stage), or, for a model whose input is BYTES, the text itself as a BYTES tensor of one
//! element; as binary tensor data where the server lists the `binary_tensor_data` extension
//! and as JSON otherwise. A text cascade and an image model (or the reverse) are refused at
//! start, naming both. `OipTransport` is its `Transport`: the retry driver (`Offload`) tries,
//! backs off and answers locally, marked degraded, as it does over the framed link.
//!
//! HTTP/1.1 is spoken here over the link's own `Stream` (keep-alive, Content-Length or chunked
//! bodies), so the bytes each request costs are counted exactly and `--shape` paces it.

use crate::link::{connect, Encoding, LinkAddr, Paced, Stream};
use crate::model::manifest::{InputSpec, Layout};
use crate::model::preprocess;
use crate::model::Decoded;
use crate::offload::driver::{Answer, Attempt, Offload, Transport, TryError};
use crate::offload::{ConnectError, RemoteConfig, RemoteInfo};
use crate::oip::http::{find_header, Framing, HttpError, Wire};
use crate::oip::{
    decode_response, encode_request_marked, ModelMetadata, ServerMetadata, Tensor, BINARY_EXTENSION, BYTES, FP32,
    HEADER_LEN,
};
use image::RgbImage;
use std::io;
use std::time::{Duration, Instant};

/// The largest response body taken from a server.
const MAX_BODY: usize = 64 << 20;

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The OIP error message of a failed request, or the body as text.
    pub fn error_text(&self) -> String {
        serde_json::from_slice::<crate::oip::ErrorBody>(&self.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).chars().take(300).collect())
    }
}

/// One keep-alive HTTP/1.1 connection over a link stream, counting its bytes.
pub struct HttpConn {
    wire: Wire,
    host: String,
    /// Responses read on this connection.
    pub exchanges: u64,
    /// The server said it closes the connection after the last response.
    pub closing: bool,
}

impl HttpConn {
    pub fn new(stream: Box<dyn Stream>, host: &str) -> HttpConn {
        HttpConn { wire: Wire::new(stream), host: host.to_owned(), exchanges: 0, closing: false }
    }

    /// Bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.wire.sent
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.wire.received
    }

    /// Sends a request; `headers` are added to Host, Content-Length and Connection.
    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> io::Result<()> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\n", self.host);
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        self.wire.write_all(&msg)
    }

    /// Reads one response, waiting at most `timeout` for it.
    pub fn receive(&mut self, timeout: Duration) -> Result<HttpResponse, HttpError> {
        let deadline = Instant::now() + timeout;
        self.wire.set_read_timeout(Duration::from_millis(100))?;
        let (status, headers) = self.wire.read_response_head(deadline)?;
        self.closing = find_header(&headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let otherwise = if status == 204 || status == 304 || (100..200).contains(&status) {
            Framing::Empty
        } else {
            Framing::UntilClose
        };
        let framing = Framing::of(&headers, otherwise)?;
        if framing == Framing::UntilClose {
            self.closing = true;
        }
        let body = self.wire.read_body(framing, MAX_BODY, deadline)?;
        self.exchanges += 1;
        Ok(HttpResponse { status, headers, body })
    }
}

/// What to send and how to read the answer, from the server's metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub input: String,
    pub sends: Sends,
    pub output: String,
    pub classes: usize,
    pub binary: bool,
}

/// The input tensor a plan sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Sends {
    /// One FP32 image, `size` x `size`, in `layout`, batch of one.
    Image { layout: Layout, size: u32 },
    /// One text as a BYTES tensor of `shape` (`[1]`, or `[1, 1]` for a model taking `[-1, 1]`).
    Text { shape: Vec<i64> },
}

impl Sends {
    /// What it is, for messages: "FP32 image tensors" or "BYTES text".
    pub fn describe(&self) -> &'static str {
        match self {
            Sends::Image { .. } => "FP32 image tensors",
            Sends::Text { .. } => "BYTES text",
        }
    }
}

impl Plan {
    /// Plans from the model's metadata: one FP32 image input or one BYTES text input, one
    /// FP32 output of classes.
    pub fn from_metadata(meta: &ModelMetadata, binary: bool) -> Result<Plan, String> {
        let [input] = meta.inputs.as_slice() else {
            return Err(format!(
                "model '{}' takes {} inputs; a cascade stage sends one image or text",
                meta.name,
                meta.inputs.len()
            ));
        };
        let sends = match input.datatype.as_str() {
            FP32 => match input.shape.as_slice() {
                [b, 3, h, w] if h == w && *h > 0 && (*b == -1 || *b == 1) => {
                    Sends::Image { layout: Layout::Nchw, size: *h as u32 }
                }
                [b, h, w, 3] if h == w && *h > 0 && (*b == -1 || *b == 1) => {
                    Sends::Image { layout: Layout::Nhwc, size: *h as u32 }
                }
                other => {
                    return Err(format!(
                        "model '{}' input '{}' has shape {other:?}; expected an image batch [-1,3,S,S] or [-1,S,S,3]",
                        meta.name, input.name
                    ))
                }
            },
            BYTES => match input.shape.as_slice() {
                [-1 | 1] => Sends::Text { shape: vec![1] },
                [-1 | 1, 1] => Sends::Text { shape: vec![1, 1] },
                other => {
                    return Err(format!(
                        "model '{}' input '{}' is {BYTES} of shape {other:?}; expected texts [-1] or [-1,1]",
                        meta.name, input.name
                    ))
                }
            },
            other => {
                return Err(format!(
                    "model '{}' takes input '{}' as {other}; this device sends {FP32} image tensors or {BYTES} text",
                    meta.name, input.name
                ))
            }
        };
        let output = meta.outputs.first().ok_or_else(|| format!("model '{}' lists no output", meta.name))?;
        let classes = match output.shape.as_slice() {
            [_, c] | [c] if *c > 0 => *c as usize,
            other => {
                return Err(format!(
                    "model '{}' output '{}' has shape {other:?}, not [-1, classes]",
                    meta.name, output.name
                ))
            }
        };
        Ok(Plan { input: input.name.clone(), sends, output: output.name.clone(), classes, binary })
    }
}

/// The remote last stage for an OIP v2 server.
pub type OipRemote = Offload<OipTransport>;

impl Offload<OipTransport> {
    /// A remote stage for `cfg.addr`, which must be an `oip+http:` link.
    pub fn new(cfg: RemoteConfig) -> Result<OipRemote, String> {
        Ok(Offload::over(&cfg.clone(), OipTransport::new(cfg)?))
    }
}

/// OIP's half of the remote stage: a kept-alive HTTP connection and the plan read from the
/// server's metadata.
pub struct OipTransport {
    cfg: RemoteConfig,
    addr: String,
    model: String,
    version: Option<String>,
    conn: Option<HttpConn>,
    plan: Option<Plan>,
}

impl OipTransport {
    fn new(cfg: RemoteConfig) -> Result<OipTransport, String> {
        let LinkAddr::Oip { addr, model, version } = cfg.addr.clone() else {
            return Err(format!("{} is not an oip+http: link", cfg.addr));
        };
        if cfg.tensor_spec.is_none() && !sends_text(&cfg) {
            return Err(format!(
                "{} takes preprocessed tensors, and the cascade config's last stage has no manifest \
                 to say how to make them (mean, std, crop)",
                cfg.addr
            ));
        }
        Ok(OipTransport { cfg, addr, model, version, conn: None, plan: None })
    }

    fn model_path(&self) -> String {
        match &self.version {
            Some(v) => format!("/v2/models/{}/versions/{v}", self.model),
            None => format!("/v2/models/{}", self.model),
        }
    }

    fn open(&mut self) -> Result<&mut HttpConn, String> {
        if self.conn.as_ref().is_some_and(|c| c.closing) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let stream =
                connect(&self.cfg.addr, self.cfg.connect_timeout).map_err(|e| format!("cannot connect: {e}"))?;
            let stream: Box<dyn Stream> = match &self.cfg.shaping {
                Some(s) if s.is_active() => Box::new(Paced::new(stream, s.clone())),
                _ => stream,
            };
            self.conn = Some(HttpConn::new(stream, &self.addr));
        }
        Ok(self.conn.as_mut().expect("opened"))
    }

    /// One request and its response on the open connection; the connection is dropped on any
    /// I/O failure. Adds the bytes it sent and received to `bytes`.
    fn round_trip(
        &mut self,
        method: &str,
        path: &str,
        mut headers: Vec<(&'static str, String)>,
        body: &[u8],
        timeout: Duration,
        bytes: &mut (u64, u64),
    ) -> Result<HttpResponse, String> {
        if let Some(t) = &self.cfg.token {
            headers.push(("Authorization", format!("Bearer {t}")));
        }
        let conn = self.open()?;
        let (s0, r0, reused) = (conn.sent(), conn.received(), conn.exchanges > 0);
        let result = conn.send(method, path, &headers, body).map_err(send_error).and_then(|_| conn.receive(timeout));
        let got_nothing = conn.received() == r0;
        bytes.0 += conn.sent() - s0;
        bytes.1 += conn.received() - r0;
        match result {
            Ok(r) => Ok(r),
            Err(e) => {
                self.conn = None;
                // A kept-alive connection the server has closed since (its idle timeout, a
                // restart) fails before any answer: once more on a new connection.
                let closed = matches!(&e, HttpError::Io(io) if matches!(io.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted));
                if reused && got_nothing && closed {
                    log::debug!(
                        "link {}: the kept-alive connection was closed ({e}); opening a new one",
                        self.cfg.addr
                    );
                    headers.retain(|(k, _)| *k != "Authorization");
                    return self.round_trip(method, path, headers, body, timeout, bytes);
                }
                Err(format!("{method} {path}: {e}"))
            }
        }
    }

    /// A GET at start: the response when it is 200; a refusal (token, unknown model) or an
    /// unreachable server otherwise.
    fn get(&mut self, path: &str) -> Result<HttpResponse, ConnectError> {
        let timeout = self.cfg.connect_timeout.max(Duration::from_secs(2));
        let r = self
            .round_trip("GET", path, Vec::new(), &[], timeout, &mut (0, 0))
            .map_err(|e| ConnectError::Unreachable(format!("{}: {e}", self.cfg.addr)))?;
        match r.status {
            200 => Ok(r),
            401 | 403 => {
                Err(ConnectError::Refused(format!("{} refused the device: {}", self.cfg.addr, r.error_text())))
            }
            404 => Err(ConnectError::Refused(format!("{}: {}", self.cfg.addr, r.error_text()))),
            s => Err(ConnectError::Unreachable(format!("{}: GET {path}: HTTP {s}: {}", self.cfg.addr, r.error_text()))),
        }
    }

    fn get_json<T: serde::de::DeserializeOwned>(&mut self, path: &str) -> Result<T, ConnectError> {
        let r = self.get(path)?;
        serde_json::from_slice(&r.body)
            .map_err(|e| ConnectError::Refused(format!("GET {path}: not the OIP v2 answer expected: {e}")))
    }

    /// Checks readiness and reads the metadata; plans the requests.
    fn ensure_plan(&mut self) -> Result<&Plan, ConnectError> {
        if self.plan.is_none() {
            let server: ServerMetadata = self.get_json("/v2")?;
            self.get(&format!("{}/ready", self.model_path()))?;
            let meta: ModelMetadata = self.get_json(&self.model_path())?;
            let binary = server.extensions.iter().any(|e| e == BINARY_EXTENSION);
            let plan = Plan::from_metadata(&meta, binary).map_err(ConnectError::Refused)?;
            let text = sends_text(&self.cfg);
            if text != matches!(plan.sends, Sends::Text { .. }) {
                let cascade = if text { "text" } else { "images" };
                return Err(ConnectError::Refused(format!(
                    "{}: model '{}' takes {} ('{}'), and this cascade's inputs are {cascade}",
                    self.cfg.addr,
                    meta.name,
                    plan.sends.describe(),
                    plan.input
                )));
            }
            let what = match &plan.sends {
                Sends::Image { layout, size } => format!("{FP32} {layout:?} {size}x{size}"),
                Sends::Text { shape } => format!("{BYTES} {shape:?}"),
            };
            log::info!(
                "link {}: {} {} ready; sending {what} as {}",
                self.cfg.addr,
                server.name,
                server.version,
                if plan.binary { "binary tensor data" } else { "JSON" }
            );
            self.plan = Some(plan);
        }
        Ok(self.plan.as_ref().expect("planned"))
    }

    /// The input tensor for `img`, made as the host model's manifest says at the served size.
    fn tensor(&self, img: &RgbImage, layout: Layout, size: u32) -> Result<Tensor, String> {
        let plan = self.plan.as_ref().ok_or("no plan")?;
        let mut spec: InputSpec = self.cfg.tensor_spec.clone().ok_or("no tensor spec")?;
        spec.size = size;
        spec.layout = layout;
        let data = preprocess::to_tensor(img, &spec);
        let s = size as i64;
        let shape = match layout {
            Layout::Nchw => vec![1, 3, s, s],
            Layout::Nhwc => vec![1, s, s, 3],
        };
        Ok(Tensor::new(plan.input.clone(), shape, data))
    }
}

/// True when the cascade's inputs are text: its remote config offers only `Encoding::Text`
/// (`LinkArgs::remote_config` sets that for a text cascade).
fn sends_text(cfg: &RemoteConfig) -> bool {
    cfg.encodings.contains(&Encoding::Text)
}

/// The encoding a plan sends, as reports name it.
fn encoding_name(plan: &Plan) -> &'static str {
    match (&plan.sends, plan.binary) {
        (Sends::Image { .. }, true) => "oip-fp32-binary",
        (Sends::Image { .. }, false) => "oip-fp32-json",
        (Sends::Text { .. }, true) => "oip-bytes-binary",
        (Sends::Text { .. }, false) => "oip-bytes-json",
    }
}

impl Transport for OipTransport {
    /// The request body and, for binary tensor data, the length of its JSON header; or why
    /// the server's model cannot take this input (an image to a text model or text to an image
    /// model), which `exchange` gives as a refusal without sending.
    type Payload = Result<(Vec<u8>, Option<usize>), String>;

    fn connect(&mut self) -> Result<RemoteInfo, ConnectError> {
        let classes = self.ensure_plan()?.classes;
        Ok(RemoteInfo { model: self.model.clone(), classes })
    }

    /// A refusal (token, unknown model, a model this device cannot feed) answers the input
    /// locally at once; an unreachable or unready server gives it up.
    fn ready(&mut self) -> Result<&'static str, TryError> {
        match self.ensure_plan() {
            Ok(plan) => Ok(encoding_name(plan)),
            Err(ConnectError::Refused(e)) => Err(TryError::Refused(e)),
            Err(ConnectError::Unreachable(e)) => Err(TryError::Down(e)),
        }
    }

    /// An audit is a normal inference with the request parameter `audit: true` (servers that
    /// do not know it ignore it).
    fn encode(&self, seq: u64, audit: bool, _bytes: &[u8], input: &Decoded) -> Result<Self::Payload, String> {
        let plan = self.plan.as_ref().ok_or("no plan")?;
        let tensor = match (input, &plan.sends) {
            (Decoded::Image(img), Sends::Image { layout, size }) => self.tensor(img, *layout, *size)?,
            (Decoded::Text(t), Sends::Text { shape }) => {
                Tensor::bytes(plan.input.clone(), shape.clone(), vec![t.as_bytes().to_vec()])
            }
            (input, sends) => {
                let input = if matches!(input, Decoded::Text(_)) { "text" } else { "an image" };
                return Ok(Err(format!(
                    "model '{}' takes {} ('{}'); this input is {input}",
                    self.model,
                    sends.describe(),
                    plan.input
                )));
            }
        };
        Ok(Ok(encode_request_marked(&self.request_id(seq), &[tensor], Some(&plan.output), plan.binary, audit)))
    }

    /// Spans: wait (sending included).
    fn exchange(&mut self, payload: &Self::Payload, attempt: &mut Attempt<'_>) -> Result<Answer, TryError> {
        let (body, header_len) = payload.as_ref().map_err(|why| TryError::Refused(why.clone()))?;
        let plan = self.plan.clone().ok_or_else(|| TryError::Retry("no plan".into()))?;
        let mut headers = vec![("Content-Type", "application/json".to_owned())];
        if let Some(n) = header_len {
            headers[0].1 = "application/octet-stream".into();
            headers.push((HEADER_LEN, n.to_string()));
        }
        let path = format!("{}/infer", self.model_path());
        let start = Instant::now();
        let mut bytes = (0, 0);
        let r = self.round_trip("POST", &path, headers, body, attempt.reply_timeout, &mut bytes);
        attempt.spans.push_since("wait", Some(attempt.stage), start);
        attempt.sent += bytes.0;
        attempt.received += bytes.1;
        let r = r.map_err(TryError::Retry)?;
        let refused = |why: String| TryError::Refused(format!("the server refused the input: {why}"));
        match r.status {
            200 => {}
            400 | 404 | 413 | 422 => return Err(refused(format!("HTTP {}: {}", r.status, r.error_text()))),
            401 | 403 => return Err(refused(format!("unauthorized: {}", r.error_text()))),
            s => return Err(TryError::Retry(format!("HTTP {s}: {}", r.error_text()))),
        }
        let header_len = match r.header(HEADER_LEN).map(|v| v.trim().parse::<usize>()) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return Err(TryError::Retry(format!("bad {HEADER_LEN} in the response"))),
        };
        let resp = decode_response(&r.body, header_len).map_err(|e| TryError::Retry(format!("bad answer: {e}")))?;
        let out = resp
            .outputs
            .into_iter()
            .find(|t| t.name == plan.output)
            .ok_or_else(|| TryError::Retry(format!("the answer has no output '{}'", plan.output)))?;
        if out.data.len() != plan.classes {
            return Err(TryError::Retry(format!(
                "output '{}' has {} values, expected {}",
                out.name,
                out.data.len(),
                plan.classes
            )));
        }
        Ok(Answer { logits: logits_from_server_output(out.data), host: None })
    }

    /// Metadata is read again when the server comes back (it may serve another model).
    fn disconnect(&mut self) {
        self.conn = None;
        self.plan = None;
    }

    fn request_id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.cfg.device_id)
    }

    fn peer(&self) -> String {
        self.cfg.addr.to_string()
    }
}

/// A failed send; a write timeout says what it means (the socket's own words for it are
/// "Resource temporarily unavailable").
fn send_error(e: io::Error) -> HttpError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HttpError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "the server took no bytes within the write timeout (it is not reading)",
        )),
        _ => e.into(),
    }
}

/// The server's output as logits, judged by its values (a server's manifest is not ours to
/// read; `Model::as_logits` goes by the manifest): a probability vector (non-negative, summing to 1) is
/// turned back into log-probabilities; anything else is taken as logits.
pub fn logits_from_server_output(out: Vec<f32>) -> Vec<f32> {
    let sum: f32 = out.iter().sum();
    let probabilities = out.iter().all(|&p| (0.0..=1.0).contains(&p)) && (sum - 1.0).abs() < 1e-3;
    if probabilities {
        crate::core::policy::log_probs(out)
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oip::TensorMeta;

    fn meta(inputs: Vec<TensorMeta>, outputs: Vec<TensorMeta>) -> ModelMetadata {
        ModelMetadata { name: "m".into(), versions: vec!["1".into()], platform: String::new(), inputs, outputs }
    }

    fn t(name: &str, datatype: &str, shape: &[i64]) -> TensorMeta {
        TensorMeta { name: name.into(), datatype: datatype.into(), shape: shape.to_vec() }
    }

    #[test]
    fn plans_from_metadata_or_says_why_not() {
        let p = Plan::from_metadata(
            &meta(vec![t("x", "FP32", &[-1, 3, 260, 260])], vec![t("y", "FP32", &[-1, 1000])]),
            true,
        )
        .unwrap();
        assert_eq!(
            (&p.sends, p.classes, p.input.as_str(), p.output.as_str()),
            (&Sends::Image { layout: Layout::Nchw, size: 260 }, 1000, "x", "y")
        );
        assert_eq!(encoding_name(&p), "oip-fp32-binary");
        let p =
            Plan::from_metadata(&meta(vec![t("x", "FP32", &[1, 224, 224, 3])], vec![t("y", "FP32", &[1000])]), false)
                .unwrap();
        assert_eq!(p.sends, Sends::Image { layout: Layout::Nhwc, size: 224 });
        for (shape, sent) in [(&[-1][..], vec![1]), (&[-1, 1][..], vec![1, 1]), (&[1][..], vec![1])] {
            let p = Plan::from_metadata(&meta(vec![t("text", "BYTES", shape)], vec![t("y", "FP32", &[-1, 2])]), false)
                .unwrap();
            assert_eq!((&p.sends, p.classes), (&Sends::Text { shape: sent }, 2));
            assert_eq!(encoding_name(&p), "oip-bytes-json");
        }
        let bad = [
            (meta(vec![t("x", "UINT8", &[-1, 3, 8, 8])], vec![t("y", "FP32", &[-1, 10])]), "as UINT8"),
            (meta(vec![t("x", "BYTES", &[-1, 2])], vec![t("y", "FP32", &[-1, 10])]), "expected texts [-1] or [-1,1]"),
            (meta(vec![t("x", "FP32", &[-1, 4, 8, 8])], vec![t("y", "FP32", &[-1, 10])]), "expected an image batch"),
            (meta(vec![], vec![t("y", "FP32", &[-1, 10])]), "takes 0 inputs"),
            (meta(vec![t("x", "FP32", &[-1, 3, 8, 8])], vec![]), "lists no output"),
        ];
        for (m, want) in bad {
            let e = Plan::from_metadata(&m, true).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn probabilities_become_log_probabilities_and_logits_stay() {
        let l = logits_from_server_output(vec![0.25, 0.75]);
        assert!((l[0] - 0.25f32.ln()).abs() < 1e-6 && (l[1] - 0.75f32.ln()).abs() < 1e-6);
        assert_eq!(logits_from_server_output(vec![2.0, -1.0]), vec![2.0, -1.0]);
    }

    use std::io::{Read, Write};

    /// A server on a socket pair answering with a chunked body and then a Content-Length one.
    #[test]
    fn reads_chunked_and_sized_bodies_and_counts_bytes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=1\r\nefg\r\n0\r\n\r\n")
                .unwrap();
            let _ = s.read(&mut buf).unwrap();
            s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{\"error\":\"nope\"}x",
            )
            .unwrap();
        });
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let mut c = HttpConn::new(Box::new(stream), &addr.to_string());
        c.send("GET", "/a", &[], &[]).unwrap();
        let r = c.receive(Duration::from_secs(5)).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcdefg"[..]));
        c.send("POST", "/b", &[("X-Test", "1".into())], b"{}").unwrap();
        let r = c.receive(Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body.len(), 17);
        assert!(c.closing);
        assert!(c.sent() > 0 && c.received() > 100, "{} {}", c.sent(), c.received());
        server.join().unwrap();
    }

    /// A server that answers one request per connection and then closes it without saying so
    /// (as one does after its idle timeout): the next request on the kept-alive connection
    /// finds it closed before any answer and is sent again on a new one, not failed.
    #[test]
    fn a_request_on_a_connection_the_server_closed_goes_again_on_a_new_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for i in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).unwrap();
                let body = format!("{{\"n\":{i}}}");
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                s.write_all(format!("{head}{body}").as_bytes()).unwrap();
            }
        });
        let link: LinkAddr = format!("oip+http://{addr}/v2/models/m").parse().unwrap();
        let mut cfg = RemoteConfig::new(link);
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/models/efficientnet-lite2-fp32.toml");
        cfg.tensor_spec = Some(
            crate::model::manifest::Manifest::load(std::path::Path::new(manifest)).unwrap().image().unwrap().clone(),
        );
        let mut oip = OipTransport::new(cfg).unwrap();
        let t = Duration::from_secs(5);
        let first = oip.round_trip("GET", "/v2", Vec::new(), &[], t, &mut (0, 0)).unwrap();
        assert_eq!(first.body, b"{\"n\":0}");
        std::thread::sleep(Duration::from_millis(100));
        let again = oip.round_trip("GET", "/v2", Vec::new(), &[], t, &mut (0, 0)).unwrap();
        assert_eq!(again.body, b"{\"n\":1}", "answered on the second connection");
        server.join().unwrap();
    }
}
