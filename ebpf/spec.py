"""Specs: the blueprint of an eBPF object, read from ELF, as plain Python data.

A :class:`CollectionSpec` holds :class:`MapSpec`, :class:`ProgramSpec` and
:class:`VariableSpec` objects.  Reading one makes no ``bpf()`` syscall and
needs no privilege.  Every field may be changed before loading, and loading
never changes the spec.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, List, Optional, Tuple, Union

from . import _elf
from ._values import encode_fixed
from .errors import EBPFError, InvalidObjectError, NotSupportedError
from .types import AttachType, MapType, PinType, ProgramType

__all__ = ["CollectionSpec", "MapSpec", "ProgramSpec", "VariableSpec", "load_collection_spec"]

# libbpf 1.5 was the first release able to open objects of the other byte order.
BIG_ENDIAN_MIN_LIBBPF = (1, 5)

# Sections whose maps hold globals; libbpf turns each into an array map with
# one element, named "<obj>.data" etc. in the kernel.
_DATA_SECTION = re.compile(r"^\.(data|rodata|bss)(\..*)?$|^\.kconfig$")


@dataclass(eq=True)
class MapSpec:
    """Blueprint of a map.

    ``contents`` is a list of ``(key, value)`` pairs written after creation;
    for data sections (``.data``, ``.rodata``, ``.bss``, ...) it holds one
    pair ``(0, bytes)``: the section's initial image.  Values may be bytes,
    ints, ctypes objects, or -- for map-in-map and program arrays -- the name of
    a map/program in the same collection, a ``Map``/``Program``, or a ``MapSpec``.
    ``key``/``value`` are the BTF types where the object has BTF.
    """

    name: str
    type: MapType = MapType.UNSPEC
    key_size: int = 0
    value_size: int = 0
    max_entries: int = 0
    flags: int = 0
    pinning: PinType = PinType.NONE
    inner_map: Optional["MapSpec"] = None
    contents: List[Tuple[Any, Any]] = field(default_factory=list)
    key: Optional[Any] = field(default=None, compare=False)
    value: Optional[Any] = field(default=None, compare=False)
    numa_node: int = 0
    map_extra: int = 0

    def __post_init__(self) -> None:
        self.type = _enum(MapType, self.type)
        self.pinning = _enum(PinType, self.pinning)

    def copy(self) -> "MapSpec":
        """A deep copy; BTF types are immutable and shared."""
        new = dataclasses.replace(self, contents=[(k, v) for k, v in self.contents])
        if self.inner_map is not None:
            new.inner_map = self.inner_map.copy()
        return new

    @property
    def is_data_section(self) -> bool:
        """Whether this map holds globals of a data section."""
        return bool(_DATA_SECTION.match(self.name))


@dataclass(eq=True)
class ProgramSpec:
    """Blueprint of a program.

    ``instructions`` is the encoded instruction stream (8 bytes each) or any
    object with ``encode()`` returning it (such as ``ebpf.asm.Instructions``).
    ``attach_to`` names the hook (e.g. ``"syscalls/sys_enter_getpid"`` for
    ``tracepoint/syscalls/sys_enter_getpid``).
    """

    name: str
    type: ProgramType = ProgramType.UNSPEC
    attach_type: AttachType = AttachType.NONE
    attach_to: str = ""
    section_name: str = ""
    instructions: Any = b""
    license: str = ""
    kernel_version: int = 0
    flags: int = 0
    # Instructions as read from the ELF (linked, encoded), to tell whether
    # the user changed them, and libbpf's own unlinked bytes of the program.
    _elf_insns: Optional[bytes] = field(default=None, repr=False, compare=False)
    _elf_raw: Optional[bytes] = field(default=None, repr=False, compare=False)
    # The object's BTF: gives a program loaded alone its func_info, which
    # the kernel demands for callbacks (bpf_loop) and global functions.
    _btf: Any = field(default=None, repr=False, compare=False)
    # The CollectionSpec of a program with CO-RE relocations: loading it
    # alone goes through libbpf with that object (see programs.Program).
    _collection: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.type = _enum(ProgramType, self.type)
        self.attach_type = _enum(AttachType, self.attach_type)

    def copy(self) -> "ProgramSpec":
        insns = self.instructions
        insns = insns.copy() if hasattr(insns, "copy") and not isinstance(insns, bytes) else insns
        return dataclasses.replace(self, instructions=insns)

    def encoded_instructions(self) -> bytes:
        """The instruction stream as the kernel reads it."""
        return encode_instructions(self.instructions)


def encode_instructions(insns: Any) -> bytes:
    if isinstance(insns, (bytes, bytearray, memoryview)):
        raw = bytes(insns)
    elif hasattr(insns, "encode"):
        raw = bytes(insns.encode())
    else:
        raise TypeError(f"instructions must be bytes or have encode(), not {type(insns).__name__}")
    if len(raw) % 8:
        raise InvalidObjectError(f"instruction stream of {len(raw)} bytes is not a multiple of 8")
    return raw


class VariableBase:
    """What spec and live variables share: decoding and encoding via BTF.

    Subclasses provide ``name``, ``size``, ``type`` and ``get_bytes()``.
    """

    __slots__ = ()
    name: str
    size: int
    type: Any

    def get_bytes(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def get(self) -> Any:
        """The variable's value: decoded through BTF when known, else bytes."""
        codec = _codec_for_var(self.type)
        raw = self.get_bytes()
        return codec.decode(raw) if codec is not None else raw

    def _encode(self, value: Any) -> bytes:
        return encode_fixed(value, self.size, _codec_for_var(self.type), what=f"variable {self.name}")


class VariableSpec(VariableBase):
    """A global variable in a data section of a :class:`CollectionSpec`.

    ``get()``/``set()`` read and change the section's initial image, so the
    change takes effect when the collection is loaded (this is how
    ``const volatile`` constants are set).  ``type`` is the BTF ``Var``.
    """

    __slots__ = ("name", "section", "offset", "size", "type", "_map")

    def __init__(self, name: str, section: str, offset: int, size: int, type: Any, map_spec: MapSpec) -> None:
        self.name = name
        self.section = section
        self.offset = offset
        self.size = size
        self.type = type
        self._map = map_spec

    @property
    def constant(self) -> bool:
        """Whether the variable lives in a read-only section (``.rodata*``)."""
        return self.section.startswith(".rodata") or self.section == ".kconfig"

    def _image(self) -> bytes:
        if not self._map.contents:
            self._map.contents.append((0, bytes(self._map.value_size)))
        return bytes(self._map.contents[0][1])

    def get_bytes(self) -> bytes:
        """The raw bytes of the variable's initial value."""
        return self._image()[self.offset : self.offset + self.size]

    def set(self, value: Any) -> None:
        """Change the initial value; the size must match exactly."""
        raw = self._encode(value)
        image = self._image()
        key = self._map.contents[0][0]
        self._map.contents[0] = (key, image[: self.offset] + raw + image[self.offset + self.size :])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VariableSpec):
            return NotImplemented
        return (self.name, self.section, self.offset, self.size, self.get_bytes()) == (
            other.name,
            other.section,
            other.offset,
            other.size,
            other.get_bytes(),
        )

    def __repr__(self) -> str:
        return f"VariableSpec(name={self.name!r}, section={self.section!r}, offset={self.offset}, size={self.size})"


def _codec_for_var(var: Any) -> Any:
    """The BTF codec of a ``Var``'s type, or None without BTF."""
    if var is None:
        return None
    try:
        from .btf import codec_for
    except ImportError:  # pragma: no cover - btf is part of the package
        return None
    target = getattr(var, "type", var)
    try:
        return codec_for(target)
    except (TypeError, ValueError, NotImplementedError, EBPFError):
        return None


@dataclass
class CollectionSpec:
    """Maps, programs, variables and BTF types of one object."""

    maps: Dict[str, MapSpec] = field(default_factory=dict)
    programs: Dict[str, ProgramSpec] = field(default_factory=dict)
    variables: Dict[str, VariableSpec] = field(default_factory=dict)
    types: Optional[Any] = field(default=None, compare=False)
    byte_order: str = "little"
    # The ELF image the spec was read from; libbpf reopens it at load time so
    # CO-RE, BTF and relocations stay libbpf's job.
    _elf: Optional[bytes] = field(default=None, repr=False, compare=False)
    _object_name: str = field(default="bpf", repr=False, compare=False)
    # ELF map name -> key in ``maps`` (libbpf names data sections "<obj>.data").
    _elf_map_keys: Dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    # program name -> names of the maps its code (and .text) refers to.
    _references: Dict[str, List[str]] = field(default_factory=dict, repr=False, compare=False)

    def copy(self) -> "CollectionSpec":
        """A deep copy: editing it never touches this spec."""
        maps = {k: m.copy() for k, m in self.maps.items()}
        variables = {}
        for name, v in self.variables.items():
            target = maps.get(v.section, v._map)
            variables[name] = VariableSpec(v.name, v.section, v.offset, v.size, v.type, target)
        programs = {k: p.copy() for k, p in self.programs.items()}
        copied = CollectionSpec(
            maps=maps,
            programs=programs,
            variables=variables,
            types=self.types,
            byte_order=self.byte_order,
            _elf=self._elf,
            _object_name=self._object_name,
            _elf_map_keys=dict(self._elf_map_keys),
            _references={k: list(v) for k, v in self._references.items()},
        )
        for p in programs.values():
            if p._collection is self:
                p._collection = copied
        return copied

    __copy__ = copy

    def __deepcopy__(self, memo: dict) -> "CollectionSpec":
        return self.copy()

    def load_and_assign(self, objs: Any, **options: Any) -> Any:
        """Load only what ``objs`` asks for and assign it.

        ``objs`` is an object (or class) whose annotations name maps and
        programs, typed ``Map`` or ``Program``; attribute names are matched
        to spec names directly, or through ``ebpf_name`` metadata via
        ``typing.Annotated[Map, "name"]``.  Returns ``objs``.  Options are those
        of :class:`ebpf.Collection`.
        """
        from .collection import load_and_assign

        return load_and_assign(self, objs, **options)

    def rewrite_constants(self, consts: Dict[str, Any]) -> None:
        """Set several ``.rodata`` variables at once (cilium's RewriteConstants)."""
        missing = [n for n in consts if n not in self.variables]
        if missing:
            raise KeyError(f"no such variables: {', '.join(sorted(missing))}")
        for name, value in consts.items():
            self.variables[name].set(value)


def _enum(cls: Any, value: Any) -> Any:
    try:
        return cls(value)
    except ValueError:
        return int(value)


# --------------------------------------------------------------------------
# Reading ELF


def _read_source(source: Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]) -> Tuple[bytes, str]:
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


def load_collection_spec(source: Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]) -> CollectionSpec:
    """Read an ELF object (path, bytes or binary file) into a CollectionSpec.

    Makes no ``bpf()`` syscall.  A malformed object raises
    :class:`InvalidObjectError`; an object the installed libbpf cannot open
    (e.g. big-endian on libbpf < 1.5) raises :class:`NotSupportedError`.
    """
    data, filename = _read_source(source)
    return _from_elf(data, _object_name(filename))


def _from_elf(data: bytes, obj_name: str) -> CollectionSpec:
    from . import _libbpf
    from ._validate import check_object

    elf = _elf.ElfFile(data)
    if elf.byteorder != _native_byteorder() and _libbpf.version() < BIG_ENDIAN_MIN_LIBBPF:
        raise NotSupportedError(
            f"opening a {elf.byteorder}-endian object",
            min_libbpf="%d.%d" % BIG_ENDIAN_MIN_LIBBPF,
            detail=f"installed libbpf is {_libbpf.version_string()}",
        )
    check_object(data)

    lib = _libbpf.lib
    opts = _libbpf.bpf_object_open_opts(object_name=obj_name.encode())
    buf = ctypes.create_string_buffer(data, len(data))
    _libbpf.clear_warnings()
    try:
        obj = lib.bpf_object__open_mem(buf, len(data), ctypes.byref(opts))
    except NotSupportedError as exc:
        raise NotSupportedError(
            f"opening this object with libbpf {_libbpf.version_string()}", errno=exc.errno, detail=str(exc)
        ) from None
    except EBPFError as exc:
        raise InvalidObjectError(f"libbpf cannot open the object: {exc}", exc.errno) from None
    try:
        return _spec_from_object(lib, obj, elf, data, obj_name)
    finally:
        lib.bpf_object__close(obj)


def _native_byteorder() -> str:
    import sys

    return sys.byteorder


def _section_of_internal_map(name: str) -> str:
    """``"core.rodata"`` → ``".rodata"``; ``".data.custom"`` stays."""
    if name.startswith("."):
        return name
    dot = name.find(".")
    return name[dot:] if dot >= 0 else name


def _spec_from_object(lib: Any, obj: Any, elf: "_elf.ElfFile", data: bytes, obj_name: str) -> CollectionSpec:
    types = None
    btf_handle = lib.bpf_object__btf(obj)
    if btf_handle:
        size = ctypes.c_uint32()
        raw_ptr = lib.btf__raw_data(btf_handle, ctypes.byref(size))
        if raw_ptr:
            from .btf import Spec as BTFSpec

            types = BTFSpec.from_raw(ctypes.string_at(raw_ptr, size.value))

    spec = CollectionSpec(types=types, byte_order=elf.byteorder, _elf=data, _object_name=obj_name)

    # Maps.  Inner map templates (bpf_map__inner_map) are not in the
    # object's map list; they become MapSpec.inner_map.
    m = lib.bpf_object__next_map(obj, None)
    while m:
        elf_name = lib.bpf_map__name(m).decode()
        key = _section_of_internal_map(elf_name) if lib.bpf_map__is_internal(m) else elf_name
        spec.maps[key] = _map_spec(lib, m, key, types)
        spec._elf_map_keys[elf_name] = key
        m = lib.bpf_object__next_map(obj, m)

    _add_init_slots(spec, elf, types)
    _refuse_map_initialisers(elf)

    license = ""
    lic = elf.section_by_name("license")
    if lic is not None:
        license = lic.data.split(b"\0", 1)[0].decode(errors="replace")
    # libbpf fills in the running kernel's version when the object has no
    # "version" section; a spec must not depend on the host that read it.
    kversion = 0
    ver = elf.section_by_name("version")
    if ver is not None and len(ver.data) == 4:
        kversion = int.from_bytes(ver.data, elf.byteorder)

    p = lib.bpf_object__next_program(obj, None)
    while p:
        name = lib.bpf_program__name(p).decode()
        section = lib.bpf_program__section_name(p).decode()
        count = int(lib.bpf_program__insn_cnt(p))
        insns = ctypes.string_at(lib.bpf_program__insns(p), count * 8) if count else b""
        ptype, atype = int(lib.bpf_program__type(p)), int(lib.bpf_program__expected_attach_type(p))
        if ptype == ProgramType.UNSPEC:
            ptype, atype = _NEWER_SECTIONS.get(section, (ptype, atype))
        spec.programs[name] = ProgramSpec(
            name=name,
            type=ptype,
            attach_type=atype,
            attach_to=_attach_to(section),
            section_name=section,
            instructions=insns,
            license=license,
            kernel_version=kversion,
            flags=int(lib.bpf_program__flags(p)),
            _elf_insns=insns,
            _elf_raw=insns,
            _btf=types,
        )
        p = lib.bpf_object__next_program(obj, p)

    _add_variables(spec, types)
    from . import _linker

    _linker.link(spec, elf)
    # Which maps each program needs: what its linked code loads.
    spec._references = {n: sorted(p.instructions.map_references()) for n, p in spec.programs.items()}
    return spec


# Section prefixes whose remainder names the hook (libbpf's "prefix/" forms);
# anything after "/" elsewhere (e.g. "socket/tail") is just a label.
_TARGET_PREFIXES = frozenset(
    """kprobe kretprobe uprobe uretprobe uprobe.s uretprobe.s usdt ksyscall kretsyscall
    kprobe.multi kretprobe.multi tracepoint tp raw_tracepoint raw_tp raw_tracepoint.w raw_tp.w
    tp_btf fentry fexit fmod_ret fentry.s fexit.s fmod_ret.s freplace lsm lsm.s lsm_cgroup
    iter iter.s struct_ops struct_ops.s""".split()
)


# Sections that libbpf learnt after 1.1 (it reads them as UNSPEC): the types
# newer libbpf releases give them, so a spec is the same whichever is installed.
_NEWER_SECTIONS = {
    "netfilter": (ProgramType.NETFILTER, AttachType.NETFILTER),
    "tcx/ingress": (ProgramType.SCHED_CLS, AttachType.TCX_INGRESS),
    "tcx/egress": (ProgramType.SCHED_CLS, AttachType.TCX_EGRESS),
    "netkit/primary": (ProgramType.SCHED_CLS, AttachType.NETKIT_PRIMARY),
    "netkit/peer": (ProgramType.SCHED_CLS, AttachType.NETKIT_PEER),
}


def _attach_to(section: str) -> str:
    prefix, sep, rest = section.partition("/")
    return rest if sep and prefix in _TARGET_PREFIXES else ""


# No kernel accepts a map value this large; ctypes cannot copy one either.
_MAX_SECTION = 1 << 30


def _map_spec(lib: Any, m: Any, name: str, types: Any) -> MapSpec:
    pin = lib.bpf_map__pin_path(m)
    spec = MapSpec(
        name=name,
        type=lib.bpf_map__type(m),
        key_size=int(lib.bpf_map__key_size(m)),
        value_size=int(lib.bpf_map__value_size(m)),
        max_entries=int(lib.bpf_map__max_entries(m)),
        flags=int(lib.bpf_map__map_flags(m)),
        pinning=PinType.BY_NAME if pin else PinType.NONE,
        numa_node=int(lib.bpf_map__numa_node(m)),
        map_extra=int(lib.bpf_map__map_extra(m)),
    )
    if types is not None:
        kid, vid = int(lib.bpf_map__btf_key_type_id(m)), int(lib.bpf_map__btf_value_type_id(m))
        spec.key = types.type_by_id(kid) if kid else None
        spec.value = types.type_by_id(vid) if vid else None
    if lib.bpf_map__is_internal(m):
        size = ctypes.c_size_t()
        ptr = lib.bpf_map__initial_value(m, ctypes.byref(size))
        if size.value > _MAX_SECTION:
            raise InvalidObjectError(f"data section {name} claims {size.value} bytes")
        image = ctypes.string_at(ptr, size.value) if ptr and size.value else bytes(spec.value_size)
        spec.contents = [(0, image)]
    inner = lib.bpf_map__inner_map(m)
    if inner:
        spec.inner_map = _map_spec(lib, inner, lib.bpf_map__name(inner).decode(), types)
    return spec


def _add_variables(spec: CollectionSpec, types: Any) -> None:
    if types is None:
        return
    from .btf import Datasec

    for t in types:
        if not isinstance(t, Datasec):
            continue
        ms = spec.maps.get(t.name)
        if ms is None:
            continue
        for vsi in t.vars:
            var = vsi.type
            spec.variables[var.name] = VariableSpec(var.name, t.name, int(vsi.offset), int(vsi.size), var, ms)


def _refuse_map_initialisers(elf: "_elf.ElfFile") -> None:
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


def _add_init_slots(spec: CollectionSpec, elf: "_elf.ElfFile", types: Any) -> None:
    """Record ``.values = {...}`` initialisers of BTF map definitions.

    libbpf keeps them private (it fills the slots itself at load), so they
    are read from the relocations against ``.maps``: each relocation sits in
    the ``values`` array of one map definition and names a program or map.
    """
    sec = elf.section_by_name(".maps")
    if sec is None or types is None:
        return
    from .btf import Datasec, Struct, underlying

    try:
        datasec = types.type_by_name(".maps", Datasec)
    except KeyError:
        return
    relocs = elf.relocations(sec)
    if not relocs:
        return
    for vsi in datasec.vars:
        var = vsi.type
        ms = spec.maps.get(var.name)
        struct = underlying(var.type)
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

