"""Specs: the blueprint of an eBPF object, as plain Python data.

A :class:`CollectionSpec` holds :class:`MapSpec`, :class:`ProgramSpec` and
:class:`VariableSpec` objects.  :func:`ebpf.load_collection_spec` reads them
from ELF (see :mod:`ebpf.elf_reader`); they can also be built by hand.
Specs make no syscall and need no privilege.  Every field may be changed
before loading, and loading never changes the spec.

This module holds the data classes only: nothing here talks to the kernel
or to libbpf.  What a spec read from ELF keeps of that ELF for the loader
sits in one private origin object per spec (``_origin``), which only
:mod:`ebpf._loader` reads.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    Type,
    TypeVar,
    Union,
    overload,
)

from ._values import encode_fixed
from .errors import EBPFError, InvalidObjectError
from .sections import is_data_section
from .types import AttachType, MapType, PinType, ProgramType, to_enum

if TYPE_CHECKING:  # pragma: no cover
    from .asm import Instruction, Instructions
    from .btf import Spec as BTFSpec
    from .btf import Type as BTFType
    from .btf import Var as BTFVar

__all__ = [
    "CollectionSpec", "MapSpec", "ProgramSpec", "VariableSpec", "VariableBase", "NameDict", "InstructionsLike",
    "encode_instructions", "instructions_tag",
]

_V = TypeVar("_V")
_T = TypeVar("_T")


class NameDict(Dict[str, _V]):
    """The ``maps``/``programs``/``variables`` of a spec or a collection: a
    ``dict`` whose missing names raise a :class:`KeyError` that says which
    names there are."""

    def __init__(self, kind: str, owner: str, items: Union[Mapping[str, _V], Iterable[Tuple[str, _V]]] = ()) -> None:
        super().__init__(items)
        self._kind = kind  # "map", "program", "variable"
        self._owner = owner  # "spec", "collection"

    def __missing__(self, name: str) -> _V:
        present = ", ".join(sorted(self)) if self else "none"
        raise KeyError(f"no {self._kind} {name!r} in this {self._owner} (its {self._kind}s: {present})")

    def __reduce__(self) -> Tuple[Any, ...]:
        return (NameDict, (self._kind, self._owner, dict(self)))


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
    key: Optional[BTFType] = field(default=None, compare=False)
    value: Optional[BTFType] = field(default=None, compare=False)
    numa_node: int = 0
    map_extra: int = 0

    def __post_init__(self) -> None:
        self.type = to_enum(MapType, self.type)
        self.pinning = to_enum(PinType, self.pinning)

    def copy(self) -> "MapSpec":
        """A deep copy; BTF types are immutable and shared."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.contents = [(k, v) for k, v in self.contents]
        if self.inner_map is not None:
            new.inner_map = self.inner_map.copy()
        return new

    @property
    def is_data_section(self) -> bool:
        """Whether this map holds globals of a data section."""
        return is_data_section(self.name)

    def __repr__(self) -> str:
        # Short: a data section's contents is its whole image.
        parts = [f"name={self.name!r}", f"type={_enum_name(self.type)}", f"key_size={self.key_size}",
                 f"value_size={self.value_size}", f"max_entries={self.max_entries}"]
        if self.flags:
            parts.append(f"flags={self.flags:#x}")
        if self.pinning != PinType.NONE:
            parts.append(f"pinning={_enum_name(self.pinning)}")
        if self.inner_map is not None:
            parts.append(f"inner_map={self.inner_map!r}")
        if self.contents:
            parts.append(f"contents=<{_plural(len(self.contents), 'entry', 'entries')}>")
        for what in ("key", "value"):
            t = getattr(self, what)
            if t is not None:
                parts.append(f"{what}={_type_name(t)}")
        return f"MapSpec({', '.join(parts)})"


InstructionsLike = Union["Instructions", Iterable["Instruction"], bytes, bytearray, memoryview]
"""What ``ProgramSpec.instructions`` accepts: instructions in any iterable, or
the kernel's 8-byte encoding of them (in the host's byte order)."""


class _Instructions:
    """The ``ProgramSpec.instructions`` field: always an ``asm.Instructions``.

    An ``Instructions`` given is kept as it is; any other iterable of
    ``asm.Instruction`` becomes one, and bytes are decoded.  A program read
    from ELF is decoded (and its functions linked in) on first access only:
    loading an unchanged program needs libbpf's bytes, never the decoded
    list.  Until then the field holds :data:`_FROM_ORIGIN` and the program's
    origin knows how to decode it.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_" + name

    @overload
    def __get__(self, obj: None, owner: Any = None) -> Tuple[()]: ...

    @overload
    def __get__(self, obj: ProgramSpec, owner: Any = None) -> Instructions: ...

    def __get__(self, obj: Optional[ProgramSpec], owner: Any = None) -> Union[Tuple[()], Instructions]:
        if obj is None:
            return ()  # the dataclass default: __set__ makes a fresh, empty list of it
        value: Instructions = obj.__dict__[self._slot]
        if value is _FROM_ORIGIN:
            assert obj._origin is not None
            value = obj.__dict__[self._slot] = obj._origin.instructions()
        return value

    def __set__(self, obj: ProgramSpec, value: InstructionsLike) -> None:
        obj.__dict__[self._slot] = _as_instructions(obj.name, value)


def _as_instructions(program: str, value: InstructionsLike) -> Instructions:
    from .asm import Instruction, Instructions  # pure Python, loaded when first needed

    if isinstance(value, Instructions):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Instructions.decode(bytes(value), sys.byteorder)
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise TypeError(f"program {program}: instructions must be asm.Instruction objects (in a list, "
                        f"asm.Instructions, any iterable) or their encoding as bytes, not {type(value).__name__}")
    out = Instructions(value)
    for index, ins in enumerate(out):
        if not isinstance(ins, Instruction):
            raise TypeError(f"program {program}: instructions[{index}] is {type(ins).__name__} {ins!r}, "
                            f"not an asm.Instruction")
    return out


_FROM_ORIGIN: Any = object()


@dataclass(eq=True)
class ProgramSpec:
    """Blueprint of a program.

    ``instructions`` is an :class:`ebpf.asm.Instructions`; it may be given as
    any iterable of :class:`ebpf.asm.Instruction` (a plain list, say) or as
    the kernel's 8-byte encoding, and is kept as ``asm.Instructions``.  A
    program read from ELF has the program followed by every function it
    calls.  ``attach_to`` names the hook (e.g. ``"syscalls/sys_enter_getpid"``
    for ``tracepoint/syscalls/sys_enter_getpid``).

    ``attach_target`` is a loaded :class:`ebpf.Program` to load this one
    against (cilium's ``AttachTarget``): an ``EXT`` program (freplace)
    replacing, or a ``TRACING`` fentry/fexit program tracing, the function
    ``attach_to`` of that program; the function's BTF id is looked up in the
    target's BTF.  A copy of the spec refers to the same program.
    """

    name: str
    type: ProgramType = ProgramType.UNSPEC
    attach_type: AttachType = AttachType.NONE
    attach_to: str = ""
    section_name: str = ""
    instructions: _Instructions = _Instructions()
    license: str = ""
    kernel_version: int = 0
    flags: int = 0
    attach_target: Optional[Any] = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.type = to_enum(ProgramType, self.type)
        self.attach_type = to_enum(AttachType, self.attach_type)
        self._origin: Optional[_ProgramOrigin] = None

    def copy(self) -> ProgramSpec:
        """A copy whose instructions can be edited without touching this one."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)  # the origin is immutable and shared
        insns = self.__dict__["_instructions"]
        if insns is not _FROM_ORIGIN:
            new.__dict__["_instructions"] = insns.copy()
        return new

    def encoded_instructions(self) -> bytes:
        """The instruction stream as the kernel reads it."""
        return encode_instructions(self.instructions)

    def instruction_count(self) -> int:
        """How many instructions the program has (``lddw`` counts once), without
        decoding a program read from ELF that nobody looked at yet."""
        if _decoded(self):
            return len(self.instructions)
        assert self._origin is not None
        raw = self._origin.linked()
        # The second half of each lddw (opcode 0x18) is not an instruction.
        return len(raw) // 8 - sum(1 for off in range(0, len(raw), 8) if raw[off] == 0x18)

    def tag(self, algorithm: str = "sha1") -> str:
        """The kernel's tag of these instructions, computed without the kernel
        (cilium's ``ProgramSpec.Tag``): the first 8 bytes of the hash of the
        instructions with map fds zeroed, in hex.

        The kernel hashes with SHA-1 up to Linux 6.17 and with SHA-256 from
        6.18 on (``algorithm="sha256"``); :meth:`compatible` tries both.  A
        program whose loader rewrites instructions (CO-RE relocations,
        kfunc ids) is tagged as the kernel saw it, which may differ.
        """
        return instructions_tag(self.instructions, algorithm)

    def compatible(self, info: Any) -> bool:
        """Whether the loaded program ``info`` (an :class:`ebpf.ProgramInfo`,
        or its ``tag``) has these instructions: its tag is this spec's under
        either hash the kernel uses (cilium's ``ProgramSpec.Compatible``)."""
        tag = info if isinstance(info, str) else info.tag
        return tag in (self.tag("sha256"), self.tag("sha1"))

    def __repr__(self) -> str:
        # Short: the instructions are counted, not listed (str(spec.instructions)
        # disassembles them).
        parts = [f"name={self.name!r}", f"type={_enum_name(self.type)}"]
        if self.attach_type != AttachType.NONE:
            parts.append(f"attach_type={_enum_name(self.attach_type)}")
        if self.attach_to:
            parts.append(f"attach_to={self.attach_to!r}")
        if self.section_name:
            parts.append(f"section_name={self.section_name!r}")
        parts.append(f"instructions=<{_plural(self.instruction_count(), 'instruction')}>")
        if self.license:
            parts.append(f"license={self.license!r}")
        if self.kernel_version:
            parts.append(f"kernel_version={self.kernel_version:#x}")
        if self.flags:
            parts.append(f"flags={self.flags:#x}")
        return f"ProgramSpec({', '.join(parts)})"


def encode_instructions(insns: Union[Instructions, bytes]) -> bytes:
    """``insns`` as the kernel's 8-byte instructions (in the host's byte order)."""
    raw = bytes(insns) if isinstance(insns, (bytes, bytearray, memoryview)) else insns.encode(sys.byteorder)
    if len(raw) % 8:
        raise InvalidObjectError(f"instruction stream of {len(raw)} bytes is not a multiple of 8")
    return raw


_NAMED_FIELDS = {"maps": "map", "programs": "program", "variables": "variable"}


def _enum_name(value: int) -> str:
    return getattr(value, "name", None) or str(int(value))


def _plural(n: int, word: str, words: Optional[str] = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def _type_name(t: Any) -> str:
    """A BTF type as a repr shows it: ``Typedef 'u32'``, ``Struct 'record'``."""
    name = getattr(t, "name", "")
    return f"<{type(t).__name__} {name!r}>" if name else f"<{type(t).__name__}>"


_LDDW = 0x18  # BPF_LD | BPF_IMM | BPF_DW
_PSEUDO_MAP_FD, _PSEUDO_MAP_VALUE = 1, 2


def instructions_tag(insns: Any, algorithm: str = "sha1") -> str:
    """The kernel's tag of ``insns`` (see :meth:`ProgramSpec.tag`), as
    ``bpf_prog_calc_tag`` computes it: ``lddw`` of a map fd or map value
    address has both halves of its immediate zeroed (fds and value offsets
    differ from load to load)."""
    import hashlib

    if algorithm not in ("sha1", "sha256"):
        raise ValueError(f"algorithm must be 'sha1' or 'sha256', not {algorithm!r}")
    raw = bytearray(encode_instructions(insns))
    # A map load read from ELF with src 0 is a map fd load to the loader.
    as_fd_load: Set[int] = set()
    if hasattr(insns, "raw_offsets"):
        slots = insns.raw_offsets()
        as_fd_load = {slots[i] * 8 for i, ins in enumerate(insns)
                      if ins.opcode == _LDDW and ins.src == 0 and ins.reference and not ins.reference.startswith(".")}
    src_shift, dst_mask = (4, 0x0F) if sys.byteorder == "little" else (0, 0xF0)
    was_ld_map = False
    for off in range(0, len(raw), 8):
        if off in as_fd_load:
            raw[off + 1] = (raw[off + 1] & dst_mask) | (_PSEUDO_MAP_FD << src_shift)
        src = (raw[off + 1] >> src_shift) & 0xF
        if not was_ld_map and raw[off] == _LDDW and src in (_PSEUDO_MAP_FD, _PSEUDO_MAP_VALUE):
            was_ld_map = True
            raw[off + 4:off + 8] = bytes(4)
        elif was_ld_map and not any(raw[off:off + 4]):
            was_ld_map = False
            raw[off + 4:off + 8] = bytes(4)
        else:
            was_ld_map = False
    return hashlib.new(algorithm, bytes(raw)).hexdigest()[:16]


class VariableBase:
    """What spec and live variables share: decoding and encoding via BTF.

    Subclasses provide ``name``, ``size``, ``type`` and ``get_bytes()``.
    """

    __slots__ = ()
    name: str
    size: int
    type: BTFVar

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

    def __init__(self, name: str, section: str, offset: int, size: int, type: BTFVar, map_spec: MapSpec) -> None:
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
    from .btf import codec_for  # a lazily loaded subpackage

    target = getattr(var, "type", var)
    try:
        return codec_for(target)
    except (TypeError, ValueError, NotImplementedError, EBPFError):
        return None


@dataclass
class CollectionSpec:
    """Maps, programs, variables and BTF types of one object.

    ``maps``, ``programs`` and ``variables`` are dicts by name (a dict
    assigned to them is copied into a :class:`NameDict`, whose missing names
    raise a ``KeyError`` listing the names there are).
    """

    maps: Dict[str, MapSpec] = field(default_factory=dict)
    programs: Dict[str, ProgramSpec] = field(default_factory=dict)
    variables: Dict[str, VariableSpec] = field(default_factory=dict)
    types: Optional[BTFSpec] = field(default=None, compare=False)
    byte_order: str = "little"

    def __post_init__(self) -> None:
        self._origin: Optional[_ObjectOrigin] = None

    def __setattr__(self, name: str, value: Any) -> None:
        kind = _NAMED_FIELDS.get(name)
        if kind is not None and not isinstance(value, NameDict):
            value = NameDict(kind, "spec", value)
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        # Short: names and sizes, never instructions or data images.
        progs = ", ".join(f"{n!r}: <{_plural(p.instruction_count(), 'instruction')}>"
                          for n, p in self.programs.items())
        return (f"CollectionSpec(maps={list(self.maps)!r}, programs={{{progs}}}, "
                f"variables={list(self.variables)!r}, types={self.types!r}, byte_order={self.byte_order!r})")

    def copy(self) -> "CollectionSpec":
        """A deep copy: editing it never touches this spec."""
        maps = {k: m.copy() for k, m in self.maps.items()}
        variables = {}
        for name, v in self.variables.items():
            target = maps.get(v.section, v._map)
            variables[name] = VariableSpec(v.name, v.section, v.offset, v.size, v.type, target)
        programs = {k: p.copy() for k, p in self.programs.items()}
        copied = CollectionSpec(maps=maps, programs=programs, variables=variables, types=self.types,
                                byte_order=self.byte_order)
        copied._origin = self._origin
        for p in programs.values():
            # A program that loads through its object follows its copy.
            if p._origin is not None and p._origin.collection is self:
                p._origin = p._origin.with_collection(copied)
        return copied

    __copy__ = copy

    def __deepcopy__(self, memo: Dict[int, Any]) -> CollectionSpec:
        return self.copy()

    @overload
    def load_and_assign(self, objs: Type[_T], **options: Any) -> _T: ...

    @overload
    def load_and_assign(self, objs: _T, **options: Any) -> _T: ...

    def load_and_assign(self, objs: Any, **options: Any) -> Any:
        """Load only what ``objs`` asks for and assign it.

        ``objs`` is an object (or a class, made with no arguments) whose
        annotations name maps, programs and globals, typed ``ebpf.Map``,
        ``ebpf.Program`` or ``ebpf.Variable``; attribute names are matched to
        spec names directly, or given as ``typing.Annotated[ebpf.Map, "name"]``.
        ``Optional[X]`` (or ``X | None``) marks one that may be absent from the
        spec: it is set to None then.  Returns the filled object.  Options are
        those of :class:`ebpf.Collection`.
        """
        # The objects layer sits above this one: it is reached through the
        # package's public names at call time, never imported from here.
        return sys.modules[__name__.rpartition(".")[0]].load_and_assign(self, objs, **options)

    def rewrite_constants(self, consts: Dict[str, Any]) -> None:
        """Set several ``.rodata`` variables at once (cilium's RewriteConstants)."""
        missing = [n for n in consts if n not in self.variables]
        if missing:
            raise KeyError(f"no such variables: {', '.join(sorted(missing))}")
        for name, value in consts.items():
            self.variables[name].set(value)


# --------------------------------------------------------------------------
# Origins: what a spec read from ELF keeps of it.  Written by the reader,
# read by the loader; immutable, so copies of a spec share them.


class _ObjectOrigin:
    """The ELF a CollectionSpec was read from.

    ``elf`` is reopened by libbpf at load time, so CO-RE, BTF and
    relocations stay libbpf's job.  ``map_keys`` maps libbpf's name of each
    map (``"core.rodata"``) to its key in ``CollectionSpec.maps``
    (``".rodata"``); ``references`` names, per program, the maps its linked
    code loads; ``images`` holds the initial image of each data section as
    read, and ``definitions`` libbpf's definition of each map as read (an
    ``ebpf._libbpf.MapDefinition`` by libbpf's name), to tell what the user
    changed.
    """

    __slots__ = ("elf", "object_name", "map_keys", "references", "images", "definitions")

    def __init__(self, elf: bytes, object_name: str, map_keys: Mapping[str, str],
                 references: Mapping[str, Tuple[str, ...]], images: Mapping[str, bytes],
                 definitions: Mapping[str, Any]) -> None:
        self.elf = elf
        self.object_name = object_name
        self.map_keys = map_keys
        self.references = references
        self.images = images
        self.definitions = definitions


class _ProgramOrigin:
    """The ELF a ProgramSpec was read from.

    ``raw`` is libbpf's own (unlinked) code of the program, ``btf`` the
    object's BTF (it gives a program loaded alone its ``func_info``).
    ``collection`` is set for a program that must load through libbpf even
    alone (CO-RE relocations, externs): the spec it was read with, whose
    maps it uses.  ``decode`` turns the ELF into the linked
    ``asm.Instructions`` and their encoding; :meth:`linked` is that
    encoding, to tell whether the user changed the instructions.
    """

    __slots__ = ("raw", "btf", "collection", "_decode", "_linked")

    def __init__(self, raw: bytes, btf: Any, collection: Optional[CollectionSpec],
                 decode: Callable[[], Tuple["Instructions", bytes]]) -> None:
        self.raw = raw
        self.btf = btf
        self.collection = collection
        self._decode = decode
        self._linked: Optional[bytes] = None

    def instructions(self) -> "Instructions":
        insns, linked = self._decode()
        self._linked = linked
        return insns

    def linked(self) -> bytes:
        if self._linked is None:
            self._linked = self._decode()[1]
        return self._linked

    def with_collection(self, collection: CollectionSpec) -> "_ProgramOrigin":
        new = _ProgramOrigin(self.raw, self.btf, collection, self._decode)
        new._linked = self._linked
        return new

    def with_btf(self, btf: Any) -> "_ProgramOrigin":
        new = _ProgramOrigin(self.raw, btf, self.collection, self._decode)
        new._linked = self._linked
        return new


def _decoded(ps: ProgramSpec) -> bool:
    """Whether ``ps.instructions`` was ever read or set (else it is exactly
    what the ELF holds, and loading can use libbpf's bytes as they are)."""
    return ps.__dict__["_instructions"] is not _FROM_ORIGIN


def _defer_instructions(ps: ProgramSpec, origin: _ProgramOrigin) -> None:
    """Make ``ps.instructions`` decode from ``origin`` on first access."""
    ps._origin = origin
    ps.__dict__["_instructions"] = _FROM_ORIGIN
