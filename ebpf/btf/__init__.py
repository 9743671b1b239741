"""BTF (BPF Type Format): a pure-Python parser, C formatter and value codec.

>>> spec = load_spec("prog.o")                      # ELF .BTF section or raw BTF
>>> s = spec.type_by_name("event", kind=Struct)
>>> codec_for(s).decode(raw_value)                   # map values as Python objects

Modules: :mod:`.parse` (wire format), :mod:`.validation` (the one
validator, run on everything handed to libbpf), :mod:`.types` (one class
per kind), :mod:`.spec` (lookups and loaders), :mod:`.format` (C
declarations), :mod:`.codec` (values), :mod:`.builder` (types to BTF
bytes), :mod:`.handle` (BTF loaded into the kernel).  The codec, formatter,
builder and handle load on first use to keep ``import ebpf.btf`` fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .parse import BTFError, Kind
from .spec import (
    AmbiguousTypeError,
    Spec,
    TypeNotFoundError,
    flush_kernel_specs,
    load_kernel_module_spec,
    load_kernel_spec,
    load_spec,
    validate,
)
from .types import (
    Array,
    Const,
    Datasec,
    DeclTag,
    Enum,
    Enum64,
    EnumValue,
    Float,
    Func,
    FuncLinkage,
    FuncParam,
    FuncProto,
    Fwd,
    FwdKind,
    Int,
    IntEncoding,
    Member,
    Pointer,
    Restrict,
    Struct,
    Type,
    Typedef,
    TypeTag,
    Union,
    Var,
    VarLinkage,
    VarSecinfo,
    Void,
    Volatile,
    alignof,
    sizeof,
    underlying,
    walk,
)

if TYPE_CHECKING:  # pragma: no cover - what the lazy names are, for type checkers
    from ..ids import btf_ids
    from .builder import Builder
    from .codec import Codec, codec_for
    from .format import declaration, declarator, format_c
    from .handle import Handle

_LAZY = {
    "Builder": ".builder",
    "Handle": ".handle",
    "Codec": ".codec",
    "codec_for": ".codec",
    "format_c": ".format",
    "declaration": ".format",
    "btf_ids": "..ids",
    "declarator": ".format",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AmbiguousTypeError", "Array", "BTFError", "Builder", "Codec", "Const", "Datasec", "DeclTag", "Enum",
    "Enum64", "EnumValue", "Float", "Func", "FuncLinkage", "FuncParam", "FuncProto", "Fwd",
    "FwdKind", "Handle", "Int", "IntEncoding", "Kind", "Member", "Pointer", "Restrict", "Spec", "Struct",
    "Type", "TypeNotFoundError", "TypeTag", "Typedef", "Union", "Var", "VarLinkage", "VarSecinfo",
    "Void", "Volatile", "alignof", "btf_ids", "codec_for", "declaration", "declarator", "flush_kernel_specs",
    "format_c", "load_kernel_module_spec", "load_kernel_spec", "load_spec", "sizeof", "underlying",
    "validate", "walk",
]
