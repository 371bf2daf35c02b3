"""Shared test setup: a fixed seed per test and the ``gpu`` marker that skips without a CUDA device."""
from __future__ import annotations

import os

import pytest


def _gpu_available() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        import gpugrad as gg
        return bool(gg.cuda.is_available())
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not _gpu_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (gg.cuda.is_available() is False)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    import gpugrad as gg
    gg.manual_seed(0)
    yield
