//! Where a device's inputs come from: image files and folders, a watched folder (each new
//! image as a camera tool writes it), or a stream of JPEG frames on standard input (MJPEG, as
//! `libcamera-vid --codec mjpeg -o -` writes it). Each source yields (name, encoded bytes).

use crate::dataset;
use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One input: its name for the output and the log, and its bytes or why they could not be read.
pub type Input = (String, Result<Vec<u8>, String>);

/// Files named up front, read one at a time.
pub struct Files {
    paths: std::vec::IntoIter<PathBuf>,
}

impl Files {
    pub fn new(paths: Vec<PathBuf>) -> Files {
        Files { paths: paths.into_iter() }
    }
}

impl Iterator for Files {
    type Item = Input;
    fn next(&mut self) -> Option<Input> {
        let p = self.paths.next()?;
        Some((p.display().to_string(), std::fs::read(&p).map_err(|e| format!("cannot read: {e}"))))
    }
}

/// New image files appearing in a folder. A file is taken once its size has stopped changing
/// between two polls (the writer is done). Files present at start are taken too, in name
/// order. Ends after `max` inputs, or after `idle` with nothing new, when those are set.
pub struct Watch {
    dir: PathBuf,
    seen: HashSet<PathBuf>,
    sizes: std::collections::HashMap<PathBuf, u64>,
    ready: std::collections::VecDeque<PathBuf>,
    poll: Duration,
    max: Option<usize>,
    idle: Option<Duration>,
    taken: usize,
    last_new: Instant,
}

impl Watch {
    pub fn new(dir: PathBuf, max: Option<usize>, idle: Option<Duration>) -> Result<Watch, dataset::DatasetError> {
        if !dir.is_dir() {
            return Err(dataset::DatasetError::Missing { path: dir });
        }
        Ok(Watch {
            dir,
            seen: HashSet::new(),
            sizes: Default::default(),
            ready: Default::default(),
            poll: Duration::from_millis(100),
            max,
            idle,
            taken: 0,
            last_new: Instant::now(),
        })
    }

    fn scan(&mut self) {
        let Ok(found) = dataset::list_images(&self.dir) else { return };
        for p in found {
            if self.seen.contains(&p) {
                continue;
            }
            let Ok(len) = std::fs::metadata(&p).map(|m| m.len()) else { continue };
            if len > 0 && self.sizes.get(&p) == Some(&len) {
                self.seen.insert(p.clone());
                self.sizes.remove(&p);
                self.ready.push_back(p);
            } else {
                self.sizes.insert(p, len);
            }
        }
    }
}

impl Iterator for Watch {
    type Item = Input;
    fn next(&mut self) -> Option<Input> {
        if self.max.is_some_and(|m| self.taken >= m) {
            return None;
        }
        loop {
            if let Some(p) = self.ready.pop_front() {
                self.taken += 1;
                self.last_new = Instant::now();
                return Some((p.display().to_string(), std::fs::read(&p).map_err(|e| format!("cannot read: {e}"))));
            }
            if self.idle.is_some_and(|i| self.last_new.elapsed() > i) {
                return None;
            }
            std::thread::sleep(self.poll);
            self.scan();
        }
    }
}

/// Splits a byte stream of concatenated JPEG images (MJPEG) into frames. It walks the marker
/// segments up to the scan, then the entropy-coded data to the EOI marker, so an embedded
/// thumbnail's markers do not end a frame early. Bytes between frames are skipped. A frame
/// over `max` bytes is reported as an error and skipped.
pub struct Mjpeg<R: Read> {
    inner: std::io::Bytes<std::io::BufReader<R>>,
    max: usize,
    count: usize,
    done: bool,
}

impl<R: Read> Mjpeg<R> {
    pub fn new(inner: R, max: usize) -> Mjpeg<R> {
        Mjpeg { inner: std::io::BufReader::new(inner).bytes(), max, count: 0, done: false }
    }

    fn byte(&mut self) -> Result<Option<u8>, String> {
        self.inner.next().transpose().map_err(|e| format!("cannot read the stream: {e}"))
    }

    /// Reads one frame after its SOI marker; `Ok(None)` when the stream ends inside it.
    fn frame(&mut self) -> Result<Option<Vec<u8>>, String> {
        let mut out = vec![0xFF, 0xD8];
        let mut too_big = false;
        let mut push = |out: &mut Vec<u8>, b: u8, max: usize| {
            if out.len() < max {
                out.push(b);
            } else {
                too_big = true;
            }
        };
        // Marker segments until the start of scan.
        let mut in_scan = false;
        loop {
            let Some(b) = self.byte()? else { return Ok(None) };
            if !in_scan {
                if b != 0xFF {
                    return Err("a JPEG marker was expected".into());
                }
                let mut m = 0xFF;
                while m == 0xFF {
                    let Some(n) = self.byte()? else { return Ok(None) };
                    m = n;
                }
                push(&mut out, 0xFF, self.max);
                push(&mut out, m, self.max);
                match m {
                    0xD9 => break,
                    0x01 | 0xD0..=0xD7 => continue,
                    _ => {}
                }
                let (Some(hi), Some(lo)) = (self.byte()?, self.byte()?) else { return Ok(None) };
                let len = u16::from_be_bytes([hi, lo]) as usize;
                if len < 2 {
                    return Err(format!("a JPEG segment length of {len} is invalid"));
                }
                push(&mut out, hi, self.max);
                push(&mut out, lo, self.max);
                for _ in 0..len - 2 {
                    let Some(b) = self.byte()? else { return Ok(None) };
                    push(&mut out, b, self.max);
                }
                if m == 0xDA {
                    in_scan = true;
                }
            } else {
                push(&mut out, b, self.max);
                if b == 0xFF {
                    let Some(n) = self.byte()? else { return Ok(None) };
                    push(&mut out, n, self.max);
                    match n {
                        0xD9 => break,
                        0x00 | 0xD0..=0xD7 | 0xFF => {}
                        // Another marker (DHT, SOS of a progressive JPEG...): back to segments.
                        _ => {
                            let (Some(hi), Some(lo)) = (self.byte()?, self.byte()?) else { return Ok(None) };
                            let len = u16::from_be_bytes([hi, lo]) as usize;
                            push(&mut out, hi, self.max);
                            push(&mut out, lo, self.max);
                            for _ in 0..len.saturating_sub(2) {
                                let Some(b) = self.byte()? else { return Ok(None) };
                                push(&mut out, b, self.max);
                            }
                        }
                    }
                }
            }
        }
        if too_big {
            return Err(format!("a frame is larger than {} bytes", self.max));
        }
        Ok(Some(out))
    }
}

impl<R: Read> Iterator for Mjpeg<R> {
    type Item = Input;
    fn next(&mut self) -> Option<Input> {
        if self.done {
            return None;
        }
        // Find the next SOI marker (FF D8).
        let mut prev = 0u8;
        loop {
            match self.byte() {
                Ok(Some(b)) => {
                    if prev == 0xFF && b == 0xD8 {
                        break;
                    }
                    prev = b;
                }
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    return Some(("stdin".into(), Err(e)));
                }
            }
        }
        self.count += 1;
        let name = format!("stdin#{}", self.count);
        match self.frame() {
            Ok(Some(f)) => Some((name, Ok(f))),
            Ok(None) => {
                self.done = true;
                Some((name, Err("the stream ended inside a frame".into())))
            }
            Err(e) => Some((name, Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, seed: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x as u8).wrapping_mul(seed), y as u8, seed]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80).encode_image(&img).unwrap();
        out
    }

    #[test]
    fn splits_concatenated_jpegs_with_garbage_between() {
        let (a, b, c) = (jpeg(31, 17, 3), jpeg(64, 48, 7), jpeg(8, 8, 11));
        let mut stream = b"junk".to_vec();
        stream.extend(&a);
        stream.extend(&b);
        stream.extend(b"\x00\x00\xff");
        stream.extend(&c);
        let frames: Vec<Input> = Mjpeg::new(&stream[..], 1 << 20).collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].1.as_ref().unwrap(), &a);
        assert_eq!(frames[1].1.as_ref().unwrap(), &b);
        assert_eq!(frames[2].1.as_ref().unwrap(), &c);
        assert_eq!(frames[1].0, "stdin#2");
        for (_, f) in frames {
            crate::preprocess::decode(&f.unwrap()).unwrap();
        }
    }

    #[test]
    fn truncated_and_oversized_frames_are_errors() {
        let a = jpeg(32, 32, 5);
        let cut = &a[..a.len() / 2];
        let frames: Vec<Input> = Mjpeg::new(cut, 1 << 20).collect();
        assert_eq!(frames.len(), 1);
        assert!(frames[0].1.as_ref().unwrap_err().contains("ended inside"));
        let mut two = a.clone();
        two.extend(&a);
        let frames: Vec<Input> = Mjpeg::new(&two[..], 100).collect();
        assert_eq!(frames.len(), 2);
        assert!(frames.iter().all(|f| f.1.as_ref().unwrap_err().contains("larger than 100")));
    }

    #[test]
    fn watch_takes_files_once_complete() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jpg"), b"first").unwrap();
        let mut w = Watch::new(dir.path().to_owned(), Some(2), Some(Duration::from_secs(5))).unwrap();
        let first = w.next().unwrap();
        assert!(first.0.ends_with("a.jpg"));
        let p = dir.path().join("b.png");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            std::fs::write(p, b"second").unwrap();
        });
        let second = w.next().unwrap();
        writer.join().unwrap();
        assert!(second.0.ends_with("b.png"));
        assert_eq!(second.1.unwrap(), b"second");
        assert!(w.next().is_none(), "max reached");
        let mut idle = Watch::new(dir.path().to_owned(), None, Some(Duration::from_millis(300))).unwrap();
        assert_eq!(idle.by_ref().count(), 2);
    }
}
