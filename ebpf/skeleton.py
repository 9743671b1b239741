"""What typed skeletons stand on: base classes and loading.

``python -m ebpf gen obj.o -o obj_skel.py`` (see :mod:`ebpf.gen`) writes a
module with one class per BTF struct, union and enum the object's maps and
globals use, and an ``Objects`` class with a typed attribute per map,
program and global.  That module imports this one:

* :class:`Struct` is the base of the generated struct and union classes
  (a :class:`~ebpf.btf.codec.StructValue` with :meth:`Struct.from_bytes`);
* :class:`Objects` is the base of the generated objects class
  (``close()``, context manager, ``attach()``);
* :func:`load_spec` reads the object and binds the generated classes to its
  BTF types (:func:`ebpf.btf.codec.bind_class`), so maps and globals decode
  into them; :func:`load_objects` then loads what the objects class names.

Binding checks each class against the object's BTF (a digest of the
layout: names, offsets, sizes, enumerators), so a skeleton generated from
another build of the object fails with :class:`StaleSkeletonError` rather
than decoding garbage.
"""

from __future__ import annotations

import hashlib
import os
import typing
from typing import (
    TYPE_CHECKING,
    Any,
    BinaryIO,
    ClassVar,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from .btf import types as T
from .btf.codec import StructValue, bind_class, codec_for, fields
from .collection import Variable
from .elf_reader import load_collection_spec
from .errors import InvalidObjectError
from .maps import Map
from .programs import Program
from .spec import CollectionSpec, MapSpec
from .typed import ReadOnlyVariable, TypedMap, TypedVariable
from .types import MapType

if TYPE_CHECKING:
    from ._loader import KernelTypes
    from .link._link import Link

__all__ = [
    "Struct",
    "Objects",
    "TypeEntry",
    "StaleSkeletonError",
    "load_spec",
    "load_objects",
    "bind_types",
    "layout",
    "layout_digest",
    "index_key_type",
    "public_variables",
]

_S = TypeVar("_S", bound="Struct")
_O = TypeVar("_O", bound="Objects")

# One generated class: (class, where to find its BTF type, layout digest,
# {field name: class of that field's struct/union/enum (or of its elements)}).
# The locator is ("struct"|"union"|"enum"|"typedef", C name),
# ("map_key"|"map_value", map name), ("var", variable name), or None for a
# class only reached as a field of another.
TypeEntry = Tuple[type, Optional[Tuple[str, str]], str, Mapping[str, type]]

Source = Union[str, "os.PathLike[str]", bytes, BinaryIO]


class StaleSkeletonError(InvalidObjectError):
    """The object does not match the skeleton (generated from another build)."""


class Struct(StructValue):
    """Base of the struct and union classes of a generated skeleton.

    Instances compare by value, print their fields, convert with
    ``_asdict()``/``dict()``, and encode with ``bytes(value)`` once the class
    is bound to the object's BTF (by the skeleton's ``load()`` or
    ``load_spec()``).
    """

    __slots__ = ()

    @classmethod
    def from_bytes(cls: Type[_S], data: Union[bytes, bytearray, memoryview]) -> _S:
        """Decode the first ``sizeof`` bytes of ``data`` (a ring or perf
        buffer sample, say; perf samples carry padding after the struct)."""
        codec = _bound_codec(cls)
        size = codec.size
        n = len(data)
        if n < size:
            raise ValueError(f"{cls.__name__}: {size} bytes needed, got {n}")
        value = codec.decode(data if n == size else bytes(data[:size]))
        if not isinstance(value, cls):  # pragma: no cover - bind_class guarantees it
            raise TypeError(f"{cls.__name__}: decoded a {type(value).__name__}")
        return value

    def __bytes__(self) -> bytes:
        return bytes(_bound_codec(type(self)).encode(self))


def _bound_codec(cls: type) -> Any:
    codec = getattr(cls, "_codec", None)
    if codec is None:
        raise TypeError(
            f"{cls.__name__} is not bound to BTF yet: call the skeleton's load() or load_spec() first"
        )
    return codec


class Objects:
    """Base of the objects class of a generated skeleton.

    The generated subclass declares one attribute per map, program and
    global and says which object names they stand for; the skeleton's
    ``load()`` fills them.  ``close()`` (or leaving a ``with`` block) closes
    the links :meth:`attach` made, then the programs and maps.
    """

    _ebpf_maps: ClassVar[Mapping[str, str]] = {}
    _ebpf_programs: ClassVar[Mapping[str, str]] = {}
    _ebpf_variables: ClassVar[Mapping[str, str]] = {}

    def __init__(self) -> None:
        self._ebpf_owned: List[Any] = []  # maps and programs, in load order
        self._ebpf_links: Dict[str, "Link"] = {}

    def attach(self) -> Dict[str, "Link"]:
        """Attach every program whose section names its hook (tracepoints,
        raw tracepoints, kprobes, uprobes with a path, fentry, ...; see
        :func:`ebpf.link.attach_all`) and return ``{program name: link}``.

        The links are closed by :meth:`close`; close one earlier to detach
        that program.  Programs whose hook needs an argument (XDP, tc,
        cgroups, ...) are skipped: attach them with :mod:`ebpf.link`.
        """
        from .link.auto import attach_all

        programs = {name: getattr(self, attr) for attr, name in self._ebpf_programs.items()}
        links = attach_all(programs)
        self._ebpf_links.update(links)
        return links

    @property
    def links(self) -> Dict[str, "Link"]:
        """The links :meth:`attach` made, by program name."""
        return dict(self._ebpf_links)

    def close(self) -> None:
        """Detach what :meth:`attach` attached and close every program and
        map (calling it again does nothing)."""
        links, self._ebpf_links = self._ebpf_links, {}
        owned, self._ebpf_owned = self._ebpf_owned, []
        errors: List[BaseException] = []
        for obj in list(links.values()) + owned[::-1]:
            try:
                obj.close()
            except Exception as exc:  # close the rest, then report the first
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self: _O) -> _O:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if not getattr(self, "_ebpf_owned", None) else "loaded"
        return (
            f"<{type(self).__module__}.{type(self).__name__} {state}: maps {sorted(self._ebpf_maps)}, "
            f"programs {sorted(self._ebpf_programs)}, variables {sorted(self._ebpf_variables)}>"
        )


# -- layouts -------------------------------------------------------------------


def _brief(t: T.Type) -> str:
    """A field's type as the layout sees it: size and kind, not names of
    nested types (those are checked when their own class is bound)."""
    t = T.underlying(t)
    if isinstance(t, T.Int):
        enc = "b" if t.is_bool else "c" if t.is_char else "s" if t.signed else "u"
        extra = f"/{t.bits}+{t.offset}" if t.bits != t.size * 8 or t.offset else ""
        return f"{enc}{t.size * 8}{extra}"
    if isinstance(t, T.Enum):
        return f"enum{t.size * 8}{'s' if t.signed else 'u'}"
    if isinstance(t, T.Float):
        return f"f{t.size * 8}"
    if isinstance(t, T.Pointer):
        return "ptr"
    if isinstance(t, T.Array):
        return f"{_brief(t.type)}[{t.nelems}]"
    if isinstance(t, (T.Struct, T.Union)):
        return f"{t.kind}{t.size}"
    return t.kind


def layout(t: T.Type) -> str:
    """The layout of struct, union or enum ``t`` as one line: what a
    generated class relies on (field names, offsets, sizes and kinds, or
    the enumerators)."""
    real = T.underlying(t)
    if isinstance(real, T.Enum):
        values = " ".join(f"{v.name}={v.value}" for v in real.values)
        return f"enum {real.size}{'s' if real.signed else 'u'}: {values}"
    if isinstance(real, (T.Struct, T.Union)):
        parts = []
        for f in fields(real):
            bits = f":{f.bitfield_size}" if f.bitfield_size else ""
            parts.append(f"{f.name} {_brief(f.type)} @{f.bit_offset}{bits}{' u' if f.in_union else ''}")
        return f"{real.kind} {real.size}: " + ", ".join(parts)
    raise TypeError(f"no layout for {real.kind}")


def layout_digest(t: T.Type) -> str:
    """A short digest of :func:`layout` (what generated modules record)."""
    return hashlib.sha256(layout(t).encode()).hexdigest()[:16]


# -- binding ---------------------------------------------------------------------

# Map types whose keys are u32 indexes (array-like): without BTF for the key,
# skeletons still type and decode their keys as ints.
_INDEX_KEYED = frozenset(
    {
        MapType.ARRAY,
        MapType.PERCPU_ARRAY,
        MapType.PROG_ARRAY,
        MapType.PERF_EVENT_ARRAY,
        MapType.CGROUP_ARRAY,
        MapType.ARRAY_OF_MAPS,
        MapType.DEVMAP,
        MapType.CPUMAP,
        MapType.XSKMAP,
        MapType.SOCKMAP,
        MapType.REUSEPORT_SOCKARRAY,
    }
)


def index_key_type(spec: CollectionSpec, ms: MapSpec) -> Optional[T.Type]:
    """For an array-like map whose key has no BTF (``__uint(key_size, 4)``),
    a 4-byte unsigned int of the object's own BTF to decode its keys with;
    None when the map has a key type or is not indexed by u32."""
    if ms.key is not None or ms.key_size != 4 or ms.type not in _INDEX_KEYED or spec.types is None:
        return None
    # Every BTF map definition uses __ARRAY_SIZE_TYPE__ (an unsigned int).
    for name in ("__ARRAY_SIZE_TYPE__", "unsigned int"):
        for t in spec.types.types_by_name(name, T.Int):
            if isinstance(t, T.Int) and t.size == 4 and t.bits == 32 and not t.signed and not t.is_bool:
                return t
    return None


def public_variables(spec: CollectionSpec) -> List[str]:
    """Names of the globals a skeleton exposes: every variable of a data
    section but ``static`` ones (as in ``bpftool gen skeleton``: they are the
    object's private state, and repeat, e.g. ``bpf_printk``'s formats)."""
    out = []
    for name, vs in spec.variables.items():
        if getattr(vs.type, "linkage", T.VarLinkage.GLOBAL) == T.VarLinkage.STATIC:
            continue
        out.append(name)
    return sorted(out)


def _locate(spec: CollectionSpec, where: Tuple[str, str]) -> Optional[T.Type]:
    kind, name = where
    if kind in ("map_key", "map_value"):
        ms = spec.maps.get(name)
        if ms is None:
            return None
        return ms.key if kind == "map_key" else ms.value
    if kind == "var":
        vs = spec.variables.get(name)
        return vs.type.type if vs is not None else None
    if spec.types is None:
        return None
    found = spec.types.types_by_name(name, kind)
    return found[0] if len(found) == 1 else None


def bind_types(spec: CollectionSpec, types: Sequence[TypeEntry]) -> None:
    """Bind each generated class to its type in ``spec``'s BTF, checking
    the layout; :class:`StaleSkeletonError` when a type is missing or
    differs.  Binding a spec twice does nothing."""
    digests = {cls: digest for cls, _, digest, _ in types}
    nested = {cls: inner for cls, _, _, inner in types}
    done: Dict[int, type] = {}  # id of a bound type -> its class
    bound_types: Dict[int, T.Type] = {}

    def bind(t: T.Type, cls: type, path: str) -> None:
        real = T.underlying(t)
        if done.get(id(real)) is cls:
            return
        if not isinstance(real, (T.Struct, T.Union, T.Enum)):
            raise StaleSkeletonError(f"{path}: the skeleton has class {cls.__name__}, the object a {real.kind}")
        if layout_digest(real) != digests.get(cls):
            label = f"{real.kind} {real.name}" if real.name else f"an anonymous {real.kind}"
            raise StaleSkeletonError(
                f"{path}: {label} in the object differs from {cls.__name__} in the skeleton "
                f"(the skeleton was generated from another build: run `python -m ebpf gen` again)"
            )
        bind_class(real, cls)
        done[id(real)] = cls
        bound_types[id(real)] = real
        if isinstance(real, T.Enum):
            return
        by_name = {f.name: f for f in fields(real)}
        for fname, inner in nested.get(cls, {}).items():
            f = by_name.get(fname)
            if f is None:  # pragma: no cover - the digest covers field names
                raise StaleSkeletonError(f"{path}: no field {fname}")
            ft = T.underlying(f.type)
            while isinstance(ft, T.Array):
                ft = T.underlying(ft.type)
            bind(ft, inner, f"{path}.{fname}")

    for cls, where, _, _ in types:
        if where is None:
            continue
        t = _locate(spec, where)
        if t is None:
            raise StaleSkeletonError(
                f"the object has no {where[0].replace('_', ' ')} {where[1]!r} for class {cls.__name__} "
                f"(the skeleton was generated from another object: run `python -m ebpf gen` again)"
            )
        bind(t, cls, f"{where[0]} {where[1]}")
    # Codecs only once every class is bound (a codec fixes the classes of
    # what it contains); this also gives each class the codec that
    # from_bytes() and bytes() use.
    for real in bound_types.values():
        if isinstance(real, (T.Struct, T.Union)):
            codec_for(real)


class _Named:
    """Bytes read as a file called ``name`` (the object name libbpf gives
    data-section maps comes from the file name)."""

    def __init__(self, data: bytes, name: str) -> None:
        self._data = data
        self.name = name

    def read(self) -> bytes:
        return self._data


def load_spec(source: Source, types: Sequence[TypeEntry] = (), *, name: Optional[str] = None) -> CollectionSpec:
    """Read the object (a path, bytes or binary file) and bind ``types``.

    ``name`` is the object name (the kernel calls data-section maps
    ``<name>.bss`` etc.); by default it comes from the file name.
    """
    if name is not None:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        elif isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                data = f.read()
        else:
            data = source.read()
        spec = load_collection_spec(_Named(data, f"{name}.o"))  # type: ignore[arg-type]
    else:
        spec = load_collection_spec(source)
    bind_types(spec, types)
    return spec


def _check_names(cls: Type[Objects], spec: CollectionSpec) -> None:
    missing = [f"map {n!r}" for n in cls._ebpf_maps.values() if n not in spec.maps]
    missing += [f"program {n!r}" for n in cls._ebpf_programs.values() if n not in spec.programs]
    missing += [f"variable {n!r}" for n in cls._ebpf_variables.values() if n not in spec.variables]
    if missing:
        raise StaleSkeletonError(
            f"the object has no {', '.join(missing)}, which {cls.__name__} names "
            f"(the skeleton was generated from another object: run `python -m ebpf gen` again)"
        )


def load_objects(
    cls: Type[_O],
    spec: CollectionSpec,
    *,
    pin_path: Optional[str] = None,
    kernel_types: KernelTypes = None,
    variables: Optional[Mapping[str, Any]] = None,
) -> _O:
    """Load what ``cls`` names from ``spec`` and return a filled ``cls``.

    ``variables`` maps globals to the values they start with (None: leave
    as compiled); they are set on a copy of ``spec``.  Loading goes through
    :meth:`CollectionSpec.load_and_assign` (only the named maps and
    programs, what those programs use, and the sections of the named
    globals); ``pin_path`` and ``kernel_types`` are its options.
    """
    _check_names(cls, spec)
    given = {k: v for k, v in (variables or {}).items() if v is not None}
    if given:
        unknown = sorted(set(given) - set(spec.variables))
        if unknown:
            raise KeyError(f"no variables {', '.join(unknown)} in the object")
        spec = spec.copy()
        for vname, value in given.items():
            spec.variables[vname].set(value)
    # What load_and_assign fills: plain Map/Program attributes by object name.
    wanted: Dict[str, Tuple[str, str]] = {}
    hints: Dict[str, Any] = {}
    for kind, table, base in (("map", cls._ebpf_maps, Map), ("program", cls._ebpf_programs, Program)):
        for attr, oname in table.items():
            slot = f"a{len(wanted)}"
            wanted[slot] = (kind, attr)
            hints[slot] = typing.Annotated[base, oname]
    sections = sorted({spec.variables[v].section for v in cls._ebpf_variables.values()})
    for section in sections:
        slot = f"a{len(wanted)}"
        wanted[slot] = ("section", section)
        hints[slot] = typing.Annotated[Map, section]
    holder = type("_Load", (), {"__annotations__": hints})
    loaded: Any = spec.load_and_assign(holder, pin_path=pin_path, kernel_types=kernel_types)  # a class made here
    objs = cls()
    try:
        data_maps: Dict[str, Map] = {}
        for slot, (kind, attr) in wanted.items():
            obj = getattr(loaded, slot)
            delattr(loaded, slot)
            if kind == "map":
                ms = spec.maps[cls._ebpf_maps[attr]]
                obj = TypedMap.from_map(obj, key=index_key_type(spec, ms))
            if kind == "section":
                data_maps[attr] = obj
            else:
                setattr(objs, attr, obj)
            objs._ebpf_owned.append(obj)
        for attr, vname in cls._ebpf_variables.items():
            vs = spec.variables[vname]
            var = Variable(vname, data_maps[vs.section], vs.offset, vs.size, vs.type)
            wrap = ReadOnlyVariable if var.read_only else TypedVariable
            setattr(objs, attr, wrap(var))
    except BaseException:
        objs.close()
        for slot in wanted:
            leftover = getattr(loaded, slot, None)
            if leftover is not None:
                leftover.close()
        raise
    return objs

