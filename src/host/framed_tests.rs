//! The host's framed session (`Host::serve`) in-process: frames in from an in-memory peer,
//! replies read back, a scripted model in place of tract (no model file, no child process).

use super::*;
use crate::link::{encode, Hello};
use crate::testing::{self, Duplex};

/// The host model of the default cascade (cascade.toml).
const MODEL: &str = "efficientnet-lite2-fp32";
/// The classes the scripted model answers the fixture's two inputs with.
const PHOTO_CLASS: usize = 7;
const CROP_CLASS: usize = 42;

/// A host whose model answers one photo (sent whole) and one raw crop.
struct Fixture {
    host: Host,
    photo: Vec<u8>,
    crop: Vec<u8>,
}

fn fixture() -> Fixture {
    let spec = testing::manifest(MODEL).image().unwrap().clone();
    let photo = testing::solid(40, 30, [200, 30, 30]);
    let crop = testing::solid(spec.size, spec.size, [10, 90, 250]);
    let classes = 1000;
    let answers = vec![
        (preprocess::to_tensor(&photo, &spec), testing::logits(classes, PHOTO_CLASS, 9.0)),
        (preprocess::normalise(&crop, spec.mean, spec.std, spec.layout), testing::logits(classes, CROP_CLASS, 9.0)),
    ];
    let host = Host::new(testing::scripted_model(MODEL, answers));
    Fixture { host, photo: testing::png(&photo), crop: crop.into_raw() }
}

fn frames(msgs: &[Message]) -> Vec<u8> {
    msgs.iter().flat_map(encode).collect()
}

/// Serves `input` on one connection until the peer's bytes run out: the host's replies, in
/// order, and what the connection counted.
fn session(host: &Host, input: Vec<u8>) -> (Vec<Message>, ConnStats) {
    let mut peer = Duplex::new(input, 4096);
    let stats = host.serve(&mut peer, "test-device", &AtomicBool::new(false));
    let out = peer.written();
    let mut reader = FrameReader::new(out.as_slice(), out.len().max(1));
    let mut replies = Vec::new();
    loop {
        match reader.read_msg() {
            Ok(m) => replies.push(m),
            Err(LinkError::Closed) => return (replies, stats),
            Err(e) => panic!("the host wrote a bad frame: {e}"),
        }
    }
}

fn infer(seq: u64, encoding: Encoding, payload: Vec<u8>) -> Message {
    Message::Infer(InferRequest { seq, encoding, payload, device_probs: None, want_probs: false })
}

/// The error a reply is, or a panic naming what it is instead.
fn error(m: &Message) -> &ErrorMsg {
    match m {
        Message::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn hello_gets_welcome_and_another_protocol_version_is_refused() {
    let f = fixture();
    let mut newer = Hello::new("newer-board", vec![Encoding::CropRaw]);
    newer.version = PROTOCOL_VERSION + 1;
    // A frame whose version byte is another protocol's (its CRC right).
    let mut raw = vec![PROTOCOL_VERSION + 1];
    raw.extend(postcard::to_allocvec(&Message::Ping { nonce: 1 }).unwrap());
    raw.extend(crc32fast::hash(&raw).to_le_bytes());
    let mut input = frames(&[Message::Hello(Hello::new("board", vec![Encoding::CropJpeg])), Message::Hello(newer)]);
    input.extend(cobs::encode_vec(&raw));
    input.push(0);
    input.extend(frames(&[Message::Ping { nonce: 2 }]));

    let (replies, stats) = session(&f.host, input);
    assert_eq!(replies.len(), 4, "{replies:?}");
    let Message::Welcome(w) = &replies[0] else { panic!("expected Welcome, got {:?}", replies[0]) };
    assert_eq!((w.version, w.model.as_str(), w.classes), (PROTOCOL_VERSION, MODEL, 1000));
    assert_eq!((w.input.size, w.input.channels), (260, 3));
    assert_eq!(w.accepts, HOST_ENCODINGS.to_vec());
    assert_eq!(w.max_frame, DEFAULT_MAX_FRAME);
    let old = error(&replies[1]);
    assert_eq!(old.code, ErrorCode::BadVersion);
    assert!(old.message.contains(&format!("protocol version {}", PROTOCOL_VERSION + 1)), "{old}");
    assert_eq!(error(&replies[2]).code, ErrorCode::BadVersion);
    assert_eq!(replies[3], Message::Pong { nonce: 2 }, "the session goes on");
    assert_eq!(stats.requests, 0);
}

#[test]
fn inferences_are_answered_with_the_models_classes_whole_or_cropped() {
    let f = fixture();
    let mut with_probs = infer(2, Encoding::CropRaw, f.crop.clone());
    if let Message::Infer(r) = &mut with_probs {
        r.want_probs = true;
    }
    let input = frames(&[
        Message::Hello(Hello::new("board", HOST_ENCODINGS.to_vec())),
        infer(1, Encoding::Original, f.photo),
        with_probs,
    ]);

    let (replies, stats) = session(&f.host, input);
    assert_eq!(replies.len(), 3, "{replies:?}");
    for (reply, (seq, class)) in replies[1..].iter().zip([(1, PHOTO_CLASS), (2, CROP_CLASS)]) {
        let Message::Answer(a) = reply else { panic!("expected an answer, got {reply:?}") };
        assert_eq!(a.seq, seq);
        assert_eq!(a.top.len(), TOP_K);
        assert_eq!(a.top[0].0, class as u32, "{a:?}");
        assert!(a.top[0].1 > 0.8, "{a:?}");
        assert!(a.host_ms >= a.host_decode_ms && a.host_mj.is_none(), "{a:?}");
        assert_eq!(a.probs.as_ref().map(Vec::len), (seq == 2).then_some(1000));
    }
    assert_eq!(stats, ConnStats { requests: 2, audits: 0, answered: 2, errors: 0 });
    assert_eq!(f.host.counts(), (2, 2));
}

/// An audit (the top bit of `seq` set) is served like any request, its whole `seq` echoed, and
/// counted apart.
#[test]
fn an_audit_is_served_like_any_request_and_counted_apart() {
    let f = fixture();
    let audit_seq = crate::link::AUDIT_FLAG | 3;
    let input = frames(&[
        Message::Hello(Hello::new("board", HOST_ENCODINGS.to_vec())),
        infer(3, Encoding::Original, f.photo.clone()),
        infer(audit_seq, Encoding::Original, f.photo),
    ]);
    let (replies, stats) = session(&f.host, input);
    assert_eq!(replies.len(), 3, "{replies:?}");
    let tops: Vec<(u64, u32)> = replies[1..]
        .iter()
        .map(|r| match r {
            Message::Answer(a) => (a.seq, a.top[0].0),
            other => panic!("expected an answer, got {other:?}"),
        })
        .collect();
    assert_eq!(tops, vec![(3, PHOTO_CLASS as u32), (audit_seq, PHOTO_CLASS as u32)]);
    assert_eq!(stats, ConnStats { requests: 2, audits: 1, answered: 2, errors: 0 });
}

#[test]
fn a_bad_frame_is_answered_bad_frame_and_the_session_goes_on() {
    let f = fixture();
    let mut damaged = encode(&Message::Ping { nonce: 1 });
    damaged[2] ^= 0x10;
    let mut input = b"no frame at all\0".to_vec();
    input.extend(damaged);
    input.extend(frames(&[Message::Ping { nonce: 2 }, infer(3, Encoding::CropRaw, f.crop)]));

    let (replies, stats) = session(&f.host, input);
    assert_eq!(replies.len(), 4, "{replies:?}");
    for r in &replies[..2] {
        let e = error(r);
        assert_eq!((e.code, e.seq), (ErrorCode::BadFrame, None), "{e}");
    }
    assert_eq!(replies[2], Message::Pong { nonce: 2 });
    assert!(matches!(&replies[3], Message::Answer(a) if a.seq == 3 && a.top[0].0 == CROP_CLASS as u32), "{replies:?}");
    assert_eq!(stats, ConnStats { requests: 1, audits: 0, answered: 1, errors: 2 });
}

#[test]
fn a_frame_over_the_hosts_limit_is_answered_too_large_and_the_session_goes_on() {
    let mut f = fixture();
    f.host.max_frame = 1000;
    let input = frames(&[infer(1, Encoding::CropRaw, f.crop), Message::Ping { nonce: 2 }]);
    let (replies, _) = session(&f.host, input);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(error(&replies[0]).code, ErrorCode::TooLarge);
    assert_eq!(replies[1], Message::Pong { nonce: 2 });
}

#[test]
fn requests_shaped_wrong_for_the_model_are_refused_naming_why() {
    let f = fixture();
    let small_crop = testing::png(&testing::solid(224, 224, [1, 2, 3]));
    let mut wrong_probs = infer(5, Encoding::Original, f.photo.clone());
    if let Message::Infer(r) = &mut wrong_probs {
        r.device_probs = Some(vec![0.1; 10]);
    }
    let welcome = Message::Welcome(f.host.welcome());
    let input = frames(&[
        infer(1, Encoding::CropRaw, vec![7; 100]),
        infer(2, Encoding::CropJpeg, small_crop),
        infer(3, Encoding::Original, b"not an image".to_vec()),
        infer(4, Encoding::CropJpeg, b"\xff\xd8 cut short".to_vec()),
        wrong_probs,
        welcome,
        infer(6, Encoding::Original, f.photo),
    ]);

    let (replies, stats) = session(&f.host, input);
    assert_eq!(replies.len(), 7, "{replies:?}");
    let want = [
        (Some(1), ErrorCode::BadPayload, "raw crop has 100 bytes, the host model takes 202800 (260x260x3)"),
        (Some(2), ErrorCode::BadPayload, "crop is 224x224, the host model takes 260x260"),
        (Some(3), ErrorCode::BadPayload, ""),
        (Some(4), ErrorCode::BadPayload, ""),
        (Some(5), ErrorCode::BadRequest, "device_probs has 10 values, the host model has 1000 classes"),
        (None, ErrorCode::BadRequest, "a device does not send Welcome"),
    ];
    for (reply, (seq, code, says)) in replies.iter().zip(want) {
        let e = error(reply);
        assert_eq!((e.seq, e.code), (seq, code), "{e}");
        assert!(e.message.contains(says) && !e.message.is_empty(), "{e}");
    }
    assert!(matches!(&replies[6], Message::Answer(a) if a.seq == 6 && a.top[0].0 == PHOTO_CLASS as u32));
    assert_eq!(stats, ConnStats { requests: 6, audits: 0, answered: 1, errors: 6 });
}

#[test]
fn a_request_the_model_fails_on_is_an_internal_error() {
    let f = fixture();
    let other = testing::png(&testing::solid(40, 30, [0, 0, 0]));
    let (replies, _) = session(&f.host, frames(&[infer(1, Encoding::Original, other), Message::Ping { nonce: 2 }]));
    let e = error(&replies[0]);
    assert_eq!((e.seq, e.code), (Some(1), ErrorCode::Internal), "{e}");
    assert_eq!(replies[1], Message::Pong { nonce: 2 });
}

#[test]
fn with_a_token_nothing_is_served_before_it_and_a_wrong_one_ends_the_session() {
    let f = fixture();
    let host = f.host.with_token(Some("s3cret".into()));
    let hello = || Message::Hello(Hello::new("board", vec![Encoding::CropRaw]));
    let auth = |t: &str| Message::Auth { token: t.into() };

    // No token: the first message is refused and the connection ends (the rest unanswered).
    let (replies, stats) = session(&host, frames(&[hello(), Message::Ping { nonce: 1 }]));
    assert_eq!(replies.len(), 1, "{replies:?}");
    let e = error(&replies[0]);
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert!(e.message.contains("needs a token"), "{e}");
    assert_eq!(stats.errors, 1);

    // A wrong token: refused, and the connection ends.
    let (replies, _) = session(&host, frames(&[auth("guess"), hello()]));
    assert_eq!(replies.len(), 1, "{replies:?}");
    let e = error(&replies[0]);
    assert_eq!((e.code, e.message.as_str()), (ErrorCode::Unauthorized, "wrong token"));

    // The token, then the session as usual (Auth itself gets no reply).
    let (replies, stats) = session(
        &host,
        frames(&[auth("s3cret"), hello(), infer(1, Encoding::CropRaw, f.crop), Message::Ping { nonce: 3 }]),
    );
    assert_eq!(replies.len(), 3, "{replies:?}");
    assert!(matches!(replies[0], Message::Welcome(_)), "{replies:?}");
    assert!(matches!(&replies[1], Message::Answer(a) if a.top[0].0 == CROP_CLASS as u32), "{replies:?}");
    assert_eq!(replies[2], Message::Pong { nonce: 3 });
    assert_eq!(stats, ConnStats { requests: 1, audits: 0, answered: 1, errors: 0 });
}

#[test]
fn a_stopped_host_serves_nothing_more() {
    let f = fixture();
    let mut peer = Duplex::new(frames(&[Message::Ping { nonce: 1 }]), 4096);
    let stats = f.host.serve(&mut peer, "test-device", &AtomicBool::new(true));
    assert!(peer.written().is_empty());
    assert_eq!(stats, ConnStats::default());
}
