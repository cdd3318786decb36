//! Helpers for the crate's own unit tests (compiled only for them, never shipped): models around
//! `ScriptedRunner` (a manifest from `models/`, its class list read, no ONNX loaded and no
//! inference), small encoded images, and an in-memory byte stream to serve a host session on.
//! With them the serving code (the host's framed session and OIP endpoint, the run session)
//! is tested in-process, so also under qemu on the ARM targets.

use crate::link::Stream;
use crate::model::manifest::Manifest;
use crate::model::runner::ScriptedRunner;
use crate::model::Model;
use image::{ImageFormat, Rgb, RgbImage};
use std::collections::HashMap;
use std::io::{self, Cursor, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `w` x `h` image of one colour.
pub fn solid(w: u32, h: u32, rgb: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(rgb))
}

/// `img` encoded as PNG.
pub fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).expect("PNG encodes");
    out.into_inner()
}

/// Logits over `classes` classes: 0 everywhere but `lead` at `top`.
pub fn logits(classes: usize, top: usize, lead: f32) -> Vec<f32> {
    let mut l = vec![0.0; classes];
    l[top] = lead;
    l
}

/// The manifest `models/<name>.toml`.
pub fn manifest(name: &str) -> Manifest {
    Manifest::load(&root().join("models").join(format!("{name}.toml"))).expect("a manifest in models/")
}

/// A model of the manifest `models/<name>.toml` whose runner gives, for each input tensor of
/// `answers`, its output (`ScriptedRunner` keys by a tensor's first value); any other input
/// is an inference error.
pub fn scripted_model(name: &str, answers: Vec<(Vec<f32>, Vec<f32>)>) -> Model {
    let manifest = manifest(name);
    let classes = manifest.load_classes().expect("the manifest's class list");
    let answers: HashMap<u32, Vec<f32>> =
        answers.into_iter().map(|(input, out)| (input.first().map_or(0, |v| v.to_bits()), out)).collect();
    Model {
        manifest,
        classes,
        runner: Box::new(ScriptedRunner { answers, macs: 1_000_000 }),
        tokenizer: None,
        load_ms: 0.0,
    }
}

/// An in-memory peer: reads give `input` in pieces of at most `step` bytes, then the end of the
/// stream; writes go to `out`, which the test keeps a handle on.
pub struct Duplex {
    input: Vec<u8>,
    at: usize,
    step: usize,
    pub out: Arc<Mutex<Vec<u8>>>,
}

impl Duplex {
    pub fn new(input: Vec<u8>, step: usize) -> Duplex {
        Duplex { input, at: 0, step: step.max(1), out: Arc::default() }
    }

    /// Everything written so far.
    pub fn written(&self) -> Vec<u8> {
        self.out.lock().unwrap().clone()
    }
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.input.len() - self.at);
        buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Duplex {
    fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
        Err(io::Error::other("an in-memory stream has one owner"))
    }
}
