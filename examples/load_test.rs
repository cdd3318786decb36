//! Load test and batching benchmark for the host: N simulated devices on loopback each send M
//! requests over the framed TCP link or over OIP v2 to one `edgecascade host` process, with
//! dynamic batching on or off. Every answer is checked (the right request, the right class,
//! none lost, none twice, none degraded); the host's memory is read from /proc. Prints a table
//! of throughput and latency per configuration. Stops by itself.
//!
//! ```sh
//! cargo run --example load_test -- --devices 1,4,16,64 --protocol tcp,oip --batching off,on,always
//! cargo run --example load_test -- --devices 64 --requests 20 --protocol tcp,oip --batching on   # the load test
//! cargo run --example load_test -- --attach 127.0.0.1:7878,127.0.0.1:8000 --model M   # a host already running
//! ```
//!
//! `--attach TCP,HTTP` drives a host already running (its framed TCP link and OIP endpoint, its
//! `--model` the one given here) instead of starting hosts: scrape its `/metrics` before and
//! after to see the counters move.

use anyhow::{bail, Context, Result};
use edgecascade::link::{Encoding, LinkAddr};
use edgecascade::model::manifest::Manifest;
use edgecascade::offload::oip::OipRemote;
use edgecascade::offload::{LinkReport, Remote, RemoteConfig, RemoteStage};
use edgecascade::run::spans::Spans;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Opts {
    devices: Vec<usize>,
    /// Requests per device; 0: enough for about `total` requests per configuration.
    requests: usize,
    total: usize,
    protocols: Vec<String>,
    /// "off", "on" (sizes that pay) or "always" (`--batch-always`).
    batching: Vec<String>,
    batch_max: usize,
    batch_wait_ms: f64,
    model: PathBuf,
    images: PathBuf,
    /// A running host's framed TCP and OIP addresses, instead of starting hosts.
    attach: Option<(String, String)>,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        devices: vec![1, 4, 16, 64],
        requests: 0,
        total: 64,
        protocols: vec!["tcp".into(), "oip".into()],
        batching: vec!["off".into(), "on".into()],
        batch_max: 16,
        batch_wait_ms: 5.0,
        model: "models/efficientnet-lite2-fp32.toml".into(),
        images: "photos".into(),
        attach: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).with_context(|| format!("{} needs a value", args[i]))?;
        match args[i].as_str() {
            "--devices" => o.devices = v.split(',').map(|d| d.parse()).collect::<Result<_, _>>()?,
            "--requests" => o.requests = v.parse()?,
            "--total" => o.total = v.parse()?,
            "--protocol" => o.protocols = v.split(',').map(str::to_owned).collect(),
            "--batching" => {
                o.batching = v.split(',').map(str::to_owned).collect();
                if let Some(b) = o.batching.iter().find(|b| !["off", "on", "always"].contains(&b.as_str())) {
                    bail!("--batching takes off, on or always (or several, comma-separated), not {b}");
                }
            }
            "--batch-max" => o.batch_max = v.parse()?,
            "--batch-wait-ms" => o.batch_wait_ms = v.parse()?,
            "--model" => o.model = v.into(),
            "--images" => o.images = v.into(),
            "--attach" => {
                let (tcp, http) = v.split_once(',').context("--attach takes TCP_ADDR,HTTP_ADDR")?;
                o.attach = Some((tcp.to_owned(), http.to_owned()));
            }
            other => bail!("unknown argument {other}"),
        }
        i += 2;
    }
    Ok(o)
}

/// The host process, killed on drop (none when attached to a running host).
struct HostProc {
    child: Option<Child>,
    tcp: String,
    http: String,
}

impl HostProc {
    fn start(model: &Path, batch: Option<(usize, f64, bool)>) -> Result<HostProc> {
        let exe = std::env::current_exe()?;
        let bin = exe.parent().and_then(Path::parent).context("no target folder")?.join("edgecascade");
        let mut cmd = Command::new(&bin);
        cmd.args(["host", "--model"]).arg(model);
        cmd.args(["--listen", "tcp:127.0.0.1:0", "--oip-listen", "127.0.0.1:0", "--max-devices", "256"]);
        if let Some((n, wait, always)) = batch {
            cmd.args(["--batch-max", &n.to_string(), "--batch-wait-ms", &wait.to_string()]);
            if always {
                cmd.arg("--batch-always");
            }
        }
        let mut child = cmd
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {} (build it: cargo build)", bin.display()))?;
        let mut out = BufReader::new(child.stdout.take().context("stdout")?);
        let (mut tcp, mut http) = (String::new(), String::new());
        for _ in 0..2 {
            let mut line = String::new();
            out.read_line(&mut line)?;
            if let Some(rest) = line.split("http://").nth(1) {
                http = rest.split('/').next().unwrap_or_default().to_owned();
            } else if let Some(rest) = line.trim().split(" on tcp:").nth(1) {
                tcp = rest.to_owned();
            } else {
                bail!("the host did not start: {line:?}");
            }
        }
        Ok(HostProc { child: Some(child), tcp, http })
    }

    /// Resident memory now and at its peak, in MB.
    fn memory(&self) -> (f64, f64) {
        let Some(child) = &self.child else { return (f64::NAN, f64::NAN) };
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Photo {
    name: String,
    bytes: Vec<u8>,
    img: edgecascade::model::Decoded,
    class: usize,
}

fn remote(
    protocol: &str,
    host: &HostProc,
    model: &str,
    spec: &edgecascade::model::manifest::InputSpec,
) -> Box<dyn RemoteStage> {
    let addr: LinkAddr = match protocol {
        "oip" => format!("oip+http://{}/v2/models/{model}", host.http),
        _ => format!("tcp:{}", host.tcp),
    }
    .parse()
    .expect("a link");
    let mut cfg = RemoteConfig::new(addr.clone());
    cfg.encodings = vec![Encoding::CropJpeg];
    cfg.reply_timeout = Duration::from_secs(120);
    cfg.connect_timeout = Duration::from_secs(10);
    cfg.tries = 1;
    cfg.tensor_spec = Some(spec.clone());
    match addr {
        LinkAddr::Oip { .. } => Box::new(OipRemote::new(cfg).expect("an OIP link")),
        _ => Box::new(Remote::new(cfg)),
    }
}

struct Outcome {
    latencies: Vec<Duration>,
    wall: Duration,
    wrong: usize,
    failed: Vec<String>,
}

/// `devices` threads, each with its own connection, each sending `per` requests.
fn drive(
    protocol: &str,
    host: &HostProc,
    model: &str,
    spec: &edgecascade::model::manifest::InputSpec,
    photos: &Arc<Vec<Photo>>,
    devices: usize,
    per: usize,
) -> Outcome {
    let start = Instant::now();
    let threads: Vec<_> = (0..devices)
        .map(|d| {
            let mut r = remote(protocol, host, model, spec);
            let photos = photos.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(per);
                let (mut wrong, mut failed) = (0, Vec::new());
                if let Err(e) = r.connect() {
                    failed.push(format!("device {d}: {e}"));
                    return (lat, wrong, failed);
                }
                for k in 0..per {
                    let p = &photos[(d + k) % photos.len()];
                    let t = Instant::now();
                    let mut report = LinkReport::default();
                    match r.infer(&p.bytes, &p.img, &mut Spans::default(), 1, &mut report) {
                        Ok(logits) => {
                            lat.push(t.elapsed());
                            if edgecascade::core::policy::argmax(&logits) != p.class {
                                wrong += 1;
                            }
                        }
                        Err(e) => failed.push(format!("device {d} request {k} ({}): {e}", p.name)),
                    }
                }
                (lat, wrong, failed)
            })
        })
        .collect();
    let mut out = Outcome { latencies: Vec::new(), wall: Duration::ZERO, wrong: 0, failed: Vec::new() };
    for t in threads {
        let (lat, wrong, failed) = t.join().expect("a device thread");
        out.latencies.extend(lat);
        out.wrong += wrong;
        out.failed.extend(failed);
    }
    out.wall = start.elapsed();
    out
}

fn pct(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() -> Result<()> {
    let o = parse_args()?;
    let manifest = Manifest::load(&o.model)?;
    let spec = manifest.image().unwrap().clone();
    // The reference answers: the model run here, alone.
    let model = edgecascade::model::Model::load(&o.model, &Default::default())?;
    let mut photos = Vec::new();
    for path in edgecascade::tune::dataset::list_images(&o.images)? {
        let bytes = std::fs::read(&path)?;
        let img = edgecascade::model::preprocess::decode(&bytes)?;
        // The TCP link sends the crop as JPEG, which the host decodes: reference on that, so
        // both protocols are held to the answer for what they send (OIP sends exact tensors).
        let crop = edgecascade::offload::payload::crop_jpeg(&img, spec.size, spec.crop_fraction, 90)
            .map_err(anyhow::Error::msg)?;
        let as_sent = edgecascade::model::preprocess::normalise(
            &edgecascade::model::preprocess::decode(&crop)?,
            spec.mean,
            spec.std,
            spec.layout,
        );
        let class_of = |t: &[f32]| -> Result<usize> {
            Ok(edgecascade::core::policy::argmax(&model.as_logits(model.runner.run(t)?)))
        };
        let class_tcp = class_of(&as_sent)?;
        let class = class_of(&edgecascade::model::preprocess::to_tensor(&img, &spec))?;
        let name = path.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
        if class != class_tcp {
            eprintln!("note: {name}: the JPEG crop changes the class ({class} -> {class_tcp}); left out");
            continue;
        }
        photos.push(Photo { name, bytes, img: edgecascade::model::Decoded::Image(img), class });
    }
    drop(model);
    if photos.is_empty() {
        bail!("no usable images in {}", o.images.display());
    }
    let photos = Arc::new(photos);
    println!(
        "# load_test: host model {} ({}), {} images from {}, batch max {} wait {} ms; {} cores; {}",
        manifest.name,
        o.model.display(),
        photos.len(),
        o.images.display(),
        o.batch_max,
        o.batch_wait_ms,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    println!("| protocol | batching | devices | requests | answered | wrong | failed | req/s | p50 ms | p99 ms | mean batch | host RSS MB (peak) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut problems = 0;
    // Both hosts run at once and each configuration runs against one then the other, back to
    // back: this machine's speed drifts within minutes, so compare rows next to each other.
    let hosts: Vec<(&str, HostProc)> = match &o.attach {
        Some((tcp, http)) => vec![("attached", HostProc { child: None, tcp: tcp.clone(), http: http.clone() })],
        None => o
            .batching
            .iter()
            .map(|b| {
                let batch = (b != "off").then_some((o.batch_max, o.batch_wait_ms, b == "always"));
                Ok((b.as_str(), HostProc::start(&o.model, batch)?))
            })
            .collect::<Result<_>>()?,
    };
    for protocol in &o.protocols {
        for &devices in &o.devices {
            for (batching, host) in &hosts {
                let per = if o.requests > 0 { o.requests } else { (o.total / devices).max(2) };
                let counts_before = stats(host, &manifest.name);
                let mut out = drive(protocol, host, &manifest.name, &spec, &photos, devices, per);
                let counts_after = stats(host, &manifest.name);
                out.latencies.sort();
                let answered = out.latencies.len();
                let mean_batch = match (counts_before, counts_after) {
                    (Some((i0, e0)), Some((i1, e1))) if e1 > e0 => (i1 - i0) as f64 / (e1 - e0) as f64,
                    _ => f64::NAN,
                };
                let (_, peak) = host.memory();
                println!(
                    "| {protocol} | {batching} | {devices} | {} | {answered} | {} | {} | {:.1} | {:.0} | {:.0} | {mean_batch:.1} | {peak:.0} |",
                    devices * per,
                    out.wrong,
                    out.failed.len(),
                    answered as f64 / out.wall.as_secs_f64(),
                    pct(&out.latencies, 0.5),
                    pct(&out.latencies, 0.99),
                );
                for f in out.failed.iter().take(5) {
                    eprintln!("  failed: {f}");
                }
                if answered != devices * per || out.wrong > 0 || !out.failed.is_empty() {
                    problems += 1;
                }
            }
        }
    }
    if problems > 0 {
        bail!("{problems} configurations lost, failed or answered wrongly");
    }
    println!("every request answered once, with its own class; no failures");
    Ok(())
}

/// (inferences, executions) from the host's stats endpoint.
fn stats(host: &HostProc, model: &str) -> Option<(u64, u64)> {
    let s = std::net::TcpStream::connect(&host.http).ok()?;
    let mut c = edgecascade::offload::oip::HttpConn::new(Box::new(s), &host.http);
    c.send("GET", &format!("/v2/models/{model}/stats"), &[], &[]).ok()?;
    let r = c.receive(Duration::from_secs(10)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    let m = &v["model_stats"][0];
    Some((m["inference_count"].as_u64()?, m["execution_count"].as_u64()?))
}
