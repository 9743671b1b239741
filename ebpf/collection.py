"""Collections: the maps, programs and globals of one object, in the kernel.

:mod:`ebpf._loader` does the loading (the spec's ELF through libbpf, so
CO-RE, BTF and relocations stay libbpf's job; programs edited beyond that,
or added by hand, on their own); the collection owns the resulting plain
:class:`Map`/:class:`Program` objects and the live variables.
"""

from __future__ import annotations

import os
import sys
import types
import typing
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Set, Tuple, Union

from . import _loader
from ._fd import check_pin_path
from .errors import ClosedError, EBPFError, PermissionDeniedError
from .maps import Map, check_compatible, load_pinned_map
from .programs import Program
from .spec import CollectionSpec, MapSpec, NameDict, ProgramSpec, VariableBase
from .types import MapFlags, MapType, PinType

if TYPE_CHECKING:
    from .btf import Var as BTFVar

__all__ = ["Collection", "Variable", "new_collection", "load_and_assign"]


class Variable(VariableBase):
    """A global variable of a loaded collection, backed by live map memory.

    ``get()`` reads what programs see now; ``set()`` changes it for them at
    once.  Variables in ``.rodata`` are read-only after load.
    """

    __slots__ = ("name", "offset", "size", "type", "_map")

    def __init__(self, name: str, m: Map, offset: int, size: int, type: BTFVar) -> None:
        self.name = name
        self._map = m
        self.offset = offset
        self.size = size
        self.type = type

    @property
    def map(self) -> Map:
        return self._map

    @property
    def read_only(self) -> bool:
        return bool(self._map.flags & MapFlags.RDONLY_PROG) or self._map.name.startswith(".rodata")

    def _memory(self) -> Any:
        if self._map.closed:
            raise ClosedError("variable's map")
        if self._map.flags & MapFlags.MMAPABLE:
            return self._map.memory()
        return None

    def _value_bytes(self) -> Map:
        # A section that is not memory-mappable (libbpf 1.1 makes those of
        # sections holding only static variables so) is read and written as
        # the map's one value: through a second handle without BTF, which
        # takes and gives that value as bytes.
        m = self._map
        plain = MapSpec(m.name, m.type, m.key_size, m.value_size, m.max_entries, m.flags)
        return Map._from_fd(m._dup(), plain)

    def get_bytes(self) -> bytes:
        mem = self._memory()
        if mem is not None:
            return bytes(mem[self.offset : self.offset + self.size])
        with self._value_bytes() as m:
            image = m.lookup(0)
        return bytes(image[self.offset : self.offset + self.size])

    def set(self, value: Any) -> None:
        """Write a new value into live memory (size checked)."""
        raw = self._encode(value)
        if self.read_only:
            raise PermissionDeniedError(
                f"variable {self.name} is in a read-only section (set it on the spec before loading)", 1
            )
        mem = self._memory()
        if mem is not None:
            mem[self.offset : self.offset + self.size] = raw
            return
        with self._value_bytes() as m:
            image = bytearray(m.lookup(0))
            image[self.offset : self.offset + self.size] = raw
            m.update(0, bytes(image))

    def __repr__(self) -> str:
        return f"<Variable {self.name} in {self._map.name} +{self.offset} size {self.size}>"


class Collection:
    """Maps, programs and variables loaded from a :class:`CollectionSpec`.

    ``map_replacements`` maps names to existing :class:`Map` objects used
    instead of creating new ones (they must be compatible).  CO-RE
    relocations are resolved against ``kernel_types`` (default: the running
    kernel's BTF) and ``extra_relocation_targets`` (as for :class:`Program`).  ``pin_path`` is
    the bpffs directory for maps with ``pinning=PinType.BY_NAME``: an
    existing compatible pin is reused, an incompatible one raises
    :class:`MapIncompatibleError`.  ``log_level`` > 0 keeps each program's
    verifier log in ``Program.verifier_log``.

    Closing the collection closes everything it created; use
    :meth:`detach_map`/:meth:`detach_program` to keep an object beyond it.
    """

    def __init__(
        self,
        spec: CollectionSpec,
        map_replacements: Optional[Mapping[str, Map]] = None,
        pin_path: Optional[str] = None,
        log_level: int = 0,
        log_size: Optional[int] = None,
        *,
        kernel_types: _loader.KernelTypes = None,
        extra_relocation_targets: _loader.RelocationTargets = None,
        _programs: Optional[Set[str]] = None,
        _maps: Optional[Set[str]] = None,
    ) -> None:
        # dicts whose missing names raise a KeyError that lists those present
        self.maps: Dict[str, Map] = NameDict("map", "collection")
        self.programs: Dict[str, Program] = NameDict("program", "collection")
        self.variables: Dict[str, Variable] = NameDict("variable", "collection")
        self._closed = False
        try:
            _Load(self, spec, dict(map_replacements or {}), pin_path, log_level, log_size, kernel_types,
                  _programs, _maps, extra_relocation_targets).run()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close every map and program still owned by the collection."""
        self._closed = True
        for p in self.programs.values():
            p.close()
        for m in self.maps.values():
            m.close()

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def detach_map(self, name: str) -> Map:
        """Remove a map from the collection; the caller now owns it."""
        m = self.maps[name]
        del self.maps[name]
        return m

    def detach_program(self, name: str) -> Program:
        """Remove a program from the collection; the caller now owns it."""
        p = self.programs[name]
        del self.programs[name]
        return p

    def attach_all(self) -> Dict[str, Any]:
        """Attach every program whose section names its hook (like a libbpf
        skeleton's attach); see :func:`ebpf.link.attach_all`."""
        from .link.auto import attach_all

        return attach_all(self)

    def __repr__(self) -> str:
        return f"<Collection maps={sorted(self.maps)} programs={sorted(self.programs)}>"


def new_collection(spec: CollectionSpec, **options: Any) -> Collection:
    """Load ``spec`` (same as ``Collection(spec, ...)``)."""
    return Collection(spec, **options)


class _Load:
    """One load of a spec into a Collection."""

    def __init__(
        self,
        coll: Collection,
        spec: CollectionSpec,
        replacements: Dict[str, Map],
        pin_path: Optional[str],
        log_level: int,
        log_size: Optional[int],
        kernel_types: _loader.KernelTypes,
        only_programs: Optional[Set[str]],
        only_maps: Optional[Set[str]],
        extra_relocation_targets: _loader.RelocationTargets = None,
    ) -> None:
        self.coll = coll
        self.extra_relocation_targets = extra_relocation_targets
        self.spec = spec
        self.replacements = replacements
        self.pin_path = pin_path
        self.log_level = log_level
        self.log_size = log_size
        self.kernel_types = kernel_types
        self.only_programs = only_programs
        self.only_maps = only_maps
        unknown = set(replacements) - set(spec.maps)
        if unknown:
            raise KeyError(f"map_replacements name maps not in the spec: {', '.join(sorted(unknown))}")
        if pin_path is not None:
            check_pin_path(os.path.join(pin_path, "x"))

    def wanted_map(self, key: str) -> bool:
        return key in self.spec.maps and (self.only_maps is None or key in self.only_maps)

    def wanted_program(self, name: str) -> bool:
        return name in self.spec.programs and (self.only_programs is None or name in self.only_programs)

    def run(self) -> None:
        spec, coll = self.spec, self.coll
        elf_maps = _loader.elf_maps(spec)
        if elf_maps is not None:
            separate = self.load_object()
        else:  # built by hand: every program on its own
            elf_maps = set()
            separate = [n for n in spec.programs if self.wanted_program(n)]
        # Maps the user added to the spec after reading the ELF.
        for key, ms in spec.maps.items():
            if key not in elf_maps and self.wanted_map(key) and key not in coll.maps:
                coll.maps[key] = self.standalone_map(key, ms)
        for name in separate:
            # Our own loader: this collection already is the object (CO-RE
            # is lost for a program edited beyond what libbpf can relocate).
            ps = spec.programs[name]
            fd, log = _loader.load_own(ps, coll.maps, self.log_level, self.log_size)
            coll.programs[name] = self.program(fd, ps, log)
        _loader.fill_contents(spec, coll.maps, coll.programs, skip=set(self.replacements))
        for name, vs in spec.variables.items():
            m = coll.maps.get(vs.section)
            if m is not None:
                coll.variables[name] = Variable(name, m, vs.offset, vs.size, vs.type)
        if any(m.type == MapType.STRUCT_OPS for m in coll.maps.values()):
            # attach_struct_ops builds the kernel value from the ELF later.
            from .link.struct_ops import bind_struct_ops  # a lazily loaded subpackage

            bind_struct_ops(spec, coll)

    def load_object(self) -> List[str]:
        """Load what the ELF holds through libbpf; returns the programs to
        load separately."""
        loaded = _loader.load_object(
            self.spec, programs=self.only_programs, maps=self.only_maps, replacements=self.replacements,
            pin_path=self.pin_path, log_level=self.log_level, log_size=self.log_size,
            kernel_types=self.kernel_types, extra_relocation_targets=self.extra_relocation_targets,
        )
        try:
            for key in list(loaded.maps):
                fd, created = loaded.maps.pop(key)
                m = self.coll.maps[key] = Map._from_fd(fd, created)
                m._pinned_path = loaded.pinned.get(key)
            for name in list(loaded.programs):
                fd, log = loaded.programs.pop(name)
                self.coll.programs[name] = self.program(fd, self.spec.programs[name], log)
        finally:
            loaded.close()
        return loaded.separate

    def program(self, fd: int, ps: ProgramSpec, log: str) -> Program:
        prog = Program._from_fd(fd, ps.name, ps.type, ps.attach_type, log)
        prog._spec = ps.copy()
        return prog

    def standalone_map(self, key: str, ms: MapSpec) -> Map:
        if key in self.replacements:
            r = self.replacements[key]
            check_compatible(ms, r.info(), f"map {key}")
            return r.clone()
        if ms.pinning == PinType.BY_NAME:
            path = _loader.pin_file(self.pin_path, ms)
            if os.path.exists(path):
                m = load_pinned_map(path)
                try:
                    check_compatible(ms, m.info(), f"map {key} pinned at {path}")
                except BaseException:
                    m.close()
                    raise
                return m
            m = Map(_without_contents(ms))
            m.pin(path)
            return m
        return Map(_without_contents(ms))


def _without_contents(ms: MapSpec) -> MapSpec:
    c = ms.copy()
    c.contents = []
    return c


# --------------------------------------------------------------------------
# load_and_assign


def _annotations(cls: type) -> Dict[str, Any]:
    """The class's resolved annotations.  ``X | None`` written as a string
    (``from __future__ import annotations``) cannot be evaluated before 3.10:
    there, each side of a top-level ``|`` is evaluated alone and the union
    rebuilt with ``typing.Union``."""
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except TypeError:
        pass
    except Exception as exc:
        raise TypeError(f"cannot read the annotations of {cls.__name__}: {exc}") from None
    out: Dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        scope = dict(vars(module)) if module is not None else {}
        scope.update(vars(klass))
        for attr, ann in vars(klass).get("__annotations__", {}).items():
            try:
                if isinstance(ann, str):
                    parts = [eval(part, scope) for part in ann.split("|")]  # the class's own annotation
                    ann = typing.Union[tuple(parts)] if len(parts) > 1 else parts[0]
                out[attr] = ann
            except Exception as exc:
                raise TypeError(f"cannot read the annotation {attr}: {ann} of {cls.__name__}: {exc}") from None
    return out


_UNION_ORIGINS: Tuple[Any, ...] = (typing.Union,) + ((types.UnionType,) if hasattr(types, "UnionType") else ())


_KINDS: Dict[type, str] = {Map: "map", Program: "program", Variable: "variable"}


def _wanted(objs: Any) -> Dict[str, Tuple[str, type, bool]]:
    """attribute -> (spec name, Map, Program or Variable, optional) from annotations.

    ``Optional[X]`` and ``X | None`` mark an attribute that may be absent
    from the spec: it is set to None then, where a plain ``X`` is an error.
    """
    cls = objs if isinstance(objs, type) else type(objs)
    out: Dict[str, Tuple[str, type, bool]] = {}
    for attr, hint in _annotations(cls).items():
        name = attr
        if typing.get_origin(hint) is typing.Annotated:
            args = typing.get_args(hint)
            hint = args[0]
            for meta in args[1:]:
                if isinstance(meta, str):
                    name = meta
        optional = False
        if typing.get_origin(hint) in _UNION_ORIGINS:
            members = [a for a in typing.get_args(hint) if a is not type(None)]
            optional = len(members) < len(typing.get_args(hint))
            hint = members[0] if len(members) == 1 else hint
        if hint in _KINDS:
            out[attr] = (name, hint, optional)
    if not out:
        raise TypeError(f"{cls.__name__} has no attributes annotated as ebpf.Map, ebpf.Program or ebpf.Variable")
    return out


def load_and_assign(spec: CollectionSpec, objs: Any, **options: Any) -> Any:
    """See :meth:`CollectionSpec.load_and_assign`.

    A ``Variable`` attribute holds a handle of its own on its section's map
    (``var.map``), so it outlives the temporary collection; close that map
    to release it early.
    """
    wanted = _wanted(objs)
    pools: Dict[type, Mapping[str, Any]] = {Map: spec.maps, Program: spec.programs, Variable: spec.variables}
    absent = set()
    for attr, (n, t, optional) in wanted.items():
        if n not in pools[t]:
            if not optional:
                kind = _KINDS[t]
                names = ", ".join(sorted(pools[t])) or "none"
                raise KeyError(f"{kind} {n!r} is not in the spec (its {kind}s: {names})")
            absent.add(attr)
    present = {a: (n, t) for a, (n, t, _) in wanted.items() if a not in absent}
    progs = {n for n, t in present.values() if t is Program}
    maps = {n for n, t in present.values() if t is Map}
    # A global needs the map of its section.
    maps |= {spec.variables[n].section for n, t in present.values() if t is Variable}
    asked_maps = set(maps)
    # Everything the wanted programs use, and what map contents refer to.
    changed = True
    while changed:
        changed = False
        for p in list(progs):
            for m in _loader.references(spec, p):
                if m not in maps:
                    maps.add(m)
                    changed = True
        for m in list(maps):
            for _, v in spec.maps[m].contents:
                if isinstance(v, str):
                    pool = progs if v in spec.programs else maps if v in spec.maps else None
                    if pool is not None and v not in pool:
                        pool.add(v)
                        changed = True
    # A program array that a wanted program tail-calls through would be
    # closed with the temporary collection, turning every tail call into a
    # silent miss: refuse, as cilium does.
    for m in sorted(maps - asked_maps):
        if spec.maps[m].type == MapType.PROG_ARRAY:
            users = sorted(p for p in progs if m in _loader.references(spec, p))
            raise EBPFError(
                f"program array {m!r} is used by {', '.join(users)} but not assigned: "
                f"add an ebpf.Map attribute for it, or tail calls through it would miss",
                22,
            )
    coll = Collection(spec, _programs=progs, _maps=maps, **options)
    try:
        target = objs() if isinstance(objs, type) else objs
        for attr in absent:
            setattr(target, attr, None)
        given: Dict[Tuple[str, type], Union[Map, Program]] = {}
        for attr, (name, t) in present.items():
            obj: Union[Map, Program, Variable]
            if t is Variable:
                v = coll.variables[name]
                obj = Variable(v.name, v.map.clone(), v.offset, v.size, v.type)
            elif (name, t) in given:
                obj = given[(name, t)].clone()  # each attribute owns its handle
            else:
                obj = coll.detach_program(name) if t is Program else coll.detach_map(name)
                given[(name, t)] = obj
            setattr(target, attr, obj)
    finally:
        coll.close()
    return target

