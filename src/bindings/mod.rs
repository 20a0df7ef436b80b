//! The PyO3 layer: `ferrograd._core`. Each file wraps the kernel file of the same name
//! (`convert.rs` holds what they share): it checks and borrows NumPy arrays, releases
//! the GIL around real work, and returns new arrays. No maths here. `memory.rs` sets
//! the C allocator up for array-sized blocks when the module is imported.

// The Python signatures (W1, b1, W2, b2, x, t, options) set the argument counts.
#![allow(clippy::too_many_arguments)]

mod activation;
mod batch_norm;
mod conv;
mod convert;
mod convnet;
mod fused;
mod loss;
mod matmul;
mod memory;
mod net;
mod numgrad;
mod numgrad_chain;
mod optimizer;
mod parallel;
mod pixels;
mod pooling;
mod predict;
mod softmax;
mod sparse;

use pyo3::prelude::*;

/// Native kernels of ferrograd (float32 and float64 NumPy arrays in, new arrays out).
#[pymodule]
mod _core {
    use pyo3::prelude::*;

    #[pymodule_export]
    use super::activation::{
        relu, relu_backward, relu_grad, sigmoid, sigmoid_backward, sigmoid_grad,
    };
    #[pymodule_export]
    use super::batch_norm::{batch_norm_backward, batch_norm_forward};
    #[pymodule_export]
    use super::conv::{col2im, conv_backward, conv_forward, im2col};
    #[pymodule_export]
    use super::convnet::ConvNetTrainer;
    #[pymodule_export]
    use super::fused::FusedTrainer;
    #[pymodule_export]
    use super::loss::{cross_entropy_error, softmax_cross_entropy_backward, sum_squares_error};
    #[pymodule_export]
    use super::matmul::{affine, matmul};
    #[pymodule_export]
    use super::net::{two_layer_gradient, two_layer_loss, two_layer_predict};
    #[pymodule_export]
    use super::numgrad::numerical_gradient;
    #[pymodule_export]
    use super::numgrad_chain::chain_numerical_gradient;
    #[pymodule_export]
    use super::optimizer::{add_scaled, max_abs, optimizer_update};
    #[pymodule_export]
    use super::parallel::num_threads;
    #[pymodule_export]
    use super::pixels::scaled_pixels;
    #[pymodule_export]
    use super::pooling::{pool_backward, pool_forward};
    #[pymodule_export]
    use super::predict::{accuracy, predict_labels};
    #[pymodule_export]
    use super::softmax::softmax;
    #[pymodule_export]
    use super::sparse::SparseRows;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add(
            "MAX_THREADS_PER_CORE",
            crate::kernels::parallel::MAX_THREADS_PER_CORE,
        )?;
        m.add("MALLOC_TUNED", super::memory::tune_allocator())?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
