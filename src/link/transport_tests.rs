//! Tests of `transport.rs`.

use super::*;
use crate::link::paced::*;
use std::io::Cursor;

fn addr(s: &str) -> Result<LinkAddr, String> {
    s.parse::<LinkAddr>().map_err(|e| e.to_string())
}

#[test]
fn parses_good_addresses() {
    assert_eq!(
        addr("serial:/dev/ttyUSB0?baud=115200").unwrap(),
        LinkAddr::Serial { path: "/dev/ttyUSB0".into(), baud: 115_200 }
    );
    assert_eq!(
        addr("serial:/dev/ttyACM1").unwrap(),
        LinkAddr::Serial { path: "/dev/ttyACM1".into(), baud: DEFAULT_BAUD }
    );
    assert_eq!(addr(" tcp:127.0.0.1:7000 ").unwrap(), LinkAddr::Tcp { addr: "127.0.0.1:7000".into() });
    assert_eq!(addr("tcp://host.local:9").unwrap(), LinkAddr::Tcp { addr: "host.local:9".into() });
    assert_eq!(addr("tcp:[::1]:7000").unwrap(), LinkAddr::Tcp { addr: "[::1]:7000".into() });
    for s in ["serial:/dev/ttyUSB0?baud=921600", "tcp:localhost:5555", "serial:/dev/pts/3?baud=9600"] {
        assert_eq!(addr(s).unwrap().to_string(), s);
        assert_eq!(addr(&addr(s).unwrap().to_string()).unwrap(), addr(s).unwrap());
    }
    assert_eq!(addr("serial:/dev/ttyS0").unwrap().to_string(), "serial:/dev/ttyS0?baud=921600");
    assert_eq!(
        addr("oip+http://127.0.0.1:8000/v2/models/lite2").unwrap(),
        LinkAddr::Oip { addr: "127.0.0.1:8000".into(), model: "lite2".into(), version: None }
    );
    assert_eq!(
        addr("oip+http://triton.local/v2/models/m/versions/3/").unwrap(),
        LinkAddr::Oip { addr: "triton.local:80".into(), model: "m".into(), version: Some("3".into()) }
    );
    for s in ["oip+http://h:1/v2/models/m", "oip+http://[::1]:8000/v2/models/m/versions/2"] {
        assert_eq!(addr(s).unwrap().to_string(), s);
    }
}

#[test]
fn rejects_bad_addresses_with_reasons() {
    let cases = [
        ("x", "unknown link scheme 'x'"),
        ("udp:1.2.3.4:5", "unknown link scheme 'udp'"),
        ("serial:/dev/ttyUSB0?baud=fast", "bad baud 'fast'"),
        ("serial:/dev/ttyUSB0?baud=0", "bad baud '0'"),
        ("serial:/dev/ttyUSB0?parity=odd", "unknown serial option 'parity=odd'"),
        ("serial:", "missing device path"),
        ("tcp:localhost", "missing port"),
        ("tcp:localhost:", "missing port"),
        ("tcp::80", "missing host"),
        ("tcp:localhost:http", "bad port 'http'"),
        ("tcp:localhost:70000", "bad port '70000'"),
        ("oip+http:h:8000/v2/models/m", "bad OIP link"),
        ("oip+http://h:8000/models/m", "bad OIP model path"),
        ("oip+http://h:8000/v2/models/", "bad OIP model path"),
        ("oip+http://h:x/v2/models/m", "bad port 'x'"),
    ];
    for (s, want) in cases {
        let e = addr(s).unwrap_err();
        assert!(e.contains(want), "{s}: {e}");
    }
    assert!(addr("x").unwrap_err().contains("(expected serial: or tcp:"));
    assert!(addr("udp:x").unwrap_err().contains("(expected serial:, tcp: or oip+http:)"));
}

#[test]
fn parses_shaping() {
    let s: Shaping = "baud=115200,latency=20ms,loss=0.01".parse().unwrap();
    assert_eq!(s, Shaping { bits_per_sec: Some(115_200), latency: Duration::from_millis(20), loss: 0.01, seed: 0 });
    assert!(s.is_active());
    assert_eq!(s.to_string(), "baud=115200,latency=20ms,loss=0.01,seed=0");
    assert_eq!(s.to_string().parse::<Shaping>().unwrap(), s);
    let s: Shaping = "latency=1.5s, loss=2%, seed=9".parse().unwrap();
    assert_eq!(s.latency, Duration::from_millis(1500));
    assert!((s.loss - 0.02).abs() < 1e-12);
    assert_eq!(s.seed, 9);
    assert_eq!("latency=250us".parse::<Shaping>().unwrap().to_string(), "latency=250us");
    let none: Shaping = "".parse().unwrap();
    assert!(!none.is_active());
    assert_eq!(none.to_string(), "none");
    assert_eq!("none".parse::<Shaping>().unwrap(), Shaping::default());
    for (bad, want) in [
        ("baud=0", "bad baud '0'"),
        ("baud=fast", "bad baud 'fast'"),
        ("latency=20", "bad duration '20'"),
        ("latency=-1ms", "bad duration '-1ms'"),
        ("loss=1.5", "bad loss '1.5'"),
        ("jitter=3ms", "unknown key 'jitter'"),
        ("baud", "'baud' is not KEY=VALUE"),
    ] {
        let e = bad.parse::<Shaping>().unwrap_err().to_string();
        assert!(e.contains(want) && e.starts_with("bad link shaping"), "{bad}: {e}");
    }
}

#[test]
fn transfer_time_is_ten_bits_per_byte_plus_latency() {
    assert_eq!(transfer_time(1000, Some(10_000), Duration::ZERO), Duration::from_secs(1));
    assert_eq!(transfer_time(1000, Some(10_000), Duration::from_millis(20)), Duration::from_millis(1020));
    assert_eq!(transfer_time(100_000, Some(921_600), Duration::ZERO), Duration::from_nanos(1_085_069_444));
    assert_eq!(transfer_time(12_345, None, Duration::from_millis(5)), Duration::from_millis(5));
    assert_eq!(transfer_time(0, Some(9600), Duration::ZERO), Duration::ZERO);
    assert_eq!(transfer_time(usize::MAX, Some(1), Duration::MAX), Duration::MAX);
    let s = Shaping { bits_per_sec: Some(115_200), ..Shaping::default() };
    assert_eq!(s.transfer_time(11_520), Duration::from_secs(1));
}

#[test]
fn loss_drops_about_the_right_fraction_deterministically() {
    let shaping = Shaping { loss: 0.1, seed: 42, ..Shaping::default() };
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let run = || {
        let mut p = Paced::new(Vec::new(), shaping.clone());
        p.write_all(&data).unwrap();
        let (written, lost) = p.counts();
        (p.into_inner(), written, lost)
    };
    let (a, written, lost) = run();
    let (b, ..) = run();
    assert_eq!(a, b, "same seed, same losses");
    assert_eq!(written as usize, a.len());
    assert_eq!(written + lost, data.len() as u64);
    assert!((9_000..11_000).contains(&lost), "lost {lost} of 100000");
    // Survivors keep their order: `a` is a subsequence of `data`.
    let mut it = data.iter();
    assert!(a.iter().all(|x| it.any(|y| y == x)));
    // No loss, no change.
    let mut p = Paced::new(Vec::new(), Shaping::default());
    p.write_all(&data).unwrap();
    assert!(!p.is_paced());
    assert_eq!(p.into_inner(), data);
}

#[test]
fn paced_passes_reads_and_delegates() {
    let shaping: Shaping = "baud=100000000".parse().unwrap();
    let mut p = Paced::new(Cursor::new(b"hello".to_vec()), shaping).pace_reads(true);
    let mut s = String::new();
    p.read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello");
    assert!(p.is_paced());
    assert_eq!(p.shaping().bits_per_sec, Some(100_000_000));
}

#[test]
fn durations_parse_and_print() {
    assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    assert_eq!(parse_duration("5ms").unwrap(), Duration::from_millis(5));
    assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
    assert_eq!(parse_duration("0.5ms").unwrap(), Duration::from_micros(500));
    assert!(parse_duration("ms").is_err());
    assert!(parse_duration("1e99s").is_err());
    assert_eq!(fmt_duration(Duration::from_micros(1500)), "1500us");
    assert_eq!(fmt_duration(Duration::from_secs(2)), "2000ms");
}
