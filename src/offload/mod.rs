//! The device's remote last stage: the cascade's last stage on a host, reached over a link.
//! `RemoteStage` is the seam the pipeline calls. `driver::Offload` fills it for every
//! transport with one loop: tries, the reply timeout, backoff after a host is found down,
//! reconnecting, and, when the host cannot answer, `StageFailure::Unavailable`, so the cascade
//! answers locally, marked degraded: every input gets exactly one answer. The transports only
//! connect, encode and exchange: `framed::FramedTransport` (the framed link over serial or
//! TCP, `Remote`) and `oip::OipTransport` (any Open Inference Protocol v2 server over HTTP,
//! `OipRemote`). `payload` encodes what the framed link sends, for live runs and tune alike.

pub mod driver;
pub mod framed;
pub mod oip;
pub mod payload;

pub use driver::{Backoff, Offload};
pub use framed::Remote;

use crate::core::cascade::StageFailure;
use crate::link::{Encoding, LinkAddr, Shaping};
use crate::run::spans::Spans;
use serde::Serialize;
use std::time::Duration;

/// How the device reaches the host and how hard it tries.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    pub addr: LinkAddr,
    /// Pace the link (rehearsal of a slower one); figures then say they came from a paced link.
    pub shaping: Option<Shaping>,
    /// Encodings to offer, preferred first; the first the host accepts is used.
    pub encodings: Vec<Encoding>,
    pub jpeg_quality: u8,
    pub device_id: String,
    pub connect_timeout: Duration,
    /// How long to wait for one answer before sending the request again.
    pub reply_timeout: Duration,
    /// Sends per request (the first and the retries).
    pub tries: u32,
    /// Ask for every probability (needed to ensemble on the device).
    pub want_probs: bool,
    /// The host's pre-shared key, when it needs one.
    pub token: Option<String>,
    /// How to preprocess for a host that takes tensors (an OIP v2 server): the host model's
    /// manifest input (mean, std, crop). The size comes from the server's metadata.
    pub tensor_spec: Option<crate::model::manifest::InputSpec>,
}

impl RemoteConfig {
    /// True when the link is paced to rehearse a slower one.
    pub fn is_paced(&self) -> bool {
        self.shaping.as_ref().is_some_and(|s| s.is_active())
    }

    pub fn new(addr: LinkAddr) -> RemoteConfig {
        RemoteConfig {
            addr,
            shaping: None,
            encodings: vec![Encoding::CropJpeg, Encoding::Original, Encoding::CropRaw],
            jpeg_quality: 90,
            device_id: format!("edgecascade-device-{}", std::process::id()),
            connect_timeout: Duration::from_secs(2),
            reply_timeout: Duration::from_secs(5),
            tries: 3,
            want_probs: false,
            token: None,
            tensor_spec: None,
        }
    }
}

/// What a remote last stage serves, learned when it connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteInfo {
    pub model: String,
    pub classes: usize,
}

/// Why a remote stage could not connect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The host is there but will not serve this device as configured (a missing or wrong
    /// token, a model it cannot feed): retrying will not help, the configuration must change.
    #[error("{0}")]
    Refused(String),
    /// The host is not reachable now; inputs are answered locally (degraded) until it is.
    #[error("{0}")]
    Unreachable(String),
}

/// The cascade's last stage reached over a link: `Offload` over the framed link (`Remote`) or
/// an OIP v2 server (`oip::OipRemote`).
pub trait RemoteStage: Send {
    /// Connects now if not connected (at start, to fail early and learn the host's model).
    fn connect(&mut self) -> Result<RemoteInfo, ConnectError>;
    /// Offloads one input and returns the host's logits (log-probabilities). `bytes` are the
    /// input as read, `img` its decoded pixels. `StageFailure::Unavailable` when the host
    /// cannot answer: the cascade then answers locally, marked degraded.
    fn infer(
        &mut self,
        bytes: &[u8],
        input: &crate::model::Decoded,
        spans: &mut Spans,
        stage: usize,
        report: &mut LinkReport,
    ) -> Result<Vec<f32>, StageFailure>;
    /// Sends an input the device answered itself to the host as well, marked as an audit (a
    /// flag the framed link carries in the request's sequence number, a parameter `audit` on
    /// OIP), and returns the host's logits, as `infer` does.
    fn audit(
        &mut self,
        bytes: &[u8],
        input: &crate::model::Decoded,
        spans: &mut Spans,
        stage: usize,
        report: &mut LinkReport,
    ) -> Result<Vec<f32>, StageFailure>;
    /// True when the link is paced to rehearse a slower one (its times are then modelled).
    fn is_paced(&self) -> bool;
}

/// What the link did for one offloaded input, logged beside the answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LinkReport {
    pub encoding: Option<String>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub tries: u32,
    /// The host's own time on the request (decode, preprocess, inference), as it reported it.
    pub host_ms: Option<f32>,
    /// Of `host_ms`: the host's decode and preprocessing, and its model's inference.
    pub host_decode_ms: Option<f32>,
    pub host_infer_ms: Option<f32>,
    pub host_mj: Option<f32>,
    /// True when the link was paced to rehearse a slower one: its times are modelled.
    pub paced: bool,
}
