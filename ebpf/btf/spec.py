"""A parsed BTF blob: :class:`Spec`, and the loaders for files and the kernel."""

from __future__ import annotations

import os
import struct
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple
from typing import Type as _PyType
from typing import Union as _U

from ..errors import EBPFError
from . import types as T
from .parse import BTFError, ByteOrder, Kind, RawBTF
from .validation import validate_raw

if TYPE_CHECKING:  # pragma: no cover
    from .._elf import ElfFile

__all__ = [
    "Spec", "TypeNotFoundError", "AmbiguousTypeError", "load_spec", "load_kernel_spec",
    "load_kernel_module_spec", "validate",
]


class TypeNotFoundError(EBPFError, KeyError):
    """No type with that name (or id) exists in the spec."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "type not found"


class AmbiguousTypeError(EBPFError, LookupError):
    """Several types match a name lookup and none is preferable; pass ``kind``."""


KindSpec = _U[_PyType[T.Type], str, None]

_KIND_NAMES = {
    "int": T.Int, "pointer": T.Pointer, "ptr": T.Pointer, "array": T.Array, "struct": T.Struct,
    "union": T.Union, "enum": T.Enum, "enum64": T.Enum, "fwd": T.Fwd, "typedef": T.Typedef,
    "volatile": T.Volatile, "const": T.Const, "restrict": T.Restrict, "func": T.Func,
    "func_proto": T.FuncProto, "var": T.Var, "datasec": T.Datasec, "float": T.Float,
    "decl_tag": T.DeclTag, "type_tag": T.TypeTag, "void": T.Void,
}

# Preference when a name matches types of several kinds and no kind was asked
# for: data types (what a user means by "the type foo") before functions and
# variables, and full definitions before forward declarations.
_KIND_PREFERENCE = [T.Struct, T.Union, T.Enum, T.Typedef, T.Int, T.Float, T.Fwd, T.Func, T.Var,
                    T.Datasec, T.TypeTag, T.DeclTag]

# After this many distinct name lookups, index all names at once: cheaper
# than searching the blob for each further lookup.
_FULL_INDEX_AFTER = 32


def _s32(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


class Spec:
    """Parsed BTF: a table of types indexed by id and by name.

    Types are decoded lazily on first access and cached, so a lookup returns
    the same object every time.  ``base`` is the spec a split BTF blob (a
    kernel module's) builds on: ids below :attr:`first_id` are the base's.
    """

    def __init__(self, raw: RawBTF, base: Optional["Spec"] = None, *, validated: bool = False) -> None:
        self._raw = raw
        self.base = base
        self._validated = validated
        self._types: Dict[int, T.Type] = {}
        # One Void shared with the base (annotated: mypy cannot infer it from base's own).
        self._void: T.Void = base._void if base is not None else T.Void()
        self._by_name: Dict[str, List[int]] = {}
        self._full_index = False
        self._lock = threading.RLock()

    # -- construction -----------------------------------------------------

    @classmethod
    def from_raw(cls, data: bytes, base: Optional["Spec"] = None, *, validate: bool = True) -> "Spec":
        """Parse a raw BTF blob (either byte order, detected from the magic).

        With ``validate`` (the default) every type is checked eagerly, see
        :func:`validate`.  Without it only the header and record boundaries
        are checked up front and each type when it is first decoded; use that
        for BTF you trust, such as the running kernel's.
        """
        raw = RawBTF(data, base._raw if base is not None else None)
        if validate:
            validate_raw(raw)
        return cls(raw, base, validated=validate)

    def copy(self) -> "Spec":
        """An independent spec over the same bytes (types are decoded afresh)."""
        return Spec(self._raw, self.base, validated=self._validated)

    @property
    def validated(self) -> bool:
        """Whether every record was checked by the validator (see
        :func:`validate`), as :func:`load_spec` and ``from_raw`` do by
        default.  The kernel's own BTF (:func:`load_kernel_spec`) is read
        without: it is trusted.  BTF handed to libbpf must be one or the
        other; ``validate(spec.raw)`` checks any other spec."""
        return self._validated

    def __deepcopy__(self, memo: Dict[int, Any]) -> "Spec":
        return self.copy()

    # -- properties -------------------------------------------------------

    @property
    def raw(self) -> bytes:
        """The BTF blob this spec was parsed from."""
        return self._raw.data

    @property
    def byte_order(self) -> ByteOrder:
        """``"little"`` or ``"big"`` (as for :meth:`int.from_bytes`)."""
        return self._raw.byte_order

    @property
    def first_id(self) -> int:
        """The lowest type id defined by this blob (1, or past the base's ids)."""
        return self._raw.first_id

    def __len__(self) -> int:
        """Number of types this blob defines (not counting Void or base types)."""
        return self._raw.end_id - self._raw.first_id

    def __iter__(self) -> Iterator[T.Type]:
        """All types this blob defines, in id order."""
        for tid in range(self._raw.first_id, self._raw.end_id):
            yield self.type_by_id(tid)

    def __repr__(self) -> str:
        split = " split" if self.base is not None else ""
        return f"<btf.Spec{split} {len(self)} types {self.byte_order}-endian>"

    # -- lookups ----------------------------------------------------------

    def type_by_id(self, type_id: int) -> T.Type:
        """The type with this id; 0 is :class:`Void`."""
        t = self._types.get(type_id)
        if t is not None:
            return t
        if type_id == 0:
            return self._void
        if type_id < self._raw.first_id and self.base is not None and type_id > 0:
            return self.base.type_by_id(type_id)
        if not self._raw.owns(type_id):
            raise TypeNotFoundError(f"no type with id {type_id}")
        with self._lock:
            t = self._types.get(type_id)
            if t is None:
                t = self._decode(type_id)
                self._types[type_id] = t
        return t

    def type_id(self, t: T.Type) -> int:
        """The id of ``t`` in this spec (or its base)."""
        if isinstance(t, T.Void):
            return 0
        spec: Optional[Spec] = self
        while spec is not None:
            if t._spec is spec:
                return t.id
            spec = spec.base
        raise TypeNotFoundError(f"{t!r} is not part of this spec")

    def _ids_by_name(self, name: str) -> List[int]:
        ids = self._by_name.get(name)
        if ids is not None:
            return ids
        if self._full_index:
            return []
        if len(self._by_name) >= _FULL_INDEX_AFTER:
            self._build_name_index()
            return self._by_name.get(name, [])
        ids = self._raw.find_name(name)
        self._by_name[name] = ids
        return ids

    def _build_name_index(self) -> None:
        index: Dict[str, List[int]] = {}
        raw = self._raw
        words = raw.words
        string = raw.string
        first = raw.first_id
        for n, off in enumerate(raw.offsets):
            name_off = words[off]
            if name_off:
                index.setdefault(string(name_off), []).append(first + n)
        self._by_name = index
        self._full_index = True

    def types_by_name(self, name: str, kind: KindSpec = None) -> List[T.Type]:
        """All types of this blob called ``name`` (optionally of one kind), in id order.

        Names match exactly: ``foo___flavour`` is not ``foo``.  Types of a
        base spec are not searched (as in cilium/ebpf), look them up there.
        """
        cls = _kind_class(kind)
        found = [self.type_by_id(i) for i in self._ids_by_name(name)]
        if cls is not None:
            found = [t for t in found if isinstance(t, cls)]
        return found

    def type_by_name(self, name: str, kind: KindSpec = None) -> T.Type:
        """The type called ``name``.

        ``kind`` narrows the search: a class such as :class:`Struct` or a kind
        name such as ``"struct"``.  Without it, when types of several kinds
        share the name, the first kind in this order wins: struct, union,
        enum, typedef, int, float, fwd, func, var, datasec, type tag, decl tag.
        Several matches of the winning kind raise :class:`AmbiguousTypeError`
        (cilium/ebpf's AnyTypeByName refuses any ambiguity; choosing by kind
        keeps ``type_by_name("sigaction")`` meaning the struct).
        No match raises :class:`TypeNotFoundError`.
        """
        found = self.types_by_name(name, kind)
        if not found:
            what = f"{_kind_label(kind)} " if kind is not None else ""
            raise TypeNotFoundError(f"no {what}type named {name!r}")
        if len(found) == 1:
            return found[0]
        if kind is None:
            for cls in _KIND_PREFERENCE:
                of_kind = [t for t in found if type(t) is cls]
                if len(of_kind) == 1:
                    return of_kind[0]
                if of_kind:
                    found = of_kind
                    break
        raise AmbiguousTypeError(f"{len(found)} types named {name!r}: {found[:5]!r}")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._ids_by_name(name))

    def format_c(self, *, layout_asserts: bool = False) -> str:
        """A C header with every named type, like ``bpftool btf dump file X format c``.

        ``layout_asserts`` appends a ``_Static_assert`` on every struct's,
        union's and typedef's size and every member's offset (see
        :func:`ebpf.btf.format.format_spec`)."""
        from .format import format_spec

        return format_spec(self, layout_asserts=layout_asserts)

    # -- decoding ---------------------------------------------------------

    def _decode(self, tid: int) -> T.Type:
        raw = self._raw
        r = raw.record(tid)
        k = r.kind
        name = raw.string(r.name_off) if r.name_off else ""
        t: T.Type
        if k == Kind.INT:
            enc = r.extra[0]
            t = T.Int(name, r.a, (enc >> 24) & 0x0F, enc & 0xFF, (enc >> 16) & 0xFF)
        elif k == Kind.PTR:
            t = T.Pointer(r.a)
        elif k == Kind.ARRAY:
            t = T.Array(r.extra[0], r.extra[2], r.extra[1])
        elif k in (Kind.STRUCT, Kind.UNION):
            members = []
            for mname, mtype, moff in r.items:
                if r.kflag:
                    bits, off = moff >> 24, moff & 0xFFFFFF
                else:
                    bits, off = 0, moff
                    # Legacy bitfields live in the int's encoding; present
                    # them like kind_flag bitfields, as cilium/ebpf does.
                    if mtype and raw.kind_of(mtype) == Kind.INT:
                        it = self.type_by_id(mtype)
                        assert isinstance(it, T.Int)
                        if it.offset or it.bits != it.size * 8:
                            bits, off = it.bits, off + it.offset
                members.append(T.Member(raw.string(mname) if mname else "", mtype, off, bits))
            cls = T.Struct if k == Kind.STRUCT else T.Union
            t = cls(name, r.a, members)
        elif k == Kind.ENUM:
            if r.kflag:
                values = [T.EnumValue(raw.string(n), _s32(v)) for n, v in r.items]
            else:
                values = [T.EnumValue(raw.string(n), v) for n, v in r.items]
            t = T.Enum(name, r.a, values, signed=r.kflag)
        elif k == Kind.ENUM64:
            values = []
            for n, lo, hi in r.items:
                v = lo | (hi << 32)
                if r.kflag and v & (1 << 63):
                    v -= 1 << 64
                values.append(T.EnumValue(raw.string(n), v))
            t = T.Enum(name, r.a, values, signed=r.kflag)
        elif k == Kind.FWD:
            t = T.Fwd(name, T.FwdKind.UNION if r.kflag else T.FwdKind.STRUCT)
        elif k == Kind.TYPEDEF:
            t = T.Typedef(name, r.a)
        elif k == Kind.VOLATILE:
            t = T.Volatile(r.a)
        elif k == Kind.CONST:
            t = T.Const(r.a)
        elif k == Kind.RESTRICT:
            t = T.Restrict(r.a)
        elif k == Kind.FUNC:
            t = T.Func(name, r.a, r.vlen)
        elif k == Kind.FUNC_PROTO:
            t = T.FuncProto(r.a, [T.FuncParam(raw.string(n) if n else "", pt) for n, pt in r.items])
        elif k == Kind.VAR:
            t = T.Var(name, r.a, r.extra[0])
        elif k == Kind.DATASEC:
            t = T.Datasec(name, r.a, [T.VarSecinfo(vt, off, size) for vt, off, size in r.items])
        elif k == Kind.FLOAT:
            t = T.Float(name, r.a)
        elif k == Kind.DECL_TAG:
            t = T.DeclTag(name, r.a, _s32(r.extra[0]))
        elif k == Kind.TYPE_TAG:
            t = T.TypeTag(name, r.a)
        else:  # pragma: no cover - RawBTF rejects unknown kinds
            raise BTFError(f"type {tid}: unknown kind {k}")
        t.id = tid
        t._spec = self
        return t


def _kind_class(kind: KindSpec) -> Optional[_PyType[T.Type]]:
    if kind is None:
        return None
    if isinstance(kind, str):
        try:
            return _KIND_NAMES[kind.lower()]
        except KeyError:
            raise ValueError(f"unknown BTF kind {kind!r}") from None
    if isinstance(kind, type) and issubclass(kind, T.Type):
        return kind
    raise TypeError(f"kind must be a Type subclass or a kind name, not {kind!r}")


def _kind_label(kind: KindSpec) -> str:
    cls = _kind_class(kind)
    return cls.kind if cls is not None else ""


# -- loaders -----------------------------------------------------------------

_ELF_MAGIC = b"\x7fELF"


def _read(path_or_bytes: _U[str, "os.PathLike[str]", bytes, bytearray, memoryview]) -> bytes:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    with open(path_or_bytes, "rb") as f:
        return f.read()


def _btf_from_elf(data: bytes) -> bytes:
    from .._elf import ElfFile

    elf = ElfFile(data)
    sec = elf.section_by_name(".BTF")
    if sec is None:
        raise BTFError("ELF file has no .BTF section")
    return _fixup_datasecs(sec.data, elf)


def _fixup_datasecs(btf: bytes, elf: ElfFile) -> bytes:
    """Fill in what the compiler leaves to the loader, as libbpf does.

    Clang writes DATASEC records with size 0 and every variable at offset 0;
    the real values are the ELF section's size and each symbol's value.
    """
    raw = RawBTF(btf)
    patches = {}
    symbols: Optional[Dict[Tuple[int, str], int]] = None  # (section index, name) -> value, on first need
    for off in raw.offsets:
        info = raw.words[off + 1]
        if (info >> 24) & 0x1F != Kind.DATASEC or raw.words[off + 2] != 0:
            continue
        name = raw.string(raw.words[off])
        section = elf.section_by_name(name)
        if section is None:
            continue
        if symbols is None:
            symbols = {}
            for sym in elf.symbols:
                if sym.name:
                    symbols.setdefault((sym.shndx, sym.name), sym.value)
        patches[off + 2] = _u32(section.size, f"section {name} of {section.size} bytes")
        for i in range(info & 0xFFFF):
            item = off + 3 + 3 * i
            var_id = raw.words[item]
            if raw.owns(var_id) and raw.kind_of(var_id) == Kind.VAR:
                var_name = raw.string(raw.name_offset_of(var_id))
                value = symbols.get((section.index, var_name))
                if value is not None:
                    patches[item + 1] = _u32(value, f"variable {var_name} at offset {value} of {name}")
    if not patches:
        return btf
    out = bytearray(btf)
    hdr_len, type_off = struct.unpack_from(("<" if raw.byte_order == "little" else ">") + "4xII", btf)
    fmt = "<I" if raw.byte_order == "little" else ">I"
    for word, value in patches.items():
        struct.pack_into(fmt, out, hdr_len + type_off + 4 * word, value)
    return bytes(out)


def _u32(value: int, what: str) -> int:
    # BTF sizes and offsets are 32 bits wide; an ELF's are 64.
    if not 0 <= value <= 0xFFFFFFFF:
        raise BTFError(f"{what}: does not fit in BTF's 32-bit sizes and offsets")
    return value


def load_spec(path_or_bytes: _U[str, "os.PathLike[str]", bytes, bytearray, memoryview],
              base: Optional[Spec] = None) -> Spec:
    """Load BTF from an ELF object's ``.BTF`` section or from a raw BTF blob.

    The format is detected from the magic (``\\x7fELF`` or 0xeb9f in either
    byte order).  The BTF is fully validated.
    """
    data = _read(path_or_bytes)
    if data[:4] == _ELF_MAGIC:
        data = _btf_from_elf(data)
    return Spec.from_raw(data, base)


def validate(data: bytes, base: Optional[Spec] = None) -> None:
    """Check a raw BTF blob completely; raise :class:`BTFError` on any violation.

    Covers the header, record boundaries, known kinds, every type id and
    string offset, per-kind invariants, member/variable placement, and
    reference loops that do not pass through a pointer.  Run it before
    handing BTF to libbpf, which trusts its input.
    """
    validate_raw(RawBTF(data, base._raw if base is not None else None))


_kernel_lock = threading.Lock()
_kernel_spec: Optional[Spec] = None
_module_specs: Dict[str, Spec] = {}

KERNEL_BTF_DIR = "/sys/kernel/btf"


def load_kernel_spec() -> Spec:
    """The running kernel's BTF (``/sys/kernel/btf/vmlinux``), loaded once and cached.

    The kernel's BTF is trusted: it is indexed eagerly but each type is only
    checked when first decoded, which keeps the first lookup fast.
    """
    global _kernel_spec
    with _kernel_lock:
        if _kernel_spec is None:
            path = os.path.join(KERNEL_BTF_DIR, "vmlinux")
            try:
                data = _read(path)
            except FileNotFoundError:
                from ..errors import NotSupportedError

                raise NotSupportedError("kernel BTF (/sys/kernel/btf/vmlinux)", min_kernel="5.4") from None
            _kernel_spec = Spec.from_raw(data, validate=False)
        return _kernel_spec


def load_kernel_module_spec(name: str) -> Spec:
    """A kernel module's split BTF (``/sys/kernel/btf/<name>``) on top of vmlinux, cached."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid module name {name!r}")
    base = load_kernel_spec()
    with _kernel_lock:
        spec = _module_specs.get(name)
        if spec is None:
            path = os.path.join(KERNEL_BTF_DIR, name)
            try:
                data = _read(path)
            except FileNotFoundError:
                raise TypeNotFoundError(f"no BTF for kernel module {name!r}") from None
            spec = Spec.from_raw(data, base, validate=False)
            _module_specs[name] = spec
        return spec


def flush_kernel_specs() -> None:
    """Forget the cached kernel specs (e.g. after loading a module)."""
    global _kernel_spec
    with _kernel_lock:
        _kernel_spec = None
        _module_specs.clear()
