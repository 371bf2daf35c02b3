"""EXPERIMENTAL GPU paths, outside the stable API: ``gg.nn`` never imports them, nothing turns them on
by default, and their speed on hardware is unproven. Import explicitly::

    from gpugrad.experimental import EpilogueMLP, FusedMLP

- :class:`FusedMLP` (``fused_mlp.py``; kernels in ``fused_mlp_kernels.py`` and ``fused_mlp.cu``): the
  whole narrow MLP (hidden width 16-128) in one tensor-core kernel per direction, float16 inside.
- :class:`EpilogueMLP` (``epilogue_mlp.py``; GEMM plans in ``epilogue_kernels.py``): ``nn.MLP`` with
  bias, activation and bias gradient inside cuBLASLt GEMMs (needs nvmath-python).
Both are ``gg.nn.MLP`` subclasses with the same parameters and state_dict, and fall back to its path
where they do not apply (CPU, unsupported shapes)."""
from __future__ import annotations

from .epilogue_mlp import EpilogueMLP
from .fused_mlp import FusedMLP

# the functional forms are gpugrad.experimental.fused_mlp.fused_mlp and .epilogue_mlp.epilogue_mlp (here the
# names are their modules)
__all__ = ["EpilogueMLP", "FusedMLP"]
