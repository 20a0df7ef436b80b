//! The one error type of the kernels. It knows nothing of Python; the bindings map
//! it to `ValueError` / `TypeError`.

use thiserror::Error;

/// Why a kernel refused its input. Every message names the operation and the shapes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KernelError {
    /// Arrays whose shapes do not fit together (or a wrong number of dimensions).
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },
    /// An integer label outside `[0, classes)`.
    #[error("{op}: label {label} at index {index} is out of range for {classes} classes")]
    Label {
        op: &'static str,
        index: usize,
        label: i64,
        classes: usize,
    },
    /// A value the operation cannot work with (NaN where it matters, a bad option).
    #[error("{op}: {msg}")]
    Value { op: &'static str, msg: String },
    /// The result would not fit in memory (or its size overflows `usize`).
    #[error("{op}: cannot allocate a {shape} result ({bytes} bytes)")]
    Alloc {
        op: &'static str,
        shape: String,
        bytes: u128,
    },
    /// The caller asked the operation to stop (Ctrl-C seen between work units).
    #[error("{op}: interrupted")]
    Interrupted { op: &'static str },
}

impl KernelError {
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Self::Shape {
            op,
            msg: msg.into(),
        }
    }

    pub fn value(op: &'static str, msg: impl Into<String>) -> Self {
        Self::Value {
            op,
            msg: msg.into(),
        }
    }
}

/// A zero-filled array of shape `dim`, or [`KernelError::Alloc`] when it cannot be had
/// (instead of the process aborting on a failed allocation).
pub fn try_zeros<T: Clone + num_traits::Zero, D: ndarray::Dimension>(
    op: &'static str,
    dim: D,
) -> Result<ndarray::Array<T, D>> {
    try_filled(op, dim, T::zero())
}

/// An array of shape `dim` whose memory is not written yet (to be written once by the
/// kernel that fills it), or [`KernelError::Alloc`].
pub fn try_uninit<T: Copy, D: ndarray::Dimension>(
    op: &'static str,
    dim: D,
) -> Result<ndarray::Array<std::mem::MaybeUninit<T>, D>> {
    try_filled(op, dim, std::mem::MaybeUninit::uninit())
}

/// An array of shape `dim` with every element `v`, or [`KernelError::Alloc`].
fn try_filled<T: Clone, D: ndarray::Dimension>(
    op: &'static str,
    dim: D,
    v: T,
) -> Result<ndarray::Array<T, D>> {
    let fail = || KernelError::Alloc {
        op,
        shape: fmt_shape(dim.slice()),
        bytes: dim
            .slice()
            .iter()
            .fold(std::mem::size_of::<T>() as u128, |b, &d| {
                b.saturating_mul(d as u128)
            }),
    };
    let len = dim.size_checked().ok_or_else(fail)?;
    len.checked_mul(std::mem::size_of::<T>())
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(fail)?;
    let mut data: Vec<T> = Vec::new();
    data.try_reserve_exact(len).map_err(|_| fail())?;
    advise_huge_pages(data.as_ptr().cast(), len * std::mem::size_of::<T>());
    data.resize(len, v);
    ndarray::Array::from_shape_vec(dim.clone(), data).map_err(|_| fail())
}

/// Blocks of at least this many bytes are backed by huge pages where the system
/// offers them on request, as NumPy's own arrays are.
pub const HUGE_PAGES_MIN_BYTES: usize = 4 << 20;

/// Asks Linux to back the pages of a new block of `bytes` at `ptr` with transparent
/// huge pages (`madvise(MADV_HUGEPAGE)`, what NumPy does for its arrays of 4 MB and
/// more): with the system's setting `madvise`, a common default, a fresh block is
/// otherwise faulted in 4 kB at a time on its first write, which made the MNIST
/// training images' conversion to float32 (188 MB) take 59 ms against NumPy's 33.
/// Only advice: a refusal changes nothing.
fn advise_huge_pages(ptr: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    if bytes >= HUGE_PAGES_MIN_BYTES {
        extern "C" {
            fn madvise(
                addr: *mut std::ffi::c_void,
                len: usize,
                advice: std::ffi::c_int,
            ) -> std::ffi::c_int;
        }
        const MADV_HUGEPAGE: std::ffi::c_int = 14;
        const PAGE: usize = 4096;
        let start = (ptr as usize).next_multiple_of(PAGE);
        let end = (ptr as usize + bytes) & !(PAGE - 1);
        if end > start {
            // SAFETY: the range lies inside a block this process owns (the Vec's
            // reserved capacity, page-aligned inward); MADV_HUGEPAGE changes how the
            // kernel backs it, never its contents or validity.
            unsafe {
                madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}

/// [`try_zeros`] for a matrix.
pub fn try_zeros2<T: Clone + num_traits::Zero>(
    op: &'static str,
    rows: usize,
    cols: usize,
) -> Result<ndarray::Array2<T>> {
    try_zeros(op, ndarray::Ix2(rows, cols))
}

/// Result of a fallible kernel.
pub type Result<T> = std::result::Result<T, KernelError>;

/// `(100, 784)`-style rendering of a shape for error messages.
pub fn fmt_shape(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", dims.join(", "))
        }
    }
}
