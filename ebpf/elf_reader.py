"""Reading an ELF object into a :class:`~ebpf.CollectionSpec`.

The object is checked by :mod:`ebpf._validate` (libbpf trusts much of its
input), opened with libbpf (``bpf_object__open_mem``, so that map
definitions, data sections and BTF read exactly as libbpf reads them) and
copied into plain Python specs; then libbpf's object is closed.  Calls
between functions are linked by :mod:`ebpf._linker`; section names are
read with :mod:`ebpf.sections`.  No ``bpf()`` syscall is made.

What the loader needs of the ELF later (the bytes, libbpf's names of the
maps, which maps each program uses) goes into the specs' private origins.
"""

from __future__ import annotations

import collections
import functools
import os
import re
import sys
import threading
from typing import BinaryIO, Dict, Iterable, List, Optional, Tuple, Union, cast

from . import _elf, _libbpf, sections
from ._linker import Linker
from ._validate import check_object
from .btf import Datasec, Struct, Var, underlying
from .btf import Spec as BTFSpec
from .btf import Type as BTFType
from .errors import InvalidObjectError, NotSupportedError
from .spec import (
    CollectionSpec,
    MapSpec,
    ProgramSpec,
    VariableSpec,
    _defer_instructions,
    _ObjectOrigin,
    _ProgramOrigin,
)
from .types import AttachType, MapType, PinType, ProgramType

__all__ = ["load_collection_spec", "BIG_ENDIAN_MIN_LIBBPF"]

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]

# libbpf 1.5 was the first release able to open objects of the other byte order.
BIG_ENDIAN_MIN_LIBBPF = (1, 5)


def load_collection_spec(source: Source) -> CollectionSpec:
    """Read an ELF object (path, bytes or binary file) into a CollectionSpec.

    Makes no ``bpf()`` syscall.  A malformed object raises
    :class:`InvalidObjectError`; an object the installed libbpf cannot open
    (e.g. big-endian on libbpf < 1.5) raises :class:`NotSupportedError`.
    """
    data, filename = _read_source(source)
    return _templates.spec(data, _object_name(filename))


class _Templates:
    """Specs already read, by their exact bytes: reading the same object
    again hands out a copy instead of parsing it again.

    Specs are data and a copy is deep (editing it never touches the
    template, which is never handed out), and its BTF types are decoded
    afresh (a type object belongs to one read: classes are bound to type
    objects, see ``btf.codec.bind_class``), so the result is that of a
    fresh read.  Bounded by count and by the bytes kept.
    """

    MAX_COUNT = 16
    MAX_BYTES = 64 << 20

    def __init__(self) -> None:
        self._specs: "collections.OrderedDict[Tuple[bytes, str], CollectionSpec]" = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def spec(self, data: bytes, obj_name: str) -> CollectionSpec:
        key = (data, obj_name)
        with self._lock:
            template = self._specs.get(key)
            if template is not None:
                self._specs.move_to_end(key)
        if template is None:
            template = _read(data, obj_name)
            if len(data) <= self.MAX_BYTES // 4:
                with self._lock:
                    if key not in self._specs:
                        self._specs[key] = template
                        self._bytes += len(data)
                    while len(self._specs) > self.MAX_COUNT or self._bytes > self.MAX_BYTES:
                        (old, _), _ = self._specs.popitem(last=False)
                        self._bytes -= len(old)
        return _instance(template)

    def clear(self) -> None:
        with self._lock:
            self._specs.clear()
            self._bytes = 0


_templates = _Templates()


def _instance(template: CollectionSpec) -> CollectionSpec:
    """A copy of ``template`` with BTF types of its own."""
    spec = template.copy()
    shared = template.types
    if shared is None:
        return spec
    types = spec.types = shared.copy()

    def own(t: Optional[BTFType]) -> Optional[BTFType]:
        return types.type_by_id(shared.type_id(t)) if t is not None else None

    def own_map(ms: Optional[MapSpec]) -> None:
        while ms is not None:
            ms.key, ms.value = own(ms.key), own(ms.value)
            ms = ms.inner_map

    for ms in spec.maps.values():
        own_map(ms)
    for vs in spec.variables.values():
        var = types.type_by_id(shared.type_id(vs.type))
        assert isinstance(var, Var)  # the same id in a copy of the same types
        vs.type = var
    for ps in spec.programs.values():
        if ps._origin is not None:
            ps._origin = ps._origin.with_btf(types)
    return spec


def _read_source(source: Source) -> Tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "bpf"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(path, "rb") as f:
                return f.read(), os.path.basename(path)
        except OSError as exc:
            raise InvalidObjectError(f"cannot read {path}: {exc.strerror}", exc.errno) from None
    read = getattr(source, "read", None)
    if read is None:
        raise TypeError(f"expected a path, bytes or a binary file, not {type(source).__name__}")
    data = read()
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("the file must be opened in binary mode")
    return bytes(data), os.path.basename(getattr(source, "name", "bpf") or "bpf")


def _object_name(filename: str) -> str:
    # libbpf prefixes data-section map names with the object name; keep it to
    # characters the kernel accepts and without dots, so the section name can
    # be recovered from the map name.
    base = filename.split(".", 1)[0] or "bpf"
    return re.sub(r"[^A-Za-z0-9_]", "_", base)[:8] or "bpf"


def _read(data: bytes, obj_name: str) -> CollectionSpec:
    elf = _elf.ElfFile(data)
    if elf.byteorder != sys.byteorder and _libbpf.version() < BIG_ENDIAN_MIN_LIBBPF:
        raise NotSupportedError(
            f"opening a {elf.byteorder}-endian object",
            min_libbpf="%d.%d" % BIG_ENDIAN_MIN_LIBBPF,
            detail=f"installed libbpf is {_libbpf.version_string()}",
        )
    check_object(data, elf)
    with _libbpf.open_object(data, obj_name) as obj:
        return _Reader(obj, elf, data, obj_name).spec


def _parse_btf(raw: bytes) -> BTFSpec:
    """libbpf's own BTF of an object, whose .BTF section was validated with
    the object: each type is still checked as it is decoded.  The same
    bytes again share the parsed blob, not the type objects."""
    return _parsed_btf(raw).copy()


@functools.lru_cache(maxsize=16)
def _parsed_btf(raw: bytes) -> BTFSpec:
    return BTFSpec.from_raw(raw, validate=False)


def _section_of_internal_map(name: str) -> str:
    """``"core.rodata"`` → ``".rodata"``; ``".data.custom"`` stays."""
    if name.startswith("."):
        return name
    dot = name.find(".")
    return name[dot:] if dot >= 0 else name


class _Reader:
    """Copies one opened object into a CollectionSpec."""

    def __init__(self, obj: _libbpf.BPFObject, elf: _elf.ElfFile, data: bytes, obj_name: str) -> None:
        self.elf = elf
        raw_btf = obj.btf_raw()
        types = _parse_btf(raw_btf) if raw_btf is not None else None
        self.types = types
        spec = self.spec = CollectionSpec(types=types, byte_order=elf.byteorder)

        # Maps.  Inner map templates (bpf_map__inner_map) are not in the
        # object's map list; they become MapSpec.inner_map.
        map_keys: Dict[str, str] = {}
        images: Dict[str, bytes] = {}
        definitions: Dict[str, _libbpf.MapDefinition] = {}
        for m in obj.maps():
            d = definitions[m.name] = m.definition()
            key = _section_of_internal_map(d.name) if d.internal else d.name
            ms = spec.maps[key] = self.map_spec(m, d, key)
            map_keys[d.name] = key
            if d.internal:
                images[key] = ms.contents[0][1]

        self.add_init_slots()
        _refuse_map_initialisers(elf)
        license, kversion = self.license_and_version()
        self.add_variables(images)

        linker = Linker(elf, {k: ms.is_data_section for k, ms in spec.maps.items()},
                        {n: (v.section, v.offset) for n, v in spec.variables.items()})
        references: Dict[str, Tuple[str, ...]] = {}
        for p in obj.programs():
            name, section = p.name, p.section_name
            ptype, atype = p.type, p.expected_attach_type
            if ptype == ProgramType.UNSPEC:
                ptype, atype = sections.newer_section_types(section) or (ptype, atype)
            raw = p.instructions()
            ps = spec.programs[name] = ProgramSpec(
                name=name,
                type=cast(ProgramType, ptype),  # an int for types newer than the enum
                attach_type=cast(AttachType, atype),
                attach_to=sections.attach_to(section),
                section_name=section,
                license=license,
                kernel_version=kversion,
                flags=p.flags,
            )
            graph = linker.program(name, section, len(raw))
            references[name] = graph.references
            decode = functools.partial(linker.decode, name, section, raw, graph)
            # CO-RE and externs are libbpf's job: a program that needs them
            # loads through the object it came from even when loaded alone.
            _defer_instructions(ps, _ProgramOrigin(raw, types, spec if graph.core else None, decode))
        spec._origin = _ObjectOrigin(data, obj_name, map_keys, references, images, definitions)

    # -- maps ------------------------------------------------------------------

    def map_spec(self, m: _libbpf.ObjectMap, d: _libbpf.MapDefinition, name: str) -> MapSpec:
        types = self.types
        spec = MapSpec(
            name=name,
            type=cast(MapType, d.type),
            key_size=d.key_size,
            value_size=d.value_size,
            max_entries=d.max_entries,
            flags=d.flags,
            pinning=PinType.BY_NAME if d.pinned else PinType.NONE,
            numa_node=d.numa_node,
            map_extra=d.map_extra,
        )
        if types is not None:
            spec.key = types.type_by_id(d.btf_key_type_id) if d.btf_key_type_id else None
            spec.value = types.type_by_id(d.btf_value_type_id) if d.btf_value_type_id else None
        if d.internal:
            spec.contents = [(0, self.initial_image(m, name, d.value_size))]
        inner = m.inner_map()
        if inner is not None:
            di = inner.definition()
            spec.inner_map = self.map_spec(inner, di, di.name)
        return spec

    def initial_image(self, m: _libbpf.ObjectMap, name: str, value_size: int) -> bytes:
        """A data section's initial bytes, copied only when the file holds
        them: a .bss is zeros whatever size its header claims, and
        ``bytes(n)`` takes no memory until written."""
        section = self.elf.section_by_name(name)
        if section is not None and section.type == _elf.SHT_NOBITS:
            return bytes(value_size)
        size = m.initial_size()
        if section is not None and size > section.size:
            raise InvalidObjectError(f"data section {name} claims {size} bytes, its section has {section.size}")
        return m.initial_value() or bytes(value_size)

    def add_init_slots(self) -> None:
        """Record ``.values = {...}`` initialisers of BTF map definitions.

        libbpf keeps them private (it fills the slots itself at load), so they
        are read from the relocations against ``.maps``: each relocation sits in
        the ``values`` array of one map definition and names a program or map.
        """
        sec = self.elf.section_by_name(".maps")
        if sec is None or self.types is None:
            return
        relocs = self.elf.relocations(sec)
        if not relocs:
            return
        try:
            datasec = self.types.type_by_name(".maps", Datasec)
        except KeyError:
            return
        if not isinstance(datasec, Datasec):
            return
        for vsi in datasec.vars:
            var = vsi.type
            ms = self.spec.maps.get(var.name)
            struct = underlying(getattr(var, "type", var))
            if ms is None or not isinstance(struct, Struct) or not struct.members:
                continue
            values = struct.members[-1]
            if values.name != "values":
                continue
            start = vsi.offset + values.offset // 8
            end = vsi.offset + vsi.size
            slots = []
            for r in relocs:
                if start <= r.offset < end and r.symbol.name:
                    slots.append(((r.offset - start) // 8, r.symbol.name))
            if slots:
                ms.contents = sorted(slots)

    # -- programs and globals --------------------------------------------------

    def license_and_version(self) -> Tuple[str, int]:
        license = ""
        lic = self.elf.section_by_name("license")
        if lic is not None:
            license = lic.data.split(b"\0", 1)[0].decode(errors="replace")
        # libbpf fills in the running kernel's version when the object has no
        # "version" section; a spec must not depend on the host that read it.
        kversion = 0
        ver = self.elf.section_by_name("version")
        if ver is not None and len(ver.data) == 4:
            kversion = int.from_bytes(ver.data, "little" if self.elf.byteorder == "little" else "big")
        return license, kversion

    def add_variables(self, data_sections: Iterable[str]) -> None:
        """The globals of each data section, in the order of their BTF."""
        types, spec = self.types, self.spec
        if types is None:
            return
        found = []
        for key in data_sections:
            for datasec in _datasecs(types, key):
                found.append((types.type_id(datasec), key, datasec))
        for _, key, datasec in sorted(found, key=lambda f: f[0]):
            ms = spec.maps[key]
            for vsi in datasec.vars:
                var = vsi.type
                if not isinstance(var, Var):
                    continue  # a data section's entries are variables; anything else has no value here
                spec.variables[var.name] = VariableSpec(var.name, key, int(vsi.offset), int(vsi.size), var, ms)


def _datasecs(types: BTFSpec, name: str) -> List[Datasec]:
    try:
        return [t for t in types.types_by_name(name, Datasec) if isinstance(t, Datasec)]
    except LookupError:
        return []


def _refuse_map_initialisers(elf: _elf.ElfFile) -> None:
    """A BTF map definition is all zeros but for relocated ``values`` slots.

    Anything else (``.key = (void *)1``) would be silently ignored by
    libbpf 1.1.2; cilium refuses such objects with ErrNotSupported, so do we.
    Relocations leave their slots zero in the file, so any non-zero byte
    is an initialiser.
    """
    sec = elf.section_by_name(".maps")
    if sec is None or sec.type != _elf.SHT_PROGBITS:
        return
    data = sec.data
    if any(data):
        at = next(i for i, b in enumerate(data) if b)
        raise NotSupportedError(
            "initialised fields in a BTF map definition",
            detail=f"non-zero byte at offset {at} of .maps: only 'values' may be initialised",
        )

