//! Device and host end to end: the demo over a PTY pair, `run` against a `host` process over
//! TCP on loopback and over a PTY pair bridged by socat, a fault-injecting relay between them,
//! the host killed and restarted mid-run, wrong links at start, and bad frames thrown at the
//! host. Every input must get exactly one answer.
//!
//! Host only under emulation: every test starts the binary as a child process, which qemu-user
//! cannot follow without binfmt_misc. CI runs this file on x86 and leaves it out of the aarch64
//! run under qemu, saying so in its log.

mod common;

use common::relay::{spawn_tcp_relay, Faults};
use common::{bin, root, HostProc};
use edgecascade::link::{self, Encoding, ErrorCode, FrameReader, Hello, InferRequest, Message, PROTOCOL_VERSION};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn photo_names() -> Vec<String> {
    let mut v: Vec<String> = edgecascade::tune::dataset::list_images(&root().join("photos"))
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn read_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect()
}

/// Every input once, with sequence numbers 1..=n.
fn assert_exactly_once(log: &[serde_json::Value], n: usize) {
    assert_eq!(log.len(), n, "{log:#?}");
    let inputs: HashSet<&str> = log.iter().map(|l| l["input"].as_str().unwrap()).collect();
    assert_eq!(inputs.len(), n, "an input answered twice");
    let seqs: Vec<u64> = log.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>());
    assert!(log.iter().all(|l| l["class"].is_u64()), "every input has an answer");
}

#[test]
fn demo_over_a_pty_answers_with_the_host_model() {
    // Everything forwarded, original bytes sent: the host's answers must be the large model's
    // own, as `classify` computes it in-process.
    let demo = bin().args(["demo", "--json", "--threshold", "1", "--encoding", "original"]).output().unwrap();
    assert!(demo.status.success(), "{}", stderr(&demo));
    let local = bin().args(["classify", "--json", "--threshold", "1", "photos"]).output().unwrap();
    assert!(local.status.success(), "{}", stderr(&local));
    let (demo, local) = (json_lines(&demo), json_lines(&local));
    let n = photo_names().len();
    assert_eq!(demo.len(), n + 1);
    for (d, l) in demo.iter().zip(&local).take(n) {
        assert_eq!(d["input"], l["input"]);
        assert_eq!(d["model"], "efficientnet-lite2-fp32", "{d}");
        assert_eq!(d["degraded"], false, "{d}");
        assert_eq!(d["class"], l["class"], "{d} vs {l}");
        let (a, b) = (d["confidence"].as_f64().unwrap(), l["confidence"].as_f64().unwrap());
        // The host's probabilities travel as f32 and go through ln/exp on the device.
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        assert!(d["link"]["bytes_sent"].as_u64().unwrap() > 1000);
        let names: Vec<&str> = d["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"send") && names.contains(&"wait"), "{names:?}");
    }
    let summary = demo.last().unwrap();
    assert_eq!(summary["offloaded"].as_u64(), Some(n as u64));
    assert_eq!(summary["degraded"].as_u64(), Some(0));
    assert!(summary["link_bytes_sent"].as_u64().unwrap() > summary["link_bytes_received"].as_u64().unwrap());
}

#[test]
fn demo_default_mixes_device_and_host_answers() {
    let o = bin().args(["demo", "--json", "--data", "photos"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&o);
    let summary = lines.last().unwrap();
    let n = photo_names().len() as u64;
    assert_eq!(summary["answered"].as_u64(), Some(n));
    let offloaded = summary["offloaded"].as_u64().unwrap();
    assert!(offloaded > 0 && offloaded < n, "{summary}");
    assert!(summary["top1"].as_f64().is_some());
}

#[test]
fn run_over_tcp_logs_one_line_per_input() {
    let host = HostProc::tcp(0);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("results.jsonl");
    let o = bin()
        .args(["run", "--json", "--threshold", "0.9", "--link", &format!("tcp:127.0.0.1:{}", host.port())])
        .args(["--log", log.to_str().unwrap(), "photos"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let log = read_log(&log);
    assert_exactly_once(&log, photo_names().len());
    assert!(log.iter().all(|l| l["degraded"] == false), "{log:#?}");
    assert!(log.iter().any(|l| l["forwarded"] == true && l["model"] == "efficientnet-lite2-fp32"));
    for l in log.iter().filter(|l| l["forwarded"] == true) {
        let host = l["link"]["host_ms"].as_f64().unwrap();
        let (decode, infer) =
            (l["link"]["host_decode_ms"].as_f64().unwrap(), l["link"]["host_infer_ms"].as_f64().unwrap());
        assert!(host > 0.0 && infer > 0.0 && decode > 0.0 && decode + infer <= host * 1.001, "{l}");
        assert_eq!(l["link"]["encoding"], "crop-jpeg");
    }
}

/// A loopback port nobody listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Issue 18, item 3: the host down at start stops the device at start, naming the link, unless
/// `--start-degraded` says to run anyway; then every input is answered locally, marked
/// degraded, and the exit code (4) says so. Before, the run exited 0 with every input degraded.
#[test]
fn host_down_at_start_is_an_error_unless_start_degraded_then_a_bad_link_is_named() {
    let link = format!("tcp:127.0.0.1:{}", free_port());
    let run = |extra: &[&str]| {
        bin().args(["run", "--json", "--threshold", "1", "--link", &link]).args(extra).arg("photos").output().unwrap()
    };
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&link) && stderr(&o).contains("--start-degraded"), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "nothing is answered: {}", String::from_utf8_lossy(&o.stdout));
    let o = run(&["--start-degraded"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let lines = json_lines(&o);
    let n = photo_names().len();
    assert_eq!(lines.len(), n + 1, "{lines:#?}");
    assert!(lines[..n].iter().all(|l| l["degraded"] == true && l["stage"] == 0), "{lines:#?}");
    assert_eq!(lines[n]["degraded"].as_u64(), Some(n as u64));
    assert!(stderr(&o).contains(&format!("{n} input(s) answered locally, marked degraded")), "{}", stderr(&o));
    let o = bin().args(["run", "--link", "udp:1.2.3.4:5", "photos"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("udp"), "{}", stderr(&o));
}

/// Issue 18, item 3: each kind of wrong link (a device that does not exist, one that is not a
/// terminal, a refused TCP connection, an OIP server that is not there) is an error at start
/// (exit 1) naming the link and what is wrong, and runs degraded (exit 4) with
/// `--start-degraded`. Before, each exited 0 with every forwarded input "degraded".
#[test]
fn a_wrong_link_fails_at_start_naming_it_unless_start_degraded() {
    let free = free_port();
    let cases = [
        ("serial:/dev/nonexistent".to_owned(), "/dev/nonexistent does not exist"),
        ("serial:/dev/null".to_owned(), "/dev/null is not a terminal"),
        (format!("tcp:127.0.0.1:{free}"), "connection refused"),
        (format!("oip+http://127.0.0.1:{free}/v2/models/x"), "connection refused"),
    ];
    for (link, why) in &cases {
        let run = |extra: &[&str]| {
            bin()
                .args(["run", "--json", "--threshold", "1", "--link", link])
                .args(extra)
                .args(["photos/coffee.png", "photos/chelsea.png"])
                .output()
                .unwrap()
        };
        let o = run(&[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{link}: {err}");
        assert!(err.contains(link.as_str()) && err.to_lowercase().contains(why), "{link}: {err}");
        assert!(o.stdout.is_empty(), "{link}: nothing is answered: {}", String::from_utf8_lossy(&o.stdout));
        let o = run(&["--start-degraded"]);
        assert_eq!(o.status.code(), Some(4), "{link}: {}", stderr(&o));
        let lines = json_lines(&o);
        assert_eq!(lines.len(), 3, "{link}: {lines:#?}");
        assert!(lines[..2].iter().all(|l| l["degraded"] == true && l["class"].is_u64()), "{link}: {lines:#?}");
    }
}

/// A child process, killed on drop (a test that fails does not leave it running).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits at most `limit` for `child` to end; None (and the child killed) when it does not.
fn wait_at_most(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The lines of a child's pipe as they come (the child may never end).
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line from `rx` that contains `want`, within `limit`; the lines seen otherwise.
fn line_with(rx: &mpsc::Receiver<String>, want: &str, limit: Duration) -> Result<String, Vec<String>> {
    let (start, mut seen) = (Instant::now(), Vec::new());
    while let Some(left) = limit.checked_sub(start.elapsed()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(want) => return Ok(line),
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    Err(seen)
}

/// Two pseudo-terminals joined by socat, as ser2net, a USB gadget serial port or RTS/CTS flow
/// control would join a device and a host, with their paths linked at `a` and `b`; stopped on
/// drop. socat is a Debian package (.ci/run installs it).
struct Bridge {
    _socat: Killed,
}

impl Bridge {
    fn start(a: &Path, b: &Path) -> Bridge {
        let end = |p: &Path| format!("pty,raw,echo=0,link={}", p.display());
        let child = Command::new("socat")
            .args(["-d", "-d", &end(a), &end(b)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat runs (apt-get install socat)");
        let bridge = Bridge { _socat: Killed(child) };
        let start = Instant::now();
        while !(a.exists() && b.exists()) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "socat made no PTYs at {} and {}",
                a.display(),
                b.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        bridge
    }
}

/// Issue 18, item 3 (host side): a serial device that does not exist yet (a USB adapter not
/// plugged in) is waited for, saying so, and served once it appears; the ready line comes only
/// then. Before, the host printed "serving" at once and warned once a second for ever.
#[test]
fn host_waits_for_a_missing_serial_device_and_serves_it_once_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let (host_end, device_end) = (dir.path().join("ttyUSB-later"), dir.path().join("device-tty"));
    let mut child = bin()
        .args(["host", "--link", &format!("serial:{}", host_end.display())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, err) = (lines_of(child.stdout.take().unwrap()), lines_of(child.stderr.take().unwrap()));
    let _host = Killed(child);
    let waiting = format!("waiting for {} to appear", host_end.display());
    line_with(&err, &waiting, Duration::from_secs(60)).unwrap_or_else(|seen| panic!("no '{waiting}': {seen:#?}"));
    assert!(out.recv_timeout(Duration::from_millis(500)).is_err(), "a ready line before the port exists");
    let _bridge = Bridge::start(&host_end, &device_end);
    let ready = out.recv_timeout(Duration::from_secs(20)).expect("the host serves the port once it appears");
    assert!(ready.contains("serving") && ready.contains(&host_end.display().to_string()), "{ready}");
    let o = bin()
        .args(["run", "--json", "--threshold", "1", "--link", &format!("serial:{}", device_end.display())])
        .arg("photos/coffee.png")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["model"], "efficientnet-lite2-fp32", "answered by the host");
}

/// Issue 18, item 3 (host side): a path that is not a terminal is an error at start, with no
/// ready line. Before, `host --link serial:/dev/null` printed "serving" and warned for ever.
#[test]
fn host_on_a_path_that_is_no_terminal_fails_at_start() {
    let mut child = bin()
        .args(["host", "--link", "serial:/dev/null"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, err) = (lines_of(child.stdout.take().unwrap()), lines_of(child.stderr.take().unwrap()));
    let status = wait_at_most(&mut child, Duration::from_secs(60)).expect("the host stops at start");
    assert_eq!(status.code(), Some(1));
    let err: Vec<String> = err.iter().collect();
    assert!(err.iter().any(|l| l.contains("/dev/null is not a terminal")), "{err:#?}");
    assert_eq!(out.iter().count(), 0, "no ready line");
}

/// Issue 18, item 6: device and host joined by a PTY pair through socat, the host killed after
/// three inputs while the device sends raw crops (200 kB frames, more than the PTYs and socat
/// buffer): every input still gets exactly one answer and one log line, the later ones local and
/// marked degraded, each within a bounded time, and the run ends with exit code 4. Before, the
/// device's first write after the host died blocked in the kernel (`n_tty_write`) for ever.
#[test]
fn a_host_dead_behind_a_pty_bridge_never_freezes_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let (host_end, device_end) = (dir.path().join("host-tty"), dir.path().join("device-tty"));
    let _bridge = Bridge::start(&host_end, &device_end);
    let mut host = HostProc::serial(&host_end);
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let (log, out, err) = (dir.path().join("results.jsonl"), dir.path().join("out.jsonl"), dir.path().join("err.txt"));
    let child = bin()
        .args(["run", "--json", "--threshold", "1", "--encoding", "crop-raw"])
        .args(["--link", &format!("serial:{}", device_end.display())])
        .args(["--reply-timeout-ms", "2000", "--tries", "2", "--max-inputs", "8", "--idle-exit", "60"])
        .args(["--log", log.to_str().unwrap(), "--watch", inbox.to_str().unwrap()])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut device = Killed(child);
    let device_err = || std::fs::read_to_string(&err).unwrap_or_default();
    for i in 0..3 {
        feed(&inbox, &log, i, i + 1);
    }
    host.kill();
    let start = Instant::now();
    for i in 3..8 {
        feed_within(&inbox, &log, i, i + 1, Duration::from_secs(30));
    }
    let status = wait_at_most(&mut device.0, Duration::from_secs(30)).expect("the device ends after 8 inputs");
    assert_eq!(status.code(), Some(4), "{}", device_err());
    assert!(start.elapsed() < Duration::from_secs(120), "{:?} for 5 inputs", start.elapsed());
    let log = read_log(&log);
    assert_exactly_once(&log, 8);
    let degraded: Vec<bool> = log.iter().map(|l| l["degraded"].as_bool().unwrap()).collect();
    assert_eq!(degraded, [[false; 3].as_slice(), &[true; 5]].concat(), "{log:#?}");
    let answers: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("summary").is_none())
        .collect();
    assert_eq!(answers.len(), 8, "one output line per input");
    assert!(device_err().contains("write timed out"), "{}", device_err());
}

/// Writes `photos[i % n]` into `dir` under a new name and waits until the log has `lines` lines.
fn feed(dir: &Path, log: &Path, i: usize, lines: usize) {
    feed_within(dir, log, i, lines, Duration::from_secs(60))
}

/// [`feed`], failing the test when the answer takes longer than `within`.
fn feed_within(dir: &Path, log: &Path, i: usize, lines: usize, within: Duration) {
    let photos = photo_names();
    let src = root().join("photos").join(&photos[i % photos.len()]);
    let ext = src.extension().unwrap().to_str().unwrap().to_owned();
    let tmp = dir.join(format!(".tmp-{i}"));
    std::fs::copy(&src, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(format!("in-{i:02}.{ext}"))).unwrap();
    let start = Instant::now();
    while read_log(log).len() < lines {
        assert!(start.elapsed() < within, "no answer for input {i} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn host_killed_mid_run_then_back() {
    let mut host = HostProc::tcp(0);
    let port = host.port();
    let dir = tempfile::tempdir().unwrap();
    let watch = dir.path().join("camera");
    std::fs::create_dir(&watch).unwrap();
    let log = dir.path().join("results.jsonl");
    let mut device = bin()
        .args(["run", "--threshold", "1", "--link", &format!("tcp:127.0.0.1:{port}")])
        .args(["--reply-timeout-ms", "2000", "--tries", "2", "--max-inputs", "9", "--idle-exit", "60"])
        .args(["--log", log.to_str().unwrap(), "--watch", watch.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for i in 0..3 {
        feed(&watch, &log, i, i + 1);
    }
    host.kill();
    for i in 3..6 {
        feed(&watch, &log, i, i + 1);
    }
    let _host = HostProc::tcp(port);
    // Longer than the device's backoff at this point, so that it tries the host again.
    std::thread::sleep(Duration::from_secs(3));
    for i in 6..9 {
        feed(&watch, &log, i, i + 1);
    }
    let status = device.wait().unwrap();
    assert_eq!(status.code(), Some(4), "inputs answered degraded end the run with exit code 4");
    let log = read_log(&log);
    assert_exactly_once(&log, 9);
    let degraded: Vec<bool> = log.iter().map(|l| l["degraded"].as_bool().unwrap()).collect();
    assert_eq!(&degraded[..3], &[false; 3], "{log:#?}");
    assert_eq!(&degraded[3..6], &[true; 3], "{log:#?}");
    assert!(!degraded[8], "the device offloads again once the host is back: {log:#?}");
    assert_eq!(log[8]["model"], "efficientnet-lite2-fp32");
}

#[test]
fn faulty_relay_still_answers_every_input_once() {
    let host = HostProc::tcp(0);
    let faults: Faults = "corrupt=0.00001,drop=0.000003,dup=0.000002,delay=2ms,seed=11".parse().unwrap();
    let relay = spawn_tcp_relay("127.0.0.1:0", format!("127.0.0.1:{}", host.port()), faults).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let photos = photo_names();
    for round in 0..3 {
        for p in &photos {
            std::fs::copy(root().join("photos").join(p), inputs.join(format!("{round}-{p}"))).unwrap();
        }
    }
    let log = dir.path().join("results.jsonl");
    let o = bin()
        .args(["run", "--threshold", "1", "--link", &format!("tcp:{}", relay.addr())])
        .args(["--reply-timeout-ms", "3000", "--tries", "6", "--log", log.to_str().unwrap()])
        .arg(&inputs)
        .output()
        .unwrap();
    let log = read_log(&log);
    assert_exactly_once(&log, photos.len() * 3);
    // Retries get most inputs through; how many depends on where the faults fall and how busy
    // the machine is (an input whose tries all fail is answered locally, degraded: exit 4).
    let offloaded = log.iter().filter(|l| l["degraded"] == false).count();
    let code = if offloaded == log.len() { 0 } else { 4 };
    assert_eq!(o.status.code(), Some(code), "{offloaded} of {} offloaded: {}", log.len(), stderr(&o));
    assert!(offloaded * 2 >= log.len(), "retries should get most inputs through: {offloaded}/{}", log.len());
    assert!(log.iter().any(|l| l["link"]["tries"].as_u64().unwrap_or(0) > 1), "no request was retried: {log:#?}");
    let stats = relay.stats();
    assert!(stats.corrupted + stats.dropped + stats.duplicated > 0, "the relay injected no fault: {stats:?}");
}

fn connect(port: u16) -> FrameReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    FrameReader::new(s, 4 << 20)
}

fn expect_error(r: &mut FrameReader<TcpStream>, code: ErrorCode) {
    match r.read_msg() {
        Ok(Message::Error(e)) => assert_eq!(e.code, code, "{e}"),
        other => panic!("expected an {code:?} error, got {other:?}"),
    }
}

#[test]
fn host_answers_bad_frames_and_keeps_serving() {
    let host = HostProc::tcp(0);
    let mut bad = connect(host.port());
    let mut good = connect(host.port());
    // Garbage, then a frame with a flipped byte, then a wrong version, then an oversized one.
    bad.get_mut().write_all(b"\x13\x37garbage that is no frame at all\x00").unwrap();
    expect_error(&mut bad, ErrorCode::BadFrame);
    let mut frame = link::encode(&Message::Ping { nonce: 5 });
    frame[2] ^= 0x40;
    bad.get_mut().write_all(&frame).unwrap();
    expect_error(&mut bad, ErrorCode::BadFrame);
    let hello = Hello { version: PROTOCOL_VERSION + 1, ..Hello::new("old-device", vec![Encoding::Original]) };
    link::write_msg(bad.get_mut(), &Message::Hello(hello)).unwrap();
    expect_error(&mut bad, ErrorCode::BadVersion);
    let huge = vec![0x55u8; 2 << 20];
    bad.get_mut().write_all(&huge).unwrap();
    bad.get_mut().write_all(&[0]).unwrap();
    expect_error(&mut bad, ErrorCode::TooLarge);
    // A request whose payload is not an image, and a raw crop of the wrong size.
    let req = |seq, encoding, payload: Vec<u8>| {
        Message::Infer(InferRequest { seq, encoding, payload, device_probs: None, want_probs: false })
    };
    link::write_msg(bad.get_mut(), &req(7, Encoding::Original, b"not an image".to_vec())).unwrap();
    expect_error(&mut bad, ErrorCode::BadPayload);
    link::write_msg(bad.get_mut(), &req(8, Encoding::CropRaw, vec![0; 100])).unwrap();
    expect_error(&mut bad, ErrorCode::BadPayload);
    // A truncated frame: the host waits for the rest; the other device is served meanwhile.
    let frame = link::encode(&Message::Ping { nonce: 9 });
    bad.get_mut().write_all(&frame[..frame.len() / 2]).unwrap();

    link::write_msg(good.get_mut(), &Message::Hello(Hello::new("good", vec![Encoding::Original]))).unwrap();
    let Ok(Message::Welcome(w)) = good.read_msg() else { panic!("no welcome") };
    assert_eq!(w.model, "efficientnet-lite2-fp32");
    let photo = std::fs::read(root().join("photos/coffee.png")).unwrap();
    link::write_msg(good.get_mut(), &req(1, Encoding::Original, photo)).unwrap();
    match good.read_msg() {
        Ok(Message::Answer(a)) => {
            assert_eq!(a.seq, 1);
            assert_eq!(a.top[0].0, 967, "espresso: {a:?}");
        }
        other => panic!("expected an answer, got {other:?}"),
    }
    // The damaged connection still works once its frame is finished off by a delimiter.
    bad.get_mut().write_all(&[0]).unwrap();
    expect_error(&mut bad, ErrorCode::BadFrame);
    link::write_msg(bad.get_mut(), &Message::Ping { nonce: 10 }).unwrap();
    assert!(matches!(bad.read_msg(), Ok(Message::Pong { nonce: 10 })));
}

/// Issue 18, item 2: a device restarted on the same watched folder and results log goes on
/// where it stopped (no input answered twice, sequence numbers continuing, each line stamped
/// with its run and time), even after a power cut left a torn last line; `report` reads the
/// whole log, skipping the torn line. Before, the restart classified every file again (seq back
/// at 1) and appended onto the torn line, and `report` failed on it for good.
#[test]
fn a_restarted_device_goes_on_where_it_stopped_after_a_torn_log_line() {
    let host = HostProc::tcp(0);
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let log = dir.path().join("results.jsonl");
    let photos = photo_names();
    let put = |i: usize| {
        let src = root().join("photos").join(&photos[i % photos.len()]);
        let ext = src.extension().unwrap().to_str().unwrap().to_owned();
        std::fs::copy(&src, inbox.join(format!("in-{i:02}.{ext}"))).unwrap();
    };
    let run = |max: usize| {
        let o = bin()
            .args(["run", "--threshold", "1", "--link", &format!("tcp:127.0.0.1:{}", host.port())])
            .args(["--max-inputs", &max.to_string(), "--idle-exit", "30", "--settle", "0.2"])
            .args(["--log", log.to_str().unwrap(), "--watch", inbox.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    };
    for i in 0..3 {
        put(i);
    }
    run(3);
    assert_eq!(std::fs::read_dir(inbox.join("done")).unwrap().count(), 3, "answered inputs are filed away");
    // A power cut mid-write leaves half a line.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":4,\"input\":\"in-03.j").unwrap();
    drop(f);
    for i in 3..5 {
        put(i);
    }
    run(2);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    let whole: Vec<serde_json::Value> =
        lines.iter().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).collect();
    assert_exactly_once(&whole, 5);
    let runs: HashSet<&str> = whole.iter().map(|l| l["run"].as_str().unwrap()).collect();
    assert_eq!(runs.len(), 2, "{text}");
    assert!(whole.iter().all(|l| l["time"].as_str().is_some_and(|t| t.ends_with('Z'))), "{text}");
    let report = bin().args(["report", "--json", log.to_str().unwrap()]).output().unwrap();
    assert!(report.status.success(), "{}", stderr(&report));
    let r: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!((r["inputs"].as_u64(), r["torn"].as_u64()), (Some(5), Some(1)), "{r}");
    assert!(stderr(&report).contains("torn line"), "{}", stderr(&report));
}
