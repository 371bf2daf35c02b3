"""The ``gpugrad`` command: ``train`` an MLP, ``bench`` a training step, ``info`` about the install,
``diagnose`` vanishing/exploding gradients, ``graph`` a small computation graph. One module per
sub-command (each with ``add_parser(sub)`` and ``run(args)``); shared argument types in options.py.

Every command returns an exit code (``main([...])`` runs in-process): 0 success, 2 bad input
(unknown option values, an unwritable run folder, a corrupt resume file: the message goes to
stderr and nothing is overwritten), 130 interrupted (the last finished epoch stays resumable)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import bench, diagnose, graph, info, train
from .options import PROG, CLIError, Parser
from .train import CHECKPOINT_FILE

__all__ = ["main", "build_parser", "CLIError", "CHECKPOINT_FILE", "PROG"]

COMMANDS = {"train": train, "bench": bench, "info": info, "diagnose": diagnose, "graph": graph}


def build_parser() -> argparse.ArgumentParser:
    """The ``gpugrad`` argument parser (sub-commands train, bench, info, diagnose, graph)."""
    p = Parser(prog=PROG, description="gpugrad: reverse-mode autodiff for MLPs on CPU and NVIDIA GPUs.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", parser_class=Parser)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return p


def _err(cmd: str, msg: str) -> int:
    print(f"{PROG} {cmd}: error: {msg}" if cmd else f"{PROG}: error: {msg}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpugrad`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    cmd = argv[0] if argv and not argv[0].startswith("-") else ""
    try:
        args = parser.parse_args(argv)
    except CLIError as e:
        return _err(cmd, str(e))
    except SystemExit as e:  # --help
        return int(e.code or 0)
    if args.version:
        import gpugrad
        print(f"gpugrad {gpugrad.__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 0
    module = COMMANDS[args.command]
    try:
        return module.run(args, argv[1:])
    except CLIError as e:
        return _err(args.command, str(e))
    except KeyboardInterrupt:
        print(f"\n{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
