//! Fuzz target: arbitrary bytes into `decode` and into a `FrameReader` over a cursor, and (so
//! that the CRC does not keep the fuzzer away from the message decoder) the bytes wrapped as
//! the body of a well-formed frame. Nothing may panic, a reader must always make progress to
//! the end of its input, and any message that decodes must encode back to a frame that
//! decodes to the same bytes.

#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/link/mod.rs"]
mod link;

use libfuzzer_sys::fuzz_target;
use link::{decode, encode, FrameReader, LinkError};
use std::io::Cursor;

fn check_round_trip(frame_without_zero: &[u8]) {
    if let Ok(msg) = decode(frame_without_zero) {
        let frame = encode(&msg);
        let again = decode(&frame[..frame.len() - 1]).expect("re-encoded frame decodes");
        assert_eq!(encode(&again), frame);
    }
}

fuzz_target!(|data: &[u8]| {
    // The whole input as one frame (a 0 inside is a COBS error, not a panic).
    check_round_trip(data);
    // The input as the postcard bytes of a frame with a good version byte and CRC.
    let mut raw = vec![link::PROTOCOL_VERSION];
    raw.extend_from_slice(data);
    let crc = crc32fast::hash(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    check_round_trip(&cobs::encode_vec(&raw));
    // The input as a stream of frames, with a small limit so oversized frames happen too. Each
    // call consumes at least one byte or ends the stream, so this many calls always suffice.
    let max = 1 + data.first().copied().unwrap_or(0) as usize * 4;
    let mut reader = FrameReader::new(Cursor::new(data), max);
    let mut ended = false;
    for _ in 0..=data.len() + 1 {
        match reader.read_msg() {
            Ok(msg) => {
                let frame = encode(&msg);
                assert!(decode(&frame[..frame.len() - 1]).is_ok());
            }
            Err(LinkError::Frame(_)) => {}
            Err(LinkError::Closed) => {
                ended = true;
                break;
            }
            Err(e) => panic!("a cursor cannot fail this way: {e}"),
        }
        assert!(reader.buffered() <= max + link::codec::READ_CHUNK);
    }
    assert!(ended, "the reader did not reach the end of its input");
});
