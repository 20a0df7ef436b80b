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
