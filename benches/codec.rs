//! The link's frame codec (src/link/codec.rs): `encode` (postcard, CRC32, COBS) and `decode`
//! of the frames an offload sends and gets back, at their real sizes, and `FrameReader`
//! taking them off a byte stream.
//!
//! Requests carry what the device sends: the host model's (Lite2, 260 px) centre crop of
//! `photos/china.jpg` as JPEG at quality 90 (the default `crop-jpeg`, about 26 kB) or as raw
//! RGB (`crop-raw`, 202,800 bytes), and the photo's own bytes (`original`). Replies: the top-5
//! with the host's times (the default, about 54 bytes), and with all 1000 probabilities
//! (`want_probs`).
//!
//! `cargo bench --bench codec`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgecascade::link::{decode, encode, Encoding, FrameReader, InferRequest, InferResponse, Message};
use edgecascade::model::preprocess;
use std::hint::black_box;
use std::time::Duration;

/// Lite2's input: 260 pixels, centre crop 260/292 of the shorter side.
const HOST_SIZE: u32 = 260;
const HOST_CROP: f64 = 260.0 / 292.0;

fn request(encoding: Encoding, payload: Vec<u8>) -> Message {
    Message::Infer(InferRequest { seq: 12345, encoding, payload, device_probs: None, want_probs: false })
}

fn reply(probs: bool) -> Message {
    // A softmax-like spread over 1000 classes, for the all-probabilities reply.
    let all: Vec<f32> = (0..1000u32).map(|i| 1.0 / (1.0 + i as f32 * 7.3 % 997.0)).collect();
    Message::Answer(InferResponse {
        seq: 12345,
        top: vec![(285, 0.604), (281, 0.11), (282, 0.05), (287, 0.02), (728, 0.01)],
        probs: probs.then_some(all),
        host_ms: 101.3,
        host_decode_ms: 4.1,
        host_infer_ms: 95.3,
        host_mj: None,
    })
}

fn bench(c: &mut Criterion) {
    let photo = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/photos/china.jpg")).expect("photos/china.jpg");
    let img = preprocess::decode(&photo).unwrap();
    let jpeg = edgecascade::offload::payload::crop_jpeg(&img, HOST_SIZE, HOST_CROP, 90).unwrap();
    let raw = preprocess::crop_resize(&img, HOST_SIZE, HOST_CROP).into_raw();
    let messages = vec![
        ("request crop-jpeg q90", request(Encoding::CropJpeg, jpeg)),
        ("request original", request(Encoding::Original, photo.clone())),
        ("request crop-raw", request(Encoding::CropRaw, raw)),
        ("reply top-5", reply(false)),
        ("reply all probabilities", reply(true)),
    ];

    let mut group = c.benchmark_group("codec");
    for (name, msg) in &messages {
        let frame = encode(msg);
        assert_eq!(decode(&frame[..frame.len() - 1]).as_ref(), Ok(msg));
        let id = format!("{name} ({} B)", frame.len());
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", &id), msg, |b, m| b.iter(|| encode(black_box(m))));
        group.bench_with_input(BenchmarkId::new("decode", &id), &frame, |b, f| {
            b.iter(|| decode(black_box(&f[..f.len() - 1])).unwrap())
        });
        // The reader's way: find the delimiter in a stream chunk by chunk, decode in place.
        group.bench_with_input(BenchmarkId::new("FrameReader", &id), &frame, |b, f| {
            b.iter(|| FrameReader::new(black_box(f.as_slice()), 1 << 20).read_msg().unwrap())
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
