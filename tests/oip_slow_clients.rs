//! The OIP endpoint against slow and idle clients: connections trickling their request heads
//! and kept-alive idle ones, by the hundred, while health and inference requests from others
//! are answered within a second each.

mod common;

use common::oip::*;
use edgecascade::offload::oip::HttpConn;
use edgecascade::oip::{self, Tensor};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Raises this process's soft limit on open files to at least `want` (up to its hard limit),
/// for tests that hold hundreds of sockets; the host processes they start inherit it.
fn raise_fd_limit(want: libc::rlim_t) -> libc::rlim_t {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// Connections that send the start of a request head and then one more byte of it every
/// second, never finishing it (a slowloris client), from a thread of their own that also reads
/// what the server sends them and notes when it closes them.
struct Tricklers {
    opened: Vec<Instant>,
    seen: Arc<Mutex<Vec<Trickled>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What one trickling connection got back, and when the server closed it.
#[derive(Clone, Default)]
struct Trickled {
    got: Vec<u8>,
    closed: Option<Instant>,
}

impl Tricklers {
    fn open(addr: &str, n: usize) -> Tricklers {
        use std::io::{Read, Write};
        let start = format!("POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        let (mut socks, mut opened) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let mut s = TcpStream::connect(addr).expect("a trickler connects");
            s.write_all(start.as_bytes()).unwrap();
            s.set_nonblocking(true).unwrap();
            opened.push(Instant::now());
            socks.push(s);
        }
        let seen = Arc::new(Mutex::new(vec![Trickled::default(); n]));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while !stop2.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let mut seen = seen2.lock().unwrap();
                for (mut s, t) in socks.iter().zip(seen.iter_mut()).filter(|(_, t)| t.closed.is_none()) {
                    let end = loop {
                        match s.read(&mut buf) {
                            Ok(0) => break true,
                            Ok(n) => t.got.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                            Err(_) => break true,
                        }
                    };
                    if end || matches!(s.write(b"a"), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock) {
                        t.closed = Some(Instant::now());
                    }
                }
            }
        });
        Tricklers { opened, seen, stop, thread: Some(thread) }
    }

    /// How many of the connections the server has closed.
    fn closed(&self) -> usize {
        self.seen.lock().unwrap().iter().filter(|t| t.closed.is_some()).count()
    }
}

impl Drop for Tricklers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request on a new connection, its status and how long it took from connecting to the
/// whole answer (an error if it did not come within `limit`).
fn timed(addr: &str, path: &str, headers: &[(&str, String)], body: &[u8], limit: Duration) -> (u16, Duration) {
    let t = Instant::now();
    let s = TcpStream::connect_timeout(&addr.parse().unwrap(), limit).expect("connects");
    let mut c = HttpConn::new(Box::new(s), addr);
    c.send(if body.is_empty() { "GET" } else { "POST" }, path, headers, body).unwrap();
    let r = c
        .receive(limit.saturating_sub(t.elapsed()))
        .unwrap_or_else(|e| panic!("{path}: no answer within {limit:?}: {e}"));
    (r.status, t.elapsed())
}

/// Issue 18, item 7, as reported: with a token set, 70 connections trickling a request head
/// (no token needed for that) held every connection slot, and `GET /v2/health/ready` got 503.
#[test]
fn seventy_trickling_heads_do_not_keep_health_ready_from_its_answer() {
    raise_fd_limit(1024);
    let host = start_host(&["--token", "T"], &[]);
    let tricklers = Tricklers::open(&host.http, 70);
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        let (status, took) = timed(&host.http, "/v2/health/ready", &[], &[], Duration::from_secs(1));
        assert_eq!(status, 200, "health ready with 70 tricklers connected ({took:?})");
    }
    assert_eq!(tricklers.closed(), 0, "the tricklers are held until their head's deadline");
}

/// Issue 18's acceptance test of the host's HTTP side: against a host with a token, 500
/// connections trickling request heads (a byte a second, never finished) and 200 idle
/// kept-alive ones (one request each, then silence) leave health probes and real inferences,
/// each on a new connection, answered within a second for 15 s; the idle connections are
/// still served after it, and the trickling ones are closed (408) once their head's deadline
/// has passed, not before.
#[test]
fn trickling_and_idle_connections_leave_health_and_inference_answered_within_a_second() {
    assert!(raise_fd_limit(2048) >= 1500, "this test holds about 1,500 open files: raise `ulimit -n`");
    let host = start_host(&["--token", "T"], &[]);
    let head_time = edgecascade::host::oip::OipConfig::default().head_time;
    let auth = vec![("Authorization", "Bearer T".to_owned())];
    let tricklers = Tricklers::open(&host.http, 500);
    let mut idle: Vec<HttpConn> = (0..200)
        .map(|_| {
            let mut c = host.conn();
            assert_eq!(request(&mut c, "GET", "/v2", &auth, &[]).0, 200);
            c
        })
        .collect();
    let input = Tensor::new("input", vec![1, 3, 224, 224], photo_tensor("coffee.png"));
    let (body, hl) = oip::encode_request("s", &[input], None, true);
    let mut infer_headers = auth.clone();
    infer_headers.push((oip::HEADER_LEN, hl.unwrap().to_string()));
    let infer_path = format!("/v2/models/{NAME}/infer");
    let second = Duration::from_secs(1);
    let (mut health, mut inferred) = (Vec::new(), Vec::new());
    let until = tricklers.opened[0] + Duration::from_secs(15);
    assert!(head_time > Duration::from_secs(16), "the tricklers outlast the sampling");
    while Instant::now() < until {
        let (status, took) = timed(&host.http, "/v2/health/ready", &[], &[], second);
        assert_eq!(status, 200, "health ready under load");
        health.push(took);
        let (status, took) = timed(&host.http, &infer_path, &infer_headers, &body, second);
        assert_eq!(status, 200, "an inference under load");
        inferred.push(took);
        std::thread::sleep(Duration::from_millis(200));
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        format!("{} answered, median {:?}, max {:?}", v.len(), v[v.len() / 2], v[v.len() - 1])
    };
    eprintln!(
        "with 500 tricklers and 200 idle connections: health {}; infer {}",
        stats(&mut health),
        stats(&mut inferred)
    );
    assert_eq!(tricklers.closed(), 0, "no trickler is closed before its head's deadline");
    for c in idle.iter_mut().step_by(10) {
        assert_eq!(request(c, "GET", "/v2/health/ready", &auth, &[]).0, 200, "an idle kept-alive connection");
    }
    // Each trickler gets its 408 and is closed once its deadline has passed (seen within the
    // trickling thread's one-second rounds).
    let end = *tricklers.opened.last().unwrap() + head_time + Duration::from_secs(4);
    while tricklers.closed() < 500 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = tricklers.seen.lock().unwrap().clone();
    for (t, opened) in seen.iter().zip(&tricklers.opened) {
        let closed = t.closed.expect("every trickler is closed by the server") - *opened;
        let early = Duration::from_millis(50); // the server counts from accepting, a moment before `opened`
        assert!(closed + early >= head_time && closed <= head_time + Duration::from_secs(4), "closed after {closed:?}");
        let got = String::from_utf8_lossy(&t.got);
        assert!(got.starts_with("HTTP/1.1 408") && got.contains("did not arrive whole within 20s"), "{got}");
    }
}
