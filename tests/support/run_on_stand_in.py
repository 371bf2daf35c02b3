"""Run a GPU script (a benchmark) on the strict CuPy stand-in, no GPU needed::

    PYTHONPATH=. python3 -m tests.support.run_on_stand_in benchmarks/mlp_gpu.py --cases c --repeats 1

``cupy`` is the stand-in (fused.cu's NumPy references registered), the capturable cuBLAS binding is the
fake one (tests/support/fake_cublas.py), so CUDA graphs capture and replay too; times are host times.
For checking that a script runs end to end before a GPU session, not for figures."""
from __future__ import annotations

import runpy
import sys


def main(argv: list[str]) -> None:
    from . import kernel_refs, strict_cupy
    strict_cupy.install()
    kernel_refs.register(strict_cupy)
    from gpugrad.backends.cuda import state
    from .fake_cublas import FakeCublasBinding
    state.runtime().binding = FakeCublasBinding(check_extents=False)
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
