"""``gg.save`` / ``gg.load``: checkpoints without pickle.

A checkpoint is a Tensor or a (nested) dict/list/tuple whose leaves are Tensors, NumPy arrays or
JSON values (str, int, float, bool, None), e.g. ``{'model': model.state_dict(), 'optimizer':
opt.state_dict(), 'epoch': 3}``. Arrays are stored by their path (``'model/0.weight'``; a flat state
dict keeps its own names) and everything else, with the structure and a format marker, as JSON
metadata.

Formats: ``.safetensors`` (the ``safetensors`` package) when the path ends in ``.safetensors``,
otherwise ``.npz`` (a zip of ``.npy`` arrays, read with ``allow_pickle=False``). Writes are atomic:
a temporary file in the same directory, flushed and fsynced, then ``os.replace``. The metadata
records each array's dtype, shape and CRC-32 (safetensors itself has no checksum), so a corrupt,
truncated or foreign file raises ``ValueError`` naming the file instead of loading wrong numbers;
the file is only read."""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from typing import Any, BinaryIO, Callable

import numpy as np

from ._device import as_device
from .install_hints import hint
from .backends import get_backend
from .tensor import Tensor, _make_result

__all__ = ["save", "load", "atomic_write", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "gpugrad.checkpoint"
FORMAT_VERSION = 1
_META_KEY = "__gpugrad_meta__"  # npz member / safetensors metadata key holding the JSON metadata
_CRC_KEY = "__gpugrad_meta_crc32__"  # safetensors metadata key: CRC-32 of the JSON metadata

_old_umask = os.umask(0)
os.umask(_old_umask)
_DEFAULT_MODE = 0o666 & ~_old_umask


# ------------------------------------------------------------------------------------------ encoding
class _Encoder:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._used = {_META_KEY}

    def _name(self, path: list[str]) -> str:
        base = "/".join(path) if path else "tensor"
        name, i = base, 1
        while name in self._used:
            name = f"{base}#{i}"
            i += 1
        self._used.add(name)
        return name

    def encode(self, obj: Any, path: list[str]) -> Any:
        where = "/".join(path) or "<root>"
        if isinstance(obj, Tensor):
            name = self._name(path)
            self.arrays[name] = np.asarray(obj.detach().numpy(), order="C")
            return {"__tensor__": name}
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise TypeError(f"save: the array at {where!r} has dtype object, which cannot be stored without "
                                "pickle; convert it to a numeric array")
            name = self._name(path)
            self.arrays[name] = np.asarray(obj, order="C")
            return {"__ndarray__": name}
        if isinstance(obj, np.generic):
            return obj.item()
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if isinstance(obj, dict):
            if all(isinstance(k, str) for k in obj):
                return {"__dict__": {k: self.encode(v, path + [k]) for k, v in obj.items()}}
            items = []
            for k, v in obj.items():
                if not (k is None or isinstance(k, (bool, int, float, str))):
                    raise TypeError(f"save: dict key {k!r} at {where!r} is a {type(k).__name__}; keys must be "
                                    "str, int, float, bool or None")
                items.append([k, self.encode(v, path + [str(k)])])
            return {"__items__": items}
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(v, path + [str(i)]) for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.encode(v, path + [str(i)]) for i, v in enumerate(obj)]
        raise TypeError(f"save: cannot store a {type(obj).__name__} at {where!r} without pickle; a checkpoint may "
                        "hold Tensors, NumPy arrays, dicts, lists, tuples, str, int, float, bool and None")


def _decode(node: Any, arrays: dict, dev, fname: str) -> Any:
    if isinstance(node, list):
        return [_decode(v, arrays, dev, fname) for v in node]
    if not isinstance(node, dict):
        return node
    if len(node) != 1:
        raise ValueError(f"load: {fname!r} has malformed gpugrad metadata (node with keys {sorted(node)[:5]})")
    (kind, val), = node.items()
    if kind in ("__tensor__", "__ndarray__"):
        if val not in arrays:
            raise ValueError(f"load: {fname!r} is incomplete: its metadata refers to array {val!r}, which the file "
                             "does not contain")
        arr = arrays[val]
        if kind == "__ndarray__":
            return arr
        return _make_result(get_backend(dev).from_numpy(arr), dev, None, 0)
    if kind == "__dict__":
        return {k: _decode(v, arrays, dev, fname) for k, v in val.items()}
    if kind == "__items__":
        return {k: _decode(v, arrays, dev, fname) for k, v in val}
    if kind == "__tuple__":
        return tuple(_decode(v, arrays, dev, fname) for v in val)
    raise ValueError(f"load: {fname!r} has malformed gpugrad metadata (unknown node kind {kind!r})")


# ------------------------------------------------------------------------------------------ writing
def atomic_write(path: str, write: Callable[[BinaryIO], Any], op: str = "write") -> None:
    """Write via ``write(fileobj)`` (a binary file) to a temporary file beside ``path``, fsync, then
    ``os.replace``; the file keeps an existing ``path``'s mode and the directory is fsynced. On any
    failure the temporary file is removed and an existing ``path`` is left untouched. A folder that is
    missing or not writable raises an ``OSError`` that names it (and ``op``, e.g. ``"save"``) and the fix."""
    directory = os.path.dirname(os.path.abspath(path))
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else _DEFAULT_MODE
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    except OSError as e:
        raise _folder_error(op, path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # persist the rename itself (best effort: not every platform can open a directory)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _folder_error(op: str, path: str, e: OSError) -> OSError:
    """The error of a write whose folder is missing, is a file, or refuses the temporary file."""
    folder = os.path.dirname(path) or "."
    if not os.path.exists(folder) and not isinstance(e, NotADirectoryError):
        why = (f"the folder {folder!r} does not exist. Fix: create it first (os.makedirs({folder!r}, "
               "exist_ok=True)) or write into an existing folder")
    elif not os.path.isdir(folder):
        why = f"{folder!r} (or a folder above it) is a file, not a folder. Fix: choose another path"
    else:
        why = (f"cannot create a file in the folder {folder!r} ({e.strerror or e}). Fix: check its permissions "
               "or write into another folder")
    return type(e)(f"{op}: cannot write {path!r}: {why}")


def _write_npz(f, arrays: dict, meta_json: str) -> None:
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)
        with zf.open(_META_KEY + ".npy", "w") as member:
            np.lib.format.write_array(member, np.frombuffer(meta_json.encode("utf-8"), dtype=np.uint8),
                                      allow_pickle=False)


def _is_safetensors_path(path: str) -> bool:
    return path.lower().endswith(".safetensors")


def save(obj: Any, path: "str | os.PathLike[str]") -> None:
    """Write ``obj`` (a Tensor, or nested dicts/lists/tuples of Tensors, arrays and JSON values such
    as ``{'model': m.state_dict(), 'optimizer': opt.state_dict(), 'epoch': 3}``) to ``path``.

    ``*.safetensors`` paths use the safetensors format (needs the safetensors package); any
    other path gets a NumPy ``.npz`` archive. Never pickles; the write is atomic."""
    path = os.fspath(path)
    enc = _Encoder()
    tree = enc.encode(obj, [])
    st = _is_safetensors_path(path)
    if st:
        try:
            from safetensors.numpy import save as st_save  # type: ignore
        except ImportError:
            raise ImportError(f"save: {path!r} ends in .safetensors but the safetensors package is not installed. "
                              f"Fix: {hint('safetensors')}, or save to a .npz path") from None
        for name, arr in enc.arrays.items():
            if arr.dtype.byteorder == ">":
                enc.arrays[name] = arr.astype(arr.dtype.newbyteorder("<"))
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "tree": tree,
            "arrays": {name: _array_info(a) for name, a in enc.arrays.items()}}
    meta_json = json.dumps(meta, separators=(",", ":"))
    if st:
        data = st_save(enc.arrays, metadata={_META_KEY: meta_json, _CRC_KEY: str(zlib.crc32(meta_json.encode()))})
        atomic_write(path, lambda f: f.write(data), "save")
    else:
        atomic_write(path, lambda f: _write_npz(f, enc.arrays, meta_json), "save")


def _crc32(a: np.ndarray) -> int:
    a = np.ascontiguousarray(a)
    return zlib.crc32(a.reshape(-1).view(np.uint8)) if a.size else 0


def _array_info(a: np.ndarray) -> list:
    """``[dtype, shape, crc32]``: checked on load (safetensors has no checksum of its own)."""
    return [a.dtype.str, list(a.shape), _crc32(a)]


def _verify_arrays(path: str, meta: dict, arrays: dict) -> None:
    info = meta.get("arrays")
    if not isinstance(info, dict):
        raise ValueError(f"load: {path!r} has gpugrad metadata without the array table; the file is corrupt")
    for name, entry in info.items():
        a = arrays.get(name)
        if a is None:
            raise ValueError(f"load: {path!r} is incomplete: its metadata lists array {name!r}, which the file does "
                             "not contain")
        if not (isinstance(entry, list) and len(entry) == 3):
            raise ValueError(f"load: {path!r} has corrupt gpugrad metadata (array table entry for {name!r})")
        dt, shape, crc = entry
        if a.dtype.str != dt or list(a.shape) != list(shape):
            raise ValueError(f"load: {path!r} is corrupt: array {name!r} is {a.dtype.str} {list(a.shape)} in the "
                             f"file but {dt} {list(shape)} in its metadata")
        if _crc32(a) != crc:
            raise ValueError(f"load: {path!r} is corrupt: the data of array {name!r} fails its CRC-32 check")


# ------------------------------------------------------------------------------------------ reading
def _sniff(path: str, head: bytes, size: int) -> str:
    """'npz' or 'safetensors', or a ValueError saying what the file looks like instead."""
    expected = "expected a checkpoint written by gg.save (a .npz zip archive or a .safetensors file)"
    if size == 0:
        raise ValueError(f"load: {path!r} is empty (0 bytes); {expected}. It may have been truncated.")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "npz"
    if len(head) >= 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        if n > size - 8:
            raise ValueError(f"load: {path!r} looks like a truncated .safetensors file: its header claims {n} bytes "
                             f"but the file has only {size} bytes; {expected}")
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        what = "a pickle file (e.g. from torch.save or pickle.dump); gpugrad never loads pickles"
    elif head[:6] == b"\x93NUMPY":
        what = "a single .npy array (np.save), not a gg.save checkpoint"
    elif head.lstrip()[:1] in (b"{", b"["):
        what = "JSON or other text"
    else:
        what = f"unrecognised data (starts with {head[:16]!r})"
    raise ValueError(f"load: {path!r} is not a gpugrad checkpoint: it looks like {what}; {expected}")


def _parse_meta(path: str, text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"load: {path!r} has corrupt gpugrad metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME or "tree" not in meta:
        raise ValueError(f"load: {path!r} has metadata that is not gpugrad's (expected format {FORMAT_NAME!r})")
    version = meta.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"load: {path!r} was written with checkpoint format version {version!r}; this gpugrad "
                         f"reads versions up to {FORMAT_VERSION}. Upgrade gpugrad.")
    return meta


def _read_npz(path: str) -> tuple[dict, dict | None]:
    arrays: dict = {}
    meta_text = None
    try:
        with open(path, "rb") as fh:
            with zipfile.ZipFile(fh) as zf:
                names = zf.namelist()
                bad = [n for n in names if not n.endswith(".npy")]
                if bad:
                    raise ValueError(f"load: {path!r} is a zip archive but not a gpugrad .npz checkpoint: it contains "
                                     f"{bad[0]!r} (expected only .npy arrays written by gg.save)")
                if _META_KEY + ".npy" not in names:
                    raise ValueError(f"load: {path!r} is a zip/.npz archive without gpugrad metadata (no "
                                     f"{_META_KEY!r} entry): it was not written by gg.save")
                for n in names:
                    with zf.open(n) as member:
                        arr = np.lib.format.read_array(member, allow_pickle=False)
                        if member.read(1):  # trailing bytes; reading to the end also checks the CRC
                            raise ValueError(f"member {n!r} has trailing data")
                    key = n[:-4]
                    if key == _META_KEY:
                        meta_text = arr.tobytes().decode("utf-8")
                    else:
                        arrays[key] = arr
    except ValueError as e:
        if str(e).startswith("load: "):
            raise
        raise ValueError(f"load: {path!r} is a corrupt .npz checkpoint ({e})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, UnicodeDecodeError, NotImplementedError,
            RuntimeError) as e:
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise ValueError(f"load: {path!r} is a corrupt or truncated .npz checkpoint ({type(e).__name__}: {e}); "
                         "expected a zip archive written by gg.save") from None
    return arrays, _parse_meta(path, meta_text)


def _read_safetensors(path: str) -> tuple[dict, dict | None]:
    try:
        from safetensors import safe_open  # type: ignore
    except ImportError:
        raise ImportError(f"load: {path!r} is a .safetensors file but the safetensors package is not installed. "
                          f"Fix: {hint('safetensors')}") from None
    try:
        arrays = {}
        with safe_open(path, framework="numpy") as f:
            md = f.metadata() or {}
            for k in f.keys():
                arrays[k] = f.get_tensor(k)
    except Exception as e:  # safetensors raises its own error types for corrupt headers/data
        raise ValueError(f"load: {path!r} is a corrupt .safetensors file ({type(e).__name__}: {e})") from None
    if _META_KEY not in md and _CRC_KEY not in md:
        return arrays, None  # a foreign safetensors file
    text, crc = md.get(_META_KEY), md.get(_CRC_KEY)
    if text is None or crc is None or str(zlib.crc32(text.encode())) != crc:
        raise ValueError(f"load: {path!r} is a corrupt .safetensors checkpoint: its gpugrad metadata fails the "
                         "CRC-32 check (or half of it is missing)")
    return arrays, _parse_meta(path, text)


def load(path: "str | os.PathLike[str]", device: Any = None, map_location: Any = None) -> Any:
    """Read a checkpoint written by :func:`save`; Tensors are placed on ``device`` (default CPU;
    ``map_location`` is an alias). A ``.safetensors`` file written by another tool loads as a flat
    ``{name: Tensor}`` dict. Anything else raises ``ValueError`` naming the file."""
    path = os.fspath(path)
    dev = as_device(device if device is not None else map_location)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(16)
    kind = _sniff(path, head, size)
    arrays, meta = _read_npz(path) if kind == "npz" else _read_safetensors(path)
    if meta is None:  # a foreign but valid safetensors file: flat name -> tensor
        return {k: _make_result(get_backend(dev).from_numpy(a), dev, None, 0) for k, a in arrays.items()}
    _verify_arrays(path, meta, arrays)
    return _decode(meta["tree"], arrays, dev, path)
