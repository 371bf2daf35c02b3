"""Device descriptors: ``gg.device("cpu")``, ``gg.device("cuda:0")``."""
from __future__ import annotations

_KNOWN_TYPES = ("cpu", "cuda")


class device:  # noqa: N801  (PyTorch spelling)
    """A device a tensor lives on: ``cpu`` or ``cuda[:N]``."""

    __slots__ = ("type", "index", "_be")

    def __init__(self, spec: "str | device" = "cpu", index: int | None = None) -> None:
        self._be = None  # this device's backend, cached by the first op that runs on it
        if isinstance(spec, device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"gg.device: expected a string such as 'cpu' or 'cuda:0', got {type(spec).__name__}")
        text = spec.strip().lower()
        typ, _, idx = text.partition(":")
        if typ not in _KNOWN_TYPES:
            raise ValueError(f"gg.device: unknown device type {spec!r}; expected one of 'cpu', 'cuda', 'cuda:N'")
        if idx:
            if not idx.isdigit():
                raise ValueError(f"gg.device: bad device index in {spec!r}; write e.g. 'cuda:0'")
            index = int(idx)
        if typ == "cpu":
            index = None
        elif index is None:
            index = 0
        self.type, self.index = typ, index

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = device(other)
            except (ValueError, TypeError):
                return False
        return isinstance(other, device) and self.type == other.type and self.index == other.index

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    # A device is an immutable name: copies are itself. (A copy would also copy ``_be``, the device's
    # backend: a deep-copied tensor or model then ran its ops on a duplicate backend, whose random state
    # gg.manual_seed no longer reaches, with duplicated caches and, on CUDA, duplicated runtime state.)
    def __copy__(self) -> "device":
        return self

    def __deepcopy__(self, memo: dict) -> "device":
        return self

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        return f"device(type='{self.type}')" if self.index is None else f"device(type='{self.type}', index={self.index})"


CPU = device("cpu")


def as_device(d: "str | device | None") -> device:
    """Normalise a device argument (``None`` means CPU)."""
    if d is None:
        return CPU
    if isinstance(d, device):
        return d
    return device(d)
