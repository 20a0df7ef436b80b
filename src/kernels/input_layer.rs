//! The first Affine layer on compressed input rows ([`SparseRows`]): a1 = x·W1 from
//! each row's non-zero entries only (MNIST is ~81 % zeros), and xᵀ·da1 added into W1's
//! rows. The fused training step and the batched prediction both run their input layer
//! here.
//!
//! Register blocks, the one set of widths in the crate: W1 is stored in column blocks of
//! [`column_block`] units, f32 32 (two 512-bit vectors), f64 16 (two vectors), so that
//! the W1 rows one pass over a batch reads are 100 kB for 784 inputs in either dtype
//! and stay in a core's L2 cache; the layer's last units go in one narrower block of
//! whole 256-bit vectors, so a layer is padded to whole vectors only ([`padded_width`]:
//! 50 f32 units take blocks of 32 and 24, 50 f64 units 16, 16, 16 and 4). The inner
//! loops keep four interleaved sums of one column block in registers (16 256-bit
//! registers on AVX2, 8 512-bit ones on AVX-512), which hides the latency of the adds.

use multiversion::multiversion;
use multiversion::target::target_cfg;

use super::math::{axpy, has_fma, madd};
use super::sparse::RowEntries;
#[cfg(doc)]
use super::sparse::SparseRows;
use super::Float;

/// Units a single shard's register blocks hold at most: a layer wider than this is split
/// between two shards.
pub const BLOCK: usize = 32;

/// Units per full column block of a stored W1: f32 32, f64 16 (see the module doc).
pub fn column_block<T>() -> usize {
    if std::mem::size_of::<T>() == 8 {
        16
    } else {
        BLOCK
    }
}

/// Units per 256-bit vector: f32 8, f64 4; the narrowest block.
fn vector_width<T>() -> usize {
    32 / std::mem::size_of::<T>()
}

/// `units` rounded up to whole 256-bit vectors (f32 8, f64 4).
pub fn padded_width<T>(units: usize) -> usize {
    units.div_ceil(vector_width::<T>()) * vector_width::<T>()
}

/// The column blocks (first unit, width) of a padded width wp: full blocks of
/// [`column_block`], then the rest in one. Block (c0, w) of W1 (d inputs)
/// starts at c0·d and holds input i's units at c0·d + i·w.
pub fn column_blocks<T>(wp: usize) -> impl Iterator<Item = (usize, usize)> {
    let full = column_block::<T>();
    let mut c0 = 0;
    std::iter::from_fn(move || {
        let rest = wp - c0;
        (rest > 0).then(|| {
            let block = (c0, full.min(rest));
            c0 += block.1;
            block
        })
    })
}

/// Columns lo..hi of W1 (d, h) into `blocks` (d × wp in [`column_blocks`]), to the
/// blocks (`to_blocks`) or back.
pub fn copy_columns<T: Float>(
    w1: &mut [T],
    blocks: &mut [T],
    h: usize,
    (lo, hi): (usize, usize),
    to_blocks: bool,
) {
    let d = w1.len() / h.max(1);
    let wp = blocks.len() / d.max(1);
    for (c0, w) in column_blocks::<T>(wp) {
        let (a, b) = (lo + c0, (lo + c0 + w).min(hi));
        if a >= b {
            break;
        }
        let block = &mut blocks[c0 * d..(c0 + w) * d];
        for (src, dst) in w1.chunks_exact_mut(h.max(1)).zip(block.chunks_exact_mut(w)) {
            if to_blocks {
                dst[..b - a].copy_from_slice(&src[a..b]);
            } else {
                src[a..b].copy_from_slice(&dst[..b - a]);
            }
        }
    }
}

/// `f::<T, S, W>(args)` with the const block width W equal to `width`, one of the widths
/// [`column_blocks`] makes: 32, 24, 16, 8 (f32) or 16, 12, 8, 4 (f64).
macro_rules! by_width {
    ($width:expr, $f:ident($($arg:expr),*)) => {
        match $width {
            32 => $f::<T, S, 32>($($arg),*),
            24 => $f::<T, S, 24>($($arg),*),
            16 => $f::<T, S, 16>($($arg),*),
            12 => $f::<T, S, 12>($($arg),*),
            8 => $f::<T, S, 8>($($arg),*),
            _ => $f::<T, S, 4>($($arg),*),
        }
    };
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
    let wp = a1.len() / rows.len().max(1);
    let d = w1.len() / wp.max(1);
    let mut at = 0;
    for (c0, width) in column_blocks::<T>(wp) {
        let block = &w1[at..at + width * d];
        at += width * d;
        let ahead = if c0 == 0 { ahead } else { &[] };
        by_width!(width, forward_block(a1, block, sp, rows, ahead, c0));
    }
}

/// Columns c0..c0 + B of a1 from W1's column block `w1` (d × B).
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn forward_block<T: Float, S: RowEntries<T>, const B: usize>(
    a1: &mut [T],
    w1: &[T],
    sp: S,
    rows: &[usize],
    ahead: &[i64],
    c0: usize,
) {
    let fma = has_fma!();
    let wp = a1.len() / rows.len().max(1);
    for (q, (a, &r)) in a1.chunks_exact_mut(wp).zip(rows).enumerate() {
        if let Some(&next) = ahead.get(q) {
            sp.prefetch_row(next as usize);
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

/// g += scale·xᵀ·da1 over the rows `rows` of sp (batch positions in order):
/// g[i, :] += (scale·x[r, i])·da1[r, :] for each non-zero x[r, i]. g: d × wp in column
/// blocks as W1; da1 (n, wp). With g = W1 and scale = −lr this is SGD's update without
/// forming dW1.
///
/// Row by row on purpose. Sorting the batch's non-zeros by input first, so that each
/// g[i, :] is summed in registers from da1's rows in L1, halves this loop, but the sort
/// (a count and a scattered placing of ~15,000 entries per MNIST batch of 100) costs as
/// much as it saves; walking the rows range by range of inputs, so that g's rows being
/// added to stay in L1, is no better (fused Adam epoch of 784-100-100-10, AMD Zen 3,
/// one thread, medians of 5 alternated runs: 282–297 ms as here, 325–342 ms sorted,
/// 341 ms by ranges).
pub fn add_weight_gradient<T: Float, S: RowEntries<T>>(
    g: &mut [T],
    da1: &[T],
    sp: S,
    rows: &[usize],
    scale: T,
) {
    let wp = da1.len() / rows.len().max(1);
    let d = g.len() / wp.max(1);
    let mut rest = g;
    for (c0, width) in column_blocks::<T>(wp) {
        let (block, tail) = std::mem::take(&mut rest).split_at_mut(width * d);
        rest = tail;
        by_width!(
            width,
            weight_gradient_block(block, da1, sp, rows, scale, c0)
        );
    }
}

/// Columns c0..c0 + B of [`add_weight_gradient`], into g's column block `g` (d × B).
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn weight_gradient_block<T: Float, S: RowEntries<T>, const B: usize>(
    g: &mut [T],
    da1: &[T],
    sp: S,
    rows: &[usize],
    scale: T,
    c0: usize,
) {
    let fma = has_fma!();
    let wp = da1.len() / rows.len().max(1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_pad_to_whole_vectors_and_end_in_one_narrower_block() {
        let blocks = |wp| column_blocks::<f32>(wp).collect::<Vec<_>>();
        assert_eq!(padded_width::<f32>(50), 56);
        assert_eq!(padded_width::<f64>(50), 52);
        assert_eq!(padded_width::<f32>(64), 64);
        assert_eq!(blocks(56), [(0, 32), (32, 24)]);
        assert_eq!(blocks(64), [(0, 32), (32, 32)]);
        assert_eq!(blocks(8), [(0, 8)]);
        let f64_blocks: Vec<_> = column_blocks::<f64>(52).collect();
        assert_eq!(f64_blocks, [(0, 16), (16, 16), (32, 16), (48, 4)]);
    }

    #[test]
    fn columns_round_trip_through_blocks() {
        // W1 (3, 40) f64: column blocks of 16 and 4 for units 0..20.
        let (d, h) = (3, 40);
        let mut w1: Vec<f64> = (0..d * h).map(|v| v as f64).collect();
        let mut blocks = vec![0.0; d * padded_width::<f64>(20)];
        copy_columns(&mut w1, &mut blocks, h, (0, 20), true);
        // Unit 17 of input 2 sits in block 1 (4 wide, from 16·d on), row 2, lane 1.
        assert_eq!(blocks[16 * d + 2 * 4 + 1], (2 * h + 17) as f64);
        let mut back = vec![-1.0; d * h];
        copy_columns(&mut back, &mut blocks, h, (0, 20), false);
        for i in 0..d {
            assert_eq!(back[i * h..i * h + 20], w1[i * h..i * h + 20]);
            assert!(back[i * h + 20..(i + 1) * h].iter().all(|&v| v == -1.0));
        }
    }
}
