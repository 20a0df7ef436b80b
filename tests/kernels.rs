//! The fused training step equals the composed kernels: `TwoLayerNet::gradient` (the
//! book's backprop) followed by the book's optimizer update, step after step.

use ferrograd::error::Result;
use ferrograd::kernels::activation::Activation;
use ferrograd::kernels::fused::{FusedTrainer, LayerMut};
use ferrograd::kernels::net::TwoLayerNet;
use ferrograd::kernels::optimizer::Optimizer;
use ferrograd::kernels::predict;
use ferrograd::kernels::sparse::{Rows, SparseRows};
use ferrograd::kernels::Targets;
use ndarray::{Array1, Array2, Axis};

const D: usize = 40;
const H: usize = 50;
const K: usize = 10;
const N: usize = 300;

/// A deterministic stand-in for pseudo-random numbers in [0, 1).
fn unit(i: usize) -> f64 {
    ((i as f64 * 0.618_033_988_75 + 0.1).sin() * 43_758.545_3).rem_euclid(1.0)
}

/// Inputs with ~60% exact zeros (as MNIST has), labels, and a batch index matrix.
fn data(steps: usize, batch: usize) -> (Array2<f64>, Array1<i64>, Array2<i64>) {
    let x = Array2::from_shape_fn((N, D), |(r, c)| {
        let u = unit(r * D + c);
        if u < 0.6 {
            0.0
        } else {
            u
        }
    });
    let t = Array1::from_shape_fn(N, |r| (unit(7 * r + 3) * K as f64) as i64);
    let b = Array2::from_shape_fn((steps, batch), |(s, j)| {
        (unit(1000 + s * batch + j) * N as f64) as i64
    });
    (x, t, b)
}

struct Net {
    w1: Array2<f64>,
    b1: Array1<f64>,
    w2: Array2<f64>,
    b2: Array1<f64>,
}

fn init() -> Net {
    Net {
        w1: Array2::from_shape_fn((D, H), |(i, j)| 0.3 * (unit(5 * (i * H + j)) - 0.5)),
        b1: Array1::from_shape_fn(H, |j| 0.1 * (unit(9 * j + 1) - 0.5)),
        w2: Array2::from_shape_fn((H, K), |(i, j)| 0.3 * (unit(11 * (i * K + j)) - 0.5)),
        b2: Array1::zeros(K),
    }
}

fn zeros_like(p: &Net) -> Net {
    Net {
        w1: Array2::zeros(p.w1.raw_dim()),
        b1: Array1::zeros(p.b1.raw_dim()),
        w2: Array2::zeros(p.w2.raw_dim()),
        b2: Array1::zeros(p.b2.raw_dim()),
    }
}

fn params_mut(p: &mut Net) -> Vec<LayerMut<'_, f64>> {
    vec![
        LayerMut {
            w: p.w1.view_mut(),
            b: p.b1.view_mut(),
        },
        LayerMut {
            w: p.w2.view_mut(),
            b: p.b2.view_mut(),
        },
    ]
}

/// The composed path: the book's `gradient`, then its SGD or Momentum update.
fn composed(
    net: &mut Net,
    v: &mut Net,
    x: &Array2<f64>,
    t: &Array1<i64>,
    batches: &Array2<i64>,
    act: Activation,
    opt: Optimizer,
) -> Result<()> {
    for b in batches.rows() {
        let rows: Vec<usize> = b.iter().map(|&i| i as usize).collect();
        let xb = x.select(Axis(0), &rows);
        let tb = t.select(Axis(0), &rows);
        let g = TwoLayerNet {
            w1: net.w1.view(),
            b1: net.b1.view(),
            w2: net.w2.view(),
            b2: net.b2.view(),
            activation: act,
        }
        .gradient(xb.view(), Targets::Labels(tb.view()))?;
        match opt {
            Optimizer::Sgd { lr } => {
                net.w1.scaled_add(-lr, &g.w1);
                net.b1.scaled_add(-lr, &g.b1);
                net.w2.scaled_add(-lr, &g.w2);
                net.b2.scaled_add(-lr, &g.b2);
            }
            Optimizer::Momentum { lr, momentum } => {
                // v ← momentum·v − lr·g; W ← W + v
                v.w1 = &v.w1 * momentum - &g.w1 * lr;
                v.b1 = &v.b1 * momentum - &g.b1 * lr;
                v.w2 = &v.w2 * momentum - &g.w2 * lr;
                v.b2 = &v.b2 * momentum - &g.b2 * lr;
                net.w1 += &v.w1;
                net.b1 += &v.b1;
                net.w2 += &v.w2;
                net.b2 += &v.b2;
            }
            _ => unreachable!("only SGD and Momentum are composed here"),
        }
    }
    Ok(())
}

fn max_abs_diff(a: &Net, b: &Net) -> f64 {
    let d = |x: f64, y: f64| (x - y).abs();
    let mut m = 0.0_f64;
    for (x, y) in a.w1.iter().zip(&b.w1) {
        m = m.max(d(*x, *y));
    }
    for (x, y) in a.b1.iter().zip(&b.b1) {
        m = m.max(d(*x, *y));
    }
    for (x, y) in a.w2.iter().zip(&b.w2) {
        m = m.max(d(*x, *y));
    }
    for (x, y) in a.b2.iter().zip(&b.b2) {
        m = m.max(d(*x, *y));
    }
    m
}

#[test]
fn fused_steps_equal_gradient_then_update() -> Result<()> {
    let (x, t, batches) = data(30, 25);
    // Pixel-like values (k/255) compress to coded entries, the others to pairs.
    let pixels = x.mapv(|v| (v * 255.0).round() / 255.0);
    for (x, coded) in [(x, false), (pixels, true)] {
        let sparse = SparseRows::from_dense(x.view())?;
        assert_eq!(sparse.is_coded(), coded);
        for act in [Activation::Sigmoid, Activation::Relu] {
            for opt in [
                Optimizer::Sgd { lr: 0.5 },
                Optimizer::Momentum {
                    lr: 0.2,
                    momentum: 0.9,
                },
            ] {
                let mut want = init();
                let mut v = zeros_like(&want);
                composed(&mut want, &mut v, &x, &t, &batches, act, opt)?;
                for rows in [Rows::Dense(x.view()), Rows::Sparse(&sparse)] {
                    let mut got = init();
                    let mut state = zeros_like(&got);
                    let mut trainer = FusedTrainer::new(&[D, H, K], act, opt, 0.0)?;
                    let mut sets: Vec<Vec<LayerMut<'_, f64>>> = match opt {
                        Optimizer::Sgd { .. } => vec![],
                        _ => vec![params_mut(&mut state)],
                    };
                    let losses = trainer.run(
                        &mut params_mut(&mut got),
                        &mut sets,
                        rows,
                        Targets::Labels(t.view()),
                        batches.view(),
                        None,
                        0,
                        &|| false,
                    )?;
                    drop(sets);
                    assert_eq!(losses.len(), batches.nrows());
                    assert!(losses.iter().all(|l| l.is_finite()));
                    let diff = max_abs_diff(&got, &want);
                    assert!(
                        diff <= 1e-12,
                        "{act:?} {opt:?}: max |fused − composed| = {diff:e}"
                    );
                    if let Optimizer::Momentum { .. } = opt {
                        let dv = max_abs_diff(&state, &v);
                        assert!(dv <= 1e-12, "{act:?}: velocity differs by {dv:e}");
                    }
                    // It trained: the parameters moved.
                    assert!(max_abs_diff(&got, &init()) > 1e-3);
                }
            }
        }
    }
    Ok(())
}

#[test]
fn accuracy_from_dense_and_compressed_rows_agree_with_the_forward_pass() -> Result<()> {
    let (x, t, _) = data(1, 1);
    let p = init();
    let net = TwoLayerNet {
        w1: p.w1.view(),
        b1: p.b1.view(),
        w2: p.w2.view(),
        b2: p.b2.view(),
        activation: Activation::Sigmoid,
    };
    let y = net.predict(x.view())?;
    let want: Vec<usize> = y
        .rows()
        .into_iter()
        .map(|r| {
            let mut best = 0;
            for (c, &v) in r.iter().enumerate() {
                if v > r[best] {
                    best = c;
                }
            }
            best
        })
        .collect();
    let sparse = SparseRows::from_dense(x.view())?;
    assert_eq!(sparse.nrows(), N);
    assert_eq!(sparse.ncols(), D);
    assert_eq!(sparse.nnz(), x.iter().filter(|&&v| v != 0.0).count());
    let layers = net.layers();
    let act = net.activation;
    assert_eq!(
        predict::predict_labels(&layers, act, Rows::Dense(x.view()))?,
        want
    );
    assert_eq!(
        predict::predict_labels(&layers, act, Rows::Sparse(&sparse))?,
        want
    );
    let hits = want
        .iter()
        .zip(t.iter())
        .filter(|(&p, &l)| p as i64 == l)
        .count();
    let acc = predict::accuracy(
        &layers,
        act,
        Rows::Sparse(&sparse),
        Targets::Labels(t.view()),
    )?;
    assert_eq!(acc, hits as f64 / N as f64);
    Ok(())
}

/// A learning rate per step equals runs of one step each at that rate (set between
/// runs), and an Adam schedule keeps the bias correction's step count.
#[test]
fn learning_rate_per_step_equals_a_rate_set_between_runs() -> Result<()> {
    let (x, t, batches) = data(6, 20);
    let lrs = [0.02, 0.01, 0.005, 0.0025, 0.001, 0.0005];
    let adam = |lr| Optimizer::Adam {
        lr,
        beta1: 0.9,
        beta2: 0.999,
    };
    let (rows, targets) = (Rows::Dense(x.view()), Targets::Labels(t.view()));
    let mut scheduled = init();
    let (mut m, mut v) = (zeros_like(&scheduled), zeros_like(&scheduled));
    let mut trainer = FusedTrainer::new(&[D, H, K], Activation::Relu, adam(1.0), 0.0)?;
    trainer.run(
        &mut params_mut(&mut scheduled),
        &mut [params_mut(&mut m), params_mut(&mut v)],
        rows,
        targets,
        batches.view(),
        Some(&lrs),
        0,
        &|| false,
    )?;
    let mut stepped = init();
    let (mut m2, mut v2) = (zeros_like(&stepped), zeros_like(&stepped));
    let mut trainer = FusedTrainer::new(&[D, H, K], Activation::Relu, adam(1.0), 0.0)?;
    for (s, &lr) in lrs.iter().enumerate() {
        trainer.set_optimizer(adam(lr))?;
        trainer.run(
            &mut params_mut(&mut stepped),
            &mut [params_mut(&mut m2), params_mut(&mut v2)],
            rows,
            targets,
            batches.slice(ndarray::s![s..s + 1, ..]),
            None,
            s as u64,
            &|| false,
        )?;
    }
    assert_eq!(max_abs_diff(&scheduled, &stepped), 0.0);
    assert!(max_abs_diff(&scheduled, &init()) > 1e-3);
    let short = trainer
        .run(
            &mut params_mut(&mut stepped),
            &mut [params_mut(&mut m2), params_mut(&mut v2)],
            rows,
            targets,
            batches.view(),
            Some(&lrs[..2]),
            0,
            &|| false,
        )
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        short.as_deref(),
        Some("FusedTrainer.run: learning_rates has 2 entries for 6 steps; need one per step")
    );
    let other_rule = trainer.set_optimizer(Optimizer::Sgd { lr: 0.1 }).is_err();
    assert!(other_rule, "a trainer keeps its rule");
    Ok(())
}

/// x (n, d) with about `density` of its entries non-zero (values in (0, 1]), row 0
/// all zeros and row 1 all non-zero.
fn sparse_input(n: usize, d: usize, density: f64, seed: usize) -> Array2<f64> {
    Array2::from_shape_fn((n, d), |(r, c)| {
        let u = unit(seed + r * d + c);
        match r {
            0 => 0.0,
            1 => 0.5 + u,
            _ if u < density => u / density,
            _ => 0.0,
        }
    })
}

/// Plain triple loop in f64: the reference of the products.
fn naive(a: ndarray::ArrayView2<'_, f64>, b: ndarray::ArrayView2<'_, f64>) -> Array2<f64> {
    Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
        (0..a.ncols()).map(|p| a[[i, p]] * b[[p, j]]).sum()
    })
}

fn worst(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f64::max)
}

/// x·W and xᵀ·D skipping x's zeros equal the dense products for widths that are not
/// whole register blocks (1 … 121 columns), in both dtypes; dense x takes the GEMM.
#[test]
fn zero_skipping_products_equal_the_dense_ones() -> Result<()> {
    use ferrograd::kernels::matmul::matmul;
    use ferrograd::kernels::sparse_input::{compress_for_products, NonZeroColumns};
    let (n, d) = (120, 300);
    for (density, h) in [
        (0.2, 50),
        (0.2, 1),
        (0.05, 7),
        (0.15, 53),
        (0.2, 121),
        (0.2, 104),
    ] {
        let x = sparse_input(n, d, density, h);
        assert!(
            NonZeroColumns::<f64>::of(x.view()).is_some(),
            "sparse x compresses"
        );
        let w = Array2::from_shape_fn((d, h), |(i, j)| unit(5 * i + 11 * j + 1) - 0.5);
        let dm = Array2::from_shape_fn((n, h), |(i, j)| unit(3 * i + 7 * j + 2) - 0.5);
        let (xw, xtd) = (naive(x.view(), w.view()), naive(x.t(), dm.view()));
        assert!(
            worst(&matmul(x.view(), w.view())?, &xw) < 1e-12,
            "x·W h={h}"
        );
        assert!(
            worst(&matmul(x.t(), dm.view())?, &xtd) < 1e-12,
            "xᵀ·D h={h}"
        );
        let (x32, w32, d32) = (
            x.mapv(|v| v as f32),
            w.mapv(|v| v as f32),
            dm.mapv(|v| v as f32),
        );
        let y = matmul(x32.view(), w32.view())?.mapv(f64::from);
        assert!(worst(&y, &xw) < 1e-4, "x·W f32 h={h}");
        let g = matmul(x32.t(), d32.view())?.mapv(f64::from);
        assert!(worst(&g, &xtd) < 1e-4, "xᵀ·D f32 h={h}");
        // The same through the net's entry points, with accumulation onto c.
        let nz = compress_for_products(x.view(), h);
        let worth = n * d * h >= ferrograd::kernels::sparse_input::MIN_MACS;
        assert_eq!(nz.is_some(), worth, "compressed only when worth it, h={h}");
        let mut c = Array2::from_elem((n, h), 1.0);
        ferrograd::kernels::sparse_input::times_into(
            x.view(),
            nz.as_ref(),
            w.view(),
            c.view_mut(),
            true,
        );
        assert!(worst(&c, &(&xw + 1.0)) < 1e-12);
    }
    // Dense input is refused by the compression and goes to the GEMM, and so is input
    // about half non-zero (a ReLU output), where the GEMM is faster.
    let dense = Array2::from_shape_fn((20, 64), |(r, c)| 1.0 + unit(r * 64 + c));
    assert!(NonZeroColumns::<f64>::of(dense.view()).is_none());
    let half = sparse_input(n, d, 0.45, 3);
    assert!(NonZeroColumns::<f64>::of(half.view()).is_none());
    Ok(())
}

/// IEEE semantics as the dense product: NaN and ±inf inputs propagate, and a
/// non-finite W (or D) gives NaN where x is zero, as 0·inf does.
#[test]
fn zero_skipping_products_keep_nan_and_inf() -> Result<()> {
    use ferrograd::kernels::matmul::matmul;
    let (n, d, h) = (40, 200, 50);
    let mut x = sparse_input(n, d, 0.2, 9);
    x[[5, 17]] = f64::NAN;
    x[[6, 3]] = f64::INFINITY;
    let w = Array2::from_shape_fn((d, h), |(i, j)| unit(i + 3 * j) - 0.5);
    let y = matmul(x.view(), w.view())?;
    let want = naive(x.view(), w.view());
    for (p, q) in y.iter().zip(&want) {
        assert!(p.is_nan() == q.is_nan() && (p.is_nan() || (p - q).abs() < 1e-12 || p == q));
    }
    assert!(y.row(5).iter().all(|v| v.is_nan()));
    let mut w_inf = w.clone();
    w_inf[[100, 4]] = f64::INFINITY;
    let x = sparse_input(n, d, 0.2, 9);
    let y = matmul(x.view(), w_inf.view())?;
    // Every row has x[r, 100] = 0 or a product with inf: column 4 is never finite.
    assert!(y.column(4).iter().all(|v| !v.is_finite()));
    assert_eq!(
        y.column(4).iter().filter(|v| v.is_nan()).count(),
        naive(x.view(), w_inf.view())
            .column(4)
            .iter()
            .filter(|v| v.is_nan())
            .count()
    );
    let mut dm = Array2::from_shape_fn((n, h), |(i, j)| unit(i * h + j) - 0.5);
    dm[[0, 2]] = f64::NAN; // row 0 of x is all zeros: the dense xᵀ·D has NaN in column 2
    let g = matmul(x.t(), dm.view())?;
    assert!(g.column(2).iter().all(|v| v.is_nan()));
    Ok(())
}

/// The two-layer net's gradient on sparse input equals the backprop through naive
/// products: batches of 100 and 101 rows (two halves of rows, summed into one dW1; an
/// odd batch cuts unevenly) and of 40 (one pass), with labels and with one-hot
/// targets; with a dense second half (that half's dW1 by the GEMM, added after) and
/// dense throughout.
#[test]
fn two_layer_gradient_on_sparse_input_matches_the_naive_backprop() -> Result<()> {
    // 50 hidden units skip x's zeros; 10 are too narrow for that to pay (dense products).
    for h in [50, 10] {
        two_layer_gradient_matches_the_naive_backprop(h)?;
    }
    Ok(())
}

fn two_layer_gradient_matches_the_naive_backprop(h: usize) -> Result<()> {
    let (d, k) = (784, 10);
    let w1 = Array2::from_shape_fn((d, h), |(i, j)| 0.1 * (unit(i * h + j) - 0.5));
    let w2 = Array2::from_shape_fn((h, k), |(i, j)| 0.3 * (unit(99 + i * k + j) - 0.5));
    let (b1, b2) = (Array1::from_elem(h, 0.01), Array1::from_elem(k, -0.02));
    let net = TwoLayerNet {
        w1: w1.view(),
        b1: b1.view(),
        w2: w2.view(),
        b2: b2.view(),
        activation: Activation::Sigmoid,
    };
    for (n, one_hot, dense_from) in [
        (100, false, 100),
        (101, true, 101),
        (40, false, 40),
        (100, false, 50),
        (100, true, 0),
    ] {
        let mut x = sparse_input(n, d, 0.19, 4);
        x.slice_mut(ndarray::s![dense_from.., ..])
            .indexed_iter_mut()
            .for_each(|((r, i), v)| *v = 0.1 + unit(r * d + i));
        let t = Array1::from_shape_fn(n, |r| (unit(7 * r) * k as f64) as i64);
        let t1 = Array2::from_shape_fn((n, k), |(r, c)| f64::from(u8::from(t[r] == c as i64)));
        let targets = if one_hot {
            Targets::OneHot(t1.view())
        } else {
            Targets::Labels(t.view())
        };
        let g = net.gradient(x.view(), targets)?;
        // Backprop by the naive products.
        let a1 = naive(x.view(), w1.view()) + &b1;
        let z1 = a1.mapv(|a| 1.0 / (1.0 + (-a).exp()));
        let a2 = naive(z1.view(), w2.view()) + &b2;
        let mut y = a2.clone();
        for mut row in y.rows_mut() {
            let m = row.fold(f64::MIN, |a, &b| a.max(b));
            row.mapv_inplace(|v| (v - m).exp());
            let s = row.sum();
            row.mapv_inplace(|v| v / s);
        }
        let dy = (y - &t1) / n as f64;
        let da1 = naive(dy.view(), w2.t()) * z1.mapv(|z| (1.0 - z) * z);
        assert!(
            worst(&g.w1, &naive(x.t(), da1.view())) < 1e-13,
            "dW1 n={n} h={h}"
        );
        assert!(
            worst(&g.w2, &naive(z1.t(), dy.view())) < 1e-13,
            "dW2 n={n} h={h}"
        );
        let db1 = da1.sum_axis(Axis(0)).insert_axis(Axis(0));
        assert!(
            worst(&g.b1.insert_axis(Axis(0)), &db1) < 1e-13,
            "db1 n={n} h={h}"
        );
        let db2 = dy.sum_axis(Axis(0)).insert_axis(Axis(0));
        assert!(
            worst(&g.b2.insert_axis(Axis(0)), &db2) < 1e-13,
            "db2 n={n} h={h}"
        );
    }
    Ok(())
}
