//! The first Affine layer on compressed input rows ([`SparseRows`]): a1 = x·W1 from
//! each row's non-zero entries only (MNIST is ~81 % zeros), and xᵀ·da1 added into W1's
//! rows. The fused training step and the batched prediction both run their input layer
//! here.
//!
//! Register blocks, the one set of widths in the crate: a layer's units are padded to
//! whole blocks of [`BLOCK`] = 32, and W1 is stored in column blocks of
//! [`column_block`] units: f32 32 (two 512-bit vectors), f64 16 (two vectors), so that
//! the W1 rows one pass over a batch reads are 100 kB for 784 inputs in either dtype
//! and stay in a core's L2 cache. The inner loops keep four interleaved sums of one
//! column block in registers (16 256-bit registers on AVX2, 8 512-bit ones on
//! AVX-512), which hides the latency of the adds.

use multiversion::multiversion;
use multiversion::target::target_cfg;

use super::math::{axpy, has_fma, madd};
use super::sparse::RowEntries;
#[cfg(doc)]
use super::sparse::SparseRows;
use super::Float;

/// Units per register block; a layer's units are padded to a multiple of it.
pub const BLOCK: usize = 32;

/// `units` rounded up to whole register blocks.
pub fn padded_width(units: usize) -> usize {
    units.div_ceil(BLOCK) * BLOCK
}

/// Units per column block of a stored W1: f32 32, f64 16 (see the module doc).
pub fn column_block<T>() -> usize {
    if std::mem::size_of::<T>() == 8 {
        16
    } else {
        BLOCK
    }
}

/// Columns lo..hi of W1 (d, h) into `blocks`, W1's columns stored in column blocks of
/// B units ([`column_block`]): unit l of input i at (l / B)·d·B + i·B + l % B
/// (`to_blocks`); or back.
pub fn copy_columns<T: Float>(
    w1: &mut [T],
    blocks: &mut [T],
    h: usize,
    (lo, hi): (usize, usize),
    to_blocks: bool,
) {
    let (bw, d) = (column_block::<T>(), w1.len() / h.max(1));
    let at = |i: usize, l: usize| (l / bw) * d * bw + i * bw + l % bw;
    if to_blocks {
        for (i, src) in w1.chunks_exact(h.max(1)).enumerate() {
            for (l, &v) in src[lo..hi].iter().enumerate() {
                blocks[at(i, l)] = v;
            }
        }
    } else {
        for (i, dst) in w1.chunks_exact_mut(h.max(1)).enumerate() {
            for (l, v) in dst[lo..hi].iter_mut().enumerate() {
                *v = blocks[at(i, l)];
            }
        }
    }
}

/// a1 (n, wp) = x·W1 (without b1) for the rows `rows` of sp, from their non-zero
/// entries: each column block of a row summed in registers (four interleaved sums).
/// W1: d × wp in column blocks ([`copy_columns`]). Row q also starts loading row
/// `ahead[q]` of sp (a later batch's) into cache.
pub fn forward<T: Float, S: RowEntries<T>>(
    a1: &mut [T],
    w1: &[T],
    sp: S,
    rows: &[usize],
    ahead: &[i64],
) {
    if column_block::<T>() == 16 {
        forward_blocks::<T, S, 16>(a1, w1, sp, rows, ahead);
    } else {
        forward_blocks::<T, S, BLOCK>(a1, w1, sp, rows, ahead);
    }
}

#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn forward_blocks<T: Float, S: RowEntries<T>, const B: usize>(
    a1: &mut [T],
    w1: &[T],
    sp: S,
    rows: &[usize],
    ahead: &[i64],
) {
    let fma = has_fma!();
    let wp = a1.len() / rows.len().max(1);
    let d = w1.len() / wp.max(1);
    for (blk, w1) in w1.chunks_exact(d * B).enumerate() {
        let c0 = blk * B;
        for (q, (a, &r)) in a1.chunks_exact_mut(wp).zip(rows).enumerate() {
            if blk == 0 {
                if let Some(&next) = ahead.get(q) {
                    sp.prefetch_row(next as usize);
                }
            }
            let es = sp.row(r);
            let zero = [T::zero(); B];
            let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
            let quads = es.chunks_exact(4);
            let tail = quads.remainder();
            let at = |e: S::Entry| S::col(e) * B;
            for e in quads {
                a0 = axpy(a0, sp.value(e[0]), w1, at(e[0]), fma);
                a1 = axpy(a1, sp.value(e[1]), w1, at(e[1]), fma);
                a2 = axpy(a2, sp.value(e[2]), w1, at(e[2]), fma);
                a3 = axpy(a3, sp.value(e[3]), w1, at(e[3]), fma);
            }
            for &e in tail {
                a0 = axpy(a0, sp.value(e), w1, at(e), fma);
            }
            for ((((o, &p), &q), &r), &s) in
                a[c0..c0 + B].iter_mut().zip(&a0).zip(&a1).zip(&a2).zip(&a3)
            {
                *o = (p + q) + (r + s);
            }
        }
    }
}

/// g += scale·xᵀ·da1 over the rows `rows` of sp (batch positions in order):
/// g[i, :] += (scale·x[r, i])·da1[r, :] for each non-zero x[r, i]. g: d × wp in column
/// blocks as W1; da1 (n, wp). With g = W1 and scale = −lr this is SGD's update without
/// forming dW1.
pub fn add_weight_gradient<T: Float, S: RowEntries<T>>(
    g: &mut [T],
    da1: &[T],
    sp: S,
    rows: &[usize],
    scale: T,
) {
    if column_block::<T>() == 16 {
        weight_gradient_blocks::<T, S, 16>(g, da1, sp, rows, scale);
    } else {
        weight_gradient_blocks::<T, S, BLOCK>(g, da1, sp, rows, scale);
    }
}

#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn weight_gradient_blocks<T: Float, S: RowEntries<T>, const B: usize>(
    g: &mut [T],
    da1: &[T],
    sp: S,
    rows: &[usize],
    scale: T,
) {
    let fma = has_fma!();
    let wp = da1.len() / rows.len().max(1);
    let d = g.len() / wp.max(1);
    for (blk, g) in g.chunks_exact_mut(d * B).enumerate() {
        let c0 = blk * B;
        for (dq, &r) in da1.chunks_exact(wp).zip(rows) {
            let mut db = [T::zero(); B];
            db.copy_from_slice(&dq[c0..c0 + B]);
            for &e in sp.row(r) {
                let (sv, at) = (scale * sp.value(e), S::col(e) * B);
                for (o, &x) in g[at..at + B].iter_mut().zip(&db) {
                    *o = madd(sv, x, *o, fma);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_trip_through_blocks() {
        // W1 (3, 40) f64: two column blocks of 16 for units 0..20 (padded to 32).
        let (d, h) = (3, 40);
        let mut w1: Vec<f64> = (0..d * h).map(|v| v as f64).collect();
        let mut blocks = vec![0.0; d * padded_width(20)];
        copy_columns(&mut w1, &mut blocks, h, (0, 20), true);
        // Unit 17 of input 2 sits in block 1, row 2, lane 1.
        assert_eq!(blocks[16 * d + 2 * 16 + 1], (2 * h + 17) as f64);
        let mut back = vec![-1.0; d * h];
        copy_columns(&mut back, &mut blocks, h, (0, 20), false);
        for i in 0..d {
            assert_eq!(back[i * h..i * h + 20], w1[i * h..i * h + 20]);
            assert!(back[i * h + 20..(i + 1) * h].iter().all(|&v| v == -1.0));
        }
    }
}
