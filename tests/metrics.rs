//! The host's `/metrics` end to end (issue 19): an `edgecascade host` process serving OIP and
//! the framed TCP link on loopback is scraped, serves inference requests over both (and bad
//! ones), and is scraped again; its counters and histograms move by exactly what it served,
//! and the text is Prometheus' exposition format, line by line. With a token, `/metrics` needs
//! it like every endpoint but health.

mod common;

use common::oip::*;
use edgecascade::link::{write_msg, write_sync, Encoding, FrameReader, Hello, InferRequest, Message};
use edgecascade::oip::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::net::TcpStream;

/// A scrape: each sample's value by its name and its labels (sorted, `k="v"` joined by `,`).
struct Scrape(HashMap<(String, String), f64>);

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        l.sort();
        let key = (name.to_owned(), l.join(","));
        *self.0.get(&key).unwrap_or_else(|| panic!("no sample {key:?}"))
    }
}

/// Parses the exposition format strictly: HELP and TYPE comments, then every other line
/// `name{k="v",...} value` (labels optional) with a valid metric name and a float value, each
/// sample's family (histograms: less `_bucket`, `_sum`, `_count`) declared by a TYPE line before
/// it, no sample twice.
fn parse(text: &str) -> Scrape {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped = Vec::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(helped.last().is_some_and(|h| h == name), "TYPE {name} without its HELP first");
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "{name} typed twice");
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line {line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a number: {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("labels not closed: {line:?}"));
                let labels: BTreeMap<&str, &str> = body
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("bad label in {line:?}"));
                        assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line:?}");
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                        (k, v.unwrap_or_else(|| panic!("unquoted label value in {line:?}")))
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(
            name.starts_with("edgecascade_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|t| t == "histogram")))
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} before (or without) its TYPE line");
        let key = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect::<Vec<_>>().join(",");
        assert!(samples.insert((name.to_owned(), key), value).is_none(), "{line:?} twice");
    }
    Scrape(samples)
}

/// `GET /metrics`: checks the status and content type, parses the text.
fn scrape(c: &mut edgecascade::offload::oip::HttpConn, headers: &[(&str, String)]) -> Scrape {
    c.send("GET", "/metrics", headers, &[]).unwrap();
    let r = c.receive(TIMEOUT).unwrap();
    assert_eq!(r.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = String::from_utf8(r.body).unwrap();
    assert_eq!(r.status, 200, "{text}");
    parse(&text)
}

/// The samples `after` minus `before`, for the series named.
fn moved(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels) - before.get(name, labels)
}

#[test]
fn metrics_move_by_exactly_what_the_host_served_over_oip_and_the_framed_link() {
    let host = start_host(&[], &[]);
    let mut c = host.conn();
    let before = scrape(&mut c, &[]);
    let build = label_set(&before, "edgecascade_build_info");
    assert!(build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{build}");
    assert!(build.contains("commit=\"") && build.contains("target=\""), "{build}");

    // OIP: two single inputs, one request of two, and one bad request (an unknown input).
    for p in &PHOTOS[..2] {
        let (status, body, _) = infer(&mut c, &[Tensor::new("input", vec![1, 3, 224, 224], photo_tensor(p))], true);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let two: Vec<f32> = PHOTOS[..2].iter().flat_map(|p| photo_tensor(p)).collect();
    assert_eq!(infer(&mut c, &[Tensor::new("input", vec![2, 3, 224, 224], two)], false).0, 200);
    let bad = Tensor::new("pixels", vec![1, 3, 224, 224], photo_tensor("coffee.png"));
    assert_eq!(infer(&mut c, &[bad], false).0, 400);
    assert_eq!(request(&mut c, "POST", "/metrics", &[], b"x").0, 405);

    // The framed link: Hello -> Welcome, Infer -> Answer (the photo as sent), a bad frame.
    let sock = TcpStream::connect(&host.tcp).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut link = FrameReader::new(sock, 1 << 24);
    write_sync(link.get_mut()).unwrap();
    write_msg(link.get_mut(), &Message::Hello(Hello::new("metrics-test", vec![Encoding::Original]))).unwrap();
    assert!(matches!(link.read_msg().unwrap(), Message::Welcome(_)));
    let photo = std::fs::read(common::root().join("photos/coffee.png")).unwrap();
    let req =
        InferRequest { seq: 1, encoding: Encoding::Original, payload: photo, device_probs: None, want_probs: false };
    write_msg(link.get_mut(), &Message::Infer(req)).unwrap();
    assert!(matches!(link.read_msg().unwrap(), Message::Answer(a) if a.seq == 1));
    std::io::Write::write_all(link.get_mut(), &[7, 7, 7, 7, 0]).unwrap();
    assert!(matches!(link.read_msg().unwrap(), Message::Error(_)));

    let after = scrape(&mut c, &[]);
    let m = |name: &str, labels: &[(&str, &str)]| moved(&before, &after, name, labels);
    // The first scrape is counted once answered, so it shows in the second.
    assert_eq!(m("edgecascade_requests_total", &[("protocol", "oip"), ("outcome", "ok")]), 3.0 + 1.0);
    assert_eq!(m("edgecascade_requests_total", &[("protocol", "oip"), ("outcome", "error")]), 2.0);
    assert_eq!(m("edgecascade_errors_total", &[("protocol", "oip"), ("kind", "bad_request")]), 2.0);
    assert_eq!(m("edgecascade_errors_total", &[("protocol", "oip"), ("kind", "model")]), 0.0);
    assert_eq!(m("edgecascade_requests_total", &[("protocol", "framed"), ("outcome", "ok")]), 2.0);
    assert_eq!(m("edgecascade_requests_total", &[("protocol", "framed"), ("outcome", "error")]), 1.0);
    assert_eq!(m("edgecascade_errors_total", &[("protocol", "framed"), ("kind", "bad_frame")]), 1.0);
    // Inputs: 1 + 1 + 2 over OIP, 1 over the link; without a batcher, one execution per request.
    assert_eq!(m("edgecascade_inferences_total", &[]), 5.0);
    assert_eq!(m("edgecascade_batch_size_count", &[]), 4.0);
    assert_eq!(m("edgecascade_batch_size_sum", &[]), 5.0);
    assert_eq!(m("edgecascade_batch_size_bucket", &[("le", "1")]), 3.0);
    assert_eq!(m("edgecascade_batch_size_bucket", &[("le", "2")]), 4.0);
    assert_eq!(m("edgecascade_batch_size_bucket", &[("le", "+Inf")]), 4.0);
    assert_eq!(m("edgecascade_stage_seconds_count", &[("stage", "infer")]), 4.0);
    assert!(m("edgecascade_stage_seconds_sum", &[("stage", "infer")]) > 0.0);
    assert_eq!(m("edgecascade_stage_seconds_bucket", &[("stage", "infer"), ("le", "+Inf")]), 4.0);
    // Decoded: four OIP bodies (the bad one too) and one photo; encoded: three OIP answers.
    assert_eq!(m("edgecascade_stage_seconds_count", &[("stage", "decode")]), 5.0);
    assert_eq!(m("edgecascade_stage_seconds_count", &[("stage", "encode")]), 3.0);
    assert_eq!(m("edgecascade_stage_seconds_count", &[("stage", "preprocess")]), 1.0);
    assert_eq!(m("edgecascade_stage_seconds_count", &[("stage", "queue_wait")]), 0.0, "no batcher");
    assert_eq!(m("edgecascade_request_seconds_count", &[("protocol", "oip")]), 4.0);
    assert_eq!(m("edgecascade_request_seconds_count", &[("protocol", "framed")]), 1.0);
    // Now: this scrape in service, the link's connection open.
    assert_eq!(after.get("edgecascade_requests_in_flight", &[("protocol", "oip")]), 1.0);
    assert_eq!(after.get("edgecascade_open_connections", &[("protocol", "framed")]), 1.0);
    assert!(after.get("edgecascade_open_connections", &[("protocol", "oip")]) >= 1.0);
    assert_eq!(after.get("edgecascade_queue_depth", &[]), 0.0);
}

/// The labels of the one series of `name`, with its value 1 (an info gauge).
fn label_set(s: &Scrape, name: &str) -> String {
    let series: Vec<_> = s.0.iter().filter(|((n, _), _)| n == name).collect();
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(*series[0].1, 1.0);
    series[0].0 .1.clone()
}

#[test]
fn with_a_token_metrics_need_it_and_health_does_not() {
    let host = start_host(&[], &[("EDGECASCADE_TOKEN", "s3cret")]);
    let mut c = host.conn();
    assert_eq!(request(&mut c, "GET", "/v2/health/ready", &[], &[]).0, 200);
    let (status, body, _) = request(&mut c, "GET", "/metrics", &[], &[]);
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let mut c = host.conn();
    let s = scrape(&mut c, &[("Authorization", "Bearer s3cret".to_owned())]);
    // The refused scrape counted as an unauthorized error.
    assert_eq!(s.get("edgecascade_errors_total", &[("protocol", "oip"), ("kind", "unauthorized")]), 1.0);
    assert_eq!(s.get("edgecascade_requests_total", &[("protocol", "oip"), ("outcome", "ok")]), 1.0);
}
