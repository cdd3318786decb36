//! External meters over a serial port, through the real reader (`energy::rdtech`, opened by
//! `link::connect` on a PTY's path) and the real sampler: a fake UM25C on the other end of a
//! pseudo-terminal pair answers each 0xF0 with a reply for 5.10 V x 0.600 A (3.06 W), then
//! goes silent, answers garbage or hangs up. Host only: opening a PTY through `connect` takes
//! the termios2 ioctls, which qemu-user lacks (see tests/link_pty.rs).

#![cfg(unix)]

use edgecascade::board::{Board, Boards, SysRoot};
use edgecascade::energy::fnirsi;
use edgecascade::energy::rdtech::{self, Model, FRAME_LEN, REQUEST};
use edgecascade::energy::{meter, EnergyContext, ErrorKind, MeterSpec, StageEnergy};
use edgecascade::link::{SerialStream, Stream};
use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the fake meter does with a request.
const ANSWER: u8 = 0;
const SILENT: u8 = 1;
const BAD_END_MARKER: u8 = 2;
const HANG_UP: u8 = 3;

struct FakeUm {
    mode: Arc<AtomicU8>,
    asked: Arc<AtomicUsize>,
    path: String,
    /// The PTY's slave end, held until the meter has opened its own.
    slave: Option<TTYPort>,
    thread: Option<JoinHandle<()>>,
}

impl FakeUm {
    /// A UM25C reporting 5.100 V and 0.6000 A on a fresh PTY pair.
    fn start() -> FakeUm {
        let (master, slave) = TTYPort::pair().expect("open a pseudo-terminal pair");
        let path = slave.name().expect("the slave end has a path");
        let mut master = SerialStream::new(master).unwrap();
        master.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let (mode, asked) = (Arc::new(AtomicU8::new(ANSWER)), Arc::new(AtomicUsize::new(0)));
        let (m, a) = (Arc::clone(&mode), Arc::clone(&asked));
        let frame = rdtech::encode(Model::Um25c, 5100, 6000, 0, 1234);
        let thread = std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            loop {
                match m.load(Ordering::SeqCst) {
                    HANG_UP => return,
                    mode => match master.read(&mut byte) {
                        Ok(1) if byte[0] == REQUEST => {
                            a.fetch_add(1, Ordering::SeqCst);
                            if mode == ANSWER {
                                master.write_all(&frame).unwrap();
                            } else if mode == BAD_END_MARKER {
                                let mut bad = frame;
                                bad[FRAME_LEN - 1] ^= 0x10;
                                master.write_all(&bad).unwrap();
                            }
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => return,
                    },
                }
            }
        });
        FakeUm { mode, asked, path, slave: Some(slave), thread: Some(thread) }
    }

    fn spec(&self) -> MeterSpec {
        format!("um25c:{}", self.path).parse().unwrap()
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

impl Drop for FakeUm {
    fn drop(&mut self) {
        self.mode.store(HANG_UP, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn rpi4() -> Board {
    Boards::builtin().get("rpi4").unwrap().clone()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A context on the fake meter, its slave end released once the meter has its own.
fn context(fake: &mut FakeUm) -> EnergyContext {
    let ctx = EnergyContext::start_meter(&rpi4(), &SysRoot::host(), &fake.spec()).expect("the fake meter opens");
    drop(fake.slave.take());
    ctx
}

/// Spans of each length in `spans_ms` (ms), measured through `ctx` from a meter reporting
/// 3.06 W: each within 10% of 3.06 W x its length, not interpolated (each is longer than two
/// sampling periods), named after the meter. Returns each span's energy with its P x t.
fn spans_at_3_06_w(ctx: &EnergyContext, meter: &str, spans_ms: &[u64]) -> Vec<(StageEnergy, f64)> {
    let mut out = Vec::new();
    for &ms in spans_ms {
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(ms));
        let t1 = Instant::now();
        let e = ctx.attribute(t0, t1);
        let want = 3.06 * (t1 - t0).as_secs_f64() * 1e3;
        let took = (t1 - t0).as_secs_f64() * 1e3;
        eprintln!("{meter} span of {took:.1} ms: {:.2} mJ measured, P x t = {want:.2} mJ", e.mj);
        assert!((e.mj - want).abs() <= 0.1 * want, "{meter}: {} mJ, expected {want} mJ", e.mj);
        assert!(!e.interpolated, "{meter}: {ms} ms is more than two sampling periods: {e:?}");
        assert_eq!(e.source, ctx.source());
        out.push((e, want));
    }
    out
}

#[test]
fn a_fake_um25c_gives_each_span_3_06_w_times_its_length() {
    let mut fake = FakeUm::start();
    let ctx = context(&mut fake);
    assert_eq!(ctx.source(), format!("meter: UM25C on {}, 5.1 V input, 10 Hz", fake.path));
    assert_eq!(ctx.interval(), Duration::from_millis(100));
    assert!((ctx.baseline_w() - 3.06).abs() < 1e-9, "baseline measured at start: {}", ctx.baseline_w());
    for (e, want) in spans_at_3_06_w(&ctx, "UM25C", &[350, 800]) {
        assert!(e.mj_above_idle.abs() <= 0.1 * want, "{e:?}");
    }
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(40));
    let e = ctx.attribute(t0, Instant::now());
    assert!(e.interpolated, "40 ms is shorter than two sampling periods: {e:?}");
    assert!(fake.asked.load(Ordering::SeqCst) >= 10, "the meter was asked at each reading");
}

/// The meter fails mid-run in the way `mode` says: the sampler warns once, switches to the
/// estimate (its source naming the meter that failed) and the run goes on.
fn falls_back_when(mode: u8) {
    let mut fake = FakeUm::start();
    let ctx = context(&mut fake);
    let before = Instant::now();
    wait_until("readings from the meter", || ctx.sampler().segments()[0].samples.len() >= 4);
    let mid = Instant::now();
    let e = ctx.attribute(before, mid);
    assert!(e.source.starts_with("meter: UM25C"), "{}", e.source);
    fake.set(mode);
    wait_until("the switch to the estimate", || ctx.sampler().segments().len() == 2);
    let segs = ctx.sampler().segments();
    assert!(segs[1].source.starts_with("estimate") && segs[1].source.contains("meter: UM25C"), "{}", segs[1].source);
    let after = Instant::now();
    std::thread::sleep(Duration::from_millis(60));
    let e = ctx.attribute(after, Instant::now());
    assert!(e.source.starts_with("estimate") && e.mj > 0.0, "{e:?}");
    // The measured part before the failure is still the meter's.
    let e = ctx.attribute(before, mid);
    assert!(e.source.starts_with("meter: UM25C"), "{}", e.source);
    assert!((e.mj - 3.06 * (mid - before).as_secs_f64() * 1e3).abs() < 1e-6, "{e:?}");
}

#[test]
fn a_um25c_going_silent_mid_run_falls_back_to_the_estimate() {
    falls_back_when(SILENT);
}

#[test]
fn a_um25c_answering_with_a_bad_end_marker_falls_back_to_the_estimate() {
    falls_back_when(BAD_END_MARKER);
}

#[test]
fn a_um25c_hanging_up_falls_back_to_the_estimate() {
    falls_back_when(HANG_UP);
}

#[test]
fn a_meter_that_cannot_be_opened_is_named() {
    let e = meter::open(&"um25c:/dev/nonexistent-rfcomm".parse().unwrap(), &SysRoot::host()).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Missing);
    assert!(e.to_string().contains("/dev/nonexistent-rfcomm") && e.to_string().contains("does not exist"), "{e}");
    let e = meter::open(&"um25c:/dev/null".parse().unwrap(), &SysRoot::host()).err().unwrap();
    assert!(e.to_string().contains("not a terminal"), "{e}");
    // A port where nothing answers: the first reading fails within the reply timeout.
    let mut fake = FakeUm::start();
    fake.set(SILENT);
    let t = Instant::now();
    let e = meter::open(&fake.spec(), &SysRoot::host()).err().unwrap();
    assert!(t.elapsed() < rdtech::REPLY_TIMEOUT * 3, "{:?}", t.elapsed());
    assert!(e.to_string().contains("stopped answering") && e.to_string().contains(&fake.path), "{e}");
    drop(fake.slave.take());
}

// ---- FNIRSI FNB58 over hidraw: a FIFO stands in for the node ----

const FNB_SEND: u8 = 0;
const FNB_STOP: u8 = 1;
const FNB_BAD_CRC: u8 = 2;

/// A FIFO fed by a thread with a FNB58 data report (four samples of 5.10 V x 0.600 A) every
/// 40 ms on an absolute schedule, as the meter sends them; `mode` stops it or corrupts CRCs.
struct FakeFnb {
    mode: Arc<AtomicU8>,
    quit: Arc<AtomicU8>,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    thread: Option<JoinHandle<()>>,
}

impl FakeFnb {
    fn start() -> FakeFnb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hidraw0");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path `c` owns.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        // Read and write: opening does not wait for the reader.
        let mut fifo = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let (mode, quit) = (Arc::new(AtomicU8::new(FNB_SEND)), Arc::new(AtomicU8::new(0)));
        let (m, q) = (Arc::clone(&mode), Arc::clone(&quit));
        let report = fnirsi::encode([(510_000, 60_000); 4]);
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut n = 0u32;
            while q.load(Ordering::SeqCst) == 0 {
                n += 1;
                let due = start + fnirsi::INTERVAL * n;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                match m.load(Ordering::SeqCst) {
                    FNB_SEND => fifo.write_all(&report).unwrap(),
                    FNB_BAD_CRC => {
                        let mut bad = report;
                        bad[20] ^= 0x01;
                        fifo.write_all(&bad).unwrap()
                    }
                    _ => {}
                }
            }
        });
        FakeFnb { mode, quit, path, _dir: dir, thread: Some(thread) }
    }

    fn spec(&self) -> MeterSpec {
        format!("fnb58:{}", self.path.display()).parse().unwrap()
    }
}

impl Drop for FakeFnb {
    fn drop(&mut self) {
        self.quit.store(1, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Up to three tries, each with a fresh fake meter: on a loaded machine (CI builds for the
/// boards beside the tests) the fake's writer thread can be starved past the reader's stall
/// limit, and the sampler then rightly switches to the estimate for that run. The last try's
/// failure fails the test.
#[test]
fn a_fake_fnb58_gives_each_span_3_06_w_times_its_length() {
    let attempt = || {
        let fake = FakeFnb::start();
        let ctx = EnergyContext::start_meter(&rpi4(), &SysRoot::host(), &fake.spec()).expect("the fake meter opens");
        assert_eq!(ctx.source(), format!("meter: FNB58 on {}, 5.1 V input, 100 samples/s, 25 Hz", fake.path.display()));
        assert!((ctx.baseline_w() - 3.06).abs() < 0.1 * 3.06, "baseline measured at start: {}", ctx.baseline_w());
        spans_at_3_06_w(&ctx, "FNB58", &[400, 1000]);
    };
    for try_no in 1..3 {
        if std::panic::catch_unwind(attempt).is_ok() {
            return;
        }
        eprintln!("try {try_no} failed (above); trying again with a fresh fake meter");
    }
    attempt();
}

#[test]
fn a_fnb58_stalling_or_sending_a_bad_crc_falls_back_to_the_estimate() {
    for mode in [FNB_STOP, FNB_BAD_CRC] {
        let fake = FakeFnb::start();
        let ctx = EnergyContext::start_meter(&rpi4(), &SysRoot::host(), &fake.spec()).expect("the fake meter opens");
        assert!(ctx.source().starts_with("meter: FNB58"), "{}", ctx.source());
        fake.mode.store(mode, Ordering::SeqCst);
        wait_until("the switch to the estimate", || ctx.sampler().segments().len() == 2);
        let segs = ctx.sampler().segments();
        assert!(
            segs[1].source.starts_with("estimate") && segs[1].source.contains("meter: FNB58"),
            "{}",
            segs[1].source
        );
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(50));
        let e = ctx.attribute(t, Instant::now());
        assert!(e.source.starts_with("estimate") && e.mj > 0.0, "{e:?}");
    }
}

// ---- Through the binary: classify and bench on the fake UM25C ----

fn edgecascade(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_edgecascade"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .env_remove("EDGECASCADE_SYSFS_ROOT")
        .env_remove("EDGECASCADE_BOARD")
        .output()
        .expect("the binary runs")
}

#[test]
fn classify_and_bench_with_a_fake_um25c_name_it_and_give_p_times_t() {
    let mut fake = FakeUm::start();
    let spec = format!("um25c:{}", fake.path);
    let source = format!("meter: UM25C on {}, 5.1 V input, 10 Hz", fake.path);
    let o = edgecascade(&["classify", "--board", "rpi4", "--meter", &spec, "--json", "photos/chelsea.png"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let answer: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    for s in answer["stages"].as_array().expect("stages") {
        let (ms, mj) = (s["ms"].as_f64().unwrap(), s["mj"].as_f64().expect("mj"));
        assert_eq!(s["source"], source.as_str(), "{s}");
        assert_eq!(s["interpolated"], ms < 200.0, "{s}: interpolated below two 100 ms periods");
        if ms > 300.0 {
            assert!((mj - 3.06 * ms).abs() <= 0.1 * 3.06 * ms, "{s}: expected 3.06 W x {ms} ms");
        }
    }
    let o = edgecascade(&[
        "bench",
        "--board",
        "rpi4",
        "--meter",
        &spec,
        "--runs",
        "1",
        "--min-seconds",
        "1",
        "--min-inferences",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let r = &v["runs"][0];
    let (mj, s, n) = (r["mj"].as_f64().unwrap(), r["seconds"].as_f64().unwrap(), r["inferences"].as_f64().unwrap());
    let per = r["mj_per_inference"].as_f64().unwrap();
    eprintln!(
        "bench on the fake UM25C: {per:.1} mJ per inference, 3.06 W x {:.1} ms = {:.1} mJ",
        s * 1e3 / n,
        3.06 * s * 1e3 / n
    );
    assert!((mj - 3.06 * s * 1e3).abs() <= 0.1 * 3.06 * s * 1e3, "{r}");
    assert!((per - 3.06 * s * 1e3 / n).abs() <= 0.1 * 3.06 * s * 1e3 / n, "{r}");
    assert_eq!(r["source"], source.as_str());
    drop(fake.slave.take());
    // A bad spec is a usage error (exit 2) saying what is wrong.
    let o = edgecascade(&["boards", "--meter", "fluke:/dev/x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown meter kind 'fluke'"));
}
