//! What decides, pure: every function takes plain values and returns plain values, with no I/O
//! and no clock (a test, `tests/invariants.rs`, checks the imports). The policy (confidence
//! metrics and the exit decision), the cascade's stage driver over a logits closure (shared by
//! live runs, evaluation and calibration), the calibration maths, the statistics of its
//! guarantees and the guaranteed choice, the cost model and the plot.

pub mod calibrate;
pub mod cascade;
pub mod certify;
pub mod cost;
pub mod guarantee;
pub mod plot;
pub mod policy;
