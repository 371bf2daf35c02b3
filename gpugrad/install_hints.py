"""How to install each optional package: the one source of the hints printed by ``gpugrad info`` and by
the errors of the CUDA backend, the data sets and gg.distributed, and written in the README (a test
checks the README quotes them verbatim).
Paths are relative to a gpugrad checkout (``pip install ".[extra]"``). Imports nothing."""
from __future__ import annotations

INSTALL_HINTS: dict[str, str] = {
    "cupy": 'pip install ".[cuda12]" (CUDA 12.x driver) or pip install ".[cuda13]" (CUDA 13.x driver)',
    "torch": 'pip install ".[torch]" (PyTorch 2.13.0: the benchmarks\' baseline and the live conformance tests)',
    "matplotlib": 'pip install matplotlib (a dependency of gpugrad: the PNG plots)',
    "mnist1d": 'pip install mnist1d (or, from a checkout: pip install ".[mnist1d]")',
    "safetensors": 'pip install ".[safetensors]" (.safetensors checkpoints; .npz needs nothing)',
    "nvmath": 'pip install ".[nvmath]" (cuBLASLt epilogues on CUDA)',
    "mkl": 'pip install ".[mkl]" (MKL GEMMs on CPU, opt-in)',
    "mpi": 'pip install mpi4py mpich (or, from a checkout: pip install ".[mpi]"), then launch with mpiexec -n N',
    "nccl": "pip install 'cupy-cuda13x[ctk]' nvidia-nccl-cu13 (or cupy-cuda12x with nvidia-nccl-cu12)",
}


def hint(package: str) -> str:
    """The install hint of ``package`` (a key of :data:`INSTALL_HINTS`)."""
    return INSTALL_HINTS[package]
