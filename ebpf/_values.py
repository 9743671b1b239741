"""Turning Python keys and values into the exact bytes a map expects.

Accepted: bytes-like objects, ints, ctypes instances, anything with
``__bytes__``, and -- where a BTF codec is known -- whatever the codec accepts
(dicts, struct objects, lists).  The size is always checked before any
syscall, so the kernel never reads past a Python buffer.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any, Optional

from .errors import MarshalError

_BYTEORDER = sys.byteorder
_CTYPES = (ctypes._SimpleCData, ctypes.Structure, ctypes.Union, ctypes.Array)  # type: ignore[attr-defined]


def encode_fixed(value: Any, size: int, codec: Optional[Any] = None, what: str = "value") -> bytes:
    """Encode ``value`` to exactly ``size`` bytes or raise MarshalError/TypeError."""
    if isinstance(value, (bytes, bytearray, memoryview)) and (codec is None or len(value) == size):
        raw = bytes(value)
    elif codec is not None and (
        isinstance(value, (bytes, bytearray, memoryview))  # a short char[N] is padded by the codec
        or (not isinstance(value, _CTYPES) and not hasattr(value, "__bytes__"))
    ):
        try:
            raw = codec.encode(value)
        except MarshalError:
            raise
        except ValueError as exc:
            # One error type for "does not fit", whether BTF said so or we did.
            raise MarshalError(f"{what}: {exc}") from None
    elif isinstance(value, bool):
        raw = int(value).to_bytes(size, _BYTEORDER) if size else b""
    elif isinstance(value, int):
        if size not in (1, 2, 4, 8, 16):
            raise MarshalError(f"{what}: cannot encode an int into {size} bytes; pass bytes")
        try:
            raw = value.to_bytes(size, _BYTEORDER, signed=value < 0)
        except OverflowError:
            raise MarshalError(f"{what}: {value} does not fit in {size} bytes") from None
    elif isinstance(value, _CTYPES):
        raw = bytes(memoryview(value).cast("B"))
    elif hasattr(value, "__bytes__"):
        raw = bytes(value)
    else:
        raise TypeError(f"{what}: cannot encode {type(value).__name__}; pass bytes, int or a ctypes object")
    if len(raw) != size:
        raise MarshalError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw
