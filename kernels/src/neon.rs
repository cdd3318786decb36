//! NEON kernels (aarch64): matrix products and depthwise convolutions with `smlal` (every
//! aarch64 CPU) and `sdot` (CPUs with the dot product). (Not written yet: reported unavailable.)

use crate::Requant;
use std::ops::Range;

pub fn available() -> bool {
    false
}

pub fn available_dot() -> bool {
    false
}

#[derive(Debug, Clone)]
pub struct PackedWeights {}

impl PackedWeights {
    pub fn new(_weights: &[i8], _m: usize, _k: usize, _dot: bool) -> PackedWeights {
        unreachable!("no NEON kernel yet")
    }

    pub fn row_block(&self) -> usize {
        1
    }

    pub fn run(&self, _rows: Range<usize>, _x: &[i8], _n: usize, _bias: &[i32], _rq: &Requant, _out: &mut [i8]) {
        unreachable!("no NEON kernel yet")
    }
}

pub fn depthwise(_l: &crate::depthwise::Layer, _chans: Range<usize>, _x: &[i8], _out: &mut [i8], _dot: bool) {
    unreachable!("no NEON kernel yet")
}
