//! Criterion benchmarks of the kernels on the book network's shapes.
//!
//! `cargo bench` (all) or `cargo bench -- matmul` (one group). Thread count:
//! `FERROGRAD_NUM_THREADS`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrograd::kernels::numgrad::{numerical_gradient_bruteforce, Activation, TwoLayerNet};
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

fn bench_numerical_gradient(c: &mut Criterion) {
    let mut group = c.benchmark_group("numerical_gradient");
    group.sample_size(10);
    // A reduced net keeps the brute force within a benchmark's patience.
    let (d, h, k, n) = (64, 16, 10, 32);
    let (w1, w2) = (filled::<f64>(d, h, 4) * 0.01, filled::<f64>(h, k, 5) * 0.01);
    let (b1, b2) = (Array1::zeros(h), Array1::zeros(k));
    let x = filled::<f64>(n, d, 6).mapv(|v| v.max(0.0));
    let labels = Array1::from_shape_fn(n, |i| (i % k) as i64);
    let net = TwoLayerNet {
        w1: w1.view(),
        b1: b1.view(),
        w2: w2.view(),
        b2: b2.view(),
        activation: Activation::Sigmoid,
    };
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
    group.finish();
}

criterion_group!(
    benches,
    bench_matmul,
    bench_elementwise,
    bench_numerical_gradient
);
criterion_main!(benches);
