//! Every kernel this CPU can run, on the shapes of EfficientNet-Lite0's int8 layers: time per
//! layer and multiply-accumulates per ns, kernels side by side (best of rounds).
//!
//! `cargo run --release --manifest-path kernels/Cargo.toml --example kernel_bench [-- --rounds N]`
use edgecascade_kernels::*;
use std::time::Instant;

fn rnd(seed: u32) -> impl FnMut() -> i8 {
    let mut s = seed;
    move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s >> 8) as i8
    }
}

/// Best time of `rounds` rounds of about 2 ms each, in seconds per call.
fn time(rounds: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    f();
    let reps = ((2e-3 / t.elapsed().as_secs_f64().max(1e-7)) as usize).clamp(1, 1000);
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = args.iter().position(|a| a == "--rounds").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(5);
    let mut r = rnd(99);
    println!("matrix products (m x k x n): ms per call (MACs per ns) for each kernel");
    let gk = GemmKernel::available_here();
    let mut totals = vec![0.0; gk.len()];
    for (m, k, n) in [
        (32usize, 27usize, 12544usize),
        (16, 32, 12544),
        (96, 16, 12544),
        (24, 96, 3136),
        (144, 24, 3136),
        (40, 144, 784),
        (240, 40, 784),
        (80, 240, 196),
        (480, 80, 196),
        (112, 480, 196),
        (672, 112, 196),
        (192, 672, 49),
        (1152, 192, 49),
        (320, 1152, 49),
        (1280, 320, 49),
        (1000, 1280, 1),
    ] {
        let w: Vec<i8> = (0..m * k).map(|_| r()).collect();
        let x: Vec<i8> = (0..k * n).map(|_| r()).collect();
        let rq = Requant::new(&vec![1e-4; m], 1.0, 0, f32::NEG_INFINITY, f32::INFINITY);
        let mut out = vec![0i8; m * n];
        let mut line = format!("{m:5} x {k:5} x {n:5}:");
        for (i, &kernel) in gk.iter().enumerate() {
            let g = Gemm::new(kernel, &w, m, k, vec![7; m], rq.clone()).unwrap();
            let s = time(rounds, || g.run(&x, n, &mut out));
            totals[i] += s;
            line += &format!("  {} {:.3} ({:.1})", kernel.name(), s * 1e3, (m * k * n) as f64 / s / 1e9);
        }
        println!("{line}");
    }
    let sum: Vec<String> = gk.iter().zip(&totals).map(|(k, t)| format!("{} {:.2} ms", k.name(), t * 1e3)).collect();
    println!("sum over these layers: {}", sum.join(", "));

    println!("\ndepthwise (channels, plane, kernel, stride): ms per call (MACs per ns) for each kernel");
    let dk = DwKernel::available_here();
    let mut totals = vec![0.0; dk.len()];
    for (c, h, k, s, pad) in [
        (32usize, 112usize, 3usize, 1usize, 1usize),
        (96, 112, 3, 2, 0),
        (144, 56, 3, 1, 1),
        (144, 56, 5, 2, 0),
        (240, 28, 5, 1, 2),
        (240, 28, 3, 2, 0),
        (480, 14, 3, 1, 1),
        (480, 14, 5, 1, 2),
        (672, 14, 5, 1, 2),
        (672, 14, 5, 2, 0),
        (1152, 7, 5, 1, 2),
        (1152, 7, 3, 1, 1),
    ] {
        // pad 0 with stride 2 stands for TensorFlow's "same" padding there: one row and
        // column after the plane only (the kernel pads below and right up to what it reads).
        let oh = if pad == 0 { (h + 1 - k) / s + 1 } else { (h + 2 * pad - k) / s + 1 };
        let g = Geometry { cin: c, h, w: h, kh: k, kw: k, sh: s, sw: s, pt: pad, pl: pad, oh, ow: oh };
        let x: Vec<i8> = (0..c * h * h).map(|_| r()).collect();
        let w: Vec<i8> = (0..c * k * k).map(|_| r()).collect();
        let rq = Requant::new(&vec![1e-3; c], 1.0, 0, f32::NEG_INFINITY, f32::INFINITY);
        let mut out = vec![0i8; c * oh * oh];
        let mut line = format!("{c:5} x {h:3}^2 k{k} s{s}:");
        for (i, &kernel) in dk.iter().enumerate() {
            let d = Depthwise::new(kernel, g, w.clone(), vec![100; c], -3, rq.clone()).unwrap();
            let t = time(rounds, || d.run(&x, &mut out));
            totals[i] += t;
            line += &format!("  {} {:.3} ({:.2})", kernel.name(), t * 1e3, (c * oh * oh * k * k) as f64 / t / 1e9);
        }
        println!("{line}");
    }
    let sum: Vec<String> = dk.iter().zip(&totals).map(|(k, t)| format!("{} {:.2} ms", k.name(), t * 1e3)).collect();
    println!("sum over these layers: {}", sum.join(", "));
}
