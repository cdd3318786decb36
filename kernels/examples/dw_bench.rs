//! The depthwise kernel on Lite0's depthwise shapes, timed per shape in ms and MACs per ns:
//! `cargo run --release --manifest-path kernels/Cargo.toml --example dw_bench`.
use edgecascade_kernels::*;
use std::time::Instant;
fn main() {
    for (c, h, k, s, pad) in
        [(144usize, 56usize, 3usize, 1usize, 1usize), (96, 112, 3, 2, 0), (1152, 7, 5, 1, 2), (32, 112, 3, 1, 1)]
    {
        // pad 0 with stride 2 stands for TensorFlow's "same" padding there: one row and column
        // after the plane only (the kernel pads below and right up to what the output reads).
        let oh = if pad == 0 { (h + 1 - k) / s + 1 } else { (h + 2 * pad - k) / s + 1 };
        let g = Geometry { cin: c, h, w: h, kh: k, kw: k, sh: s, sw: s, pt: pad, pl: pad, oh, ow: oh };
        let x: Vec<i8> = (0..c * h * h).map(|i| (i * 7 % 251) as i8).collect();
        let w: Vec<i8> = (0..c * k * k).map(|i| (i * 13 % 255) as i8).collect();
        let bias = vec![100i32; c];
        let rq = Requant::new(&vec![1e-3; c], 1.0, 0, f32::NEG_INFINITY, f32::INFINITY);
        let mut out = vec![0i8; c * oh * oh];
        let n = 50;
        let t = Instant::now();
        for _ in 0..n {
            depthwise(&g, &w, &bias, -3, &rq, &x, &mut out);
        }
        let el = t.elapsed().as_secs_f64() / n as f64;
        let macs = (c * oh * oh * k * k) as f64;
        println!("c={c} h={h} k={k} s={s}: {:.3} ms, {:.2} MACs/ns", el * 1e3, macs / el / 1e9);
    }
}
