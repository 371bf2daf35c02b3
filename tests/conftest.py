"""Shared test setup: a fixed seed per test, the ``gpu`` marker that skips without a CUDA device, and the
``on_cuda`` fixture (device "cuda" on the strict CuPy stand-in, and on a real GPU when there is one)."""
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


@pytest.fixture(params=["strict", pytest.param("gpu", marks=pytest.mark.gpu)])
def on_cuda(request, monkeypatch):
    """Device "cuda" on the strict CuPy stand-in (every run: CuPy's rules, no GPU) and on a real GPU
    (marked ``gpu``: skipped without one). Strict kernels: a kernel that fails raises. Yields the
    stand-in module (``None`` on a GPU)."""
    monkeypatch.setenv("GPUGRAD_STRICT_KERNELS", "1")
    if request.param == "strict":
        from tests.support import strict_cuda
        with strict_cuda() as sc:
            yield sc
    else:
        yield None


@pytest.fixture(params=["cpu", "strict_cuda"])
def cpu_or_strict_cuda(request):
    """The device name a test runs on: "cpu", or "cuda" on the strict CuPy stand-in."""
    if request.param == "cpu":
        yield "cpu"
        return
    from tests.support import strict_cuda
    with strict_cuda():
        yield "cuda"
