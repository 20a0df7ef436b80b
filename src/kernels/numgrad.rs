//! The book's two-layer network as plain kernels: forward loss, backprop gradient,
//! and the central-difference numerical gradient.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;

use super::activation::sigmoid_scalar;
use super::loss::{cross_entropy_error, softmax_cross_entropy_backward};
use super::matmul::gemm_into;
use super::softmax::softmax_into;
use super::{parallel, Float, Targets};
use crate::error::{fmt_shape, KernelError, Result};

/// h of the central difference (f(x + h) − f(x − h)) / 2h, as in the book.
pub const H: f64 = 1e-4;

/// Hidden-layer activation of the two-layer network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The book's chapter 4 network.
    Sigmoid,
    /// The book's chapter 5 network.
    Relu,
}

impl Activation {
    #[inline(always)]
    pub fn apply<T: Float>(self, a: T) -> T {
        match self {
            Activation::Sigmoid => sigmoid_scalar(a),
            Activation::Relu => {
                if a < T::zero() {
                    T::zero()
                } else {
                    a
                }
            }
        }
    }

    /// d activation / d a, given the pre-activation `a` and the activation `z`.
    #[inline(always)]
    pub fn derivative<T: Float>(self, a: T, z: T) -> T {
        match self {
            Activation::Sigmoid => (T::one() - z) * z,
            Activation::Relu => {
                if a > T::zero() {
                    T::one()
                } else {
                    T::zero()
                }
            }
        }
    }
}

/// Borrowed parameters of `x → Affine(W1, b1) → activation → Affine(W2, b2) → softmax`.
///
/// Shapes: W1 (d, h), b1 (h,), W2 (h, k), b2 (k,).
#[derive(Debug, Clone, Copy)]
pub struct TwoLayerNet<'a, T> {
    pub w1: ArrayView2<'a, T>,
    pub b1: ArrayView1<'a, T>,
    pub w2: ArrayView2<'a, T>,
    pub b2: ArrayView1<'a, T>,
    pub activation: Activation,
}

/// Gradients (or any values) shaped like the parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients<T> {
    pub w1: Array2<T>,
    pub b1: Array1<T>,
    pub w2: Array2<T>,
    pub b2: Array1<T>,
}

/// The forward pass kept for backprop: a1 = x·W1 + b1, z1 = act(a1), y = softmax(z1·W2 + b2).
#[derive(Debug, Clone)]
pub struct Forward<T> {
    pub a1: Array2<T>,
    pub z1: Array2<T>,
    pub y: Array2<T>,
}

impl<'a, T: Float> TwoLayerNet<'a, T> {
    /// Input width d, hidden width h, outputs k.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.w1.nrows(), self.w1.ncols(), self.w2.ncols())
    }

    /// Checks the parameters against each other and against a batch `x` (n, d).
    pub fn check(&self, op: &'static str, x: &ArrayView2<'_, T>) -> Result<()> {
        let (d, h, k) = self.sizes();
        let bad = |what: String| Err(KernelError::shape(op, what));
        if self.b1.len() != h {
            return bad(format!("b1 has shape {} but W1 has shape {}", fmt_shape(self.b1.shape()), fmt_shape(self.w1.shape())));
        }
        if self.w2.nrows() != h {
            return bad(format!("W2 has shape {} but W1 has shape {}", fmt_shape(self.w2.shape()), fmt_shape(self.w1.shape())));
        }
        if self.b2.len() != k {
            return bad(format!("b2 has shape {} but W2 has shape {}", fmt_shape(self.b2.shape()), fmt_shape(self.w2.shape())));
        }
        if x.ncols() != d {
            return bad(format!("x has shape {} but W1 has shape {}", fmt_shape(x.shape()), fmt_shape(self.w1.shape())));
        }
        if x.nrows() == 0 {
            return bad(format!("x has shape {}; the batch is empty", fmt_shape(x.shape())));
        }
        Ok(())
    }

    /// Forward pass; shapes already checked.
    pub fn forward(&self, x: ArrayView2<'_, T>) -> Forward<T> {
        let n = x.nrows();
        let (_, h, k) = self.sizes();
        let mut a1 = bias_rows(self.b1, n);
        gemm_into(x, self.w1, a1.view_mut(), true);
        let z1 = a1.mapv(|a| self.activation.apply(a));
        let mut a2 = bias_rows(self.b2, n);
        gemm_into(z1.view(), self.w2, a2.view_mut(), true);
        let mut y = Array2::zeros((n, k));
        let _ = softmax_into(a2.view(), y.view_mut());
        debug_assert_eq!(z1.ncols(), h);
        Forward { a1, z1, y }
    }

    /// Softmax output y (n, k) for a batch x (n, d).
    pub fn predict(&self, x: ArrayView2<'_, T>) -> Result<Array2<T>> {
        self.check("predict", &x)?;
        Ok(self.forward(x).y)
    }

    /// Mean cross-entropy of the batch.
    pub fn loss(&self, x: ArrayView2<'_, T>, t: Targets<'_, T>) -> Result<T> {
        self.check("loss", &x)?;
        cross_entropy_error(self.forward(x).y.view(), t)
    }

    /// Backprop gradient of the mean cross-entropy (the book's `gradient`).
    pub fn gradient(&self, x: ArrayView2<'_, T>, t: Targets<'_, T>) -> Result<Gradients<T>> {
        self.check("gradient", &x)?;
        let Forward { a1, z1, y } = self.forward(x);
        let dy = softmax_cross_entropy_backward(y.view(), t)?; // (y − t) / n
        let (d, h, k) = self.sizes();
        let mut w2 = Array2::zeros((h, k));
        gemm_into(z1.t(), dy.view(), w2.view_mut(), false); // dW2 = z1ᵀ·dy
        let b2 = dy.sum_axis(Axis(0)); // db2 = Σ_rows dy
        let mut da1 = Array2::zeros((x.nrows(), h));
        gemm_into(dy.view(), self.w2.t(), da1.view_mut(), false); // dz1 = dy·W2ᵀ
        ndarray::Zip::from(&mut da1).and(&a1).and(&z1).for_each(|g, &a, &z| {
            *g = *g * self.activation.derivative(a, z); // da1 = dz1 ⊙ act'(a1)
        });
        let mut w1 = Array2::zeros((d, h));
        gemm_into(x.t(), da1.view(), w1.view_mut(), false); // dW1 = xᵀ·da1
        let b1 = da1.sum_axis(Axis(0));
        Ok(Gradients { w1, b1, w2, b2 })
    }
}

fn bias_rows<T: Float>(b: ArrayView1<'_, T>, n: usize) -> Array2<T> {
    b.broadcast((n, b.len())).map_or_else(|| Array2::zeros((n, b.len())), |v| v.to_owned())
}

/// Which parameter a probe perturbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    W1,
    B1,
    W2,
    B2,
}

/// The book's `numerical_gradient` by brute force: every parameter perturbed by ±h and
/// the whole forward pass recomputed for each probe, g = (f(θ + h) − f(θ − h)) / 2h.
///
/// Slow (two full forward passes per parameter) but the definition itself; parallel
/// over parameters. f64 only: in f32 the rounding of the loss is as large as the change
/// that h produces.
pub fn numerical_gradient_bruteforce(
    net: &TwoLayerNet<'_, f64>,
    x: ArrayView2<'_, f64>,
    t: Targets<'_, f64>,
) -> Result<Gradients<f64>> {
    net.check("numerical_gradient", &x)?;
    let (n, _) = x.dim();
    let (_, _, k) = net.sizes();
    t.check("numerical_gradient", n, k)?;
    let mut owned = Gradients {
        w1: net.w1.to_owned(),
        b1: net.b1.to_owned(),
        w2: net.w2.to_owned(),
        b2: net.b2.to_owned(),
    };
    let mut grads = Gradients {
        w1: Array2::zeros(net.w1.raw_dim()),
        b1: Array1::zeros(net.b1.raw_dim()),
        w2: Array2::zeros(net.w2.raw_dim()),
        b2: Array1::zeros(net.b2.raw_dim()),
    };
    for (param, len) in [
        (Param::W1, owned.w1.len()),
        (Param::B1, owned.b1.len()),
        (Param::W2, owned.w2.len()),
        (Param::B2, owned.b2.len()),
    ] {
        let probe = |params: &mut Gradients<f64>, idx: usize| -> f64 {
            let cell = param_cell(params, param, idx);
            let tmp = *cell;
            *cell = tmp + H;
            let fxh1 = probe_loss(params, net.activation, x, t);
            *param_cell(params, param, idx) = tmp - H;
            let fxh2 = probe_loss(params, net.activation, x, t);
            *param_cell(params, param, idx) = tmp; // restore θ for the next probe
            (fxh1 - fxh2) / (2.0 * H)
        };
        let values: Vec<f64> = parallel::install(|threads| {
            if threads > 1 {
                (0..len).into_par_iter().map_init(|| owned.clone(), |p, idx| probe(p, idx)).collect()
            } else {
                (0..len).map(|idx| probe(&mut owned, idx)).collect()
            }
        });
        let out = match param {
            Param::W1 => grads.w1.as_slice_mut(),
            Param::B1 => grads.b1.as_slice_mut(),
            Param::W2 => grads.w2.as_slice_mut(),
            Param::B2 => grads.b2.as_slice_mut(),
        };
        if let Some(out) = out {
            out.copy_from_slice(&values);
        }
    }
    Ok(grads)
}

/// The parameter element `idx` (row-major) of `param` in an owned, standard-layout set.
fn param_cell(p: &mut Gradients<f64>, param: Param, idx: usize) -> &mut f64 {
    let slice = match param {
        Param::W1 => p.w1.as_slice_mut(),
        Param::B1 => p.b1.as_slice_mut(),
        Param::W2 => p.w2.as_slice_mut(),
        Param::B2 => p.b2.as_slice_mut(),
    };
    // Owned arrays made by `to_owned`/`zeros` are in standard layout, and idx < len.
    match slice.and_then(|s| s.get_mut(idx)) {
        Some(cell) => cell,
        None => unreachable!("owned parameter arrays are contiguous and idx < len"),
    }
}

fn probe_loss(p: &Gradients<f64>, activation: Activation, x: ArrayView2<'_, f64>, t: Targets<'_, f64>) -> f64 {
    let net = TwoLayerNet { w1: p.w1.view(), b1: p.b1.view(), w2: p.w2.view(), b2: p.b2.view(), activation };
    let y = net.forward(x).y;
    // Targets were checked once up front, so the loss cannot fail here.
    cross_entropy_error(y.view(), t).unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, Array};

    fn small_net(activation: Activation) -> (Gradients<f64>, Array2<f64>, Array1<i64>) {
        let w1 = Array::from_shape_fn((5, 4), |(i, j)| ((i * 4 + j) as f64 * 0.37).sin() * 0.5);
        let b1 = Array::from_shape_fn(4, |j| 0.1 * j as f64 - 0.15);
        let w2 = Array::from_shape_fn((4, 3), |(i, j)| ((i * 3 + j) as f64 * 0.71).cos() * 0.5);
        let b2 = arr1(&[0.05, -0.02, 0.01]);
        let x = Array::from_shape_fn((7, 5), |(i, j)| ((i * 5 + j) as f64 * 1.3).sin());
        let _ = activation;
        (Gradients { w1, b1, w2, b2 }, x, arr1(&[0, 1, 2, 2, 1, 0, 1]))
    }

    fn view(p: &Gradients<f64>, activation: Activation) -> TwoLayerNet<'_, f64> {
        TwoLayerNet { w1: p.w1.view(), b1: p.b1.view(), w2: p.w2.view(), b2: p.b2.view(), activation }
    }

    #[test]
    fn numerical_matches_backprop_on_a_small_net() -> Result<()> {
        for activation in [Activation::Sigmoid, Activation::Relu] {
            let (p, x, t) = small_net(activation);
            let net = view(&p, activation);
            let num = numerical_gradient_bruteforce(&net, x.view(), Targets::Labels(t.view()))?;
            let bp = net.gradient(x.view(), Targets::Labels(t.view()))?;
            for (a, b) in [(num.w1.iter(), bp.w1.iter()), (num.w2.iter(), bp.w2.iter())] {
                for (a, b) in a.zip(b) {
                    assert!((a - b).abs() < 1e-6, "{activation:?}: {a} vs {b}");
                }
            }
            for (a, b) in num.b1.iter().chain(num.b2.iter()).zip(bp.b1.iter().chain(bp.b2.iter())) {
                assert!((a - b).abs() < 1e-6, "{activation:?}: {a} vs {b}");
            }
        }
        Ok(())
    }

    #[test]
    fn shape_mismatch_is_named() {
        let (p, _, t) = small_net(Activation::Sigmoid);
        let x = Array2::<f64>::zeros((7, 6));
        let err = view(&p, Activation::Sigmoid).loss(x.view(), Targets::Labels(t.view())).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("loss: x has shape (7, 6) but W1 has shape (5, 4)"));
    }
}
