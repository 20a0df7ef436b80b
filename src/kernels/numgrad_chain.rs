//! The numerical gradient of a chain of fully connected layers (the book's
//! `MultiLayerNet` and `MultiLayerNetExtend`, chapter 6): Affine → [batch norm] →
//! activation → [dropout mask] → … → Affine → softmax cross-entropy, plus the weight
//! decay ½λ·ΣW². Central differences (f(θ + h) − f(θ − h)) / 2h for every parameter,
//! by brute force (the definition) or by re-evaluating only what a probe moves.
//!
//! A probe of `W_l[i, j]`, `b_l[j]`, `γ_l[j]` or `β_l[j]` changes column j of layer l alone:
//! that column is recomputed (its batch norm over the batch, the activation, the
//! mask), the next layer's affine output gets the rank-one update Δ·W_{l+1}[j, ·], and
//! the layers after it run on the rows that changed (every row once a batch norm lies
//! ahead: it couples the rows). The loss moves by the change of those rows' terms, and
//! the weight decay by ½λ((w + h)² − w²). Probes that move nothing (a W1 row whose input
//! is 0 in every row of the batch) cost nothing. The result equals brute force up to
//! rounding (≈1e-12).

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::activation::Activation;
use super::loss::CROSS_ENTROPY_DELTA;
use super::matmul::gemm_into;
use super::numgrad::H;
use super::softmax::softmax_row;
use super::{parallel, Targets};
use crate::error::{fmt_shape, try_zeros2, KernelError, Result};

const OP: &str = "numerical_gradient";

/// ε under the square root of the batch norm's variance (the book's `10e-7`).
pub const BATCH_NORM_EPS: f64 = 10e-7;

/// One Affine layer of the chain, and what follows it before the next one.
#[derive(Debug, Clone, Copy)]
pub struct ChainLayer<'a> {
    /// W (fan_in, fan_out) and b (fan_out).
    pub w: ArrayView2<'a, f64>,
    pub b: ArrayView1<'a, f64>,
    /// Batch normalisation in training mode (the batch's statistics) with (γ, β).
    pub batch_norm: Option<(ArrayView1<'a, f64>, ArrayView1<'a, f64>)>,
    /// Dropout in training mode: the (n, fan_out) 0/1 mask multiplying the activations.
    pub mask: Option<ArrayView2<'a, f64>>,
}

/// A net of [`ChainLayer`]s: the activation follows every layer but the last, whose
/// scores go into softmax with cross-entropy (δ = 1e-7, the batch mean).
#[derive(Debug, Clone)]
pub struct Chain<'a> {
    pub layers: Vec<ChainLayer<'a>>,
    pub activation: Activation,
    /// λ of the weight decay ½λ·Σ‖W‖² added to the loss.
    pub weight_decay: f64,
}

/// The gradient of one layer's parameters; γ and β when it has a batch norm.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerGradient {
    pub w: Array2<f64>,
    pub b: Array1<f64>,
    pub gamma: Option<Array1<f64>>,
    pub beta: Option<Array1<f64>>,
}

/// Which parameter of a layer a probe moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    W,
    B,
    Gamma,
    Beta,
}

impl Chain<'_> {
    /// Errors unless the layers chain, x (n, d) fits, and the targets are (n, k).
    pub fn check(&self, x: ArrayView2<'_, f64>, t: Targets<'_, f64>) -> Result<()> {
        let (n, d) = x.dim();
        if self.layers.is_empty() {
            return Err(KernelError::shape(OP, "the net has no layers"));
        }
        if n == 0 {
            return Err(KernelError::shape(OP, "x has no rows"));
        }
        let mut fan_in = d;
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            let name = l + 1;
            let h = layer.w.ncols();
            if layer.w.nrows() != fan_in || layer.b.len() != h || h == 0 {
                return Err(KernelError::shape(
                    OP,
                    format!(
                        "W{name} has shape {} and b{name} {}; need ({fan_in}, h) and (h,), h > 0",
                        fmt_shape(layer.w.shape()),
                        fmt_shape(layer.b.shape()),
                    ),
                ));
            }
            if l == last && (layer.batch_norm.is_some() || layer.mask.is_some()) {
                return Err(KernelError::shape(
                    OP,
                    "the output layer takes no batch norm and no dropout mask",
                ));
            }
            if let Some((gamma, beta)) = layer.batch_norm {
                if gamma.len() != h || beta.len() != h {
                    return Err(KernelError::shape(
                        OP,
                        format!(
                            "gamma{name} has shape {} and beta{name} {}; need ({h},)",
                            fmt_shape(gamma.shape()),
                            fmt_shape(beta.shape()),
                        ),
                    ));
                }
            }
            if let Some(mask) = layer.mask {
                if mask.dim() != (n, h) {
                    return Err(KernelError::shape(
                        OP,
                        format!(
                            "the dropout mask after layer {name} has shape {}; need ({n}, {h})",
                            fmt_shape(mask.shape())
                        ),
                    ));
                }
            }
            fan_in = h;
        }
        t.check(OP, n, fan_in)
    }

    fn last(&self) -> usize {
        self.layers.len() - 1
    }

    /// Whether any layer from `l` on normalises over the batch.
    fn batch_norm_from(&self, l: usize) -> bool {
        self.layers[l..].iter().any(|la| la.batch_norm.is_some())
    }

    /// Hidden layer `l` on `rows` (m of them, all when `rows` is None) of its affine
    /// output `a` (m × h, row-major) into `z` (m × h); `col`/`out` are scratch.
    fn hidden_rows(
        &self,
        l: usize,
        a: &[f64],
        rows: Option<&[usize]>,
        z: &mut [f64],
        scratch: &mut Scratch,
    ) {
        let layer = &self.layers[l];
        let h = layer.w.ncols();
        let m = a.len() / h;
        let row = |i: usize| rows.map_or(i, |rows| rows[i]);
        for c in 0..h {
            scratch.col.clear();
            scratch.col.extend((0..m).map(|i| a[i * h + c]));
            scratch.mask.clear();
            if let Some(mask) = layer.mask {
                scratch.mask.extend((0..m).map(|i| mask[[row(i), c]]));
            }
            scratch.out.resize(m, 0.0);
            hidden_column(
                &scratch.col,
                layer.batch_norm.map(|(g, b)| (g[c], b[c])),
                self.activation,
                layer.mask.map(|_| &scratch.mask[..]),
                &mut scratch.out,
            );
            for (i, &v) in scratch.out.iter().enumerate() {
                z[i * h + c] = v;
            }
        }
    }

    /// The affine output z·W + b of layer `l` for the m rows of `z` (m × fan_in).
    fn affine_rows(&self, l: usize, z: &[f64], out: &mut Vec<f64>) {
        let layer = &self.layers[l];
        let (d, h) = layer.w.dim();
        let m = z.len() / d;
        out.clear();
        for _ in 0..m {
            out.extend(layer.b.iter());
        }
        if let (Ok(zv), Ok(ov)) = (
            ArrayView2::from_shape((m, d), z),
            ArrayViewMut2::from_shape((m, h), &mut out[..]),
        ) {
            gemm_into(zv, layer.w, ov, true);
        }
    }
}

/// Column j of a hidden layer, from its affine output `a` (m) to the layer's output:
/// batch norm with (γ, β) over the m values, the activation, the mask.
fn hidden_column(
    a: &[f64],
    batch_norm: Option<(f64, f64)>,
    activation: Activation,
    mask: Option<&[f64]>,
    z: &mut [f64],
) {
    match batch_norm {
        Some((gamma, beta)) => {
            let n = a.len() as f64;
            let mu = a.iter().sum::<f64>() / n;
            let var = a.iter().map(|&v| (v - mu) * (v - mu)).sum::<f64>() / n;
            let std = (var + BATCH_NORM_EPS).sqrt();
            for (z, &v) in z.iter_mut().zip(a) {
                *z = activation.apply(gamma * ((v - mu) / std) + beta);
            }
        }
        None => {
            for (z, &v) in z.iter_mut().zip(a) {
                *z = activation.apply(v);
            }
        }
    }
    if let Some(mask) = mask {
        for (z, &m) in z.iter_mut().zip(mask) {
            *z *= m;
        }
    }
}

/// Row r's loss term −Σₘ tₘ·ln(softmax(scores)ₘ + δ); `y` is scratch of the width.
fn row_loss(scores: &[f64], t: Targets<'_, f64>, r: usize, y: &mut Vec<f64>) -> f64 {
    y.resize(scores.len(), 0.0);
    softmax_row(
        ArrayView1::from(scores),
        ndarray::ArrayViewMut1::from(&mut y[..]),
    );
    match t {
        Targets::Labels(labels) => -(y[labels[r] as usize] + CROSS_ENTROPY_DELTA).ln(),
        Targets::OneHot(oh) => -oh
            .row(r)
            .iter()
            .zip(y.iter())
            .filter(|(&tm, _)| tm != 0.0)
            .map(|(&tm, &ym)| tm * (ym + CROSS_ENTROPY_DELTA).ln())
            .sum::<f64>(),
    }
}

/// Scratch of [`Chain::hidden_rows`].
#[derive(Default, Clone)]
struct Scratch {
    col: Vec<f64>,
    mask: Vec<f64>,
    out: Vec<f64>,
}

/// The forward pass of a chain: every layer's input and affine output, row-major.
struct Pass {
    /// inputs[l]: the input of layer l (inputs[0] = x), n × fan_in.
    inputs: Vec<Vec<f64>>,
    /// affine[l]: the affine output of layer l (the last: the scores), n × fan_out.
    affine: Vec<Vec<f64>>,
    row_loss: Vec<f64>,
}

impl Pass {
    /// The whole forward pass of `chain` on x.
    fn new(chain: &Chain<'_>, x: ArrayView2<'_, f64>, t: Targets<'_, f64>) -> Result<Self> {
        let (n, d) = x.dim();
        // Room for the largest layer, checked up front so the probes cannot fail.
        let widest = chain
            .layers
            .iter()
            .map(|la| la.w.ncols())
            .max()
            .unwrap_or(0);
        try_zeros2::<f64>(OP, n, (2 * widest).max(d))?;
        let mut inputs = vec![x.iter().copied().collect::<Vec<f64>>()];
        let mut affine = Vec::with_capacity(chain.layers.len());
        let mut scratch = Scratch::default();
        for l in 0..chain.layers.len() {
            let mut a = Vec::new();
            chain.affine_rows(l, &inputs[l], &mut a);
            if l < chain.last() {
                let mut z = vec![0.0; a.len()];
                chain.hidden_rows(l, &a, None, &mut z, &mut scratch);
                inputs.push(z);
            }
            affine.push(a);
        }
        let k = chain.layers[chain.last()].w.ncols();
        let scores = &affine[chain.last()];
        let mut y = Vec::new();
        let row_loss = (0..n)
            .map(|r| row_loss(&scores[r * k..(r + 1) * k], t, r, &mut y))
            .collect();
        Ok(Pass {
            inputs,
            affine,
            row_loss,
        })
    }

    /// The mean loss (without the weight decay).
    fn loss(&self) -> f64 {
        self.row_loss.iter().sum::<f64>() / self.row_loss.len() as f64
    }
}

/// Reused per-thread buffers of the fast probes.
#[derive(Default, Clone)]
struct Workspace {
    col: Vec<f64>,
    z: Vec<f64>,
    rows: Vec<usize>,
    a: Vec<f64>,
    next: Vec<f64>,
    zs: Vec<f64>,
    y: Vec<f64>,
    scores: Vec<f64>,
    scratch: Scratch,
}

/// Σ over the rows a probe changes of (new − old loss term), for column j of layer l
/// with affine output `ws.col` and batch norm (γ, β) = `bn`.
fn probe(
    chain: &Chain<'_>,
    pass: &Pass,
    t: Targets<'_, f64>,
    l: usize,
    j: usize,
    bn: Option<(f64, f64)>,
    ws: &mut Workspace,
) -> f64 {
    let n = pass.row_loss.len();
    let last = chain.last();
    let h = chain.layers[l].w.ncols();
    if l == last {
        // A score column: the rows whose score moved.
        let mut sum = 0.0;
        for r in 0..n {
            let old = pass.affine[l][r * h + j];
            if ws.col[r] != old {
                ws.scores.clear();
                ws.scores
                    .extend_from_slice(&pass.affine[l][r * h..(r + 1) * h]);
                ws.scores[j] = ws.col[r];
                sum += row_loss(&ws.scores, t, r, &mut ws.y) - pass.row_loss[r];
            }
        }
        return sum;
    }
    // Column j of hidden layer l, and the rows where it moved.
    let layer = &chain.layers[l];
    ws.z.resize(n, 0.0);
    ws.scratch.mask.clear();
    if let Some(mask) = layer.mask {
        ws.scratch.mask.extend(mask.column(j).iter());
    }
    hidden_column(
        &ws.col,
        bn,
        chain.activation,
        layer.mask.map(|_| &ws.scratch.mask[..]),
        &mut ws.z,
    );
    let before = &pass.inputs[l + 1];
    for (r, z) in ws.z.iter_mut().enumerate() {
        *z -= before[r * h + j]; // now the change Δ
    }
    ws.rows.clear();
    let moved = |r: &usize| ws.z[*r] != 0.0;
    if chain.batch_norm_from(l + 1) {
        if (0..n).any(|r| moved(&r)) {
            ws.rows.extend(0..n);
        }
    } else {
        ws.rows.extend((0..n).filter(moved));
    }
    if ws.rows.is_empty() {
        return 0.0;
    }
    // Layer l + 1's affine output on those rows: a rank-one update.
    let mut width = chain.layers[l + 1].w.ncols();
    let wj = chain.layers[l + 1].w.row(j);
    ws.a.clear();
    for &r in &ws.rows {
        let d = ws.z[r];
        let old = &pass.affine[l + 1][r * width..(r + 1) * width];
        ws.a.extend(old.iter().zip(wj.iter()).map(|(&old, &w)| old + d * w));
    }
    let rows = std::mem::take(&mut ws.rows);
    let m = rows.len();
    let all = m == n;
    for k in (l + 1)..last {
        ws.zs.resize(m * width, 0.0);
        chain.hidden_rows(
            k,
            &ws.a,
            (!all).then_some(&rows[..]),
            &mut ws.zs,
            &mut ws.scratch,
        );
        chain.affine_rows(k + 1, &ws.zs, &mut ws.next);
        std::mem::swap(&mut ws.a, &mut ws.next);
        width = chain.layers[k + 1].w.ncols();
    }
    let mut sum = 0.0;
    for (i, &r) in rows.iter().enumerate() {
        sum += row_loss(&ws.a[i * width..(i + 1) * width], t, r, &mut ws.y) - pass.row_loss[r];
    }
    ws.rows = rows;
    sum
}

/// The parameters of layer l in probe order: W, b, then γ, β with a batch norm.
fn layer_params(layer: &ChainLayer<'_>) -> Vec<(Param, usize)> {
    let (d, h) = layer.w.dim();
    let mut out = vec![(Param::W, d * h), (Param::B, h)];
    if layer.batch_norm.is_some() {
        out.extend([(Param::Gamma, h), (Param::Beta, h)]);
    }
    out
}

/// The book's numerical gradient of `chain`'s loss (mean cross-entropy + weight decay)
/// at x, t, by the fast exact probes; `interrupt` is polled between chunks of probes on
/// the calling thread and stops with [`KernelError::Interrupted`].
pub fn numerical_gradient_fast(
    chain: &Chain<'_>,
    x: ArrayView2<'_, f64>,
    t: Targets<'_, f64>,
    interrupt: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<LayerGradient>> {
    chain.check(x, t)?;
    let pass = Pass::new(chain, x, t)?;
    let n = x.nrows() as f64;
    sweep(chain, interrupt, |l, param, idx, ws| {
        let layer = &chain.layers[l];
        let (d, h) = layer.w.dim();
        let (j, column) = match param {
            Param::W => (idx % h, true),
            Param::B | Param::Gamma | Param::Beta => (idx, param == Param::B),
        };
        let a = &pass.affine[l];
        let mut diff = 0.0;
        for sign in [1.0, -1.0] {
            let step = sign * H;
            ws.col.clear();
            ws.col.extend((0..x.nrows()).map(|r| a[r * h + j]));
            let mut bn = layer.batch_norm.map(|(g, b)| (g[j], b[j]));
            if column {
                if param == Param::W {
                    let i = idx / h;
                    let input = &pass.inputs[l];
                    if (0..x.nrows()).all(|r| input[r * d + i] == 0.0) {
                        break; // the entry meets only zeros: nothing moves
                    }
                    for (r, v) in ws.col.iter_mut().enumerate() {
                        *v += step * input[r * d + i];
                    }
                } else {
                    for v in ws.col.iter_mut() {
                        *v += step;
                    }
                }
            } else if let Some((g, b)) = bn.as_mut() {
                if param == Param::Gamma {
                    *g += step;
                } else {
                    *b += step;
                }
            }
            diff += sign * probe(chain, &pass, t, l, j, bn, ws);
        }
        let mut g = diff / n / (2.0 * H);
        if param == Param::W && chain.weight_decay != 0.0 {
            let w = layer.w[[idx / h, idx % h]];
            g += 0.5 * chain.weight_decay * ((w + H) * (w + H) - (w - H) * (w - H)) / (2.0 * H);
        }
        g
    })
}

/// The same gradient by brute force: the whole forward pass for every probe.
pub fn numerical_gradient_bruteforce(
    chain: &Chain<'_>,
    x: ArrayView2<'_, f64>,
    t: Targets<'_, f64>,
    interrupt: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<LayerGradient>> {
    chain.check(x, t)?;
    // Memory for a pass, checked once; then owned copies the probes perturb (each
    // thread its own).
    Pass::new(chain, x, t)?;
    let owned: Vec<OwnedLayer> = chain.layers.iter().map(OwnedLayer::new).collect();
    let loss_at = |layers: &[OwnedLayer]| -> f64 {
        let views: Vec<ChainLayer<'_>> = layers.iter().map(OwnedLayer::view).collect();
        let probed = Chain {
            layers: views,
            activation: chain.activation,
            weight_decay: chain.weight_decay,
        };
        Pass::new(&probed, x, t).map_or(f64::NAN, |p| p.loss() + probed.decay())
    };
    let init = || owned.clone();
    sweep_with(chain, interrupt, init, |l, param, idx, layers| {
        let cell = layers[l].cell(param, idx);
        let tmp = *cell;
        *cell = tmp + H;
        let plus = loss_at(layers);
        *layers[l].cell(param, idx) = tmp - H;
        let minus = loss_at(layers);
        *layers[l].cell(param, idx) = tmp;
        (plus - minus) / (2.0 * H)
    })
}

impl Chain<'_> {
    /// ½λ·Σ‖W‖², as the book adds it to the loss.
    fn decay(&self) -> f64 {
        self.layers
            .iter()
            .map(|la| 0.5 * self.weight_decay * la.w.iter().map(|w| w * w).sum::<f64>())
            .sum()
    }
}

/// A layer's parameters as owned arrays (the brute force perturbs them).
#[derive(Clone)]
struct OwnedLayer<'a> {
    w: Array2<f64>,
    b: Array1<f64>,
    gamma: Option<Array1<f64>>,
    beta: Option<Array1<f64>>,
    mask: Option<ArrayView2<'a, f64>>,
}

impl<'a> OwnedLayer<'a> {
    fn new(layer: &ChainLayer<'a>) -> Self {
        OwnedLayer {
            w: layer.w.as_standard_layout().into_owned(),
            b: layer.b.to_owned(),
            gamma: layer.batch_norm.map(|(g, _)| g.to_owned()),
            beta: layer.batch_norm.map(|(_, b)| b.to_owned()),
            mask: layer.mask,
        }
    }

    fn view(&self) -> ChainLayer<'_> {
        ChainLayer {
            w: self.w.view(),
            b: self.b.view(),
            batch_norm: self
                .gamma
                .as_ref()
                .zip(self.beta.as_ref())
                .map(|(g, b)| (g.view(), b.view())),
            mask: self.mask,
        }
    }

    fn cell(&mut self, param: Param, idx: usize) -> &mut f64 {
        let slice = match param {
            Param::W => self.w.as_slice_mut(),
            Param::B => self.b.as_slice_mut(),
            Param::Gamma => self.gamma.as_mut().and_then(|g| g.as_slice_mut()),
            Param::Beta => self.beta.as_mut().and_then(|b| b.as_slice_mut()),
        };
        match slice.and_then(|s| s.get_mut(idx)) {
            Some(cell) => cell,
            None => unreachable!("owned parameters are contiguous and idx < len"),
        }
    }
}

/// Every parameter of `chain` through `value(layer, param, index, workspace)`, in
/// parallel over the entries, with `interrupt` polled between chunks.
fn sweep(
    chain: &Chain<'_>,
    interrupt: &(dyn Fn() -> bool + Sync),
    value: impl Fn(usize, Param, usize, &mut Workspace) -> f64 + Sync,
) -> Result<Vec<LayerGradient>> {
    sweep_with(chain, interrupt, Workspace::default, value)
}

fn sweep_with<W: Send>(
    chain: &Chain<'_>,
    interrupt: &(dyn Fn() -> bool + Sync),
    init: impl Fn() -> W + Sync + Send,
    value: impl Fn(usize, Param, usize, &mut W) -> f64 + Sync,
) -> Result<Vec<LayerGradient>> {
    // About 2,000 probes between interrupt checks (milliseconds for a book-sized net).
    const CHUNK: usize = 2048;
    let mut out = Vec::with_capacity(chain.layers.len());
    for (l, layer) in chain.layers.iter().enumerate() {
        let (d, h) = layer.w.dim();
        let mut grads: Vec<Vec<f64>> = Vec::new();
        for (param, len) in layer_params(layer) {
            let mut values = Vec::new();
            values
                .try_reserve_exact(len)
                .map_err(|_| KernelError::Alloc {
                    op: OP,
                    shape: fmt_shape(&[len]),
                    bytes: len as u128 * 8,
                })?;
            for start in (0..len).step_by(CHUNK) {
                let span = start..(start + CHUNK).min(len);
                let part: Vec<f64> = parallel::install(|threads| {
                    if threads > 1 {
                        span.into_par_iter()
                            .map_init(&init, |ws, idx| value(l, param, idx, ws))
                            .collect()
                    } else {
                        let mut ws = init();
                        span.map(|idx| value(l, param, idx, &mut ws)).collect()
                    }
                });
                values.extend(part);
                if interrupt() {
                    return Err(KernelError::Interrupted { op: OP });
                }
            }
            grads.push(values);
        }
        let mut grads = grads.into_iter();
        let mut next = |len: usize| grads.next().unwrap_or_else(|| vec![0.0; len]);
        let w = Array2::from_shape_vec((d, h), next(d * h))
            .map_err(|e| KernelError::shape(OP, e.to_string()))?;
        let b = Array1::from(next(h));
        let (gamma, beta) = if layer.batch_norm.is_some() {
            (Some(Array1::from(next(h))), Some(Array1::from(next(h))))
        } else {
            (None, None)
        };
        out.push(LayerGradient { w, b, gamma, beta });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, Array2};

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    fn random(shape: (usize, usize), seed: &mut u64, scale: f64) -> Array2<f64> {
        Array::from_shape_fn(shape, |_| scale * lcg(seed))
    }

    /// A 3-layer chain with every feature, on a sparse batch: fast equals brute force.
    #[test]
    fn fast_equals_bruteforce() {
        let mut seed = 7;
        let sizes = [9, 6, 5, 4];
        let n = 5;
        let mut x = random((n, sizes[0]), &mut seed, 1.0);
        x.column_mut(2).fill(0.0); // a pixel that is 0 in every row
        x[[1, 4]] = 0.0;
        let ws: Vec<Array2<f64>> = (0..3)
            .map(|l| random((sizes[l], sizes[l + 1]), &mut seed, 0.7))
            .collect();
        let bs: Vec<Array1<f64>> = (0..3)
            .map(|l| random((1, sizes[l + 1]), &mut seed, 0.1).row(0).to_owned())
            .collect();
        let gammas: Vec<Array1<f64>> = (0..2)
            .map(|l| {
                random((1, sizes[l + 1]), &mut seed, 0.3)
                    .row(0)
                    .mapv(|v| 1.0 + v)
            })
            .collect();
        let betas: Vec<Array1<f64>> = (0..2)
            .map(|l| random((1, sizes[l + 1]), &mut seed, 0.1).row(0).to_owned())
            .collect();
        let mask = random((n, sizes[2]), &mut seed, 1.0).mapv(|v| f64::from(u8::from(v > -0.4)));
        let labels = ndarray::arr1(&[0_i64, 3, 1, 2, 3]);
        for (activation, bn, decay) in [
            (Activation::Sigmoid, [true, false], 0.1),
            (Activation::Relu, [false, true], 0.0),
            (Activation::Sigmoid, [false, false], 0.0),
            (Activation::Relu, [true, true], 0.05),
        ] {
            let layers: Vec<ChainLayer<'_>> = (0..3)
                .map(|l| ChainLayer {
                    w: ws[l].view(),
                    b: bs[l].view(),
                    batch_norm: (l < 2 && bn[l]).then(|| (gammas[l].view(), betas[l].view())),
                    mask: (l == 1).then(|| mask.view()),
                })
                .collect();
            let chain = Chain {
                layers,
                activation,
                weight_decay: decay,
            };
            let t = Targets::Labels(labels.view());
            let fast = numerical_gradient_fast(&chain, x.view(), t, &|| false)
                .unwrap_or_else(|e| panic!("{e}"));
            let brute = numerical_gradient_bruteforce(&chain, x.view(), t, &|| false)
                .unwrap_or_else(|e| panic!("{e}"));
            let mut biggest = 0.0_f64;
            for (f, b) in fast.iter().zip(&brute) {
                for (fv, bv) in f.w.iter().chain(&f.b).zip(b.w.iter().chain(&b.b)) {
                    assert!(
                        (fv - bv).abs() < 1e-9,
                        "{activation:?} {bn:?}: {fv} vs {bv}"
                    );
                    biggest = biggest.max(bv.abs());
                }
                assert_eq!(f.gamma.is_some(), b.gamma.is_some());
                if let (Some(fg), Some(bg)) = (&f.gamma, &b.gamma) {
                    for (fv, bv) in fg
                        .iter()
                        .chain(f.beta.iter().flatten())
                        .zip(bg.iter().chain(b.beta.iter().flatten()))
                    {
                        assert!((fv - bv).abs() < 1e-9, "γ/β {fv} vs {bv}");
                    }
                }
            }
            assert!(biggest > 1e-3, "the gradient is not trivially zero");
            // The all-zero input column gives W1[2, ·] exactly its weight decay.
            for j in 0..sizes[1] {
                let want = decay * ws[0][[2, j]];
                assert!((fast[0].w[[2, j]] - want).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let w1 = Array2::<f64>::zeros((4, 3));
        let b1 = Array1::<f64>::zeros(3);
        let w2 = Array2::<f64>::zeros((2, 2));
        let b2 = Array1::<f64>::zeros(2);
        let chain = Chain {
            layers: vec![
                ChainLayer {
                    w: w1.view(),
                    b: b1.view(),
                    batch_norm: None,
                    mask: None,
                },
                ChainLayer {
                    w: w2.view(),
                    b: b2.view(),
                    batch_norm: None,
                    mask: None,
                },
            ],
            activation: Activation::Relu,
            weight_decay: 0.0,
        };
        let x = Array2::<f64>::zeros((2, 4));
        let labels = ndarray::arr1(&[0_i64, 1]);
        let err =
            numerical_gradient_fast(&chain, x.view(), Targets::Labels(labels.view()), &|| false);
        assert!(matches!(err, Err(e) if e.to_string().contains("W2 has shape (2, 2)")));
    }
}
