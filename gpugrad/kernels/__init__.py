"""Custom kernels (installed as ``gpugrad.kernels``): Numba CUDA kernels with NumPy references, and
CUDA C sources loaded through ``cupy.RawModule``. Nothing here imports gpugrad."""
import os

KERNEL_DIR = os.path.dirname(os.path.abspath(__file__))


def source_path(name: str) -> str:
    """Absolute path of a CUDA C source shipped in this package."""
    return os.path.join(KERNEL_DIR, name)
