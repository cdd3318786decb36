//! The renderer's exact text on small registries, and the whole registry's text checked line
//! by line against the exposition format's rules.

use super::*;
use std::collections::HashMap;

#[test]
fn a_histogram_renders_cumulative_buckets_then_sum_and_count_exactly() {
    let h = Histogram::new(&[1.0, 2.5], 1.0);
    for v in [1, 2, 2, 7] {
        h.observe(v);
    }
    let mut out = String::new();
    histograms(&mut out, "x_size", "Sizes.", &[(&[("stage", "a")], &h)]);
    assert_eq!(
        out,
        "# HELP x_size Sizes.\n\
         # TYPE x_size histogram\n\
         x_size_bucket{stage=\"a\",le=\"1\"} 1\n\
         x_size_bucket{stage=\"a\",le=\"2.5\"} 3\n\
         x_size_bucket{stage=\"a\",le=\"+Inf\"} 4\n\
         x_size_sum{stage=\"a\"} 12\n\
         x_size_count{stage=\"a\"} 4\n"
    );
}

#[test]
fn times_land_in_their_bucket_and_sum_in_seconds() {
    let h = Histogram::seconds();
    h.observe_time(Duration::from_micros(700));
    h.observe_time(Duration::from_secs(30));
    let mut out = String::new();
    histograms(&mut out, "t_seconds", "Times.", &[(&[], &h)]);
    assert!(out.contains("t_seconds_bucket{le=\"0.0005\"} 0\nt_seconds_bucket{le=\"0.001\"} 1\n"), "{out}");
    assert!(out.contains("t_seconds_bucket{le=\"10\"} 1\nt_seconds_bucket{le=\"+Inf\"} 2\n"), "{out}");
    assert!(out.ends_with("t_seconds_sum 30.0007\nt_seconds_count 2\n"), "{out}");
}

#[test]
fn a_family_renders_help_type_and_escaped_label_values_exactly() {
    let mut out = String::new();
    family(&mut out, "x_total", "counter", "Things,\nby kind.", &[(&[("kind", "a\"b\\c\nd")], 3), (&[], 0)]);
    assert_eq!(
        out,
        "# HELP x_total Things,\\nby kind.\n\
         # TYPE x_total counter\n\
         x_total{kind=\"a\\\"b\\\\c\\nd\"} 3\n\
         x_total 0\n"
    );
}

#[test]
fn statuses_and_error_codes_map_to_kinds() {
    assert_eq!(ErrorKind::of_status(200), None);
    assert_eq!(ErrorKind::of_status(204), None);
    let kinds = [400, 401, 404, 405, 408, 413, 431, 500, 503, 502].map(|s| ErrorKind::of_status(s).unwrap().label());
    assert_eq!(
        kinds,
        [
            "bad_request",
            "unauthorized",
            "bad_request",
            "bad_request",
            "timeout",
            "too_large",
            "too_large",
            "model",
            "busy",
            "other"
        ]
    );
    assert_eq!(ErrorKind::of_code(ErrorCode::BadVersion), ErrorKind::BadFrame);
    assert_eq!(ErrorKind::of_code(ErrorCode::BadPayload), ErrorKind::BadRequest);
    assert_eq!(ErrorKind::of_code(ErrorCode::Internal), ErrorKind::Model);
    assert_eq!(ErrorKind::of_code(ErrorCode::Busy), ErrorKind::Busy);
}

/// One sample line: `name{labels} value`.
fn sample(line: &str) -> (String, HashMap<String, String>, f64) {
    let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
    let value: f64 = value.parse().unwrap_or_else(|_| panic!("value not a number: {line:?}"));
    let (name, labels) = match series.split_once('{') {
        None => (series, HashMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("labels not closed: {line:?}"));
            let labels = body
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("label without '=': {line:?}"));
                    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).expect("a quoted label value");
                    (k.to_owned(), v.to_owned())
                })
                .collect();
            (name, labels)
        }
    };
    assert!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && name.starts_with("edgecascade_"),
        "{line:?}"
    );
    (name.to_owned(), labels, value)
}

#[test]
fn the_whole_registry_renders_typed_families_consistent_histograms_and_error_sums() {
    let m = Metrics::default();
    m.answered(Protocol::Oip, None);
    m.answered(Protocol::Oip, Some(ErrorKind::BadRequest));
    m.answered(Protocol::Oip, Some(ErrorKind::Busy));
    m.answered(Protocol::Framed, Some(ErrorKind::BadFrame));
    m.executed(3, Duration::from_millis(4));
    m.executed(1, Duration::from_millis(2));
    m.stage(Stage::Decode, Duration::from_micros(300));
    m.request_time(Protocol::Oip, Duration::from_millis(7));
    m.queue_depth.set(5);
    let _open = m.open(Protocol::Framed).hold();
    let text = m.render();

    let mut typed = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            typed.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with("# HELP ") {
            samples.push(sample(line));
        }
    }
    let family_of = |name: &str| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.get(*f).is_some_and(|k| k == "histogram")))
            .unwrap_or(name)
            .to_owned()
    };
    for (name, _, _) in &samples {
        assert!(typed.contains_key(&family_of(name)), "{name} has no TYPE line");
    }
    let value = |name: &str, labels: &[(&str, &str)]| {
        let found: Vec<f64> = samples
            .iter()
            .filter(|(n, l, _)| n == name && l.len() == labels.len() && labels.iter().all(|(k, v)| l[*k] == *v))
            .map(|s| s.2)
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in\n{text}");
        found[0]
    };
    assert_eq!(
        value(
            "edgecascade_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("EDGECASCADE_GIT_COMMIT")),
                ("target", env!("EDGECASCADE_TARGET"))
            ]
        ),
        1.0
    );
    assert_eq!(value("edgecascade_requests_total", &[("protocol", "oip"), ("outcome", "ok")]), 1.0);
    assert_eq!(value("edgecascade_requests_total", &[("protocol", "oip"), ("outcome", "error")]), 2.0);
    assert_eq!(value("edgecascade_requests_total", &[("protocol", "framed"), ("outcome", "error")]), 1.0);
    for p in ["oip", "framed"] {
        let errors: f64 =
            samples.iter().filter(|(n, l, _)| n == "edgecascade_errors_total" && l["protocol"] == p).map(|s| s.2).sum();
        assert_eq!(errors, value("edgecascade_requests_total", &[("protocol", p), ("outcome", "error")]));
    }
    assert_eq!(value("edgecascade_errors_total", &[("protocol", "oip"), ("kind", "busy")]), 1.0);
    assert_eq!(value("edgecascade_inferences_total", &[]), 4.0);
    assert_eq!(value("edgecascade_batch_size_count", &[]), 2.0);
    assert_eq!(value("edgecascade_batch_size_sum", &[]), 4.0);
    assert_eq!(value("edgecascade_batch_size_bucket", &[("le", "2")]), 1.0);
    assert_eq!(value("edgecascade_batch_size_bucket", &[("le", "4")]), 2.0);
    assert_eq!(value("edgecascade_stage_seconds_count", &[("stage", "infer")]), 2.0);
    assert!((value("edgecascade_stage_seconds_sum", &[("stage", "infer")]) - 0.006).abs() < 1e-12);
    assert_eq!(value("edgecascade_stage_seconds_count", &[("stage", "decode")]), 1.0);
    assert_eq!(value("edgecascade_request_seconds_count", &[("protocol", "oip")]), 1.0);
    assert_eq!(value("edgecascade_queue_depth", &[]), 5.0);
    assert_eq!(value("edgecascade_open_connections", &[("protocol", "framed")]), 1.0);
    assert_eq!(value("edgecascade_requests_in_flight", &[("protocol", "oip")]), 0.0);

    // Every histogram series: buckets cumulative, in increasing `le`, the last `+Inf` and equal
    // to `_count`.
    let mut buckets: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    for (name, labels, v) in &samples {
        if let Some(family) = name.strip_suffix("_bucket") {
            let mut rest: Vec<_> = labels.iter().filter(|(k, _)| *k != "le").collect();
            rest.sort();
            let le = labels["le"].parse::<f64>().unwrap_or(f64::INFINITY);
            assert!(labels["le"] != "+Inf" || le.is_infinite());
            buckets.entry(format!("{family} {rest:?}")).or_default().push((le, *v));
        }
    }
    assert_eq!(buckets.len(), 1 + Stage::ALL.len() + Protocol::ALL.len());
    for (series, b) in &buckets {
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{series}: {b:?}");
        assert!(b.last().unwrap().0.is_infinite(), "{series}");
        let (family, rest) = series.split_once(' ').unwrap();
        let count = samples
            .iter()
            .find(|(n, l, _)| {
                let mut l: Vec<_> = l.iter().collect();
                l.sort();
                *n == format!("{family}_count") && format!("{l:?}") == rest
            })
            .unwrap_or_else(|| panic!("{series} has no _count"));
        assert_eq!(b.last().unwrap().1, count.2, "{series}: +Inf is not _count");
    }
}

#[test]
fn held_gauges_go_back_down() {
    let m = Metrics::default();
    {
        let _a = m.in_flight(Protocol::Oip).hold();
        let _b = m.in_flight(Protocol::Oip).hold();
        assert_eq!(m.in_flight(Protocol::Oip).get(), 2);
    }
    assert_eq!(m.in_flight(Protocol::Oip).get(), 0);
}
