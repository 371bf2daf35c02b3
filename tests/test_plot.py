"""The dependency-free PNG writer (gg.viz.write_png) and line plots (gpugrad/plot.py), read back with an
independent PNG decoder (tests/support/png.py: every filter type of the PNG specification, checked
against zlib's CRCs)."""
from __future__ import annotations

import numpy as np
import pytest

from gpugrad import diagnostics, plot, viz
from tests.support.png import read_png


def test_the_decoder_reads_every_filter_type(tmp_path):
    """tests/support/png.py against PNG rows filtered by the specification's five filters, one per row."""
    import struct
    import zlib
    img = np.random.default_rng(1).integers(0, 256, (5, 4, 3)).astype(np.int64)
    h, w, c = img.shape
    rows, prev = [], np.zeros(w * c, np.int64)
    for y in range(h):
        x = img[y].reshape(-1)
        a = np.concatenate([np.zeros(c, np.int64), x[:-c]])
        cc = np.concatenate([np.zeros(c, np.int64), prev[:-c]])
        p = a + prev - cc
        pa, pb, pc = np.abs(p - a), np.abs(p - prev), np.abs(p - cc)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, prev, cc))
        pred = [np.zeros_like(x), a, prev, (a + prev) // 2, paeth][y]
        rows.append(bytes([y]) + ((x - pred) & 0xFF).astype(np.uint8).tobytes())
        prev = x

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    path = tmp_path / "f.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    np.testing.assert_array_equal(read_png(path), img)


@pytest.mark.parametrize("shape", [(7, 5), (6, 9, 3), (4, 3, 4), (1, 1, 3)])
def test_write_png_round_trips(tmp_path, shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = viz.write_png(tmp_path / "a.png", img)
    back = read_png(path)
    np.testing.assert_array_equal(back, img.reshape(back.shape))
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temp file left


def test_write_png_takes_floats_and_refuses_bad_input(tmp_path):
    viz.write_png(tmp_path / "f.png", np.array([[0.0, 0.5, 1.0, 2.0]]))
    assert read_png(tmp_path / "f.png")[0, :, 0].tolist() == [0, 128, 255, 255]
    with pytest.raises(ValueError, match=r"\(H, W\), \(H, W, 3\) or \(H, W, 4\)"):
        viz.write_png(tmp_path / "x.png", np.zeros((2, 2, 2)))
    with pytest.raises(TypeError, match="uint8 or floats"):
        viz.write_png(tmp_path / "x.png", np.zeros((2, 2), dtype=np.int32))


def test_write_png_into_a_missing_folder_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        viz.write_png(tmp_path / "missing" / "a.png", np.zeros((2, 2), dtype=np.uint8))
    msg = str(e.value)
    assert msg.startswith("write_png: cannot write ") and "the folder " in msg and "does not exist" in msg
    assert ".tmp" not in msg  # not the temporary file
    assert [p.name for p in tmp_path.iterdir()] == []


def test_font_covers_printable_ascii():
    assert set(plot._FONT) == {chr(c) for c in range(32, 127)}
    assert all(g.shape == (9, 5) for g in plot._FONT.values())
    assert not plot._FONT[" "].any() and plot._FONT["g"][7:].any() and not plot._FONT["A"][7:].any()
    # distinct glyphs: no character was pasted twice
    assert len({g.tobytes() for g in plot._FONT.values()}) == 95


def test_ticks():
    assert plot._linear_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert plot._linear_ticks(-0.03, 20.6) == [0.0, 5.0, 10.0, 15.0, 20.0]
    assert plot._log_ticks(-3.2, 0.1) == [1e-3, 1e-2, 1e-1, 1.0]
    assert plot._log_ticks(-14.5, 1.3)[:2] == [1e-14, 1e-11]  # at most 7 decades labelled
    assert plot._log_ticks(-0.4, 0.2) == [0.5, 1.0]
    assert [plot._fmt_power(v) for v in (1e-3, 0.01, 1.0, 200.0, 1e-5, 2e-5, 1e4)] == [
        "0.001", "0.01", "1", "200", "1e-5", "2e-5", "1e4"]
    assert plot._fmt_linear(0.25, 0.25) == "0.25" and plot._fmt_linear(15.0, 5.0) == "15"
    assert plot._fmt_linear(2e6, 1e6) == "2e6"


def _ink(img: np.ndarray, color) -> int:
    """Pixels within 40 of ``color`` (0..1 RGB)."""
    c = np.asarray(color) * 255
    return int((np.abs(img[..., :3].astype(int) - c).max(axis=-1) < 40).sum())


def test_a_figure_draws_its_lines_text_and_legend(tmp_path):
    fig = plot.Figure(ncols=2, width=900, height=360, title="a title")
    a = fig.panel(xlabel="epoch", ylabel="loss", yscale="log")
    a.line([1, 2, 3, 4], [1.0, 0.1, 0.01, 0.001], label="train", marker="o")
    b = fig.panel(xlabel="batch", xscale="log2", xticks=[128, 1024])
    b.line([128, 1024], [0.1, 0.2], color=plot.PALETTE[2], dashed=True, label="torch")
    b.hline(0.3, label="ceiling")
    img = read_png(fig.save(tmp_path / "f.png"))
    assert img.shape == (360, 900, 3)
    assert _ink(img, plot.PALETTE[0]) > 300 and _ink(img, plot.PALETTE[2]) > 100  # both lines
    assert _ink(img[:, :450], plot.PALETTE[2]) == 0  # each line in its own panel
    assert _ink(img, (0.84, 0.15, 0.16)) > 100  # the ceiling line
    assert _ink(img[:30], (0.1, 0.1, 0.1)) > 50  # the title's text
    # a NaN, or a value <= 0 on a log axis, breaks a line instead of failing
    c = plot.Figure()
    c.panel(yscale="log").line([1, 2, 3, 4], [1.0, float("nan"), -1.0, 0.1])
    c.save(tmp_path / "g.png")


def test_bad_arguments_are_named():
    fig = plot.Figure()
    with pytest.raises(ValueError, match="unknown scale"):
        fig.panel(yscale="symlog")
    ax = fig.panel()
    with pytest.raises(ValueError, match="differ in length"):
        ax.line([1, 2], [1.0])
    with pytest.raises(ValueError, match="1 panel"):
        fig.panel()


def test_diagnostics_plots_need_only_numpy(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib would fail
    recs = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.2 / e, "train_acc": 0.5 + e / 10, "test_acc": 0.5 + e / 11}
            for e in range(1, 5)]
    assert read_png(diagnostics.plot_curves(recs, str(tmp_path / "c.png"), "t")).shape == (440, 1100, 3)
    hist = [{"step": s, "norms": {"a": 1.0 / (s + 1), "b": 2.0}} for s in range(0, 200, 2)]
    assert read_png(diagnostics.plot_grad_norm_history(hist, str(tmp_path / "h.png"))).shape[2] == 3
    prof = {"sigmoid": [1e-9, 1e-5, 1e-2], "relu": [0.1, 0.2, 0.3]}
    assert read_png(diagnostics.plot_grad_norm_profiles(prof, str(tmp_path / "p.png"))).shape[2] == 3
    rows = [{"depth": 4, "width": w, "batch": b, "gpugrad_tflops": 0.1 * b / 128, "torch_tflops": 0.09 * b / 128}
            for w in (256, 1024) for b in (128, 1024)]
    img = read_png(diagnostics.plot_bench(rows, str(tmp_path / "b.png"), ceiling_tflops=0.2))
    assert _ink(img, (0.84, 0.15, 0.16)) > 100
    assert diagnostics.plot_curves([], str(tmp_path / "none.png")) is None
