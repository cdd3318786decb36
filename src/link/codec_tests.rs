//! Tests of `codec.rs`.

use super::*;
use crate::link::msg::*;
use crate::link::rng::Rng;
use std::io::Cursor;

fn ping(nonce: u64) -> Message {
    Message::Ping { nonce }
}

fn small_infer() -> Message {
    Message::Infer(InferRequest {
        seq: 7,
        encoding: Encoding::CropRaw,
        payload: vec![0, 1, 2, 255],
        device_probs: Some(vec![0.25, 0.75]),
        want_probs: true,
    })
}

fn error_msg() -> Message {
    Message::Error(ErrorMsg { seq: Some(3), code: ErrorCode::TooLarge, message: "big".into() })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

// The wire format, pinned. Checked by hand (and against an independent Python CRC-32/COBS):
//   Ping{nonce:1}: version 01, variant Ping = 5 (varint 05), nonce varint 01; CRC-32 of
//   [01 05 01] is 0xf4f377f6 -> f6 77 f3 f4; the body has no 0, so COBS puts one code byte
//   08 (7 data bytes follow) in front and the frame ends in 00.
const PING1: &[u8] = &[0x08, 0x01, 0x05, 0x01, 0xf6, 0x77, 0xf3, 0xf4, 0x00];
//   Infer: 01 | variant 02 | seq 07 | CropRaw 02 | payload len 04: 00 01 02 ff |
//   Some 01, len 02, 0.25f32 = 00 00 80 3e, 0.75f32 = 00 00 40 3f | want_probs 01 |
//   CRC-32 fe 41 31 18. COBS: each 0 becomes the distance to the next 0 (or to the end):
//   [06] 01 02 07 02 04 [06] 01 02 ff 01 02 [01] [03] 80 3e [01] [08] 40 3f 01 fe 41 31 18.
const INFER: &[u8] = &[
    0x06, 0x01, 0x02, 0x07, 0x02, 0x04, 0x06, 0x01, 0x02, 0xff, 0x01, 0x02, 0x01, 0x03, 0x80, 0x3e, 0x01, 0x08, 0x40,
    0x3f, 0x01, 0xfe, 0x41, 0x31, 0x18, 0x00,
];
//   Error: 01 | variant 04 | Some 01, seq 03 | TooLarge 04 | "big" 03 62 69 67 |
//   CRC-32 78 45 54 9e; no 0 inside, so one code byte 0e (13 data bytes).
const ERROR: &[u8] = &[0x0e, 0x01, 0x04, 0x01, 0x03, 0x04, 0x03, 0x62, 0x69, 0x67, 0x78, 0x45, 0x54, 0x9e, 0x00];

#[test]
fn golden_bytes() {
    let got = [encode(&ping(1)), encode(&small_infer()), encode(&error_msg())];
    for (g, want) in got.iter().zip([PING1, INFER, ERROR]) {
        assert_eq!(hex(g), hex(want));
    }
    assert_eq!(decode(&PING1[..PING1.len() - 1]).unwrap(), ping(1));
    assert_eq!(decode(&INFER[..INFER.len() - 1]).unwrap(), small_infer());
    assert_eq!(decode(&ERROR[..ERROR.len() - 1]).unwrap(), error_msg());
    assert_eq!(crc32fast::hash(&[0x01, 0x05, 0x01]), 0xf4f3_77f6);
}

fn rand_string(r: &mut Rng) -> String {
    let n = r.below(12) as usize;
    (0..n).map(|_| char::from_u32(r.below(0x3000) as u32).unwrap_or('?')).collect()
}

fn rand_f32(r: &mut Rng) -> f32 {
    match r.below(6) {
        0 => f32::from_bits(r.next_u64() as u32), // anything, NaN payloads included
        1 => [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE][r.below(5) as usize],
        _ => r.next_f64() as f32,
    }
}

fn rand_bytes(r: &mut Rng) -> Vec<u8> {
    let n = match r.below(4) {
        0 => 0,
        1 => r.below(8),
        2 => r.below(600),
        _ => r.below(5000),
    } as usize;
    let zeros = r.chance(0.3);
    (0..n).map(|_| if zeros && r.chance(0.5) { 0 } else { r.next_u64() as u8 }).collect()
}

fn rand_u64(r: &mut Rng) -> u64 {
    let bits = r.below(65) as u32;
    if bits == 0 {
        0
    } else {
        r.next_u64() >> (64 - bits)
    }
}

fn rand_opt<T>(r: &mut Rng, f: impl FnOnce(&mut Rng) -> T) -> Option<T> {
    if r.chance(0.5) {
        Some(f(r))
    } else {
        None
    }
}

fn rand_encodings(r: &mut Rng) -> Vec<Encoding> {
    (0..r.below(5)).map(|_| Encoding::ALL[r.below(3) as usize]).collect()
}

fn rand_probs(r: &mut Rng) -> Vec<f32> {
    (0..r.below(1001)).map(|_| rand_f32(r)).collect()
}

fn rand_message(r: &mut Rng) -> Message {
    match r.below(8) {
        0 => Message::Hello(Hello {
            version: r.next_u64() as u8,
            device_id: rand_string(r),
            accepts: rand_encodings(r),
            max_frame: r.next_u64() as u32,
        }),
        1 => Message::Welcome(Welcome {
            version: r.next_u64() as u8,
            host_id: rand_string(r),
            model: rand_string(r),
            input: HostInput {
                size: r.next_u64() as u32,
                channels: r.next_u64() as u8,
                crop_fraction: f64::from_bits(r.next_u64()),
            },
            classes: r.next_u64() as u32,
            accepts: rand_encodings(r),
            max_frame: r.next_u64() as u32,
        }),
        2 => Message::Infer(InferRequest {
            seq: rand_u64(r),
            encoding: Encoding::ALL[r.below(3) as usize],
            payload: rand_bytes(r),
            device_probs: rand_opt(r, rand_probs),
            want_probs: r.chance(0.5),
        }),
        3 => Message::Answer(InferResponse {
            seq: rand_u64(r),
            top: (0..r.below(6)).map(|_| (r.next_u64() as u32, rand_f32(r))).collect(),
            probs: rand_opt(r, rand_probs),
            host_ms: rand_f32(r),
            host_decode_ms: rand_f32(r),
            host_infer_ms: rand_f32(r),
            host_mj: rand_opt(r, rand_f32),
        }),
        4 => {
            let codes = [
                ErrorCode::BadFrame,
                ErrorCode::BadVersion,
                ErrorCode::BadRequest,
                ErrorCode::BadPayload,
                ErrorCode::TooLarge,
                ErrorCode::Internal,
                ErrorCode::Unauthorized,
                ErrorCode::Busy,
            ];
            Message::Error(ErrorMsg {
                seq: rand_opt(r, rand_u64),
                code: codes[r.below(codes.len() as u64) as usize],
                message: rand_string(r),
            })
        }
        5 => Message::Ping { nonce: rand_u64(r) },
        6 => Message::Auth { token: rand_string(r) },
        _ => Message::Pong { nonce: rand_u64(r) },
    }
}

/// Round trip over 3,000 seeded random messages, through `decode` and through a
/// `FrameReader` fed the concatenated frames. Floats may be NaN, so messages are compared
/// by their bytes and their Debug text.
#[test]
fn round_trip_random_messages() {
    let mut r = Rng::new(0x5eed);
    let msgs: Vec<Message> = (0..3000).map(|_| rand_message(&mut r)).collect();
    let mut stream = Vec::new();
    for m in &msgs {
        let frame = encode(m);
        assert_eq!(frame.iter().position(|&b| b == 0), Some(frame.len() - 1));
        let back = decode(&frame[..frame.len() - 1]).unwrap();
        assert_eq!(encode(&back), frame);
        assert_eq!(format!("{back:?}"), format!("{m:?}"));
        stream.extend_from_slice(&frame);
    }
    let mut reader = FrameReader::new(Cursor::new(stream), 1 << 16);
    for m in &msgs {
        assert_eq!(encode(&reader.read_msg().unwrap()), encode(m));
    }
    assert!(matches!(reader.read_msg(), Err(LinkError::Closed)));
}

fn reader(bytes: Vec<u8>) -> FrameReader<Cursor<Vec<u8>>> {
    FrameReader::new(Cursor::new(bytes), DEFAULT_MAX_FRAME as usize)
}

#[test]
fn garbage_before_a_frame_is_skipped() {
    // Garbage without a 0 joins the frame's bytes and spoils it; the following frame reads.
    let mut bytes = b"\xff\x13garbage".to_vec();
    bytes.extend(encode(&ping(1)));
    bytes.extend(encode(&ping(2)));
    let mut r = reader(bytes);
    assert!(r.read_msg().unwrap_err().is_frame());
    assert_eq!(r.read_msg().unwrap(), ping(2));
    // Garbage ended by a 0 (e.g. a reader that joined mid-frame) costs only itself.
    let mut bytes = b"\x05\x01line noise\x00\x00\x00".to_vec();
    bytes.extend(encode(&ping(3)));
    let mut r = reader(bytes);
    assert!(r.read_msg().unwrap_err().is_frame());
    assert_eq!(r.read_msg().unwrap(), ping(3));
    assert!(matches!(r.read_msg(), Err(LinkError::Closed)));
    // A sync 0 after the noise saves the first frame.
    let mut bytes = b"boot: v1.2 ready\r\n".to_vec();
    write_sync(&mut bytes).unwrap();
    write_msg(&mut bytes, &ping(4)).unwrap();
    let mut r = reader(bytes);
    assert!(r.read_msg().unwrap_err().is_frame());
    assert_eq!(r.read_msg().unwrap(), ping(4));
}

#[test]
fn flipped_bit_is_a_crc_error_and_the_next_frame_reads() {
    let mut first = encode(&small_infer());
    first[9] ^= 0x10; // a data byte (0xff), not a COBS code byte
    assert_ne!(first[9], 0);
    let mut bytes = first;
    bytes.extend(encode(&ping(9)));
    let mut r = reader(bytes);
    match r.read_msg() {
        Err(LinkError::Frame(FrameError::Crc { expected, got })) => assert_ne!(expected, got),
        other => panic!("expected a CRC error, got {other:?}"),
    }
    assert_eq!(r.read_msg().unwrap(), ping(9));
}

#[test]
fn truncated_frame() {
    let full = encode(&small_infer());
    for cut in 1..full.len() - 1 {
        let mut bytes = full[..cut].to_vec();
        bytes.push(0);
        bytes.extend(encode(&ping(4)));
        let mut r = reader(bytes);
        let err = r.read_msg().unwrap_err();
        assert!(err.is_frame(), "cut {cut}: {err:?}");
        assert_eq!(r.read_msg().unwrap(), ping(4), "cut {cut}");
    }
    // A frame cut off by the end of the stream: the link is closed.
    let mut r = reader(full[..10].to_vec());
    assert!(matches!(r.read_msg(), Err(LinkError::Closed)));
    assert_eq!(decode(&[]), Err(FrameError::Short));
    assert_eq!(decode(&[0x03, 0x01, 0x02]), Err(FrameError::Short));
    assert_eq!(decode(&[0x09, 0x01]), Err(FrameError::Cobs));
}

#[test]
fn wrong_version_byte() {
    let mut raw = vec![2u8];
    raw.extend(postcard::to_allocvec(&ping(1)).unwrap());
    let crc = crc32fast::hash(&raw);
    raw.extend(crc.to_le_bytes());
    let frame = cobs::encode_vec(&raw);
    assert_eq!(decode(&frame), Err(FrameError::Version(2)));
    let mut bytes = frame;
    bytes.push(0);
    bytes.extend(encode(&ping(5)));
    let mut r = reader(bytes);
    assert!(matches!(r.read_msg(), Err(LinkError::Frame(FrameError::Version(2)))));
    assert_eq!(r.read_msg().unwrap(), ping(5));
}

#[test]
fn bad_postcard_and_trailing_bytes() {
    let frame_of = |raw: &mut Vec<u8>| {
        let crc = crc32fast::hash(raw);
        raw.extend(crc.to_le_bytes());
        cobs::encode_vec(raw)
    };
    // Variant 42 does not exist.
    let f = frame_of(&mut vec![PROTOCOL_VERSION, 42]);
    assert!(matches!(decode(&f), Err(FrameError::Decode(_))));
    // A Ping followed by a stray byte.
    let f = frame_of(&mut vec![PROTOCOL_VERSION, 5, 1, 9]);
    match decode(&f) {
        Err(FrameError::Decode(m)) => assert!(m.contains("1 bytes left"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// A Read that hands out its bytes in pieces of at most `step`.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    step: usize,
    reads: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        let n = self.step.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn oversized_frame_is_reported_once_and_skipped() {
    let big = Message::Infer(InferRequest {
        seq: 1,
        encoding: Encoding::Original,
        payload: vec![7u8; 50_000],
        device_probs: None,
        want_probs: false,
    });
    let mut bytes = encode(&ping(1));
    bytes.extend(encode(&big));
    bytes.extend(encode(&ping(2)));
    // Through a Cursor (big chunks) and a 1000-byte trickle; the limit is 10,000 bytes.
    for step in [usize::MAX, 1000] {
        let src = Trickle { data: bytes.clone(), pos: 0, step, reads: 0 };
        let mut r = FrameReader::new(src, 10_000);
        assert_eq!(r.read_msg().unwrap(), ping(1));
        match r.read_msg() {
            Err(LinkError::Frame(FrameError::Oversized { len, max })) => {
                assert!(len > 10_000 && len <= 10_000 + READ_CHUNK, "{len}");
                assert_eq!(max, 10_000);
            }
            other => panic!("{other:?}"),
        }
        assert!(r.buffered() <= 10_000 + READ_CHUNK);
        assert_eq!(r.read_msg().unwrap(), ping(2));
        assert_eq!(r.consumed(), bytes.len() as u64);
        assert!(matches!(r.read_msg(), Err(LinkError::Closed)));
    }
    // A whole oversized frame inside one read is caught too.
    let mut r = FrameReader::new(Cursor::new(bytes), 100);
    assert_eq!(r.read_msg().unwrap(), ping(1));
    assert!(matches!(r.read_msg(), Err(LinkError::Frame(FrameError::Oversized { .. }))));
    assert_eq!(r.read_msg().unwrap(), ping(2));
}

#[test]
fn several_frames_in_one_read() {
    let mut bytes = Vec::new();
    bytes.extend(encode(&ping(1)));
    bytes.extend([0, 0]); // empty frames are skipped
    bytes.extend(encode(&small_infer()));
    bytes.extend(encode(&error_msg()));
    let src = Trickle { data: bytes, pos: 0, step: usize::MAX, reads: 0 };
    let mut r = FrameReader::new(src, 4096);
    assert_eq!(r.read_msg().unwrap(), ping(1));
    assert_eq!(r.read_msg().unwrap(), small_infer());
    let before = r.consumed();
    assert_eq!(r.read_msg().unwrap(), error_msg());
    assert_eq!(r.consumed() - before, encode(&error_msg()).len() as u64);
    assert_eq!(r.consumed(), r.bytes_read());
    assert_eq!(r.get_ref().reads, 1);
    assert!(matches!(r.read_msg(), Err(LinkError::Closed)));
}

#[test]
fn frame_split_across_one_byte_reads() {
    let mut bytes = encode(&small_infer());
    bytes.extend(encode(&ping(2)));
    let total = bytes.len();
    let src = Trickle { data: bytes, pos: 0, step: 1, reads: 0 };
    let mut r = FrameReader::new(src, 4096);
    assert_eq!(r.read_msg().unwrap(), small_infer());
    assert_eq!(r.read_msg().unwrap(), ping(2));
    assert_eq!(r.get_mut().reads, total);
}

/// A Read that times out every other call.
struct Flaky {
    data: Vec<u8>,
    pos: usize,
    tick: bool,
}

impl Read for Flaky {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tick = !self.tick;
        if self.tick {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "no data yet"));
        }
        let n = 3.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn timeouts_lose_no_bytes() {
    let src = Flaky { data: encode(&error_msg()), pos: 0, tick: false };
    let mut r = FrameReader::new(src, 4096);
    let mut timeouts = 0;
    let msg = loop {
        match r.read_msg() {
            Ok(m) => break m,
            Err(LinkError::Timeout) => timeouts += 1,
            Err(e) => panic!("{e}"),
        }
        assert!(timeouts < 100);
    };
    assert_eq!(msg, error_msg());
    assert!(timeouts > 1);
}

#[test]
fn write_msg_writes_one_frame() {
    let mut out = Vec::new();
    let n = write_msg(&mut out, &ping(1)).unwrap();
    assert_eq!(n, PING1.len());
    assert_eq!(out, PING1);
}

#[test]
fn io_errors_map_to_link_errors() {
    use io::ErrorKind::*;
    let map = |k| LinkError::from(io::Error::new(k, "x"));
    assert!(map(WouldBlock).is_timeout());
    assert!(map(TimedOut).is_timeout());
    assert!(matches!(map(BrokenPipe), LinkError::Closed));
    assert!(matches!(map(ConnectionReset), LinkError::Closed));
    assert!(matches!(map(PermissionDenied), LinkError::Io(_)));
    let e = LinkError::from(FrameError::Crc { expected: 1, got: 2 });
    assert!(e.is_frame());
    assert_eq!(e.to_string(), "bad frame: CRC mismatch (frame carries 0x00000001, bytes give 0x00000002)");
}

#[test]
fn random_garbage_never_panics() {
    let mut r = Rng::new(99);
    for _ in 0..300 {
        let n = r.below(3000) as usize;
        let mut bytes: Vec<u8> = (0..n).map(|_| r.next_u64() as u8).collect();
        // Mix in real frames, some corrupted.
        if r.chance(0.5) {
            let mut f = encode(&rand_message(&mut r));
            if r.chance(0.5) && f.len() > 1 {
                let i = r.below(f.len() as u64 - 1) as usize;
                f[i] ^= 1 << r.below(8);
            }
            bytes.extend(f);
        }
        let _ = decode(&bytes);
        let mut fr = FrameReader::new(Cursor::new(bytes), 512);
        for _ in 0..10_000 {
            let res = fr.read_msg();
            assert_eq!(fr.bytes_read(), fr.consumed() + fr.buffered() as u64);
            match res {
                Err(LinkError::Closed) => break,
                Ok(_) | Err(LinkError::Frame(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
}
