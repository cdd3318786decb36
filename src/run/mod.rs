//! One run over a stream of inputs on this machine, shared by `classify`, `run` and `demo`: the
//! pipeline (the stages loaded here, and optionally the host's last stage), the input sources
//! (files, a watched folder, an MJPEG stream), the session (one output line and one results log
//! line per input, then the summary), the live audit of the device's answers by the host
//! (`audit`) and the timed spans of an input's trip.

pub mod audit;
pub mod inputs;
pub mod pipeline;
pub mod results_log;
pub mod session;
pub mod spans;
