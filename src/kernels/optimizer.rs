//! The parameter update rules of the book's chapter 6 (DLFS `common/optimizer.py`) for
//! the fused training step: the same formulas operation by operation, scalars computed
//! in f64 and rounded to T as NumPy does.

use multiversion::multiversion;
use ndarray::{ArrayD, ArrayViewD};

use super::activation::map2;
use super::Float;
use crate::error::{KernelError, Result};

/// `a + alpha·b` elementwise, rounded as NumPy's `a + alpha * b` (the product, then the
/// sum: no fused multiply-add; alpha rounded to T first, as NumPy takes a Python float):
/// the book's weight-decay gradient dW + λ·W in one pass over the three arrays. Same
/// shapes, any strides.
pub fn add_scaled<T: Float>(
    a: ArrayViewD<'_, T>,
    b: ArrayViewD<'_, T>,
    alpha: f64,
) -> Result<ArrayD<T>> {
    let alpha = T::lit(alpha);
    map2("add_scaled", ("a", "b"), a, b, move |x, y| x + alpha * y)
}

/// The largest |a| over a's elements, or +∞ when one is not finite (±∞ or NaN); 0 for
/// an empty array. A bound that tells whether a weight-decay term Σw² can overflow
/// without summing it (n·max|w|² below the largest float: it cannot, in any order).
pub fn max_abs<T: Float>(a: ArrayViewD<'_, T>) -> T {
    match a.as_slice_memory_order() {
        Some(s) => max_abs_slice(s),
        None => a.iter().fold(T::zero(), |m, &x| {
            if x.is_finite() {
                m.max(x.abs())
            } else {
                T::infinity()
            }
        }),
    }
}

/// [`max_abs`] of a slice, in one pass: lanes of maxima that a NaN takes over (and
/// keeps: no later `v > NaN`), then +∞ for a NaN or an infinity found.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn max_abs_slice<T: Float>(s: &[T]) -> T {
    let larger = |m: T, x: T| {
        let v = x.abs();
        if v > m || v.is_nan() {
            v
        } else {
            m
        }
    };
    let mut big = [T::zero(); 16];
    let chunks = s.chunks_exact(16);
    let rest = chunks.remainder();
    for ch in chunks {
        for (m, &x) in big.iter_mut().zip(ch) {
            *m = larger(*m, x);
        }
    }
    let top = big.iter().chain(rest).fold(T::zero(), |m, &x| larger(m, x));
    if top.is_finite() {
        top
    } else {
        T::infinity()
    }
}

/// ε added to √h (AdaGrad, RMSprop) and √v (Adam), as the book.
pub const EPS: f64 = 1e-7;

/// A parameter update rule of DLFS `common/optimizer.py` (same names and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// W ← W − lr·g.
    Sgd { lr: f64 },
    /// v ← momentum·v − lr·g; W ← W + v.
    Momentum { lr: f64, momentum: f64 },
    /// v ← momentum·v − lr·g; W ← W + momentum²·v − (1 + momentum)·lr·g.
    Nesterov { lr: f64, momentum: f64 },
    /// h ← h + g²; W ← W − lr·g / (√h + 1e-7).
    AdaGrad { lr: f64 },
    /// h ← ρ·h + (1 − ρ)·g²; W ← W − lr·g / (√h + 1e-7).
    RmsProp { lr: f64, decay_rate: f64 },
    /// m ← m + (1 − β₁)(g − m); v ← v + (1 − β₂)(g² − v);
    /// W ← W − lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ)·m / (√v + 1e-7).
    Adam { lr: f64, beta1: f64, beta2: f64 },
}

impl Optimizer {
    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            Optimizer::Sgd { lr }
            | Optimizer::AdaGrad { lr }
            | Optimizer::Momentum { lr, .. }
            | Optimizer::Nesterov { lr, .. }
            | Optimizer::RmsProp { lr, .. }
            | Optimizer::Adam { lr, .. } => lr,
        }
    }

    /// The same rule with learning rate `lr`.
    pub fn with_lr(self, lr: f64) -> Self {
        match self {
            Optimizer::Sgd { .. } => Optimizer::Sgd { lr },
            Optimizer::AdaGrad { .. } => Optimizer::AdaGrad { lr },
            Optimizer::Momentum { momentum, .. } => Optimizer::Momentum { lr, momentum },
            Optimizer::Nesterov { momentum, .. } => Optimizer::Nesterov { lr, momentum },
            Optimizer::RmsProp { decay_rate, .. } => Optimizer::RmsProp { lr, decay_rate },
            Optimizer::Adam { beta1, beta2, .. } => Optimizer::Adam { lr, beta1, beta2 },
        }
    }

    /// `new` in place of this rule (a schedule changing the learning rate between runs,
    /// say), after checking it is the same rule (its state would not fit another) with
    /// valid rates.
    pub fn replaced_by(&self, op: &'static str, new: Optimizer) -> Result<Optimizer> {
        if !new.same_rule(self) {
            return Err(KernelError::value(
                op,
                format!("the optimizer must stay {self:?}-like, got {new:?}"),
            ));
        }
        new.check(op)?;
        Ok(new)
    }

    /// Whether `other` is the same rule (possibly with other hyperparameters).
    pub fn same_rule(&self, other: &Optimizer) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    /// How many state arrays per parameter: 0 (SGD), 1 (v or h), 2 (Adam's m, v).
    pub fn state_slots(&self) -> usize {
        match self {
            Optimizer::Sgd { .. } => 0,
            Optimizer::Adam { .. } => 2,
            _ => 1,
        }
    }

    /// Errors unless `sets` is the number of state sets this rule keeps.
    pub fn check_state_sets(&self, op: &'static str, sets: usize) -> Result<()> {
        if sets == self.state_slots() {
            return Ok(());
        }
        Err(KernelError::value(
            op,
            format!(
                "the optimizer needs {} state sets, got {sets}",
                self.state_slots()
            ),
        ))
    }

    /// Errors unless lr > 0 and the other rates lie in [0, 1).
    pub fn check(&self, op: &'static str) -> Result<()> {
        let (lr, rates): (f64, Vec<(&str, f64)>) = match *self {
            Optimizer::Sgd { lr } | Optimizer::AdaGrad { lr } => (lr, vec![]),
            Optimizer::Momentum { lr, momentum } | Optimizer::Nesterov { lr, momentum } => {
                (lr, vec![("momentum", momentum)])
            }
            Optimizer::RmsProp { lr, decay_rate } => (lr, vec![("decay_rate", decay_rate)]),
            Optimizer::Adam { lr, beta1, beta2 } => (lr, vec![("beta1", beta1), ("beta2", beta2)]),
        };
        if !(lr.is_finite() && lr > 0.0) {
            return Err(KernelError::value(
                op,
                format!("lr must be a positive number, got {lr}"),
            ));
        }
        for (name, r) in rates {
            if !(0.0..1.0).contains(&r) {
                return Err(KernelError::value(
                    op,
                    format!("{name} must be in [0, 1), got {r}"),
                ));
            }
        }
        Ok(())
    }

    /// Updates `p` in place from `g`; `s0`/`s1` are the state arrays (empty when unused);
    /// `iter` is Adam's step count t after this step's increment.
    #[inline(always)]
    fn update<T: Float>(&self, p: &mut [T], g: &[T], s0: &mut [T], s1: &mut [T], iter: u64) {
        let c = T::lit;
        match *self {
            Optimizer::Sgd { lr } => {
                let lr = c(lr);
                for (p, &g) in p.iter_mut().zip(g) {
                    *p = *p - lr * g;
                }
            }
            Optimizer::Momentum { lr, momentum } => {
                let (lr, mu) = (c(lr), c(momentum));
                for ((p, &g), v) in p.iter_mut().zip(g).zip(s0.iter_mut()) {
                    *v = *v * mu - lr * g;
                    *p = *p + *v;
                }
            }
            Optimizer::Nesterov { lr, momentum } => {
                let (lr_t, mu, mu2, step) = (
                    c(lr),
                    c(momentum),
                    c(momentum * momentum),
                    c((1.0 + momentum) * lr),
                );
                for ((p, &g), v) in p.iter_mut().zip(g).zip(s0.iter_mut()) {
                    *v = *v * mu - lr_t * g;
                    *p = *p + mu2 * *v;
                    *p = *p - step * g;
                }
            }
            Optimizer::AdaGrad { lr } => {
                let (lr, eps) = (c(lr), c(EPS));
                for ((p, &g), h) in p.iter_mut().zip(g).zip(s0.iter_mut()) {
                    *h = *h + g * g;
                    *p = *p - lr * g / (h.sqrt() + eps);
                }
            }
            Optimizer::RmsProp { lr, decay_rate } => {
                let (lr, eps, rho, one_m) = (c(lr), c(EPS), c(decay_rate), c(1.0 - decay_rate));
                for ((p, &g), h) in p.iter_mut().zip(g).zip(s0.iter_mut()) {
                    *h = *h * rho;
                    *h = *h + one_m * g * g;
                    *p = *p - lr * g / (h.sqrt() + eps);
                }
            }
            Optimizer::Adam { lr, beta1, beta2 } => {
                // Bias correction folded into the step size, in f64 as the book's Python.
                let t = iter as f64;
                let lr_t = c(lr * (1.0 - beta2.powf(t)).sqrt() / (1.0 - beta1.powf(t)));
                let (b1, b2, eps) = (c(1.0 - beta1), c(1.0 - beta2), c(EPS));
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(s0.iter_mut()).zip(s1.iter_mut()) {
                    *m = *m + b1 * (g - *m);
                    *v = *v + b2 * (g * g - *v);
                    *p = *p - lr_t * *m / (v.sqrt() + eps);
                }
            }
        }
    }
}

/// The optimizer's update of one parameter, compiled for AVX-512 and AVX2.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(crate) fn apply<T: Float>(
    opt: Optimizer,
    p: &mut [T],
    g: &[T],
    s0: &mut [T],
    s1: &mut [T],
    iter: u64,
) {
    opt.update(p, g, s0, s1, iter);
}
