//! Shared by the link integration tests (tests/link_pty.rs, tests/link_tcp.rs): one scripted
//! device–host conversation, run by two threads over whatever stream joins them.

use edgecascade::link::*;
use std::io::{Read, Write};
use std::time::Duration;

/// Read timeout of every stream in these tests, so a lost peer fails the test instead of
/// hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub fn hello() -> Hello {
    Hello::new("test-board", vec![Encoding::CropJpeg, Encoding::Original])
}

pub fn welcome() -> Welcome {
    Welcome {
        version: PROTOCOL_VERSION,
        host_id: "test-host".into(),
        model: "big-net".into(),
        input: HostInput { size: 224, channels: 3, crop_fraction: 0.875 },
        classes: 1000,
        accepts: vec![Encoding::Original, Encoding::CropJpeg, Encoding::CropRaw],
        max_frame: DEFAULT_MAX_FRAME,
    }
}

/// `n` bytes with every value, zeros included (so COBS has work to do).
pub fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

pub fn infer(seq: u64, n: usize) -> Message {
    Message::Infer(InferRequest {
        seq,
        encoding: Encoding::Original,
        payload: payload(n),
        device_probs: Some((0..100).map(|i| i as f32 / 4950.0).collect()),
        want_probs: true,
    })
}

pub fn answer(seq: u64) -> Message {
    Message::Answer(InferResponse {
        seq,
        top: vec![(7, 0.5), (3, 0.25), (1, 0.125), (9, 0.0625), (2, 0.03125)],
        probs: Some((0..1000).map(|i| i as f32 / 499_500.0).collect()),
        host_ms: 12.5,
        host_decode_ms: 2.5,
        host_infer_ms: 10.0,
        host_mj: None,
    })
}

/// The frame of `Ping { nonce: 1 }` with one bit of its nonce flipped: COBS still holds, the
/// CRC does not.
pub fn corrupted_ping() -> Vec<u8> {
    let mut f = encode(&Message::Ping { nonce: 1 });
    assert_eq!(f[3], 0x01, "nonce byte");
    f[3] ^= 0x02;
    f
}

fn expect_crc<R: Read>(r: &mut FrameReader<R>) {
    match r.read_msg() {
        Err(LinkError::Frame(FrameError::Crc { .. })) => {}
        other => panic!("expected a CRC error, got {other:?}"),
    }
}

/// The host's half: Hello -> Welcome, Infer -> Answer, then a corrupted Ping (reported as a
/// CRC error) followed by Ping 2 -> a corrupted Pong and Pong 2. Returns the reader.
pub fn host_session<S: Read + Write>(s: S, payload_len: usize) -> FrameReader<S> {
    let mut r = FrameReader::new(s, DEFAULT_MAX_FRAME as usize);
    assert_eq!(r.read_msg().unwrap(), Message::Hello(hello()));
    write_msg(r.get_mut(), &Message::Welcome(welcome())).unwrap();
    let msg = r.read_msg().unwrap();
    assert_eq!(msg, infer(1, payload_len));
    write_msg(r.get_mut(), &answer(1)).unwrap();
    expect_crc(&mut r);
    assert_eq!(r.read_msg().unwrap(), Message::Ping { nonce: 2 });
    let w = r.get_mut();
    w.write_all(&corrupted_ping()).unwrap();
    write_msg(w, &Message::Pong { nonce: 2 }).unwrap();
    r
}

/// The device's half of [`host_session`]. Returns the reader.
pub fn device_session<S: Read + Write>(s: S, payload_len: usize) -> FrameReader<S> {
    let mut r = FrameReader::new(s, DEFAULT_MAX_FRAME as usize);
    write_sync(r.get_mut()).unwrap();
    write_msg(r.get_mut(), &Message::Hello(hello())).unwrap();
    match r.read_msg().unwrap() {
        Message::Welcome(w) => {
            assert_eq!(w, welcome());
            assert_eq!(w.choose_encoding(&hello().accepts), Some(Encoding::CropJpeg));
        }
        other => panic!("expected Welcome, got {other:?}"),
    }
    let sent = write_msg(r.get_mut(), &infer(1, payload_len)).unwrap();
    assert!(sent > payload_len);
    assert_eq!(r.read_msg().unwrap(), answer(1));
    let w = r.get_mut();
    w.write_all(&corrupted_ping()).unwrap();
    write_msg(w, &Message::Ping { nonce: 2 }).unwrap();
    expect_crc(&mut r);
    assert_eq!(r.read_msg().unwrap(), Message::Pong { nonce: 2 });
    r
}
