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
