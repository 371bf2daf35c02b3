"""In-process pieces of data parallelism: engine hooks, DistributedSampler, error messages, and the
NCCL backend's host logic against a fake communicator (no GPU, no mpiexec needed)."""
from __future__ import annotations

import ctypes
import sys
import types

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.distributed as dist
from gpugrad import nn
from gpugrad.autograd import engine
from gpugrad.checkpoint import checkpoint
from gpugrad.data import DistributedSampler, shard_batch
from gpugrad.distributed.group import DistributedError
from gpugrad.distributed.nccl import ProcessGroupNCCL
from gpugrad.install_hints import hint


def _mlp() -> nn.Module:
    gg.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)).double()


# ---------------------------------------------------------------------------------------- engine hooks
def test_post_accumulate_hook_runs_during_backward_with_final_grad() -> None:
    m = _mlp()
    ps = list(m.parameters())
    events = []

    def hook(p):
        i = next(k for k, q in enumerate(ps) if q is p)
        events.append((i, p.grad.numpy().copy()))
    removers = [p.register_post_accumulate_grad_hook(hook) for p in ps]
    x = gg.tensor(np.random.default_rng(0).standard_normal((5, 3)))
    h = m[0](x)  # the first layer's output: its gradient is computed late in backward
    h.register_hook(lambda g: events.append(("first layer output", None)))
    for layer in list(m)[1:]:
        h = layer(h)
    h.pow(2).sum().backward()
    names = [e[0] for e in events]
    assert sorted(n for n in names if isinstance(n, int)) == list(range(len(ps)))  # once per parameter
    for i, g in events:
        if isinstance(i, int):
            np.testing.assert_array_equal(g, ps[i].grad.numpy())  # already the final gradient
    # the output layer's gradients are out before backward reaches the first layer
    at = names.index("first layer output")
    assert {len(ps) - 1, len(ps) - 2} <= set(names[:at]), names
    assert set(names[at + 1:]) == {0, 1}, names
    for rm in removers:
        rm()
    events.clear()
    m(x).sum().backward()
    assert events == []


def test_queue_callback_runs_after_all_hooks_once() -> None:
    m = _mlp()
    order = []
    p0 = next(m.parameters())

    def hook(p):
        order.append("hook")
        if order.count("hook") == 1:
            engine.queue_callback(lambda: order.append(("done", all(q.grad is not None for q in m.parameters()))))
    for p in m.parameters():
        p.register_post_accumulate_grad_hook(hook)
    m(gg.tensor(np.ones((2, 3)))).sum().backward()
    assert order[-1] == ("done", True) and order.count("hook") == 6
    with pytest.raises(Exception, match="no backward in progress"):
        engine.queue_callback(lambda: None)
    with pytest.raises(Exception, match="only leaf tensors"):
        (p0 * 2).register_post_accumulate_grad_hook(lambda p: None)


def test_post_hook_with_checkpoint_fires_early_and_for_each_contribution() -> None:
    gg.manual_seed(1)
    a, b = nn.Linear(3, 3).double(), nn.Linear(3, 3).double()
    fired = []
    for name, p in [("a.w", a.weight), ("b.w", b.weight)]:
        p.register_post_accumulate_grad_hook(lambda p, n=name: fired.append((n, a.weight.grad is None)))
    x = gg.tensor(np.random.default_rng(1).standard_normal((4, 3)), requires_grad=True)
    h = a(x).tanh()
    h = checkpoint(lambda t: b(t).tanh(), h)
    h = checkpoint(lambda t: b(t).tanh(), h)  # b used in two checkpointed segments
    h.sum().backward()
    assert [n for n, _ in fired].count("b.w") == 2  # once per recompute that delivered a gradient
    assert fired[0] == ("b.w", True)  # b's gradient is out before a's is computed
    ref_a, ref_b = nn.Linear(3, 3).double(), nn.Linear(3, 3).double()
    ref_a.load_state_dict(a.state_dict())
    ref_b.load_state_dict(b.state_dict())
    ref_b(ref_b(ref_a(x.detach()).tanh()).tanh()).tanh().sum().backward()
    np.testing.assert_allclose(b.weight.grad.numpy(), ref_b.weight.grad.numpy(), atol=1e-14)
    np.testing.assert_allclose(a.weight.grad.numpy(), ref_a.weight.grad.numpy(), atol=1e-14)


# ---------------------------------------------------------------------------------------- sampler
@pytest.mark.parametrize("n,world,drop_last", [(10, 4, False), (10, 4, True), (8, 4, False), (3, 4, False),
                                                (3, 4, True), (1, 1, False)])
def test_distributed_sampler_matches_pytorch_rules(n: int, world: int, drop_last: bool) -> None:
    shards = [DistributedSampler(n, world, r, shuffle=False, drop_last=drop_last).indices() for r in range(world)]
    per = (n // world) if drop_last else -(-n // world)
    assert all(len(s) == per for s in shards)
    flat = np.stack(shards, 1).reshape(-1) if per else np.array([], np.int64)
    if drop_last:
        np.testing.assert_array_equal(flat, np.arange(per * world))
    else:  # every index, padded from the start
        np.testing.assert_array_equal(flat[:n], np.arange(n))
        np.testing.assert_array_equal(flat[n:], np.resize(np.arange(n), per * world)[n:])


def test_distributed_sampler_reshuffles_per_epoch_from_one_seed() -> None:
    s = [DistributedSampler(50, 3, r, seed=7) for r in range(3)]
    e0 = [x.indices() for x in s]
    assert sorted(np.concatenate(e0).tolist())[:50] == list(range(50))[:50] or len(set(np.concatenate(e0))) == 50
    assert len(set(np.concatenate(e0).tolist())) == 50
    for x in s:
        x.set_epoch(1)
    e1 = [x.indices() for x in s]
    assert not all(np.array_equal(a, b) for a, b in zip(e0, e1))
    again = DistributedSampler(50, 3, 1, seed=7)
    again.set_epoch(1)
    np.testing.assert_array_equal(again.indices(), e1[1])
    assert list(iter(again)) == e1[1].tolist() and len(again) == 17
    with pytest.raises(ValueError, match="init_process_group"):
        DistributedSampler(10)
    with pytest.raises(ValueError, match="0 <= rank < num_replicas"):
        DistributedSampler(10, 2, 2)


def test_shard_batch_is_rank_strided() -> None:
    idx = np.arange(10, 20)
    parts = [shard_batch(idx, r, 3) for r in range(3)]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert sorted(np.concatenate(parts).tolist()) == idx.tolist()


# ---------------------------------------------------------------------------------------- errors
def test_missing_mpi4py_names_the_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(DistributedError, match=r"pip install mpi4py mpich") as e:
        dist.init_process_group("mpi")
    assert hint("mpi") in str(e.value)
    assert not dist.is_available() and not dist.is_initialized()


def test_launcher_checks(monkeypatch) -> None:
    from gpugrad.distributed.mpi import check_world
    with pytest.raises(DistributedError, match=r"mpiexec -n 4"):
        check_world(1, 4, "init_process_group")
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_NTASKS", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    with pytest.raises(DistributedError, match=r"different MPI libraries"):
        check_world(1, None, "init_process_group")
    check_world(4, 4, "init_process_group")


def test_not_initialized_and_bad_arguments() -> None:
    with pytest.raises(DistributedError, match="init_process_group"):
        dist.get_rank()
    with pytest.raises(DistributedError, match="init_process_group"):
        dist.all_reduce(gg.ones(2))
    with pytest.raises(ValueError, match="unknown backend 'gloo'"):
        dist.init_process_group("gloo")
    with pytest.raises(ValueError, match="timeout must be > 0"):
        dist.init_process_group("mpi", timeout=0)
    with pytest.raises(DistributedError, match="init_process_group"):
        nn.parallel.DistributedDataParallel(_mlp())


def test_nccl_missing_cupy_names_the_install(monkeypatch) -> None:
    from gpugrad.distributed.nccl import import_nccl
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(DistributedError, match=r"cupy-cuda13x.*backend='mpi'") as e:
        import_nccl("init_process_group(backend='nccl')")
    assert hint("nccl") in str(e.value)


# ---------------------------------------------------------------------------------------- NCCL host logic
class _Dev(np.ndarray):
    """Stands in for a cupy.ndarray (a plain NumPy array is a host array to the group)."""


class _Event:
    def __init__(self, stream) -> None:
        self.stream, self.done = stream, True


class _Stream:
    current = None

    def __init__(self, non_blocking: bool = False) -> None:
        self.ptr, self.waited, self.log = id(self), [], []

    def record(self) -> _Event:
        return _Event(self)

    def wait_event(self, ev: _Event) -> None:
        self.waited.append(ev)

    def synchronize(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *a) -> None:
        pass


_NCCL = types.SimpleNamespace(NCCL_FLOAT16=6, NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_INT32=2, NCCL_INT64=4,
                              NCCL_UINT8=1, NCCL_SUM=0, NCCL_MAX=2, NCCL_MIN=3)
_NP = {6: np.float16, 7: np.float32, 8: np.float64, 2: np.int32, 4: np.int64, 1: np.uint8}


class _Comm:
    """This rank's NCCL communicator; ``peers[r]`` is what rank r contributes."""

    def __init__(self, rank: int, peers: dict) -> None:
        self.rank, self.peers, self.calls, self.aborted = rank, peers, [], False

    def _view(self, ptr: int, count: int, dt: int) -> np.ndarray:
        t = np.dtype(_NP[dt])
        buf = (ctypes.c_char * (count * t.itemsize)).from_address(ptr)
        return np.frombuffer(buf, dtype=t, count=count)

    def allReduce(self, sptr, rptr, count, dt, op, stream) -> None:  # noqa: N802 (CuPy's name)
        self.calls.append(("allReduce", count, dt, op, stream))
        mine = self._view(rptr, count, dt)
        vals = [mine.copy()] + [np.resize(np.asarray(v, dtype=mine.dtype), count) for v in self.peers.values()]
        mine[...] = {0: np.sum, 2: np.max, 3: np.min}[op](np.stack(vals), axis=0)

    def bcast(self, ptr, count, dt, root, stream) -> None:
        self.calls.append(("bcast", count, dt, root, stream))
        if root != self.rank:
            self._view(ptr, count, dt)[...] = self.peers[root]

    def abort(self) -> None:
        self.aborted = True

    def destroy(self) -> None:
        pass


class _Group(ProcessGroupNCCL):
    @staticmethod
    def _ptr(arr) -> int:
        return arr.ctypes.data


def _group(peers: dict, rank: int = 0):
    cur = _Stream()
    cupy = types.SimpleNamespace(ndarray=_Dev, zeros=lambda n, dtype: np.zeros(n, dtype).view(_Dev), float32=np.float32,
                                 cuda=types.SimpleNamespace(Stream=_Stream, get_current_stream=lambda: cur))
    comm = _Comm(rank, peers)
    return _Group(comm, rank, 1 + len(peers), 5.0, cupy, _NCCL), comm, cur


def test_nccl_all_reduce_ops_dtypes_and_stream_order() -> None:
    g, comm, cur = _group({1: np.array([10.0, 20.0, 30.0])})
    a = np.array([1.0, 2.0, 3.0]).view(_Dev)
    g.all_reduce_array(a, None, "sum")
    np.testing.assert_array_equal(a, [11, 22, 33])
    assert comm.calls[-1] == ("allReduce", 3, _NCCL.NCCL_FLOAT64, _NCCL.NCCL_SUM, g.stream.ptr)
    assert g.stream.waited[-1].stream is cur  # communication ordered after the caller's stream
    assert cur.waited[-1].stream is g.stream  # and the caller's stream after the communication
    b = np.array([1.0, 3.0], dtype=np.float32).view(_Dev)
    g2, comm2, cur2 = _group({1: np.array([3.0, 5.0]), 2: np.array([2.0, 1.0])})
    w = g2.all_reduce_array(b, None, "avg", async_op=True)
    n_waits = len(cur2.waited)
    w.wait()
    assert len(cur2.waited) == n_waits + 1  # wait() orders the stream, never blocks the host
    np.testing.assert_allclose(b, [2.0, 3.0])
    assert comm2.calls[-1][2] == _NCCL.NCCL_FLOAT32
    c = np.array([4, 1], dtype=np.int64).view(_Dev)
    g2.all_reduce_array(c, None, "max")
    np.testing.assert_array_equal(c, [4, 5])


def test_nccl_broadcast_and_errors() -> None:
    g, comm, _ = _group({1: np.array([7.0, 8.0])}, rank=0)
    a = np.array([1.0, 2.0]).view(_Dev)
    g.broadcast_array(a, None, src=1)
    np.testing.assert_array_equal(a, [7.0, 8.0])
    assert comm.calls[-1][:4] == ("bcast", 2, _NCCL.NCCL_FLOAT64, 1)
    g.broadcast_array(a, None, src=0)  # the root keeps its values
    np.testing.assert_array_equal(a, [7.0, 8.0])
    with pytest.raises(DistributedError, match=r"CUDA tensors.*backend='mpi'"):
        g.all_reduce_array(np.ones(2), None, "sum")
    with pytest.raises(DistributedError, match="not supported by NCCL"):
        g.all_reduce_array(np.ones(2, dtype=np.complex64).view(_Dev), None, "sum")
    with pytest.raises(DistributedError, match="floating-point"):
        g.all_reduce_array(np.ones(2, dtype=np.int32).view(_Dev), None, "avg")
    with pytest.raises(DistributedError, match="src=5"):
        g.broadcast_array(a, None, src=5)
    with pytest.raises(ValueError, match="unknown reduction op 'prod'"):
        g.all_reduce_array(a, None, "prod")
    g.barrier()
    assert comm.calls[-1][:2] == ("allReduce", 1)


# ---------------------------------------------------------------------------------------- launch context
def test_dist_context_shares_and_rng_streams() -> None:
    from gpugrad.distributed.launch import DistContext, setup
    one = setup("off", "cpu")
    assert not one.active and one.is_main and one.loss_factor(7, 7) == 1.0
    ctx = [DistContext(r, 4, "mpi") for r in range(4)]
    batch = np.arange(30)
    shares = [c.shard(batch) for c in ctx]
    assert sum(len(s) for s in shares) == 30
    # sum over ranks of factor * (mean over the share) == mean over the batch (what DDP's average gives / N)
    means = [c.loss_factor(len(s), 30) * s.mean() for c, s in zip(ctx, shares)]
    assert abs(sum(means) / 4 - batch.mean()) < 1e-12
    states = []
    for c in ctx:
        gg.manual_seed(3)
        c.decorrelate_rng("cpu")
        states.append(gg.random.get_rng_state("cpu"))
    gg.manual_seed(3)
    assert states[0] == gg.random.get_rng_state("cpu")  # rank 0 keeps the recorded stream
    assert len(set(states)) == 4
    with pytest.raises(ValueError, match="distributed mode"):
        setup("gloo")
