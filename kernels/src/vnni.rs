//! VNNI matrix products (x86_64): `vpdpbusd` on 512-bit (AVX-512 VNNI) and 256-bit (AVX-VNNI)
//! registers. (Not written yet: no CPU reports them as available.)

use crate::Requant;
use std::ops::Range;

pub fn available_512() -> bool {
    false
}

pub fn available_256() -> bool {
    false
}

#[derive(Debug, Clone)]
pub struct PackedWeights {}

impl PackedWeights {
    pub fn new(_weights: &[i8], _m: usize, _k: usize, _wide: bool) -> PackedWeights {
        unreachable!("no VNNI kernel yet")
    }

    pub fn row_block(&self) -> usize {
        1
    }

    pub fn run(&self, _rows: Range<usize>, _x: &[i8], _n: usize, _bias: &[i32], _rq: &Requant, _out: &mut [i8]) {
        unreachable!("no VNNI kernel yet")
    }
}
