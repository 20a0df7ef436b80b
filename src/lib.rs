//! ferrograd: fast kernels for the classic "deep learning from scratch" networks.
//!
//! [`kernels`] is plain Rust over `ndarray` views (tested by `cargo test`, timed by
//! `cargo bench`); the `python` feature adds the thin PyO3 layer that exposes them to
//! Python as `ferrograd._core`.

pub mod error;
pub mod kernels;

#[cfg(feature = "python")]
mod bindings;

pub use error::KernelError;
