//! Products whose left factor is mostly exact zeros, as an input batch of MNIST
//! (~81 % zero pixels): `x·W` and `xᵀ·D` from the non-zero entries of x's rows only.
//!
//! Per call, each row of x is compressed to the columns of its non-zeros
//! ([`NonZeroColumns`]): with AVX2 eight inputs per compare, a movemask and a
//! permutation from a 256-entry table, no branch on the data; the values are read back
//! from x itself. The compression stops as soon as more than [`MAX_DENSITY`] of the
//! inputs seen are non-zero, and the caller takes the GEMM instead: dense input pays
//! for a look at a few rows.
//!
//! The products keep a block of up to [`WIDE`] output columns in registers while they
//! walk a row's non-zeros (`x·W`), or a row of D in registers while they add it into
//! the output rows of the row's non-zeros (`xᵀ·D`); narrower blocks cover the rest of
//! the columns.
//!
//! IEEE arithmetic: a skipped term x[r, i]·W[i, j] with x[r, i] = 0 is 0, unless
//! W[i, j] is ±inf or NaN (then the dense product has NaN). The products check the
//! other factor first ([`all_finite`]) and leave non-finite cases to the GEMM, so the
//! results are the dense product's up to the order of the additions.

use std::cell::RefCell;

use multiversion::multiversion;
use multiversion::target::target_cfg;
use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use super::math::{has_fma, madd};
use super::matmul::gemm_into;
use super::{parallel, Float};

/// Largest fraction of non-zero inputs for which the products skip the zeros; above
/// it the GEMM is faster (measured with benches/kernels.rs `sparse_input`).
pub const MAX_DENSITY: f64 = 0.5;

/// Fewest multiply-adds (of the dense product) worth compressing the input for.
pub const MIN_MACS: usize = 1 << 15;

/// Rows compressed and multiplied at a time (bounds the column lists' memory) and the
/// unit of the parallel split of large batches.
pub const BLOCK_ROWS: usize = 512;

/// Widest column block kept in registers: 12 AVX2 vectors.
pub const WIDE: usize = 48;

/// Rows of the products above which both cores share the work.
const PARALLEL_MIN_ROWS: usize = 2 * BLOCK_ROWS;

/// The columns of the non-zero entries of each row of a matrix, in order: row r's are
/// `cols[starts[r]..starts[r + 1]]`. Exact zeros (±0) are left out, NaN kept.
#[derive(Debug, Default, Clone)]
pub struct NonZeroColumns {
    starts: Vec<usize>,
    cols: Vec<u32>,
}

impl NonZeroColumns {
    /// The non-zero columns of x (n, d), or None when x is too dense to be worth it
    /// (more than [`MAX_DENSITY`] of the entries non-zero), when its rows are not
    /// contiguous, or when d ≥ 2³².
    pub fn of<T: Float>(x: ArrayView2<'_, T>) -> Option<Self> {
        let mut nz = NonZeroColumns::default();
        nz.compress(x).then_some(nz)
    }

    /// Compresses x into self (reusing its memory); false (self then empty) in the
    /// cases [`NonZeroColumns::of`] gives None.
    pub fn compress<T: Float>(&mut self, x: ArrayView2<'_, T>) -> bool {
        let (n, d) = x.dim();
        self.starts.clear();
        self.cols.clear();
        if u32::try_from(d).is_err() || (d > 1 && n > 0 && x.stride_of(Axis(1)) != 1) {
            return false;
        }
        let limit = |rows: usize| (MAX_DENSITY * (rows * d) as f64) as usize;
        // Room for the densest accepted input plus one row written in full.
        let room = limit(n + 2) + d;
        if self.cols.try_reserve_exact(room).is_err() {
            return false;
        }
        self.cols.resize(room, 0);
        self.starts.reserve(n + 1);
        self.starts.push(0);
        let mut len = 0;
        for (r, row) in x.rows().into_iter().enumerate() {
            let Some(row) = row.to_slice() else {
                return self.give_up();
            };
            len += T::nonzero_columns(row, &mut self.cols[len..len + d]);
            self.starts.push(len);
            // Two rows of grace, so that one dense row of a sparse batch does not stop it.
            if len > limit(r + 3) {
                return self.give_up();
            }
        }
        if len > limit(n) {
            return self.give_up();
        }
        self.cols.truncate(len);
        true
    }

    fn give_up(&mut self) -> bool {
        self.starts.clear();
        self.cols.clear();
        false
    }

    /// Number of rows.
    pub fn nrows(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// Number of non-zero entries.
    pub fn nnz(&self) -> usize {
        self.cols.len()
    }

    /// Columns of row r's non-zeros, ascending.
    #[inline(always)]
    pub fn row(&self, r: usize) -> &[u32] {
        &self.cols[self.starts[r]..self.starts[r + 1]]
    }
}

/// Writes the indices of the non-zero entries of `row` to the front of `out` (at
/// least `row.len()` long) and returns their count; branch-free scalar version.
#[inline(always)]
pub fn nonzero_columns_scalar<T: Float>(row: &[T], out: &mut [u32]) -> usize {
    let k = row.len().min(out.len());
    let (row, out) = (&row[..k], &mut out[..k]);
    let mut len = 0;
    for (i, &v) in row.iter().enumerate() {
        // Write every index, advance past non-zeros only: a branch per input would
        // mispredict at every stroke edge of a digit. len ≤ i < k.
        out[len] = i as u32;
        len += usize::from(v != T::zero());
    }
    len
}

/// For each 8-bit mask, the positions of its set bits, in order (then zeros).
#[repr(align(32))]
struct PackTable([[u32; 8]; 256]);

static PACK: PackTable = PackTable(pack_table());

const fn pack_table() -> [[u32; 8]; 256] {
    let mut t = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let (mut bit, mut k) = (0, 0);
        while bit < 8 {
            if m & (1 << bit) != 0 {
                t[m][k] = bit as u32;
                k += 1;
            }
            bit += 1;
        }
        m += 1;
    }
    t
}

/// Whether the CPU has AVX2 and POPCNT (the compression's vector path).
#[cfg(target_arch = "x86_64")]
fn avx2_present() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("popcnt")
}

/// [`nonzero_columns_scalar`] for f32 rows, with AVX2 when the CPU has it.
pub fn nonzero_columns_f32(row: &[f32], out: &mut [u32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if out.len() >= row.len() && avx2_present() {
        // SAFETY: AVX2 and POPCNT are present (checked just above); out is at least row's length.
        return unsafe { avx2::nonzero_columns_f32(row, out) };
    }
    nonzero_columns_scalar(row, out)
}

/// [`nonzero_columns_scalar`] for f64 rows, with AVX2 when the CPU has it.
pub fn nonzero_columns_f64(row: &[f64], out: &mut [u32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if out.len() >= row.len() && avx2_present() {
        // SAFETY: AVX2 and POPCNT are present (checked just above); out is at least row's length.
        return unsafe { avx2::nonzero_columns_f64(row, out) };
    }
    nonzero_columns_scalar(row, out)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{nonzero_columns_scalar, PACK};

    /// The indices base + 0..8 where the 8-bit mask m is set, stored at out[len..]
    /// (eight lanes written, the count of set bits kept); returns the new length.
    ///
    /// # Safety
    /// AVX2 and POPCNT must be present and out[len..len + 8] in bounds.
    #[inline(always)]
    unsafe fn emit(m: usize, base: __m256i, out: &mut [u32], len: usize) -> usize {
        // SAFETY: m < 256 indexes the table; the table rows are 32-byte aligned; the
        // caller guarantees the eight lanes at out[len..] are in bounds.
        unsafe {
            let perm = _mm256_load_si256(PACK.0.as_ptr().add(m & 0xff).cast::<__m256i>());
            let idx = _mm256_add_epi32(base, perm);
            _mm256_storeu_si256(out.as_mut_ptr().add(len).cast::<__m256i>(), idx);
        }
        len + m.count_ones() as usize
    }

    /// # Safety
    /// AVX2 and POPCNT must be present; out.len() ≥ row.len().
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn nonzero_columns_f32(row: &[f32], out: &mut [u32]) -> usize {
        let whole = row.len() / 8 * 8;
        let mut len = 0;
        let zero = _mm256_setzero_ps();
        for c in (0..whole).step_by(8) {
            // SAFETY: c + 8 ≤ row.len(). len ≤ c (at most one index per input so far),
            // so the eight lanes written at out[len..] end by c + 8 ≤ out.len().
            unsafe {
                let v = _mm256_loadu_ps(row.as_ptr().add(c));
                // Not-equal, unordered: NaN counts as non-zero, ±0 as zero.
                let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(v, zero)) as usize;
                len = emit(m, _mm256_set1_epi32(c as i32), out, len);
            }
        }
        let tail = nonzero_columns_scalar(&row[whole..], &mut out[len..]);
        for o in &mut out[len..len + tail] {
            *o += whole as u32;
        }
        len + tail
    }

    /// # Safety
    /// AVX2 and POPCNT must be present; out.len() ≥ row.len().
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn nonzero_columns_f64(row: &[f64], out: &mut [u32]) -> usize {
        let whole = row.len() / 8 * 8;
        let mut len = 0;
        let zero = _mm256_setzero_pd();
        for c in (0..whole).step_by(8) {
            // SAFETY: as in nonzero_columns_f32: c + 8 ≤ row.len() and len ≤ c.
            unsafe {
                let lo = _mm256_loadu_pd(row.as_ptr().add(c));
                let hi = _mm256_loadu_pd(row.as_ptr().add(c + 4));
                let m_lo = _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_NEQ_UQ>(lo, zero));
                let m_hi = _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_NEQ_UQ>(hi, zero));
                let m = (m_lo | (m_hi << 4)) as usize;
                len = emit(m, _mm256_set1_epi32(c as i32), out, len);
            }
        }
        let tail = nonzero_columns_scalar(&row[whole..], &mut out[len..]);
        for o in &mut out[len..len + tail] {
            *o += whole as u32;
        }
        len + tail
    }
}

/// Whether every element of v is finite (no ±inf, no NaN).
pub fn all_finite<T: Float>(v: ArrayView2<'_, T>) -> bool {
    match v.as_slice_memory_order() {
        Some(s) => finite_slice(s),
        None => v.iter().all(|x| x.is_finite()),
    }
}

#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn finite_slice<T: Float>(s: &[T]) -> bool {
    // x·0 is ±0 for finite x and NaN otherwise; lanes of sums vectorise.
    let mut acc = [T::zero(); 16];
    let chunks = s.chunks_exact(16);
    let rest = chunks.remainder();
    for ch in chunks {
        for (a, &x) in acc.iter_mut().zip(ch) {
            *a = *a + x * T::zero();
        }
    }
    acc.iter().chain(rest).all(|x| *x * T::zero() == T::zero())
}

/// acc + v·s[at..at + B], sums passed by value so that they stay in registers.
#[inline(always)]
fn axpy<T: Float, const B: usize>(acc: [T; B], v: T, s: &[T], at: usize, fma: bool) -> [T; B] {
    let mut r = acc;
    for (a, &x) in r.iter_mut().zip(&s[at..at + B]) {
        *a = madd(v, x, *a, fma);
    }
    r
}

/// Bytes of W's (or the output's) rows one tile of inputs spans: they stay in the
/// L1 cache (32 KiB on the CPUs in view) while every batch row adds their terms.
const TILE_BYTES: usize = 16 << 10;

/// Inputs per tile for blocks of B columns of T.
fn tile_rows<T>(b: usize) -> usize {
    (TILE_BYTES / (b * std::mem::size_of::<T>())).max(4)
}

/// Where each row's non-zeros of the current tile of inputs end: moves `pos` (one
/// cursor per row, into nz's columns) past the columns below `end` and returns the
/// segment passed.
#[inline(always)]
fn segment<'a>(nz: &'a NonZeroColumns, pos: &mut usize, r: usize, end: u32) -> &'a [u32] {
    let start = *pos;
    let stop = nz.starts[r + 1];
    let mut p = start;
    while p < stop && nz.cols[p] < end {
        p += 1;
    }
    *pos = p;
    &nz.cols[start..p]
}

/// One column block of `c += x·W`: columns c0..c0 + min(B, h − c0) of every row. Inputs
/// in tiles whose W rows stay in L1; for each tile, each row's sum over its non-zeros
/// kept in registers (in four interleaved sums when `FOUR`, which hides the adds'
/// latency when B is narrow), then added to the row's output. A block may reach past
/// the last column: it then reads into the next rows of W (lanes never stored) or,
/// at W's end, a zero-padded copy. x rows contiguous; w (d, h) and c (n, h) row-major.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn rows_times_block<T: Float, const B: usize, const FOUR: bool>(
    x: ArrayView2<'_, T>,
    nz: &NonZeroColumns,
    w: &[T],
    c: &mut [T],
    c0: usize,
) {
    let fma = has_fma!();
    let (n, d) = x.dim();
    let h = c.len() / n.max(1);
    let width = B.min(h - c0);
    let term = |acc: [T; B], v: T, i: usize| {
        let at = i * h + c0;
        if at + B <= w.len() {
            axpy(acc, v, w, at, fma)
        } else {
            // A block reaching past the end of W: the rest of it, padded with zeros.
            let mut pad = [T::zero(); B];
            let rest = w.get(at..).unwrap_or_default();
            let k = rest.len().min(B);
            pad[..k].copy_from_slice(&rest[..k]);
            axpy(acc, v, &pad, 0, fma)
        }
    };
    let mut pos: Vec<usize> = nz.starts[..n].to_vec();
    let tile = tile_rows::<T>(B);
    for i0 in (0..d).step_by(tile) {
        let end = (i0 + tile).min(d) as u32;
        for (r, (xr, out)) in x.rows().into_iter().zip(c.chunks_exact_mut(h)).enumerate() {
            let Some(xr) = xr.to_slice() else { return };
            let cols = segment(nz, &mut pos[r], r, end);
            if cols.is_empty() {
                continue;
            }
            let zero = [T::zero(); B];
            let sum = if FOUR {
                let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
                let quads = cols.chunks_exact(4);
                let tail = quads.remainder();
                for q in quads {
                    let [i0, i1, i2, i3] = [q[0], q[1], q[2], q[3]].map(|i| i as usize);
                    a0 = term(a0, xr[i0], i0);
                    a1 = term(a1, xr[i1], i1);
                    a2 = term(a2, xr[i2], i2);
                    a3 = term(a3, xr[i3], i3);
                }
                for &i in tail {
                    let i = i as usize;
                    a0 = term(a0, xr[i], i);
                }
                let mut s = zero;
                for (j, o) in s.iter_mut().enumerate() {
                    *o = (a0[j] + a1[j]) + (a2[j] + a3[j]);
                }
                s
            } else {
                let mut acc = zero;
                for &i in cols {
                    let i = i as usize;
                    acc = term(acc, xr[i], i);
                }
                acc
            };
            for (o, &s) in out[c0..c0 + width].iter_mut().zip(&sum) {
                *o = *o + s;
            }
        }
    }
}

/// One column block of `g += xᵀ·D`: columns c0..c0 + B; row r of D (in registers)
/// added, times x[r, i], into row i of g for each non-zero x[r, i], inputs in tiles
/// whose g rows stay in L1. D (n, h) and g (d, h) row-major.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn transposed_times_block<T: Float, const B: usize>(
    x: ArrayView2<'_, T>,
    nz: &NonZeroColumns,
    dm: &[T],
    g: &mut [T],
    c0: usize,
) {
    let fma = has_fma!();
    let (n, d) = x.dim();
    let h = dm.len() / n.max(1);
    let mut pos: Vec<usize> = nz.starts[..n].to_vec();
    let tile = tile_rows::<T>(B);
    for i0 in (0..d).step_by(tile) {
        let end = (i0 + tile).min(d) as u32;
        for (r, (xr, dr)) in x.rows().into_iter().zip(dm.chunks_exact(h)).enumerate() {
            let Some(xr) = xr.to_slice() else { return };
            let cols = segment(nz, &mut pos[r], r, end);
            if cols.is_empty() {
                continue;
            }
            let mut db = [T::zero(); B];
            db.copy_from_slice(&dr[c0..c0 + B]);
            for &i in cols {
                let i = i as usize;
                let v = xr[i];
                for (o, &dv) in g[i * h + c0..i * h + c0 + B].iter_mut().zip(&db) {
                    *o = madd(v, dv, *o, fma);
                }
            }
        }
    }
}

/// The column blocks covering h columns: (start, width), widths from [`WIDE`] down
/// through 32, 16, 8, 4, 2, 1.
fn column_blocks(h: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut c0 = 0;
    std::iter::from_fn(move || {
        let rest = h - c0;
        let b = [WIDE, 32, 16, 8, 4, 2, 1]
            .into_iter()
            .find(|&b| b <= rest)?;
        let block = (c0, b);
        c0 += b;
        Some(block)
    })
}

/// c (+)= x·W from x's non-zeros (`nz`, compressed from x). Shapes checked by the
/// caller: x (n, d) with contiguous rows, w (d, h) and c (n, h) row-major slices.
///
/// Column blocks of whole vectors (`lanes` per AVX2 register): 12 vectors while more
/// than 13 are left, then one block of the fewest listed vectors that covers the rest
/// (50 columns: one pass of 13 vectors in f64, 7 in f32).
fn rows_times<T: Float>(
    x: ArrayView2<'_, T>,
    nz: &NonZeroColumns,
    w: &[T],
    c: &mut [T],
    accumulate: bool,
) {
    if !accumulate {
        c.fill(T::zero());
    }
    let h = c.len() / x.nrows().max(1);
    let lanes = 32 / std::mem::size_of::<T>();
    let mut c0 = 0;
    while c0 < h {
        let vectors = (h - c0).div_ceil(lanes);
        let v = if vectors > 13 {
            12
        } else {
            [1, 2, 3, 4, 6, 7, 8, 10, 12, 13]
                .into_iter()
                .find(|&m| m >= vectors)
                .unwrap_or(13)
        };
        let f = match (lanes, v) {
            (4, 1) => rows_times_block::<T, 4, true>,
            (4, 2) => rows_times_block::<T, 8, true>,
            (4, 3) => rows_times_block::<T, 12, false>,
            (4, 4) => rows_times_block::<T, 16, false>,
            (4, 6) => rows_times_block::<T, 24, false>,
            (4, 7) => rows_times_block::<T, 28, false>,
            (4, 8) => rows_times_block::<T, 32, false>,
            (4, 10) => rows_times_block::<T, 40, false>,
            (4, 12) => rows_times_block::<T, 48, false>,
            (4, _) => rows_times_block::<T, 52, false>,
            (_, 1) => rows_times_block::<T, 8, true>,
            (_, 2) => rows_times_block::<T, 16, true>,
            (_, 3) => rows_times_block::<T, 24, false>,
            (_, 4) => rows_times_block::<T, 32, false>,
            (_, 6) => rows_times_block::<T, 48, false>,
            (_, 7) => rows_times_block::<T, 56, false>,
            (_, 8) => rows_times_block::<T, 64, false>,
            (_, 10) => rows_times_block::<T, 80, false>,
            (_, 12) => rows_times_block::<T, 96, false>,
            (_, _) => rows_times_block::<T, 104, false>,
        };
        f(x, nz, w, c, c0);
        c0 += v * lanes;
    }
}

/// g += xᵀ·D from x's non-zeros; shapes checked, all row-major but x (rows contiguous).
fn transposed_times<T: Float>(x: ArrayView2<'_, T>, nz: &NonZeroColumns, dm: &[T], g: &mut [T]) {
    let h = dm.len() / x.nrows().max(1);
    for (c0, b) in column_blocks(h) {
        let f = match b {
            WIDE => transposed_times_block::<T, WIDE>,
            32 => transposed_times_block::<T, 32>,
            16 => transposed_times_block::<T, 16>,
            8 => transposed_times_block::<T, 8>,
            4 => transposed_times_block::<T, 4>,
            2 => transposed_times_block::<T, 2>,
            _ => transposed_times_block::<T, 1>,
        };
        f(x, nz, dm, g, c0);
    }
}

thread_local! {
    /// Each thread's column lists, kept between calls (no allocation per call).
    static SCRATCH: RefCell<NonZeroColumns> = RefCell::new(NonZeroColumns::default());
}

/// x (n, d) compressed once for several products with it (the forward and backward
/// pass of a layer), or None when the products should take the GEMM: too small, too
/// dense, or laid out otherwise.
pub fn compress_for_products<T: Float>(x: ArrayView2<'_, T>, h: usize) -> Option<NonZeroColumns> {
    if x.len().saturating_mul(h) < MIN_MACS || x.ncols() < 8 {
        return None;
    }
    NonZeroColumns::of(x)
}

/// `c ← x·W` (or `c + x·W` with `accumulate`). x (n, d), w (d, h), c (n, h), shapes
/// checked by the caller. Skips x's zeros when `nz` holds x's non-zeros (from
/// [`compress_for_products`]), W is finite and the layouts allow; else the GEMM.
pub fn times_into<T: Float>(
    x: ArrayView2<'_, T>,
    nz: Option<&NonZeroColumns>,
    w: ArrayView2<'_, T>,
    mut c: ArrayViewMut2<'_, T>,
    accumulate: bool,
) {
    if let (Some(nz), Some(ws)) = (nz, w.as_slice()) {
        if nz.nrows() == x.nrows() && all_finite(w) {
            if let Some(cs) = c.as_slice_mut() {
                return rows_times(x, nz, ws, cs, accumulate);
            }
        }
    }
    gemm_into(x, w, c, accumulate);
}

/// `g ← xᵀ·D` (or `g + xᵀ·D`). x (n, d), dm (n, h), g (d, h), shapes checked by the
/// caller. Skips x's zeros as [`times_into`] does (D must be finite).
pub fn transposed_times_into<T: Float>(
    x: ArrayView2<'_, T>,
    nz: Option<&NonZeroColumns>,
    dm: ArrayView2<'_, T>,
    mut g: ArrayViewMut2<'_, T>,
    accumulate: bool,
) {
    if let (Some(nz), Some(ds)) = (nz, dm.as_slice()) {
        if nz.nrows() == x.nrows() && all_finite(dm) {
            if let Some(gs) = g.as_slice_mut() {
                if !accumulate {
                    gs.fill(T::zero());
                }
                return transposed_times(x, nz, ds, gs);
            }
        }
    }
    gemm_into(x.t(), dm, g, accumulate);
}

/// `c ← x·W` (or `c + x·W`) for a batch of any size: blocks of [`BLOCK_ROWS`] rows,
/// each compressed and multiplied by its non-zeros when sparse enough (else the GEMM),
/// both cores sharing the blocks of a large batch. Shapes checked by the caller.
pub fn product_into<T: Float>(
    x: ArrayView2<'_, T>,
    w: ArrayView2<'_, T>,
    c: ArrayViewMut2<'_, T>,
    accumulate: bool,
) {
    let (n, d) = x.dim();
    let h = w.ncols();
    let rows_ok = d > 1 && (n <= 1 || x.stride_of(Axis(1)) == 1);
    if n.saturating_mul(d).saturating_mul(h) < MIN_MACS || d < 8 || !rows_ok {
        return gemm_into(x, w, c, accumulate);
    }
    // A look at the first rows: dense input goes to the GEMM whole (its threading).
    let head = x.slice(ndarray::s![..n.min(3), ..]);
    let sparse_head = SCRATCH.with(|s| s.borrow_mut().compress(head));
    if !sparse_head || w.as_slice().is_none() || c.as_slice().is_none() || !all_finite(w) {
        return gemm_into(x, w, c, accumulate);
    }
    let block = |(x, c): (ArrayView2<'_, T>, ArrayViewMut2<'_, T>)| {
        SCRATCH.with(|s| {
            let mut nz = s.borrow_mut();
            let sparse = nz.compress(x);
            match (sparse, w.as_slice()) {
                (true, Some(ws)) => {
                    let mut c = c;
                    if let Some(cs) = c.as_slice_mut() {
                        rows_times(x, &nz, ws, cs, accumulate);
                    }
                }
                _ => gemm_into(x, w, c, accumulate),
            }
        });
    };
    let mut c = c;
    let parts = x
        .axis_chunks_iter(Axis(0), BLOCK_ROWS)
        .zip(c.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS));
    if n >= PARALLEL_MIN_ROWS && rayon::current_thread_index().is_none() {
        let parts: Vec<_> = parts.collect();
        parallel::install(|threads| {
            if threads > 1 {
                parts.into_par_iter().for_each(block);
            } else {
                parts.into_iter().for_each(block);
            }
        });
    } else {
        parts.for_each(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    #[test]
    fn pack_table_lists_set_bits() {
        assert_eq!(PACK.0[0b1010_0101], [0, 2, 5, 7, 0, 0, 0, 0]);
        assert_eq!(PACK.0[255], [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn columns_of_nonzeros_in_both_dtypes_and_the_scalar_path() {
        let row: Vec<f64> = (0..21)
            .map(|i| match i % 5 {
                0 => 0.0,
                1 => -0.0,
                2 => f64::NAN,
                _ => i as f64,
            })
            .collect();
        let want: Vec<u32> = (0..21).filter(|i| i % 5 >= 2).collect();
        let mut out = vec![0u32; 21];
        let n = nonzero_columns_f64(&row, &mut out);
        assert_eq!(&out[..n], &want[..]);
        let r32: Vec<f32> = row.iter().map(|&v| v as f32).collect();
        let n = nonzero_columns_f32(&r32, &mut out);
        assert_eq!(&out[..n], &want[..]);
        let n = nonzero_columns_scalar(&row, &mut out);
        assert_eq!(&out[..n], &want[..]);
    }

    #[test]
    fn dense_input_is_refused_and_sparse_kept() {
        let dense = Array2::from_elem((4, 16), 1.0_f32);
        assert!(NonZeroColumns::of(dense.view()).is_none());
        let mut sparse = Array2::<f32>::zeros((4, 16));
        sparse[[2, 9]] = 3.0;
        let nz = NonZeroColumns::of(sparse.view());
        assert_eq!(
            nz.as_ref().map(|z| (z.nrows(), z.nnz(), z.row(2))),
            Some((4, 1, &[9u32][..]))
        );
        // A transposed view has no contiguous rows.
        assert!(NonZeroColumns::of(sparse.t()).is_none());
    }

    #[test]
    fn finiteness_of_every_element() {
        let mut w = Array2::<f64>::ones((7, 5));
        assert!(all_finite(w.view()));
        w[[6, 4]] = f64::INFINITY;
        assert!(!all_finite(w.view()));
        w[[6, 4]] = f64::NAN;
        assert!(!all_finite(w.t()));
        let _ = array![[1.0]];
    }
}
