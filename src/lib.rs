//! edgecascade: an early-exit cascade of image classifiers for edge devices. A small
//! quantized model answers on the device; inputs it is unsure about go on to a larger model.
//!
//! Crate map, by who runs where (ARCHITECTURE.md has the whole code map):
//! - `core`: what decides, pure (no I/O, no clock): the policy, the cascade driver, the
//!   calibration maths, the cost model, the plot;
//! - `model`: a model and what it takes: manifests, preprocessing, the `runner` (tract: the only
//!   module naming it, with the int8 rewrite and the kernel choice);
//! - `run`: one run over inputs on this machine: the pipeline of stages, the input sources, the
//!   session with its output and results log, the timed spans;
//! - `offload`: the device's remote last stage: one retrying driver, over the framed link or OIP;
//! - `host`: the host's side: the core that runs requests, the framed session, the OIP endpoint,
//!   the accept loop, the batcher;
//! - `link`, `oip`: the wire formats alone (frames and messages; OIP's JSON/binary and HTTP);
//! - `tune`: measuring a cascade on labeled data: datasets, the logit cache, eval, the calibrate
//!   and report drivers, the MLPerf-style bench;
//! - `energy` and `board`: power sensors, attribution of energy to spans, board profiles;
//! - `machine`: the machine's state around a benchmark (temperatures, CPU frequency, the
//!   firmware's throttling flags, peak memory), read through `board::SysRoot`;
//! - `config`: `cascade.toml`.

pub mod board;
pub mod config;
pub mod core;
pub mod energy;
pub mod host;
pub mod link;
pub mod machine;
pub mod model;
pub mod offload;
pub mod oip;
pub mod run;
#[cfg(test)]
mod testing;
pub mod tune;
