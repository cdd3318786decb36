//! Link benchmark (prints tables; not a test). Three measurements:
//!
//! 1. per payload encoding, over a folder of images: payload bytes, request frame bytes on the
//!    wire, the protocol's overhead (frame minus payload), reply bytes, and, when the folder
//!    has a labels.csv, the host model's top-1 on what it receives;
//! 2. round-trip time of Ping/Pong and of inference requests over TCP on loopback and over a
//!    PTY pair, minus the host's own time (as it reports it);
//! 3. nothing else: no pass/fail, the figures go into BENCHMARKS.md.
//!
//! `cargo run --example link_bench -- [--data DIR] [--limit N] [--rounds R]`

use edgecascade::host::Host;
use edgecascade::link::{self, Encoding, FrameReader, InferRequest, Message, Stream};
use edgecascade::model::preprocess;
use edgecascade::model::Model;
use edgecascade::offload::payload::encode_payload;
use edgecascade::tune::dataset;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let data = PathBuf::from(arg("--data").unwrap_or_else(|| "photos".into()));
    let limit: usize = arg("--limit").map_or(Ok(usize::MAX), |s| s.parse())?;
    let rounds: usize = arg("--rounds").map_or(Ok(50), |s| s.parse())?;

    let host = Arc::new(Host::new(Model::load(
        std::path::Path::new("models/efficientnet-lite2-fp32.toml"),
        &Default::default(),
    )?));
    let welcome = host.welcome();
    let labeled = data.join("labels.csv").exists();
    let items: Vec<(PathBuf, Option<usize>)> = if labeled {
        dataset::read_labels(&data, 1000)?.into_iter().map(|l| (l.path, Some(l.label))).collect()
    } else {
        dataset::collect_inputs(std::slice::from_ref(&data))?.into_iter().map(|p| (p, None)).collect()
    };
    let items: Vec<_> = items.into_iter().take(limit).collect();
    println!("# link_bench on {} images of {} (host model {})", items.len(), data.display(), welcome.model);
    println!();
    println!("| encoding | payload bytes (mean) | request frame bytes (mean) | overhead bytes (mean) | overhead % | reply bytes | s at 921600 baud | host top-1 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let encodings =
        [(Encoding::Original, 90u8), (Encoding::CropJpeg, 90), (Encoding::CropJpeg, 75), (Encoding::CropRaw, 0)];
    for (enc, q) in encodings {
        let (mut payload, mut frame, mut reply, mut correct, mut n) = (0usize, 0usize, 0usize, 0usize, 0usize);
        for (path, label) in &items {
            let bytes = std::fs::read(path)?;
            let img = edgecascade::model::Decoded::Image(preprocess::decode(&bytes)?);
            let p = encode_payload(enc, &bytes, &img, &welcome, q).map_err(anyhow::Error::msg)?;
            let req = InferRequest { seq: n as u64, encoding: enc, payload: p, device_probs: None, want_probs: false };
            payload += req.payload.len();
            frame += link::encode(&Message::Infer(req.clone())).len();
            let answer = host.infer(&req).map_err(|(c, m)| anyhow::anyhow!("{c}: {m}"))?;
            reply += link::encode(&Message::Answer(answer.clone())).len();
            if let Some(l) = label {
                correct += (answer.top[0].0 as usize == *l) as usize;
            }
            n += 1;
        }
        let n = n.max(1);
        let name = if enc == Encoding::CropJpeg { format!("{enc} q{q}") } else { enc.to_string() };
        let top1 = if labeled { format!("{:.1}%", 100.0 * correct as f64 / n as f64) } else { "-".into() };
        println!(
            "| {name} | {} | {} | {} | {:.2}% | {} | {:.3} | {top1} |",
            payload / n,
            frame / n,
            (frame - payload) / n,
            100.0 * (frame - payload) as f64 / payload as f64,
            reply / n,
            link::transfer_time(frame / n + reply / n, Some(921_600), Duration::ZERO).as_secs_f64(),
        );
    }

    // Round trips: TCP loopback and a PTY pair, with the host serving in a thread.
    let photo = std::fs::read(&items[0].0)?;
    let img = edgecascade::model::Decoded::Image(preprocess::decode(&photo)?);
    let payload = encode_payload(Encoding::CropJpeg, &photo, &img, &welcome, 90).map_err(anyhow::Error::msg)?;
    let stop = Arc::new(AtomicBool::new(false));
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (h, s) = (host.clone(), stop.clone());
    let tcp_host = std::thread::spawn(move || edgecascade::host::serve_tcp(h, listener, 4, s));
    let tcp: Box<dyn Stream> = link::connect(&format!("tcp:{addr}").parse()?, Duration::from_secs(2))?;
    println!();
    println!("| link | Ping round trip p50 / p95 (ms) | inference round trip minus host time p50 / p95 (ms) | host time p50 (ms) |");
    println!("|---|---:|---:|---:|");
    rtt("TCP loopback", tcp, &payload, rounds)?;
    let (device_end, host_end) = serialport::TTYPort::pair()?;
    let (device_end, mut host_end) = (link::SerialStream::new(device_end)?, link::SerialStream::new(host_end)?);
    Stream::set_read_timeout(&mut host_end, Some(Duration::from_millis(100)))?;
    let (h, s) = (host.clone(), stop.clone());
    let pty_host = std::thread::spawn(move || h.serve(host_end, "pty", &s));
    rtt("PTY pair (unpaced)", Box::new(device_end), &payload, rounds)?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = tcp_host.join();
    let _ = pty_host.join();
    Ok(())
}

fn rtt(name: &str, mut stream: Box<dyn Stream>, payload: &[u8], rounds: usize) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = FrameReader::new(stream, 1 << 20);
    let (mut ping, mut infer, mut host_ms) = (vec![], vec![], vec![]);
    for i in 0..rounds as u64 {
        let t = Instant::now();
        link::write_msg(r.get_mut(), &Message::Ping { nonce: i })?;
        anyhow::ensure!(matches!(r.read_msg()?, Message::Pong { nonce } if nonce == i), "bad pong");
        ping.push(t.elapsed().as_secs_f64() * 1e3);
        let req = InferRequest {
            seq: i,
            encoding: Encoding::CropJpeg,
            payload: payload.to_vec(),
            device_probs: None,
            want_probs: false,
        };
        let t = Instant::now();
        link::write_msg(r.get_mut(), &Message::Infer(req))?;
        let Message::Answer(a) = r.read_msg()? else { anyhow::bail!("no answer") };
        let total = t.elapsed().as_secs_f64() * 1e3;
        infer.push(total - a.host_ms as f64);
        host_ms.push(a.host_ms as f64);
    }
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    println!(
        "| {name} | {:.3} / {:.3} | {:.3} / {:.3} | {:.1} |",
        pct(&mut ping, 0.5),
        pct(&mut ping, 0.95),
        pct(&mut infer, 0.5),
        pct(&mut infer, 0.95),
        pct(&mut host_ms, 0.5)
    );
    Ok(())
}
