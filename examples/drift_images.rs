//! The images of the drift demonstration (`scripts/drift_demo.sh`, issue 14): the first N of a
//! labeled folder, each resized (shorter side 256, bicubic) and centre-cropped to 224 as
//! ImageNet-C does, written clean (PNG) and then again degraded, ImageNet-C style, the
//! corruption cycling over the images: Gaussian blur (sigma), JPEG re-compression at a low
//! quality, and Gaussian noise (standard deviation on the 0..1 scale), with a seeded
//! generator. One labels.csv lists the clean images first and the degraded ones after, so a
//! run over the folder drifts halfway through.
//!
//! cargo run --release --example drift_images -- SRC OUT [N] [SEVERITY 1..5] [SEED]

use edgecascade::link::Rng;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};
use image::RgbImage;
use std::path::Path;

/// ImageNet-C's parameters by severity (1..5): blur sigma, JPEG quality, noise std.
const BLUR: [f32; 5] = [1.0, 2.0, 3.0, 4.0, 6.0];
const JPEG: [u8; 5] = [25, 18, 15, 10, 7];
const NOISE: [f64; 5] = [0.08, 0.12, 0.18, 0.26, 0.38];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: drift_images SRC OUT [N] [SEVERITY 1..5] [SEED]".into());
    }
    let (src, out) = (Path::new(&args[0]), Path::new(&args[1]));
    let n: usize = args.get(2).map_or(Ok(200), |s| s.parse())?;
    let severity: usize = args.get(3).map_or(Ok(3), |s| s.parse())?;
    let seed: u64 = args.get(4).map_or(Ok(14), |s| s.parse())?;
    if !(1..=5).contains(&severity) {
        return Err(format!("severity {severity} is not 1..5").into());
    }
    let k = severity - 1;
    std::fs::create_dir_all(out)?;
    let labels = std::fs::read_to_string(src.join("labels.csv"))?;
    let items: Vec<(String, String)> = labels
        .lines()
        .skip(1)
        .filter_map(|l| l.rsplit_once(',').map(|(f, c)| (f.trim().to_owned(), c.trim().to_owned())))
        .take(n)
        .collect();
    let mut rng = Rng::new(seed);
    let (mut clean, mut degraded) = (Vec::new(), Vec::new());
    for (i, (file, label)) in items.iter().enumerate() {
        let img = crop224(&image::open(src.join(file))?.to_rgb8());
        let stem = Path::new(file).file_stem().and_then(|s| s.to_str()).unwrap_or("image");
        let name = format!("0-clean-{i:04}-{stem}.png");
        img.save(out.join(&name))?;
        clean.push(format!("{name},{label}"));
        let name = match i % 3 {
            0 => {
                let name = format!("1-blur-{i:04}-{stem}.png");
                imageops::blur(&img, BLUR[k]).save(out.join(&name))?;
                name
            }
            1 => {
                let name = format!("1-jpeg-{i:04}-{stem}.jpg");
                let mut bytes = Vec::new();
                JpegEncoder::new_with_quality(&mut bytes, JPEG[k]).encode_image(&img)?;
                std::fs::write(out.join(&name), bytes)?;
                name
            }
            _ => {
                let name = format!("1-noise-{i:04}-{stem}.png");
                noisy(&img, NOISE[k], &mut rng).save(out.join(&name))?;
                name
            }
        };
        degraded.push(format!("{name},{label}"));
    }
    let csv = std::iter::once("file,label".to_owned()).chain(clean).chain(degraded).collect::<Vec<_>>().join("\n");
    std::fs::write(out.join("labels.csv"), csv + "\n")?;
    eprintln!(
        "{} images clean, then degraded (severity {severity}: blur sigma {}, JPEG quality {}, noise std {}; seed {seed}) in {}",
        items.len(),
        BLUR[k],
        JPEG[k],
        NOISE[k],
        out.display()
    );
    Ok(())
}

/// Shorter side to 256 (bicubic), then the centred 224 x 224, as ImageNet-C prepares images.
fn crop224(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let scale = 256.0 / w.min(h) as f64;
    let (nw, nh) = (((w as f64 * scale).round() as u32).max(224), ((h as f64 * scale).round() as u32).max(224));
    let resized = imageops::resize(img, nw, nh, FilterType::CatmullRom);
    imageops::crop_imm(&resized, (nw - 224) / 2, (nh - 224) / 2, 224, 224).to_image()
}

/// Adds N(0, std²) to every channel on the 0..1 scale (Box-Muller over the seeded generator).
fn noisy(img: &RgbImage, std: f64, rng: &mut Rng) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for c in p.0.iter_mut() {
            let (u1, u2) = (rng.next_f64().max(1e-12), rng.next_f64());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            *c = ((*c as f64 / 255.0 + std * z).clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    out
}
