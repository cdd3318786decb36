//! edgecascade: an early-exit cascade of image classifiers for edge devices. A small
//! quantized model answers on the device; inputs it is unsure about go on to a larger model.
//!
//! Crate map (see ARCHITECTURE.md):
//! - pure core: `policy` (metrics, exit decision, ensembling), `cascade` (the stage driver),
//!   `eval::score`;
//! - configuration: `config` (cascade.toml), `manifest` (per-model TOML);
//! - edges: `runner` (tract, the only module naming it), `model`, `preprocess` (images),
//!   `dataset` (files and labels), `stage` (timed spans), `local` and `eval` (the commands'
//!   engines).

pub mod cascade;
pub mod config;
pub mod dataset;
pub mod eval;
pub mod local;
pub mod manifest;
pub mod model;
pub mod policy;
pub mod preprocess;
pub mod runner;
pub mod stage;
