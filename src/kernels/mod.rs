//! Pure-Rust kernels over `ndarray` views. Nothing below this module knows of Python.
//!
//! Every kernel is generic over [`Float`] (`f32` and `f64`), reads views of any
//! strides, and returns new arrays (or writes an `_into` output).

pub mod activation;
pub mod aligned;
pub mod batch_norm;
pub mod conv;
pub mod convnet;
pub mod fused;
pub mod input_layer;
pub mod loss;
pub mod math;
pub mod matmul;
pub mod net;
pub mod numgrad;
pub mod numgrad_chain;
pub mod optimizer;
pub mod parallel;
pub mod pixels;
pub mod pooling;
pub mod predict;
pub mod softmax;
pub mod sparse;
pub mod sparse_input;

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::sync::Mutex;

use ndarray::{ArrayView1, ArrayView2, LinalgScalar, ScalarOperand};

/// The element types the kernels run on: `f32` and `f64`.
pub trait Float:
    num_traits::Float
    + LinalgScalar
    + ScalarOperand
    + Sum
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + 'static
{
    /// NumPy's name for the type, for error messages.
    const DTYPE: &'static str;

    /// Converts a literal (constants such as `1e-7`); exact for every value used here.
    fn lit(v: f64) -> Self;

    /// Widens to `f64` for accumulations that must not lose precision.
    fn to_f64(self) -> f64;

    /// eˣ, branch-free so that loops over it vectorise ([`math`]).
    fn exp_v(self) -> Self;

    /// The indices of the non-zero entries of `row` written to the front of `out`
    /// (at least as long as `row`), and their count ([`sparse_input`]).
    fn nonzero_columns(row: &[Self], out: &mut [u32]) -> usize;

    /// [`Float::nonzero_columns`] and the entries' values, converted to T as `astype`
    /// would, to the front of `vals` (at least as long as `row`); their count.
    #[inline(always)]
    fn nonzero_entries<T: Float>(row: &[Self], cols: &mut [u32], vals: &mut [T]) -> usize {
        sparse_input::nonzero_entries_copied(row, cols, vals)
    }

    /// The pool of reusable column lists of this type ([`sparse_input::NonZeroColumns`]).
    fn column_pool() -> &'static Mutex<Vec<sparse_input::NonZeroColumns<Self>>>;
}

impl Float for f32 {
    const DTYPE: &'static str = "float32";

    #[inline(always)]
    fn lit(v: f64) -> Self {
        v as f32
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }

    #[inline(always)]
    fn exp_v(self) -> Self {
        math::exp_f32(self)
    }

    #[inline(always)]
    fn nonzero_columns(row: &[Self], out: &mut [u32]) -> usize {
        sparse_input::nonzero_columns_f32(row, out)
    }

    #[inline(always)]
    fn nonzero_entries<T: Float>(row: &[Self], cols: &mut [u32], vals: &mut [T]) -> usize {
        sparse_input::nonzero_entries_f32(row, cols, vals)
    }

    fn column_pool() -> &'static Mutex<Vec<sparse_input::NonZeroColumns<Self>>> {
        static POOL: Mutex<Vec<sparse_input::NonZeroColumns<f32>>> = Mutex::new(Vec::new());
        &POOL
    }
}

impl Float for f64 {
    const DTYPE: &'static str = "float64";

    #[inline(always)]
    fn lit(v: f64) -> Self {
        v
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }

    #[inline(always)]
    fn exp_v(self) -> Self {
        math::exp_f64(self)
    }

    #[inline(always)]
    fn nonzero_columns(row: &[Self], out: &mut [u32]) -> usize {
        sparse_input::nonzero_columns_f64(row, out)
    }

    fn column_pool() -> &'static Mutex<Vec<sparse_input::NonZeroColumns<Self>>> {
        static POOL: Mutex<Vec<sparse_input::NonZeroColumns<f64>>> = Mutex::new(Vec::new());
        &POOL
    }
}

/// The targets of a loss: one-hot rows `(n, classes)` or integer labels `(n,)`.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a, T> {
    OneHot(ArrayView2<'a, T>),
    Labels(ArrayView1<'a, i64>),
}

impl<'a, T: Float> Targets<'a, T> {
    /// The targets of rows lo..hi.
    pub fn rows(&self, lo: usize, hi: usize) -> Targets<'a, T> {
        match *self {
            Targets::OneHot(t) => Targets::OneHot(t.slice_move(ndarray::s![lo..hi, ..])),
            Targets::Labels(t) => Targets::Labels(t.slice_move(ndarray::s![lo..hi])),
        }
    }

    /// Checks the targets against predictions of shape `(n, classes)`: same batch size,
    /// one-hot width equal to `classes`, every label in `[0, classes)`.
    pub fn check(&self, op: &'static str, n: usize, classes: usize) -> crate::error::Result<()> {
        use crate::error::{fmt_shape, KernelError};
        match self {
            Targets::OneHot(t) => {
                if t.dim() != (n, classes) {
                    return Err(KernelError::shape(
                        op,
                        format!(
                            "t has shape {} but y has shape {}; one-hot targets must match",
                            fmt_shape(t.shape()),
                            fmt_shape(&[n, classes])
                        ),
                    ));
                }
            }
            Targets::Labels(t) => {
                if t.len() != n {
                    return Err(KernelError::shape(
                        op,
                        format!(
                            "t has shape {} but y has shape {}; need one label per row",
                            fmt_shape(t.shape()),
                            fmt_shape(&[n, classes])
                        ),
                    ));
                }
                for (index, &label) in t.iter().enumerate() {
                    if label < 0 || label as u64 >= classes as u64 {
                        return Err(KernelError::Label {
                            op,
                            index,
                            label,
                            classes,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
