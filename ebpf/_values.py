"""The old home of :func:`encode_fixed`, kept for its importers (the spec
layer's variables).  The marshaller is :mod:`ebpf._marshal`; add encodings
there, not here."""

from __future__ import annotations

from ._marshal import encode_fixed

__all__ = ["encode_fixed"]
