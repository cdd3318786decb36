//! The fault-injecting relay of the link tests (tests/common/relay.rs): its fault syntax, and
//! faults applied per byte, deterministically for a seed.

mod common;

use common::relay::{apply, apply_counted, Faults};
use edgecascade::link::rng::Rng;
use std::time::Duration;

#[test]
fn parses_faults() {
    let f: Faults = "drop=0.01,corrupt=0.02,dup=0.03,delay=5ms,seed=7".parse().unwrap();
    assert_eq!(f, Faults { drop: 0.01, corrupt: 0.02, duplicate: 0.03, delay: Duration::from_millis(5), seed: 7 });
    assert_eq!(f.to_string(), "drop=0.01,corrupt=0.02,dup=0.03,delay=5ms,seed=7");
    assert_eq!(f.to_string().parse::<Faults>().unwrap(), f);
    assert_eq!("duplicate=10%".parse::<Faults>().unwrap().duplicate, 0.1);
    assert!(!"".parse::<Faults>().unwrap().is_active());
    for (bad, want) in [
        ("drop=2", "bad drop '2'"),
        ("corrupt=x", "bad corrupt 'x'"),
        ("delay=5", "bad duration '5'"),
        ("seed=-1", "bad seed '-1'"),
        ("reorder=0.1", "unknown key 'reorder'"),
    ] {
        let e = bad.parse::<Faults>().unwrap_err().to_string();
        assert!(e.contains(want) && e.starts_with("bad relay faults"), "{bad}: {e}");
    }
}

#[test]
fn apply_with_no_faults_is_identity() {
    let data: Vec<u8> = (0..=255).collect();
    let mut rng = Rng::new(1);
    assert_eq!(apply(&Faults::default(), &mut rng, &data), data);
    // And it drew nothing.
    assert_eq!(rng.next_u64(), Rng::new(1).next_u64());
}

#[test]
fn apply_rates_and_determinism() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let faults = Faults { drop: 0.05, corrupt: 0.02, duplicate: 0.03, seed: 3, ..Faults::default() };
    let (a, ca) = apply_counted(&faults, &mut Rng::new(3), &data);
    let (b, cb) = apply_counted(&faults, &mut Rng::new(3), &data);
    assert_eq!((a.clone(), ca), (b, cb), "same seed, same faults");
    assert!((4_500..5_500).contains(&ca.dropped), "{ca:?}");
    // Corrupt and dup apply to the ~95,000 bytes kept.
    assert!((1_650..2_150).contains(&ca.corrupted), "{ca:?}");
    assert!((2_550..3_150).contains(&ca.duplicated), "{ca:?}");
    assert_eq!(a.len() as u64, 100_000 - ca.dropped + ca.duplicated);
    // Per byte: splitting the input into chunks changes nothing.
    let mut rng = Rng::new(3);
    let chunked: Vec<u8> = data.chunks(777).flat_map(|c| apply(&faults, &mut rng, c)).collect();
    assert_eq!(chunked, a);
}

#[test]
fn corrupt_flips_exactly_one_bit() {
    let data = vec![0x5a_u8; 1000];
    let faults = Faults { corrupt: 1.0, ..Faults::default() };
    let out = apply(&faults, &mut Rng::new(5), &data);
    assert_eq!(out.len(), data.len());
    assert!(out.iter().all(|b| (b ^ 0x5a).count_ones() == 1));
    let all_dup = Faults { duplicate: 1.0, ..Faults::default() };
    assert_eq!(apply(&all_dup, &mut Rng::new(5), b"ab"), b"aabb");
    let all_drop = Faults { drop: 1.0, ..Faults::default() };
    assert!(apply(&all_drop, &mut Rng::new(5), b"abc").is_empty());
}
