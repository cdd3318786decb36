//! edgecascade: an early-exit cascade of image classifiers for edge devices. A small
//! quantized model answers on the device; inputs it is unsure about go on to a larger model.
//!
//! Crate map (see ARCHITECTURE.md):
//! - pure core: `policy` (metrics, exit decision, ensembling), `cascade` (the stage driver),
//!   `eval::score`, `calibrate` (temperatures, sweeps, Pareto front, threshold choice), `cost`
//!   (the cost model), `plot` (SVG);
//! - configuration: `config` (cascade.toml), `manifest` (per-model TOML);
//! - edges: `runner` (tract, the only module naming it), `model`, `preprocess` (images),
//!   `dataset` (files and labels), `stage` (timed spans), `pipeline` (one input through
//!   every stage), `eval`, `cache` (logit cache), `tune` (the calibrate and report commands);
//! - the link: `link` (wire messages, framing, transports, fault relay), `host` (serves the
//!   last stage), `device` (the last stage seen from the device);
//! - energy: `board` (profiles from boards/*.toml, detection, `SysRoot`), `energy` (the
//!   `EnergyMeter` readers per sensor, the sampler, attribution to spans, `bench`).

pub mod batch;
pub mod board;
pub mod cache;
pub mod calibrate;
pub mod cascade;
pub mod config;
pub mod cost;
pub mod dataset;
pub mod device;
pub mod energy;
pub mod eval;
pub mod host;
pub mod inputs;
pub mod link;
pub mod manifest;
pub mod model;
pub mod oip;
pub mod pipeline;
pub mod plot;
pub mod policy;
pub mod preprocess;
pub mod results_log;
pub mod runner;
pub mod session;
pub mod stage;
pub mod tune;
