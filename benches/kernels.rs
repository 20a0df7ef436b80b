//! Criterion benchmarks of the kernels on the book network's shapes.
//!
//! `cargo bench` (all) or `cargo bench -- matmul` (one group). Thread count:
//! `FERROGRAD_NUM_THREADS`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrograd::kernels::activation::Activation;
use ferrograd::kernels::fused::{FusedTrainer, LayerMut};
use ferrograd::kernels::net::TwoLayerNet;
use ferrograd::kernels::numgrad::{numerical_gradient_bruteforce, numerical_gradient_fast};
use ferrograd::kernels::optimizer::Optimizer;
use ferrograd::kernels::sparse::{Rows, SparseRows};
use ferrograd::kernels::{activation, loss, matmul, softmax, Float, Targets};
use ndarray::{Array1, Array2};

/// (m, k, n, what): the products one training step of 784-50-10 at batch 100 does,
/// and a large square one.
const MATMUL_SHAPES: [(usize, usize, usize, &str); 5] = [
    (100, 784, 50, "x·W1"),
    (100, 50, 10, "z1·W2"),
    (784, 100, 50, "xᵀ·da1"),
    (100, 10, 50, "dy·W2ᵀ"),
    (1024, 1024, 1024, "square"),
];

fn filled<T: Float>(rows: usize, cols: usize, seed: usize) -> Array2<T> {
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        T::lit((((i * 131 + j * 71 + seed) % 97) as f64 - 48.0) / 97.0)
    })
}

fn bench_matmul_t<T: Float>(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("matmul_{}", T::DTYPE));
    for (m, k, n, what) in MATMUL_SHAPES {
        // The transposed forms read a stored (k, m) / (n, k) matrix through a view.
        let (a_store, b_store) = match what {
            "xᵀ·da1" => (filled::<T>(k, m, 1), filled::<T>(k, n, 2)),
            "dy·W2ᵀ" => (filled::<T>(m, k, 1), filled::<T>(n, k, 2)),
            _ => (filled::<T>(m, k, 1), filled::<T>(k, n, 2)),
        };
        let a = if what == "xᵀ·da1" {
            a_store.t()
        } else {
            a_store.view()
        };
        let b = if what == "dy·W2ᵀ" {
            b_store.t()
        } else {
            b_store.view()
        };
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        if m * n * k > 1 << 26 {
            group.sample_size(10);
        }
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{m}x{k}x{n} {what}")),
            &(a, b),
            |bench, (a, b)| bench.iter(|| matmul::matmul(black_box(*a), black_box(*b))),
        );
    }
    group.finish();
}

fn bench_matmul(c: &mut Criterion) {
    bench_matmul_t::<f32>(c);
    bench_matmul_t::<f64>(c);
}

fn bench_elementwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("elementwise");
    for (rows, cols) in [(100, 50), (100, 10), (10000, 50)] {
        let x = filled::<f32>(rows, cols, 3).into_dyn();
        let x64 = filled::<f64>(rows, cols, 3);
        group.throughput(Throughput::Elements((rows * cols) as u64));
        group.bench_with_input(
            BenchmarkId::new("sigmoid_f32", format!("{rows}x{cols}")),
            &x,
            |b, x| b.iter(|| activation::sigmoid(black_box(x.view()))),
        );
        group.bench_with_input(
            BenchmarkId::new("softmax_f64", format!("{rows}x{cols}")),
            &x64,
            |b, x| b.iter(|| softmax::softmax(black_box(x.view()))),
        );
        let Ok(y) = softmax::softmax(x64.view()) else {
            return;
        };
        let labels = Array1::from_shape_fn(rows, |i| ((i * 7) % cols) as i64);
        group.bench_with_input(
            BenchmarkId::new("cross_entropy_f64", format!("{rows}x{cols}")),
            &y,
            |b, y| {
                b.iter(|| {
                    loss::cross_entropy_error(black_box(y.view()), Targets::Labels(labels.view()))
                })
            },
        );
    }
    group.finish();
}

/// The parameters of a d-h-k sigmoid net, small weights and zero biases.
struct NetArrays {
    w1: Array2<f64>,
    b1: Array1<f64>,
    w2: Array2<f64>,
    b2: Array1<f64>,
}

fn net_arrays(d: usize, h: usize, k: usize) -> NetArrays {
    NetArrays {
        w1: filled::<f64>(d, h, 4) * 0.01,
        b1: Array1::zeros(h),
        w2: filled::<f64>(h, k, 5) * 0.01,
        b2: Array1::zeros(k),
    }
}

impl NetArrays {
    fn net(&self) -> TwoLayerNet<'_, f64> {
        TwoLayerNet {
            w1: self.w1.view(),
            b1: self.b1.view(),
            w2: self.w2.view(),
            b2: self.b2.view(),
            activation: Activation::Sigmoid,
        }
    }
}

fn bench_numerical_gradient(c: &mut Criterion) {
    let mut group = c.benchmark_group("numerical_gradient");
    group.sample_size(10);
    // A reduced net keeps the brute force within a benchmark's patience.
    let (d, h, k, n) = (64, 16, 10, 32);
    let arrays = net_arrays(d, h, k);
    let net = arrays.net();
    let x = filled::<f64>(n, d, 6).mapv(|v| v.max(0.0));
    let labels = Array1::from_shape_fn(n, |i| (i % k) as i64);
    group.throughput(Throughput::Elements((d * h + h + h * k + k) as u64));
    group.bench_function(
        BenchmarkId::new("bruteforce", format!("{d}-{h}-{k} batch {n}")),
        |b| {
            b.iter(|| {
                numerical_gradient_bruteforce(
                    black_box(&net),
                    x.view(),
                    Targets::Labels(labels.view()),
                )
            })
        },
    );
    // The exact fast scheme on the book's full shape.
    let (d, h, k, n) = (784, 50, 10, 100);
    let arrays = net_arrays(d, h, k);
    let net = arrays.net();
    let x = mnist_like::<f64>(n, 6);
    let labels = Array1::from_shape_fn(n, |i| (i % k) as i64);
    group.bench_function(
        BenchmarkId::new("fast", format!("{d}-{h}-{k} batch {n}")),
        |b| {
            b.iter(|| {
                numerical_gradient_fast(
                    black_box(&net),
                    x.view(),
                    Targets::Labels(labels.view()),
                    &|| false,
                )
            })
        },
    );
    group.finish();
}

/// Rows shaped like MNIST digits: a blob of non-zero pixels (about a fifth of them)
/// around the centre of a 28×28 image, values in (0, 1], the border always zero (an
/// input that is rarely non-zero lets Adam's state decay into subnormal numbers, whose
/// arithmetic is many times slower).
fn mnist_like<T: Float>(rows: usize, seed: usize) -> Array2<T> {
    Array2::from_shape_fn((rows, 784), |(r, p)| {
        let (i, j) = ((p / 28) as f64 - 13.5, (p % 28) as f64 - 13.5);
        let u = ((r * 7919 + p * 104_729 + seed * 31) % 1000) as f64 / 1000.0;
        let r2 = i * i + j * j;
        // Like MNIST, a border of pixels that are zero in every image.
        if r2 < 144.0 && u < 0.8 * (-r2 / 60.0).exp() {
            T::lit(u + 0.001)
        } else {
            T::zero()
        }
    })
}

/// Weights and biases of every layer (or one optimizer state set).
type LayerArrays = (Vec<Array2<f32>>, Vec<Array1<f32>>);

/// One epoch of 600 steps of batch 100 on 60,000 MNIST-like rows (compressed once):
/// the fused step of 784-50-10 (sigmoid, SGD) and of
/// (784-100-100-10, ReLU, Adam).
fn bench_fused_epoch(c: &mut Criterion) {
    let mut group = c.benchmark_group("fused_epoch");
    group.sample_size(10);
    let n = 60_000;
    let x = mnist_like::<f32>(n, 7);
    let Ok(sp) = SparseRows::from_dense(x.view()) else {
        return;
    };
    let labels = Array1::from_shape_fn(n, |i| (i * 7 % 10) as i64);
    let batches = Array2::from_shape_fn((600, 100), |(s, q)| ((s * 104_729 + q * 7919) % n) as i64);
    let (mut w1, mut w2) = (
        filled::<f32>(784, 50, 1) * 0.01,
        filled::<f32>(50, 10, 2) * 0.01,
    );
    let (mut b1, mut b2) = (Array1::zeros(50), Array1::zeros(10));
    let sgd = Optimizer::Sgd { lr: 0.1 };
    let Ok(mut two) = FusedTrainer::new(&[784, 50, 10], Activation::Sigmoid, sgd, 0.0) else {
        return;
    };
    group.throughput(Throughput::Elements(60_000));
    group.bench_function("784-50-10 sigmoid SGD f32", |b| {
        b.iter(|| {
            let mut p = [
                LayerMut {
                    w: w1.view_mut(),
                    b: b1.view_mut(),
                },
                LayerMut {
                    w: w2.view_mut(),
                    b: b2.view_mut(),
                },
            ];
            let t = Targets::Labels(labels.view());
            two.run(
                &mut p,
                &mut [],
                Rows::Sparse(&sp),
                t,
                batches.view(),
                None,
                0,
                &|| false,
            )
        })
    });
    let sizes = [784, 100, 100, 10];
    let mut ws: Vec<Array2<f32>> = (0..3)
        .map(|l| filled::<f32>(sizes[l], sizes[l + 1], l) * 0.05)
        .collect();
    let mut bs: Vec<Array1<f32>> = (0..3).map(|l| Array1::zeros(sizes[l + 1])).collect();
    let mut state: Vec<LayerArrays> = vec![(ws.iter().map(|w| w * 0.0).collect(), bs.clone()); 2];
    let adam = Optimizer::Adam {
        lr: 0.001,
        beta1: 0.9,
        beta2: 0.999,
    };
    let Ok(mut multi) = FusedTrainer::new(&sizes, Activation::Relu, adam, 0.0) else {
        return;
    };
    let mut iter = 0;
    group.bench_function("784-100-100-10 ReLU Adam f32", |b| {
        b.iter(|| {
            let mut layers: Vec<LayerMut<'_, f32>> = ws
                .iter_mut()
                .zip(bs.iter_mut())
                .map(|(w, b)| LayerMut {
                    w: w.view_mut(),
                    b: b.view_mut(),
                })
                .collect();
            let mut st: Vec<Vec<LayerMut<'_, f32>>> = state
                .iter_mut()
                .map(|(sw, sb)| {
                    sw.iter_mut()
                        .zip(sb.iter_mut())
                        .map(|(w, b)| LayerMut {
                            w: w.view_mut(),
                            b: b.view_mut(),
                        })
                        .collect()
                })
                .collect();
            let t = Targets::Labels(labels.view());
            let out = multi.run(
                &mut layers,
                &mut st,
                Rows::Sparse(&sp),
                t,
                batches.view(),
                None,
                iter,
                &|| false,
            );
            iter += 600;
            out
        })
    });
    group.finish();
}

/// MNIST-like input: 19 % of the entries non-zero, in runs along the row as pen
/// strokes are, values in (0, 1].
fn strokes<T: Float>(rows: usize, cols: usize) -> Array2<T> {
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        let phase = (r * 37 + c / 6 * 11) % 100;
        if phase < 19 {
            T::lit(((r + c) % 255 + 1) as f64 / 255.0)
        } else {
            T::zero()
        }
    })
}

/// The products of the network's first layer on sparse input: the GEMM (matmul_into)
/// against the zero-skipping products, the row compression alone, and the two-layer
/// gradient of a batch of 100.
fn bench_sparse_input_t<T: Float>(c: &mut Criterion) {
    use ferrograd::kernels::sparse_input::NonZeroColumns;
    let mut group = c.benchmark_group(format!("sparse_input_{}", T::DTYPE));
    let (n, d, h, k) = (100, 784, 50, 10);
    let x = strokes::<T>(n, d);
    let (w1, da1) = (filled::<T>(d, h, 1), filled::<T>(n, h, 2));
    let macs = (2 * n * d * h) as u64;
    group.throughput(Throughput::Elements(macs));
    group.bench_function("x·W1 100x784x50 GEMM", |b| {
        let mut out = Array2::<T>::zeros((n, h));
        b.iter(|| matmul::matmul_into(black_box(x.view()), w1.view(), out.view_mut(), false))
    });
    group.bench_function("x·W1 100x784x50 zero-skipping", |b| {
        b.iter(|| matmul::matmul(black_box(x.view()), w1.view()))
    });
    group.bench_function("xᵀ·da1 784x100x50 GEMM", |b| {
        let mut out = Array2::<T>::zeros((d, h));
        b.iter(|| matmul::matmul_into(black_box(x.t()), da1.view(), out.view_mut(), false))
    });
    group.bench_function("xᵀ·da1 784x100x50 zero-skipping", |b| {
        b.iter(|| matmul::matmul(black_box(x.t()), da1.view()))
    });
    group.throughput(Throughput::Elements((n * d) as u64));
    group.bench_function("compress 100x784", |b| {
        let mut nz = NonZeroColumns::<T>::default();
        b.iter(|| nz.compress(black_box(x.view())))
    });
    let (w2, b1, b2) = (
        filled::<T>(h, k, 3),
        Array1::<T>::zeros(h),
        Array1::<T>::zeros(k),
    );
    let t = Array1::from_shape_fn(n, |r| (r % k) as i64);
    let net = TwoLayerNet {
        w1: w1.view(),
        b1: b1.view(),
        w2: w2.view(),
        b2: b2.view(),
        activation: Activation::Sigmoid,
    };
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("two-layer gradient batch 100", |b| {
        b.iter(|| net.gradient(black_box(x.view()), Targets::Labels(t.view())))
    });
    group.finish();
}

fn bench_sparse_input(c: &mut Criterion) {
    bench_sparse_input_t::<f32>(c);
    bench_sparse_input_t::<f64>(c);
}

criterion_group!(
    benches,
    bench_matmul,
    bench_sparse_input,
    bench_elementwise,
    bench_numerical_gradient,
    bench_fused_epoch
);
criterion_main!(benches);
