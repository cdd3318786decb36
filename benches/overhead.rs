//! The runtime's overhead per input (issue #6, item 6): everything `session::drive` does per
//! input beyond decoding, preprocessing and inference (the cascade and policy, spans, the
//! answer, energy attribution, the output line, the results log and its flush, the summary),
//! against the small model's inference time measured in the same run.
//!
//! The real `Pipeline` and `session::drive` run over the default cascade's manifests
//! (Lite0 int8, then Lite2), with `runner::ScriptedRunner` in place of tract: each stage
//! answers at once with real logits (ONNX Runtime's in tests/golden/logits.json: Lite0 is
//! sure of `coffee.png`, max softmax 0.95, and unsure of `chelsea.png`, 0.42). The input is a 227x227 JPEG (`photos/china.jpg` cropped and
//! encoded at quality 90 in memory). The overhead of a batch is its wall time minus the
//! `decode`, `preprocess` and `infer` spans the answers report (the summary's means).
//!
//! Setups: `exit`: stage 0 answers; `forwarded`: stage 0 is unsure and stage 1 (local here)
//! answers; both as `run --log FILE` does it (a text line to a line-buffered /dev/null for
//! stdout, a JSON line appended to a results log file and flushed, energy from the board's
//! sensor or estimate). `exit, bare`: no log, no energy.
//!
//! `cargo bench --bench overhead`. With `EDGECASCADE_OVERHEAD_CALLGRIND=N` it skips the timing
//! and runs N inputs through each setup once, for `scripts/overhead_callgrind.sh` (instructions
//! per input, see BENCHMARKS.md).

use criterion::{criterion_group, Criterion, SamplingMode};
use edgecascade::config::CascadeConfig;
use edgecascade::energy::EnergyContext;
use edgecascade::model::manifest::Manifest;
use edgecascade::model::preprocess;
use edgecascade::model::runner::{ModelRunner, ScriptedRunner, TractRunner};
use edgecascade::model::Model;
use edgecascade::run::inputs::Input;
use edgecascade::run::pipeline::Pipeline;
use edgecascade::run::session::{self, Sink};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::LineWriter;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

type Golden = BTreeMap<String, BTreeMap<String, Vec<f32>>>;

/// The bench input: a 227x227 JPEG, the size of the `imagenet-val-a` images.
fn input_jpeg() -> Vec<u8> {
    let photo = std::fs::read(root().join("photos/china.jpg")).expect("photos/china.jpg");
    let img = preprocess::decode(&photo).unwrap();
    edgecascade::offload::payload::crop_jpeg(&img, 227, 1.0, 90).unwrap()
}

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Exit,
    Forwarded,
    ExitBare,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Exit => "exit at stage 0",
            Setup::Forwarded => "forwarded to stage 1",
            Setup::ExitBare => "exit at stage 0, bare (no log, no energy)",
        }
    }
}

/// The default cascade with scripted runners answering `jpeg` with real logits.
fn pipeline(setup: Setup, jpeg: &[u8]) -> Pipeline {
    let golden: Golden =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/golden/logits.json")).unwrap())
            .expect("tests/golden/logits.json");
    let photo = if setup == Setup::Forwarded { "chelsea.png" } else { "coffee.png" };
    let config = CascadeConfig::load(&root().join("cascade.toml")).expect("cascade.toml");
    let img = preprocess::decode(jpeg).unwrap();
    let models: Vec<Model> = config
        .stages
        .iter()
        .map(|stage| {
            let manifest = Manifest::load(&stage.model).unwrap();
            let classes = manifest.load_classes().unwrap();
            // ScriptedRunner answers by the tensor's first value.
            let key = preprocess::to_tensor(&img, manifest.image().unwrap())[0].to_bits();
            let logits = golden[photo][&manifest.name].clone();
            let macs = if manifest.name.contains("lite0") { 387_000_000 } else { 860_000_000 };
            let runner = ScriptedRunner { answers: HashMap::from([(key, logits)]), macs };
            Model { manifest, classes, runner: Box::new(runner), tokenizer: None, load_ms: 0.0 }
        })
        .collect();
    let mut pipeline = Pipeline::assembled(config, models, None);
    pipeline.energy = (setup != Setup::ExitBare).then(|| {
        let r = edgecascade::board::resolve(None, None, None).expect("board profiles");
        EnergyContext::start(&r.detection.board, &r.root)
    });
    pipeline
}

struct Run {
    pipeline: Pipeline,
    setup: Setup,
    jpeg: Vec<u8>,
    log_dir: tempfile::TempDir,
    seq: u64,
}

impl Run {
    fn new(setup: Setup, jpeg: &[u8]) -> Run {
        Run {
            pipeline: pipeline(setup, jpeg),
            setup,
            jpeg: jpeg.to_vec(),
            log_dir: tempfile::tempdir().unwrap(),
            seq: 0,
        }
    }

    fn inputs(&mut self, n: u64) -> Vec<Input> {
        (0..n)
            .map(|_| {
                self.seq += 1;
                (format!("frames/{:06}.jpg", self.seq), Ok(self.jpeg.clone()))
            })
            .collect()
    }

    /// Runs `n` inputs through `session::drive`; returns the wall time and the part of it
    /// the answers' decode, preprocess and infer spans took.
    fn drive(&mut self, inputs: Vec<Input>) -> (Duration, Duration) {
        let n = inputs.len();
        let mut out = LineWriter::new(File::create("/dev/null").unwrap());
        // The results log as `run --log` keeps it: each line synced to the disk.
        let log = (self.setup != Setup::ExitBare).then(|| {
            edgecascade::run::results_log::ResultsLog::open(&self.log_dir.path().join("results.jsonl"), "bench", None)
                .unwrap()
                .0
        });
        let mut sink = Sink { out: &mut out, json: false, log, labels: None, audit: None };
        let t0 = Instant::now();
        let s = session::drive(&mut self.pipeline, inputs.into_iter(), &mut sink).unwrap();
        let wall = t0.elapsed();
        assert_eq!((s.answered, s.forwarded_count), (n, if self.setup == Setup::Forwarded { n } else { 0 }));
        let excluded_ms: f64 =
            ["decode", "preprocess", "infer"].iter().map(|k| s.mean_span_ms[*k]).sum::<f64>() * n as f64;
        (wall, Duration::from_secs_f64(excluded_ms / 1e3))
    }

    /// Overhead of `n` inputs.
    fn overhead(&mut self, n: u64) -> Duration {
        let inputs = self.inputs(n);
        let (wall, excluded) = self.drive(inputs);
        wall.saturating_sub(excluded)
    }
}

/// The small model for real, on the bench input's tensor, one thread.
fn lite0() -> (TractRunner, Vec<f32>) {
    edgecascade::model::runner::set_threads(1);
    let manifest = Manifest::load(&root().join("models/efficientnet-lite0-int8.toml")).unwrap();
    let runner = TractRunner::load(&manifest.onnx, &manifest.image().unwrap().shape(), &Default::default())
        .expect("Lite0 int8 loads");
    let tensor = preprocess::to_tensor(&preprocess::decode(&input_jpeg()).unwrap(), manifest.image().unwrap());
    (runner, tensor)
}

fn bench(c: &mut Criterion) {
    let jpeg = input_jpeg();
    let (lite0, tensor) = lite0();

    // Interleaved rounds: the overhead of 100 inputs, then 3 inferences, so that each
    // round's ratio is taken under the same load.
    let mut run = Run::new(Setup::Exit, &jpeg);
    run.overhead(20);
    lite0.run(&tensor).unwrap();
    println!("\nrounds (setup '{}'): overhead per input against one Lite0 int8 inference", Setup::Exit.name());
    println!("| round | overhead per input (us) | inference (ms) | overhead / inference |");
    println!("|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    for round in 1..=5 {
        let over = run.overhead(100).as_secs_f64() / 100.0;
        let t0 = Instant::now();
        for _ in 0..3 {
            lite0.run(std::hint::black_box(&tensor)).unwrap();
        }
        let infer = t0.elapsed().as_secs_f64() / 3.0;
        ratios.push(over / infer);
        println!("| {round} | {:.1} | {:.1} | {:.4}% |", over * 1e6, infer * 1e3, 100.0 * over / infer);
    }
    ratios.sort_by(f64::total_cmp);
    println!("median overhead / inference: {:.4}%\n", 100.0 * ratios[ratios.len() / 2]);

    let mut g = c.benchmark_group("overhead per input");
    for setup in [Setup::Exit, Setup::Forwarded, Setup::ExitBare] {
        let mut run = Run::new(setup, &jpeg);
        g.bench_function(setup.name(), |b| {
            b.iter_custom(|iters| run.overhead(iters));
        });
    }
    g.finish();

    let mut g = c.benchmark_group("inference");
    g.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("Lite0 int8, tract, 1 thread", |b| b.iter(|| lite0.run(std::hint::black_box(&tensor)).unwrap()));
    g.finish();
}

/// Under callgrind: each setup's `drive` over N inputs, each in a function of its own, which
/// `scripts/overhead_callgrind.sh` collects with `preprocess::decode` and `Model::logits`
/// (preprocessing and inference) toggled out: what is left is the overhead.
fn callgrind(n: u64) {
    let jpeg = input_jpeg();
    let mut exit = Run::new(Setup::Exit, &jpeg);
    let mut forwarded = Run::new(Setup::Forwarded, &jpeg);
    let mut bare = Run::new(Setup::ExitBare, &jpeg);
    for r in [&mut exit, &mut forwarded, &mut bare] {
        r.overhead(3);
    }
    let inputs = exit.inputs(n);
    cg_exit(&mut exit, inputs);
    let inputs = forwarded.inputs(n);
    cg_forwarded(&mut forwarded, inputs);
    let inputs = bare.inputs(n);
    cg_bare(&mut bare, inputs);
    println!("ran {n} inputs through each setup");
}

// The black_box of a different string in each keeps the compiler from merging the three.

#[inline(never)]
fn cg_exit(r: &mut Run, inputs: Vec<Input>) {
    std::hint::black_box("exit");
    r.drive(inputs);
}

#[inline(never)]
fn cg_forwarded(r: &mut Run, inputs: Vec<Input>) {
    std::hint::black_box("forwarded");
    r.drive(inputs);
}

#[inline(never)]
fn cg_bare(r: &mut Run, inputs: Vec<Input>) {
    std::hint::black_box("bare");
    r.drive(inputs);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = bench
}

fn main() {
    if let Some(n) = std::env::var("EDGECASCADE_OVERHEAD_CALLGRIND").ok().and_then(|s| s.parse().ok()) {
        callgrind(n);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
