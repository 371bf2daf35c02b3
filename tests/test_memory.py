"""gg.memory.track: saved-activation peaks for a block of code (any device), the CUDA pool's peak."""
from __future__ import annotations

import pytest

import gpugrad as gg
from gpugrad import memory
from gpugrad.checkpoint import checkpoint_sequential
from gpugrad.nn import functional as F


def _mlp_step(blocks, x, segments=None):
    h = checkpoint_sequential(blocks, segments, x) if segments else x
    if not segments:
        for f in blocks:
            h = f(h)
    h.sum().backward()


def _blocks(n, width):
    ws = [gg.randn(width, width, requires_grad=True) for _ in range(n)]
    return [lambda t, w=w: F.fused_linear(t, w, None, "relu") for w in ws]


def test_track_counts_saved_activations_on_cpu():
    x = gg.randn(16, 8)  # a leaf: its data is not counted
    blocks = _blocks(6, 8)
    act = 16 * 8 * 4
    with memory.track() as m:
        _mlp_step(blocks, x)
    assert m.peak_saved_bytes == 6 * act
    assert m.start_saved_bytes == 0 and m.end_saved_bytes == 0
    assert m.peak_device_bytes is None
    assert m.elapsed_s > 0
    text = str(m)
    assert "peak saved activations 3.0 KiB" in text and "peak device memory -" in text


def test_track_shows_checkpoint_savings():
    x = gg.randn(16, 8)
    blocks = _blocks(16, 8)
    with memory.track() as plain:
        _mlp_step(blocks, x)
    with memory.track() as ck:
        _mlp_step(blocks, x, segments=4)
    assert ck.peak_saved_bytes * 16 == plain.peak_saved_bytes * 7


def test_track_baseline_and_nesting():
    a = gg.randn(32, 32, requires_grad=True)
    kept = (a * 2.0).exp()  # exp saves its output: 4 KiB held across the blocks below
    with memory.track() as outer:
        assert outer.start_saved_bytes == 4096
        b = (a * 3.0).exp()  # +4 KiB saved: the outer block's peak, before the inner block
        del b
        with memory.track() as inner:
            c = (a * 0.5).tanh()  # +4 KiB
            d = (a * 0.5).sigmoid()  # +4 KiB: the inner peak is 12 KiB
            del c, d
    assert inner.start_saved_bytes == 4096
    assert inner.peak_saved_bytes == 12288 and inner.peak_saved_delta == 8192
    assert outer.peak_saved_bytes == 12288
    with memory.track() as outer2:
        b = (a * 3.0).exp()
        b2 = (a * 4.0).exp()  # the outer peak (12 KiB) happens before the inner block
        del b, b2
        with memory.track() as inner2:
            c = (a * 0.5).tanh()
            del c
    assert inner2.peak_saved_bytes == 8192
    assert outer2.peak_saved_bytes == 12288  # the inner reset did not hide the earlier peak
    assert "above the 4.0 KiB at entry" in str(outer2)
    del kept


def test_memory_reexports_and_format_bytes():
    assert memory.saved_bytes is gg.autograd.saved_bytes
    assert memory.format_bytes(None) == "-"
    assert memory.format_bytes(512) == "512 B"
    assert memory.format_bytes(3 * 1024 * 1024) == "3.0 MiB"
    assert memory.format_bytes(5 * 1024 ** 3) == "5.0 GiB"


def test_track_cpu_device_never_reports_device_bytes():
    with memory.track(device="cpu") as m:
        (gg.randn(4, 4, requires_grad=True) * 2.0).sum().backward()
    assert m.peak_device_bytes is None and "cpu: not tracked" in str(m)
    assert m.as_dict()["device"] == "cpu"


@pytest.mark.gpu
def test_track_cuda_pool_peak_and_checkpoint_savings():
    dev = "cuda"
    width, batch, n = 256, 512, 16
    ws = [gg.randn(width, width, device=dev, requires_grad=True) for _ in range(n)]
    blocks = [lambda t, w=w: F.fused_linear(t, w, None, "relu") for w in ws]
    x = gg.randn(batch, width, device=dev)
    _mlp_step(blocks, x)  # warm-up (pool, kernels)
    res = {}
    for seg in (None, 4):
        with memory.track(dev) as m:
            _mlp_step(blocks, x, seg)
        res[seg] = m
    act = batch * width * 4
    assert res[None].peak_saved_bytes == n * act and res[4].peak_saved_bytes == 7 * act
    assert res[None].peak_device_bytes is not None and res[None].peak_device_bytes >= n * act
    assert res[4].peak_device_bytes < res[None].peak_device_bytes
