//! The OIP endpoint's request handling in-process: requests from an in-memory client served one
//! after another on one connection, as a worker serves the heads the poller hands it
//! (`serve_request`), with a scripted model in place of tract (no model file, no child process).

use super::*;
use crate::oip::http::Framing;
use crate::oip::{decode_response, encode_request, ErrorBody, ServerMetadata, BINARY_EXTENSION, HEADER_LEN};
use crate::testing::{self, Duplex};

/// The served model (its manifest and classes; the runner is scripted).
const MODEL: &str = "efficientnet-lite0-fp32";
/// The input tensor's length (NCHW, 224 x 224).
const LEN: usize = 3 * 224 * 224;

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// An input tensor the scripted model knows by its first value.
fn tensor_starting(first: f32) -> Vec<f32> {
    let mut t = vec![0.0; LEN];
    t[0] = first;
    t
}

/// A host whose model answers the tensors starting 0.25 (class 3) and -0.5 (class 11).
fn host() -> Host {
    let answers = vec![
        (tensor_starting(0.25), testing::logits(1000, 3, 4.0)),
        (tensor_starting(-0.5), testing::logits(1000, 11, 4.0)),
    ];
    Host::new(testing::scripted_model(MODEL, answers))
}

/// One HTTP/1.1 request, with a Content-Length when it has a body.
fn request(method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    if !body.is_empty() {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    let mut r = head.into_bytes();
    r.extend_from_slice(body);
    r
}

fn get(path: &str) -> Vec<u8> {
    request("GET", path, &[], &[])
}

fn infer_path() -> String {
    format!("/v2/models/{MODEL}/infer")
}

/// An infer request for `inputs`, asking for the output `output`, in JSON or binary tensors.
fn infer(inputs: &[Tensor], output: &str, binary: bool) -> Vec<u8> {
    let (body, header_len) = encode_request("req-1", inputs, Some(output), binary);
    let headers: Vec<(&str, String)> = header_len.map(|n| (HEADER_LEN, n.to_string())).into_iter().collect();
    request("POST", &infer_path(), &headers, &body)
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        crate::oip::http::find_header(&self.headers, name)
    }

    /// The `{"error": ...}` message of an error response.
    fn error(&self) -> String {
        serde_json::from_slice::<ErrorBody>(&self.body)
            .unwrap_or_else(|e| panic!("status {}: not an error body ({e}): {:?}", self.status, self.body))
            .error
    }
}

/// Serves the requests in `raw` on one connection, in 7-byte reads, until a request ends it or
/// the bytes run out; the responses in order.
fn exchange(host: &Host, cfg: &OipConfig, raw: Vec<u8>) -> Vec<Response> {
    let client = Duplex::new(raw, 7);
    let out = client.out.clone();
    let mut wire = Wire::new(Box::new(client));
    while let Ok(head) = wire.read_request_head(soon()) {
        if !matches!(serve_request(host, cfg, &mut wire, head, Instant::now(), "test-client"), After::Keep { .. }) {
            break;
        }
    }
    let written = out.lock().unwrap().clone();
    let mut wire = Wire::new(Box::new(Duplex::new(written, 1 << 16)));
    let mut responses = Vec::new();
    while let Ok((status, headers)) = wire.read_response_head(soon()) {
        let framing = Framing::of(&headers, Framing::Empty).unwrap();
        let body = wire.read_body(framing, usize::MAX, soon()).unwrap();
        responses.push(Response { status, headers, body });
    }
    assert_eq!(wire.buffered(), 0, "bytes after the last response");
    responses
}

fn outputs(r: &Response) -> Vec<Tensor> {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let header_len = r.header(HEADER_LEN).map(|v| v.parse().unwrap());
    let resp = decode_response(&r.body, header_len).unwrap();
    assert_eq!(
        (resp.model_name.as_str(), resp.model_version.as_deref(), resp.id.as_deref()),
        (MODEL, Some("1"), Some("req-1"))
    );
    resp.outputs
}

#[test]
fn health_metadata_and_stats_are_served_on_one_kept_alive_connection() {
    let host = host();
    let paths = [
        "/v2/health/live".to_owned(),
        "/v2/health/ready".into(),
        format!("/v2/models/{MODEL}/ready"),
        "/v2".into(),
        format!("/v2/models/{MODEL}"),
        format!("/v2/models/{MODEL}/versions/1"),
        format!("/v2/models/{MODEL}/stats"),
    ];
    let raw = paths.iter().flat_map(|p| get(p)).collect();
    let r = exchange(&host, &OipConfig::default(), raw);
    assert_eq!(r.len(), paths.len());
    for (r, path) in r.iter().zip(&paths) {
        assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("Connection"), Some("keep-alive"), "{path}");
    }
    assert!(r[..3].iter().all(|r| r.body.is_empty()));
    let server: ServerMetadata = serde_json::from_slice(&r[3].body).unwrap();
    assert_eq!(server.name, "edgecascade");
    assert!(server.extensions.contains(&BINARY_EXTENSION.to_owned()));
    for r in &r[4..6] {
        let meta: crate::oip::ModelMetadata = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((meta.name.as_str(), meta.versions.as_slice()), (MODEL, ["1".to_owned()].as_slice()));
        assert_eq!(
            (meta.inputs[0].name.as_str(), meta.inputs[0].shape.as_slice()),
            ("input", [-1, 3, 224, 224].as_slice())
        );
        assert_eq!(
            (meta.outputs[0].name.as_str(), meta.outputs[0].shape.as_slice()),
            ("logits", [-1, 1000].as_slice())
        );
    }
    let stats: serde_json::Value = serde_json::from_slice(&r[6].body).unwrap();
    assert_eq!(stats["model_stats"][0]["inference_count"], 0);
}

#[test]
fn an_infer_in_json_gets_the_models_outputs_batches_in_order() {
    let host = host();
    let one = Tensor::new("input", vec![1, 3, 224, 224], tensor_starting(0.25));
    let two = Tensor::new("input", vec![2, 3, 224, 224], [tensor_starting(-0.5), tensor_starting(0.25)].concat());
    let mut raw = infer(&[one], "logits", false);
    raw.extend(infer(&[two], "logits", false));
    raw.extend(get(&format!("/v2/models/{MODEL}/stats")));

    let r = exchange(&host, &OipConfig::default(), raw);
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].header("Content-Type"), Some("application/json"));
    assert_eq!(r[0].header(HEADER_LEN), None);
    let out = outputs(&r[0]);
    assert_eq!((out.len(), out[0].name.as_str(), out[0].shape.as_slice()), (1, "logits", [1, 1000].as_slice()));
    assert_eq!(out[0].data, testing::logits(1000, 3, 4.0));
    let out = outputs(&r[1]);
    assert_eq!(out[0].shape, [2, 1000]);
    assert_eq!(out[0].data, [testing::logits(1000, 11, 4.0), testing::logits(1000, 3, 4.0)].concat());
    let stats: serde_json::Value = serde_json::from_slice(&r[2].body).unwrap();
    assert_eq!(stats["model_stats"][0]["inference_count"], 3);
    assert_eq!(stats["model_stats"][0]["execution_count"], 2, "one execution per request");
}

#[test]
fn an_infer_in_the_binary_extension_gets_binary_outputs() {
    let host = host();
    let input = Tensor::new("input", vec![1, 3, 224, 224], tensor_starting(-0.5));
    let r = exchange(&host, &OipConfig::default(), infer(&[input], "logits", true));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].header("Content-Type"), Some("application/octet-stream"));
    let header_len: usize = r[0].header(HEADER_LEN).expect("the binary extension's header").parse().unwrap();
    assert_eq!(r[0].body.len(), header_len + 1000 * 4, "1000 FP32 values after the JSON");
    assert_eq!(outputs(&r[0])[0].data, testing::logits(1000, 11, 4.0));
}

#[test]
fn bad_requests_get_a_4xx_with_an_error_body_and_the_connection_goes_on() {
    let host = host();
    let good = || vec![Tensor::new("input", vec![1, 3, 224, 224], tensor_starting(0.25))];
    let json = |body: &str| request("POST", &infer_path(), &[], body.as_bytes());
    let (binary, _) = encode_request("req-1", &good(), Some("logits"), true);
    let cases: Vec<(Vec<u8>, u16, String)> = vec![
        (get("/nope"), 404, "no such endpoint: /nope".into()),
        (request("POST", "/v2/health/live", &[], b"x"), 405, "POST is not allowed on /v2/health/live".into()),
        (get("/v2/models/other"), 404, format!("unknown model 'other' (this host serves '{MODEL}')")),
        (get(&format!("/v2/models/{MODEL}/versions/9")), 404, "has no version '9'".into()),
        (get(&infer_path()), 405, "(use POST)".into()),
        (json("{not json"), 400, "not valid OIP v2 JSON".into()),
        (
            json(r#"{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "INT8", "data": [1, 2]}]}"#),
            400,
            "datatype INT8".into(),
        ),
        (
            infer(&[Tensor::new("pixels", vec![1, 3, 224, 224], tensor_starting(0.25))], "logits", false),
            400,
            "unknown input 'pixels'".into(),
        ),
        (
            infer(&[Tensor::new("input", vec![1, 3, 8, 8], vec![0.25; 192])], "logits", false),
            400,
            "has shape [1, 3, 8, 8]".into(),
        ),
        (infer(&[good(), good()].concat(), "logits", false), 400, "the request has 2 inputs".into()),
        (
            infer(&[Tensor::bytes("input", vec![1], vec![b"a text".to_vec()])], "logits", false),
            400,
            format!(
                "input 'input' is BYTES; model '{MODEL}' takes 'input' FP32 [-1, 3, 224, 224] (preprocessed images)"
            ),
        ),
        (infer(&good(), "probabilities", false), 400, "unknown output 'probabilities'".into()),
        (
            request("POST", &infer_path(), &[(HEADER_LEN, "many".into())], &binary),
            400,
            "is not a number of bytes".into(),
        ),
        (
            request("POST", &infer_path(), &[(HEADER_LEN, (binary.len() + 5).to_string())], &binary),
            400,
            "(truncated?)".into(),
        ),
    ];
    let mut raw: Vec<u8> = cases.iter().flat_map(|(r, _, _)| r.clone()).collect();
    raw.extend(get("/v2/health/ready"));

    let r = exchange(&host, &OipConfig::default(), raw);
    assert_eq!(r.len(), cases.len() + 1, "the connection ended early");
    for (r, (req, status, says)) in r.iter().zip(&cases) {
        let what = String::from_utf8_lossy(&req[..req.len().min(60)]);
        assert_eq!(r.status, *status, "{what}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.error().contains(says.as_str()), "{what}: {:?} does not say {says:?}", r.error());
        assert_eq!(r.header("Content-Type"), Some("application/json"), "{what}");
    }
    assert_eq!(r[1].header("Allow"), Some("GET"));
    assert_eq!(r[4].header("Allow"), Some("POST"));
    assert_eq!(r.last().unwrap().status, 200, "the connection goes on after every bad request");
    assert_eq!(host.counts(), (0, 0), "no bad request reached the model");
}

#[test]
fn a_body_over_the_limit_is_413_before_it_is_read_and_the_connection_closes() {
    let host = host();
    let cfg = OipConfig { max_body: 1000, ..OipConfig::default() };
    let mut raw = infer(&[Tensor::new("input", vec![1, 3, 224, 224], tensor_starting(0.25))], "logits", false);
    raw.extend(get("/v2/health/ready"));
    let r = exchange(&host, &cfg, raw);
    assert_eq!(r.len(), 1, "nothing is served after the refused body");
    assert_eq!(r[0].status, 413);
    assert!(r[0].error().contains("this host takes at most 1000"), "{}", r[0].error());
    assert_eq!(r[0].header("Connection"), Some("close"));
}

#[test]
fn a_request_the_model_fails_on_is_500_and_the_connection_goes_on() {
    let host = host();
    let mut raw = infer(&[Tensor::new("input", vec![1, 3, 224, 224], tensor_starting(0.75))], "logits", false);
    raw.extend(get("/v2/health/ready"));
    let r = exchange(&host, &OipConfig::default(), raw);
    assert_eq!(r.iter().map(|r| r.status).collect::<Vec<_>>(), [500, 200]);
    assert!(r[0].error().starts_with("inference failed: "), "{}", r[0].error());
}

#[test]
fn with_a_token_only_health_is_served_without_it() {
    let host = host().with_token(Some("T".into()));
    let bearer = |t: &str| vec![("Authorization", format!("Bearer {t}"))];
    let model = format!("/v2/models/{MODEL}");
    let raw = [
        get("/v2/health/live"),
        get("/v2/health/ready"),
        get("/v2"),
        request("GET", &model, &bearer("wrong"), &[]),
        request("GET", &model, &bearer("T"), &[]),
        infer(&[Tensor::new("input", vec![1, 3, 224, 224], tensor_starting(0.25))], "logits", false),
        get("/v2/health/live"),
    ]
    .concat();
    let r = exchange(&host, &OipConfig::default(), raw);
    assert_eq!(
        r.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 401, 401, 200, 401],
        "an infer without the token closes the connection, its body unread"
    );
    assert!(r[2].error().contains("this host needs a token"), "{}", r[2].error());
    assert_eq!(r[2].header("WWW-Authenticate"), Some("Bearer"));
    assert_eq!(r[3].error(), "wrong bearer token");
    assert_eq!(r[5].header("Connection"), Some("close"));
    assert_eq!(host.counts(), (0, 0));
}

#[test]
fn metrics_are_prometheus_text_counting_the_requests_answered_before_them() {
    let host = host();
    let good = Tensor::new("input", vec![2, 3, 224, 224], [tensor_starting(0.25), tensor_starting(-0.5)].concat());
    let failing = Tensor::new("input", vec![1, 3, 224, 224], tensor_starting(0.75));
    let raw = [
        infer(&[good], "logits", true),
        infer(&[failing], "logits", false),
        get("/nope"),
        request("POST", "/metrics", &[], b"x"),
        get("/metrics"),
    ]
    .concat();
    let r = exchange(&host, &OipConfig::default(), raw);
    assert_eq!(r.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 500, 404, 405, 200]);
    assert_eq!(r[3].header("Allow"), Some("GET"));
    let text = String::from_utf8(r[4].body.clone()).unwrap();
    assert_eq!(r[4].header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    for line in [
        "edgecascade_requests_total{protocol=\"oip\",outcome=\"ok\"} 1",
        "edgecascade_requests_total{protocol=\"oip\",outcome=\"error\"} 3",
        "edgecascade_errors_total{protocol=\"oip\",kind=\"model\"} 1",
        "edgecascade_errors_total{protocol=\"oip\",kind=\"bad_request\"} 2",
        "edgecascade_inferences_total 3",
        "edgecascade_batch_size_bucket{le=\"1\"} 1",
        "edgecascade_batch_size_bucket{le=\"2\"} 2",
        "edgecascade_batch_size_count 2",
        "edgecascade_stage_seconds_count{stage=\"decode\"} 2",
        "edgecascade_stage_seconds_count{stage=\"infer\"} 2",
        "edgecascade_stage_seconds_count{stage=\"encode\"} 1",
        "edgecascade_request_seconds_count{protocol=\"oip\"} 2",
        "edgecascade_requests_total{protocol=\"framed\",outcome=\"ok\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
    }
}
