//! The framed link's wire specification (docs/protocol.md) against the code: the golden frames
//! of `docs/protocol-frames.json` are what `link::encode` writes for their messages, byte for
//! byte, and decode back to them; every frame the document shows is among them; and a client
//! written from the document alone (scripts/protocol_client.py: Python's standard library, its
//! own COBS, varints and `zlib.crc32`) decodes the golden frames and holds a session with a
//! real host (handshake, ping, an inference, a bad frame).
//!
//! `EDGECASCADE_UPDATE_GOLDEN=1 cargo test --test protocol` rewrites the JSON file after a
//! deliberate change of the wire format (which also needs a new `PROTOCOL_VERSION`).

mod common;

use common::{root, HostProc};
use edgecascade::link::{
    self, Encoding, ErrorCode, ErrorMsg, Hello, HostInput, InferRequest, InferResponse, Message, Welcome,
};
use std::process::Command;

/// One example of every message, with field values that exercise each encoding rule (several
/// varint lengths, options both ways, floats exact in f32).
fn examples() -> Vec<(&'static str, Message)> {
    vec![
        ("ping", Message::Ping { nonce: 7 }),
        ("pong-large-nonce", Message::Pong { nonce: 300 }),
        ("auth", Message::Auth { token: "s3cret".into() }),
        (
            "hello",
            Message::Hello(Hello {
                version: 1,
                device_id: "pi-4".into(),
                accepts: vec![Encoding::CropJpeg, Encoding::Original],
                max_frame: 1 << 20,
            }),
        ),
        (
            "welcome",
            Message::Welcome(Welcome {
                version: 1,
                host_id: "host".into(),
                model: "efficientnet-lite2-fp32".into(),
                input: HostInput { size: 260, channels: 3, crop_fraction: 0.875 },
                classes: 1000,
                accepts: vec![Encoding::Original, Encoding::CropJpeg, Encoding::CropRaw],
                max_frame: 1 << 20,
            }),
        ),
        (
            "infer",
            Message::Infer(InferRequest {
                seq: 129,
                encoding: Encoding::CropJpeg,
                payload: vec![0xFF, 0xD8, 0x00, 0xFF, 0xD9],
                device_probs: None,
                want_probs: false,
            }),
        ),
        (
            "infer-with-probs",
            Message::Infer(InferRequest {
                seq: 2,
                encoding: Encoding::CropRaw,
                payload: vec![1, 2, 3],
                device_probs: Some(vec![0.25, 0.75]),
                want_probs: true,
            }),
        ),
        (
            "infer-audit",
            Message::Infer(InferRequest {
                seq: link::AUDIT_FLAG | 130,
                encoding: Encoding::CropJpeg,
                payload: vec![0xFF, 0xD8, 0xFF, 0xD9],
                device_probs: None,
                want_probs: false,
            }),
        ),
        (
            "answer",
            Message::Answer(InferResponse {
                seq: 129,
                top: vec![(967, 0.75), (504, 0.125)],
                probs: None,
                host_ms: 12.5,
                host_decode_ms: 2.0,
                host_infer_ms: 10.5,
                host_mj: Some(64.0),
            }),
        ),
        (
            "answer-audit",
            Message::Answer(InferResponse {
                seq: link::AUDIT_FLAG | 130,
                top: vec![(967, 0.5)],
                probs: None,
                host_ms: 12.5,
                host_decode_ms: 2.0,
                host_infer_ms: 10.5,
                host_mj: None,
            }),
        ),
        ("error", Message::Error(ErrorMsg::new(Some(129), ErrorCode::BadPayload, "not a JPEG"))),
        ("error-no-seq", Message::Error(ErrorMsg::new(None, ErrorCode::Unauthorized, "wrong token"))),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const GOLDEN: &str = "docs/protocol-frames.json";

#[test]
fn golden_frames_are_what_the_code_writes_and_reads() {
    let want: Vec<serde_json::Value> = examples()
        .iter()
        .map(|(name, msg)| serde_json::json!({ "name": name, "message": msg, "frame": hex(&link::encode(msg)) }))
        .collect();
    let path = root().join(GOLDEN);
    if std::env::var_os("EDGECASCADE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&want).unwrap() + "\n").unwrap();
    }
    let got: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(got, want, "{GOLDEN} differs from what link::encode writes (see this file's doc comment)");
    for (name, msg) in examples() {
        let frame = link::encode(&msg);
        assert_eq!(frame.last(), Some(&0));
        assert_eq!(link::decode(&frame[..frame.len() - 1]).unwrap(), msg, "{name}");
    }
}

/// Every frame written out in docs/protocol.md is one of the golden frames (the document
/// cannot drift from the code).
#[test]
fn the_document_shows_only_golden_frames() {
    let doc = std::fs::read_to_string(root().join("docs/protocol.md")).unwrap();
    let golden: Vec<String> = examples().iter().map(|(_, m)| hex(&link::encode(m))).collect();
    let shown: Vec<&str> = doc.lines().filter_map(|l| l.trim().strip_prefix("frame: ")).map(|h| h.trim()).collect();
    assert!(shown.len() >= 4, "docs/protocol.md shows {} frames", shown.len());
    for h in shown {
        let h: String = h.split_whitespace().collect();
        assert!(golden.contains(&h), "docs/protocol.md shows a frame that is not golden: {h}");
    }
}

fn python() -> Option<&'static str> {
    ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// The client written from the document decodes every golden frame to its message, and
/// encodes every message to its frame.
#[test]
fn a_client_written_from_the_document_reads_and_writes_the_golden_frames() {
    let Some(py) = python() else {
        eprintln!("!!! SKIPPED: no python3 here to run scripts/protocol_client.py");
        return;
    };
    let o = Command::new(py)
        .arg(root().join("scripts/protocol_client.py"))
        .args(["golden", root().join(GOLDEN).to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

/// That client holds a session with a real host: Hello/Welcome, Ping/Pong, an inference of a
/// demo photo answered with the host model's class, and a corrupted frame answered with a
/// BadFrame error, after which the link goes on.
#[test]
fn a_client_written_from_the_document_holds_a_session_with_the_host() {
    let Some(py) = python() else {
        eprintln!("!!! SKIPPED: no python3 here to run scripts/protocol_client.py");
        return;
    };
    let mut host = HostProc::tcp(0);
    let o = Command::new(py)
        .arg(root().join("scripts/protocol_client.py"))
        .args(["session", &host.tcp, root().join("photos/coffee.png").to_str().unwrap()])
        .output()
        .unwrap();
    host.kill();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["model"], "efficientnet-lite2-fp32");
    assert_eq!(v["top"][0][0], 967, "{v}");
    assert_eq!(v["bad_frame"], "BadFrame", "{v}");
}

/// The version-1 wire types as they were before audits, frozen here: what a host built before
/// the audit mark decodes with. Its `Infer` has no field for the mark.
mod v1 {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    pub enum Encoding {
        Original,
        CropJpeg,
        CropRaw,
    }

    #[derive(Debug, Deserialize)]
    pub struct InferRequest {
        pub seq: u64,
        pub encoding: Encoding,
        pub payload: Vec<u8>,
        pub device_probs: Option<Vec<f32>>,
        pub want_probs: bool,
    }

    /// The first variants only: an `Infer` is index 2.
    #[derive(Debug, Deserialize)]
    pub enum Message {
        Hello(serde::de::IgnoredAny),
        Welcome(serde::de::IgnoredAny),
        Infer(InferRequest),
    }

    /// The version-1 reader: COBS, CRC, version byte, and a message that uses every byte.
    pub fn decode(frame: &[u8]) -> Result<Message, String> {
        let mut buf = frame.to_vec();
        let n = cobs::decode_in_place(&mut buf).map_err(|e| format!("COBS: {e:?}"))?;
        let (body, crc) = buf[..n].split_at(n - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err("CRC".into());
        }
        if body[0] != 1 {
            return Err(format!("version {}", body[0]));
        }
        let (msg, rest) = postcard::take_from_bytes::<Message>(&body[1..]).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err(format!("{} bytes left after the message", rest.len()));
        }
        Ok(msg)
    }
}

/// An audit marked in the top bit of `seq` reaches a host that predates the mark as an
/// ordinary request: the version-1 reader decodes it, and the answer it would echo carries
/// the whole `seq`, which the device matches. A trailing field would not have done: the
/// version-1 reader refuses a message with bytes left over.
#[test]
fn an_old_host_decodes_an_audit_frame_as_an_ordinary_request() {
    let audit = examples().into_iter().find(|(n, _)| *n == "infer-audit").unwrap().1;
    let frame = link::encode(&audit);
    let old = v1::decode(&frame[..frame.len() - 1]).unwrap();
    let v1::Message::Infer(req) = old else { panic!("{old:?}") };
    assert_eq!(req.seq, link::AUDIT_FLAG | 130);
    assert!(matches!(req.encoding, v1::Encoding::CropJpeg) && req.payload == [0xFF, 0xD8, 0xFF, 0xD9]);
    assert!(req.device_probs.is_none() && !req.want_probs);
    let Message::Infer(new) = link::decode(&frame[..frame.len() - 1]).unwrap() else { panic!() };
    assert!(new.is_audit() && new.number() == 130);
    // The road not taken: one more byte after the Infer (a trailing field) is refused.
    let mut raw = vec![1u8];
    raw.extend(postcard::to_allocvec(&audit).unwrap());
    raw.push(1);
    raw.extend(crc32fast::hash(&raw).to_le_bytes());
    let mut cobs_frame = vec![0u8; cobs::max_encoding_length(raw.len())];
    let n = cobs::encode(&raw, &mut cobs_frame);
    let e = v1::decode(&cobs_frame[..n]).unwrap_err();
    assert!(e.contains("1 bytes left"), "{e}");
    assert!(link::decode(&cobs_frame[..n]).is_err());
}
