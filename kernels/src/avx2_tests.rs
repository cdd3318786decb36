//! Tests of `avx2.rs`.

use crate::testing::{check_depthwise, xorshift};
use crate::Geometry;

fn geometry(c: usize, (h, w): (usize, usize), (k, s): (usize, usize), [pt, pl, pb, pr]: [usize; 4]) -> Geometry {
    let oh = (h + pt + pb - k) / s + 1;
    let ow = (w + pl + pr - k) / s + 1;
    Geometry { cin: c, h, w, kh: k, kw: k, sh: s, sw: s, pt, pl, oh, ow }
}

/// The kernel against the reference: see [`check_depthwise`].
fn check(g: Geometry, data: &mut impl FnMut() -> i8) {
    check_depthwise(super::depthwise, g, data);
}

/// Every lane layout and tile on odd sizes: stride 2 with 1 to 4 registers across and 4
/// plus 1 to 3; stride 1 with rows of 1 to 8 (one register a row), 9 to 16 (one pair), and
/// wider ones (4 pairs plus 1); 1 x 1 planes, pads wider than the kernel needs, input rows
/// past the last one read, planes narrower and wider than 16 (filled both ways), single
/// channels; and the shared driver for other kernels and strides.
#[test]
fn depthwise_equals_the_reference_on_every_path() {
    if !super::available() {
        eprintln!("SKIPPED: AVX2 depthwise (this CPU lacks AVX2)");
        return;
    }
    let mut rnd = xorshift(99);
    let mut shapes = vec![];
    let planes = [(1, 1), (2, 3), (5, 7), (7, 7), (3, 8), (9, 4), (13, 14), (14, 14), (16, 17), (6, 15)];
    for (h, w) in planes.into_iter().chain([(23, 33), (9, 50), (5, 64), (4, 71), (3, 90), (5, 130)]) {
        for k in [3, 5] {
            for s in [1, 2] {
                for pads in [[k / 2; 4], [0, 0, 1, 1], [1, 2, 2, 1], [k - 1, 0, 0, k - 1], [k + 1; 4]] {
                    if h + pads[0] + pads[2] >= k && w + pads[1] + pads[3] >= k {
                        shapes.push(geometry(3, (h, w), (k, s), pads));
                    }
                }
            }
        }
    }
    for (h, w, kh, kw, sh, sw) in
        [(9, 11, 1, 1, 1, 1), (9, 11, 2, 4, 1, 2), (12, 10, 3, 3, 2, 1), (15, 19, 3, 3, 3, 3), (10, 30, 7, 7, 1, 1)]
    {
        let g = geometry(2, (h, w), (kh, sh), [kh / 2, kw / 2, kh / 2, kw / 2]);
        let ow = (w + 2 * (kw / 2) - kw) / sw + 1;
        shapes.push(Geometry { kw, sw, ow, ..g });
    }
    shapes.push(geometry(1, (7, 7), (5, 1), [2; 4]));
    shapes.push(geometry(1, (1, 1), (3, 1), [1; 4]));
    shapes.push(geometry(17, (14, 14), (3, 2), [0, 0, 1, 1]));
    // Only the top rows read: the rest of the input is left out of the padded plane.
    shapes.push(Geometry { oh: 2, ow: 5, ..geometry(2, (9, 9), (3, 1), [1; 4]) });
    shapes.push(Geometry { oh: 1, ..geometry(2, (40, 9), (3, 1), [1; 4]) });
    shapes.push(Geometry { oh: 1, ..geometry(2, (40, 50), (5, 1), [2; 4]) });
    for g in shapes {
        check(g, &mut rnd);
    }
}

/// Every input and weight at -128 or 127 (the largest products, the pairs' sums at their
/// ends), on every lane layout.
#[test]
fn depthwise_extreme_values_are_exact() {
    if !super::available() {
        eprintln!("SKIPPED: AVX2 depthwise (this CPU lacks AVX2)");
        return;
    }
    for (xv, wv) in [(-128i8, -128i8), (-128, 127), (127, -128), (127, 127)] {
        for g in [
            geometry(3, (14, 14), (5, 1), [2; 4]),
            geometry(3, (7, 7), (3, 1), [1; 4]),
            geometry(3, (15, 15), (5, 2), [1, 1, 2, 2]),
            geometry(2, (9, 40), (3, 1), [1; 4]),
        ] {
            // Mostly the extreme value, a few others so that the planes are not uniform.
            let mut i = 0u32;
            let mut data = || {
                i += 1;
                if i.is_multiple_of(13) {
                    (i % 256) as u8 as i8
                } else if i <= (g.cin * g.h * g.w) as u32 {
                    xv
                } else {
                    wv
                }
            };
            check(g, &mut data);
        }
    }
}
