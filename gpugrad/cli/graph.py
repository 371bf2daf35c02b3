"""``gpugrad graph``: the computation graph of ``z = (x + y) * w`` (or a small MLP's loss) as DOT, and
SVG when Graphviz is installed."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .options import CLIError


def add_parser(sub) -> None:
    """Register ``graph`` on the sub-command parsers ``sub``."""
    gr = sub.add_parser("graph", help="write the computation graph of z = (x + y) * w (or an MLP loss) as DOT/SVG")
    gr.add_argument("--example", choices=("scalar", "mlp"), default="scalar",
                    help="scalar: z = (x + y) * w; mlp: the cross-entropy loss of MLP([3, 4, 2]) (default: scalar)")
    gr.add_argument("--out", default="graph.dot", help="DOT path (an .svg goes beside it when Graphviz is installed)")


def run(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    """``gpugrad graph``: returns the exit code."""
    import gpugrad as gg
    from .. import viz
    if args.example == "scalar":
        names = viz.scalar_example()
        root = names["z"]
    else:
        gg.manual_seed(0)
        model = gg.nn.MLP([3, 4, 2], activation="relu")
        xin = gg.randn(2, 3)
        loss = gg.nn.functional.cross_entropy(model(xin), gg.tensor([0, 1]))
        loss.backward()
        names = dict(model.named_parameters())
        root = loss
    try:
        text = viz.graph(root, path=args.out, names=names)
    except OSError as e:
        raise CLIError(f"--out {args.out!r}: cannot write there ({e.strerror or e})") from None
    print(text, end="")
    base = os.path.splitext(args.out)[0]
    print(f"wrote {base}.dot" + (f" and {base}.svg" if viz.dot_available() else " (install Graphviz for SVG)"),
          file=sys.stderr)
    return 0


