"""gg.utils.data: TensorDataset and DataLoader with PyTorch's batching rules (batch_size, shuffle per
epoch, drop_last, samplers), seeded through gg.manual_seed or a gg.Generator, collation to Tensors, the
device option, and DistributedSampler (gpugrad/data.py's, the one sharding) as a sampler."""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.utils.data import DataLoader, Dataset, TensorDataset, default_collate


def _ds(n: int = 10) -> TensorDataset:
    return TensorDataset(gg.arange(n).float().reshape(n, 1) * 10, gg.arange(n))


def _labels(loader) -> list:
    return [b[1].tolist() for b in loader]


@pytest.mark.parametrize("n, batch, drop_last, sizes", [(10, 4, False, [4, 4, 2]), (10, 4, True, [4, 4]),
                                                       (8, 4, True, [4, 4]), (3, 5, False, [3]), (3, 5, True, [])])
def test_batches_in_order(n, batch, drop_last, sizes):
    loader = DataLoader(_ds(n), batch_size=batch, drop_last=drop_last)
    got = list(loader)
    assert [len(b[1]) for b in got] == sizes and len(loader) == len(sizes)
    assert sum(_labels(loader), []) == list(range(sum(sizes)))
    for x, y in got:
        assert isinstance(x, gg.Tensor) and x.dtype == gg.float32 and y.dtype == gg.int64
        np.testing.assert_array_equal(x.numpy()[:, 0], y.numpy() * 10)


def test_shuffle_is_a_new_permutation_each_epoch_and_seeded():
    loader = DataLoader(_ds(12), batch_size=5, shuffle=True)
    gg.manual_seed(3)
    e1, e2 = sum(_labels(loader), []), sum(_labels(loader), [])
    assert sorted(e1) == sorted(e2) == list(range(12)) and e1 != e2 and e1 != list(range(12))
    gg.manual_seed(3)
    assert sum(_labels(loader), []) == e1  # gg.manual_seed fixes the orders
    g = gg.Generator().manual_seed(3)
    gg.manual_seed(0)
    before = gg.random.get_rng_state()
    with_g = sum(_labels(DataLoader(_ds(12), batch_size=5, shuffle=True, generator=g)), [])
    assert gg.random.get_rng_state() == before  # a generator's draws leave the global stream alone
    assert with_g == sum(_labels(DataLoader(_ds(12), batch_size=5, shuffle=True,
                                            generator=gg.Generator().manual_seed(3))), [])


def test_distributed_sampler_shards_the_epoch():
    ds = _ds(10)
    shards = []
    for rank in range(3):
        s = gg.utils.data.DistributedSampler(ds, num_replicas=3, rank=rank, seed=5)
        assert s is not None and gg.utils.data.DistributedSampler is gg.data.DistributedSampler
        s.set_epoch(2)
        loader = DataLoader(ds, batch_size=2, sampler=s)
        shards.append(sum(_labels(loader), []))
        assert shards[-1] == s.indices().tolist()
    everything = sum(shards, [])
    assert set(everything) == set(range(10)) and len(everything) == 12  # padded to 3 x 4, as PyTorch


def test_collation_of_map_style_samples():
    class Pairs(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {"x": np.full(3, float(i)), "y": i, "w": 0.5 * i}
    batches = list(DataLoader(Pairs(), batch_size=2))
    assert [b["y"].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert batches[0]["x"].shape == (2, 3) and batches[0]["x"].dtype == gg.float64  # NumPy keeps float64
    assert batches[1]["w"].dtype == gg.float32  # Python floats: float32, as gg.tensor
    one = list(DataLoader(Pairs(), batch_size=None))
    assert len(one) == 5 and one[2]["y"] == 2  # batch_size=None: samples, uncollated
    stacked = default_collate([gg.ones(2), gg.zeros(2)])
    assert stacked.shape == (2, 2)


def test_device_option_and_errors(on_cuda):
    loader = DataLoader(_ds(4), batch_size=2, device="cuda")
    x, y = next(iter(loader))
    assert x.device.type == "cuda" and y.device.type == "cuda"
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(_ds(4), shuffle=True, sampler=[0, 1])
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DataLoader(_ds(4), batch_size=0)
    with pytest.raises(ValueError, match="size mismatch between tensors"):
        TensorDataset(gg.ones(3), gg.ones(4))
    with pytest.raises(TypeError, match="not a Tensor"):
        TensorDataset(np.ones(3))


def test_training_loop_with_a_loader():
    gg.manual_seed(0)
    x = gg.randn(64, 3)
    y = (x.numpy() @ np.array([1.0, -2.0, 0.5]) > 0).astype(np.int64)
    model = gg.nn.Sequential(gg.nn.Linear(3, 16), gg.nn.ReLU(), gg.nn.Linear(16, 2))
    opt = gg.optim.Adam(model.parameters(), lr=0.05)
    loader = DataLoader(TensorDataset(x, gg.tensor(y)), batch_size=16, shuffle=True)
    for _ in range(15):
        for xb, yb in loader:
            opt.zero_grad()
            gg.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    acc = (model(x).numpy().argmax(1) == y).mean()
    assert acc > 0.9


def test_randperm_with_a_generator_stays_on_the_generators_device(cpu_or_strict_cuda):
    """``device`` and ``generator`` together: the permutation is on that device, and a generator of another
    device is refused (PyTorch too), not silently used to give a tensor on the generator's device."""
    dev = gg.device(cpu_or_strict_cuda)
    p = gg.randperm(7, generator=gg.Generator(dev).manual_seed(1))
    assert p.device == dev and sorted(p.tolist()) == list(range(7))
    assert gg.randperm(7, device=dev, generator=gg.Generator(dev).manual_seed(1)).tolist() == p.tolist()
    other = "cpu" if dev.type == "cuda" else "cuda"
    with pytest.raises(RuntimeError, match=rf"randperm: device={other}.* but the generator is on {dev}"):
        gg.randperm(7, device=other, generator=gg.Generator(dev))
