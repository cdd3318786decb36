//! Wire messages: every type that crosses the link between the device (the small model on the
//! board) and the host (the large model), shared by both ends. They are serialised with
//! postcard and framed by [`super::codec`]; changing a field or a variant's order changes the
//! wire format and needs a new [`PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The version byte at the start of every frame, and the `version` of Hello and Welcome.
pub const PROTOCOL_VERSION: u8 = 1;
/// The top bit of an [`InferRequest`]'s `seq` marks an audit: an input the device answered
/// itself, sent to the host as well so the device can measure how often the two disagree.
/// The host serves it like any request and echoes the whole `seq`, mark included. A host
/// that predates the mark does exactly that (it only echoes `seq`), so the mark needs no new
/// protocol version and no negotiation: an extra field would (the decoder refuses bytes left
/// after a message), and a new version would cut off every older host.
pub const AUDIT_FLAG: u64 = 1 << 63;
/// The default largest frame either end accepts: 1 MiB of COBS-encoded bytes, terminator
/// excluded.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// How an offloaded input's pixels are carried in [`InferRequest::payload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Encoding {
    /// The input's original encoded bytes (JPEG/PNG as read); the host crops/resizes/normalises
    /// as its manifest says.
    Original,
    /// The centre crop already resized to the host model's input size, re-encoded as JPEG; host
    /// decodes and normalises only.
    CropJpeg,
    /// The same crop as raw 8-bit RGB, row-major, size*size*3 bytes.
    CropRaw,
    /// A text input as UTF-8 (for a text model; the host tokenizes it as its manifest says).
    /// Appended in protocol version 2's lifetime: a host that lists it in `Welcome::accepts`
    /// takes it; one that does not (older, or serving an image model) is never sent it.
    Text,
}

impl Encoding {
    /// Every image encoding, in the order a device prefers them by default (smallest on the wire
    /// first for a slow link is CropJpeg; Original keeps the host's own preprocessing).
    pub const ALL: [Encoding; 3] = [Encoding::CropJpeg, Encoding::Original, Encoding::CropRaw];

    /// The name used on command lines and in reports: `original`, `crop-jpeg`, `crop-raw`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Original => "original",
            Encoding::CropJpeg => "crop-jpeg",
            Encoding::CropRaw => "crop-raw",
            Encoding::Text => "text",
        }
    }

    /// The first of `preferred` that `accepted` also holds.
    pub fn choose(preferred: &[Encoding], accepted: &[Encoding]) -> Option<Encoding> {
        preferred.iter().copied().find(|e| accepted.contains(e))
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "original" => Ok(Encoding::Original),
            "crop-jpeg" | "cropjpeg" => Ok(Encoding::CropJpeg),
            "crop-raw" | "cropraw" => Ok(Encoding::CropRaw),
            "text" => Ok(Encoding::Text),
            _ => Err(format!("unknown encoding '{s}' (expected original, crop-jpeg, crop-raw or text)")),
        }
    }
}

/// The host model's input, for [`Encoding::CropJpeg`] and [`Encoding::CropRaw`]: the device
/// takes the centred square of side `shorter side * crop_fraction` and resizes it to `size`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostInput {
    /// Side of the square input in pixels.
    pub size: u32,
    pub channels: u8,
    /// Fraction of the shorter side the centre crop keeps, in (0, 1].
    pub crop_fraction: f64,
}

impl HostInput {
    /// Bytes of a [`Encoding::CropRaw`] payload for this input: size*size*channels.
    pub fn raw_len(&self) -> usize {
        (self.size as usize) * (self.size as usize) * (self.channels as usize)
    }
}

/// The device's opening message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u8,
    pub device_id: String,
    /// Encodings the device can send, in its order of preference.
    pub accepts: Vec<Encoding>,
    /// The largest frame the device accepts (COBS bytes, terminator excluded).
    pub max_frame: u32,
}

impl Hello {
    /// A Hello at [`PROTOCOL_VERSION`] with [`DEFAULT_MAX_FRAME`].
    pub fn new(device_id: impl Into<String>, accepts: Vec<Encoding>) -> Self {
        Hello { version: PROTOCOL_VERSION, device_id: device_id.into(), accepts, max_frame: DEFAULT_MAX_FRAME }
    }
}

/// The host's answer to [`Hello`]: what model it runs and what it accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u8,
    pub host_id: String,
    /// The host model's name.
    pub model: String,
    pub input: HostInput,
    /// Number of classes of the host model (length of `probs`).
    pub classes: u32,
    /// Encodings the host can take.
    pub accepts: Vec<Encoding>,
    /// The largest frame the host accepts (COBS bytes, terminator excluded).
    pub max_frame: u32,
}

impl Welcome {
    /// The encoding to send: the first of the device's `preferred` the host accepts.
    pub fn choose_encoding(&self, preferred: &[Encoding]) -> Option<Encoding> {
        Encoding::choose(preferred, &self.accepts)
    }

    /// The largest frame both ends accept.
    pub fn agreed_max_frame(&self, hello: &Hello) -> u32 {
        self.max_frame.min(hello.max_frame)
    }
}

/// One offloaded input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferRequest {
    /// Chosen by the device; echoed in the answer or error. Its top bit ([`AUDIT_FLAG`]) marks
    /// an audit.
    pub seq: u64,
    pub encoding: Encoding,
    pub payload: Vec<u8>,
    /// The device model's probabilities, for ensembling or logging on the host.
    pub device_probs: Option<Vec<f32>>,
    /// Whether the answer should carry every class's probability.
    pub want_probs: bool,
}

impl InferRequest {
    /// Whether the request is an audit ([`AUDIT_FLAG`] set in `seq`).
    pub fn is_audit(&self) -> bool {
        self.seq & AUDIT_FLAG != 0
    }

    /// The device's request number, without the audit mark.
    pub fn number(&self) -> u64 {
        self.seq & !AUDIT_FLAG
    }
}

/// The host's answer to an [`InferRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferResponse {
    pub seq: u64,
    /// The host model's top-5 (class, probability), best first.
    pub top: Vec<(u32, f32)>,
    /// All probabilities, when the request asked for them.
    pub probs: Option<Vec<f32>>,
    /// Host time spent on the request (decode, preprocess, inference), in milliseconds.
    pub host_ms: f32,
    /// Of `host_ms`: decoding and preprocessing the payload, and the model's inference.
    pub host_decode_ms: f32,
    pub host_infer_ms: f32,
    /// Host energy for the request in millijoules, where the host can measure it.
    pub host_mj: Option<f32>,
}

/// What went wrong, in an [`ErrorMsg`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// A frame failed its COBS, CRC or postcard check.
    BadFrame,
    /// The peer speaks another protocol version.
    BadVersion,
    /// A message that makes no sense here (e.g. Infer before Hello).
    BadRequest,
    /// The payload could not be decoded as its encoding says.
    BadPayload,
    /// The frame or payload is larger than accepted.
    TooLarge,
    /// The host failed on its own side.
    Internal,
    /// The host needs a token (a pre-shared key) and got none, or a wrong one.
    Unauthorized,
    /// The host's queue is full; try again later.
    Busy,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorCode::BadFrame => "bad frame",
            ErrorCode::BadVersion => "bad version",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::BadPayload => "bad payload",
            ErrorCode::TooLarge => "too large",
            ErrorCode::Internal => "internal error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Busy => "busy",
        })
    }
}

/// An error report; `seq` names the request it answers, where there is one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub seq: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorMsg {
    pub fn new(seq: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorMsg { seq, code, message: message.into() }
    }
}

impl fmt::Display for ErrorMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "{} (request {seq}): {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

/// Everything that travels in a frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    Hello(Hello),
    Welcome(Welcome),
    Infer(InferRequest),
    Answer(InferResponse),
    Error(ErrorMsg),
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// The device's pre-shared key, sent before `Hello` to a host that needs one. (Appended
    /// last, so every other message encodes as before: hosts and devices without tokens
    /// interoperate with older ones.)
    Auth {
        token: String,
    },
}

impl Message {
    /// The variant's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Welcome(_) => "Welcome",
            Message::Infer(_) => "Infer",
            Message::Answer(_) => "Answer",
            Message::Error(_) => "Error",
            Message::Ping { .. } => "Ping",
            Message::Pong { .. } => "Pong",
            Message::Auth { .. } => "Auth",
        }
    }

    /// The request sequence number the message carries or answers, if any.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Message::Infer(r) => Some(r.seq),
            Message::Answer(r) => Some(r.seq),
            Message::Error(e) => e.seq,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_names_round_trip() {
        for e in Encoding::ALL {
            assert_eq!(e.name().parse::<Encoding>().unwrap(), e);
        }
        assert!("png".parse::<Encoding>().unwrap_err().contains("unknown encoding 'png'"));
    }

    #[test]
    fn negotiation_helpers() {
        let hello = Hello::new("dev", vec![Encoding::CropRaw, Encoding::CropJpeg]);
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            host_id: "host".into(),
            model: "big".into(),
            input: HostInput { size: 224, channels: 3, crop_fraction: 0.875 },
            classes: 1000,
            accepts: vec![Encoding::Original, Encoding::CropJpeg],
            max_frame: 4096,
        };
        assert_eq!(welcome.choose_encoding(&hello.accepts), Some(Encoding::CropJpeg));
        assert_eq!(welcome.choose_encoding(&[Encoding::CropRaw]), None);
        assert_eq!(welcome.agreed_max_frame(&hello), 4096);
        assert_eq!(welcome.input.raw_len(), 224 * 224 * 3);
    }

    #[test]
    fn message_kind_and_seq() {
        let e = Message::Error(ErrorMsg::new(Some(9), ErrorCode::BadPayload, "not a JPEG"));
        assert_eq!(e.kind(), "Error");
        assert_eq!(e.seq(), Some(9));
        assert_eq!(Message::Ping { nonce: 3 }.seq(), None);
        if let Message::Error(m) = e {
            assert_eq!(m.to_string(), "bad payload (request 9): not a JPEG");
        }
    }
}
