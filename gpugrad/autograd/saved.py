"""Saved-activation accounting: bytes held by the graph for backward (current and peak).

Only arrays that exist *because of* the graph are counted: a leaf tensor's data (a parameter, an
input batch) lives anyway and is not counted. An array saved by several ops counts once."""
from __future__ import annotations

# Two dicts of ints rather than one of [refcount, nbytes] lists: every recorded op that saves an array
# comes here, and an int is not an object Python's garbage collector tracks (a list would be one more).
_live: dict[int, int] = {}  # id(array) -> how many nodes hold it
_nbytes: dict[int, int] = {}  # id(array) -> its bytes, counted once
_stats = [0, 0]  # current, peak


def track(arr) -> None:
    key = id(arr)
    n = _live.get(key)
    if n is None:
        nbytes = int(arr.nbytes)
        _live[key] = 1
        _nbytes[key] = nbytes
        cur = _stats[0] + nbytes
        _stats[0] = cur
        if cur > _stats[1]:
            _stats[1] = cur
    else:
        _live[key] = n + 1


def untrack(arr) -> None:
    key = id(arr)
    n = _live.get(key)
    if n is None:
        return
    if n > 1:
        _live[key] = n - 1
    else:
        del _live[key]
        _stats[0] -= _nbytes.pop(key)


def saved_bytes() -> int:
    """Bytes of activations currently saved for backward."""
    return _stats[0]


def peak_saved_bytes() -> int:
    """The most bytes saved for backward at once since the last reset."""
    return _stats[1]


def reset_peak_saved_bytes() -> None:
    """Reset the peak to the current value."""
    _stats[1] = _stats[0]
