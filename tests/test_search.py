"""Random search over lr and weight decay: sampling, validation split, ranking, output."""

from __future__ import annotations

import csv
import json

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
    with pytest.raises(ValueError, match="trials and epochs must be positive"):
        random_search(x, t, trials=0)
