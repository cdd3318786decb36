//! Preprocessing (issue #6, item 5): JPEG decode, centre crop + bicubic resize, normalisation,
//! and the whole path from bytes to the small model's tensor; and the same steps by other
//! crates (zune-jpeg, the image crate's decoder; fast_image_resize, the image crate's
//! resize), for speed and for fidelity to Pillow.
//!
//! Inputs: `photos/china.jpg` (640x427, shipped) and a 227x227 JPEG made from it in memory
//! (`offload::payload::crop_jpeg` at quality 90, the size of the `imagenet-val-a` images). With
//! `EDGECASCADE_BENCH_DATA=DIR` the first JPEG of DIR is benchmarked too, and the fidelity
//! table covers up to `EDGECASCADE_BENCH_LIMIT` (default 100) of its JPEGs.
//!
//! Before timing, a fidelity table is printed: for each decoder x resizer, the largest and
//! the mean absolute difference of the 224x224 crop against our path, which equals Pillow's
//! pixel for pixel (tests/golden.rs; for the shipped photo it is also checked here against
//! Pillow's own crop in tests/golden/).
//!
//! `cargo bench --bench preprocess`; `cargo bench --bench preprocess -- crop-resize` for one group.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use edgecascade::model::manifest::{Layout, Manifest};
use edgecascade::model::preprocess;
use fast_image_resize as fir;
use image::RgbImage;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The small model's input: 224 pixels, centre crop 224/256 of the shorter side.
const SIZE: u32 = 224;
const CROP: f64 = 0.875;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Input {
    name: String,
    bytes: Vec<u8>,
}

/// The shipped photo, a 227x227 JPEG made from it, and optionally the first JPEG of the data
/// folder.
fn inputs() -> Vec<Input> {
    let photo = std::fs::read(root().join("photos/china.jpg")).expect("photos/china.jpg");
    let img = preprocess::decode(&photo).expect("china.jpg decodes");
    let small = edgecascade::offload::payload::crop_jpeg(&img, 227, 1.0, 90).expect("crop encodes");
    let mut v = vec![
        Input { name: "china-640x427".into(), bytes: photo },
        Input { name: "china-227x227-q90".into(), bytes: small },
    ];
    if let Some(first) = data_jpegs().into_iter().next() {
        let name = first.file_name().unwrap().to_string_lossy().into_owned();
        v.push(Input { name, bytes: std::fs::read(&first).unwrap() });
    }
    v
}

/// JPEGs of `EDGECASCADE_BENCH_DATA`, sorted, at most `EDGECASCADE_BENCH_LIMIT` (100).
fn data_jpegs() -> Vec<PathBuf> {
    let Some(dir) = std::env::var_os("EDGECASCADE_BENCH_DATA") else { return Vec::new() };
    let limit = std::env::var("EDGECASCADE_BENCH_LIMIT").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("EDGECASCADE_BENCH_DATA={}: {e}", Path::new(&dir).display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")))
        .collect();
    files.sort();
    files.truncate(limit);
    files
}

// ---- decoders: JPEG bytes to 8-bit RGB ----

fn decode_mozjpeg(bytes: &[u8]) -> RgbImage {
    preprocess::decode(bytes).unwrap()
}

fn decode_zune(bytes: &[u8]) -> RgbImage {
    use zune_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let pixels = d.decode().unwrap();
    let info = d.info().unwrap();
    RgbImage::from_raw(info.width as u32, info.height as u32, pixels).unwrap()
}

fn decode_image(bytes: &[u8]) -> RgbImage {
    image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).unwrap().to_rgb8()
}

type Decoder = fn(&[u8]) -> RgbImage;
type Resizer = Box<dyn FnMut(&RgbImage) -> RgbImage>;

const DECODERS: [(&str, Decoder); 3] =
    [("mozjpeg (ours)", decode_mozjpeg), ("zune-jpeg", decode_zune), ("image", decode_image)];

// ---- resizers: decoded image to the 224x224 centre crop, bicubic (Catmull-Rom, a = -0.5) ----

/// The centre square `preprocess::crop_resize` takes: (left, top, side).
fn crop_box(img: &RgbImage) -> (u32, u32, u32) {
    let (w, h) = img.dimensions();
    let side = ((w.min(h) as f64 * CROP + 0.5).floor() as u32).clamp(1, w.min(h));
    ((w - side) / 2, (h - side) / 2, side)
}

fn resize_ours(img: &RgbImage) -> RgbImage {
    preprocess::crop_resize(img, SIZE, CROP)
}

/// fast_image_resize, SIMD (AVX2 here, NEON on arm64), its Catmull-Rom convolution. With
/// `source_box`, the crop is passed as the source box (no copy; the kernels near its edges
/// then read pixels outside it); without, the crop is copied out first and resized whole, as
/// our path and Pillow's `crop().resize()` do. The `Resizer` keeps its buffers between calls,
/// as a runtime would.
fn resize_fir(resizer: &mut fir::Resizer, img: &RgbImage, source_box: bool) -> RgbImage {
    // The typed API: the untyped one instantiates every pixel type's code in this crate,
    // which takes minutes to compile.
    type Rgb = fir::pixels::U8x3;
    let (left, top, side) = crop_box(img);
    let mut out = vec![0u8; (SIZE * SIZE * 3) as usize];
    let mut dst = fir::images::TypedImage::<Rgb>::from_buffer(SIZE, SIZE, &mut out).unwrap();
    let options = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::CatmullRom));
    if source_box {
        let src = fir::images::TypedImageRef::<Rgb>::from_buffer(img.width(), img.height(), img.as_raw()).unwrap();
        let options = options.crop(left as f64, top as f64, side as f64, side as f64);
        resizer.resize_typed(&src, &mut dst, &options).unwrap();
    } else {
        let crop = image::imageops::crop_imm(img, left, top, side, side).to_image();
        let src = fir::images::TypedImageRef::<Rgb>::from_buffer(side, side, crop.as_raw()).unwrap();
        resizer.resize_typed(&src, &mut dst, &options).unwrap();
    }
    RgbImage::from_raw(SIZE, SIZE, out).unwrap()
}

/// The image crate's own resize (floating point), Catmull-Rom, on a view of the crop.
fn resize_image(img: &RgbImage) -> RgbImage {
    let (left, top, side) = crop_box(img);
    let view = image::imageops::crop_imm(img, left, top, side, side);
    image::imageops::resize(&*view, SIZE, SIZE, image::imageops::FilterType::CatmullRom)
}

/// Every resizer as a closure over its own state.
fn resizers() -> Vec<(&'static str, Resizer)> {
    let mut fir_copy = fir::Resizer::new();
    let mut fir_box = fir::Resizer::new();
    vec![
        ("ours (Pillow-exact)", Box::new(resize_ours)),
        ("fast_image_resize", Box::new(move |img| resize_fir(&mut fir_copy, img, false))),
        ("fast_image_resize (source box)", Box::new(move |img| resize_fir(&mut fir_box, img, true))),
        ("image", Box::new(resize_image)),
    ]
}

// ---- fidelity ----

#[derive(Default)]
struct Diff {
    max: u8,
    sum: u64,
    differing: u64,
    values: u64,
    /// Images with at least one value different.
    images_differing: usize,
    images: usize,
}

impl Diff {
    fn add(&mut self, a: &RgbImage, b: &RgbImage) {
        assert_eq!(a.dimensions(), b.dimensions());
        let before = self.differing;
        for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
            let d = x.abs_diff(*y);
            self.max = self.max.max(d);
            self.sum += d as u64;
            self.differing += (d != 0) as u64;
        }
        self.values += a.as_raw().len() as u64;
        self.images += 1;
        self.images_differing += (self.differing > before) as usize;
    }

    fn row(&self, what: &str) -> String {
        let v = self.values.max(1) as f64;
        format!(
            "| {what} | {} | {:.4} | {:.2}% | {}/{} |",
            self.max,
            self.sum as f64 / v,
            100.0 * self.differing as f64 / v,
            self.images_differing,
            self.images
        )
    }
}

/// Prints, per decoder x resizer, how far the 224x224 crop is from our (Pillow-exact) path,
/// and how far each decoder's full image is from mozjpeg's.
fn fidelity(sets: &[(&str, Vec<Vec<u8>>)]) {
    for (set, images) in sets {
        let mut decoded: Vec<Diff> = DECODERS.iter().map(|_| Diff::default()).collect();
        let mut crops: Vec<Vec<Diff>> =
            DECODERS.iter().map(|_| resizers().iter().map(|_| Diff::default()).collect()).collect();
        let mut resizers = resizers();
        for bytes in images {
            let exact_img = decode_mozjpeg(bytes);
            let exact = resize_ours(&exact_img);
            for (d, (_, decode)) in DECODERS.iter().enumerate() {
                let img = decode(bytes);
                decoded[d].add(&img, &exact_img);
                for (r, (_, resize)) in resizers.iter_mut().enumerate() {
                    crops[d][r].add(&resize(&img), &exact);
                }
            }
        }
        println!("\nfidelity on {set} ({} JPEGs): absolute difference against our path (= Pillow's)", images.len());
        println!("| decoder + resizer | max | mean | values differing | images differing |");
        println!("|---|---:|---:|---:|---:|");
        for (d, (dname, _)) in DECODERS.iter().enumerate() {
            println!("{}", decoded[d].row(&format!("{dname}, decoded image (whole)")));
        }
        for (d, (dname, _)) in DECODERS.iter().enumerate() {
            for (r, (rname, _)) in resizers.iter().enumerate() {
                println!("{}", crops[d][r].row(&format!("{dname} + {rname}, {SIZE}x{SIZE} crop")));
            }
        }
    }
    // The shipped photo against Pillow's own crop (made by scripts/golden.py).
    let pillow = image::open(root().join("tests/golden/china-224.png")).expect("tests/golden/china-224.png").to_rgb8();
    let ours = resize_ours(&decode_mozjpeg(&std::fs::read(root().join("photos/china.jpg")).unwrap()));
    let mut d = Diff::default();
    d.add(&ours, &pillow);
    println!(
        "\nchina.jpg, our crop against Pillow's (tests/golden/china-224.png): max {}, mean {:.4}\n",
        d.max,
        d.sum as f64 / d.values as f64
    );
}

fn bench(c: &mut Criterion) {
    let inputs = inputs();
    let mut sets: Vec<(&str, Vec<Vec<u8>>)> =
        vec![("the bench inputs", inputs.iter().map(|i| i.bytes.clone()).collect())];
    let data = data_jpegs();
    if !data.is_empty() {
        sets.push(("EDGECASCADE_BENCH_DATA", data.iter().map(|p| std::fs::read(p).unwrap()).collect()));
    }
    fidelity(&sets);

    let manifest = Manifest::load(&root().join("models/efficientnet-lite0-int8.toml")).expect("Lite0 manifest");
    let spec = manifest.image().unwrap().clone();
    for input in &inputs {
        let bytes = &input.bytes;
        let img = decode_mozjpeg(bytes);
        let mut g = c.benchmark_group(format!("decode/{}", input.name));
        for (name, decode) in DECODERS {
            g.bench_function(BenchmarkId::from_parameter(name), |b| b.iter(|| decode(black_box(bytes))));
        }
        g.finish();

        let mut g = c.benchmark_group(format!("crop-resize-{SIZE}/{}", input.name));
        for (name, mut resize) in resizers() {
            g.bench_function(BenchmarkId::from_parameter(name), |b| b.iter(|| resize(black_box(&img))));
        }
        g.finish();

        let crop = resize_ours(&img);
        let mut g = c.benchmark_group(format!("path/{}", input.name));
        g.bench_function("normalise", |b| {
            b.iter(|| preprocess::normalise(black_box(&crop), spec.mean, spec.std, Layout::Nchw))
        });
        // The device's whole path from bytes to the Lite0 tensor: decode + crop + resize +
        // normalise, as `Pipeline::answer` runs it.
        g.bench_function("decode+to_tensor (ours)", |b| {
            b.iter(|| preprocess::to_tensor(&preprocess::decode(black_box(bytes)).unwrap(), &spec))
        });
        let mut fir_resizer = fir::Resizer::new();
        g.bench_function("zune-jpeg + fast_image_resize + normalise", |b| {
            b.iter(|| {
                let crop = resize_fir(&mut fir_resizer, &decode_zune(black_box(bytes)), false);
                preprocess::normalise(&crop, spec.mean, spec.std, spec.layout)
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
