"""DLFS dataset/mnist.py on ferrograd's loader: checked IDX files and a cache, no pickle.

``load_mnist(normalize=True, flatten=True, one_hot_label=False)`` returns what the book's
does (float32 in [0, 1] or uint8 images, uint8 labels or float64 one-hot rows). Which
data: ``DATASET`` ("mnist", or "sample" for the shipped 5,000/1,000 subset), set by
``ferrograd book run --dataset``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ferrograd.datasets import MNIST, cache_dir, download
from ferrograd.datasets import load_mnist as _load_mnist

url_base = MNIST.mirrors[0]
key_file = {
    "train_img": "train-images-idx3-ubyte.gz",
    "train_label": "train-labels-idx1-ubyte.gz",
    "test_img": "t10k-images-idx3-ubyte.gz",
    "test_label": "t10k-labels-idx1-ubyte.gz",
}
dataset_dir = str(cache_dir("mnist"))
train_num = 60000
test_num = 10000
img_dim = (1, 28, 28)
img_size = 784

DATASET = "mnist"

__all__ = ["download_mnist", "init_mnist", "load_mnist", "np"]


def download_mnist() -> None:
    """Fetch the four MNIST files into ferrograd's cache (checksums verified)."""
    download(MNIST)


def init_mnist() -> None:
    """The book converts to a pickle here; ferrograd reads the IDX files directly."""
    download_mnist()


def load_mnist(
    normalize: bool = True, flatten: bool = True, one_hot_label: bool = False
) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """``(x_train, t_train), (x_test, t_test)`` in the book's shapes and dtypes.

    Reads ``DATASET`` ("mnist" or "sample") through :func:`ferrograd.load_mnist`.

    Parameters
    ----------
    normalize : bool, default True
        float32 pixels in [0, 1]; else uint8 0..255.
    flatten : bool, default True
        Rows of 784; else (N, 1, 28, 28).
    one_hot_label : bool, default False
        float64 one-hot rows (N, 10), as the book's; else uint8 labels (N,).

    Returns
    -------
    tuple of tuple of numpy.ndarray
        60,000 training and 10,000 test images (5,000 and 1,000 for the sample).
    """
    (x, t), (xt, tt) = _load_mnist(normalize, flatten, one_hot_label, dataset=DATASET)
    if one_hot_label:  # the book's one-hot rows are float64 (np.zeros), whatever x is
        t, tt = t.astype(np.float64), tt.astype(np.float64)
    return (x, t), (xt, tt)
