"""gg.memory.track: saved-activation peaks (any device), the CUDA pool's peak, the traced host peak; the
traced peak of a training step falls with checkpointing (a memory bound from the arithmetic)."""
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


# ------------------------------------------------------------------ host peak (tracemalloc) on the CPU
def test_track_traced_peak_counts_arrays_alive_at_the_peak():
    import numpy as np
    with memory.track(trace=True) as outer:
        a = np.ones(1 << 18, dtype=np.float32)  # 1 MiB
        del a
        with memory.track(trace=True) as inner:
            b = np.ones(1 << 16, dtype=np.float32)  # 256 KiB: the inner reset does not hide the 1 MiB above
            del b
    assert 1 << 18 <= inner.peak_traced_bytes < (1 << 18) + (1 << 16)
    assert 1 << 20 <= outer.peak_traced_bytes < (1 << 20) + (1 << 16)
    assert "peak traced" in str(outer) and outer.as_dict()["peak_traced_bytes"] == outer.peak_traced_bytes
    with memory.track() as m:
        pass
    assert m.peak_traced_bytes is None


def test_backward_frees_saved_activations_while_the_loss_is_alive():
    """Each node's saved arrays go at its backward, not when the graph dies: the loss (and so every
    node) stays alive here, yet after backward only the gradients remain (before the fix, the version
    records of each node still held its saved arrays: 8 activations stayed alive)."""
    import tracemalloc
    n, width, batch = 8, 32, 1024
    ws = [gg.randn(width, width, requires_grad=True) for _ in range(n)]
    x = gg.randn(batch, width)
    act = batch * width * 4
    tracemalloc.start()
    try:
        h = x
        for w in ws:
            h = F.fused_linear(h, w, None, "relu")
        loss = h.sum()
        del h
        loss.backward()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    grads = n * width * width * 4
    assert held < grads + act // 2, f"{held / act:.2f} activations alive after backward"
    del loss


def _mlp_train_step_peak(depth: int, width: int, batch: int, checkpoint, device: str = "cpu"):
    """Peak memory of one SGD training step of ``nn.MLP([width] * (depth + 1) + [10])`` (after a
    warm-up step), above what was alive when it started: the traced host peak on the CPU (every NumPy
    array the step allocates and holds at its worst moment), the CUDA pool's in-use peak on a GPU.
    Returns (peak bytes, the MemoryReport, parameter bytes)."""
    import numpy as np
    model = gg.nn.MLP([width] * (depth + 1) + [10], checkpoint=checkpoint, device=device)
    opt = gg.optim.SGD(model.parameters(), lr=1e-3)
    x = gg.randn(batch, width, device=device)
    y = gg.tensor(np.arange(batch) % 10).to(device)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    cuda = device.startswith("cuda")
    base = gg.cuda.memory_allocated(device) if cuda else 0
    with memory.track(device, trace=not cuda) as m:
        step()
    peak = m.peak_device_bytes - base if cuda else m.peak_traced_bytes
    return peak, m, sum(p.data.nbytes for p in model.parameters())


def _check_checkpointed_step_peak(device: str) -> None:
    depth, width, batch = 16, 64, 2048
    act = batch * width * 4
    plain, plain_m, pbytes = _mlp_train_step_peak(depth, width, batch, None, device)
    ck, ck_m, _ = _mlp_train_step_peak(depth, width, batch, 4, device)
    sizes = [len(s) for s in gg.checkpoint.even_segments(depth, 4)]
    held = max(j + k for j, k in enumerate(sizes))
    assert held == 7 and ck_m.peak_saved_bytes < plain_m.peak_saved_bytes / 2
    bound = (held + 3) * act + pbytes + 4 * batch * 10 * 4
    assert ck <= bound, f"checkpointed step peaks at {ck / act:.2f} activations, bound {bound / act:.2f}"
    # the plain step holds every activation: the comparison is meaningful (ratio <= 0.6 here)
    assert plain >= depth * act
    assert ck <= 0.6 * plain, f"peak ratio {ck / plain:.3f}"


def test_checkpoint_lowers_traced_peak_of_a_training_step():
    """Peak memory, not only saved bytes, falls with checkpointing (issue 9). Activation-dominated
    shape: 16 layers, width 64, batch 2048 (one activation A = 512 KiB; all weights 0.5 A).

    Arithmetic for 4 segments of 4 layers: while segment j (j = 0..3, the first three checkpointed) is
    recomputed or backpropagated, alive are the inputs of segments 1..j (j activations; segment 0's
    input is the batch, allocated before), the 4 layers of segment j (saved outputs), and at most 3
    more activations: the gradient arriving at a layer, and the ``dz`` and ``dx`` its backward
    computes. Add the parameter gradients (all of them, the worst case) and room for the logits-sized
    arrays of the head and loss: peak <= (max_j (j + k_j) + 3) A + grads + 4 logits = 10 A + ... .
    Before the fix the last (plain) segment's activations, the segment's incoming gradient and its
    recomputed output stayed alive through every recompute: ~15.6 A."""
    _check_checkpointed_step_peak("cpu")


@pytest.mark.gpu
def test_checkpoint_lowers_device_peak_of_a_training_step():
    """The same bound on the CUDA pool's peak of in-use bytes (issue 9: the GPU peak went up)."""
    _check_checkpointed_step_peak("cuda")
