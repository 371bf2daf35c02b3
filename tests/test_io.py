"""gg.save / gg.load: round trips (npz and safetensors), training resume, atomic writes, and clear
errors for corrupt or foreign files (which are never modified)."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.io as gio
from gpugrad import nn, optim
from gpugrad.install_hints import hint

try:
    import safetensors  # noqa: F401
    HAVE_ST = True
except ImportError:
    HAVE_ST = False

SUFFIXES = [".npz", pytest.param(".safetensors", marks=pytest.mark.skipif(not HAVE_ST, reason="no safetensors"))]


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _model():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_flat_state_dict_round_trip_keeps_names_dtypes_shapes(tmp_path, suffix):
    sd = {
        "a.weight": gg.randn(3, 4),
        "b": gg.randn(5, dtype=gg.float64),
        "half": gg.randn(2, 2).to(gg.float16),
        "idx": gg.tensor([1, 2, 3]),
        "flag": gg.tensor([True, False]),
        "scalar": gg.tensor(2.5),
        "empty": gg.zeros(0, 3),
    }
    path = tmp_path / f"ck{suffix}"
    gg.save(sd, path)
    back = gg.load(path)
    assert list(back) == list(sd)
    for k, v in sd.items():
        assert isinstance(back[k], gg.Tensor) and back[k].device == gg.device("cpu")
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k].numpy(), v.numpy())
    assert not [f for f in os.listdir(tmp_path) if f != path.name]  # no temporary files left


def test_npz_is_plain_numpy_without_pickle(tmp_path):
    m = _model()
    path = tmp_path / "model.npz"
    gg.save(m.state_dict(), path)
    with np.load(path, allow_pickle=False) as z:
        assert set(m.state_dict()) <= set(z.files)
        np.testing.assert_array_equal(z["0.weight"], m[0].weight.numpy())
        meta = json.loads(z[gio._META_KEY].tobytes())
    assert meta["format"] == gio.FORMAT_NAME and meta["version"] == gio.FORMAT_VERSION


@pytest.mark.skipif(not HAVE_ST, reason="no safetensors")
def test_safetensors_interop(tmp_path):
    from safetensors.numpy import load_file, save_file
    m = _model()
    path = tmp_path / "model.safetensors"
    gg.save(m.state_dict(), path)
    plain = load_file(str(path))  # readable by any safetensors consumer, with the state dict's names
    assert set(plain) == set(m.state_dict())
    np.testing.assert_array_equal(plain["2.bias"], m[2].bias.numpy())
    # a foreign safetensors file (no gpugrad metadata) loads as a flat dict
    other = tmp_path / "other.safetensors"
    save_file({"0.weight": np.ones((8, 4), np.float32), "x": np.arange(3)}, str(other))
    back = gg.load(other)
    assert set(back) == {"0.weight", "x"} and back["x"].dtype == np.int64


def test_safetensors_path_without_package_is_clear(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("safetensors"):
            raise ImportError("no safetensors")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install safetensors") as e:
        gg.save({"a": gg.ones(1)}, tmp_path / "x.safetensors")
    assert hint("safetensors") in str(e.value)
    assert not os.listdir(tmp_path)


def test_saving_into_a_missing_folder_names_the_folder_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        gg.save({"a": gg.ones(1)}, "missing/dir/x.npz")
    msg = str(e.value)
    assert msg.startswith("save: cannot write 'missing/dir/x.npz': the folder 'missing/dir' does not exist")
    assert "os.makedirs('missing/dir', exist_ok=True)" in msg and ".tmp" not in msg  # not the temporary file
    assert e.value.__cause__ is None and e.value.__suppress_context__
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="'afile' .* is a file, not a folder"):
        gg.save({"a": gg.ones(1)}, "afile/x.npz")
    with pytest.raises(NotADirectoryError, match=r"'afile/sub' \(or a folder above it\) is a file, not a folder"):
        gg.save({"a": gg.ones(1)}, "afile/sub/x.npz")  # not "does not exist ... os.makedirs", which would fail too
    assert sorted(os.listdir(tmp_path)) == ["afile"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_nested_checkpoint_and_resume_gives_identical_next_step(tmp_path, suffix):
    gg.manual_seed(0)
    X, Y = gg.randn(16, 4), gg.randn(16, 3)

    def train_step(model, opt):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(X), Y)
        loss.backward()
        opt.step()
        return loss.item()

    model = _model()
    opt = optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    sch = optim.lr_scheduler.StepLR(opt, 2, gamma=0.5)
    for _ in range(3):
        train_step(model, opt)
        sch.step()
    ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sch.state_dict(),
          "epoch": 3, "name": "run-1", "best": float("inf"), "note": None, "shape": (4, 8), "tags": ["a", 1]}
    path = tmp_path / f"ck{suffix}"
    gg.save(ck, path)

    gg.manual_seed(99)  # a differently initialised model
    model2 = _model()
    opt2 = optim.Adam(model2.parameters(), lr=0.5)
    sch2 = optim.lr_scheduler.StepLR(opt2, 2, gamma=0.5)
    back = gg.load(path)
    assert back["epoch"] == 3 and back["name"] == "run-1" and back["best"] == float("inf")
    assert back["note"] is None and back["shape"] == (4, 8) and back["tags"] == ["a", 1]
    assert sorted(back["optimizer"]["state"]) == [0, 1, 2, 3]  # int keys survive
    model2.load_state_dict(back["model"])
    opt2.load_state_dict(back["optimizer"])
    sch2.load_state_dict(back["scheduler"])
    for _ in range(2):
        l1 = train_step(model, opt)
        sch.step()
        l2 = train_step(model2, opt2)
        sch2.step()
        assert l1 == l2
        assert sch.get_last_lr() == sch2.get_last_lr()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert np.array_equal(a.numpy(), b.numpy())


def test_single_tensor_arrays_and_device_argument(tmp_path):
    t = gg.randn(3, 3)
    gg.save(t, tmp_path / "t.npz")
    back = gg.load(tmp_path / "t.npz", device="cpu")
    assert isinstance(back, gg.Tensor)
    np.testing.assert_array_equal(back.numpy(), t.numpy())
    arr = np.arange(6).reshape(2, 3)
    gg.save({"raw": arr, "k": {1: "one", 2.5: True}}, str(tmp_path / "a.npz"))
    out = gg.load(str(tmp_path / "a.npz"), map_location="cpu")
    assert isinstance(out["raw"], np.ndarray) and np.array_equal(out["raw"], arr)
    assert out["k"] == {1: "one", 2.5: True}
    # colliding flattened names stay distinct
    gg.save({"a/b": gg.ones(1), "a": {"b": gg.zeros(1)}}, tmp_path / "c.npz")
    c = gg.load(tmp_path / "c.npz")
    assert c["a/b"].item() == 1 and c["a"]["b"].item() == 0


def test_save_rejects_unstorable_objects(tmp_path):
    with pytest.raises(TypeError, match="cannot store a object at 'model/fn'"):
        gg.save({"model": {"fn": object()}}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="dtype object"):
        gg.save({"a": np.array([{}], dtype=object)}, tmp_path / "x.npz")
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------ atomicity
def test_failed_write_leaves_original_intact(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    gg.save({"w": gg.ones(100)}, path)
    before = _digest(path)

    def exploding_writer(f, arrays, meta_json):
        f.write(b"PK\x03\x04 partial garbage" * 100)  # half-written data...
        raise OSError("disk full")  # ...then the failure
    monkeypatch.setattr(gio, "_write_npz", exploding_writer)
    with pytest.raises(OSError, match="disk full"):
        gg.save({"w": gg.zeros(100)}, path)
    assert _digest(path) == before
    assert os.listdir(tmp_path) == ["ck.npz"]  # the temporary file was removed
    np.testing.assert_array_equal(gg.load(path)["w"].numpy(), np.ones(100))

    # an interruption (KeyboardInterrupt) between write and rename behaves the same
    monkeypatch.undo()

    def interrupted_replace(src, dst):
        raise KeyboardInterrupt
    monkeypatch.setattr(gio.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        gg.save({"w": gg.zeros(100)}, path)
    monkeypatch.undo()
    assert _digest(path) == before and os.listdir(tmp_path) == ["ck.npz"]


def test_overwrite_and_permissions(tmp_path):
    path = tmp_path / "ck.npz"
    gg.save({"w": gg.ones(2)}, path)
    os.chmod(path, 0o640)
    gg.save({"w": gg.zeros(2)}, path)
    assert np.all(gg.load(path)["w"].numpy() == 0)
    assert os.stat(path).st_mode & 0o777 == 0o640  # an existing file keeps its mode


# ------------------------------------------------------------------------------ corrupt / foreign files
def _foreign_files(tmp_path):
    files = {}
    rng = np.random.default_rng(0)
    p = tmp_path / "random.npz"
    p.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["random"] = (p, "not a gpugrad checkpoint")
    p = tmp_path / "empty.npz"
    p.write_bytes(b"")
    files["empty"] = (p, "is empty")
    p = tmp_path / "model.pt"
    with open(p, "wb") as f:
        pickle.dump({"w": np.ones(3)}, f, protocol=4)
    files["pickle"] = (p, "pickle")
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps({"lr": 0.1, "layers": [1, 2, 3]}))
    files["json"] = (p, "JSON")
    p = tmp_path / "notes.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    files["zip"] = (p, "contains 'readme.txt'")
    p = tmp_path / "plain.npz"
    np.savez(p, a=np.ones(3))
    files["plain_npz"] = (p, "without gpugrad metadata")
    p = tmp_path / "arr.npy"
    np.save(p, np.ones(3))
    files["npy"] = (p, "single .npy array")
    p = tmp_path / "objects.npz"
    with zipfile.ZipFile(p, "w") as z:
        with z.open("a.npy", "w") as m:
            np.lib.format.write_array(m, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        with z.open(gio._META_KEY + ".npy", "w") as m:
            np.lib.format.write_array(m, np.frombuffer(b'{"format":"gpugrad.checkpoint","version":1,'
                                                       b'"tree":{"__tensor__":"a"}}', np.uint8))
    files["pickled_member"] = (p, "corrupt .npz")
    # our own checkpoint, truncated / bit-flipped / from the future
    good = tmp_path / "good.npz"
    gg.save({"w": gg.randn(64, 64)}, good)
    data = good.read_bytes()
    p = tmp_path / "truncated.npz"
    p.write_bytes(data[: len(data) // 2])
    files["truncated"] = (p, "corrupt")
    p = tmp_path / "flipped.npz"
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    p.write_bytes(bytes(flipped))
    files["bitflip"] = (p, "corrupt")
    p = tmp_path / "future.npz"
    with zipfile.ZipFile(p, "w") as z:
        with z.open(gio._META_KEY + ".npy", "w") as m:
            np.lib.format.write_array(m, np.frombuffer(b'{"format":"gpugrad.checkpoint","version":99,"tree":1}',
                                                       np.uint8))
    files["future"] = (p, "version 99")
    p = tmp_path / "missing_member.npz"
    with zipfile.ZipFile(p, "w") as z:
        with z.open(gio._META_KEY + ".npy", "w") as m:
            np.lib.format.write_array(m, np.frombuffer(b'{"format":"gpugrad.checkpoint","version":1,'
                                                       b'"tree":{"__tensor__":"gone"},"arrays":{}}', np.uint8))
    files["missing_member"] = (p, "does not contain")
    if HAVE_ST:
        st = tmp_path / "good.safetensors"
        gg.save({"w": gg.randn(64, 64)}, st)
        sdata = st.read_bytes()
        p = tmp_path / "truncated.safetensors"
        p.write_bytes(sdata[: len(sdata) - 100])
        files["st_truncated"] = (p, "corrupt .safetensors")
        p = tmp_path / "badheader.safetensors"
        p.write_bytes((40).to_bytes(8, "little") + b"{" + b"x" * 39 + b"\0" * 16)
        files["st_badheader"] = (p, "corrupt .safetensors")
        p = tmp_path / "huge_header.safetensors"
        p.write_bytes((10 ** 9).to_bytes(8, "little") + b'{"a": 1}')
        files["st_huge_header"] = (p, "truncated .safetensors")
    return files


def test_corrupt_and_foreign_files_raise_clear_errors_and_stay_unmodified(tmp_path):
    files = _foreign_files(tmp_path)
    for kind, (path, fragment) in files.items():
        before = _digest(path)
        mtime = os.stat(path).st_mtime_ns
        with pytest.raises(ValueError) as ei:
            gg.load(path)
        msg = str(ei.value)
        assert str(path) in msg, (kind, msg)
        assert fragment in msg, (kind, msg)
        assert _digest(path) == before and os.stat(path).st_mtime_ns == mtime, kind
    with pytest.raises(FileNotFoundError):
        gg.load(tmp_path / "does-not-exist.npz")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_single_byte_corruption_never_loads_wrong_data(tmp_path, suffix):
    """Flip or cut at (a sample of) every offset: load either raises ValueError or returns the
    exact original (e.g. a flipped zip timestamp); never silently wrong numbers."""
    sd = {"w": gg.randn(4, 4), "b": gg.randn(4)}
    good = tmp_path / f"good{suffix}"
    gg.save({"model": sd, "epoch": 3}, good)
    data = good.read_bytes()
    bad = tmp_path / f"bad{suffix}"
    outcomes = {"error": 0, "same": 0}
    for i in range(0, len(data), 3):
        for blob in (data[:i], data[:i] + bytes([data[i] ^ 0x55]) + data[i + 1:]):
            bad.write_bytes(blob)
            try:
                out = gg.load(bad)
            except ValueError:
                outcomes["error"] += 1
                continue
            assert out["epoch"] == 3, i
            for k, v in sd.items():
                assert np.array_equal(out["model"][k].numpy(), v.numpy()), (i, k)
            outcomes["same"] += 1
    assert outcomes["error"] > 0.8 * sum(outcomes.values())
