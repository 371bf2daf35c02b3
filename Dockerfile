# gpugrad on NVIDIA GPUs: CUDA 12 runtime libraries + CuPy (cupy-cuda12x) + gpugrad.
#   docker build -t gpugrad .
#   docker run --rm --gpus all gpugrad                                   # gpugrad info
#   docker run --rm --gpus all -v "$PWD/runs:/work/runs" gpugrad gpugrad train --device cuda
FROM nvidia/cuda:12.6.3-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /opt/gpugrad
COPY pyproject.toml README.md ./
COPY gpugrad ./gpugrad
# Installs this checkout (not a registry package); its dependencies are bounded in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install ".[cuda12]" \
    && useradd --create-home --uid 1000 gpugrad \
    && mkdir -p /work \
    && chown gpugrad:gpugrad /work

USER 1000:1000
WORKDIR /work
CMD ["gpugrad", "info"]
