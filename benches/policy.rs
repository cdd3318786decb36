//! The policy over 1000-class logits: softmax with temperature, each confidence metric, the
//! exit decision (alone and ensembling two stages), and `cascade::run` over two stages whose
//! logits are already at hand (the whole decision path of one input, inference excluded).
//!
//! The logits are real: ONNX Runtime's for the demo photos (tests/golden/logits.json), Lite0
//! int8 (the device model) and Lite2 (the host model) on `chelsea.png` (Lite0 unsure: max
//! softmax 0.42) and Lite0 on `coffee.png` (sure: 0.95).
//!
//! `cargo bench --bench policy`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use edgecascade::core::cascade;
use edgecascade::core::policy::{decide, softmax, top_k, Metric, StagePolicy};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

type Golden = BTreeMap<String, BTreeMap<String, Vec<f32>>>;

fn golden() -> Golden {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/logits.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("tests/golden/logits.json")).expect("logits JSON")
}

fn bench(c: &mut Criterion) {
    let g = golden();
    let small = &g["chelsea.png"]["efficientnet-lite0-int8"];
    let large = &g["chelsea.png"]["efficientnet-lite2-fp32"];
    let sure = &g["coffee.png"]["efficientnet-lite0-int8"];
    assert_eq!(small.len(), 1000);

    let mut group = c.benchmark_group("policy");
    group.bench_function("softmax T=1", |b| b.iter(|| softmax(black_box(small), 1.0)));
    group.bench_function("softmax T=1.3", |b| b.iter(|| softmax(black_box(small), 1.3)));
    let probs = softmax(small, 1.0);
    for m in Metric::ALL {
        group.bench_with_input(BenchmarkId::new("metric", m.as_str()), &probs, |b, p| b.iter(|| m.score(black_box(p))));
    }
    group.bench_function("top-5", |b| b.iter(|| top_k(black_box(&probs), 5)));

    let first = StagePolicy { metric: Metric::MaxSoftmax, threshold: Some(0.5), temperature: 1.0 };
    let last = StagePolicy { metric: Metric::MaxSoftmax, threshold: None, temperature: 1.0 };
    let one = vec![probs.clone()];
    let two = vec![probs.clone(), softmax(large, 1.0)];
    group.bench_function("decide, 1 stage", |b| b.iter(|| decide(&first, black_box(&one), false)));
    group.bench_function("decide, 2 stages ensembled", |b| b.iter(|| decide(&last, black_box(&two), true)));

    // The cascade driver with the logits at hand: what each input pays for deciding.
    let policies = vec![first.clone(), last.clone()];
    let o = cascade::run(&policies, false, |_| Ok(sure.clone())).unwrap();
    assert_eq!(o.stage, 0, "coffee.png exits at the device");
    group.bench_function("cascade::run, exit at stage 0", |b| {
        b.iter(|| cascade::run(&policies, false, |_| Ok(black_box(sure).clone())).unwrap())
    });
    let both = [small, large];
    let o = cascade::run(&policies, false, |i| Ok(both[i].clone())).unwrap();
    assert_eq!(o.stage, 1, "chelsea.png goes on to the host");
    for ensemble in [false, true] {
        let name = format!("cascade::run, forwarded to stage 1{}", if ensemble { ", ensembled" } else { "" });
        group.bench_function(name, |b| {
            b.iter(|| cascade::run(&policies, ensemble, |i| Ok(black_box(both[i]).clone())).unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
