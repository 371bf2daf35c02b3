"""MPI test program, run by tests/distributed/test_distributed_mpi.py as ``mpiexec -n N python3 _prog.py SCENARIO...``.

Every rank runs the scenarios in order; a failed check raises, which aborts all ranks (non-zero
exit). Rank 0 prints ``OK <scenario>`` after each one passed on every rank."""
from __future__ import annotations

import os
import sys

import numpy as np

import gpugrad as gg
import gpugrad.distributed as dist
from gpugrad import nn
from gpugrad.checkpoint import checkpoint, checkpoint_sequential
from gpugrad.nn.parallel import DistributedDataParallel as DDP

B = 24  # global batch: divisible by 1, 2, 3, 4


def make_model(seed: int) -> nn.Module:
    gg.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def data(seed: int = 1, n: int = B):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 5)), rng.standard_normal((n, 3))


def shard(a: np.ndarray, r: int, n: int) -> np.ndarray:
    k = a.shape[0] // n
    return a[r * k:(r + 1) * k]


def mse(model, x, y):
    return nn.functional.mse_loss(model(gg.tensor(x)), gg.tensor(y))


def grads(model) -> list:
    return [p.grad.numpy().copy() for p in model.parameters()]


def close(a: list, b: list, tol: float, what: str) -> None:
    for i, (u, v) in enumerate(zip(a, b)):
        err = float(np.max(np.abs(u - v)))
        if not err <= tol:
            raise AssertionError(f"rank {dist.get_rank()}: {what}: tensor {i} differs by {err:.3g} > {tol:g}")


def same_on_all_ranks(model, what: str) -> None:
    mine = b"".join(p.numpy().tobytes() for p in model.parameters())
    allb = dist.group().allgather_object(mine)
    if any(x != allb[0] for x in allb):
        raise AssertionError(f"{what}: parameters differ across ranks")


def sc_grads(r: int, n: int) -> None:
    """One backward: every rank's averaged grads equal the single-process grads of the whole batch;
    the first bucket starts while backward still runs."""
    ref = make_model(100)
    model = DDP(make_model(100 + r), bucket_cap_mb=5e-4)  # different init per rank: DDP broadcasts rank 0's
    assert len(model._buckets) >= 3, len(model._buckets)
    x, y = data()
    mse(ref, x, y).backward()
    seen = []
    pg = model.process_group
    orig = pg.all_reduce_array

    def spy(arr, be, op="sum", async_op=False):
        # at the first bucket's start, backward has not reached the first layer yet
        seen.append(0 if reached_first_layer else sum(p.grad is None for p in model.parameters()))
        return orig(arr, be, op, async_op)
    pg.all_reduce_array = spy
    reached_first_layer = []
    try:
        h = model.module[0](gg.tensor(shard(x, r, n)))
        h.register_hook(lambda g: reached_first_layer.append(True))
        for layer in list(model.module)[1:]:
            h = layer(h)
        nn.functional.mse_loss(h, gg.tensor(shard(y, r, n))).backward()
    finally:
        del pg.all_reduce_array
    close(grads(model), grads(ref), 1e-12, "DDP grads vs single process")
    if not seen or seen[0] == 0:
        raise AssertionError(f"no bucket started during backward (params without grad at each start: {seen})")


def sc_steps(r: int, n: int, opt_name: str = "sgd") -> None:
    """K optimizer steps: N ranks with batch B/N equal one process with batch B; identical ranks."""
    ref = make_model(7)
    model = DDP(make_model(7), bucket_cap_mb=2e-3)

    def opt(m):
        if opt_name == "sgd":
            return gg.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
        return gg.optim.Adam(m.parameters(), lr=0.01, weight_decay=1e-3)
    o_ref, o = opt(ref), opt(model)
    for k in range(5):
        x, y = data(10 + k)
        for m, oo, xs, ys in ((ref, o_ref, x, y), (model, o, shard(x, r, n), shard(y, r, n))):
            oo.zero_grad()
            mse(m, xs, ys).backward()
            nn.utils.clip_grad_norm_(m.parameters(), max_norm=0.05)
            oo.step()
    close([p.numpy() for p in model.parameters()], [p.numpy() for p in ref.parameters()], 1e-12,
          f"{opt_name} + clip_grad_norm_ steps")
    same_on_all_ranks(model, opt_name)


def sc_adam(r: int, n: int) -> None:
    sc_steps(r, n, "adam")


def sc_nosync(r: int, n: int) -> None:
    """Two micro-batches under no_sync, a third synced: the sum of the three global-batch grads."""
    ref = make_model(3)
    model = DDP(make_model(3))
    batches = [data(20 + k) for k in range(3)]
    for x, y in batches:
        mse(ref, x, y).backward()
    with model.no_sync():
        for x, y in batches[:2]:
            mse(model, shard(x, r, n), shard(y, r, n)).backward()
    local = grads(model)
    x, y = batches[2]
    mse(model, shard(x, r, n), shard(y, r, n)).backward()
    close(grads(model), grads(ref), 1e-12, "no_sync accumulation")
    if n > 1 and r == 0:
        # inside no_sync nothing was averaged: rank 0's local sum differs from the global one
        assert max(float(np.max(np.abs(a - b))) for a, b in zip(local, grads(ref))) > 1e-6


class SharedCkpt(nn.Module):
    """A weight used in two checkpointed segments (its gradient arrives twice, through recomputes)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.mid = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x, ckpt: bool = True):
        h = self.inp(x).tanh()
        f = lambda t: self.mid(t).tanh()  # noqa: E731
        for _ in range(2):
            h = checkpoint(f, h) if ckpt else f(h)
        return self.out(h)


def sc_checkpoint(r: int, n: int) -> None:
    """Gradients that arrive through checkpoint recomputes, including a weight shared by two segments."""
    x, y = data(30)
    gg.manual_seed(5)
    ref = SharedCkpt().double()
    mse(lambda t: ref(t, ckpt=False), x, y).backward()
    gg.manual_seed(5)
    model = DDP(SharedCkpt().double(), bucket_cap_mb=1e-4)
    mse(model, shard(x, r, n), shard(y, r, n)).backward()
    close(grads(model), grads(ref), 1e-12, "checkpoint with a shared weight")
    # checkpoint_sequential over the plain MLP
    ref2, m2 = make_model(11), DDP(make_model(11), bucket_cap_mb=1e-3)
    mse(ref2, x, y).backward()
    seq = m2.module
    out = checkpoint_sequential(seq, 2, gg.tensor(shard(x, r, n)))
    nn.functional.mse_loss(out, gg.tensor(shard(y, r, n))).backward()
    close(grads(m2), grads(ref2), 1e-12, "checkpoint_sequential")


def sc_amp(r: int, n: int) -> None:
    """float16 model, float32 master weights, GradScaler: an inf on one rank makes every rank skip."""
    model = DDP(make_model(9 + r).half())  # masters are copied after DDP broadcast rank 0's weights
    master = gg.amp.MasterWeights(model.parameters())
    opt = gg.optim.SGD(master.parameters(), lr=0.05)
    scaler = gg.amp.GradScaler(init_scale=1024.0)
    for k in range(3):
        x, y = data(40 + k)
        xs = shard(x, r, n).astype(np.float16)
        if k == 1 and r == n - 1:
            xs[0, 0] = np.inf
        before = [p.numpy().copy() for p in model.parameters()]
        model.zero_grad()
        out = model(gg.tensor(xs))
        loss = nn.functional.mse_loss(out.float(), gg.tensor(shard(y, r, n).astype(np.float32)))
        scaler.scale(loss).backward()
        master.step(opt, scaler)
        scaler.update()
        changed = any(not np.array_equal(b, p.numpy()) for b, p in zip(before, model.parameters()))
        if changed == (k == 1):
            raise AssertionError(f"rank {r}: step {k} {'changed' if changed else 'did not change'} the parameters")
    scales = dist.group().allgather_object(scaler.get_scale())
    assert len(set(scales)) == 1 and scales[0] < 1024.0, scales
    same_on_all_ranks(model, "amp")


def sc_collectives(r: int, n: int) -> None:
    t = gg.tensor(np.arange(6.0).reshape(2, 3) + r)
    dist.all_reduce(t, op="sum")
    assert np.array_equal(t.numpy(), n * np.arange(6.0).reshape(2, 3) + n * (n - 1) / 2)
    t = gg.tensor(np.full(4, float(r)))
    dist.all_reduce(t, op="max")
    assert np.all(t.numpy() == n - 1)
    t = gg.tensor(np.full(4, float(r), dtype=np.float32))
    w = dist.all_reduce(t, op="avg", async_op=True)
    w.wait()
    assert np.allclose(t.numpy(), (n - 1) / 2)
    t = gg.tensor(np.full(3, float(r)))
    dist.broadcast(t, src=n - 1)
    assert np.all(t.numpy() == n - 1)
    dist.barrier()


def _leave_at_step_2(r: int, n: int, how) -> None:
    """Train; at step 2 the last rank calls ``how()`` while the others are in backward's all-reduce."""
    model = DDP(make_model(1))
    for k in range(100):
        x, y = data(k)
        if k == 2 and r == n - 1:
            how()
        mse(model, shard(x, r, n), shard(y, r, n)).backward()


def _raise() -> None:
    raise ValueError("injected failure on the last rank")


def sc_fail(r: int, n: int) -> None:
    """The last rank raises: the excepthook aborts every rank."""
    _leave_at_step_2(r, n, _raise)


def sc_vanish(r: int, n: int) -> None:
    """The last rank leaves quietly (sys.exit(0): MPI finalized): the others time out and abort."""
    _leave_at_step_2(r, n, lambda: sys.exit(0))


def sc_die(r: int, n: int) -> None:
    """The last rank is killed (SIGKILL): the launcher stops the others."""
    import signal
    _leave_at_step_2(r, n, lambda: os.kill(os.getpid(), signal.SIGKILL))


def sc_nccl(r: int, n: int) -> None:
    """GPU, backend nccl (run with PROG_BACKEND=nccl): collectives on CUDA tensors; DDP grads and steps
    on the GPU equal the single-process ones of the whole batch."""
    dev = "cuda"
    t = gg.tensor(np.arange(6.0) + r, device=dev)
    dist.all_reduce(t, op="sum")
    assert np.array_equal(t.numpy(), n * np.arange(6.0) + n * (n - 1) / 2)
    t = gg.tensor(np.full(5, float(r), dtype=np.float32), device=dev)
    dist.all_reduce(t, op="avg", async_op=True).wait()
    assert np.allclose(t.numpy(), (n - 1) / 2)
    t = gg.tensor(np.full(3, float(r)), device=dev)
    dist.broadcast(t, src=n - 1)
    assert np.all(t.numpy() == n - 1)
    ref = make_model(100).to(dev)
    model = DDP(make_model(100 + r).to(dev), bucket_cap_mb=5e-4)
    x, y = data()
    nn.functional.mse_loss(ref(gg.tensor(x, device=dev)), gg.tensor(y, device=dev)).backward()
    nn.functional.mse_loss(model(gg.tensor(shard(x, r, n), device=dev)),
                           gg.tensor(shard(y, r, n), device=dev)).backward()
    close(grads(model), grads(ref), 1e-12, "NCCL DDP grads vs single process")
    dist.barrier()


SCENARIOS = {name[3:]: fn for name, fn in globals().items() if name.startswith("sc_")}


def main(argv: list) -> None:
    dist.init_process_group(os.environ.get("PROG_BACKEND", "mpi"), timeout=float(os.environ.get("PROG_TIMEOUT", "60")))
    r, n = dist.get_rank(), dist.get_world_size()
    for name in argv:
        SCENARIOS[name](r, n)
        dist.barrier()
        if r == 0:
            print(f"OK {name} (world {n})", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
