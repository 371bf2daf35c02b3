"""Datasets of ``gpugrad train``: shapes, standardisation, fixed stratified split, seeded synthetic data,
and shuffling that depends only on (seed, epoch)."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys

import numpy as np
import pytest

from gpugrad import data
from gpugrad.install_hints import hint


def test_digits_split_standardised_and_stratified():
    d = data.load_digits()
    assert d.task == "classification" and d.n_outputs == 10 and d.n_features == 64
    assert d.n_train + d.n_test == 1797 and abs(d.n_test / 1797 - 0.2) < 0.01
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    # standardised with the training statistics (constant border pixels stay 0)
    mu, sd = d.x_train.mean(0), d.x_train.std(0)
    assert np.abs(mu).max() < 1e-5
    assert np.all((np.abs(sd - 1) < 1e-4) | (sd < 1e-6))
    # stratified: every class in the same proportion in both splits
    frac = np.bincount(d.y_test, minlength=10) / np.bincount(d.y_train + 0, minlength=10).clip(1)
    assert frac.min() > 0.2 and frac.max() < 0.3
    # fixed split: the same every call, and no sample in both
    d2 = data.load_digits()
    np.testing.assert_array_equal(d.x_test, d2.x_test)
    train_rows = {r.tobytes() for r in d.x_train}
    assert sum(r.tobytes() in train_rows for r in d.x_test) < 5  # digits has a few duplicate images


# sha256 of the shipped digits' pixels (1797 x 64 uint8) then labels (1797 uint8)
DIGITS_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"


def test_shipped_digits_are_the_recorded_arrays():
    x, y = data.load_digits_raw()
    assert x.shape == (1797, 64) and x.dtype == np.uint8 and x.max() == 16
    assert y.shape == (1797,) and y.dtype == np.int64 and np.bincount(y).tolist() == [
        178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert hashlib.sha256(x.tobytes() + y.astype(np.uint8).tobytes()).hexdigest() == DIGITS_SHA256
    with np.load(data.DIGITS_PATH, allow_pickle=False) as z:  # the file says where it comes from
        assert set(z.files) == {"data", "target", "source"} and "CC BY 4.0" in str(z["source"])
    assert os.path.getsize(data.DIGITS_PATH) < 60_000


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="compares with scikit-learn's copy")
def test_shipped_digits_equal_scikit_learns():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "reference"))
    try:
        import record_digits
    finally:
        sys.path.pop(0)
    rec = record_digits.record()
    x, y = data.load_digits_raw()
    np.testing.assert_array_equal(x, rec["data"])
    np.testing.assert_array_equal(y, rec["target"])


def test_digits_load_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    assert data.load_digits().n_train == 1438


def test_synthetic_is_seeded_and_sized():
    a = data.make_synthetic("classification", n_samples=500, n_features=7, n_outputs=3, seed=1)
    b = data.make_synthetic("classification", n_samples=500, n_features=7, n_outputs=3, seed=1)
    c = data.make_synthetic("classification", n_samples=500, n_features=7, n_outputs=3, seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (400, 7) and a.x_test.shape == (100, 7)
    assert set(np.unique(a.y_train)) <= {0, 1, 2} and len(np.unique(a.y_train)) >= 2
    r = data.make_synthetic("regression", n_samples=300, n_features=5, n_outputs=2, seed=0)
    assert r.task == "regression" and r.y_train.shape == (240, 2) and r.y_train.dtype == np.float32
    assert 0.5 < r.y_train.std() < 2.0


@pytest.mark.parametrize("kwargs", [dict(task="ranking"), dict(n_samples=3), dict(n_outputs=1),
                                    dict(test_fraction=1.5)])
def test_synthetic_rejects_bad_arguments(kwargs):
    with pytest.raises(data.DatasetError, match="synthetic"):
        data.make_synthetic(**kwargs)


def test_unknown_dataset_names_the_choices():
    with pytest.raises(data.DatasetError, match="digits, mnist1d, synthetic"):
        data.load_dataset("cifar")


def test_epoch_permutation_depends_only_on_seed_and_epoch():
    p = data.epoch_permutation(100, 3, 5)
    np.testing.assert_array_equal(p, data.epoch_permutation(100, 3, 5))
    assert sorted(p.tolist()) == list(range(100))
    assert not np.array_equal(p, data.epoch_permutation(100, 3, 6))
    assert not np.array_equal(p, data.epoch_permutation(100, 4, 5))


def test_batch_slices_cover_everything():
    sl = list(data.batch_slices(10, 4))
    assert [(s.start, s.stop) for s in sl] == [(0, 4), (4, 8), (8, 10)]
    assert [(s.start, s.stop) for s in data.batch_slices(10, 4, drop_last=True)] == [(0, 4), (4, 8)]


def test_mnist1d_generated_locally_or_clear_message(monkeypatch):
    try:
        import mnist1d  # noqa: F401
    except ImportError:
        with pytest.raises(data.DatasetError, match="pip install mnist1d") as e:
            data.load_mnist1d()
        assert hint("mnist1d") in str(e.value)
        return
    state = np.random.get_state()[1].copy()
    d = data.load_mnist1d()
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40) and d.n_outputs == 10
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global NumPy RNG left alone


def test_mnist1d_missing_package_message(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("mnist1d"):
            raise ImportError("No module named 'mnist1d'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(data.DatasetError, match=r"pip install mnist1d") as e:
        data.load_mnist1d()
    assert hint("mnist1d") in str(e.value)
