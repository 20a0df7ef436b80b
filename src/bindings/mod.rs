//! The PyO3 layer: `ferrograd._core`. Each file wraps the kernel family of the same
//! name: it checks and borrows NumPy arrays, releases the GIL around real work, and
//! returns new arrays. No maths here.

// The Python signatures (W1, b1, W2, b2, x, t, options) set the argument counts.
#![allow(clippy::too_many_arguments)]

mod activation;
mod convert;
mod loss;
mod matmul;
mod numgrad;
mod softmax;
mod train;

use pyo3::prelude::*;

/// Number of threads the kernels use (``FERROGRAD_NUM_THREADS``, read once).
#[pyfunction]
fn num_threads() -> usize {
    crate::kernels::parallel::num_threads()
}

/// Native kernels of ferrograd (float32 and float64 NumPy arrays in, new arrays out).
#[pymodule]
mod _core {
    use pyo3::prelude::*;

    #[pymodule_export]
    use super::activation::{
        relu, relu_backward, relu_grad, sigmoid, sigmoid_backward, sigmoid_grad,
    };
    #[pymodule_export]
    use super::loss::{cross_entropy_error, softmax_cross_entropy_backward, sum_squares_error};
    #[pymodule_export]
    use super::matmul::{affine, matmul};
    #[pymodule_export]
    use super::num_threads;
    #[pymodule_export]
    use super::numgrad::{
        numerical_gradient, two_layer_gradient, two_layer_loss, two_layer_predict,
    };
    #[pymodule_export]
    use super::softmax::softmax;
    #[pymodule_export]
    use super::train::{
        multi_layer_accuracy, two_layer_accuracy, two_layer_predict_labels, MultiLayerTrainer,
        SparseRows, TwoLayerTrainer,
    };

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
