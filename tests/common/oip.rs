//! The OIP tests' shared pieces: the served model, a host serving it, requests from a
//! device's side.

use super::{root, HostProc};
use edgecascade::model::preprocess;
use edgecascade::model::Model;
use edgecascade::offload::oip::HttpConn;
use edgecascade::oip::{self, Tensor};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

/// The served model: the small float model keeps these tests quick; the protocol is the same.
pub const MODEL: &str = "models/efficientnet-lite0-fp32.toml";
pub const NAME: &str = "efficientnet-lite0-fp32";
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A `host` process serving `MODEL` over OIP and a TCP link on free loopback ports, with
/// `extra` flags and `env`.
pub fn start_host(extra: &[&str], env: &[(&str, &str)]) -> HostProc {
    let base = ["--model", MODEL, "--oip-listen", "127.0.0.1:0", "--listen", "tcp:127.0.0.1:0"];
    HostProc::start(&[&base[..], extra].concat(), env)
}

/// A host's OIP endpoint, from a device's side.
pub trait OipEnd {
    fn conn(&self) -> HttpConn;
    fn link(&self) -> String;
}

impl OipEnd for HostProc {
    fn conn(&self) -> HttpConn {
        let s = TcpStream::connect(&self.http).unwrap();
        HttpConn::new(Box::new(s), &self.http)
    }

    fn link(&self) -> String {
        format!("oip+http://{}/v2/models/{NAME}", self.http)
    }
}

/// The served model, in this process, to compare with.
pub fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(&root().join(MODEL), &Default::default()).unwrap())
}

pub fn photo_tensor(name: &str) -> Vec<f32> {
    let img = preprocess::decode(&std::fs::read(root().join("photos").join(name)).unwrap()).unwrap();
    preprocess::to_tensor(&img, model().manifest.image().unwrap())
}

pub const PHOTOS: [&str; 3] = ["chelsea.png", "coffee.png", "grace_hopper.jpg"];

pub fn request(
    c: &mut HttpConn,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Vec<u8>, Option<usize>) {
    c.send(method, path, headers, body).unwrap();
    let r = c.receive(TIMEOUT).unwrap();
    let hl = r.header(oip::HEADER_LEN).map(|v| v.parse().unwrap());
    (r.status, r.body, hl)
}

pub fn infer(c: &mut HttpConn, inputs: &[Tensor], binary: bool) -> (u16, Vec<u8>, Option<usize>) {
    let (body, hl) = oip::encode_request("t", inputs, Some("logits"), binary);
    let mut headers = Vec::new();
    if let Some(n) = hl {
        headers.push((oip::HEADER_LEN, n.to_string()));
    }
    request(c, "POST", &format!("/v2/models/{NAME}/infer"), &headers, &body)
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
