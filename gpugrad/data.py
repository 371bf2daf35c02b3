"""Small datasets for ``gpugrad train`` and examples: ``digits`` (the 8x8 handwritten digits, shipped with
gpugrad as ``gpugrad/digits.npz``),
``mnist1d`` (generated locally by the optional ``mnist1d`` package) and ``synthetic`` (seeded
classification or regression of any size). Everything is NumPy on the host; the trainer moves it to
the device once.

Shuffling is a pure function of ``(seed, epoch)`` (:func:`epoch_permutation`), so a resumed run
draws exactly the batches an uninterrupted one would."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .install_hints import hint

DATASETS = ("digits", "mnist1d", "synthetic")
SPLIT_SEED = 0  # the train/test split is fixed, whatever the training seed


class DatasetError(ValueError):
    """A dataset that cannot be built (unknown name, bad size, missing optional package)."""


@dataclass
class Dataset:
    """Features ``x_*`` (float32, standardised with the training statistics) and targets ``y_*``
    (int64 class labels for classification, float32 ``(n, n_outputs)`` for regression)."""

    name: str
    task: str  # "classification" | "regression"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_outputs: int  # classes, or regression targets
    info: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def describe(self) -> str:
        kind = f"{self.n_outputs} classes" if self.task == "classification" else f"{self.n_outputs} target(s)"
        return (f"{self.name}: {self.task}, {self.n_features} features, {kind}, "
                f"{self.n_train} train / {self.n_test} test")


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of ``epoch``: depends only on ``(seed, epoch)``, never on earlier epochs."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x5EED]).permutation(n)


def batch_slices(n: int, batch_size: int, drop_last: bool = False) -> Iterator[slice]:
    """Consecutive ``slice`` objects covering ``range(n)`` in steps of ``batch_size``."""
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        yield slice(i, min(i + batch_size, n))


def shard_batch(indices: Any, rank: int, world_size: int) -> Any:
    """Rank ``rank``'s strided share ``indices[rank::world_size]`` of one global batch (indices, or the
    batch itself: a NumPy/CuPy array or a Tensor). Sizes differ by at most one sample; a rank may get
    none when the batch is smaller than the world."""
    return indices[rank::world_size]


class DistributedSampler:
    """Sample indices of this rank's shard of a dataset, PyTorch's ``DistributedSampler``.

    Every epoch the whole index range is permuted from ``(seed, epoch)`` (the same on every rank:
    call ``set_epoch(epoch)`` before each epoch), made divisible by ``num_replicas`` (padding with
    the first indices again, or with ``drop_last`` dropping the tail) and dealt rank-strided:
    rank ``r`` gets positions ``r, r + num_replicas, ...``. ``num_replicas`` and ``rank`` default to
    the initialized process group's."""

    def __init__(self, dataset: "int | Dataset | object", num_replicas: int | None = None,
                 rank: int | None = None, shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        n = dataset if isinstance(dataset, (int, np.integer)) else (
            dataset.n_train if isinstance(dataset, Dataset) else len(dataset))  # type: ignore[arg-type]
        if num_replicas is None or rank is None:
            from . import distributed as _dist
            if not _dist.is_initialized():
                raise ValueError("DistributedSampler: pass num_replicas and rank, or call "
                                 "gg.distributed.init_process_group() first")
            num_replicas = _dist.get_world_size() if num_replicas is None else num_replicas
            rank = _dist.get_rank() if rank is None else rank
        if int(num_replicas) < 1 or not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"DistributedSampler: need num_replicas >= 1 and 0 <= rank < num_replicas, got "
                             f"num_replicas={num_replicas}, rank={rank}")
        if int(n) < 0:
            raise ValueError(f"DistributedSampler: dataset length must be >= 0, got {n}")
        self.n, self.num_replicas, self.rank = int(n), int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last, self.epoch = bool(shuffle), int(seed), bool(drop_last), 0
        self.num_samples = self.n // self.num_replicas if self.drop_last else -(-self.n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` (call it on every rank before each epoch)."""
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, as an int64 array."""
        idx = epoch_permutation(self.n, self.seed, self.epoch) if self.shuffle else np.arange(self.n)
        # np.resize pads by repeating from the start (enough times for tiny data) or drops the tail
        return shard_batch(np.resize(idx, self.total_size), self.rank, self.num_replicas).astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x_train.mean(axis=0, keepdims=True)
    std = x_train.std(axis=0, keepdims=True)
    std = np.where(std > 1e-8, std, 1.0)  # constant pixels (digits' border) stay 0
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified split (each class split in the same proportion), fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    return rng.permutation(train_idx), rng.permutation(test_idx)


DIGITS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.npz")


def load_digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """The digits data as shipped: ``(images, labels)``, 1797 x 64 uint8 pixels 0..16 (row-major 8x8
    images) and 1797 int64 labels 0..9. The test set of the UCI "Optical Recognition of Handwritten
    Digits" data set (Alpaydin and Kaynak, 1998; licence CC BY 4.0), as scikit-learn's
    ``load_digits`` has it (``tests/reference/record_digits.py`` wrote the file from it)."""
    with np.load(DIGITS_PATH, allow_pickle=False) as z:
        return z["data"], z["target"].astype(np.int64)


def load_digits(test_fraction: float = 0.2) -> Dataset:
    """The 8x8 handwritten digits (1797 samples, shipped with gpugrad: no download), standardised,
    stratified 80/20 split with a fixed seed."""
    images, labels = load_digits_raw()
    x = images.astype(np.float64)
    tr, te = _stratified_split(labels, test_fraction, SPLIT_SEED)
    x_tr, x_te = _standardise(x[tr], x[te])
    return Dataset("digits", "classification", x_tr, labels[tr], x_te, labels[te], 10,
                   {"source": "UCI optical recognition of handwritten digits (test set), CC BY 4.0, "
                              "shipped as gpugrad/digits.npz",
                    "split": f"stratified {1 - test_fraction:.0%}/{test_fraction:.0%}, seed {SPLIT_SEED}"})


def load_mnist1d() -> Dataset:
    """MNIST-1D (Greydanus 2020) generated locally with ``mnist1d.data.make_dataset`` and its default
    arguments (5000 samples of length 40, 4000 train / 1000 test, seed 42): never downloaded."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise DatasetError(
            f"mnist1d: the optional 'mnist1d' package is not installed. Fix: {hint('mnist1d')}; the data set is "
            "then generated locally, no download.") from e
    state = np.random.get_state()  # make_dataset seeds NumPy's global generator: leave it as it was
    try:
        d = make_dataset(get_dataset_args())
    except Exception as e:
        raise DatasetError(f"mnist1d: mnist1d.data.make_dataset failed: {type(e).__name__}: {e}") from e
    finally:
        np.random.set_state(state)
    x_tr, x_te = _standardise(np.asarray(d["x"], np.float64), np.asarray(d["x_test"], np.float64))
    return Dataset("mnist1d", "classification", x_tr, np.asarray(d["y"], np.int64), x_te,
                   np.asarray(d["y_test"], np.int64), 10,
                   {"source": "mnist1d.data.make_dataset(get_dataset_args())"})


def make_synthetic(task: str = "classification", n_samples: int = 2000, n_features: int = 32,
                   n_outputs: int = 4, noise: float = 0.05, seed: int = 0,
                   test_fraction: float = 0.2) -> Dataset:
    """A seeded synthetic problem that an MLP can learn but a linear model cannot.

    ``x ~ N(0, I)``; a random two-layer tanh "teacher" network ``h = tanh(x A / sqrt(d)) B``
    gives the target: ``argmax(h)`` for classification (``n_outputs`` classes), ``h + noise`` for
    regression (``n_outputs`` targets)."""
    if task not in ("classification", "regression"):
        raise DatasetError(f"synthetic: unknown task {task!r}; expected 'classification' or 'regression'")
    if n_samples < 10 or n_features < 1 or n_outputs < 1 or (task == "classification" and n_outputs < 2):
        raise DatasetError(
            f"synthetic: need n_samples >= 10, n_features >= 1 and n_outputs >= 1 (>= 2 classes for "
            f"classification); got n_samples={n_samples}, n_features={n_features}, n_outputs={n_outputs}")
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"synthetic: test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xDA7A])
    hidden = max(16, 2 * n_features)
    a = rng.standard_normal((n_features, hidden))
    b = rng.standard_normal((hidden, n_outputs))
    x = rng.standard_normal((n_samples, n_features))
    h = np.tanh(x @ a / np.sqrt(n_features)) @ b / np.sqrt(hidden)
    n_test = max(1, int(round(n_samples * test_fraction)))
    x_tr, x_te = _standardise(x[n_test:], x[:n_test])
    info = {"source": "random tanh teacher", "task": task, "noise": noise, "seed": seed}
    if task == "classification":
        y = np.argmax(h + noise * rng.standard_normal(h.shape), axis=1).astype(np.int64)
        return Dataset("synthetic", task, x_tr, y[n_test:], x_te, y[:n_test], n_outputs, info)
    y = (h / h.std(axis=0, keepdims=True) + noise * rng.standard_normal(h.shape)).astype(np.float32)
    return Dataset("synthetic", task, x_tr, y[n_test:], x_te, y[:n_test], n_outputs, info)


def load_dataset(name: str, **synthetic_kwargs) -> Dataset:
    """A dataset by name: ``digits``, ``mnist1d`` or ``synthetic`` (keyword arguments go to
    :func:`make_synthetic`)."""
    if name == "digits":
        return load_digits()
    if name == "mnist1d":
        return load_mnist1d()
    if name == "synthetic":
        return make_synthetic(**synthetic_kwargs)
    raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


__all__ = ["DATASETS", "Dataset", "DatasetError", "DistributedSampler", "batch_slices", "shard_batch", "epoch_permutation",
           "load_digits", "load_digits_raw", "load_dataset", "load_mnist1d", "make_synthetic"]
