"""Write gpugrad/digits.npz, the digits data set that gpugrad ships, from scikit-learn's copy.

    pip install scikit-learn
    python3 tests/reference/record_digits.py        # rewrites gpugrad/digits.npz

The data is the test set of the UCI "Optical Recognition of Handwritten Digits" data set (E. Alpaydin,
C. Kaynak, 1998; https://archive.ics.uci.edu/dataset/80, licence CC BY 4.0), 1,797 8x8 images of
integer pixels 0..16, as scikit-learn ships it (``sklearn/datasets/data/digits.csv.gz``, read by
``sklearn.datasets.load_digits``). The file holds ``data`` (1797 x 64 uint8, row-major 8x8 images),
``target`` (1797 uint8 labels 0..9) and ``source`` (this provenance and the licence, as text), written
with ``np.savez_compressed`` (about 46 KB; no pickle). ``tests/test_data.py`` checks the file against
scikit-learn whenever scikit-learn is installed."""
from __future__ import annotations

import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATH = os.path.join(ROOT, "gpugrad", "digits.npz")
SOURCE = ("Optical Recognition of Handwritten Digits (E. Alpaydin, C. Kaynak, 1998), the test set, UCI Machine "
          "Learning Repository, https://archive.ics.uci.edu/dataset/80, licence CC BY 4.0 "
          "(https://creativecommons.org/licenses/by/4.0/); copied from scikit-learn's "
          "sklearn.datasets.load_digits (scikit-learn {version}). Written by tests/reference/record_digits.py.")


def record() -> dict[str, np.ndarray]:
    """The arrays of the file, from scikit-learn."""
    import sklearn
    from sklearn.datasets import load_digits
    d = load_digits()
    data = d.data.astype(np.uint8)
    target = d.target.astype(np.uint8)
    assert data.shape == (1797, 64) and np.array_equal(data, d.data) and np.array_equal(target, d.target)
    return {"data": data, "target": target, "source": np.array(SOURCE.format(version=sklearn.__version__))}


def main() -> None:
    arrays = record()
    tmp = PATH + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, PATH)
    print(f"wrote {PATH} ({os.path.getsize(PATH):,} bytes)")


if __name__ == "__main__":
    main()
