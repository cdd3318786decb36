//! Tests of `poll.rs`.

use super::*;
use crate::oip::http::MAX_HEAD;
use std::sync::atomic::AtomicUsize;

/// Answers `200 <target>` to every request without reading a body; `/block` waits until
/// `release` is set; a request with an `X-Token` header proves its connection.
struct Echo {
    release: AtomicBool,
    served: AtomicUsize,
}

impl Serve for Echo {
    fn request(&self, wire: &mut Wire, head: RequestHead, _: Instant, _: SocketAddr) -> After {
        while head.target == "/block" && !self.release.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.served.fetch_add(1, Ordering::Relaxed);
        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}", head.target.len(), head.target);
        match wire.write_all(reply.as_bytes()) {
            Ok(()) => After::Keep { proven: head.header("x-token").is_some() },
            Err(_) => After::Close,
        }
    }
    fn refusal(&self, status: u16, why: &str) -> Vec<u8> {
        format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{why}", why.len()).into_bytes()
    }
}

/// An endpoint on a free loopback port, served on a thread until dropped.
struct Endpoint {
    addr: SocketAddr,
    echo: Arc<Echo>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Endpoint {
    fn start(cfg: OipConfig) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = Arc::new(Echo { release: AtomicBool::new(false), served: AtomicUsize::new(0) });
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (echo.clone(), stop.clone());
        let thread = std::thread::spawn(move || run(listener, &cfg, &s, &*e));
        Endpoint { addr, echo, stop, thread: Some(thread) }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.echo.release.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        let ended = self.thread.take().unwrap().join().unwrap();
        if !std::thread::panicking() {
            ended.unwrap();
        }
    }
}

fn config() -> OipConfig {
    OipConfig { max_conns: 2, max_waiting: 4, max_kept: 4, head_time: Duration::from_millis(400), ..Default::default() }
}

/// Sends `req` and reads one reply of `Content-Length` framing: status line and body.
fn ask(s: &mut TcpStream, req: &str) -> (String, String) {
    s.write_all(req.as_bytes()).unwrap();
    read_reply(s)
}

fn read_reply(s: &mut TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "the connection ended mid-head: {:?}", String::from_utf8_lossy(&got));
        got.push(byte[0]);
    }
    let head = String::from_utf8(got).unwrap();
    let len: usize = head.split("Content-Length: ").nth(1).unwrap().split("\r\n").next().unwrap().parse().unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (head.lines().next().unwrap().to_owned(), String::from_utf8(body).unwrap())
}

/// True when the server has closed `s` (what is left to read ends, or the socket was reset).
fn closed(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn a_head_that_keeps_trickling_gets_408_at_its_deadline_while_others_are_served() {
    let ep = Endpoint::start(config());
    let t = Instant::now();
    let mut slow = ep.connect();
    slow.write_all(b"GET /slow HTTP/1.1\r\nX-A: ").unwrap();
    let mut fast = ep.connect();
    while t.elapsed() < Duration::from_millis(300) {
        slow.write_all(b"a").unwrap();
        assert_eq!(ask(&mut fast, "GET /fast HTTP/1.1\r\n\r\n").1, "/fast");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, why) = read_reply(&mut slow);
    assert_eq!(status, "HTTP/1.1 408 X");
    assert!(why.contains("did not arrive whole within 400ms"), "{why}");
    assert!(t.elapsed() >= Duration::from_millis(400) && t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(closed(&mut slow));
    // Malformed and oversized heads are answered by the poller too.
    assert!(ask(&mut ep.connect(), "GET / HTTP/1.1\r\nBad Header\r\n\r\n").0.starts_with("HTTP/1.1 400"));
    let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD + 10));
    assert!(ask(&mut ep.connect(), &long).0.starts_with("HTTP/1.1 431"));
}

#[test]
fn past_its_bound_the_oldest_connection_without_the_token_is_closed_not_the_newcomer() {
    let ep = Endpoint::start(config());
    // A device with the token, kept alive: not counted against the waiting ones.
    let mut device = ep.connect();
    assert_eq!(ask(&mut device, "GET /d HTTP/1.1\r\nX-Token: t\r\n\r\n").1, "/d");
    let mut waiting: Vec<TcpStream> = (0..4).map(|_| ep.connect()).collect();
    for w in &mut waiting {
        w.write_all(b"GET /w HTTP/1.1\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut newcomer = ep.connect();
    assert_eq!(ask(&mut newcomer, "GET /new HTTP/1.1\r\n\r\n").1, "/new");
    let (status, why) = read_reply(&mut waiting[0]);
    assert_eq!(status, "HTTP/1.1 503 X", "{why}");
    assert!(closed(&mut waiting[0]));
    // The others wait on (until their deadline), and the device is still served.
    waiting[1].set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    assert!(waiting[1].read(&mut [0u8; 1]).is_err(), "still open, nothing to read");
    assert_eq!(ask(&mut device, "GET /d2 HTTP/1.1\r\n\r\n").1, "/d2");
    // Past the head time a silent connection without the token is closed; the device's
    // (idle up to `idle`) is not.
    std::thread::sleep(Duration::from_millis(500));
    assert!(closed(&mut newcomer));
    assert_eq!(ask(&mut device, "GET /d3 HTTP/1.1\r\n\r\n").1, "/d3");
}

#[test]
fn requests_past_max_conns_wait_for_a_worker_then_get_503_and_pipelined_ones_keep_their_order() {
    let ep = Endpoint::start(config());
    let mut blocked: Vec<TcpStream> = (0..2).map(|_| ep.connect()).collect();
    for b in &mut blocked {
        b.write_all(b"GET /block HTTP/1.1\r\n\r\n").unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (status, why) = ask(&mut ep.connect(), "GET /third HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 503 X");
    assert!(why.contains("serves 2 requests at once"), "{why}");
    assert!(t.elapsed() >= WORKER_WAIT, "it waited for a worker first ({:?})", t.elapsed());
    // One that comes while both are busy is served once a worker is free.
    let mut fourth = ep.connect();
    fourth.write_all(b"GET /fourth HTTP/1.1\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    ep.echo.release.store(true, Ordering::Relaxed);
    assert_eq!(read_reply(&mut fourth).1, "/fourth");
    for b in &mut blocked {
        assert_eq!(read_reply(b).1, "/block");
    }
    // Two requests in one write, then a third after: each answered, in order.
    let mut c = ep.connect();
    c.write_all(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut c).1, "/1");
    assert_eq!(read_reply(&mut c).1, "/2");
    assert_eq!(ask(&mut c, "GET /3 HTTP/1.1\r\n\r\n").1, "/3");
    assert_eq!(ep.echo.served.load(Ordering::Relaxed), 6);
}
