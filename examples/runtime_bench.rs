//! The tract side of the runtime benchmark (`scripts/bench_runtimes.py` runs it against ONNX
//! Runtime; see BENCHMARKS.md). One process loads one model with a given number of threads and
//! measures, printing JSON:
//!
//! - the load time (`Model::load`: parse, check, optimise) and the resident memory before and
//!   after it (`/proc/self/status`);
//! - per inference: `model.runner.run` on a preprocessed input (batch 1), after one warm-up;
//! - the device path per input, from the encoded bytes in memory: decode, preprocess, infer,
//!   decide (softmax and the exit decision of a max-softmax stage at 0.5), each timed.
//!
//! One-shot: `cargo run --example runtime_bench -- --model models/efficientnet-lite0-fp32.toml
//! [--threads N] [--data DIR | --inputs LIST] [--limit N] [--iters N]` prints one JSON object.
//!
//! `--profile N`: the time per kind of op (tract's plan evaluated node by node) over N runs
//! of the first input, as JSON; with `--per-node` (or `EDGECASCADE_PROFILE=node`), per node.
//!
//! How the model runs: `--qdq int8|float` (the int8 rewrite, or tract's own path; default
//! `EDGECASCADE_INT8`, else int8), `--int8-kernel NAME` (force kernels, as the CLI's option;
//! default `EDGECASCADE_INT8_KERNEL`), `--kernel-cache DIR` (remember the measured kernel
//! choices there; default: measure at every load).
//!
//! `--serve`: prints `{"event":"ready",..}` after loading, then answers one JSON line per
//! command read on stdin (`infer N`, `path N`, `quit`), so that a driver can interleave rounds
//! of this process with rounds of another runtime's process.

use edgecascade::core::policy::{self, Metric, StagePolicy};
use edgecascade::model::preprocess;
use edgecascade::model::runner::{set_threads, ForcedKernels, KernelOptions, RunnerOptions};
use edgecascade::model::Model;
use edgecascade::tune::dataset;
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How many of the inputs are preprocessed once for the per-inference figures (few, so that
/// the held tensors barely count in the peak memory).
const TENSORS: usize = 4;

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// A field of `/proc/self/status` in kB (`VmRSS`, `VmHWM`); 0 where there is no /proc.
fn status_kb(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

struct Bench {
    model: Model,
    policy: StagePolicy,
    /// The encoded inputs, read once (file I/O is not part of the device path here).
    inputs: Vec<(String, Vec<u8>)>,
    tensors: Vec<Vec<f32>>,
    next_tensor: usize,
    next_input: usize,
}

impl Bench {
    /// `n` inferences (after one warm-up), in ms each.
    fn infer(&mut self, n: usize) -> anyhow::Result<Value> {
        self.model.runner.run(&self.tensors[self.next_tensor % self.tensors.len()])?;
        let mut ms = Vec::with_capacity(n);
        for _ in 0..n {
            self.next_tensor += 1;
            let input = &self.tensors[self.next_tensor % self.tensors.len()];
            let t = Instant::now();
            let out = self.model.runner.run(input)?;
            ms.push(ms_since(t));
            std::hint::black_box(out);
        }
        Ok(json!({ "event": "infer", "ms": ms }))
    }

    /// The device path on `n` inputs, taken in turn from the list.
    fn path(&mut self, n: usize) -> anyhow::Result<Value> {
        let (mut decode, mut prep, mut infer, mut decide, mut total) = (vec![], vec![], vec![], vec![], vec![]);
        let mut answers = vec![];
        for _ in 0..n {
            let (name, bytes) = &self.inputs[self.next_input % self.inputs.len()];
            self.next_input += 1;
            let t0 = Instant::now();
            let img = preprocess::decode(bytes).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            let t1 = Instant::now();
            let input = preprocess::to_tensor(&img, self.model.manifest.image().unwrap());
            let t2 = Instant::now();
            let out = self.model.runner.run(&input)?;
            let t3 = Instant::now();
            let logits = self.model.as_logits(out);
            let probs = policy::softmax(&logits, self.policy.temperature);
            let verdict = policy::decide(&self.policy, &[probs], false);
            let t4 = Instant::now();
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            decode.push(ms(t0, t1));
            prep.push(ms(t1, t2));
            infer.push(ms(t2, t3));
            decide.push(ms(t3, t4));
            total.push(ms(t0, t4));
            answers.push(json!([name, verdict.class, verdict.score, verdict.exit]));
        }
        Ok(json!({
            "event": "path", "decode": decode, "preprocess": prep, "infer": infer, "decide": decide,
            "total": total, "answers": answers,
        }))
    }
}

fn read_inputs(args: &Args) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let paths: Vec<PathBuf> = match &args.inputs {
        Some(list) => {
            std::fs::read_to_string(list)?.lines().filter(|l| !l.trim().is_empty()).map(PathBuf::from).collect()
        }
        None => dataset::collect_inputs(std::slice::from_ref(&args.data))?,
    };
    let paths: Vec<PathBuf> = paths.into_iter().take(args.limit).collect();
    anyhow::ensure!(!paths.is_empty(), "no inputs");
    paths
        .iter()
        .map(|p| {
            let name = p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned());
            Ok((name, std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?))
        })
        .collect()
}

struct Args {
    model: PathBuf,
    threads: usize,
    data: PathBuf,
    inputs: Option<PathBuf>,
    limit: usize,
    iters: usize,
    serve: bool,
    /// `--profile N`: print the time per kind of op over N runs instead.
    profile: Option<usize>,
    per_node: bool,
    runner: RunnerOptions,
}

fn parse_args() -> anyhow::Result<Args> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    Ok(Args {
        model: PathBuf::from(arg("--model").unwrap_or_else(|| "models/efficientnet-lite0-int8.toml".into())),
        threads: arg("--threads").map_or(Ok(1), |s| s.parse())?,
        data: PathBuf::from(arg("--data").unwrap_or_else(|| "photos".into())),
        inputs: arg("--inputs").map(PathBuf::from),
        limit: arg("--limit").map_or(Ok(usize::MAX), |s| s.parse())?,
        iters: arg("--iters").map_or(Ok(20), |s| s.parse())?,
        serve: args.iter().any(|a| a == "--serve"),
        profile: arg("--profile").map(|s| s.parse()).transpose()?,
        per_node: args.iter().any(|a| a == "--per-node")
            || std::env::var("EDGECASCADE_PROFILE").is_ok_and(|v| v == "node"),
        runner: RunnerOptions {
            int8_rewrite: arg("--qdq").or_else(|| std::env::var("EDGECASCADE_INT8").ok()).is_none_or(|v| v != "float"),
            kernels: KernelOptions {
                forced: match arg("--int8-kernel").or_else(|| std::env::var("EDGECASCADE_INT8_KERNEL").ok()) {
                    Some(k) => ForcedKernels::parse(&k)?,
                    None => ForcedKernels::default(),
                },
                cache_dir: arg("--kernel-cache").map(PathBuf::from),
            },
        },
    })
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = parse_args()?;
    let inputs = read_inputs(&args)?;
    let threads = set_threads(args.threads);
    let rss_before_load_kb = status_kb("VmRSS");
    let t = Instant::now();
    let model = Model::load(Path::new(&args.model), &args.runner)?;
    let load_ms = ms_since(t);
    let rss_after_load_kb = status_kb("VmRSS");
    let hwm_after_load_kb = status_kb("VmHWM");
    let tensors = inputs
        .iter()
        .take(TENSORS)
        .map(|(name, bytes)| {
            let img = preprocess::decode(bytes).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            Ok(preprocess::to_tensor(&img, model.manifest.image().unwrap()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ready = json!({
        "event": "ready", "runtime": "tract", "model": model.name(), "threads": threads, "load_ms": load_ms,
        "rss_before_load_kb": rss_before_load_kb, "rss_after_load_kb": rss_after_load_kb,
        "hwm_after_load_kb": hwm_after_load_kb,
        "macs": model.runner.macs(), "inputs": inputs.len(),
    });
    let policy = StagePolicy { metric: Metric::MaxSoftmax, threshold: Some(0.5), temperature: 1.0 };
    let mut bench = Bench { model, policy, inputs, tensors, next_tensor: 0, next_input: 0 };

    if let Some(runs) = args.profile {
        // Time per kind of op (tract's plan, node by node) on the first input.
        let ops = bench.model.runner.profile(&bench.tensors[0], runs, args.per_node)?;
        let total: f64 = ops.iter().map(|o| o.ms).sum();
        println!("{}", json!({ "ready": ready, "profile": ops, "total_ms": total }));
        return Ok(());
    }
    if !args.serve {
        let infer = bench.infer(args.iters)?;
        let n = bench.inputs.len();
        let path = bench.path(n)?;
        let hwm = status_kb("VmHWM");
        println!("{}", json!({ "ready": ready, "infer": infer, "path": path, "hwm_kb": hwm }));
        return Ok(());
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "{ready}")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        let (cmd, n) = (words.next().unwrap_or(""), words.next().and_then(|w| w.parse::<usize>().ok()));
        let reply = match (cmd, n) {
            ("infer", Some(n)) => bench.infer(n)?,
            ("path", Some(n)) => bench.path(n)?,
            ("quit", _) => {
                writeln!(out, "{}", json!({ "event": "bye", "hwm_kb": status_kb("VmHWM") }))?;
                out.flush()?;
                return Ok(());
            }
            _ => json!({ "event": "error", "msg": format!("unknown command '{line}' (infer N, path N, quit)") }),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}
