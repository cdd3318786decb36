//! The link over TCP loopback: the scripted conversation on a direct connection, through a
//! clean relay, and through relays that corrupt and drop bytes (where only safety is asserted:
//! no panic, and nothing arrives that was not sent).

mod common;

use common::link::*;
use common::relay::{spawn_tcp_relay, Faults};
use edgecascade::link::*;
use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

/// Accepts one connection (giving up after 10 s) with the test's read timeout set.
fn accept_one(l: &TcpListener) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn tcp(addr: &str) -> Box<dyn Stream> {
    let addr: LinkAddr = format!("tcp:{addr}").parse().unwrap();
    connect(&addr, IO_TIMEOUT).expect("connect over loopback")
}

#[test]
fn tcp_conversation_with_a_100k_payload_and_a_corrupted_frame() {
    let (l, addr) = listener();
    let host = thread::spawn(move || {
        let r = host_session(accept_one(&l), 100_000);
        // After the device hangs up, the host sees the link closed.
        let mut r = r;
        assert!(matches!(r.read_msg(), Err(LinkError::Closed)));
    });
    let device = device_session(tcp(&addr), 100_000);
    drop(device);
    host.join().expect("host thread");
}

#[test]
fn read_timeout_is_reported_and_the_link_stays_usable() {
    let (l, addr) = listener();
    let mut device = FrameReader::new(tcp(&addr), 4096);
    let mut host = accept_one(&l);
    device.get_mut().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    // Half a frame, then silence: a timeout, and nothing is lost.
    let frame = encode(&Message::Pong { nonce: 77 });
    use std::io::Write;
    host.write_all(&frame[..4]).unwrap();
    assert!(device.read_msg().unwrap_err().is_timeout());
    host.write_all(&frame[4..]).unwrap();
    device.get_mut().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(device.read_msg().unwrap(), Message::Pong { nonce: 77 });
}

#[test]
fn connection_refused_is_an_io_error() {
    let (l, addr) = listener();
    drop(l);
    let link: LinkAddr = format!("tcp:{addr}").parse().unwrap();
    match connect(&link, Duration::from_secs(2)) {
        // The callers name the link (`connect`'s errors say what is wrong).
        Err(LinkError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Err(e) => panic!("expected an I/O error, got {e}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}

#[test]
fn conversation_through_a_clean_relay() {
    let (l, host_addr) = listener();
    let faults: Faults = "delay=1ms".parse().unwrap();
    let mut relay = spawn_tcp_relay("127.0.0.1:0", host_addr, faults).unwrap();
    let host = thread::spawn(move || host_session(accept_one(&l), 100_000));
    let device = device_session(tcp(&relay.addr().to_string()), 100_000);
    let host = host.join().expect("host thread");
    let stats = relay.stats();
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.dropped + stats.corrupted + stats.duplicated, 0);
    assert!(stats.bytes_out > 100_000, "{stats:?}");
    // Stopping the relay closes both sides.
    relay.stop();
    let (mut device, mut host) = (device, host);
    assert!(matches!(device.read_msg(), Err(LinkError::Closed)));
    assert!(matches!(host.read_msg(), Err(LinkError::Closed)));
}

/// What the echo host saw: messages that decoded, and frame errors.
struct HostLog {
    received: Vec<Message>,
    frame_errors: usize,
    /// Index (in arrival order of results) of the first frame error and of the last message
    /// before the sentinels.
    first_error_at: Option<usize>,
    last_message_at: Option<usize>,
}

/// A host that answers Ping with Pong and Infer with Answer until the link closes or is idle
/// for `idle`.
fn echo_host(l: TcpListener, idle: Duration) -> JoinHandle<HostLog> {
    thread::spawn(move || {
        let s = accept_one(&l);
        s.set_read_timeout(Some(idle)).unwrap();
        let mut r = FrameReader::new(s, DEFAULT_MAX_FRAME as usize);
        let mut log = HostLog { received: vec![], frame_errors: 0, first_error_at: None, last_message_at: None };
        for i in 0.. {
            match r.read_msg() {
                Ok(m) => {
                    let reply = match &m {
                        Message::Ping { nonce } => Some(Message::Pong { nonce: *nonce }),
                        Message::Infer(req) => Some(answer(req.seq)),
                        _ => None,
                    };
                    if !matches!(m, Message::Ping { nonce } if nonce > u64::MAX - SENTINELS) {
                        log.last_message_at = Some(i);
                    }
                    log.received.push(m);
                    if let Some(reply) = reply {
                        if write_msg(r.get_mut(), &reply).is_err() {
                            break;
                        }
                    }
                }
                Err(LinkError::Frame(_)) => {
                    log.frame_errors += 1;
                    log.first_error_at.get_or_insert(i);
                }
                Err(_) => break, // closed or idle: the test is over
            }
        }
        log
    })
}

/// What the device sends in the faulty-relay tests: pings, with a small Infer every tenth.
fn device_messages(n: u64) -> Vec<Message> {
    (0..n).map(|i| if i % 10 == 9 { infer(i, 300) } else { Message::Ping { nonce: i } }).collect()
}

/// The replies the host may legitimately send to `sent`.
fn possible_replies(sent: &[Message]) -> Vec<Message> {
    sent.iter()
        .map(|m| match m {
            Message::Ping { nonce } => Message::Pong { nonce: *nonce },
            Message::Infer(r) => answer(r.seq),
            _ => unreachable!(),
        })
        .collect()
}

/// Pings sent last, many times over: the first of their Pongs to arrive means every earlier
/// reply that survived has arrived too (TCP keeps order through the relay).
const SENTINELS: u64 = 20;

fn is_sentinel_pong(m: &Message) -> bool {
    matches!(m, Message::Pong { nonce } if *nonce > u64::MAX - SENTINELS)
}

/// Sends `device_messages(n)` and the sentinel pings through a relay with `faults`, then reads
/// replies until a sentinel's Pong arrives (or, if all of them were lost, until the link has
/// been idle for 3 s). Returns the host's log, the replies that decoded, and the device's
/// frame error count.
fn run_through_relay(faults: Faults, n: u64) -> (HostLog, Vec<Message>, usize) {
    let (l, host_addr) = listener();
    let relay_faults = faults.to_string();
    let relay = spawn_tcp_relay("127.0.0.1:0", host_addr, faults).unwrap();
    let host = echo_host(l, IO_TIMEOUT);
    let mut device = FrameReader::new(tcp(&relay.addr().to_string()), DEFAULT_MAX_FRAME as usize);
    let mut sent = device_messages(n);
    sent.extend((0..SENTINELS).map(|k| Message::Ping { nonce: u64::MAX - k }));
    for m in &sent {
        write_msg(device.get_mut(), m).unwrap();
    }
    device.get_mut().set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let (mut replies, mut errors) = (vec![], 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match device.read_msg() {
            Ok(m) if is_sentinel_pong(&m) => break,
            Ok(m) => replies.push(m),
            Err(LinkError::Frame(_)) => errors += 1,
            Err(LinkError::Timeout) | Err(LinkError::Closed) => break,
            Err(e) => panic!("device: {e}"),
        }
    }
    drop(device);
    let log = host.join().expect("host thread did not panic");
    eprintln!(
        "relay {}: host got {} of {} ({} frame errors); device got {} replies ({errors} frame \
         errors); {:?}",
        relay_faults,
        log.received.len(),
        sent.len(),
        log.frame_errors,
        replies.len(),
        relay.stats()
    );
    drop(relay);
    let sent_set: Vec<Message> = sent;
    for m in &log.received {
        assert!(sent_set.contains(m), "host got a message that was never sent: {m:?}");
    }
    let allowed = possible_replies(&sent_set);
    for m in &replies {
        assert!(allowed.contains(m), "device got a reply that was never sent: {m:?}");
    }
    (log, replies, errors)
}

#[test]
fn corrupting_relay_reports_frame_errors_and_later_frames_arrive() {
    let faults: Faults = "corrupt=0.05,seed=7".parse().unwrap();
    let (log, replies, device_errors) = run_through_relay(faults, 200);
    assert!(log.frame_errors > 0, "the host saw no frame errors");
    assert!(device_errors > 0, "the device saw no frame errors");
    let (first_err, last_ok) = (log.first_error_at.unwrap(), log.last_message_at.unwrap());
    assert!(last_ok > first_err, "no frame arrived after the first error");
    assert!(log.received.len() >= 20, "only {} of 200 arrived", log.received.len());
    assert!(!replies.is_empty());
    // Each reply answers a distinct request.
    let distinct: HashSet<String> = replies.iter().map(|m| format!("{m:?}")).collect();
    assert_eq!(distinct.len(), replies.len());
}

#[test]
fn dropping_relay_never_delivers_anything_unsent() {
    let faults: Faults = "drop=0.02,dup=0.01,seed=11".parse().unwrap();
    let (log, replies, _) = run_through_relay(faults, 200);
    // Losses are allowed; the checks that matter ran inside run_through_relay.
    assert!(log.received.len() + log.frame_errors > 0);
    let _ = replies;
}

/// A paced stream carries frames intact and says it is paced, through a Box<dyn Stream>.
#[test]
fn paced_tcp_stream_delivers_frames() {
    let (l, addr) = listener();
    let shaping: Shaping = "baud=20000000,latency=1ms".parse().unwrap();
    let paced: Box<dyn Stream> = Box::new(Paced::new(tcp(&addr), shaping.clone()).pace_reads(true));
    assert_eq!(paced.shaping(), Some(&shaping));
    let mut host = FrameReader::new(accept_one(&l), DEFAULT_MAX_FRAME as usize);
    assert_eq!(Stream::shaping(host.get_ref()), None);
    let mut device = FrameReader::new(paced, DEFAULT_MAX_FRAME as usize);
    write_msg(device.get_mut(), &infer(5, 20_000)).unwrap();
    assert_eq!(host.read_msg().unwrap(), infer(5, 20_000));
    write_msg(host.get_mut(), &answer(5)).unwrap();
    assert_eq!(device.read_msg().unwrap(), answer(5));
    let clone = device.get_ref().try_clone_box().unwrap();
    assert_eq!(clone.shaping(), Some(&shaping));
}
