//! Input rows compressed to their non-zero entries, as the fused kernels read them.
//!
//! MNIST is ~81% zeros and has only 255 distinct non-zero pixel values, so a row is kept
//! as one `u32` per non-zero pixel: its column in the high 24 bits and a code for its
//! value in the low 8, the value itself looked up in a 256-entry table. That is 4 bytes
//! per entry instead of 8 (f32) or 12 (f64): the batch rows a training step reads from
//! memory at random arrive two to three times sooner. Matrices with more distinct
//! values (or 2²⁴ columns or more) keep (column, value) pairs. Kernels are written once
//! against [`RowEntries`] and run on either layout (`with_layout!`).

use ndarray::{ArrayView1, ArrayView2};
use rayon::prelude::*;

use super::{parallel, Float};
use crate::error::{fmt_shape, KernelError, Result};

/// Rows compressed per parallel task when building [`SparseRows`].
const BUILD_ROWS: usize = 2048;

/// Most distinct non-zero values that the coded layout holds.
const CODES: usize = 256;

/// Columns the coded layout can address.
const CODED_COLS: usize = 1 << 24;

/// The rows of a matrix in compressed sparse row form: row r's non-zero entries are
/// entries `ptr[r]..ptr[r + 1]`, columns ascending. Exact zeros are dropped, NaN kept.
///
/// Built once from a dense matrix, it lets every training step and evaluation read
/// only the non-zero inputs without compressing them again.
#[derive(Debug, Clone)]
pub struct SparseRows<T> {
    cols: usize,
    ptr: Vec<usize>,
    storage: Storage<T>,
}

#[derive(Debug, Clone)]
enum Storage<T> {
    /// `column << 8 | code` per entry; the value is `table[code]`.
    Coded {
        entries: Vec<u32>,
        table: Box<[T; CODES]>,
    },
    /// (column, value) per entry.
    Pairs { entries: Vec<(u32, T)> },
}

impl<T: Float> Default for SparseRows<T> {
    fn default() -> Self {
        SparseRows {
            cols: 0,
            ptr: vec![0],
            storage: Storage::Pairs {
                entries: Vec::new(),
            },
        }
    }
}

/// Read access to compressed rows, for kernels generic over the layout.
pub trait RowEntries<T>: Copy + Send + Sync {
    /// One stored entry.
    type Entry: Copy + Send + Sync;
    /// Where each row's entries start, and the end of the last.
    fn starts(&self) -> &[usize];
    /// Every row's entries, row after row.
    fn entries(&self) -> &[Self::Entry];
    /// An entry's column.
    fn col(e: Self::Entry) -> usize;
    /// An entry's value.
    fn value(&self, e: Self::Entry) -> T;

    /// Row r's entries, columns ascending.
    #[inline(always)]
    fn row(&self, r: usize) -> &[Self::Entry] {
        let ptr = self.starts();
        &self.entries()[ptr[r]..ptr[r + 1]]
    }

    /// Starts loading row r into cache (the rows of a batch are scattered in memory).
    #[inline(always)]
    fn prefetch_row(&self, r: usize) {
        prefetch(self.row(r));
    }

    /// Starts loading where row r starts and ends (its data comes later).
    #[inline(always)]
    fn prefetch_span(&self, r: usize) {
        prefetch(&self.starts()[r..r + 2]);
    }
}

/// Rows in the coded layout: a column and a value code per entry.
#[derive(Debug, Clone, Copy)]
pub struct CodedRows<'a, T> {
    ptr: &'a [usize],
    entries: &'a [u32],
    table: &'a [T; CODES],
}

/// Rows in the (column, value) pair layout.
#[derive(Debug, Clone, Copy)]
pub struct PairRows<'a, T> {
    ptr: &'a [usize],
    entries: &'a [(u32, T)],
}

/// Either layout; kernels take it apart with `with_layout!`.
#[derive(Debug, Clone, Copy)]
pub enum RowLayout<'a, T> {
    Coded(CodedRows<'a, T>),
    Pairs(PairRows<'a, T>),
}

/// `with_layout!(sp, |s| body)`: `body` with `s` bound to the [`RowEntries`] of the
/// [`SparseRows`] `sp`, compiled once per layout.
macro_rules! with_layout {
    ($sp:expr, |$s:ident| $body:expr) => {
        match $sp.layout() {
            $crate::kernels::sparse::RowLayout::Coded($s) => $body,
            $crate::kernels::sparse::RowLayout::Pairs($s) => $body,
        }
    };
}
pub(crate) use with_layout;

impl<T: Float> RowEntries<T> for CodedRows<'_, T> {
    type Entry = u32;

    #[inline(always)]
    fn starts(&self) -> &[usize] {
        self.ptr
    }

    #[inline(always)]
    fn entries(&self) -> &[u32] {
        self.entries
    }

    #[inline(always)]
    fn col(e: u32) -> usize {
        (e >> 8) as usize
    }

    #[inline(always)]
    fn value(&self, e: u32) -> T {
        self.table[(e & 0xff) as usize]
    }
}

impl<T: Float> RowEntries<T> for PairRows<'_, T> {
    type Entry = (u32, T);

    #[inline(always)]
    fn starts(&self) -> &[usize] {
        self.ptr
    }

    #[inline(always)]
    fn entries(&self) -> &[(u32, T)] {
        self.entries
    }

    #[inline(always)]
    fn col(e: (u32, T)) -> usize {
        e.0 as usize
    }

    #[inline(always)]
    fn value(&self, e: (u32, T)) -> T {
        e.1
    }
}

/// The distinct non-zero values of a matrix, up to [`CODES`] of them, with their codes:
/// open addressing on the values' bits (f64 bits of the value, so NaN payloads and
/// every f32 stay distinct).
struct Palette<T> {
    /// Per slot: the key's bits and its code + 1 (0: empty).
    slots: Vec<(u64, u16)>,
    values: Vec<T>,
}

impl<T: Float> Palette<T> {
    const SLOTS: usize = 1024;

    fn new() -> Self {
        Palette {
            slots: vec![(0, 0); Self::SLOTS],
            values: Vec::new(),
        }
    }

    #[inline(always)]
    fn slot(bits: u64) -> usize {
        (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize
    }

    /// The code of v, adding v if new; None once more than [`CODES`] values are seen.
    #[inline(always)]
    fn code(&mut self, v: T) -> Option<u8> {
        let bits = Float::to_f64(v).to_bits();
        let mut s = Self::slot(bits);
        loop {
            let (key, code) = self.slots[s];
            if code == 0 {
                if self.values.len() == CODES {
                    return None;
                }
                self.values.push(v);
                self.slots[s] = (bits, self.values.len() as u16);
                return Some((self.values.len() - 1) as u8);
            }
            if key == bits {
                return Some((code - 1) as u8);
            }
            s = (s + 1) % Self::SLOTS;
        }
    }

    /// The code of a value already in the palette.
    #[inline(always)]
    fn known(&self, v: T) -> u8 {
        let bits = Float::to_f64(v).to_bits();
        let mut s = Self::slot(bits);
        loop {
            let (key, code) = self.slots[s];
            if code == 0 || key == bits {
                return code.saturating_sub(1) as u8;
            }
            s = (s + 1) % Self::SLOTS;
        }
    }

    /// A palette of `values` (at most [`CODES`], distinct), codes in their order.
    fn of(values: &[T]) -> Self {
        let mut p = Palette::new();
        for &v in values {
            let _ = p.code(v);
        }
        p
    }
}

impl<T: Float> SparseRows<T> {
    /// The non-zero entries of x (n, d), any strides. Parallel over blocks of rows.
    /// Errors: d ≥ 2³² columns, or memory for the entries cannot be had.
    pub fn from_dense(x: ArrayView2<'_, T>) -> Result<Self> {
        const OP: &str = "SparseRows";
        let (n, d) = x.dim();
        if u32::try_from(d).is_err() {
            return Err(KernelError::shape(
                OP,
                format!("x has shape {}; at most 2³² columns", fmt_shape(x.shape())),
            ));
        }
        let blocks = n.div_ceil(BUILD_ROWS);
        let block_rows = |b: usize| {
            x.slice(ndarray::s![
                b * BUILD_ROWS..((b + 1) * BUILD_ROWS).min(n),
                ..
            ])
        };
        // Pass 1: non-zeros per row.
        let mut counts = vec![0usize; n];
        parallel::install(|threads| {
            let count = |(b, out): (usize, &mut [usize])| {
                for (c, row) in out.iter_mut().zip(block_rows(b).rows()) {
                    *c = row.iter().filter(|&&v| v != T::zero()).count();
                }
            };
            if threads > 1 && blocks > 1 {
                counts
                    .par_chunks_mut(BUILD_ROWS)
                    .enumerate()
                    .for_each(count);
            } else {
                counts.chunks_mut(BUILD_ROWS).enumerate().for_each(count);
            }
        });
        let mut ptr = Vec::with_capacity(n + 1);
        ptr.push(0usize);
        for &c in &counts {
            ptr.push(ptr[ptr.len() - 1] + c);
        }
        let nnz = ptr[n];
        let spans: Vec<[usize; 2]> = (0..blocks)
            .map(|b| [ptr[b * BUILD_ROWS], ptr[((b + 1) * BUILD_ROWS).min(n)]])
            .collect();
        let fail = |bytes: usize| KernelError::Alloc {
            op: OP,
            shape: format!("({nnz},)"),
            bytes: (nnz as u128) * bytes as u128,
        };
        // Pass 2: each block writes its own span of the entries: coded if every block
        // has at most 256 distinct values and all blocks together too, else pairs.
        let build = Builder {
            rows: &block_rows,
            spans: &spans,
            d,
        };
        let storage = match (d < CODED_COLS).then(|| build.coded()).flatten() {
            Some(coded) => coded.map_err(|_| fail(4))?,
            None => build
                .plain()
                .map_err(|_| fail(std::mem::size_of::<(u32, T)>()))?,
        };
        Ok(SparseRows {
            cols: d,
            ptr,
            storage,
        })
    }

    /// Number of rows.
    pub fn nrows(&self) -> usize {
        self.ptr.len() - 1
    }

    /// Number of columns.
    pub fn ncols(&self) -> usize {
        self.cols
    }

    /// Number of stored (non-zero) entries.
    pub fn nnz(&self) -> usize {
        match &self.storage {
            Storage::Coded { entries, .. } => entries.len(),
            Storage::Pairs { entries } => entries.len(),
        }
    }

    /// Bytes held: row starts, entries and the value table.
    pub fn nbytes(&self) -> usize {
        let entries = match &self.storage {
            Storage::Coded { entries, .. } => 4 * entries.len() + CODES * std::mem::size_of::<T>(),
            Storage::Pairs { entries } => std::mem::size_of_val(&entries[..]),
        };
        std::mem::size_of_val(&self.ptr[..]) + entries
    }

    /// Whether entries are stored as 4-byte codes (column and value code).
    pub fn is_coded(&self) -> bool {
        matches!(self.storage, Storage::Coded { .. })
    }

    /// The rows for the kernels (taken apart with `with_layout!`).
    #[inline(always)]
    pub fn layout(&self) -> RowLayout<'_, T> {
        match &self.storage {
            Storage::Coded { entries, table } => RowLayout::Coded(CodedRows {
                ptr: &self.ptr,
                entries,
                table,
            }),
            Storage::Pairs { entries } => RowLayout::Pairs(PairRows {
                ptr: &self.ptr,
                entries,
            }),
        }
    }

    /// Row r as (columns, values).
    pub fn row(&self, r: usize) -> (Vec<usize>, Vec<T>) {
        with_layout!(self, |s| s
            .row(r)
            .iter()
            .map(|&e| (entry_col(s, e), s.value(e)))
            .unzip())
    }

    /// Empties the rows (plain layout) for `cols` columns.
    pub(super) fn clear(&mut self, cols: usize) {
        self.cols = cols;
        self.ptr.clear();
        self.ptr.push(0);
        match &mut self.storage {
            Storage::Pairs { entries } => entries.clear(),
            Storage::Coded { .. } => {
                self.storage = Storage::Pairs {
                    entries: Vec::new(),
                }
            }
        }
    }

    /// Appends one dense row (length `cols`) after [`SparseRows::clear`].
    pub(super) fn push_row(&mut self, row: ArrayView1<'_, T>) {
        let Storage::Pairs { entries } = &mut self.storage else {
            self.clear(self.cols);
            return self.push_row(row);
        };
        // Branch-free compaction: write every entry, advance only past non-zeros (a
        // data-dependent branch per pixel would mispredict on every stroke edge).
        let start = entries.len();
        entries.resize(start + row.len(), (0, T::zero()));
        let mut end = start;
        for (i, &v) in row.iter().enumerate() {
            entries[end] = (i as u32, v);
            end += usize::from(v != T::zero());
        }
        entries.truncate(end);
        self.ptr.push(end);
    }
}

/// `S::col(e)` for an entry of the layout `S` (lets closures name the layout's type).
#[inline(always)]
fn entry_col<T, S: RowEntries<T>>(_: S, e: S::Entry) -> usize {
    S::col(e)
}

/// `v` cut into the consecutive spans `spans` (which start at 0 and cover it).
fn split_spans<'a, E>(mut v: &'a mut [E], spans: &[[usize; 2]]) -> Vec<&'a mut [E]> {
    let mut out = Vec::with_capacity(spans.len());
    for &[s, e] in spans {
        let (head, rest) = std::mem::take(&mut v).split_at_mut(e - s);
        out.push(head);
        v = rest;
    }
    out
}

/// Pass 2 of [`SparseRows::from_dense`]: blocks of rows (`rows(b)`) into their spans
/// of the entries.
struct Builder<'a, F> {
    rows: &'a F,
    spans: &'a [[usize; 2]],
    d: usize,
}

/// Out of memory for the entries.
struct NoMemory;

impl<'a, 'x, T: Float, F: Fn(usize) -> ArrayView2<'x, T> + Sync> Builder<'a, F> {
    /// Each row's non-zeros (column, value) in order, written to `emit`.
    #[inline(always)]
    fn rows_of(&self, b: usize, mut emit: impl FnMut(&[u32], &[T])) {
        // Branch-free compaction into a row-sized buffer (a branch per pixel would
        // mispredict on every stroke edge).
        let (mut ri, mut rv) = (vec![0u32; self.d], vec![T::zero(); self.d]);
        for row in (self.rows)(b).rows() {
            let mut len = 0;
            for (c, &x) in row.iter().enumerate() {
                ri[len] = c as u32;
                rv[len] = x;
                len += usize::from(x != T::zero());
            }
            emit(&ri[..len], &rv[..len]);
        }
    }

    /// The coded layout, or None when there are more than [`CODES`] distinct values.
    /// Each block codes its values in order of appearance, then its codes are mapped
    /// to those of the sorted union of all blocks' values.
    fn coded(&self) -> Option<std::result::Result<Storage<T>, NoMemory>> {
        let nnz = self.spans.last().map_or(0, |s| s[1]);
        let mut entries: Vec<u32> = Vec::new();
        if entries.try_reserve_exact(nnz).is_err() {
            return Some(Err(NoMemory));
        }
        entries.resize(nnz, 0);
        let parts = split_spans(&mut entries, self.spans);
        let too_many = std::sync::atomic::AtomicBool::new(false);
        let block = |(b, out): (usize, &mut [u32])| -> Vec<T> {
            let mut palette = Palette::new();
            let mut at = 0;
            self.rows_of(b, |idx, val| {
                if too_many.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let mut last: Option<(T, u8)> = None;
                for ((o, &c), &v) in out[at..].iter_mut().zip(idx).zip(val) {
                    let code = match last {
                        Some((lv, code)) if lv == v => code,
                        _ => match palette.code(v) {
                            Some(code) => code,
                            None => {
                                too_many.store(true, std::sync::atomic::Ordering::Relaxed);
                                return;
                            }
                        },
                    };
                    last = Some((v, code));
                    *o = c << 8 | u32::from(code);
                }
                at += idx.len();
            });
            palette.values
        };
        let palettes: Vec<Vec<T>> = parallel::install(|threads| {
            if threads > 1 && parts.len() > 1 {
                parts.into_par_iter().enumerate().map(block).collect()
            } else {
                parts.into_iter().enumerate().map(block).collect()
            }
        });
        if too_many.into_inner() {
            return None;
        }
        let mut union = Palette::new();
        for v in palettes.iter().flatten() {
            union.code(*v)?;
        }
        let mut values = union.values;
        values.sort_by(|a, b| Float::to_f64(*a).total_cmp(&Float::to_f64(*b)));
        let sorted = Palette::of(&values);
        // Block codes → codes of the sorted table.
        let maps: Vec<[u32; CODES]> = palettes
            .iter()
            .map(|p| {
                let mut m = [0u32; CODES];
                for (o, &v) in m.iter_mut().zip(p) {
                    *o = u32::from(sorted.known(v));
                }
                m
            })
            .collect();
        let parts = split_spans(&mut entries, self.spans);
        let remap = |(out, map): (&mut [u32], &[u32; CODES])| {
            for e in out.iter_mut() {
                *e = (*e & !0xff) | map[(*e & 0xff) as usize];
            }
        };
        parallel::install(|threads| {
            if threads > 1 && parts.len() > 1 {
                parts.into_par_iter().zip(&maps).for_each(remap);
            } else {
                parts.into_iter().zip(&maps).for_each(remap);
            }
        });
        let mut table = Box::new([T::zero(); CODES]);
        table[..values.len()].copy_from_slice(&values);
        Some(Ok(Storage::Coded { entries, table }))
    }

    /// The (column, value) layout.
    fn plain(&self) -> std::result::Result<Storage<T>, NoMemory> {
        let nnz = self.spans.last().map_or(0, |s| s[1]);
        let mut entries: Vec<(u32, T)> = Vec::new();
        entries.try_reserve_exact(nnz).map_err(|_| NoMemory)?;
        entries.resize(nnz, (0, T::zero()));
        let parts = split_spans(&mut entries, self.spans);
        let block = |(b, out): (usize, &mut [(u32, T)])| {
            let mut at = 0;
            self.rows_of(b, |idx, val| {
                for ((o, &c), &v) in out[at..].iter_mut().zip(idx).zip(val) {
                    *o = (c, v);
                }
                at += idx.len();
            });
        };
        parallel::install(|threads| {
            if threads > 1 && parts.len() > 1 {
                parts.into_par_iter().enumerate().for_each(block);
            } else {
                parts.into_iter().enumerate().for_each(block);
            }
        });
        Ok(Storage::Pairs { entries })
    }
}

/// Input rows of the fused kernels: a dense matrix, compressed as needed, or rows
/// compressed once.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a, T> {
    Dense(ArrayView2<'a, T>),
    Sparse(&'a SparseRows<T>),
}

impl<T: Float> Rows<'_, T> {
    pub fn nrows(&self) -> usize {
        match self {
            Rows::Dense(x) => x.nrows(),
            Rows::Sparse(s) => s.nrows(),
        }
    }

    pub fn ncols(&self) -> usize {
        match self {
            Rows::Dense(x) => x.ncols(),
            Rows::Sparse(s) => s.ncols(),
        }
    }

    pub(super) fn shape(&self) -> [usize; 2] {
        [self.nrows(), self.ncols()]
    }
}

/// The rows `indices` of x for the kernels: a dense x's rows compressed into `scratch`
/// (then `rows` counts 0, 1, …), a compressed x as it is (then `rows` are `indices`).
pub(super) fn gather<'s, 'x: 's, T: Float>(
    x: Rows<'x, T>,
    indices: impl Iterator<Item = usize>,
    scratch: &'s mut SparseRows<T>,
    rows: &mut Vec<usize>,
) -> &'s SparseRows<T> {
    rows.clear();
    match x {
        Rows::Dense(x) => {
            scratch.clear(x.ncols());
            for i in indices {
                scratch.push_row(x.row(i));
            }
            rows.extend(0..scratch.nrows());
            scratch
        }
        Rows::Sparse(sp) => {
            rows.extend(indices);
            sp
        }
    }
}

impl<'a, T> From<ArrayView2<'a, T>> for Rows<'a, T> {
    fn from(x: ArrayView2<'a, T>) -> Self {
        Rows::Dense(x)
    }
}

impl<'a, T> From<&'a SparseRows<T>> for Rows<'a, T> {
    fn from(x: &'a SparseRows<T>) -> Self {
        Rows::Sparse(x)
    }
}

/// Asks the CPU to start loading `s` into cache; a hint, with no effect on any value.
#[inline(always)]
pub(super) fn prefetch<T>(s: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = s.as_ptr().cast::<i8>();
        for off in (0..std::mem::size_of_val(s)).step_by(64) {
            // SAFETY: a prefetch reads no value and cannot fault; the address lies
            // inside the live slice `s` (SSE, which provides it, is baseline x86_64).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr2;

    #[test]
    fn rows_keep_the_non_zeros_in_order_in_both_layouts() -> Result<()> {
        let x = arr2(&[
            [0.0, 2.0, 0.0, -1.0],
            [0.0, 0.0, 0.0, 0.0],
            [5.0, 0.0, f64::NAN, 0.5],
        ]);
        let sp = SparseRows::from_dense(x.view())?;
        assert!(sp.is_coded());
        let mut plain = SparseRows::default();
        plain.clear(4);
        for r in x.rows() {
            plain.push_row(r);
        }
        assert!(!plain.is_coded());
        for sp in [&sp, &plain] {
            assert_eq!((sp.nrows(), sp.ncols(), sp.nnz()), (3, 4, 5));
            assert_eq!(sp.row(0), (vec![1, 3], vec![2.0, -1.0]));
            assert_eq!(sp.row(1).0.len(), 0);
            let (idx, val) = sp.row(2);
            assert_eq!(idx, [0, 2, 3]);
            assert!(val[0] == 5.0 && val[1].is_nan() && val[2] == 0.5);
        }
        // A transposed (strided) view gives the same as its contiguous copy.
        let t = x.t();
        let a = SparseRows::from_dense(t)?;
        let b = SparseRows::from_dense(t.as_standard_layout().view())?;
        for r in 0..4 {
            let (ai, av) = a.row(r);
            let (bi, bv) = b.row(r);
            assert_eq!(ai, bi);
            assert!(av.iter().zip(&bv).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
        Ok(())
    }

    /// 256 distinct values are coded (over several build blocks, so the blocks'
    /// palettes merge); 257 fall back to (column, value) pairs; values round-trip.
    #[test]
    fn coded_up_to_256_distinct_values() -> Result<()> {
        for (distinct, coded) in [(256, true), (257, false)] {
            let n = 3 * BUILD_ROWS;
            let x = ndarray::Array2::from_shape_fn((n, 3), |(r, c)| {
                ((r * 3 + c) % distinct) as f32 * 0.37 + 1.0
            });
            let sp = SparseRows::from_dense(x.view())?;
            assert_eq!((sp.is_coded(), sp.nnz()), (coded, 3 * n));
            for r in [0, 1, BUILD_ROWS + 5, n - 1] {
                let (idx, val) = sp.row(r);
                assert_eq!(idx, [0, 1, 2]);
                assert_eq!(val, x.row(r).to_vec());
            }
        }
        Ok(())
    }
}
