"""How to install each optional package: the one source of the hints printed by ``gpugrad info`` and by
the errors of the CUDA backend, save/load, the data sets and gg.distributed, and quoted in the README (a
test checks the README quotes them verbatim).

Each hint names the packages themselves, with the versions of the matching extra in pyproject.toml
(``pip install "gpugrad[cuda12]"`` installs the same), so it works however gpugrad was installed: from a
wheel, from a checkout, or not at all (``PYTHONPATH``). A test checks every hint against the extras.
Imports nothing."""
from __future__ import annotations

INSTALL_HINTS: dict[str, str] = {
    "cupy": 'pip install "cupy-cuda12x[ctk]>=13.4" for a CUDA 12.x driver, pip install "cupy-cuda13x[ctk]>=14" '
            'for a CUDA 13.x driver',
    "torch": "pip install torch==2.13.0 (the benchmarks' baseline and the live conformance tests)",
    "mnist1d": "pip install mnist1d",
    "safetensors": "pip install safetensors (.safetensors checkpoints; .npz needs nothing)",
    "nvmath": 'pip install "nvmath-python[cu13]" (cuBLASLt epilogues on CUDA)',
    "mkl": "pip install mkl (MKL GEMMs on CPU, opt-in)",
    "mpi": "pip install mpi4py mpich, then launch with mpiexec -n N",
    "nccl": 'pip install "cupy-cuda13x[ctk]>=14" nvidia-nccl-cu13 (or cupy-cuda12x with nvidia-nccl-cu12)',
}


def hint(package: str) -> str:
    """The install hint of ``package`` (a key of :data:`INSTALL_HINTS`)."""
    return INSTALL_HINTS[package]
