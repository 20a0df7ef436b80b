//! Products whose left factor is mostly exact zeros, as an input batch of MNIST
//! (~81 % zero pixels): `x·W` and `xᵀ·D` from the non-zero entries of x's rows only.
//!
//! Per call, each row of x is compressed to the columns of its non-zeros
//! ([`NonZeroColumns`]): with AVX2 eight inputs per compare, a movemask and a
//! permutation from a 256-entry table, no branch on the data; float32 values for a
//! float32 product come out of the same permutation, others are read back from x
//! itself. The compression stops as soon as more than [`MAX_DENSITY`] of the
//! inputs seen are non-zero, and the caller takes the GEMM instead: dense input pays
//! for a look at a few rows.
//!
//! Both products keep a block of up to 13 vectors of output columns in registers:
//! `x·W` while it walks a row's non-zeros (W's rows in L1-sized tiles), `xᵀ·D` while
//! it walks an input's non-zeros, found by input in bit masks (`InputMasks`), so each
//! output row is written once. The team's threads share a product worth two:
//! `x·W` by blocks of rows, `xᵀ·D` by ranges of inputs holding half the non-zeros
//! each; either way every output element sums its terms in the same order whatever
//! the number of threads.
//!
//! IEEE arithmetic: a skipped term x[r, i]·W[i, j] with x[r, i] = 0 is 0, unless
//! W[i, j] is ±inf or NaN (then the dense product has NaN). The products check the
//! other factor first ([`all_finite`]) and leave non-finite cases to the GEMM, so the
//! results are the dense product's up to the order of the additions.

use multiversion::multiversion;
use multiversion::target::target_cfg;
use std::any::TypeId;
use std::marker::PhantomData;

use ndarray::{ArrayView2, ArrayViewMut2, Axis, CowArray, Ix2};

use super::math::{axpy, has_fma};
use super::matmul::{gemm_out, Out, MEDIUM_PARTS, TEAM_MIN_MAC_BYTES};
use super::{parallel, Float};

/// Largest fraction of non-zero inputs for which the products skip the zeros; above
/// it the GEMM is faster: MNIST rows (19 %) gain, ReLU outputs (about half non-zero)
/// lose (`_core.matmul` on AMD Zen 2, two threads: the zero-skipping xᵀ·D of a
/// 100 × 100 ReLU output against 100 × 100 takes 53 µs, the GEMM 19 µs; x·W 34 against
/// 18 µs; MNIST's x·W1 of 100 rows 48 against 68 µs).
pub const MAX_DENSITY: f64 = 0.25;

/// Rows of grace in the compression's running check (after r + 1 rows, at most
/// [`MAX_DENSITY`] of r + GRACE_ROWS rows' inputs): one dense row early in a sparse
/// batch does not stop it; dense input stops after two rows.
const GRACE_ROWS: usize = 7;

/// Fewest multiply-adds (of the dense product) worth compressing the input for.
pub const MIN_MACS: usize = 1 << 15;

/// Rows compressed and multiplied at a time (bounds the column lists' memory) and the
/// unit the team's threads share in large batches.
pub const BLOCK_ROWS: usize = 512;

/// The columns and values of the non-zero entries of each row of a matrix, in order:
/// row r's are `cols[starts[r]..starts[r + 1]]` and `vals[..]` alike. Exact zeros (±0)
/// are left out, NaN kept. The products read the values from here, next to their
/// columns, instead of from scattered places in x.
///
/// The lists' memory is reused: a dropped `NonZeroColumns` goes back to a small pool
/// per element type ([`Float::column_pool`]) that the next compression takes from, so a
/// learner's loop compresses into memory that is already there.
#[derive(Debug, Default)]
pub struct NonZeroColumns<T: Float> {
    starts: Vec<usize>,
    cols: Vec<u32>,
    vals: Vec<T>,
    nnz: usize,
}

/// Most lists kept in a pool, and the largest (entries) worth keeping: 512 rows of
/// 784 inputs at the densest accepted.
const POOL_LISTS: usize = 4;
const POOL_MAX_ENTRIES: usize = 1 << 18;

impl<T: Float> NonZeroColumns<T> {
    /// Empty lists, with memory from the pool when it has some.
    pub fn recycled() -> Self {
        T::column_pool()
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_default()
    }

    /// The non-zero entries of x (n, d), or None when x is too dense to be worth it
    /// (more than [`MAX_DENSITY`] of the entries non-zero), when its rows are not
    /// contiguous, or when d ≥ 2³².
    pub fn of<U: Float>(x: ArrayView2<'_, U>) -> Option<Self> {
        let mut nz = Self::recycled();
        nz.compress(x).then_some(nz)
    }

    /// Compresses x into self (reusing its memory); false (self then empty) in the
    /// cases [`NonZeroColumns::of`] gives None. x may be of the other float type: its
    /// values are converted as NumPy's `astype` would (f32 → f64 exactly).
    pub fn compress<U: Float>(&mut self, x: ArrayView2<'_, U>) -> bool {
        let (n, d) = x.dim();
        self.starts.clear();
        self.nnz = 0;
        if u32::try_from(d).is_err() || (d > 1 && n > 0 && x.stride_of(Axis(1)) != 1) {
            return false;
        }
        let limit = |rows: usize| (MAX_DENSITY * (rows * d) as f64) as usize;
        // Room for the densest accepted input plus one row written in full; grown
        // (and so written) only when the lists are too short.
        let room = limit(n + GRACE_ROWS) + d;
        if self.cols.len() < room {
            let more = room - self.cols.len();
            if self.cols.try_reserve_exact(more).is_err()
                || self
                    .vals
                    .try_reserve_exact(room.saturating_sub(self.vals.len()))
                    .is_err()
            {
                return false;
            }
            self.cols.resize(room, 0);
            self.vals.resize(room, T::zero());
        }
        self.starts.reserve(n + 1);
        self.starts.push(0);
        let mut len = 0;
        for (r, row) in x.rows().into_iter().enumerate() {
            let Some(row) = row.to_slice() else {
                return self.give_up();
            };
            let found = U::nonzero_entries(
                row,
                &mut self.cols[len..len + d],
                &mut self.vals[len..len + d],
            );
            len += found;
            self.starts.push(len);
            if len > limit(r + GRACE_ROWS) {
                return self.give_up();
            }
        }
        if len > limit(n) {
            return self.give_up();
        }
        self.nnz = len;
        true
    }

    fn give_up(&mut self) -> bool {
        self.starts.clear();
        self.nnz = 0;
        false
    }

    /// Number of rows.
    pub fn nrows(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// Number of non-zero entries.
    pub fn nnz(&self) -> usize {
        self.nnz
    }

    /// Columns of row r's non-zeros, ascending.
    #[inline(always)]
    pub fn row(&self, r: usize) -> &[u32] {
        &self.cols[self.starts[r]..self.starts[r + 1]]
    }

    /// Values of row r's non-zeros, in the order of [`NonZeroColumns::row`].
    #[inline(always)]
    pub fn row_values(&self, r: usize) -> &[T] {
        &self.vals[self.starts[r]..self.starts[r + 1]]
    }
}

impl<T: Float> Drop for NonZeroColumns<T> {
    fn drop(&mut self) {
        if self.cols.capacity() == 0 || self.cols.capacity() > POOL_MAX_ENTRIES {
            return;
        }
        if let Ok(mut pool) = T::column_pool().lock() {
            if pool.len() < POOL_LISTS {
                pool.push(NonZeroColumns {
                    starts: std::mem::take(&mut self.starts),
                    cols: std::mem::take(&mut self.cols),
                    vals: std::mem::take(&mut self.vals),
                    nnz: 0,
                });
            }
        }
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

/// For each 8-bit mask, the positions of its set bits, in order (then zeros): the AVX2
/// compression's permutations.
#[cfg(target_arch = "x86_64")]
#[repr(align(32))]
struct PackTable([[u32; 8]; 256]);

#[cfg(target_arch = "x86_64")]
static PACK: PackTable = PackTable(pack_table());

#[cfg(target_arch = "x86_64")]
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

/// The non-zero entries of an f32 row: their columns to the front of `cols`, their
/// values (converted to T as `astype` would, f32 → f64 exactly) to the front of `vals`
/// (both at least the row's length); returns their count. With AVX2 and f32 values,
/// the values are permuted out of the compared vector with their columns; f64 values
/// are copied after (converting all eight lanes of every vector, most of them zeros in
/// MNIST rows, cost more: a float64 net's loss of 100 rows 89 → 93 µs).
pub fn nonzero_entries_f32<T: Float>(row: &[f32], cols: &mut [u32], vals: &mut [T]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if cols.len() >= row.len() && vals.len() >= row.len() && avx2_present() {
        let n = vals.len();
        let out = vals.as_mut_ptr();
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            // SAFETY: T is f32 (same memory, same length); AVX2 and POPCNT are present
            // and both outputs are at least the row's length (checked just above).
            return unsafe {
                let vals = std::slice::from_raw_parts_mut(out.cast::<f32>(), n);
                avx2::nonzero_entries_f32_f32(row, cols, vals)
            };
        }
    }
    nonzero_entries_copied(row, cols, vals)
}

/// [`Float::nonzero_entries`] by the columns, then a copy of their values (the row is
/// in L1 by then).
#[inline(always)]
pub fn nonzero_entries_copied<U: Float, T: Float>(
    row: &[U],
    cols: &mut [u32],
    vals: &mut [T],
) -> usize {
    let found = U::nonzero_columns(row, cols);
    for (v, &c) in vals[..found].iter_mut().zip(&cols[..found]) {
        *v = T::lit(row[c as usize].to_f64());
    }
    found
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
    /// (eight lanes written, the count of set bits kept); returns the new length and
    /// the permutation that packs the set lanes to the front.
    ///
    /// # Safety
    /// AVX2 and POPCNT must be present and out[len..len + 8] in bounds.
    #[inline(always)]
    unsafe fn emit(m: usize, base: __m256i, out: &mut [u32], len: usize) -> (usize, __m256i) {
        // SAFETY: m < 256 indexes the table; the table rows are 32-byte aligned; the
        // caller guarantees the eight lanes at out[len..] are in bounds.
        let perm = unsafe {
            let perm = _mm256_load_si256(PACK.0.as_ptr().add(m & 0xff).cast::<__m256i>());
            let idx = _mm256_add_epi32(base, perm);
            _mm256_storeu_si256(out.as_mut_ptr().add(len).cast::<__m256i>(), idx);
            perm
        };
        (len + m.count_ones() as usize, perm)
    }

    /// The eight inputs row[c..c + 8] and the mask of the non-zero ones (not-equal,
    /// unordered: NaN counts as non-zero, ±0 as zero).
    ///
    /// # Safety
    /// AVX2 must be present and c + 8 ≤ row.len().
    #[inline(always)]
    unsafe fn nonzero_mask_f32(row: &[f32], c: usize) -> (__m256, usize) {
        // SAFETY: the caller guarantees the eight lanes at row[c..] are in bounds.
        unsafe {
            let v = _mm256_loadu_ps(row.as_ptr().add(c));
            let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(v, _mm256_setzero_ps()));
            (v, m as usize)
        }
    }

    /// # Safety
    /// AVX2 and POPCNT must be present; out.len() ≥ row.len().
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn nonzero_columns_f32(row: &[f32], out: &mut [u32]) -> usize {
        let whole = row.len() / 8 * 8;
        let mut len = 0;
        for c in (0..whole).step_by(8) {
            // SAFETY: c + 8 ≤ row.len(). len ≤ c (at most one index per input so far),
            // so the eight lanes written at out[len..] end by c + 8 ≤ out.len().
            unsafe {
                let (_, m) = nonzero_mask_f32(row, c);
                len = emit(m, _mm256_set1_epi32(c as i32), out, len).0;
            }
        }
        let tail = nonzero_columns_scalar(&row[whole..], &mut out[len..]);
        for o in &mut out[len..len + tail] {
            *o += whole as u32;
        }
        len + tail
    }

    /// The scalar tail of [`nonzero_entries_f32_f32`]: inputs from `from` on, appended
    /// at len.
    #[inline(always)]
    fn entries_tail(
        row: &[f32],
        from: usize,
        cols: &mut [u32],
        vals: &mut [f32],
        mut len: usize,
    ) -> usize {
        for (i, &v) in row.iter().enumerate().skip(from) {
            // Written always, kept for non-zeros only (no branch on the data); len ≤ i.
            cols[len] = i as u32;
            vals[len] = v;
            len += usize::from(v != 0.0);
        }
        len
    }

    /// [`super::nonzero_entries_f32`] into f32 values.
    ///
    /// # Safety
    /// AVX2 and POPCNT must be present; cols.len() and vals.len() ≥ row.len().
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn nonzero_entries_f32_f32(
        row: &[f32],
        cols: &mut [u32],
        vals: &mut [f32],
    ) -> usize {
        let whole = row.len() / 8 * 8;
        let mut len = 0;
        for c in (0..whole).step_by(8) {
            // SAFETY: c + 8 ≤ row.len(); len ≤ c, so the eight lanes written at
            // cols[len..] and vals[len..] end by c + 8 ≤ their lengths.
            unsafe {
                let (v, m) = nonzero_mask_f32(row, c);
                let (next, perm) = emit(m, _mm256_set1_epi32(c as i32), cols, len);
                let packed = _mm256_permutevar8x32_ps(v, perm);
                _mm256_storeu_ps(vals.as_mut_ptr().add(len), packed);
                len = next;
            }
        }
        entries_tail(row, whole, cols, vals, len)
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
                len = emit(m, _mm256_set1_epi32(c as i32), out, len).0;
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

/// Bytes of W's rows one tile of inputs spans, read by every batch row in turn. Fewer,
/// larger tiles pay more than an L1-sized one saves (x·W1 100×784×50 f64 on one
/// thread, AMD EPYC Zen 2: 8 KiB 171 µs, 16 KiB 139 µs, 28–48 KiB 120–129 µs, untiled
/// 129 µs), and tiles keep a W larger than L2 (784×100 f64) from streaming per row.
const TILE_BYTES: usize = 32 << 10;

/// Inputs per tile for blocks of B columns of T.
fn tile_rows<T>(b: usize) -> usize {
    (TILE_BYTES / (b * std::mem::size_of::<T>())).max(4)
}

/// One column block of `c += x·W`: columns c0..c0 + min(B, h − c0) of every row. Inputs
/// in tiles whose W rows stay in L1; for each tile, each row's sum over its non-zeros
/// kept in registers (in four interleaved sums when `FOUR`, which hides the adds'
/// latency when B is narrow), then added to the row's output. A block may reach past
/// the last column: it then reads into the next rows of W (lanes never stored) or,
/// at W's end, a zero-padded copy. x rows contiguous; w (d, h) and c (n, h) row-major.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn rows_times_block<T: Float, const B: usize, const FOUR: bool>(
    d: usize,
    nz: &NonZeroColumns<T>,
    w: &[T],
    c: &mut [T],
    c0: usize,
) {
    let fma = has_fma!();
    let n = nz.nrows();
    let h = c.len() / n.max(1);
    let width = B.min(h - c0);
    // Inputs below `safe` have B readable lanes from their column c0 on; the rest (at
    // most the last few rows of W) go through a zero-padded copy, outside the loops
    // that keep the sums in registers.
    let safe = if w.len() >= c0 + B {
        (w.len() - c0 - B) / h.max(1) + 1
    } else {
        0
    };
    let padded = |acc: [T; B], v: T, i: usize| {
        let mut pad = [T::zero(); B];
        let rest = w.get(i * h + c0..).unwrap_or_default();
        let k = rest.len().min(B);
        pad[..k].copy_from_slice(&rest[..k]);
        axpy(acc, v, &pad, 0, fma)
    };
    // Each row's next entry: the tiles walk every row's (ascending) columns once.
    let mut pos: Vec<usize> = nz.starts[..n].to_vec();
    let (cols, vals) = (&nz.cols[..], &nz.vals[..]);
    let at = |p: usize| cols[p] as usize * h + c0;
    let tile = tile_rows::<T>(B);
    for i0 in (0..d).step_by(tile) {
        // The tile's inputs below `lim` go through the sums in registers, the rest
        // (inputs from `safe` on) through the padded copy. Each loop stops at the
        // first column past its bound, so a row's entries are read once.
        let end = (i0 + tile).min(d);
        let lim = end.min(safe) as u32;
        let end = end as u32;
        for (r, out) in c.chunks_exact_mut(h).enumerate() {
            let (start, stop) = (pos[r], nz.starts[r + 1]);
            let mut p = start;
            let zero = [T::zero(); B];
            let mut sum = if FOUR {
                let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
                while p + 4 <= stop && cols[p + 3] < lim {
                    a0 = axpy(a0, vals[p], w, at(p), fma);
                    a1 = axpy(a1, vals[p + 1], w, at(p + 1), fma);
                    a2 = axpy(a2, vals[p + 2], w, at(p + 2), fma);
                    a3 = axpy(a3, vals[p + 3], w, at(p + 3), fma);
                    p += 4;
                }
                while p < stop && cols[p] < lim {
                    a0 = axpy(a0, vals[p], w, at(p), fma);
                    p += 1;
                }
                let mut s = zero;
                for (j, o) in s.iter_mut().enumerate() {
                    *o = (a0[j] + a1[j]) + (a2[j] + a3[j]);
                }
                s
            } else {
                let mut acc = zero;
                while p < stop && cols[p] < lim {
                    acc = axpy(acc, vals[p], w, at(p), fma);
                    p += 1;
                }
                acc
            };
            while p < stop && cols[p] < end {
                sum = padded(sum, vals[p], cols[p] as usize);
                p += 1;
            }
            pos[r] = p;
            if p == start {
                continue;
            }
            for (o, &s) in out[c0..c0 + width].iter_mut().zip(&sum) {
                *o = *o + s;
            }
        }
    }
}

/// One column block of `g += xᵀ·D` input by input: for each input i whose masks
/// are given, the sum over its non-zeros x[r, i]·D[r, c0..c0 + B] in registers (D's
/// rows read from `dp`, padded to `hp` columns), then added once to row i of g. The
/// rows r come in ascending order (the bits of the input's masks), so each element of
/// g sums its terms in the batch's order. `start` points at each row's value for the
/// first of these inputs; returned: the cursors past them (a local copy: advanced
/// through a `&mut` slice instead, the 12-vector blocks compiled three times slower;
/// slices instead of pointers cost a fifth more). g holds these inputs' rows of the
/// (d, h) result.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn columns_times_block<T: Float, const B: usize>(
    masks: &[u64],
    words: usize,
    start: &[*const T],
    dp: &[T],
    hp: usize,
    g: &mut [T],
    h: usize,
    c0: usize,
) -> Vec<*const T> {
    let fma = has_fma!();
    let width = B.min(h - c0);
    let mut rest = start.to_vec();
    for (masks, out) in masks.chunks_exact(words).zip(g.chunks_exact_mut(h)) {
        if masks.iter().all(|&m| m == 0) {
            continue;
        }
        let mut acc = [T::zero(); B];
        for (w, &mask) in masks.iter().enumerate() {
            let mut bits = mask;
            while bits != 0 {
                let r = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                // The inputs come in ascending order, as do a row's non-zeros: the
                // next value of row r is that of this input.
                let p = rest[r];
                // SAFETY: the masks and the cursors come from the same entries
                // (`InputMasks::of`): row r has one value left at p for each of its set
                // bits in the masks still to come, this one included.
                let v = unsafe { p.read() };
                rest[r] = p.wrapping_add(1);
                acc = axpy(acc, v, dp, r * hp + c0, fma);
            }
        }
        for (o, &s) in out[c0..c0 + width].iter_mut().zip(&acc) {
            *o = *o + s;
        }
    }
    rest
}

/// The non-zeros of a span of inputs lo..hi of a compressed batch, grouped by input
/// without moving them: bit r % 64 of `masks[(i - lo) * words + r / 64]` is set when
/// x[r, i] ≠ 0, and `rest[r]` points at row r's value for its first non-zero input
/// from `next` on (its values follow in ascending inputs, up to hi). One OR per non-zero, where a sort by input (count, then place
/// rows and values) took as long as the multiply-adds.
pub(crate) struct InputMasks<'a, T> {
    lo: usize,
    next: usize,
    words: usize,
    masks: Vec<u64>,
    rest: Vec<*const T>,
    /// The compressed rows `rest` points into.
    values: PhantomData<&'a [T]>,
}

impl<'a, T: Float> InputMasks<'a, T> {
    /// The masks of x's inputs lo..hi (x with n rows, compressed in `compressed`).
    fn of(compressed: &'a CompressedRows<T>, n: usize, (lo, hi): (usize, usize)) -> Self {
        let words = n.div_ceil(64).max(1);
        let mut masks = vec![0_u64; (hi - lo) * words];
        let mut rest = Vec::with_capacity(n);
        for block in &compressed.blocks {
            for r in 0..block.nz.nrows() {
                let cols = block.nz.row(r);
                let a = cols.partition_point(|&c| (c as usize) < lo);
                let z = a + cols[a..].partition_point(|&c| (c as usize) < hi);
                let row = block.first + r;
                let (word, bit) = (row / 64, 1_u64 << (row % 64));
                for &c in &cols[a..z] {
                    masks[(c as usize - lo) * words + word] |= bit;
                }
                rest.push(block.nz.row_values(r)[a..z].as_ptr());
            }
        }
        InputMasks {
            lo,
            next: lo,
            words,
            masks,
            rest,
            values: PhantomData,
        }
    }
}

/// c (+)= x·W from x's non-zeros (`nz`, compressed from x). Shapes checked by the
/// caller: x (n, d) with contiguous rows, w (d, h) and c (n, h) row-major slices.
/// Column blocks of whole vectors ([`vector_blocks`]); blocks of one or two vectors
/// keep four interleaved sums.
fn rows_times<T: Float>(d: usize, nz: &NonZeroColumns<T>, w: &[T], c: &mut [T], accumulate: bool) {
    if !accumulate {
        c.fill(T::zero());
    }
    let h = c.len() / nz.nrows().max(1);
    let lanes = 32 / std::mem::size_of::<T>();
    for (c0, b) in vector_blocks::<T>(h) {
        let f = match (b, b <= 2 * lanes) {
            (4, _) => rows_times_block::<T, 4, true>,
            (8, true) => rows_times_block::<T, 8, true>,
            (8, false) => rows_times_block::<T, 8, false>,
            (12, _) => rows_times_block::<T, 12, false>,
            (16, true) => rows_times_block::<T, 16, true>,
            (16, false) => rows_times_block::<T, 16, false>,
            (24, _) => rows_times_block::<T, 24, false>,
            (28, _) => rows_times_block::<T, 28, false>,
            (32, _) => rows_times_block::<T, 32, false>,
            (40, _) => rows_times_block::<T, 40, false>,
            (48, _) => rows_times_block::<T, 48, false>,
            (52, _) => rows_times_block::<T, 52, false>,
            (56, _) => rows_times_block::<T, 56, false>,
            (64, _) => rows_times_block::<T, 64, false>,
            (80, _) => rows_times_block::<T, 80, false>,
            (96, _) => rows_times_block::<T, 96, false>,
            _ => rows_times_block::<T, 104, false>,
        };
        f(d, nz, w, c, c0);
    }
}

/// g += xᵀ·D from x's non-zeros (`rows`, compressed from x); shapes checked, all
/// row-major but x (rows contiguous). Products worth two threads are cut by inputs,
/// at the input that halves the non-zeros; each row of g is summed by one thread in
/// the order of the batch's rows, so the result does not depend on the cut.
fn transposed_times<T: Float>(d: usize, product: TransposedProduct<'_, T>, g: Out<'_, T>) {
    let (n, rows) = (product.n, product.rows);
    let parts = if parts_worth_the_team::<T>(n, d, product.h) {
        MEDIUM_PARTS
    } else {
        1
    };
    let mut cuts = vec![0];
    cuts.extend((1..parts).map(|k| rows.input_with_share(k, parts, d)));
    cuts.push(d);
    let mut items = Vec::with_capacity(parts);
    let mut rest = g;
    for pair in cuts.windows(2) {
        let (lo, hi) = (pair[0], pair[1].max(pair[0]));
        let (part, tail) = rest.split_at(Axis(0), hi - lo);
        rest = tail;
        items.push(((lo, hi), part));
    }
    parallel::split_items(items, |(range, part)| {
        let (mut part, accumulate) = part.ready();
        if !accumulate {
            part.fill(T::zero());
        }
        if let Some(part) = part.as_slice_mut() {
            product.add_next(&mut product.span(range), range.1, part);
        }
    });
}

/// xᵀ·D of a compressed batch x, to be added range by range of inputs (rows of the
/// (d, h) result). D is copied once into rows padded to the column blocks' total
/// width ([`vector_blocks`]), so that a block never reads past a row.
pub(crate) struct TransposedProduct<'a, T: Float> {
    rows: &'a CompressedRows<T>,
    n: usize,
    h: usize,
    blocks: Vec<(usize, usize)>,
    hp: usize,
    dp: Vec<T>,
}

impl<'a, T: Float> TransposedProduct<'a, T> {
    /// The product of x's rows (`rows`, n of them) and D (n × h, row-major `dm`).
    fn new(n: usize, rows: &'a CompressedRows<T>, dm: &[T]) -> Self {
        let h = dm.len() / n.max(1);
        let blocks = vector_blocks::<T>(h);
        let hp = blocks.iter().map(|&(_, b)| b).sum::<usize>();
        let mut dp = vec![T::zero(); n * hp];
        for (src, dst) in dm.chunks_exact(h).zip(dp.chunks_exact_mut(hp)) {
            dst[..h].copy_from_slice(src);
        }
        TransposedProduct {
            rows,
            n,
            h,
            blocks,
            hp,
            dp,
        }
    }

    /// The product of x (compressed in `rows`) and D from x's non-zeros, or None where
    /// [`transposed_times_out`] takes the GEMM (x dense, D not contiguous or not finite).
    pub(crate) fn of<U: Float>(
        x: ArrayView2<'_, U>,
        rows: Option<&'a CompressedRows<T>>,
        dm: ArrayView2<'_, T>,
    ) -> Option<Self> {
        let (rows, ds) = (rows?, dm.as_slice()?);
        (covers(rows, x.nrows()) && dm.nrows() == x.nrows() && all_finite(dm))
            .then(|| Self::new(x.nrows(), rows, ds))
    }

    /// The non-zeros of inputs lo..hi, to be added range by range in ascending order
    /// ([`TransposedProduct::add_next`]).
    pub(crate) fn span(&self, range: (usize, usize)) -> InputMasks<'a, T> {
        InputMasks::of(self.rows, self.n, range)
    }

    /// g (the rows next..upto of the (d, h) result, row-major; `next` where the span's
    /// last range ended) += the terms of those inputs: each element of g gets one
    /// addition, of its sum over the batch's rows in their order.
    pub(crate) fn add_next(&self, span: &mut InputMasks<'a, T>, upto: usize, g: &mut [T]) {
        let (h, hp, words) = (self.h, self.hp, span.words);
        let masks = &span.masks[(span.next - span.lo) * words..(upto - span.lo) * words];
        // Each column block walks the rows' values from the same place.
        let mut after = Vec::new();
        for &(c0, b) in &self.blocks {
            let f = match b {
                4 => columns_times_block::<T, 4>,
                8 => columns_times_block::<T, 8>,
                12 => columns_times_block::<T, 12>,
                16 => columns_times_block::<T, 16>,
                24 => columns_times_block::<T, 24>,
                28 => columns_times_block::<T, 28>,
                32 => columns_times_block::<T, 32>,
                40 => columns_times_block::<T, 40>,
                48 => columns_times_block::<T, 48>,
                52 => columns_times_block::<T, 52>,
                56 => columns_times_block::<T, 56>,
                64 => columns_times_block::<T, 64>,
                80 => columns_times_block::<T, 80>,
                96 => columns_times_block::<T, 96>,
                _ => columns_times_block::<T, 104>,
            };
            after = f(masks, words, &span.rest, &self.dp, hp, g, h, c0);
        }
        span.rest = after;
        span.next = upto;
    }
}

/// Column blocks (start, width) of whole AVX2 vectors covering h columns: 12 vectors
/// while more than 13 are left, then the fewest of 1, 2, 3, 4, 6, 7, 8, 10, 12, 13
/// vectors that cover the rest (50 columns: one block of 13 vectors in f64, 7 in f32).
///
/// Wide blocks although D's block then comes from L2: every block walks the inputs'
/// masks and the rows' cursors again, and that costs more than the loads. Blocks cut so
/// that D's block stays in L1 (24 KiB: 6 vectors for 128 rows of f64) made xᵀ·D of 128
/// MNIST rows with 100-wide float64 D 338 → 931 µs (one thread, AMD Zen 3); lists of
/// (row, value) per input, sorted once per call, instead of the masks: 335 → 373 µs.
fn vector_blocks<T>(h: usize) -> Vec<(usize, usize)> {
    let lanes = 32 / std::mem::size_of::<T>();
    let mut blocks = Vec::new();
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
        blocks.push((c0, v * lanes));
        c0 += v * lanes;
    }
    blocks
}

/// Whether a product of an (n, d) input with d × h weights is worth the team's threads
/// (the dense product's multiply-adds × element bytes; about a fifth of them remain
/// for MNIST input).
pub(crate) fn worth_the_team<T>(n: usize, d: usize, h: usize) -> bool {
    n.saturating_mul(d)
        .saturating_mul(h)
        .saturating_mul(std::mem::size_of::<T>())
        >= SPARSE_TEAM_MIN_MAC_BYTES
}

/// Whether to cut such a product into parts for the team's threads: worth them, and the
/// team free. Inside a part of another split (a half of `TwoLayerNet::gradient`) the
/// parts would run one after the other, each walking W1 (`x·W`) or every row's
/// non-zeros (`xᵀ·D`) again; the results are the same either way.
fn parts_worth_the_team<T>(n: usize, d: usize, h: usize) -> bool {
    worth_the_team::<T>(n, d, h) && !parallel::team_taken()
}

/// Bytes of a row of D up to which `xᵀ·D` is left to the GEMM: each of x's non-zeros
/// costs the zero-skipping product a walk of D's row, from L2, with no reuse of the
/// values loaded, and a narrow row does not pay for that. AMD EPYC (Zen 2), MNIST
/// x of 100 rows: D 10 columns wide, float64, 80 µs skipping zeros against the GEMM's
/// 36 (two threads; one: 119 against 65), float32 69 against 21; 32 columns float64 129
/// against 73 (one thread: 136 against 133); from 40 float64 columns on, skipping
/// zeros gains on one thread (112 against 162).
pub const TRANSPOSED_GEMM_MAX_ROW_BYTES: usize = 256;

/// Bytes of a row of W up to which `x·W` is left to the GEMM (x and W of one dtype):
/// AMD EPYC (Zen 2), MNIST x of 100 rows, W 10 columns wide, float64 60 µs skipping
/// zeros against the GEMM's 37 (two threads; one: 68 against 63), float32 52 against
/// 21; 32 float32 columns 41 against 37; from 32 float64 or 50 float32 columns on,
/// skipping zeros gains (float64 32: 67 against 78).
pub const ROWS_GEMM_MAX_ROW_BYTES: usize = 128;

/// Whether `x·W` with x of U and W of `h` columns of T is worth skipping x's zeros
/// ([`skipping_pays`] with [`ROWS_GEMM_MAX_ROW_BYTES`]).
pub fn rows_times_pays<T: Float, U: Float>(h: usize) -> bool {
    skipping_pays::<T, U>(h, ROWS_GEMM_MAX_ROW_BYTES)
}

/// Whether `xᵀ·D` with x of U and D of `h` columns of T is worth skipping x's zeros
/// ([`skipping_pays`] with [`TRANSPOSED_GEMM_MAX_ROW_BYTES`]).
pub fn transposed_pays<T: Float, U: Float>(h: usize) -> bool {
    skipping_pays::<T, U>(h, TRANSPOSED_GEMM_MAX_ROW_BYTES)
}

/// Whether a product of x (of U) with a factor of `h` columns of T is worth skipping
/// x's zeros: always when U is not T (the GEMM would first convert x, which costs more:
/// float32 MNIST x with 10 float64 columns, `xᵀ·D` 74 µs skipping zeros against 134),
/// else when the factor's rows are wider than `gemm_max_row_bytes`.
pub fn skipping_pays<T: Float, U: Float>(h: usize, gemm_max_row_bytes: usize) -> bool {
    TypeId::of::<T>() != TypeId::of::<U>()
        || h.saturating_mul(std::mem::size_of::<T>()) > gemm_max_row_bytes
}

/// Dense multiply-adds × bytes per element from which the zero-skipping products
/// share their work between the team's threads: 25 MNIST rows times a 784×50 W in
/// float64.
pub const SPARSE_TEAM_MIN_MAC_BYTES: usize = 4 * TEAM_MIN_MAC_BYTES;

/// Rows per block of a batch of n rows: [`BLOCK_ROWS`] for large batches, halves for
/// a batch worth two threads, else the whole batch.
fn rows_per_block<T>(n: usize, d: usize, h: usize) -> usize {
    if n > BLOCK_ROWS {
        BLOCK_ROWS
    } else if n >= 2 && parts_worth_the_team::<T>(n, d, h) {
        n.div_ceil(MEDIUM_PARTS)
    } else {
        n.max(1)
    }
}

/// One block of consecutive rows of x, compressed.
#[derive(Debug)]
struct RowBlock<T: Float> {
    first: usize,
    nz: NonZeroColumns<T>,
}

/// An input batch x compressed to its non-zero columns, in blocks of rows that the
/// team's threads compress and multiply in parallel.
#[derive(Debug)]
pub struct CompressedRows<T: Float> {
    blocks: Vec<RowBlock<T>>,
}

impl<T: Float> CompressedRows<T> {
    /// The input column below which about k/parts of the non-zeros lie (from up to
    /// 64 evenly spaced rows).
    fn input_with_share(&self, k: usize, parts: usize, d: usize) -> usize {
        let rows: Vec<&[u32]> = self
            .blocks
            .iter()
            .flat_map(|b| (0..b.nz.nrows()).map(move |r| b.nz.row(r)))
            .collect();
        let step = rows.len().div_ceil(64).max(1);
        let sample: Vec<&[u32]> = rows.into_iter().step_by(step).collect();
        let below = |c: usize| -> usize {
            sample
                .iter()
                .map(|row| row.partition_point(|&i| (i as usize) < c))
                .sum()
        };
        let want = below(d) * k / parts;
        // The smallest column with at least `want` non-zeros before it.
        let (mut lo, mut hi) = (0, d);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if below(mid) < want {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// x (n, d) compressed once for several products with it (the forward and backward
/// pass of a layer), by the team's threads for a batch worth them, or None when the
/// products should take the GEMM: too small, too dense, or laid out otherwise. x may
/// be of the other float type than the products (a float32 batch for a float64 net):
/// its non-zeros are converted on the way. Callers compress only for a product whose
/// other factor is wide enough to pay ([`rows_times_pays`], [`transposed_pays`]).
pub fn compress_for_products<T: Float, U: Float>(
    x: ArrayView2<'_, U>,
    h: usize,
) -> Option<CompressedRows<T>> {
    let (n, d) = x.dim();
    if x.len().saturating_mul(h) < MIN_MACS || d < 8 {
        return None;
    }
    let per = rows_per_block::<T>(n, d, h);
    let slots: Vec<std::sync::Mutex<Option<RowBlock<T>>>> = (0..n.div_ceil(per))
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    parallel::split(slots.len(), &|k| {
        let first = k * per;
        let block = x.slice(ndarray::s![first..(first + per).min(n), ..]);
        let nz = NonZeroColumns::of(block).map(|nz| RowBlock { first, nz });
        if let Ok(mut slot) = slots[k].lock() {
            *slot = nz;
        }
    });
    let blocks: Option<Vec<RowBlock<T>>> = slots
        .into_iter()
        .map(|s| s.into_inner().ok().flatten())
        .collect();
    blocks.map(|blocks| CompressedRows { blocks })
}

/// x as an array of T: a view of x itself when U is T, else a converted copy (as
/// NumPy's `astype`: f32 → f64 exactly, f64 → f32 rounded to nearest).
pub fn converted<'a, T: Float, U: Float>(x: ArrayView2<'a, U>) -> CowArray<'a, T, Ix2> {
    if TypeId::of::<T>() == TypeId::of::<U>() {
        // SAFETY: T and U are the same type, so the view's memory holds valid Ts of the
        // same layout, borrowed for the same lifetime 'a.
        let view: ArrayView2<'a, T> = unsafe { x.raw_view().cast::<T>().deref_into_view() };
        CowArray::from(view)
    } else {
        CowArray::from(x.mapv(|v| T::lit(v.to_f64())))
    }
}

/// Whether the compressed rows cover all n rows of the batch.
fn covers<T: Float>(rows: &CompressedRows<T>, n: usize) -> bool {
    rows.blocks.iter().map(|b| b.nz.nrows()).sum::<usize>() == n
}

/// `c ← x·W` (or `c + x·W` with `accumulate`). x (n, d), w (d, h), c (n, h), shapes
/// checked by the caller. Skips x's zeros when `rows` holds x's non-zeros (from
/// [`compress_for_products`]), W is finite and the layouts allow; else the GEMM (on x
/// converted to T). The blocks of rows go to the team's threads; each row's sum is
/// the same whichever thread computes it.
pub fn times_into<T: Float, U: Float>(
    x: ArrayView2<'_, U>,
    rows: Option<&CompressedRows<T>>,
    w: ArrayView2<'_, T>,
    c: ArrayViewMut2<'_, T>,
    accumulate: bool,
) {
    times_out(x, rows, w, Out::Into(c, accumulate));
}

/// [`times_into`] into any [`Out`]; every element of a fresh output is written, each
/// block of rows by the thread that computes it.
pub(crate) fn times_out<T: Float, U: Float>(
    x: ArrayView2<'_, U>,
    rows: Option<&CompressedRows<T>>,
    w: ArrayView2<'_, T>,
    c: Out<'_, T>,
) {
    let d = x.ncols();
    if let (Some(rows), Some(ws)) = (rows, w.as_slice()) {
        if covers(rows, x.nrows()) && all_finite(w) && c.is_standard_layout() {
            let mut items = Vec::with_capacity(rows.blocks.len());
            let mut rest = c;
            for block in &rows.blocks {
                let (part, tail) = rest.split_at(Axis(0), block.nz.nrows());
                rest = tail;
                items.push((block, part));
            }
            return parallel::split_items(items, |(block, part)| {
                let (mut part, accumulate) = part.ready();
                if let Some(part) = part.as_slice_mut() {
                    rows_times(d, &block.nz, ws, part, accumulate);
                }
            });
        }
    }
    gemm_out(converted::<T, U>(x).view(), w, c);
}

/// `g ← xᵀ·D`, `g + xᵀ·D` or a fresh g ([`Out`]; every element written, each range of
/// inputs by the thread that sums it). x (n, d), dm (n, h), g (d, h), shapes checked by
/// the caller. Skips x's zeros as [`times_into`] does (D must be finite).
pub(crate) fn transposed_times_out<T: Float, U: Float>(
    x: ArrayView2<'_, U>,
    rows: Option<&CompressedRows<T>>,
    dm: ArrayView2<'_, T>,
    g: Out<'_, T>,
) {
    if g.is_standard_layout() {
        if let Some(product) = TransposedProduct::of(x, rows, dm) {
            return transposed_times(x.ncols(), product, g);
        }
    }
    gemm_out(converted::<T, U>(x).t(), dm, g);
}

/// `c ← x·W`, `c + x·W` or a fresh c ([`Out`]; every element written, each block of rows
/// by the thread that computes it) for a batch of any size: blocks of rows
/// ([`rows_per_block`]), each compressed and multiplied by its non-zeros when sparse
/// enough and W wide enough ([`rows_times_pays`]; else the GEMM), the team's threads
/// sharing the blocks. x may be of the other float type (converted as [`converted`]
/// does). Shapes checked by the caller.
pub(crate) fn product_out<T: Float, U: Float>(
    x: ArrayView2<'_, U>,
    w: ArrayView2<'_, T>,
    c: Out<'_, T>,
) {
    let (n, d) = x.dim();
    let h = w.ncols();
    let rows_ok = d > 1 && (n <= 1 || x.stride_of(Axis(1)) == 1);
    let small = n.saturating_mul(d).saturating_mul(h) < MIN_MACS;
    if small || d < 8 || !rows_ok || !rows_times_pays::<T, U>(h) {
        return gemm_out(converted::<T, U>(x).view(), w, c);
    }
    // A look at the first rows: dense input goes to the GEMM whole (its threading).
    let head = x.slice(ndarray::s![..n.min(3), ..]);
    let mut nz = NonZeroColumns::<T>::recycled();
    let sparse_head = nz.compress(head);
    drop(nz);
    if !sparse_head || w.as_slice().is_none() || !c.is_standard_layout() || !all_finite(w) {
        return gemm_out(converted::<T, U>(x).view(), w, c);
    }
    let block = |(x, c): (ArrayView2<'_, U>, Out<'_, T>)| {
        let mut nz = NonZeroColumns::<T>::recycled();
        match (nz.compress(x), w.as_slice()) {
            (true, Some(ws)) => {
                let (mut c, accumulate) = c.ready();
                if let Some(cs) = c.as_slice_mut() {
                    rows_times(d, &nz, ws, cs, accumulate);
                }
            }
            _ => gemm_out(converted::<T, U>(x).view(), w, c),
        }
    };
    let per = rows_per_block::<T>(n, d, h);
    let mut parts = Vec::with_capacity(n.div_ceil(per));
    let mut rest = c;
    for x in x.axis_chunks_iter(Axis(0), per) {
        let (c, tail) = rest.split_at(Axis(0), x.nrows());
        rest = tail;
        parts.push((x, c));
    }
    parallel::split_items(parts, block);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    #[test]
    #[cfg(target_arch = "x86_64")]
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

    /// The entries' columns and values, f32 into f32 and f64, equal the scalar
    /// columns and `as` conversions, for rows with a tail (not a multiple of 8), ±0 and
    /// NaN, and every mask of a vector of eight.
    #[test]
    fn entries_of_f32_rows_match_the_columns_and_conversions() {
        let mut rows: Vec<Vec<f32>> = (0..256_u32)
            .map(|m| {
                (0..8)
                    .map(|b| {
                        if m & (1 << b) != 0 {
                            b as f32 + 0.5
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect();
        rows.push(
            (0..29)
                .map(|i| match i % 6 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => f32::NAN,
                    3 => -1e-30,
                    _ => i as f32 * 0.1,
                })
                .collect(),
        );
        for row in &rows {
            let mut want = vec![0_u32; row.len()];
            let n = nonzero_columns_scalar(row, &mut want);
            let (mut c32, mut v32) = (vec![0_u32; row.len()], vec![0_f32; row.len()]);
            let (mut c64, mut v64) = (vec![0_u32; row.len()], vec![0_f64; row.len()]);
            assert_eq!(nonzero_entries_f32(row, &mut c32, &mut v32), n);
            assert_eq!(nonzero_entries_f32(row, &mut c64, &mut v64), n);
            assert_eq!((&c32[..n], &c64[..n]), (&want[..n], &want[..n]));
            for (k, &c) in want[..n].iter().enumerate() {
                let x = row[c as usize];
                assert_eq!(v32[k].to_bits(), x.to_bits());
                assert_eq!(v64[k].to_bits(), f64::from(x).to_bits());
            }
        }
    }

    #[test]
    fn dense_input_is_refused_and_sparse_kept() {
        let dense = Array2::from_elem((4, 16), 1.0_f32);
        assert!(NonZeroColumns::<f32>::of(dense.view()).is_none());
        let mut sparse = Array2::<f32>::zeros((4, 16));
        sparse[[2, 9]] = 0.1;
        let nz = NonZeroColumns::<f32>::of(sparse.view());
        assert_eq!(
            nz.as_ref()
                .map(|z| (z.nrows(), z.nnz(), z.row(2), z.row_values(2))),
            Some((4, 1, &[9u32][..], &[0.1_f32][..]))
        );
        // Values of the other float type are converted as `as` (astype) would.
        let wide = NonZeroColumns::<f64>::of(sparse.view());
        assert_eq!(
            wide.as_ref().map(|z| z.row_values(2)),
            Some(&[0.1_f32 as f64][..])
        );
        // A transposed view has no contiguous rows.
        assert!(NonZeroColumns::<f32>::of(sparse.t()).is_none());
    }

    #[test]
    fn transposed_products_find_every_row_of_every_input() {
        // xᵀ·D from the masks against the naive sum, exact (small integers): batches
        // across the 64-row words of the masks, over one and two row blocks, with one
        // and two column blocks, and one large enough for two ranges of inputs.
        let x_of = |n: usize, d: usize| {
            Array2::from_shape_fn((n, d), |(i, j)| {
                if (i * 7 + j * 3) % 5 == 0 && j % 11 != 4 {
                    ((i + 2 * j) % 9) as f64 - 4.0
                } else {
                    0.0
                }
            })
        };
        for (n, d, h) in [
            (1, 64, 600),
            (63, 100, 50),
            (64, 100, 50),
            (65, 300, 100),
            (129, 784, 50),
            (700, 784, 50),
        ] {
            let x = x_of(n, d);
            let dm = Array2::from_shape_fn((n, h), |(i, j)| ((i * 13 + j * 5) % 23) as f64 - 11.0);
            let rows = compress_for_products::<f64, f64>(x.view(), h);
            assert!(rows.is_some(), "{n}×{d} not compressed");
            let mut g = Array2::from_elem((d, h), 0.5);
            transposed_times_out(
                x.view(),
                rows.as_ref(),
                dm.view(),
                Out::Into(g.view_mut(), true),
            );
            let want = Array2::from_shape_fn((d, h), |(i, j)| {
                0.5 + (0..n).map(|r| x[[r, i]] * dm[[r, j]]).sum::<f64>()
            });
            assert_eq!(g, want, "{n}×{d}·{h}");
        }
        assert!(worth_the_team::<f64>(700, 784, 50));
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
