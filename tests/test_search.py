"""Random search over lr and weight decay: sampling, validation split, ranking, output,
and its worker processes: scripts without a main guard, daemonic callers, Ctrl-C (each in
a child interpreter with a timeout, where a hang is the failure)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from ferrograd.datasets import load_mnist_sample
from ferrograd.search import Trial, format_ranking, random_search, save_results, split_validation


def test_split_validation_is_a_partition():
    x = np.arange(50).reshape(50, 1)
    t = np.arange(50)
    (xt, tt), (xv, tv) = split_validation(x, t, 0.2, seed=0)
    assert xv.shape == (10, 1) and xt.shape == (40, 1)
    assert sorted([*tt.tolist(), *tv.tolist()]) == list(range(50))
    np.testing.assert_array_equal(xv[:, 0], tv)
    with pytest.raises(ValueError, match="validation_ratio must be in"):
        split_validation(x, t, 1.5)


@pytest.fixture(scope="module")
def sample():
    (x, t), _ = load_mnist_sample()
    return x, t


def test_search_in_process_ranks_and_samples_log_uniform(sample):
    x, t = sample
    res = random_search(
        x,
        t,
        trials=4,
        epochs=2,
        train_size=400,
        hidden=[20],
        lr_range=(1e-3, 1e-1),
        weight_decay_range=(1e-8, 1e-4),
        processes=1,
        seed=3,
    )
    assert sorted(r.index for r in res) == [0, 1, 2, 3]
    accs = [r.val_acc for r in res]
    assert accs == sorted(accs, reverse=True)
    rng = np.random.default_rng(3)
    lrs = 10 ** rng.uniform(-3, -1, 4)
    assert sorted(r.lr for r in res) == pytest.approx(sorted(lrs))
    assert all(1e-8 <= r.weight_decay <= 1e-4 for r in res)
    # the largest learning rate learns most in two short epochs on 320 images
    best_lr = max(res, key=lambda r: r.lr)
    worst_lr = min(res, key=lambda r: r.lr)
    assert best_lr.val_acc > worst_lr.val_acc


def test_search_parallel_equals_in_process(sample):
    x, t = sample
    kw = dict(trials=2, epochs=1, train_size=300, hidden=[10], seed=7)
    serial = random_search(x, t, processes=1, **kw)
    parallel = random_search(x, t, processes=2, **kw)
    assert [(r.index, r.lr, r.val_acc) for r in serial] == [
        (r.index, r.lr, r.val_acc) for r in parallel
    ]


def test_save_results_csv_and_json(tmp_path):
    res = [Trial(1, 0.01, 1e-6, 0.9, 0.95, 1.0), Trial(0, 0.001, 1e-5, 0.5, 0.6, 1.0)]
    with open(save_results(res, tmp_path / "r.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["rank"] == "1" and rows[0]["index"] == "1" and float(rows[1]["lr"]) == 0.001
    data = json.loads(save_results(res, tmp_path / "r.json").read_text())
    assert data[1] == {
        "rank": 2,
        "index": 0,
        "lr": 0.001,
        "weight_decay": 1e-5,
        "val_acc": 0.5,
        "train_acc": 0.6,
        "seconds": 1.0,
    }
    text = format_ranking(res)
    assert text.splitlines()[1].split("|")[1].strip() == "0.9000"


def test_bad_ranges(sample):
    x, t = sample
    with pytest.raises(ValueError, match="lr_range must be 0 < low <= high"):
        random_search(x, t, lr_range=(0, 1))
    with pytest.raises(ValueError, match="trials must be a positive int, got 0"):
        random_search(x, t, trials=0)


def test_processes_must_be_a_positive_int(sample):
    x, t = sample
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="processes must be a positive int or None, got"):
            random_search(x, t, trials=1, epochs=1, processes=bad)


# ------------------------------------------------------------- workers and the caller


SEARCH = """
import numpy as np
from ferrograd.datasets import load_mnist_sample
from ferrograd.search import random_search
print("top level of", __name__, flush=True)
(x, t), _ = load_mnist_sample()
res = random_search(x, t, trials=3, epochs=1, train_size=300, hidden=[10], seed=7, processes=2)
print("trials", sorted(r.index for r in res), flush=True)
"""


def run(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("how", ["unguarded script", "unguarded module", "guarded script"])
def test_a_script_runs_its_search_once_with_or_without_a_main_guard(tmp_path, how):
    """The book writes its scripts without ``if __name__ == "__main__":``; the workers must
    not run such a script again (they did, each started its own search, and the caller
    waited for ever)."""
    code = SEARCH
    if how == "guarded script":
        code = "if __name__ == '__main__':\n" + textwrap.indent(SEARCH, "    ")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "search_script.py").write_text(code)
    argv = ["-m", "pkg.search_script"] if how == "unguarded module" else ["pkg/search_script.py"]
    proc = run(argv, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["top level of __main__", "trials [0, 1, 2]"]


def test_a_book_style_script_searches_through_the_book_runner(tmp_path):
    """A script in the book's manner (its imports, no main guard) run by ``ferrograd book
    run``, as the book's ch06/hyperparameter_optimization.py is."""
    chapter = tmp_path / "book" / "ch06"
    chapter.mkdir(parents=True)
    (chapter / "search_small.py").write_text(
        textwrap.dedent("""
        import sys, os
        sys.path.append(os.pardir)
        import numpy as np
        from dataset.mnist import load_mnist
        from common.util import shuffle_dataset
        from ferrograd.search import random_search, format_ranking

        (x_train, t_train), (x_test, t_test) = load_mnist(normalize=True)
        x_train, t_train = shuffle_dataset(x_train[:500], t_train[:500])
        results = random_search(x_train, t_train, trials=2, epochs=1, hidden=[20], processes=2)
        print(format_ranking(results))
        """)
    )
    argv = ["-m", "ferrograd", "book", "run", "--book", str(tmp_path / "book")]
    proc = run([*argv, "--dataset", "sample", "ch06/search_small.py"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("rank | val acc") and len(lines) == 3


@pytest.mark.slow
def test_the_books_hyperparameter_optimization_runs_through_the_runner(tmp_path):
    """The book's own script, unchanged (100 trials of 50 epochs: about 2.5 minutes on
    the sample, two cores). Needs the book's checkout in $FERROGRAD_BOOK."""
    book_dir = os.environ.get("FERROGRAD_BOOK")
    if not book_dir or not (Path(book_dir) / "ch06/hyperparameter_optimization.py").exists():
        pytest.skip("FERROGRAD_BOOK does not name a checkout of the book's code")
    argv = ["-m", "ferrograd", "book", "run", "--book", book_dir, "--dataset", "sample"]
    proc = subprocess.run(
        [sys.executable, *argv, "ch06/hyperparameter_optimization.py"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert sum(ln.startswith("val acc:") for ln in lines) == 100
    assert sum(ln.startswith("Best-") for ln in lines) == 20


def test_a_search_from_a_daemonic_process_runs_in_that_process(tmp_path):
    """A multiprocessing.Pool worker may not start processes of its own: the trials run
    there instead of failing on an assertion about daemonic processes."""
    script = tmp_path / "pool.py"
    script.write_text(
        textwrap.dedent("""
        import multiprocessing
        from ferrograd.datasets import load_mnist_sample
        from ferrograd.search import random_search

        def work(seed):
            (x, t), _ = load_mnist_sample()
            res = random_search(x, t, trials=2, epochs=1, train_size=300, hidden=[10], seed=seed)
            return sorted(r.index for r in res)

        if __name__ == "__main__":
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                print(pool.map(work, [3]))
        """)
    )
    proc = run([str(script)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[[0, 1]]"


def _processes_marked(mark: str) -> list[int]:
    """PIDs of live processes whose environment holds ``mark`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark.encode() in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="Linux /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_the_search_and_its_workers_at_once(tmp_path, sig):
    """Ctrl-C or SIGTERM to the caller alone: the queued trials (minutes of work) are not
    waited for and no worker is left running (orphans once went on for minutes)."""
    mark = f"FERROGRAD_TEST_MARK={uuid.uuid4().hex}"
    script = tmp_path / "long.py"
    script.write_text(
        textwrap.dedent("""
        from ferrograd.datasets import load_mnist_sample
        from ferrograd.search import random_search
        if __name__ == "__main__":
            (x, t), _ = load_mnist_sample()
            print("start", flush=True)
            random_search(x, t, trials=6, epochs=500, train_size=5000, hidden=[100, 100],
                          processes=2)
        """)
    )
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "start\n"
        for _ in range(600):  # the two workers are up
            if len(_processes_marked(mark)) >= 3:
                break
            time.sleep(0.05)
        time.sleep(1.0)
        child.send_signal(sig)
        start = time.monotonic()
        _, err = child.communicate(timeout=60)
        took = time.monotonic() - start
    finally:
        child.kill()
        for _ in range(100):  # terminated workers may take a moment to be reaped
            left = _processes_marked(mark)
            if not left:
                break
            time.sleep(0.05)
        for pid in left:  # a failed test must not leave them running
            os.kill(pid, signal.SIGKILL)
    assert child.returncode == -sig and took < 10
    assert sig != signal.SIGINT or "KeyboardInterrupt" in err
    assert left == []


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"train_size": 0}, "train_size must be a positive int .* or None .*, got 0"),
        ({"train_size": -5}, "train_size must be a positive int"),
        ({"epochs": 2.5}, "epochs must be a positive int, got 2.5"),
        ({"lr_range": (1e-3, float("inf"))}, r"lr_range must be 0 < low <= high, got \(0.001, inf"),
        ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
        ({"optimizer": "adamw"}, "unknown optimizer 'adamw'"),
        ({"activation": "tanh"}, "activation"),
    ],
)
def test_mistakes_are_one_error_before_any_worker_starts(sample, kw, message):
    x, t = sample
    with pytest.raises(ValueError, match=message):
        random_search(x, t, trials=2, processes=2, **{"epochs": 1, **kw})


def test_rows_must_match_and_images_are_flattened(sample):
    x, t = sample
    with pytest.raises(ValueError, match=r"as many rows, got shapes \(5000, 784\) and \(100,\)"):
        random_search(x, t[:100], trials=1, epochs=1)
    kw = dict(trials=2, epochs=1, train_size=300, hidden=[10], seed=5, processes=1)
    flat = random_search(x, t, **kw)
    images = random_search(x.reshape(-1, 1, 28, 28), t, **kw)  # load_mnist(flatten=False)
    assert [(r.lr, r.val_acc) for r in flat] == [(r.lr, r.val_acc) for r in images]
