//! Helpers shared by the integration tests (`mod common;` in each test file): the repository
//! root, the binary as a command, a host process on free ports; `link`, one scripted device–host
//! conversation; `relay`, a fault-injecting TCP relay; `energy`, fake sysfs trees of each board.

#![allow(dead_code)]

pub mod energy;
pub mod link;
pub mod oip;
pub mod relay;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `edgecascade` binary, run in the repository root with warnings logged and none of the
/// environment variables that stand for flags (token, board, sysfs root) taken from the
/// environment the tests run in.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgecascade"));
    c.current_dir(root()).env("RUST_LOG", "warn");
    for var in ["EDGECASCADE_TOKEN", "EDGECASCADE_BOARD", "EDGECASCADE_SYSFS_ROOT"] {
        c.env_remove(var);
    }
    c
}

/// An `edgecascade host` process, killed on drop; started once it has printed its ready line
/// for each link it serves (`--listen`, `--link`, `--oip-listen`).
pub struct HostProc {
    child: Child,
    /// `HOST:PORT` of its framed TCP link, when it listens on one.
    pub tcp: String,
    /// `HOST:PORT` of its OIP endpoint, when it has one.
    pub http: String,
}

impl HostProc {
    /// `host ARGS`, with `env` set.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> HostProc {
        let mut cmd = bin();
        cmd.arg("host").args(args).envs(env.iter().copied());
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("host starts");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let links = args.iter().filter(|a| ["--listen", "--link", "--oip-listen"].contains(a)).count();
        let (mut tcp, mut http) = (String::new(), String::new());
        for _ in 0..links {
            let mut line = String::new();
            out.read_line(&mut line).expect("ready line");
            if let Some(rest) = line.split("http://").nth(1) {
                http = rest.split('/').next().unwrap().to_owned();
            } else if let Some(rest) = line.trim().split(" on tcp:").nth(1) {
                tcp = rest.to_owned();
            } else {
                assert!(line.contains("serving"), "unexpected ready line {line:?}");
            }
        }
        HostProc { child, tcp, http }
    }

    /// A host on the framed TCP link at `127.0.0.1:port` (0: a free port).
    pub fn tcp(port: u16) -> HostProc {
        Self::start(&["--listen", &format!("tcp:127.0.0.1:{port}")], &[])
    }

    /// A host serving the serial link at `path`, once it has said it serves it.
    pub fn serial(path: &Path) -> HostProc {
        Self::start(&["--link", &format!("serial:{}", path.display())], &[])
    }

    /// The port of its framed TCP link.
    pub fn port(&self) -> u16 {
        let port = self.tcp.rsplit(':').next().and_then(|p| p.parse().ok());
        port.unwrap_or_else(|| panic!("the host listens on no TCP port ({:?})", self.tcp))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// 20 labeled images (JPEG, with labels.csv) made from the five photos: each as it is,
/// mirrored, its centre and scaled down. Enough for `calibrate` (it needs 20).
pub fn twenty_labeled_images(dir: &Path) {
    let labels = std::fs::read_to_string(root().join("photos/labels.csv")).unwrap();
    let mut csv = String::from("file,label\n");
    for line in labels.lines().skip(1) {
        let (file, label) = line.split_once(',').unwrap();
        let img = image::open(root().join("photos").join(file)).unwrap().to_rgb8();
        let (w, h) = img.dimensions();
        let variants = [
            img.clone(),
            image::imageops::flip_horizontal(&img),
            image::imageops::crop_imm(&img, w / 10, h / 10, w * 8 / 10, h * 8 / 10).to_image(),
            image::imageops::resize(&img, w * 7 / 10, h * 7 / 10, image::imageops::FilterType::Triangle),
        ];
        for (k, v) in variants.iter().enumerate() {
            let name = format!("{}-{k}.jpg", file.split('.').next().unwrap());
            v.save(dir.join(&name)).unwrap();
            csv += &format!("{name},{label}\n");
        }
    }
    std::fs::write(dir.join("labels.csv"), csv).unwrap();
}
