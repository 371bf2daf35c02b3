"""Gradient checkpointing: keep a block's inputs, recompute its activations during backward.

Trade: one extra forward of the block, for the memory of its activations (Chen et al. 2016).
``checkpoint(fn, *args)`` (mechanism.py) is the mechanism: one graph node whose backward recomputes
``fn`` and backpropagates through it, built on ``gg.autograd.graph``. ``checkpoint_sequential``
and the planner (planner.py) apply it to a chain of layers: ``plan`` / ``plan_for`` choose which
segments to checkpoint, nested, for a budget of saved activation bytes.
"""
from .mechanism import CheckpointFunction, checkpoint  # noqa: F401  (CheckpointFunction: the node's class)
from .planner import (CheckpointPlan, Segment, checkpoint_sequential, even_segments, layer_bytes, plan,
                      plan_for, predict_peak, recompute_count, sqrt_segments)

__all__ = ["checkpoint", "checkpoint_sequential", "plan", "plan_for", "CheckpointPlan", "Segment",
           "predict_peak", "recompute_count", "even_segments", "sqrt_segments", "layer_bytes"]
