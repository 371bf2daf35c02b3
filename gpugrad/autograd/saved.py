"""Saved-activation accounting: bytes held by the graph for backward (current and peak).

Only arrays that exist *because of* the graph are counted: a leaf tensor's data (a parameter, an
input batch) lives anyway and is not counted. An array saved by several ops counts once."""
from __future__ import annotations

_live: dict[int, list] = {}  # id(array) -> [refcount, nbytes]
_stats = [0, 0]  # current, peak


def track(arr) -> None:
    key = id(arr)
    entry = _live.get(key)
    if entry is None:
        nbytes = int(arr.nbytes)
        _live[key] = [1, nbytes]
        cur = _stats[0] + nbytes
        _stats[0] = cur
        if cur > _stats[1]:
            _stats[1] = cur
    else:
        entry[0] += 1


def untrack(arr) -> None:
    key = id(arr)
    entry = _live.get(key)
    if entry is None:
        return
    entry[0] -= 1
    if entry[0] == 0:
        del _live[key]
        _stats[0] -= entry[1]


def saved_bytes() -> int:
    """Bytes of activations currently saved for backward."""
    return _stats[0]


def peak_saved_bytes() -> int:
    """The most bytes saved for backward at once since the last reset."""
    return _stats[1]


def reset_peak_saved_bytes() -> None:
    """Reset the peak to the current value."""
    _stats[1] = _stats[0]
