//! The book's numerical gradient of the two-layer net (chapter 4): central differences
//! (f(θ + h) − f(θ − h)) / 2h of the mean loss for every parameter, by brute force and
//! by the fast exact kernel that re-evaluates only what a probe moves.

use multiversion::multiversion;
use ndarray::{Array1, Array2, ArrayView2, Zip};
use rayon::prelude::*;

use super::activation::Activation;
use super::loss::cross_entropy_error;
use super::matmul::gemm_into;
use super::net::{bias_rows, Gradients, TwoLayerNet};
use super::{parallel, Targets};
use crate::error::{try_zeros2, KernelError, Result};

/// h of the central difference (f(x + h) − f(x − h)) / 2h, as in the book.
pub const H: f64 = 1e-4;

/// Which parameter a probe perturbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKey {
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
    numerical_gradient_bruteforce_with(net, x, t, &|| false)
}

/// [`numerical_gradient_bruteforce`] that calls `interrupt` (on the calling thread)
/// between chunks of parameters and stops with [`KernelError::Interrupted`] when it
/// returns true.
pub fn numerical_gradient_bruteforce_with(
    net: &TwoLayerNet<'_, f64>,
    x: ArrayView2<'_, f64>,
    t: Targets<'_, f64>,
    interrupt: &(dyn Fn() -> bool + Sync),
) -> Result<Gradients<f64>> {
    net.check("numerical_gradient", &x)?;
    let (n, _) = x.dim();
    let (_, _, k) = net.sizes();
    t.check("numerical_gradient", n, k)?;
    net.forward("numerical_gradient", x)?;
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
        (ParamKey::W1, owned.w1.len()),
        (ParamKey::B1, owned.b1.len()),
        (ParamKey::W2, owned.w2.len()),
        (ParamKey::B2, owned.b2.len()),
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
        // Chunks of about 10⁸ multiply-adds (tens of ms) between interrupt checks.
        let per_probe = 2 * n * (net.w1.len() + net.w2.len()).max(1);
        let chunk = (100_000_000 / per_probe).max(1);
        let mut values: Vec<f64> = Vec::with_capacity(len);
        for start in (0..len).step_by(chunk) {
            let span = start..(start + chunk).min(len);
            let part: Vec<f64> = parallel::install(|threads| {
                if threads > 1 {
                    span.into_par_iter()
                        .map_init(|| owned.clone(), |p, idx| probe(p, idx))
                        .collect()
                } else {
                    span.map(|idx| probe(&mut owned, idx)).collect()
                }
            });
            values.extend(part);
            if interrupt() {
                return Err(KernelError::Interrupted {
                    op: "numerical_gradient",
                });
            }
        }
        let out = match param {
            ParamKey::W1 => grads.w1.as_slice_mut(),
            ParamKey::B1 => grads.b1.as_slice_mut(),
            ParamKey::W2 => grads.w2.as_slice_mut(),
            ParamKey::B2 => grads.b2.as_slice_mut(),
        };
        if let Some(out) = out {
            out.copy_from_slice(&values);
        }
    }
    Ok(grads)
}

/// The parameter element `idx` (row-major) of `param` in an owned, standard-layout set.
fn param_cell(p: &mut Gradients<f64>, param: ParamKey, idx: usize) -> &mut f64 {
    let slice = match param {
        ParamKey::W1 => p.w1.as_slice_mut(),
        ParamKey::B1 => p.b1.as_slice_mut(),
        ParamKey::W2 => p.w2.as_slice_mut(),
        ParamKey::B2 => p.b2.as_slice_mut(),
    };
    // Owned arrays made by `to_owned`/`zeros` are in standard layout, and idx < len.
    match slice.and_then(|s| s.get_mut(idx)) {
        Some(cell) => cell,
        None => unreachable!("owned parameter arrays are contiguous and idx < len"),
    }
}

fn probe_loss(
    p: &Gradients<f64>,
    activation: Activation,
    x: ArrayView2<'_, f64>,
    t: Targets<'_, f64>,
) -> f64 {
    let net = TwoLayerNet {
        w1: p.w1.view(),
        b1: p.b1.view(),
        w2: p.w2.view(),
        b2: p.b2.view(),
        activation,
    };
    // Targets and memory (one forward pass) were checked up front, so the loss cannot
    // fail here.
    net.forward("numerical_gradient", x)
        .and_then(|f| cross_entropy_error(f.y.view(), t))
        .unwrap_or(f64::NAN)
}

/// The degree-8 Taylor polynomial of eᵘ. For |u| ≤ [`SMALL`] its truncation error is
/// below 6e-18·eᵘ, under half an ulp: as exact as `exp` itself, and a few FMAs.
#[inline(always)]
fn exp_small(u: f64) -> f64 {
    const C: [f64; 9] = INV_FACT;
    C[0] + u
        * (C[1]
            + u * (C[2]
                + u * (C[3] + u * (C[4] + u * (C[5] + u * (C[6] + u * (C[7] + u * C[8])))))))
}

/// eᵘ: the polynomial for small u, `exp` otherwise.
#[inline(always)]
fn exp_any(u: f64) -> f64 {
    if u.abs() <= SMALL {
        exp_small(u)
    } else {
        u.exp()
    }
}

/// Largest |u| for which [`exp_small`] is used.
const SMALL: f64 = 0.05;

/// 1/n! for n = 0..=8.
const INV_FACT: [f64; 9] = [
    1.0,
    1.0,
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40320.0,
];

/// ln(X / Y) for X, Y > 0 close together, as 2·atanh(q) with q = (X − Y)/(X + Y):
/// no cancellation between two logarithms. The odd series to q⁹ is exact to rounding
/// for |q| ≤ 0.01 (first omitted term q¹¹/11 < 1e-22); wider ratios take `ln`.
#[inline(always)]
fn ln_ratio(x: f64, y: f64) -> f64 {
    let q = (x - y) / (x + y);
    if q.abs() <= LN_SERIES_MAX {
        ln_series(q)
    } else {
        (x / y).ln()
    }
}

/// Largest |q| for which [`ln_series`] is used.
const LN_SERIES_MAX: f64 = 0.01;

/// 2·atanh(q) = ln((1 + q)/(1 − q)) by its odd series to q⁹.
#[inline(always)]
fn ln_series(q: f64) -> f64 {
    let q2 = q * q;
    2.0 * q * (1.0 + q2 * (1.0 / 3.0 + q2 * (1.0 / 5.0 + q2 * (1.0 / 7.0 + q2 * (1.0 / 9.0)))))
}

/// Per-row loss −Σₘ tₘ·ln(softmax(l)ₘ + δ) of one row of logits, the max subtracted
/// first (the book's formula, for the slow exact path).
fn row_loss(logits: &[f64], targets: &[(usize, f64)]) -> f64 {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| (v - max).exp()).sum();
    targets
        .iter()
        .map(|&(m, tm)| {
            -tm * (logits.get(m).map_or(f64::NAN, |&l| (l - max).exp()) / sum + DELTA).ln()
        })
        .sum()
}

const DELTA: f64 = super::loss::CROSS_ENTROPY_DELTA;

/// Reused per-thread buffers of [`Cache::w1_column`].
#[derive(Default)]
struct Workspace {
    acc: Vec<f64>,
    dp: Vec<f64>,
    dm: Vec<f64>,
    idx: Vec<usize>,
    plus: Vec<f64>,
    minus: Vec<f64>,
    diff: Vec<f64>,
}

/// Everything the probes share: the unperturbed forward pass, per row, and the
/// non-zero pattern of `x` and of the targets.
struct Cache {
    n: usize,
    d: usize,
    h: usize,
    k: usize,
    activation: Activation,
    a1: Array2<f64>,
    z1: Array2<f64>,
    /// e^(−a1), for σ(a1 + Δ) = 1 / (1 + e^(−a1)·e^(−Δ)).
    ea1: Array2<f64>,
    logits: Array2<f64>,
    /// E[r, k] = exp(logit[r, k] − max_k logit[r, k]).
    e: Array2<f64>,
    /// S[r] − E[r, k], summed directly (no cancellation when E[r, k] dominates).
    s_excl: Array2<f64>,
    /// Row r's non-zero x entries: x_idx/x_val[x_ptr[r]..x_ptr[r + 1]].
    x_ptr: Vec<usize>,
    x_idx: Vec<usize>,
    x_val: Vec<f64>,
    x_absmax: f64,
    /// Row r's non-zero targets (class, weight): labels give (label, 1).
    t_ptr: Vec<usize>,
    t_ent: Vec<(usize, f64)>,
}

impl Cache {
    fn new(
        net: &TwoLayerNet<'_, f64>,
        x: ArrayView2<'_, f64>,
        t: Targets<'_, f64>,
    ) -> Result<Self> {
        const OP: &str = "numerical_gradient";
        let (n, d) = x.dim();
        let (_, h, k) = net.sizes();
        let mut a1 = bias_rows(OP, net.b1, n)?;
        gemm_into(x, net.w1, a1.view_mut(), true);
        let mut z1 = try_zeros2(OP, n, h)?;
        Zip::from(&mut z1)
            .and(&a1)
            .for_each(|z, &a| *z = net.activation.apply(a));
        let ea1 = match net.activation {
            Activation::Sigmoid => {
                let mut ea1 = try_zeros2(OP, n, h)?;
                Zip::from(&mut ea1)
                    .and(&a1)
                    .for_each(|e, &a| *e = (-a).exp());
                ea1
            }
            Activation::Relu => Array2::zeros((0, 0)),
        };
        let mut logits = bias_rows(OP, net.b2, n)?;
        gemm_into(z1.view(), net.w2, logits.view_mut(), true);
        let mut e = try_zeros2(OP, n, k)?;
        let mut s_excl = try_zeros2(OP, n, k)?;
        for r in 0..n {
            let row = logits.row(r);
            let max = row.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            let mut er = e.row_mut(r);
            er.zip_mut_with(&row, |e, &l| *e = (l - max).exp());
            for c in 0..k {
                s_excl[[r, c]] = er
                    .iter()
                    .enumerate()
                    .filter(|&(o, _)| o != c)
                    .map(|(_, &v)| v)
                    .sum();
            }
        }
        let mut x_ptr = Vec::with_capacity(n + 1);
        let (mut x_idx, mut x_val) = (Vec::new(), Vec::new());
        let mut x_absmax = 0.0_f64;
        x_ptr.push(0);
        for row in x.rows() {
            for (i, &v) in row.iter().enumerate() {
                // Rows with x[r, i] = 0 do not see W1[i, ·] at all: skip them.
                if v != 0.0 {
                    x_idx.push(i);
                    x_val.push(v);
                    x_absmax = x_absmax.max(v.abs());
                }
            }
            x_ptr.push(x_idx.len());
        }
        let mut t_ptr = Vec::with_capacity(n + 1);
        let mut t_ent = Vec::new();
        t_ptr.push(0);
        for r in 0..n {
            match t {
                Targets::Labels(labels) => t_ent.push((labels[r] as usize, 1.0)),
                Targets::OneHot(oh) => {
                    // 0·log(y + δ) = 0 exactly (y + δ > 0), so zero weights drop out.
                    t_ent.extend(
                        oh.row(r)
                            .iter()
                            .enumerate()
                            .filter(|&(_, &w)| w != 0.0)
                            .map(|(c, &w)| (c, w)),
                    )
                }
            }
            t_ptr.push(t_ent.len());
        }
        Ok(Cache {
            n,
            d,
            h,
            k,
            activation: net.activation,
            a1,
            z1,
            ea1,
            logits,
            e,
            s_excl,
            x_ptr,
            x_idx,
            x_val,
            x_absmax,
            t_ptr,
            t_ent,
        })
    }

    fn targets(&self, r: usize) -> &[(usize, f64)] {
        &self.t_ent[self.t_ptr[r]..self.t_ptr[r + 1]]
    }

    fn x_row(&self, r: usize) -> (&[usize], &[f64]) {
        let span = self.x_ptr[r]..self.x_ptr[r + 1];
        (&self.x_idx[span.clone()], &self.x_val[span])
    }

    /// Column j of ∂f/∂W1 (entries 0..d) and ∂f/∂b1[j] (entry d), summed row by row:
    /// acc[i] = Σ_r (L_r(θ + h) − L_r(θ − h)) over the rows where x[r, i] ≠ 0.
    #[inline(always)]
    fn w1_column(&self, net: &TwoLayerNet<'_, f64>, j: usize, ws: &mut Workspace) -> Vec<f64> {
        let mut acc = std::mem::take(&mut ws.acc);
        let mut dp = std::mem::take(&mut ws.dp);
        let mut dm = std::mem::take(&mut ws.dm);
        let (d, k) = (self.d, self.k);
        acc.clear();
        acc.resize(d + 1, 0.0);
        dp.clear();
        dm.clear();
        // The perturbations the book applies, tmp + h and tmp − h, as they round.
        for &w in net.w1.column(j).iter().chain(std::iter::once(&net.b1[j])) {
            dp.push((w + H) - w);
            dm.push((w - H) - w);
        }
        let w2 = net.w2.row(j);
        let w2max = w2.fold(0.0_f64, |m, &v| m.max(v.abs()));
        let dmax = dp
            .iter()
            .chain(dm.iter())
            .fold(0.0_f64, |m, &v| m.max(v.abs()));
        let xmax = self.x_absmax.max(1.0);
        // |Δa1| ≤ dmax·xmax and |Δz1| ≤ |Δa1| (σ' ≤ 1/4, relu' ≤ 1): within SMALL every
        // exponential below may use the polynomial.
        let fast = (dmax * xmax <= SMALL)
            && (dmax * xmax * w2max <= SMALL)
            && (dmax * xmax * w2max).is_finite();
        let mut moments: [f64; 9];
        let mut logits = vec![0.0; k];
        for r in 0..self.n {
            let (idx, val) = self.x_row(r);
            let entries = idx
                .iter()
                .copied()
                .zip(val.iter().copied())
                .chain(std::iter::once((d, 1.0)));
            let targets = self.targets(r);
            if fast {
                // S(s) = Σₖ E_k·e^(s·w_k) = Σₙ sⁿ·Mₙ with Mₙ = Σₖ E_k·w_kⁿ/n!.
                moments = [0.0; 9];
                for (&e, &w) in self.e.row(r).iter().zip(w2.iter()) {
                    let mut p = e; // E_k·w_kⁿ, n = 0, 1, ...
                    for m in moments.iter_mut() {
                        *m += p;
                        p *= w;
                    }
                }
                for (m, f) in moments.iter_mut().zip(INV_FACT) {
                    *m *= f;
                }
                let mo = moments;
                let sum_at = |s: f64| {
                    mo[0]
                        + s * (mo[1]
                            + s * (mo[2]
                                + s * (mo[3]
                                    + s * (mo[4]
                                        + s * (mo[5] + s * (mo[6] + s * (mo[7] + s * mo[8])))))))
                };
                // The row's probes as flat arrays (branch-free passes the compiler can
                // vectorise): first Δa1 for θ + h and θ − h, then Δz1 in place.
                let (bi, bp, bm, diffs) = (&mut ws.idx, &mut ws.plus, &mut ws.minus, &mut ws.diff);
                bi.clear();
                bp.clear();
                bm.clear();
                for (i, v) in entries {
                    bi.push(i);
                    bp.push(dp[i] * v);
                    bm.push(dm[i] * v);
                }
                let (a, z) = (self.a1[[r, j]], self.z1[[r, j]]);
                match self.activation {
                    Activation::Sigmoid => {
                        let ea = self.ea1[[r, j]];
                        for v in bp.iter_mut().chain(bm.iter_mut()) {
                            *v = 1.0 / (1.0 + ea * exp_small(-*v)) - z;
                        }
                    }
                    Activation::Relu => {
                        for v in bp.iter_mut().chain(bm.iter_mut()) {
                            *v = (a + *v).max(0.0) - z;
                        }
                    }
                }
                diffs.clear();
                diffs.resize(bi.len(), 0.0);
                for &(m, tm) in targets {
                    let (em, wm) = (self.e[[r, m]], w2[m]);
                    let mut wide = false;
                    for ((df, &sp), &sm) in diffs.iter_mut().zip(bp.iter()).zip(bm.iter()) {
                        let (s_p, s_m) = (sum_at(sp), sum_at(sm));
                        // L = −t·ln(N/S + δ) = −t·ln(P/S) with P = N + δ·S.
                        let pp = em * exp_small(sp * wm) + DELTA * s_p;
                        let pm = em * exp_small(sm * wm) + DELTA * s_m;
                        let (num, den) = (pp * s_m, pm * s_p);
                        let q = (num - den) / (num + den);
                        wide |= q.abs() > LN_SERIES_MAX;
                        *df -= tm * ln_series(q);
                    }
                    if wide {
                        // Rare wide ratios: redo those lanes with `ln`.
                        for ((df, &sp), &sm) in diffs.iter_mut().zip(bp.iter()).zip(bm.iter()) {
                            let (s_p, s_m) = (sum_at(sp), sum_at(sm));
                            let pp = em * exp_small(sp * wm) + DELTA * s_p;
                            let pm = em * exp_small(sm * wm) + DELTA * s_m;
                            let (num, den) = (pp * s_m, pm * s_p);
                            let q = (num - den) / (num + den);
                            if q.abs() > LN_SERIES_MAX {
                                *df += tm * ln_series(q) - tm * ln_ratio(num, den);
                            }
                        }
                    }
                }
                for (&i, &df) in bi.iter().zip(diffs.iter()) {
                    acc[i] += df;
                }
            } else {
                // Exact but slower: every perturbed row of logits recomputed in full.
                for (i, v) in entries {
                    let mut loss_at = |delta: f64| {
                        let dz = self.dz_exact(r, j, delta);
                        for (c, l) in logits.iter_mut().enumerate() {
                            *l = self.logits[[r, c]] + dz * w2[c];
                        }
                        row_loss(&logits, targets)
                    };
                    let diff = loss_at(dp[i] * v) - loss_at(dm[i] * v);
                    acc[i] += diff;
                }
            }
        }
        let column = acc.clone();
        (ws.acc, ws.dp, ws.dm) = (acc, dp, dm);
        column
    }

    fn dz_exact(&self, r: usize, j: usize, delta: f64) -> f64 {
        self.activation.apply(self.a1[[r, j]] + delta) - self.z1[[r, j]]
    }

    /// Σ_r (L_r(θ + h) − L_r(θ − h)) for W2[j, k] (j < h: logit k moves by Δ·z1[r, j])
    /// or b2[k] (j = h: logit k moves by Δ).
    fn w2_entry(&self, j: usize, c: usize, w: f64) -> f64 {
        let (dp, dm) = ((w + H) - w, (w - H) - w);
        let mut total = 0.0;
        for r in 0..self.n {
            let z = if j < self.h { self.z1[[r, j]] } else { 1.0 };
            if z == 0.0 {
                continue;
            }
            let ec = self.e[[r, c]];
            let (ep, em) = (ec * exp_any(dp * z), ec * exp_any(dm * z));
            let (s_p, s_m) = (self.s_excl[[r, c]] + ep, self.s_excl[[r, c]] + em);
            let mut diff = 0.0;
            for &(m, tm) in self.targets(r) {
                let (np, nm) = if m == c {
                    (ep, em)
                } else {
                    (self.e[[r, m]], self.e[[r, m]])
                };
                let pp = np + DELTA * s_p;
                let pm = nm + DELTA * s_m;
                diff -= tm * ln_ratio(pp * s_m, pm * s_p);
            }
            total += diff;
        }
        total
    }
}

/// [`Cache::w1_column`] compiled for AVX-512 and AVX2 (its row loops vectorise).
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn w1_column(cache: &Cache, net: &TwoLayerNet<'_, f64>, j: usize, ws: &mut Workspace) -> Vec<f64> {
    cache.w1_column(net, j, ws)
}

/// The book's numerical gradient, exactly (same h = 1e-4, same perturbed points
/// `tmp + h` / `tmp − h`, same loss with δ = 1e-7), without a forward pass per probe.
///
/// Perturbing W1[i, j] or `b1[j]` moves only hidden unit j, and only in the rows where
/// x[r, i] ≠ 0; perturbing W2[j, k] or `b2[k]` moves only logit k. Each probe re-evaluates
/// just those rows' losses from the cached forward pass — O(k) per row, exponentials by
/// a Taylor polynomial exact to rounding — and sums the per-row differences
/// L_r(θ + h) − L_r(θ − h) instead of subtracting two totals. g = Σ_r diff / n / 2h.
///
/// x: (n, d), targets one-hot (n, k) or labels (n,). Parallel over hidden units; between
/// chunks of units it calls `interrupt` (on the calling thread) and stops with
/// [`KernelError::Interrupted`] when that returns true. Errors: shapes, labels, and
/// non-finite inputs.
pub fn numerical_gradient_fast(
    net: &TwoLayerNet<'_, f64>,
    x: ArrayView2<'_, f64>,
    t: Targets<'_, f64>,
    interrupt: &(dyn Fn() -> bool + Sync),
) -> Result<Gradients<f64>> {
    const OP: &str = "numerical_gradient";
    net.check(OP, &x)?;
    let (n, _) = x.dim();
    let (d, h, k) = net.sizes();
    t.check(OP, n, k)?;
    let finite = |name: &str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(KernelError::value(
                OP,
                format!("{name} contains NaN or infinity"),
            ))
        }
    };
    finite("x", x.iter().all(|v| v.is_finite()))?;
    finite("W1", net.w1.iter().all(|v| v.is_finite()))?;
    finite("b1", net.b1.iter().all(|v| v.is_finite()))?;
    finite("W2", net.w2.iter().all(|v| v.is_finite()))?;
    finite("b2", net.b2.iter().all(|v| v.is_finite()))?;
    if let Targets::OneHot(oh) = t {
        finite("t", oh.iter().all(|v| v.is_finite()))?;
    }
    let cache = Cache::new(net, x, t)?;
    let scale = |sum: f64| (sum / n as f64) / (2.0 * H);
    let mut grads = Gradients {
        w1: Array2::zeros((d, h)),
        b1: Array1::zeros(h),
        w2: Array2::zeros((h, k)),
        b2: Array1::zeros(k),
    };
    // About 2·10⁶ row evaluations per chunk (tens of ms) between interrupt checks.
    let per_unit = cache.x_idx.len() + n;
    let chunk = (2_000_000 / per_unit.max(1)).clamp(1, h.max(1));
    for start in (0..h).step_by(chunk) {
        let units = start..(start + chunk).min(h);
        let cols: Vec<Vec<f64>> = parallel::install(|threads| {
            let column = |ws: &mut Workspace, j: usize| w1_column(&cache, net, j, ws);
            if threads > 1 {
                units
                    .clone()
                    .into_par_iter()
                    .map_init(Workspace::default, column)
                    .collect()
            } else {
                let mut ws = Workspace::default();
                units.clone().map(|j| column(&mut ws, j)).collect()
            }
        });
        for (j, col) in units.zip(cols) {
            for (i, &sum) in col.iter().take(d).enumerate() {
                grads.w1[[i, j]] = scale(sum);
            }
            grads.b1[j] = scale(col[d]);
        }
        if interrupt() {
            return Err(KernelError::Interrupted { op: OP });
        }
    }
    // W2 and b2 (row h of the list stands for b2): one O(n) sum per entry.
    let entries: Vec<f64> = parallel::install(|threads| {
        let entry = |idx: usize| {
            let (j, c) = (idx / k, idx % k);
            let w = if j < h { net.w2[[j, c]] } else { net.b2[c] };
            scale(cache.w2_entry(j, c, w))
        };
        if threads > 1 {
            (0..(h + 1) * k).into_par_iter().map(entry).collect()
        } else {
            (0..(h + 1) * k).map(entry).collect()
        }
    });
    for (idx, g) in entries.into_iter().enumerate() {
        let (j, c) = (idx / k, idx % k);
        if j < h {
            grads.w2[[j, c]] = g;
        } else {
            grads.b2[c] = g;
        }
    }
    Ok(grads)
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
        (
            Gradients { w1, b1, w2, b2 },
            x,
            arr1(&[0, 1, 2, 2, 1, 0, 1]),
        )
    }

    fn view(p: &Gradients<f64>, activation: Activation) -> TwoLayerNet<'_, f64> {
        TwoLayerNet {
            w1: p.w1.view(),
            b1: p.b1.view(),
            w2: p.w2.view(),
            b2: p.b2.view(),
            activation,
        }
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
            for (a, b) in num
                .b1
                .iter()
                .chain(num.b2.iter())
                .zip(bp.b1.iter().chain(bp.b2.iter()))
            {
                assert!((a - b).abs() < 1e-6, "{activation:?}: {a} vs {b}");
            }
        }
        Ok(())
    }

    #[test]
    fn shape_mismatch_is_named() {
        let (p, _, t) = small_net(Activation::Sigmoid);
        let x = Array2::<f64>::zeros((7, 6));
        let err = view(&p, Activation::Sigmoid)
            .loss(x.view(), Targets::Labels(t.view()))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("loss: x has shape (7, 6) but W1 has shape (5, 4)")
        );
    }
    fn assert_close(what: &str, a: &Gradients<f64>, b: &Gradients<f64>, tol: f64) {
        let pairs = [
            (
                a.w1.iter().collect::<Vec<_>>(),
                b.w1.iter().collect::<Vec<_>>(),
            ),
            (a.b1.iter().collect(), b.b1.iter().collect()),
            (a.w2.iter().collect(), b.w2.iter().collect()),
            (a.b2.iter().collect(), b.b2.iter().collect()),
        ];
        for (pa, pb) in pairs {
            for (x, y) in pa.into_iter().zip(pb) {
                assert!((x - y).abs() <= tol, "{what}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn fast_equals_bruteforce_for_labels_and_one_hot() -> Result<()> {
        for activation in [Activation::Sigmoid, Activation::Relu] {
            let (p, x, t) = small_net(activation);
            let net = view(&p, activation);
            let one_hot =
                Array2::from_shape_fn((7, 3), |(r, c)| if t[r] as usize == c { 1.0 } else { 0.0 });
            for targets in [Targets::Labels(t.view()), Targets::OneHot(one_hot.view())] {
                let brute = numerical_gradient_bruteforce(&net, x.view(), targets)?;
                let fast = numerical_gradient_fast(&net, x.view(), targets, &|| false)?;
                assert_close(&format!("{activation:?}"), &fast, &brute, 1e-10);
            }
        }
        Ok(())
    }

    #[test]
    fn fast_exact_path_for_large_inputs_and_soft_targets() -> Result<()> {
        // |x| up to 300 puts h·x outside the polynomial's range: the exact path runs.
        let (p, x, _) = small_net(Activation::Sigmoid);
        let x = x.mapv(|v| v * 300.0);
        let soft = Array2::from_shape_fn((7, 3), |(r, c)| ((r + c) % 3) as f64 / 3.0);
        for activation in [Activation::Sigmoid, Activation::Relu] {
            let net = view(&p, activation);
            let brute =
                numerical_gradient_bruteforce(&net, x.view(), Targets::OneHot(soft.view()))?;
            let fast =
                numerical_gradient_fast(&net, x.view(), Targets::OneHot(soft.view()), &|| false)?;
            assert_close(&format!("{activation:?}"), &fast, &brute, 1e-9);
        }
        Ok(())
    }

    #[test]
    fn zero_columns_give_exact_zeros_and_interrupt_stops() -> Result<()> {
        let (p, mut x, t) = small_net(Activation::Sigmoid);
        x.column_mut(2).fill(0.0);
        let net = view(&p, Activation::Sigmoid);
        let g = numerical_gradient_fast(&net, x.view(), Targets::Labels(t.view()), &|| false)?;
        assert!(g.w1.row(2).iter().all(|&v| v == 0.0));
        assert!(g.w1.row(1).iter().all(|&v| v != 0.0));
        let err =
            numerical_gradient_fast(&net, x.view(), Targets::Labels(t.view()), &|| true).err();
        assert_eq!(
            err,
            Some(KernelError::Interrupted {
                op: "numerical_gradient"
            })
        );
        x[[0, 0]] = f64::NAN;
        let err =
            numerical_gradient_fast(&net, x.view(), Targets::Labels(t.view()), &|| false).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("numerical_gradient: x contains NaN or infinity")
        );
        Ok(())
    }

    #[test]
    fn taylor_helpers_match_libm() {
        for u in [-0.05, -1e-3, -1e-9, 0.0, 3e-5, 0.02, 0.05] {
            assert!(
                (exp_small(u) - u.exp()).abs() <= 2.0 * f64::EPSILON * u.exp(),
                "{u}"
            );
        }
        for (x, y) in [(1.0_f64, 1.0001_f64), (0.3, 0.29), (2.0, 1.0)] {
            // x − y is exact here (Sterbenz), so ln_1p gives the reference to rounding.
            let want = ((x - y) / y).ln_1p();
            assert!(
                (ln_ratio(x, y) - want).abs() <= 1e-14 * want.abs(),
                "{x} {y}"
            );
        }
    }
}
