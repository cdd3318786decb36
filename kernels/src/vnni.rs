//! VNNI matrix products (x86_64): `vpdpbusd` multiplies four unsigned bytes by four signed bytes
//! and adds the four products into an i32 lane, exactly, in one instruction (64 multiply-adds
//! per zmm register with AVX-512 VNNI, 32 per ymm register with AVX-VNNI): twice what `vpmaddwd`
//! does in `crate::avx2`, with no widening of the operands. The activations are made unsigned
//! by adding 128 (flipping their sign bit) as they are packed, and the weights stay signed; the
//! `128 * sum(w[r])` this adds to row r comes off its bias (wrapping, as all the i32 arithmetic).
//!
//! Weights `[m, k]` are packed once in panels of 4 rows, 4 consecutive k per 32-bit word (zeros
//! past k). Activations `[k, n]` are packed per call, one block of columns at a time, as groups
//! of 4 k per 32-bit lane; a tile of up to 6 rows by one block (64 columns in 4 zmm, 16 in
//! 2 ymm) keeps its accumulators in registers, broadcasts each row's weight word against the
//! block's activation registers, and requantizes in its epilogue, in registers, as
//! `Requant::row` does: only int8 values are written. With small k (16 to 32, at 112 x 112 and
//! 56 x 56 pixels) the epilogue costs as much as the products, so it leaves out, per call, what
//! the requantization does not need (see `Mode`). One column (a classifier) runs a
//! matrix-vector product on the same packed weights, lanes over rows; so does a last column
//! alone in its register (7 x 7 = 49 pixels), instead of a register of padding.

use crate::Requant;
use std::ops::Range;

/// Rows per weight panel: the row block threads split at.
const P: usize = 4;

/// Whether the AVX-512 VNNI kernel can run here.
pub fn available_512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-VNNI (256-bit, VEX) kernel can run here.
pub fn available_256() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Weights packed for the VNNI kernels: per panel of `P` rows, per group q of 4 along k, the
/// panel's words `w[r][4q..4q + 4]` (byte i = `w[r][4q + i]`), `kq_pad` groups per panel.
#[derive(Debug, Clone)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct PackedWeights {
    m: usize,
    k: usize,
    /// Groups of 4 along k holding weights.
    kq: usize,
    /// Groups stored per panel: `kq` rounded up to 8 with zero words, so the matrix-vector
    /// product reads whole pairs of registers.
    kq_pad: usize,
    wide: bool,
    data: Vec<u32>,
    /// Each row's sum of weights: the bias correction for the activations' offset of 128.
    rowsum: Vec<i32>,
}

impl PackedWeights {
    pub fn new(weights: &[i8], m: usize, k: usize, wide: bool) -> PackedWeights {
        assert!(weights.len() == m * k);
        let kq = k.div_ceil(4);
        let kq_pad = kq.div_ceil(8) * 8;
        let panels = m.div_ceil(P);
        let mut data = vec![0u32; panels * kq_pad * P];
        for r in 0..m {
            let row = &weights[r * k..][..k];
            for (q, c) in row.chunks(4).enumerate() {
                let word = c.iter().enumerate().fold(0u32, |w, (i, &b)| w | (b as u8 as u32) << (8 * i));
                data[((r / P) * kq_pad + q) * P + r % P] = word;
            }
        }
        let rowsum = (0..m).map(|r| weights[r * k..][..k].iter().map(|&v| v as i32).sum()).collect();
        PackedWeights { m, k, kq, kq_pad, wide, data, rowsum }
    }

    pub fn row_block(&self) -> usize {
        P
    }

    /// `out[(r - rows.start) * n + j] = requant(r, bias[r] + sum_i w[r][i] * x[i * n + j])` for
    /// r in `rows`, j < n.
    ///
    /// # Panics
    /// If the sizes do not match, `rows.start` is not a multiple of [`PackedWeights::row_block`]
    /// or the CPU cannot run the kernel the weights were packed for.
    pub fn run(&self, rows: Range<usize>, x: &[i8], n: usize, bias: &[i32], rq: &Requant, out: &mut [i8]) {
        assert!(rows.start <= rows.end && rows.end <= self.m && rows.start.is_multiple_of(P));
        assert!(x.len() == self.k * n && out.len() == rows.len() * n && bias.len() == self.m);
        assert!(rq.scale.len() == self.m && rq.offset.len() == self.m);
        if rows.is_empty() || n == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let job = x86::Job { w: self, rows, x, n, bias, rq, out: out.as_mut_ptr() };
            if self.wide {
                assert!(available_512(), "AVX-512 VNNI is not available");
                // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked just above); the sizes
                // were checked above, and `out` is borrowed mutably for the call.
                unsafe { x86::run512(&job) }
            } else {
                assert!(available_256(), "AVX-VNNI is not available");
                // SAFETY: as above, for AVX2 and AVX-VNNI.
                unsafe { x86::run256(&job) }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (bias, rq, out);
            panic!("the VNNI kernels run on x86_64 only");
        }
    }

    /// Row r's bias with the activations' offset taken off: `bias - 128 * sum(w[r])`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn bias(&self, bias: &[i32], r: usize) -> i32 {
        bias[r].wrapping_sub(self.rowsum[r].wrapping_mul(128))
    }
}

#[cfg(target_arch = "x86_64")]
#[path = "vnni_x86.rs"]
mod x86;

#[cfg(test)]
#[path = "vnni_tests.rs"]
mod tests;
