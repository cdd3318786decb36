//! AVX-512 depthwise convolutions (x86_64, AVX-512 BW). (Not written yet: reported unavailable.)

use std::ops::Range;

pub fn available() -> bool {
    false
}

pub fn depthwise(_l: &crate::depthwise::Layer, _chans: Range<usize>, _x: &[i8], _out: &mut [i8]) {
    unreachable!("no AVX-512 kernel yet")
}
