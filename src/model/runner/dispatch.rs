//! Which kernel runs each int8 product, chosen by measurement: for every product shape, each
//! kernel this CPU can run (`edgecascade_kernels`' matrix or depthwise kernels, and tract-linalg's
//! own int8 matrix kernel) is timed on the layer's real shape, and the fastest is kept. Every
//! kernel gives the same int8 outputs (tested), so the choice changes speed only. The choices
//! are cached per model file and CPU (a JSON file in the cache folder), so a board pays the
//! tuning once; `--int8-kernel` forces kernels instead (for tests and A/B runs).

use super::cpu;
use super::ops::{Engine, Kind, ProductSpec, TractGemm};
use edgecascade_kernels::{Depthwise, DwKernel, Gemm, GemmKernel};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// A matrix kernel: one of `edgecascade_kernels`' or tract-linalg's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatrixKernel {
    Own(GemmKernel),
    Tract,
}

impl MatrixKernel {
    pub fn name(self) -> &'static str {
        match self {
            MatrixKernel::Own(k) => k.name(),
            MatrixKernel::Tract => "tract",
        }
    }

    fn from_name(name: &str) -> Option<MatrixKernel> {
        if name == "tract" {
            return Some(MatrixKernel::Tract);
        }
        GemmKernel::from_name(name).map(MatrixKernel::Own)
    }

    fn available(self) -> bool {
        match self {
            MatrixKernel::Own(k) => k.available(),
            MatrixKernel::Tract => true,
        }
    }

    /// The matrix kernels this CPU can run, tract's last.
    fn candidates() -> Vec<MatrixKernel> {
        GemmKernel::available_here().into_iter().map(MatrixKernel::Own).chain([MatrixKernel::Tract]).collect()
    }
}

/// Kernels forced by `--int8-kernel` instead of measured: per kind of product, one kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForcedKernels {
    pub matrix: Option<MatrixKernel>,
    pub depthwise: Option<DwKernel>,
}

/// A bad `--int8-kernel` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelNameError {
    #[error(
        "unknown int8 kernel '{0}' (matrix kernels: {matrix}; depthwise kernels: {dw}; or KIND=NAME with KIND matrix or depthwise)",
        matrix = matrix_names(), dw = dw_names()
    )]
    Unknown(String),
    #[error("the int8 kernel '{0}' cannot run on this CPU ({here})", here = cpu::int8_kernels())]
    Unavailable(String),
}

fn matrix_names() -> String {
    GemmKernel::ALL.iter().map(|k| k.name()).chain(["tract"]).collect::<Vec<_>>().join(", ")
}

fn dw_names() -> String {
    DwKernel::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}

impl ForcedKernels {
    /// Parses `NAME[,NAME...]`: a bare name forces every kind of product that has a kernel of
    /// that name (`avx2`: both; `tract`: the matrix products; `avx512`: the depthwise ones);
    /// `matrix=NAME` or `depthwise=NAME` forces one kind. Every kernel named must run here.
    pub fn parse(spec: &str) -> Result<ForcedKernels, KernelNameError> {
        let mut forced = ForcedKernels::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (kind, name) = match item.split_once('=') {
                Some((k, n)) => (Some(k.trim()), n.trim()),
                None => (None, item),
            };
            let unknown = || KernelNameError::Unknown(item.to_owned());
            let (m, d) = match kind {
                None => (MatrixKernel::from_name(name), DwKernel::from_name(name)),
                Some("matrix") => (Some(MatrixKernel::from_name(name).ok_or_else(unknown)?), None),
                Some("depthwise") => (None, Some(DwKernel::from_name(name).ok_or_else(unknown)?)),
                Some(_) => return Err(unknown()),
            };
            if m.is_none() && d.is_none() {
                return Err(unknown());
            }
            if m.is_some_and(|k| !k.available()) || d.is_some_and(|k| !k.available()) {
                return Err(KernelNameError::Unavailable(name.to_owned()));
            }
            forced.matrix = m.or(forced.matrix);
            forced.depthwise = d.or(forced.depthwise);
        }
        Ok(forced)
    }
}

/// How kernels are chosen at load.
#[derive(Debug, Clone, Default)]
pub struct KernelOptions {
    pub forced: ForcedKernels,
    /// Where measured choices are cached (one file per model and CPU); none: measure at every
    /// load.
    pub cache_dir: Option<PathBuf>,
}

/// The cache file: what was measured for one model file on one CPU.
#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    cpu: String,
    model_sha256: String,
    /// Per product shape: the kernel kept, and each candidate's time (ms).
    choices: BTreeMap<String, Measured>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Measured {
    kernel: String,
    ms: BTreeMap<String, f64>,
    /// The kept kernel's time with the product split between N threads, by N.
    #[serde(default)]
    split_ms: BTreeMap<String, f64>,
}

const CACHE_VERSION: u32 = 2;

/// How the kernels of a model were chosen, for the log.
#[derive(Debug, Default)]
pub struct Choices {
    /// Per kind of product and kernel: how many products run on it.
    pub count: BTreeMap<(String, String), usize>,
    pub measured: usize,
    pub cached: usize,
    pub forced: usize,
    /// Products split between threads (measured faster split).
    pub split: usize,
    pub tuning_ms: f64,
}

impl Choices {
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self.count.iter().map(|((kind, k), n)| format!("{kind} {k} x{n}")).collect();
        format!(
            "{} ({} shapes measured in {:.0} ms, {} from the cache, {} forced; {} split between threads)",
            kinds.join(", "),
            self.measured,
            self.tuning_ms,
            self.cached,
            self.forced,
            self.split
        )
    }
}

/// A product's engine, and whether to split it between threads (measured faster that way, or,
/// for a forced kernel, large enough).
pub type Chosen = (Engine, bool);

/// Chooses and builds the kernel of every product of a model (`model_sha256`: its file's
/// checksum, the cache key with the CPU).
pub fn choose(
    specs: &[Arc<ProductSpec>],
    model_sha256: &str,
    opts: &KernelOptions,
) -> Result<(Vec<Chosen>, Choices), String> {
    let fingerprint = cpu::fingerprint();
    let file = opts.cache_dir.as_ref().map(|d| cache_file(d, model_sha256, &fingerprint));
    let mut cache = file.as_deref().map(|f| read_cache(f, model_sha256, &fingerprint)).unwrap_or_default();
    let mut choices = Choices::default();
    let started = Instant::now();
    let mut dirty = false;
    let mut engines = Vec::with_capacity(specs.len());
    // Shapes measured in this load (several products share one).
    let mut known: HashMap<String, String> = HashMap::new();
    let threads = super::ops::pool_threads();
    for spec in specs {
        let sig = spec.signature();
        let forced = match spec.kind {
            Kind::Depthwise => opts.forced.depthwise.map(|k| k.name()),
            Kind::Matmul | Kind::Im2col => opts.forced.matrix.map(|k| k.name()),
        };
        let engine = if let Some(name) = forced {
            choices.forced += 1;
            build(spec, name)?
        } else if let Some(e) =
            known.get(&sig).or_else(|| cache.get(&sig).map(|m| &m.kernel)).and_then(|name| build(spec, name).ok())
        {
            if !known.contains_key(&sig) {
                choices.cached += 1;
                known.insert(sig.clone(), e.name().to_owned());
            }
            e
        } else {
            let (e, measured) = measure(spec)?;
            log::debug!("int8 kernels: {sig}: {} ({:?} ms)", e.name(), measured.ms);
            // Measured: also known to this load under the signature, with its times.
            choices.measured += 1;
            known.insert(sig.clone(), e.name().to_owned());
            cache.insert(sig.clone(), measured);
            dirty = true;
            e
        };
        let kind = match spec.kind {
            Kind::Depthwise => "depthwise",
            Kind::Matmul => "matrix",
            Kind::Im2col => "im2col",
        };
        *choices.count.entry((kind.to_owned(), engine.name().to_owned())).or_default() += 1;
        // With several threads: split the product between them only where that measured faster.
        let split = match (forced, cache.get_mut(&sig)) {
            _ if threads < 2 => false,
            (None, Some(m)) => {
                let single = m.ms.get(engine.name()).copied().unwrap_or(f64::MAX);
                let key = threads.to_string();
                let split_ms = match m.split_ms.get(&key) {
                    Some(&t) => t,
                    None => {
                        let t = time_split(spec, &engine)?;
                        m.split_ms.insert(key, t);
                        dirty = true;
                        t
                    }
                };
                split_ms < 0.9 * single
            }
            _ => spec.macs() >= super::ops::SPLIT_MACS,
        };
        if split {
            choices.split += 1;
        }
        engines.push((engine, split));
    }
    choices.tuning_ms = started.elapsed().as_secs_f64() * 1e3;
    if let (Some(file), true) = (&file, dirty) {
        let content = CacheFile {
            version: CACHE_VERSION,
            cpu: fingerprint,
            model_sha256: model_sha256.to_owned(),
            choices: cache.into_iter().collect(),
        };
        if let Err(e) = write_cache(file, &content) {
            log::warn!("could not write the int8 kernel choices to {}: {e}", file.display());
        }
    }
    Ok((engines, choices))
}

/// The kernels this CPU can run for a kind of product, by name.
pub(crate) fn candidates(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Depthwise => DwKernel::available_here().into_iter().map(|k| k.name()).collect(),
        Kind::Matmul | Kind::Im2col => MatrixKernel::candidates().into_iter().map(|k| k.name()).collect(),
    }
}

/// The kernels worth timing for a kind of product: every candidate but the portable one, which
/// is there for CPUs with nothing better (and, on a CPU that has, never wins: timing it only
/// slows the first load, most on a board).
fn contenders(kind: Kind) -> Vec<&'static str> {
    let all = candidates(kind);
    let simd = all.iter().any(|&k| k != "plain" && k != "tract");
    all.into_iter().filter(|&k| !(simd && k == "plain")).collect()
}

/// The product's engine on the kernel named `name` (one of its kind's).
pub(crate) fn build(spec: &ProductSpec, name: &str) -> Result<Engine, String> {
    match spec.kind {
        Kind::Depthwise => {
            let k = DwKernel::from_name(name).ok_or_else(|| format!("no depthwise kernel '{name}'"))?;
            let p = &spec.params;
            Depthwise::new(k, spec.geo, p.weights.clone(), p.bias.clone(), p.x0, p.requant.clone())
                .map(Engine::Depthwise)
                .map_err(|e| e.to_string())
        }
        Kind::Matmul | Kind::Im2col => match MatrixKernel::from_name(name) {
            Some(MatrixKernel::Tract) => TractGemm::new(spec).map(Engine::Tract),
            Some(MatrixKernel::Own(k)) => {
                let p = &spec.params;
                Gemm::new(k, &p.weights, spec.m(), spec.k(), p.bias.clone(), p.requant.clone())
                    .map(Engine::Gemm)
                    .map_err(|e| e.to_string())
            }
            None => Err(format!("no matrix kernel '{name}'")),
        },
    }
}

/// Deterministic pseudo-random int8 input of the product's shape (one batch item), and room
/// for its output.
fn test_input(spec: &ProductSpec) -> (Vec<i8>, Vec<i8>) {
    let len = match spec.kind {
        Kind::Depthwise => spec.geo.cin * spec.geo.h * spec.geo.w,
        Kind::Matmul | Kind::Im2col => spec.k() * spec.n,
    };
    let mut s = 0x9E37_79B9u32;
    let x = (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as i8
        })
        .collect();
    (x, vec![0i8; spec.out_shape[1..].iter().product()])
}

/// The best time of `run` in ms, after a warm-up: at least 3 runs, more while they are short
/// (up to 2 ms in all, 20 runs at most).
fn best_ms(mut run: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    run()?;
    let mut best = f64::MAX;
    let budget = Instant::now();
    for i in 0.. {
        let t = Instant::now();
        run()?;
        best = best.min(t.elapsed().as_secs_f64());
        if i >= 2 && (budget.elapsed().as_secs_f64() > 2e-3 || i >= 20) {
            break;
        }
    }
    Ok((best * 1e6).round() / 1e3)
}

/// Times every candidate kernel on the product's shape (single-threaded, on deterministic
/// pseudo-random int8 input) and returns the fastest one's engine with every candidate's time.
fn measure(spec: &ProductSpec) -> Result<(Engine, Measured), String> {
    let (x, mut out) = test_input(spec);
    let mut best: Option<(f64, Engine)> = None;
    let mut ms = BTreeMap::new();
    for name in contenders(spec.kind) {
        let engine = match build(spec, name) {
            Ok(e) => e,
            Err(e) => {
                log::debug!("int8 kernels: {name} cannot run {}: {e}", spec.signature());
                continue;
            }
        };
        let t = best_ms(|| engine.run_single(&x, spec.n, &mut out).map_err(|e| format!("{e:#}")))?;
        ms.insert(name.to_owned(), t);
        if best.as_ref().is_none_or(|(b, _)| t < *b) {
            best = Some((t, engine));
        }
    }
    let (_, engine) = best.ok_or_else(|| format!("no int8 kernel can run {}", spec.signature()))?;
    let kernel = engine.name().to_owned();
    Ok((engine, Measured { kernel, ms, split_ms: BTreeMap::new() }))
}

/// The engine's time on the product split between tract's threads, run from inside its pool as
/// inferences are.
fn time_split(spec: &ProductSpec, engine: &Engine) -> Result<f64, String> {
    let (x, mut out) = test_input(spec);
    super::ops::in_pool(|| best_ms(|| engine.run(&x, spec.n, &mut out, true).map_err(|e| format!("{e:#}"))))
}

fn cache_file(dir: &Path, model_sha256: &str, fingerprint: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let cpu: String = Sha256::digest(fingerprint.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
    dir.join(format!("kernels-{}-{cpu}.json", &model_sha256[..16.min(model_sha256.len())]))
}

/// The cached choices, or none (with a warning naming the file) when the file is unreadable,
/// corrupt, or made for another model, CPU or version of the kernels.
fn read_cache(file: &Path, model_sha256: &str, fingerprint: &str) -> HashMap<String, Measured> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            log::warn!("ignoring the int8 kernel cache {}: {e}", file.display());
            return HashMap::new();
        }
    };
    match serde_json::from_str::<CacheFile>(&text) {
        Ok(c) if c.version == CACHE_VERSION && c.cpu == fingerprint && c.model_sha256 == model_sha256 => {
            c.choices.into_iter().collect()
        }
        Ok(_) => {
            log::warn!(
                "ignoring the int8 kernel cache {}: it was made for another model, CPU or kernel version (measuring again)",
                file.display()
            );
            HashMap::new()
        }
        Err(e) => {
            log::warn!("ignoring the corrupt int8 kernel cache {}: {e} (measuring again)", file.display());
            HashMap::new()
        }
    }
}

fn write_cache(file: &Path, content: &CacheFile) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, content)?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}
