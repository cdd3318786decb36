//! Tests of `avx512.rs`.

use crate::testing::{check_depthwise, xorshift};
use crate::Geometry;

/// The kernel against the reference: see [`check_depthwise`].
fn check(g: Geometry, data: &mut impl FnMut() -> i8) {
    check_depthwise(super::depthwise, g, data);
}

/// `c` channels of `h x w`, a `kh x kw` kernel, strides, pads `[top, left, bottom, right]`.
fn geometry(
    c: usize,
    (h, w): (usize, usize),
    (kh, kw, sh, sw): (usize, usize, usize, usize),
    pads: [usize; 4],
) -> Geometry {
    let [pt, pl, pb, pr] = pads;
    let oh = (h + pt + pb - kh) / sh + 1;
    let ow = (w + pl + pr - kw) / sw + 1;
    Geometry { cin: c, h, w, kh, kw, sh, sw, pt, pl, oh, ow }
}

/// Every path on odd sizes: windows from the input rows (stride 2: 1 to 4 blocks, 4 plus 1
/// to 3, 8 plus 2) and from the padded plane (stride 1, filled by rows and by `vpexpandb`; two rows
/// per register; 1, 2 or 4 rows per quad of taps 4), 1 x 1 planes, pads wider than the
/// kernel needs, rows past the last one read, single channels; and the shared driver for
/// the other kernels and strides.
#[test]
fn equals_the_reference_on_every_path() {
    if !super::available() {
        eprintln!("SKIPPED: AVX-512 depthwise (this CPU lacks the features)");
        return;
    }
    let mut rnd = xorshift(4242);
    let mut shapes = vec![];
    let planes = [(1, 1), (2, 3), (5, 7), (7, 7), (9, 4), (13, 14), (14, 14), (16, 17), (23, 33), (20, 50)];
    for (h, w) in planes.into_iter().chain([(11, 64), (9, 70), (4, 90), (6, 113), (5, 130), (3, 180)]) {
        for k in [3, 5] {
            for s in [1, 2] {
                for pads in [[k / 2; 4], [0, 0, 1, 1], [1, 2, 2, 1], [k - 1, 0, 0, k - 1]] {
                    if h + pads[0] + pads[2] >= k && w + pads[1] + pads[3] >= k {
                        shapes.push(geometry(3, (h, w), (k, k, s, s), pads));
                    }
                }
            }
        }
    }
    for (h, w, kh, kw, sh, sw) in [
        (9, 11, 1, 1, 1, 1),
        (9, 11, 2, 4, 1, 2),
        (12, 10, 3, 3, 2, 1),
        (12, 10, 5, 5, 1, 2),
        (12, 60, 5, 5, 2, 1),
        (15, 19, 3, 3, 3, 3),
        (10, 30, 7, 7, 1, 1),
        (6, 40, 3, 6, 2, 2),
        (12, 12, 9, 3, 1, 1),
        (20, 60, 3, 3, 1, 4),
    ] {
        shapes.push(geometry(2, (h, w), (kh, kw, sh, sw), [kh / 2, kw / 2, kh / 2, kw / 2]));
    }
    shapes.push(geometry(1, (7, 7), (5, 5, 1, 1), [2; 4]));
    shapes.push(geometry(17, (14, 14), (3, 3, 2, 2), [0, 0, 1, 1]));
    // Only the top rows read: the rest of the input is left out of the padded plane.
    shapes.push(Geometry { oh: 2, ow: 5, ..geometry(2, (9, 9), (3, 3, 1, 1), [1; 4]) });
    shapes.push(Geometry { oh: 1, ..geometry(2, (40, 9), (3, 3, 1, 1), [1; 4]) });
    shapes.push(Geometry { oh: 1, ..geometry(2, (40, 50), (5, 5, 1, 1), [2; 4]) });
    for g in shapes {
        check(g, &mut rnd);
    }
}
