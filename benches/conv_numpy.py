"""One training step of the book's SimpleConvNet (ch. 7): ferrograd against NumPy and PyTorch.

    python benches/conv_numpy.py [--steps 30] [--repeat 5] [--only numpy,fg32,fg64,fused32,fused64,torch]
    python benches/conv_numpy.py --layers [--dtype float32]   # where a layer-path step goes

conv 30×5×5 → ReLU → 2×2 max pool → Affine 100 → ReLU → Affine 10 → softmax
cross-entropy, batch 100, Adam lr 0.001, on real MNIST (FERROGRAD_DATA or the cache).
Contenders:

- ``numpy``: the book's formulas written out here in NumPy (im2col, one product, col2im;
  pooling through im2col and argmax; Adam in place), float64 as the book runs;
- ``fg32`` / ``fg64``: ``ferrograd.nets.SimpleConvNet`` (``loss_and_gradient``) and
  ``ferrograd.optimizers.Adam``, layer by layer (the book's loop);
- ``fused32`` / ``fused64``: the same net and optimizer through ``ferrograd.fused`` (one
  native call per run of steps), the step ``Trainer`` takes;
- ``torch``: the same net in PyTorch (float32, ``torch.set_num_threads`` = the cores or
  ``--torch-threads``; on a loaded 2-core VM one thread is several times faster than
  two), skipped when torch is not installed.

Each repeat runs ``--steps`` steps per contender, contenders taking turns (A B A B ...);
prints ms per step (median and best) and the epoch (600 steps) it implies, with ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

# ---- the book's SimpleConvNet in NumPy (formulas of DLFS ch. 7, written out) ----------


def im2col(x, fh, fw, stride=1, pad=0):
    n, c, h, w = x.shape
    oh, ow = (h + 2 * pad - fh) // stride + 1, (w + 2 * pad - fw) // stride + 1
    xp = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    col = np.empty((n, c, fh, fw, oh, ow), dtype=x.dtype)
    for ky in range(fh):
        for kx in range(fw):
            col[:, :, ky, kx] = xp[
                :, :, ky : ky + stride * oh : stride, kx : kx + stride * ow : stride
            ]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, -1)


def col2im(col, shape, fh, fw, stride=1, pad=0):
    n, c, h, w = shape
    oh, ow = (h + 2 * pad - fh) // stride + 1, (w + 2 * pad - fw) // stride + 1
    col = col.reshape(n, oh, ow, c, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((n, c, h + 2 * pad + stride - 1, w + 2 * pad + stride - 1), dtype=col.dtype)
    for ky in range(fh):
        for kx in range(fw):
            img[:, :, ky : ky + stride * oh : stride, kx : kx + stride * ow : stride] += col[
                :, :, ky, kx
            ]
    return img[:, :, pad : h + pad, pad : w + pad]


class NumpyConvNet:
    def __init__(self, rng, dtype=np.float64):
        self.p = {
            "W1": 0.01 * rng.standard_normal((30, 1, 5, 5)),
            "b1": np.zeros(30),
            "W2": 0.01 * rng.standard_normal((4320, 100)),
            "b2": np.zeros(100),
            "W3": 0.01 * rng.standard_normal((100, 10)),
            "b3": np.zeros(10),
        }
        self.p = {k: v.astype(dtype) for k, v in self.p.items()}

    def loss_and_gradient(self, x, t):
        p, n = self.p, x.shape[0]
        col = im2col(x, 5, 5)  # conv: out = col · col_W + b
        col_w = p["W1"].reshape(30, -1).T
        a1 = (col @ col_w + p["b1"]).reshape(n, 24, 24, 30).transpose(0, 3, 1, 2)
        r1 = np.maximum(a1, 0)
        pcol = im2col(r1, 2, 2, 2).reshape(-1, 4)  # pool: max of each window
        arg = np.argmax(pcol, axis=1)
        z = np.max(pcol, axis=1).reshape(n, 12, 12, 30).transpose(0, 3, 1, 2)
        zf = z.reshape(n, -1)
        a2 = zf @ p["W2"] + p["b2"]
        r2 = np.maximum(a2, 0)
        s = r2 @ p["W3"] + p["b3"]
        s = s - s.max(axis=1, keepdims=True)
        y = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
        loss = -np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n
        ds = y.copy()
        ds[np.arange(n), t] -= 1
        ds /= n
        g = {"W3": r2.T @ ds, "b3": ds.sum(axis=0)}
        dr2 = (ds @ p["W3"].T) * (a2 > 0)
        g["W2"], g["b2"] = zf.T @ dr2, dr2.sum(axis=0)
        dz = (dr2 @ p["W2"].T).reshape(z.shape).transpose(0, 2, 3, 1)
        dmax = np.zeros((dz.size, 4), dtype=dz.dtype)
        dmax[np.arange(arg.size), arg] = dz.ravel()
        dr1 = col2im(dmax.reshape(n * 144, -1), r1.shape, 2, 2, 2) * (a1 > 0)
        da1 = dr1.transpose(0, 2, 3, 1).reshape(-1, 30)
        g["b1"] = da1.sum(axis=0)
        g["W1"] = (col.T @ da1).T.reshape(30, 1, 5, 5)
        return loss, g


class NumpyAdam:
    def __init__(self, lr=0.001, b1=0.9, b2=0.999):
        self.lr, self.b1, self.b2, self.it, self.m, self.v = lr, b1, b2, 0, None, None

    def update(self, params, grads):
        if self.m is None:
            self.m = {k: np.zeros_like(v) for k, v in params.items()}
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.it += 1
        lr_t = self.lr * np.sqrt(1 - self.b2**self.it) / (1 - self.b1**self.it)
        for k in params:
            self.m[k] += (1 - self.b1) * (grads[k] - self.m[k])
            self.v[k] += (1 - self.b2) * (grads[k] ** 2 - self.v[k])
            params[k] -= lr_t * self.m[k] / (np.sqrt(self.v[k]) + 1e-7)


# ---- contenders -----------------------------------------------------------------------


def contenders(
    only: set[str], x, t, torch_threads: int | None = None
) -> dict[str, Callable[[np.ndarray], float]]:
    import ferrograd as fg
    from ferrograd.nets import SimpleConvNet

    steps: dict[str, Callable[[np.ndarray], float]] = {}
    if "numpy" in only:
        net, opt, x64 = NumpyConvNet(np.random.default_rng(0)), NumpyAdam(), x.astype(np.float64)

        def numpy_step(idx, net=net, opt=opt, x64=x64):
            for rows in idx:
                loss, g = net.loss_and_gradient(x64[rows], t[rows])
                opt.update(net.p, g)
            return loss

        steps["numpy f64 (book)"] = numpy_step
    for name, dtype in (("fg32", np.float32), ("fg64", np.float64)):
        if name in only:
            net, opt, xd = SimpleConvNet(seed=0, dtype=dtype), fg.Adam(lr=0.001), x.astype(dtype)

            def fg_step(idx, net=net, opt=opt, xd=xd):
                for rows in idx:
                    loss, g = net.loss_and_gradient(xd[rows], t[rows])
                    opt.update(net.params, g)
                return loss

            steps[f"ferrograd {np.dtype(dtype).name} layers"] = fg_step
    for name, dtype in (("fused32", np.float32), ("fused64", np.float64)):
        if name in only:
            from ferrograd.fused import FusedTrainer

            net, opt, xd = SimpleConvNet(seed=0, dtype=dtype), fg.Adam(lr=0.001), x.astype(dtype)
            trainer = FusedTrainer(net, opt)

            def fused_steps(idx, trainer=trainer, xd=xd):
                return trainer.run_epoch(xd, t, idx)[-1]

            steps[f"ferrograd {np.dtype(dtype).name} fused"] = fused_steps
    if "torch" in only:
        try:
            import torch
        except ImportError:
            print("torch is not installed: skipped")
        else:
            torch.set_num_threads(torch_threads or os.cpu_count() or 1)
            torch.manual_seed(0)
            model = torch.nn.Sequential(
                torch.nn.Conv2d(1, 30, 5),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2, 2),
                torch.nn.Flatten(),
                torch.nn.Linear(4320, 100),
                torch.nn.ReLU(),
                torch.nn.Linear(100, 10),
            )
            opt_t = torch.optim.Adam(model.parameters(), lr=0.001)
            xt, tt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(t)
            lossf = torch.nn.CrossEntropyLoss()

            def torch_step(idx):
                for rows in idx:
                    i = torch.from_numpy(rows)
                    opt_t.zero_grad()
                    loss = lossf(model(xt[i]), tt[i])
                    loss.backward()
                    opt_t.step()
                return float(loss.detach())

            threads = torch.get_num_threads()
            steps[f"torch {torch.__version__} float32, {threads} thread(s)"] = torch_step
    return steps


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def layer_breakdown(x, t, dtype, repeat: int) -> None:
    """ms per layer (forward, backward) of the layer path at batch 100, median and best."""
    import ferrograd as fg
    from ferrograd.layers import as_targets
    from ferrograd.nets import SimpleConvNet

    net, opt = SimpleConvNet(seed=0, dtype=dtype), fg.Adam(lr=0.001)
    xd, rng = x.astype(dtype), np.random.default_rng(2)
    names = list(net.layers)
    rows = {f"{k} {d}": [] for k in names for d in ("forward", "backward")}
    rows.update({"softmax-with-loss": [], "Adam update": [], "whole step": []})
    for it in range(repeat + 20):  # 20 steps first: trained weights, warm caches
        idx = rng.integers(0, len(x), 100)
        t0 = time.perf_counter()
        out, tb = net._images("loss", xd[idx]), t[idx]
        for k in names:
            s = time.perf_counter()
            out = net.layers[k].forward(out)
            rows[f"{k} forward"].append(time.perf_counter() - s)
        s = time.perf_counter()
        net.last_layer.forward(out, as_targets("bench", tb, 100, 10, net.dtype))
        d = net.last_layer.backward(1)
        rows["softmax-with-loss"].append(time.perf_counter() - s)
        for k in reversed(names):
            s = time.perf_counter()
            d = net.layers[k].backward(d)
            rows[f"{k} backward"].append(time.perf_counter() - s)
        grads = {}
        for i, layer in enumerate(net._param_layers(), start=1):
            grads[f"W{i}"], grads[f"b{i}"] = layer.dW, layer.db
        s = time.perf_counter()
        opt.update(net.params, grads)
        rows["Adam update"].append(time.perf_counter() - s)
        rows["whole step"].append(time.perf_counter() - t0)
        if it == 19:
            for v in rows.values():
                v.clear()
    print(f"# layer path, {np.dtype(dtype).name}, batch 100, {repeat} steps after 20")
    print("part | ms median | ms best")
    for name, v in rows.items():
        print(f"{name} | {statistics.median(v) * 1e3:.3f} | {min(v) * 1e3:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default="numpy,fg32,fg64,fused32,fused64,torch")
    ap.add_argument("--layers", action="store_true", help="per-layer times of the layer path")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument(
        "--torch-threads", type=int, default=None, help="PyTorch's threads (default: the cores)"
    )
    args = ap.parse_args()
    import ferrograd as fg

    (x, t), _ = fg.load_mnist(flatten=False, dtype=np.float32, download_ok=False)
    t = t.astype(np.int64)
    if args.layers:
        print(f"# {cpu_name()}, {os.cpu_count()} cores; numpy {np.__version__}")
        layer_breakdown(x, t, np.dtype(args.dtype), max(args.repeat, 30))
        return
    steps = contenders(set(args.only.split(",")), x, t, args.torch_threads)
    rng = np.random.default_rng(1)
    for step in steps.values():  # warm-up
        step(rng.integers(0, len(x), (3, 100)))
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.repeat):
        for name, step in steps.items():
            batches = rng.integers(0, len(x), (args.steps, 100))
            start = time.perf_counter()
            step(batches)  # one call per run of steps (the fused trainer's unit)
            times[name].append((time.perf_counter() - start) / args.steps * 1e3)
    threads = os.environ.get("FERROGRAD_NUM_THREADS", "all cores")
    print(
        f"# {cpu_name()}, {os.cpu_count()} cores; ferrograd threads: {threads}; numpy {np.__version__}"
    )
    print(
        f"# {args.repeat} repeats x {args.steps} steps, batch 100, Adam lr 0.001; epoch = 600 steps"
    )
    ours = [statistics.median(v) for k, v in times.items() if k.startswith("ferrograd")]
    base = min(ours) if ours else min(statistics.median(v) for v in times.values())
    print("contender | ms/step median | ms/step best | epoch s (median) | × ferrograd fastest")
    for name, v in times.items():
        med = statistics.median(v)
        print(f"{name} | {med:.2f} | {min(v):.2f} | {med * 0.6:.1f} | {med / base:.2f}")


if __name__ == "__main__":
    main()
