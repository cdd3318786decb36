//! The Open Inference Protocol v2 end to end: a `host` process serving OIP over HTTP on
//! loopback answers like its model does in-process (JSON and binary tensors, batches), turns
//! every bad request into a 4xx and keeps serving, batches concurrent devices, and checks
//! tokens on both of its links; `run` offloads over an `oip+http://` link and degrades when
//! the server is gone. (The interoperability checks with Triton's client and a real MLServer
//! are in scripts/interop.sh: they need packages from PyPI.)

mod common;

use common::oip::*;
use common::{bin, root, HostProc};
use edgecascade::link::{Encoding, LinkAddr};
use edgecascade::model::manifest::Manifest;
use edgecascade::model::preprocess;
use edgecascade::model::{Decoded, Model};
use edgecascade::offload::oip::HttpConn;
use edgecascade::offload::{LinkReport, Remote, RemoteConfig, RemoteStage};
use edgecascade::oip::{self, Tensor};
use edgecascade::run::spans::Spans;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;

use std::sync::Arc;
use std::time::Duration;

#[test]
fn oip_answers_like_the_model_in_json_binary_and_batches() {
    let host = start_host(&[], &[]);
    let mut c = host.conn();
    for path in ["/v2/health/live", "/v2/health/ready", &format!("/v2/models/{NAME}/ready")] {
        assert_eq!(request(&mut c, "GET", path, &[], &[]).0, 200, "{path}");
    }
    let (status, body, _) = request(&mut c, "GET", "/v2", &[], &[]);
    assert_eq!(status, 200);
    let server: oip::ServerMetadata = serde_json::from_slice(&body).unwrap();
    assert!(server.extensions.contains(&oip::BINARY_EXTENSION.to_owned()));
    let (status, body, _) = request(&mut c, "GET", &format!("/v2/models/{NAME}/versions/1"), &[], &[]);
    assert_eq!(status, 200);
    let meta: oip::ModelMetadata = serde_json::from_slice(&body).unwrap();
    assert_eq!(meta.inputs[0].shape, vec![-1, 3, 224, 224]);
    assert_eq!((meta.inputs[0].datatype.as_str(), meta.outputs[0].shape.as_slice()), ("FP32", &[-1, 1000][..]));

    let wants: Vec<Vec<f32>> = PHOTOS.iter().map(|p| model().runner.run(&photo_tensor(p)).unwrap()).collect();
    for binary in [false, true] {
        for (p, want) in PHOTOS.iter().zip(&wants) {
            let t = Tensor::new("input", vec![1, 3, 224, 224], photo_tensor(p));
            let (status, body, hl) = infer(&mut c, &[t], binary);
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            assert_eq!(hl.is_some(), binary);
            let r = oip::decode_response(&body, hl).unwrap();
            assert_eq!((r.model_name.as_str(), r.id.as_deref()), (NAME, Some("t")));
            assert_eq!(r.outputs[0].shape, vec![1, 1000]);
            assert!(max_diff(&r.outputs[0].data, want) < 1e-4, "{p} binary={binary}");
        }
    }
    // The three photos in one request: one answer each, in order.
    let all: Vec<f32> = PHOTOS.iter().flat_map(|p| photo_tensor(p)).collect();
    let (status, body, hl) = infer(&mut c, &[Tensor::new("input", vec![3, 3, 224, 224], all)], true);
    assert_eq!(status, 200);
    let r = oip::decode_response(&body, hl).unwrap();
    assert_eq!(r.outputs[0].shape, vec![3, 1000]);
    for (got, want) in r.outputs[0].data.chunks(1000).zip(&wants) {
        assert!(max_diff(got, want) < 1e-4);
    }
    let (status, body, _) = request(&mut c, "GET", &format!("/v2/models/{NAME}/stats"), &[], &[]);
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(stats["model_stats"][0]["inference_count"], 9);
}

#[test]
fn bad_requests_get_a_4xx_naming_the_problem_and_the_host_keeps_serving() {
    let host = start_host(&[], &[]);
    let infer_path = format!("/v2/models/{NAME}/infer");
    let good = || Tensor::new("input", vec![1, 3, 224, 224], photo_tensor("coffee.png"));
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let (good_body, good_hl) = oip::encode_request("g", &[good()], None, true);
    let truncated_hl = good_hl.unwrap();
    let truncated = good_body[..good_body.len() - 1000].to_vec();
    // (method, path, headers, body, expected status, expected in the error)
    type Case<'a> = (&'a str, String, Vec<(&'a str, String)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("GET", "/v2/models/nope".into(), vec![], vec![], 404, "unknown model 'nope'"),
        ("POST", "/v2/models/nope/infer".into(), vec![], vec![], 404, "unknown model"),
        ("GET", format!("/v2/models/{NAME}/versions/7"), vec![], vec![], 404, "no version '7'"),
        ("GET", "/v3".into(), vec![], vec![], 404, "no such endpoint"),
        ("GET", infer_path.clone(), vec![], vec![], 405, "use POST"),
        ("POST", infer_path.clone(), vec![], b"{not json".to_vec(), 400, "not valid OIP v2 JSON"),
        (
            "POST",
            infer_path.clone(),
            vec![],
            json(serde_json::json!({"inputs":[{"name":"image","shape":[1,3,224,224],"datatype":"FP32","data":[0]}]})),
            400,
            "has 1 values",
        ),
        (
            "POST",
            infer_path.clone(),
            vec![],
            json(serde_json::json!({"inputs":[{"name":"image","shape":[1,1],"datatype":"FP32","data":[0]}]})),
            400,
            "unknown input 'image'",
        ),
        (
            "POST",
            infer_path.clone(),
            vec![],
            json(serde_json::json!({"inputs":[{"name":"input","shape":[1,2],"datatype":"UINT8","data":[0,1]}]})),
            400,
            "datatype UINT8",
        ),
        (
            "POST",
            infer_path.clone(),
            vec![],
            json(
                serde_json::json!({"inputs":[{"name":"input","shape":[1,3,2,2],"datatype":"FP32","data":[0,0,0,0,0,0,0,0,0,0,0,0]}]}),
            ),
            400,
            "takes [-1, 3, 224, 224]",
        ),
        (
            "POST",
            infer_path.clone(),
            vec![(oip::HEADER_LEN, truncated_hl.to_string())],
            truncated,
            400,
            "only 601112 remain",
        ),
        ("POST", infer_path.clone(), vec![(oip::HEADER_LEN, "x".into())], vec![1], 400, "not a number of bytes"),
        (
            "POST",
            infer_path.clone(),
            vec![(oip::HEADER_LEN, good_hl.unwrap().to_string())],
            [good_body.as_slice(), &[0u8; 8]].concat(),
            400,
            "8 bytes of binary data belong to no input",
        ),
        (
            "POST",
            infer_path.clone(),
            vec![],
            json(serde_json::json!({"inputs":[{"name":"input","shape":[1,3,224,224],"datatype":"FP32","data":[]}],
                "outputs":[{"name":"probs"}]})),
            400,
            "has 0 values",
        ),
    ];
    let mut c = host.conn();
    for (method, path, headers, body, status, want) in cases {
        let (got, reply, _) = request(&mut c, method, &path, &headers, &body);
        let text = String::from_utf8_lossy(&reply);
        assert_eq!(got, status, "{method} {path}: {text}");
        let err: oip::ErrorBody = serde_json::from_slice(&reply).unwrap_or_else(|_| panic!("not an OIP error: {text}"));
        assert!(err.error.contains(want), "{method} {path}: {}", err.error);
        // The same connection goes on being served.
        assert_eq!(request(&mut c, "GET", "/v2/health/ready", &[], &[]).0, 200);
    }
    // An unknown output, then an oversized body (refused from its Content-Length alone).
    let (body, _) = oip::encode_request("o", &[good()], Some("probs"), false);
    let (got, reply, _) = request(&mut c, "POST", &infer_path, &[], &body);
    assert_eq!(got, 400);
    assert!(String::from_utf8_lossy(&reply).contains("unknown output 'probs'"));
    let mut raw = TcpStream::connect(&host.http).unwrap();
    let head = format!("POST {infer_path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 65u64 << 20);
    std::io::Write::write_all(&mut raw, head.as_bytes()).unwrap();
    let mut big = HttpConn::new(Box::new(raw), &host.http);
    let r = big.receive(TIMEOUT).unwrap();
    assert_eq!(r.status, 413, "{}", r.error_text());
    assert!(r.error_text().contains("at most"), "{}", r.error_text());
    // And a good request still gets its answer.
    let (status, body, hl) = infer(&mut host.conn(), &[good()], true);
    assert_eq!(status, 200);
    assert_eq!(oip::decode_response(&body, hl).unwrap().outputs[0].data.len(), 1000);
}

/// The answer lines of `run --json` (the summary line left out).
fn run_json(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|v| v.get("summary").is_none())
        .collect()
}

/// A model optimised with a free batch axis gives each input of a batch the output it gets
/// alone (the exported flatten, a fixed `Reshape [1, -1]`, is freed at load).
#[test]
fn batched_runner_gives_each_input_its_own_output() {
    let batched = Model::load_batched(&root().join(MODEL), &Default::default()).unwrap();
    let tensors: Vec<Vec<f32>> = PHOTOS.iter().map(|p| photo_tensor(p)).collect();
    let refs: Vec<&[f32]> = tensors.iter().map(|t| t.as_slice()).collect();
    let outs = batched.runner.run_batch(&refs).unwrap();
    assert_eq!(outs.len(), 3);
    for (t, out) in tensors.iter().zip(&outs) {
        assert!(max_diff(out, &model().runner.run(t).unwrap()) < 1e-4);
    }
    assert_eq!(batched.runner.macs(), model().runner.macs());
}

/// `run` over the OIP link answers every photo with the host model's own class.
#[test]
fn device_offloads_over_oip_with_the_host_models_answers() {
    let host = start_host(&[], &[]);
    // A cascade whose last stage is the served model, forwarding everything.
    let (_dir, config) = cascade_to(MODEL);
    let out = bin()
        .args(["run", "--json", "--config", config.to_str().unwrap(), "--link", &host.link(), "photos"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = run_json(&out);
    assert_eq!(lines.len(), 5);
    for l in &lines {
        let name = l["input"].as_str().unwrap();
        let name = Path::new(name).file_name().unwrap().to_str().unwrap();
        let want = edgecascade::core::policy::argmax(&model().runner.run(&photo_tensor(name)).unwrap());
        assert_eq!((l["model"].as_str(), l["degraded"].as_bool()), (Some(NAME), Some(false)), "{l}");
        assert_eq!(l["class"].as_u64(), Some(want as u64), "{l}");
        assert_eq!(l["link"]["encoding"], "oip-fp32-binary");
        assert!(l["link"]["bytes_sent"].as_u64().unwrap() > 224 * 224 * 3 * 4, "{l}");
    }
}

#[test]
fn oip_link_degrades_when_the_server_is_gone_and_refuses_an_unknown_model() {
    // Nothing listens on this port: an error at start naming the link, unless --start-degraded
    // says to run anyway; then every input is answered locally, marked degraded (exit 4).
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let link = format!("oip+http://{free}/v2/models/{NAME}");
    let run = |extra: &[&str]| {
        bin()
            .args(["run", "--json", "--threshold", "1", "--tries", "1", "--link", &link])
            .args(extra)
            .args(["photos/coffee.png", "photos/chelsea.png"])
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&link) && err.contains("--start-degraded"), "{err}");
    let out = run(&["--start-degraded"]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = run_json(&out);
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["degraded"] == true && l["class"].is_u64()), "{lines:?}");
    // A server that does not serve the model named: a configuration error, said at start.
    let host = start_host(&[], &[]);
    let out = bin()
        .args(["run", "--link", &format!("oip+http://{}/v2/models/nope", host.http), "photos/coffee.png"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown model 'nope'"), "{err}");
}

#[test]
fn token_is_checked_on_the_tcp_link_and_the_oip_endpoint() {
    let host = start_host(&[], &[("EDGECASCADE_TOKEN", "s3cret")]);
    // OIP: probes are open, the rest needs the bearer token.
    let mut c = host.conn();
    assert_eq!(request(&mut c, "GET", "/v2/health/ready", &[], &[]).0, 200);
    let (status, body, _) = request(&mut c, "GET", "/v2", &[], &[]);
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&body).contains("needs a token"));
    let (status, body, _) = request(&mut c, "GET", "/v2", &[("Authorization", "Bearer nope".into())], &[]);
    assert_eq!((status, String::from_utf8_lossy(&body).contains("wrong bearer token")), (401, true));
    assert_eq!(request(&mut c, "GET", "/v2", &[("Authorization", "Bearer s3cret".into())], &[]).0, 200);
    // An inference without the token is refused before its body is taken, and the connection
    // closed (the body left unread); with it, the same request is answered.
    let input = Tensor::new("input", vec![1, 3, 224, 224], photo_tensor("coffee.png"));
    let (body, _) = oip::encode_request("t", &[input], None, false);
    let mut c = host.conn();
    let (status, reply, _) = request(&mut c, "POST", &format!("/v2/models/{NAME}/infer"), &[], &body);
    assert_eq!((status, String::from_utf8_lossy(&reply).contains("needs a token")), (401, true));
    assert!(c.closing, "the connection is closed after a refused body");
    let auth = [("Authorization", "Bearer s3cret".to_owned())];
    assert_eq!(request(&mut host.conn(), "POST", &format!("/v2/models/{NAME}/infer"), &auth, &body).0, 200);

    // TCP: without the token the device is refused at start with a clear message.
    let link = format!("tcp:{}", host.tcp);
    let out = bin().args(["run", "--link", &link, "--threshold", "1", "photos/coffee.png"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a token"), "{err}");
    let out = bin().args(["run", "--token", "wrong", "--link", &link, "photos/coffee.png"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong token"));
    // With it, both links serve.
    for link in [link.clone(), host.link()] {
        let cfg = cascade_to(MODEL);
        let out = bin()
            .env("EDGECASCADE_TOKEN", "s3cret")
            .args(["run", "--json", "--config", cfg.1.to_str().unwrap(), "--link", &link, "photos/coffee.png"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{link}: {}", String::from_utf8_lossy(&out.stderr));
        let l = &run_json(&out)[0];
        assert_eq!((l["degraded"].as_bool(), l["model"].as_str()), (Some(false), Some(NAME)), "{link}: {l}");
    }
}

/// A config in a temporary folder: Lite0 int8 forwarding everything to `last`.
fn cascade_to(last: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cascade.toml");
    std::fs::write(
        &config,
        format!(
            "ensemble = false\n[[stage]]\nmodel = \"{}\"\nthreshold = 1.0\n[[stage]]\nmodel = \"{}\"\n",
            root().join("models/efficientnet-lite0-int8.toml").display(),
            root().join(last).display()
        ),
    )
    .unwrap();
    (dir, config)
}

/// Eight devices at once, half over the framed TCP link and half over OIP, against a
/// batching host: every request gets its own answer (the model's), counted once. (Whether
/// batches run together depends on whether they pay on this CPU, timed at the host's start;
/// the batcher's grouping and the batched runner are tested on their own.)
#[test]
fn batching_host_answers_concurrent_devices_each_with_its_own_answer() {
    let host = Arc::new(start_host(&["--batch-max", "8", "--batch-wait-ms", "50"], &[]));
    let spec = Manifest::load(&root().join(MODEL)).unwrap().image().unwrap().clone();
    let photos: Vec<(String, Decoded, Vec<u8>)> = PHOTOS
        .iter()
        .map(|p| {
            let bytes = std::fs::read(root().join("photos").join(p)).unwrap();
            (p.to_string(), Decoded::Image(preprocess::decode(&bytes).unwrap()), bytes)
        })
        .collect();
    let photos = Arc::new(photos);
    let wants: Vec<usize> = PHOTOS
        .iter()
        .map(|p| edgecascade::core::policy::argmax(&model().runner.run(&photo_tensor(p)).unwrap()))
        .collect();
    let threads: Vec<_> = (0..8)
        .map(|d| {
            let (host, photos, spec) = (host.clone(), photos.clone(), spec.clone());
            std::thread::spawn(move || {
                let addr: LinkAddr =
                    if d % 2 == 0 { format!("tcp:{}", host.tcp) } else { host.link() }.parse().unwrap();
                let mut cfg = RemoteConfig::new(addr.clone());
                cfg.encodings = vec![Encoding::Original];
                cfg.reply_timeout = TIMEOUT;
                cfg.tensor_spec = Some(spec);
                cfg.want_probs = true;
                let mut remote: Box<dyn RemoteStage> = match addr {
                    LinkAddr::Oip { .. } => Box::new(edgecascade::offload::oip::OipRemote::new(cfg).unwrap()),
                    _ => Box::new(Remote::new(cfg)),
                };
                remote.connect().unwrap();
                let mut got = Vec::new();
                for round in 0..3 {
                    let i = (d + round) % photos.len();
                    let (_, img, bytes) = &photos[i];
                    let mut report = LinkReport::default();
                    let logits = remote.infer(bytes, img, &mut Spans::default(), 1, &mut report).unwrap();
                    got.push((i, edgecascade::core::policy::argmax(&logits)));
                }
                got
            })
        })
        .collect();
    for t in threads {
        for (i, class) in t.join().unwrap() {
            assert_eq!(class, wants[i], "{}", PHOTOS[i]);
        }
    }
    let mut c = host.conn();
    let (_, body, _) = request(&mut c, "GET", &format!("/v2/models/{NAME}/stats"), &[], &[]);
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (inferences, executions) = (
        stats["model_stats"][0]["inference_count"].as_u64().unwrap(),
        stats["model_stats"][0]["execution_count"].as_u64().unwrap(),
    );
    assert_eq!(inferences, 24);
    assert!(executions >= 1 && executions <= inferences, "{stats}");
}

/// Connections are served on their own: 70 devices holding kept-alive connections open do not
/// hold up a new one (tiny_http, used before, could leave a new connection waiting until
/// another closed), nor take a slot of `--max-devices`, which bounds requests in service: past
/// it a request waits a second for a worker, then gets 503. And the HTTP edges clients use:
/// chunked bodies, `Expect: 100-continue`, HTTP/1.0, an oversized head.
#[test]
fn kept_alive_connections_never_hold_up_a_new_one_and_http_edges_are_served() {
    use std::io::{Read, Write};
    let host = start_host(&["--max-devices", "2"], &[]);
    let held: Vec<HttpConn> = (0..70)
        .map(|_| {
            let mut c = host.conn();
            assert_eq!(request(&mut c, "GET", "/v2/health/ready", &[], &[]).0, 200);
            c
        })
        .collect();
    let mut fresh = host.conn();
    fresh.send("GET", "/v2", &[], &[]).unwrap();
    let r = fresh.receive(Duration::from_secs(10)).expect("a new connection is answered while 70 are held open");
    assert_eq!(r.status, 200);
    // Two requests in service (each waiting for its body after `100 Continue`): a third is
    // refused with a reason and closed; the two are answered once their bodies come.
    let infer_path = format!("/v2/models/{NAME}/infer");
    let input = Tensor::new("input", vec![1, 3, 224, 224], photo_tensor("coffee.png"));
    let (body, _) = oip::encode_request("c", std::slice::from_ref(&input), None, false);
    let expecting: Vec<TcpStream> = (0..2).map(|_| expect_continue(&host.http, &infer_path, body.len())).collect();
    let mut over = host.conn();
    over.send("GET", "/v2", &[], &[]).unwrap();
    let r = over.receive(TIMEOUT).unwrap();
    assert_eq!(r.status, 503, "{}", r.error_text());
    assert!(r.error_text().contains("2 requests at once"), "{}", r.error_text());
    assert!(over.closing && r.header("Retry-After").is_some());
    for mut raw in expecting {
        raw.write_all(&body).unwrap();
        let r = HttpConn::new(Box::new(raw), &host.http).receive(TIMEOUT).unwrap();
        assert_eq!(r.status, 200, "{}", r.error_text());
    }
    // The held connections are still served.
    for mut c in held.into_iter().step_by(10) {
        assert_eq!(request(&mut c, "GET", "/v2/health/live", &[], &[]).0, 200);
    }

    // A chunked body, in uneven chunks, answered like a sized one.
    let want = oip::decode_response(&infer(&mut host.conn(), &[input], false).1, None).unwrap();
    let mut raw = TcpStream::connect(&host.http).unwrap();
    let mut msg = format!("POST {infer_path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    for piece in body.chunks(100_003) {
        msg.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        msg.extend_from_slice(piece);
        msg.extend_from_slice(b"\r\n");
    }
    msg.extend_from_slice(b"0\r\n\r\n");
    raw.write_all(&msg).unwrap();
    let r = HttpConn::new(Box::new(raw), &host.http).receive(TIMEOUT).unwrap();
    assert_eq!(r.status, 200, "{}", r.error_text());
    assert_eq!(oip::decode_response(&r.body, None).unwrap().outputs[0].data, want.outputs[0].data);

    // `Expect: 100-continue`: the host says go on before the body is sent.
    let mut raw = expect_continue(&host.http, &infer_path, body.len());
    raw.write_all(&body).unwrap();
    let r = HttpConn::new(Box::new(raw), &host.http).receive(TIMEOUT).unwrap();
    assert_eq!(r.status, 200, "{}", r.error_text());

    // HTTP/1.0 without keep-alive: answered, then closed.
    let mut raw = TcpStream::connect(&host.http).unwrap();
    raw.write_all(b"GET /v2/health/ready HTTP/1.0\r\n\r\n").unwrap();
    raw.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut all = String::new();
    raw.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n") && all.contains("Connection: close"), "{all}");

    // A head over 64 KiB: 431, and the host goes on serving.
    let mut raw = TcpStream::connect(&host.http).unwrap();
    let head = format!("GET /v2 HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(70_000));
    raw.write_all(head.as_bytes()).unwrap();
    let r = HttpConn::new(Box::new(raw), &host.http).receive(TIMEOUT).unwrap();
    assert_eq!(r.status, 431, "{}", r.error_text());
    assert!(r.error_text().contains("longer than 65536 bytes"), "{}", r.error_text());
    assert_eq!(request(&mut host.conn(), "GET", "/v2/health/ready", &[], &[]).0, 200);
}

/// A POST head with `Expect: 100-continue` for a body of `len` bytes, sent on a new
/// connection to `addr`: the connection once the host has said `100 Continue`.
fn expect_continue(addr: &str, path: &str, len: usize) -> TcpStream {
    use std::io::{Read, Write};
    let mut raw = TcpStream::connect(addr).unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {len}\r\n\r\n");
    raw.write_all(head.as_bytes()).unwrap();
    raw.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut cont = [0u8; 25];
    raw.read_exact(&mut cont).unwrap();
    assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
    raw
}

/// Issue 16's text over OIP: the served text model (the small host one, quick to load).
const TEXT_MODEL: &str = "models/minilm-l6-sst2-int8.toml";
const TEXT_NAME: &str = "minilm-l6-sst2-int8";
const POSITIVE: &str = "a gorgeous , witty , seductive movie .";
const NEGATIVE: &str = "dull and lifeless .";

/// A text cascade in a temporary folder: MiniLM-L3 on the device (threshold 0.99), MiniLM-L6
/// on the host.
fn text_cascade() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("text.toml");
    std::fs::write(
        &config,
        format!(
            "[[stage]]\nmodel = \"{}\"\nmetric = \"max-softmax\"\nthreshold = 0.99\n\n[[stage]]\nmodel = \"{}\"\n",
            root().join("models/minilm-l3-sst2-int8.toml").display(),
            root().join(TEXT_MODEL).display()
        ),
    )
    .unwrap();
    (dir, config)
}

/// An infer request to the text model: `body` with its header length.
fn text_infer(c: &mut HttpConn, body: &[u8], hl: Option<usize>) -> (u16, Vec<u8>, Option<usize>) {
    let headers: Vec<(&str, String)> = hl.map(|n| (oip::HEADER_LEN, n.to_string())).into_iter().collect();
    request(c, "POST", &format!("/v2/models/{TEXT_NAME}/infer"), &headers, body)
}

/// A host serving a text model over OIP: metadata says BYTES; JSON and binary BYTES requests
/// get the model's logits (one row per text); bad BYTES requests a 400 naming the problem, on
/// a connection that goes on. Then `run --lines` over the `oip+http:` link: every line answered
/// once, the forwarded ones by the host, sent as BYTES.
#[test]
fn a_text_model_is_served_over_oip_with_bytes_and_a_text_cascade_offloads_to_it() {
    let (_dir, config) = text_cascade();
    let cfg = config.to_str().unwrap();
    let host = HostProc::start(&["--config", cfg, "--oip-listen", "127.0.0.1:0"], &[]);
    let mut c = host.conn();
    let (status, body, _) = request(&mut c, "GET", &format!("/v2/models/{TEXT_NAME}"), &[], &[]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let meta: oip::ModelMetadata = serde_json::from_slice(&body).unwrap();
    let input = &meta.inputs[0];
    assert_eq!((input.name.as_str(), input.datatype.as_str(), input.shape.as_slice()), ("text", "BYTES", &[-1][..]));
    assert_eq!((meta.outputs[0].datatype.as_str(), meta.outputs[0].shape.as_slice()), ("FP32", &[-1, 2][..]));

    let texts = || vec![POSITIVE.as_bytes().to_vec(), NEGATIVE.as_bytes().to_vec()];
    for binary in [false, true] {
        let (body, hl) = oip::encode_request("t", &[Tensor::bytes("text", vec![2], texts())], Some("logits"), binary);
        assert_eq!(hl.is_some(), binary);
        let (status, reply, rhl) = text_infer(&mut c, &body, hl);
        assert_eq!(status, 200, "binary={binary}: {}", String::from_utf8_lossy(&reply));
        let out = &oip::decode_response(&reply, rhl).unwrap().outputs[0];
        assert_eq!(out.shape, vec![2, 2]);
        let classes: Vec<usize> = out.data.chunks(2).map(edgecascade::core::policy::argmax).collect();
        assert_eq!(classes, vec![1, 0], "positive, then negative (binary={binary}): {:?}", out.data);
    }
    // The spec's own JSON form, as a client writes it.
    let body = format!(r#"{{"inputs":[{{"name":"text","datatype":"BYTES","shape":[1],"data":["{NEGATIVE}"]}}]}}"#);
    let (status, reply, rhl) = text_infer(&mut c, body.as_bytes(), None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    assert_eq!(edgecascade::core::policy::argmax(&oip::decode_response(&reply, rhl).unwrap().outputs[0].data), 0);

    // Bad requests: each a 400 naming the problem; the same connection goes on.
    let binary_raw = |shape: &str, raw: &[u8]| {
        let json = format!(
            r#"{{"inputs":[{{"name":"text","shape":{shape},"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}]}}"#,
            raw.len()
        );
        let n = json.len();
        ([json.as_bytes(), raw].concat(), Some(n))
    };
    let json = |s: &str| (s.as_bytes().to_vec(), None);
    // (body and its header length, what the error says)
    type Case<'a> = ((Vec<u8>, Option<usize>), &'a str);
    let cases: Vec<Case> = vec![
        (
            json(
                r#"{"inputs":[{"name":"text","shape":[1,3,2,2],"datatype":"FP32","data":[0,0,0,0,0,0,0,0,0,0,0,0]}]}"#,
            ),
            "input 'text' is FP32; model 'minilm-l6-sst2-int8' takes 'text' BYTES [-1] (text, one per element)",
        ),
        (
            json(r#"{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":[7]}]}"#),
            "element 0 is 7, not a string",
        ),
        (binary_raw("[1]", &[200, 0, 0, 0, b'h', b'i']), "element 0's length prefix says 200 bytes but only 2 remain"),
        (binary_raw("[1]", &[3, 0, 0, 0, b'o', 0xff, b'k']), "input 'text' element 0 is not UTF-8"),
        (
            json(r#"{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["fine"," "]}]}"#),
            "element 1 is empty",
        ),
        (json(r#"{"inputs":[{"name":"text","shape":[0],"datatype":"BYTES","data":[]}]}"#), "with a batch of 1 to 64"),
        (json(r#"{"inputs":[{"name":"words","shape":[1],"datatype":"BYTES","data":["x"]}]}"#), "unknown input 'words'"),
    ];
    for ((body, hl), want) in cases {
        let (status, reply, _) = text_infer(&mut c, &body, hl);
        let err: oip::ErrorBody = serde_json::from_slice(&reply).unwrap();
        assert_eq!(status, 400, "{want}: {}", err.error);
        assert!(err.error.contains(want), "{:?} does not say {want:?}", err.error);
        assert_eq!(request(&mut c, "GET", "/v2/health/ready", &[], &[]).0, 200);
    }

    // The device: a text cascade over the OIP link.
    let dir = tempfile::tempdir().unwrap();
    let reviews = std::fs::read_to_string(root().join("texts/reviews.txt")).unwrap();
    let file = dir.path().join("reviews.txt");
    std::fs::write(&file, format!("{reviews}{POSITIVE}\n{NEGATIVE}\n")).unwrap();
    let link = format!("oip+http://{}/v2/models/{TEXT_NAME}", host.http);
    let out = bin().args(["run", "--json", "--config", cfg, "--link", &link, "--lines"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = run_json(&out);
    let n = reviews.lines().count() + 2;
    assert_eq!(lines.len(), n, "every line answered once: {lines:#?}");
    let mut names: Vec<&str> = lines.iter().map(|l| l["input"].as_str().unwrap()).collect();
    names.dedup();
    assert_eq!(names.len(), n, "{lines:#?}");
    let forwarded: Vec<&serde_json::Value> = lines.iter().filter(|l| l["forwarded"] == true).collect();
    assert!(!forwarded.is_empty(), "at threshold 0.99 some lines go to the host: {lines:#?}");
    for l in &forwarded {
        assert_eq!((l["degraded"].as_bool(), l["model"].as_str()), (Some(false), Some(TEXT_NAME)), "{l}");
        assert_eq!(l["link"]["encoding"], "oip-bytes-binary", "{l}");
    }
    // An image cascade is refused by the text model at start, naming both.
    let out = bin().args(["run", "--link", &link, "photos/coffee.png"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("takes BYTES text ('text'), and this cascade's inputs are images"), "{err}");
}
