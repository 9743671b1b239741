"""Load and drive eBPF from Python.

A ctypes binding over the system's libbpf (``libbpf.so.1``) with
``CollectionSpec`` / ``Map`` / ``Program`` / ``Link`` wrappers whose behaviour
matches cilium/ebpf.  Subpackages (``ebpf.link``, ``ebpf.btf``, ``ebpf.asm``,
``ebpf.ringbuf``, ``ebpf.perf``, ``ebpf.features``, ``ebpf.rlimit``) load
lazily on first attribute access so ``import ebpf`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ClosedError,
    EBPFError,
    InvalidObjectError,
    IterationAbortedError,
    KernelPolicyError,
    KeyExistError,
    KeyNotExistError,
    MapIncompatibleError,
    MarshalError,
    MarshalTypeError,
    NotSupportedError,
    PermissionDeniedError,
    PinError,
    VerifierError,
)

if TYPE_CHECKING:
    # What type checkers and editors see; at run time these names load
    # lazily through __getattr__ below, keeping `import ebpf` fast.  The
    # subpackages are re-exported explicitly (``as``) and stay out of
    # __all__, so that ``from ebpf import *`` does not bind ``link`` & co.
    from . import asm as asm
    from . import btf as btf
    from . import errors as errors
    from . import features as features
    from . import link as link
    from . import perf as perf
    from . import ringbuf as ringbuf
    from . import rlimit as rlimit
    from .collection import Collection, Variable, load_and_assign, new_collection
    from .elf_reader import load_collection_spec
    from .ids import map_from_id, map_ids, program_from_id, program_ids
    from .info import MapInfo, ProgramInfo, ProgramStats
    from .maps import Map, load_pinned_map, new_map
    from .names import sanitize_name
    from .programs import Program, RunResult, load_pinned_program, new_program
    from .spec import CollectionSpec, MapSpec, ProgramSpec, VariableSpec
    from .stats import StatsHandle, enable_stats
    from .typed import TypedMap
    from .types import AttachType, MapFlags, MapType, PinType, ProgramType, UpdateFlags

_SUBMODULES = {"link", "btf", "asm", "ringbuf", "perf", "features", "rlimit", "errors"}

# Public names that live in modules which pull in the C library; resolved on
# first use so that ``import ebpf`` does not pay for loading libbpf.  The
# TYPE_CHECKING imports above and __all__ below name the same set
# (tests/test_typing.py checks that they agree).
_LAZY_NAMES: dict[str, str] = {
    "load_collection_spec": ".elf_reader",
    "CollectionSpec": ".spec",
    "MapSpec": ".spec",
    "ProgramSpec": ".spec",
    "VariableSpec": ".spec",
    "Collection": ".collection",
    "Variable": ".collection",
    "new_collection": ".collection",
    "load_and_assign": ".collection",
    "Map": ".maps",
    "new_map": ".maps",
    "load_pinned_map": ".maps",
    "Program": ".programs",
    "RunResult": ".programs",
    "new_program": ".programs",
    "load_pinned_program": ".programs",
    "MapType": ".types",
    "ProgramType": ".types",
    "AttachType": ".types",
    "PinType": ".types",
    "UpdateFlags": ".types",
    "MapFlags": ".types",
    "MapInfo": ".info",
    "ProgramInfo": ".info",
    "ProgramStats": ".info",
    "enable_stats": ".stats",
    "StatsHandle": ".stats",
    "TypedMap": ".typed",
    "program_ids": ".ids",
    "map_ids": ".ids",
    "program_from_id": ".ids",
    "map_from_id": ".ids",
    "sanitize_name": ".names",
}


if not TYPE_CHECKING:
    # Hidden from checkers, which know every name from the imports above: to
    # them a misspelt ``ebpf.nmae`` is an error, not an ``Any``.

    def __getattr__(name: str) -> Any:
        if name in _SUBMODULES:
            return importlib.import_module(f".{name}", __name__)
        mod = _LAZY_NAMES.get(name)
        if mod is not None:
            value = getattr(importlib.import_module(mod, __name__), name)
            globals()[name] = value
            return value
        raise AttributeError(f"module 'ebpf' has no attribute {name!r}")


def __dir__() -> list[str]:
    # What a shell or editor should complete: the API, not this module's own
    # imports (typing's Any, importlib...).
    dunders = {n for n in globals() if n.startswith("__")}
    return sorted(dunders | set(__all__) | _SUBMODULES)


# A literal list: type checkers read __all__ to know what this module
# exports, and cannot evaluate one computed at run time.
__all__ = [
    "AttachType",
    "ClosedError",
    "Collection",
    "CollectionSpec",
    "EBPFError",
    "InvalidObjectError",
    "IterationAbortedError",
    "KernelPolicyError",
    "KeyExistError",
    "KeyNotExistError",
    "Map",
    "MapFlags",
    "MapIncompatibleError",
    "MapInfo",
    "MapSpec",
    "MapType",
    "MarshalError",
    "MarshalTypeError",
    "NotSupportedError",
    "PermissionDeniedError",
    "PinError",
    "PinType",
    "Program",
    "ProgramInfo",
    "ProgramSpec",
    "ProgramStats",
    "ProgramType",
    "RunResult",
    "StatsHandle",
    "TypedMap",
    "UpdateFlags",
    "Variable",
    "VariableSpec",
    "VerifierError",
    "__version__",
    "enable_stats",
    "load_and_assign",
    "load_collection_spec",
    "load_pinned_map",
    "load_pinned_program",
    "map_from_id",
    "map_ids",
    "new_collection",
    "new_map",
    "new_program",
    "program_from_id",
    "program_ids",
    "sanitize_name",
]
