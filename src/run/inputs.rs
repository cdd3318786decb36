//! Where a device's inputs come from: image files and folders, a watched folder (each new
//! image as a camera tool writes it), or a stream of JPEG frames on standard input (MJPEG, as
//! `libcamera-vid --codec mjpeg -o -` writes it). Each source yields (name, encoded bytes).

use crate::tune::dataset;
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

/// The most bytes one line of text may hold (`--lines`); a longer line is an input that fails,
/// named, and reading goes on at the next line.
pub const MAX_LINE: usize = 64 * 1024;

/// Text inputs, one per line (`classify --lines`, `run --lines`), named `NAME:LINE`. A line's
/// bytes are passed on as read (without the line end): invalid UTF-8 and empty lines fail as
/// inputs when they are decoded, naming the line, and the others are still answered.
pub struct Lines<R> {
    reader: R,
    name: String,
    line: usize,
    done: bool,
}

impl<R: std::io::BufRead> Lines<R> {
    pub fn new(reader: R, name: impl Into<String>) -> Lines<R> {
        Lines { reader, name: name.into(), line: 0, done: false }
    }

    /// Reads up to the next line end, keeping at most `MAX_LINE + 1` bytes. None at the end.
    fn read_line(&mut self) -> Option<Result<Vec<u8>, String>> {
        let mut kept = Vec::new();
        let mut any = false;
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(format!("cannot read: {e}")));
                }
            };
            if buf.is_empty() {
                self.done = true;
                return any.then_some(Ok(kept));
            }
            any = true;
            let (take, end) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            let room = (MAX_LINE + 1).saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..take.min(room)]);
            self.reader.consume(take + end as usize);
            if end {
                return Some(Ok(kept));
            }
        }
    }
}

impl<R: std::io::BufRead> Iterator for Lines<R> {
    type Item = Input;
    fn next(&mut self) -> Option<Input> {
        if self.done {
            return None;
        }
        let read = self.read_line()?;
        self.line += 1;
        let name = format!("{}:{}", self.name, self.line);
        let bytes = read.and_then(|mut b| {
            if b.last() == Some(&b'\r') {
                b.pop();
            }
            if b.len() > MAX_LINE {
                return Err(format!("the line is longer than {MAX_LINE} bytes"));
            }
            Ok(b)
        });
        Some((name, bytes))
    }
}

impl<R: std::io::BufRead> Source for Lines<R> {}

/// A source of inputs, told when each one has its answer (or error) written and logged.
pub trait Source: Iterator<Item = Input> {
    /// `name` has its one line of output and its log line: a watched folder files the input
    /// away (answered or failed), so that a restart does not take it again.
    fn done(&mut self, _name: &str, _answered: bool) {}
}

impl Source for Files {}

impl Source for std::vec::IntoIter<Input> {}

impl<S: Source + ?Sized> Source for Box<S> {
    fn done(&mut self, name: &str, answered: bool) {
        (**self).done(name, answered)
    }
}

impl<R: Read> Source for Mjpeg<R> {}

/// How a watched folder decides a new file is complete.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Stop after this many inputs.
    pub max: Option<usize>,
    /// Stop after this long without a new input.
    pub idle: Option<Duration>,
    /// A file no writer is known to have closed is taken once its size and modification time
    /// have not changed for this long (files present at start; everywhere without inotify).
    pub settle: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { max: None, idle: None, settle: Duration::from_secs(2) }
    }
}

/// New image files appearing in a folder, each taken once its writer is done with it: on
/// Linux when inotify reports it closed after writing or moved in (a camera tool writing in
/// place, or writing elsewhere and renaming), otherwise once its size and modification time
/// have settled. Files present at start are taken too, in name order, once settled (or closed).
/// Each input, once answered and logged (`Source::done`), moves to `DIR/done/` (`DIR/failed/`
/// when it could not be answered), so a restart takes only what is left.
pub struct Watch {
    dir: PathBuf,
    opts: WatchOptions,
    /// Files seen but not taken yet: their size and modification time, and since when.
    pending: std::collections::HashMap<PathBuf, (u64, Option<std::time::SystemTime>, Instant)>,
    ready: std::collections::VecDeque<PathBuf>,
    /// Taken, not yet done, by input name.
    taken_paths: std::collections::HashMap<String, PathBuf>,
    notify: Option<Inotify>,
    /// Files there at start: with inotify, the only ones taken by settling (they may have
    /// been closed before it watched); later ones are taken when inotify reports them.
    initial: HashSet<PathBuf>,
    poll: Duration,
    taken: usize,
    last_new: Instant,
}

impl Watch {
    pub fn new(dir: PathBuf, opts: WatchOptions) -> Result<Watch, dataset::DatasetError> {
        if !dir.is_dir() {
            return Err(dataset::DatasetError::Missing { path: dir });
        }
        let notify = Inotify::watch(&dir)
            .map_err(|e| log::warn!("{}: no inotify ({e}); files are taken once settled", dir.display()))
            .ok();
        let mut w = Watch {
            dir,
            opts,
            pending: Default::default(),
            ready: Default::default(),
            taken_paths: Default::default(),
            notify,
            initial: HashSet::new(),
            poll: Duration::from_millis(50),
            taken: 0,
            last_new: Instant::now(),
        };
        w.initial = dataset::list_images(&w.dir).unwrap_or_default().into_iter().collect();
        w.look();
        Ok(w)
    }

    /// Moves an input already answered (in the results log, by a run that stopped before
    /// filing it away) to `done/`.
    pub fn already_done(&mut self, path: &std::path::Path) {
        self.pending.remove(path);
        self.ready.retain(|p| p != path);
        self.file_away(path, "done");
    }

    fn file_away(&self, path: &std::path::Path, to: &str) {
        let folder = self.dir.join(to);
        let moved = std::fs::create_dir_all(&folder)
            .and_then(|_| std::fs::rename(path, folder.join(path.file_name().unwrap_or_default())));
        if let Err(e) = moved {
            log::warn!("cannot move {} to {}: {e}", path.display(), folder.display());
        }
    }

    fn look(&mut self) {
        // Closed after writing, or moved in: complete.
        if let Some(n) = &mut self.notify {
            for name in n.complete() {
                let p = self.dir.join(name);
                if dataset::is_image(&p) && !self.ready.contains(&p) && p.is_file() {
                    self.pending.remove(&p);
                    self.ready.push_back(p);
                }
            }
        }
        let Ok(found) = dataset::list_images(&self.dir) else { return };
        for p in found {
            if self.ready.contains(&p) || self.taken_paths.values().any(|t| t == &p) {
                continue;
            }
            if self.notify.is_some() && !self.initial.contains(&p) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&p) else { continue };
            let (len, mtime) = (meta.len(), meta.modified().ok());
            match self.pending.get(&p) {
                Some(&(l, m, since)) if l == len && m == mtime => {
                    if len > 0 && since.elapsed() >= self.opts.settle {
                        self.pending.remove(&p);
                        self.ready.push_back(p);
                    }
                }
                // Not modified for the settle time already (written before we looked): whole.
                _ if len > 0 && mtime.and_then(|m| m.elapsed().ok()).is_some_and(|age| age >= self.opts.settle) => {
                    self.pending.remove(&p);
                    self.ready.push_back(p);
                }
                _ => {
                    self.pending.insert(p, (len, mtime, Instant::now()));
                }
            }
        }
    }
}

impl Iterator for Watch {
    type Item = Input;
    fn next(&mut self) -> Option<Input> {
        if self.opts.max.is_some_and(|m| self.taken >= m) {
            return None;
        }
        loop {
            if let Some(p) = self.ready.pop_front() {
                self.taken += 1;
                self.last_new = Instant::now();
                let name = p.display().to_string();
                let bytes = std::fs::read(&p).map_err(|e| format!("cannot read: {e}"));
                self.taken_paths.insert(name.clone(), p);
                return Some((name, bytes));
            }
            if self.opts.idle.is_some_and(|i| self.last_new.elapsed() > i) {
                return None;
            }
            std::thread::sleep(self.poll);
            self.look();
        }
    }
}

impl Source for Watch {
    fn done(&mut self, name: &str, answered: bool) {
        if let Some(p) = self.taken_paths.remove(name) {
            self.file_away(&p, if answered { "done" } else { "failed" });
        }
    }
}

/// Linux's inotify on one folder: the names of files closed after writing or moved in.
struct Inotify {
    fd: std::os::fd::OwnedFd,
}

impl Inotify {
    #[cfg(target_os = "linux")]
    fn watch(dir: &std::path::Path) -> std::io::Result<Inotify> {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        // SAFETY: plain system calls; the descriptor is owned from here on.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            use std::os::fd::AsRawFd;
            if libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Inotify { fd })
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn watch(_dir: &std::path::Path) -> std::io::Result<Inotify> {
        Err(std::io::Error::other("inotify is Linux's"))
    }

    /// The file names of every event waiting (never blocks).
    #[cfg(target_os = "linux")]
    fn complete(&mut self) -> Vec<std::ffi::OsString> {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let mut names = vec![];
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: reads at most buf.len() bytes into buf.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return names;
            }
            // Events: wd (i32), mask, cookie, len (u32 each), then `len` bytes of NUL-padded name.
            let mut at = 0usize;
            while at + 16 <= n as usize {
                let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().expect("4 bytes")) as usize;
                let name = &buf[at + 16..(at + 16 + len).min(n as usize)];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if !name.is_empty() {
                    names.push(std::ffi::OsStr::from_bytes(name).to_owned());
                }
                at += 16 + len;
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn complete(&mut self) -> Vec<std::ffi::OsString> {
        vec![]
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
            crate::model::preprocess::decode(&f.unwrap()).unwrap();
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

    fn watch(dir: &std::path::Path, max: Option<usize>, idle_ms: u64, settle_ms: u64) -> Watch {
        let opts =
            WatchOptions { max, idle: Some(Duration::from_millis(idle_ms)), settle: Duration::from_millis(settle_ms) };
        Watch::new(dir.to_owned(), opts).unwrap()
    }

    #[test]
    fn watch_takes_files_once_complete_and_files_them_away() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jpg"), b"first").unwrap();
        let mut w = watch(dir.path(), Some(2), 5000, 200);
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
        w.done(&first.0, true);
        w.done(&second.0, false);
        assert!(dir.path().join("done/a.jpg").is_file() && dir.path().join("failed/b.png").is_file());
        // A restart finds nothing left to take.
        let mut again = watch(dir.path(), None, 300, 50);
        assert_eq!(again.by_ref().count(), 0);
    }

    /// A writer that pauses mid-file (a camera tool writing a large frame, a slow network
    /// share): the file is taken only once it is whole. Before inotify, a file whose size
    /// held still for one 100 ms poll was taken half-written.
    #[test]
    fn a_file_whose_writer_pauses_mid_file_is_taken_only_when_whole() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let whole = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/photos/china.jpg")).unwrap();
        let p = dir.path().join("frame.jpg");
        let (first, rest) = whole.split_at(whole.len() / 2);
        let (first, rest) = (first.to_vec(), rest.to_vec());
        // The pause is longer than the settle time: only the writer's close tells.
        let mut w = watch(dir.path(), Some(1), 5000, 300);
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::create(p).unwrap();
            f.write_all(&first).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(1200));
            f.write_all(&rest).unwrap();
        });
        let got = w.next().unwrap();
        writer.join().unwrap();
        assert_eq!(got.1.unwrap(), whole, "the file was taken before its writer was done");
    }

    #[test]
    fn lines_are_inputs_named_by_line_and_a_long_one_fails_alone() {
        let long = "x".repeat(MAX_LINE + 10);
        let mut text = format!("good film\r\n\n{long}\nbad ").into_bytes();
        text.extend_from_slice(b"\xff\nlast without end");
        let got: Vec<Input> = Lines::new(std::io::BufReader::with_capacity(7, &text[..]), "f.txt").collect();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["f.txt:1", "f.txt:2", "f.txt:3", "f.txt:4", "f.txt:5"]);
        assert_eq!(got[0].1.as_deref().unwrap(), b"good film");
        assert_eq!(got[1].1.as_deref().unwrap(), b"");
        assert!(got[2].1.as_ref().unwrap_err().contains("longer than 65536 bytes"));
        assert_eq!(got[3].1.as_deref().unwrap(), b"bad \xff");
        assert_eq!(got[4].1.as_deref().unwrap(), b"last without end");
    }
}
