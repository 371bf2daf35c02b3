"""gg.viz.graph: DOT text of the computation graph with op names, shapes, values and gradients."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import viz


def _zxyw():
    return tuple(viz.scalar_example().values())  # x, y, w, s, z


def _labels(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r'^\s*(n\d+) \[.*?label="(.*?)"\];$', text, re.M)}


def test_dot_of_z_equals_x_plus_y_times_w():
    x, y, w, s, z = _zxyw()
    text = viz.graph(z, names={"x": x, "y": y, "w": w, "s": s, "z": z})
    assert text.startswith("digraph gpugrad {") and text.rstrip().endswith("}")
    labels = _labels(text)
    assert len(labels) == 5  # mul, add, x, y, w
    by_title = {lab.split("\\n")[0]: (nid, lab) for nid, lab in labels.items()}
    assert set(by_title) == {"mul", "add", "x", "y", "w"}
    # values and gradients as in the worked example: s = 5, z = 20; dz/dx = dz/dy = w = 4, dz/dw = s = 5
    assert "z = scalar float32" in by_title["mul"][1] and "value 20" in by_title["mul"][1]
    assert "s = scalar float32" in by_title["add"][1] and "value 5" in by_title["add"][1]
    assert "grad 4" in by_title["add"][1]  # s.retain_grad(): dz/ds = w
    assert "value 2" in by_title["x"][1] and "grad 4" in by_title["x"][1]
    assert "value 3" in by_title["y"][1] and "grad 4" in by_title["y"][1]
    assert "value 4" in by_title["w"][1] and "grad 5" in by_title["w"][1]
    # edges point forward: x, y -> add -> mul <- w
    ids = {k: v[0] for k, v in by_title.items()}
    edges = set(re.findall(r"(n\d+) -> (n\d+)", text))
    assert edges == {(ids["x"], ids["add"]), (ids["y"], ids["add"]), (ids["add"], ids["mul"]),
                     (ids["w"], ids["mul"])}


def test_large_tensors_show_shape_only_and_unnamed_leaves():
    a = gg.randn(3, 4, requires_grad=True)
    b = gg.randn(4, 5, requires_grad=True)
    loss = (a @ b).relu().sum()
    loss.backward()
    text = viz.graph(loss)
    labels = list(_labels(text).values())
    assert any(lab.startswith("sum\\nscalar float32\\nvalue ") for lab in labels)
    assert any("(3, 4) float32" in lab and "value" not in lab for lab in labels)
    assert sum(lab.startswith("leaf") for lab in labels) == 2
    assert any("relu" in lab for lab in labels)


def test_shared_subexpression_is_one_node_and_deep_graph_is_iterative():
    x = gg.tensor(1.5, requires_grad=True)
    h = x * x
    out = h + h  # fan-out: h's node appears once, with two edges into add
    text = viz.graph(out, names={"x": x})
    assert len(_labels(text)) == 3
    assert len(re.findall(r"-> ", text)) == 4  # x->mul twice, mul->add twice
    t = gg.tensor(1.0, requires_grad=True)
    y = t
    for _ in range(3000):  # deeper than Python's recursion limit
        y = y * 1.0
    assert len(_labels(viz.graph(y))) == 3001


def test_leaf_and_constant_tensors():
    t = gg.tensor([1.0, 2.0], requires_grad=True)
    assert "value [1, 2]" in viz.graph(t).replace(".,", ",").replace(".]", "]")
    c = gg.tensor([1.0, 2.0])
    assert len(_labels(viz.graph(c))) == 1
    with pytest.raises(TypeError, match="viz.graph"):
        viz.graph(np.ones(3))


def test_writes_dot_and_svg_when_graphviz_present(tmp_path):
    x, y, w, s, z = _zxyw()
    text = viz.graph(z, path=tmp_path / "g.png", names={"x": x})
    assert (tmp_path / "g.dot").read_text() == text
    if shutil.which("dot"):
        svg = (tmp_path / "g.svg").read_text()
        assert "<svg" in svg and "mul" in svg
    else:
        assert not (tmp_path / "g.svg").exists()
