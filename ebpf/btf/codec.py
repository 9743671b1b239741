"""Map values and globals as natural Python values, driven by BTF.

``codec_for(t)`` returns a :class:`Codec` (cached per type) that turns the
bytes of ``t`` into Python values and back:

* integers are ``int`` (signedness and size from BTF), ``bool`` for BTF bool;
* enums are members of an :class:`enum.IntEnum` generated per enum type, or a
  plain ``int`` when the value has no enumerator;
* floats are ``float`` (12/16-byte long doubles stay ``bytes``);
* pointers are ``int`` addresses;
* arrays are lists, except arrays of 1-byte integers which are ``bytes``:
  a ``char`` array is a C string, decoded up to its first NUL (like
  ``task->comm``); an ``unsigned char``/``__u8`` array keeps every byte (a
  MAC address must not lose trailing zeros).  Encoding accepts ``bytes`` or
  ``str`` (UTF-8) no longer than the array and pads with NULs;
* structs, unions and data sections are instances of a class generated once
  per type, with attribute access, ``==``, ``repr``, ``_asdict()`` and
  ``dict(obj)``, constructible by keywords.  Members of anonymous nested
  structs/unions appear as fields of the parent, as in C.  Bitfields are
  plain fields.

Encoding accepts the decoded shapes, ``dict`` for structs (missing fields
are zero), and at every level a bytes-like object (or anything with
``__bytes__`` or the buffer protocol, e.g. a ctypes instance) of exactly the
right size.  Union members left ``None`` are not written; if several are
set, they are written in declaration order (later ones win where they
overlap).  Errors are :class:`TypeError` or :class:`ValueError` naming the
field path, e.g. ``value.hdr.flags: 300 does not fit in u8``.

Decoders are compiled once per type into a function that calls one
``struct.Struct.unpack`` for the whole fixed layout (one more per
overlapping union member) and builds the result in a single expression.
"""

from __future__ import annotations

import enum
import keyword
import struct
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple
from typing import Type as _PyType

from . import types as T
from .format import declarator
from .parse import BTFError, ByteOrder

__all__ = ["Codec", "codec_for", "StructValue", "bind_class", "fields", "value_shape"]

_MAX_DEPTH = 64
_lock = threading.RLock()
# Classes bound to types by bind_class (id -> (type, class)); it holds the
# type, so an id is never reused while its entry lives.
_bound: Dict[int, Tuple[T.Type, type]] = {}


def codec_for(t: T.Type) -> "Codec":
    """The codec for values of type ``t`` (cached on the type object, so it
    lives exactly as long as the type)."""
    c = t._codec
    if c is not None:
        return c
    with _lock:
        c = t._codec
        if c is None:
            c = Codec(t)
            t._codec = c
        return c


def bind_class(t: T.Type, cls: type) -> None:
    """Decode values of ``t`` into ``cls`` and encode ``cls`` instances.

    For a struct or union, ``cls`` is a :class:`StructValue` subclass whose
    ``_fields`` are the field names of ``t`` in order (see :func:`fields`)
    and whose constructor takes them positionally, in that order; decoding
    calls it (or, for a class with ``__slots__``, fills a bare instance).
    For an enum, ``cls`` is an :class:`enum.IntEnum`; values without an
    enumerator still decode as plain ints.  This is how typed skeletons
    (``python -m ebpf gen``) make ``m[k]`` return their own classes.

    The binding is per type object and must come before the first codec
    of ``t`` or of a type containing it (``ValueError`` otherwise); binding
    the same class again does nothing.
    """
    real = T.underlying(t)
    if isinstance(real, (T.Struct, T.Union)):
        if not (isinstance(cls, type) and issubclass(cls, StructValue)):
            raise TypeError(f"{real.kind} {real.name or '(anonymous)'} needs a StructValue subclass, not {cls!r}")
        want = tuple(f.name for f in _flatten(real))
        if tuple(cls._fields) != want:
            raise TypeError(f"{cls.__name__} has fields {cls._fields}, "
                            f"{real.kind} {real.name or '(anonymous)'} has {want}")
        if _slotted(cls) and any(_mangled(n) for n in want):
            raise TypeError(f"{cls.__name__}: a class with __slots__ cannot hold fields named like {want}")
    elif isinstance(real, T.Enum):
        if not (isinstance(cls, type) and issubclass(cls, enum.IntEnum)):
            raise TypeError(f"enum {real.name or '(anonymous)'} needs an IntEnum subclass, not {cls!r}")
    else:
        raise TypeError(f"only structs, unions and enums can be bound to a class, not {real.kind}")
    with _lock:
        hit = _bound.get(id(real))
        if hit is not None and hit[0] is real:
            if hit[1] is cls:
                return
            raise ValueError(f"{real.kind} {real.name or '(anonymous)'} is already bound to {hit[1].__name__}")
        if real._codec is not None:
            raise ValueError(f"{real.kind} {real.name or '(anonymous)'} already has a codec: bind before first use")
        _bound[id(real)] = (real, cls)


def _bound_class(t: T.Type) -> Optional[type]:
    hit = _bound.get(id(t))
    return hit[1] if hit is not None and hit[0] is t else None


class Field:
    """One field of a struct/union value (see :func:`fields`).

    ``bit_offset`` counts from the start of the outermost struct, across
    flattened anonymous members; ``bitfield_size`` is 0 for whole fields;
    ``in_union`` says the field shares its bytes with others (it may be
    None in a value, and is then not written).
    """

    __slots__ = ("name", "type", "bit_offset", "bitfield_size", "in_union")

    def __init__(self, name: str, type: T.Type, bit_offset: int, bitfield_size: int, in_union: bool) -> None:
        self.name = name
        self.type = type
        self.bit_offset = bit_offset
        self.bitfield_size = bitfield_size
        self.in_union = in_union

    def __repr__(self) -> str:
        bits = f":{self.bitfield_size}" if self.bitfield_size else ""
        return f"Field({self.name!r} @{self.bit_offset}{bits}{' union' if self.in_union else ''})"


def fields(t: T.Type) -> List[Field]:
    """The fields of values of struct/union ``t``, in the order of their
    ``_fields``: members of anonymous nested structs and unions appear as
    fields of the parent (as in C), unnamed padding bitfields not at all."""
    real = T.underlying(t)
    if not isinstance(real, (T.Struct, T.Union)):
        raise TypeError(f"{real.kind} {real.name or '(anonymous)'} has no fields")
    return [Field(f.name, f.type, f.bit_offset, f.bitfield_size, f.in_union) for f in _flatten(real)]


def value_shape(t: T.Type) -> Tuple[str, Optional[T.Type], int]:
    """What values of ``t`` decode to: ``(shape, inner, count)``.

    ``shape`` is one of ``"int"``, ``"bool"``, ``"float"``, ``"bytes"``
    (``count`` raw bytes: byte arrays, 12/16-byte floats), ``"cstr"`` (a
    ``char[count]`` C string, decoded up to its NUL), ``"list"`` (``count``
    values of element type ``inner``), ``"struct"`` (an instance of the
    class of struct/union ``inner``) or ``"enum"`` (an IntEnum member of
    ``inner``, or an int).  Pointers are ints.
    """
    real = T.underlying(t)
    if isinstance(real, T.Var):
        real = T.underlying(real.type)
    if isinstance(real, T.Int):
        return ("bool" if real.is_bool else "int", None, 0)
    if isinstance(real, T.Enum):
        return ("enum", real, 0)
    if isinstance(real, T.Float):
        return ("float", None, 0) if real.size in _FLOAT_FMT else ("bytes", None, real.size)
    if isinstance(real, T.Pointer):
        return ("int", None, 0)
    if isinstance(real, T.Array):
        elem = T.underlying(real.type)
        n = real.nelems
        if isinstance(elem, T.Int) and _is_byte_int(elem) and (n == 0 or not elem.signed or _is_c_char(real.type)):
            # Mirrors _Gen.array: which byte arrays are C strings.
            return ("cstr" if n and _is_c_char(real.type) else "bytes", None, n)
        return ("list", real.type, n)
    if isinstance(real, (T.Struct, T.Union)):
        return ("struct", real, 0)
    raise TypeError(f"no value codec for {real.kind} {real.name or '(anon)'}")


def _type_name(t: T.Type) -> str:
    try:
        return declarator(t) or t.kind
    except BTFError:
        return t.kind


def _byte_order(t: T.Type) -> ByteOrder:
    spec = t._spec
    return spec.byte_order if spec is not None else "little"


def _slotted(cls: type) -> bool:
    return "__slots__" in cls.__dict__


class StructValue:
    """Base of the classes generated for structs, unions and data sections."""

    __slots__ = ()
    _fields: Tuple[str, ...] = ()
    _codec: "Codec"

    def _asdict(self) -> Dict[str, Any]:
        """Fields as a dict (nested structs stay objects)."""
        return {f: getattr(self, f) for f in self._fields}

    def keys(self) -> Tuple[str, ...]:
        return self._fields

    def __getitem__(self, name: str) -> Any:
        if name not in self._fields:
            raise KeyError(name)
        return getattr(self, name)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({inner})"

    def __bytes__(self) -> bytes:
        return self._codec.encode(self)


class Codec:
    """Decoder and encoder for one BTF type.

    ``decode(buf)`` takes exactly :attr:`size` bytes (bytes, bytearray,
    memoryview); ``encode(value)`` returns exactly :attr:`size` bytes.
    ``cls`` is the generated class for structs/unions/datasecs (else None),
    ``enum`` the generated IntEnum for enums (else None).
    """

    # Set when first needed, by _class_for (struct/union/datasec codecs) and
    # _enum_members (enum codecs); declared here only for checkers.
    _fields: List["_Field"]
    _members: Dict[int, Any]

    def __init__(self, t: T.Type) -> None:
        self.type = t
        real = T.underlying(t)
        if isinstance(real, T.Var):
            real = T.underlying(real.type)
        self._real = real
        if isinstance(real, (T.Void, T.Func, T.FuncProto, T.Fwd, T.DeclTag)):
            raise TypeError(f"no value codec for {real.kind} {real.name or '(anon)'}")
        self.size: int = T.sizeof(real)
        if self.size > 0xFFFFFFFF:
            raise BTFError(f"a value of {self.size} bytes cannot be represented (BTF sizes are 32 bits)")
        self.cls: Optional[type] = None
        self.enum: Optional[type] = None
        self.byte_order = _byte_order(real)
        self._prefix = "<" if self.byte_order == "little" else ">"
        gen = _Gen(self)
        self.decode: Callable[[Any], Any]
        self._decode_from: Callable[[Any, int], Any]
        self.decode, self._decode_from = gen.build(real)
        self._writer = _make_writer(self, real, _type_name(t), 0)

    def encode(self, value: Any, *, path: str = "value") -> bytes:
        """``value`` as exactly :attr:`size` bytes; errors name ``path``."""
        buf = bytearray(self.size)
        self._writer(buf, 0, value, path)
        return bytes(buf)

    def __repr__(self) -> str:
        return f"<Codec {_type_name(self.type)} size={self.size}>"


# -- decoding ------------------------------------------------------------------

_INT_FMT = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
            (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}
_FLOAT_FMT = {2: "e", 4: "f", 8: "d"}


def _check_scalar(t: T.Type) -> None:
    # Validated BTF has only these sizes; types built by hand or read
    # without validation may not.
    if isinstance(t, T.Int) and (t.size not in (1, 2, 4, 8, 16) or not 0 < t.bits + t.offset <= t.size * 8):
        raise BTFError(f"no codec for a {t.size}-byte int of {t.bits} bits at bit {t.offset}")
    if isinstance(t, T.Enum) and t.size not in (1, 2, 4, 8):
        raise BTFError(f"no codec for a {t.size}-byte enum")


def _cstr(b: bytes) -> bytes:
    n = b.find(b"\0")
    return b if n < 0 else b[:n]


def _sx(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


def _is_byte_int(t: T.Type) -> bool:
    return isinstance(t, T.Int) and t.size == 1 and not t.is_bool and t.bits == 8


def _is_c_char(elem: T.Type) -> bool:
    """``char`` (C strings) as opposed to ``unsigned char``/``__u8`` (raw bytes)."""
    base = T.underlying(elem)
    return isinstance(base, T.Int) and (base.is_char or base.name == "char")


class _Segment:
    __slots__ = ("fmt", "end", "count")

    def __init__(self) -> None:
        self.fmt: List[str] = []
        self.end = 0
        self.count = 0


class _Gen:
    """Builds the source of one decoder: flat leaves + one constructing expression."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.segments: List[_Segment] = []
        self.prelude: List[str] = []
        self.ns: Dict[str, Any] = {"_cstr": _cstr, "_sx": _sx, "_from_bytes": int.from_bytes}
        self.n = 0
        self.order = codec.byte_order
        self.shared: Dict[Tuple[int, int, str], Tuple[str, int, int]] = {}

    def name(self, obj: Any, hint: str) -> str:
        self.n += 1
        key = f"{hint}{self.n}"
        self.ns[key] = obj
        return key

    def leaf(self, off: int, size: int, fmt: str, count: int = 1) -> Tuple[str, int, int]:
        """Reserve ``fmt`` at byte ``off``; return an expression for its first
        item, and the segment and index that item has in the unpacked tuples."""
        for si in range(len(self.segments)):
            seg = self.segments[si]
            if seg.end <= off:
                break
        else:
            seg = _Segment()
            self.segments.append(seg)
            si = len(self.segments) - 1
        if off > seg.end:
            seg.fmt.append(f"{off - seg.end}x")
        seg.fmt.append(fmt)
        seg.end = off + size
        idx = seg.count
        seg.count += count
        return f"t{si}[{idx}]", si, idx

    def build(self, t: T.Type) -> Tuple[Callable[[Any], Any], Callable[[Any, int], Any]]:
        expr = self.value(t, 0, 0)
        # The common case, every leaf a plain field in order: fill a slotted
        # instance straight from the tuple (no Python __init__ call, about a
        # third cheaper), or splat the tuple into the constructor.
        fill: List[str] = []
        if len(self.segments) == 1:
            n = self.segments[0].count
            for cname in [k for k in self.ns if k.startswith("C")]:
                # (Compare counts first: an array leaf holds as many items
                # as elements, which may be hundreds of millions.)
                if len(self.ns[cname]._fields) == n and \
                        expr == f"{cname}({', '.join(f't0[{i}]' for i in range(n))})":
                    names = self.ns[cname]._fields
                    if _slotted(self.ns[cname]) and all(not keyword.iskeyword(f) for f in names):
                        fill = [f"o = _new({cname})"] + [f"o.{f} = t0[{i}]" for i, f in enumerate(names)]
                        expr = "o"
                    else:
                        expr = f"{cname}(*t0)"
        self.ns["_new"] = object.__new__
        size = self.codec.size
        srcs = []
        for variant, call in (("decode", "unpack(buf)"), ("decode_from", "unpack_from(buf, off)")):
            lines = []
            args = "buf" if variant == "decode" else "buf, off"
            lines.append(f"def {variant}({args}):")
            if self.segments:
                lines.append("    try:")
                for si, seg in enumerate(self.segments):
                    fmt = self.codec._prefix + "".join(seg.fmt)
                    if seg.end < size:
                        fmt += f"{size - seg.end}x"
                    s = struct.Struct(fmt)
                    sname = f"S{si}"
                    self.ns[sname] = s
                    lines.append(f"        t{si} = {sname}.{call}")
                lines.append("    except _struct_error as e:")
                lines.append(f"        raise ValueError(f'expected {size} bytes, got {{len(buf)}}') from None")
            elif variant == "decode":
                lines.append(f"    if len(buf) != {size}: raise ValueError(f'expected {size} bytes, got {{len(buf)}}')")
            else:  # a value without leaves (size 0, e.g. char x[0]) inside a larger buffer
                lines.append(f"    if len(buf) < off + {size}: raise ValueError(f'expected {size} bytes at {{off}}')")
            for p in self.prelude + fill:
                lines.append("    " + p.replace("__CALL__", call))
            lines.append(f"    return {expr.replace('__BASE__', '0' if variant == 'decode' else 'off')}")
            srcs.append("\n".join(lines))
        self.ns["_struct_error"] = struct.error
        src = "\n\n".join(srcs)
        exec(compile(src, f"<btf codec {_type_name(self.codec.type)}>", "exec"), self.ns)
        return self.ns["decode"], self.ns["decode_from"]

    def value(self, t: T.Type, off: int, depth: int) -> str:
        """Expression decoding ``t`` at byte ``off``."""
        if depth > _MAX_DEPTH:
            raise BTFError("type nesting too deep for a codec")
        t = T.underlying(t)
        _check_scalar(t)
        if isinstance(t, T.Int):
            if t.bits != t.size * 8 or t.offset:
                return self.bits(t, off * 8 + t.offset, t.bits, 0)
            if t.size == 16:
                e, _, _ = self.leaf(off, 16, "16s")
                return f"_from_bytes({e}, {self.order!r}, signed={t.signed})"
            if t.is_bool:
                if t.size == 1:
                    return self.leaf(off, 1, "?")[0]
                e, _, _ = self.leaf(off, t.size, _INT_FMT[(t.size, False)])
                return f"bool({e})"
            return self.leaf(off, t.size, _INT_FMT[(t.size, t.signed)])[0]
        if isinstance(t, T.Enum):
            e = self.leaf(off, t.size, _INT_FMT[(t.size, t.signed)])[0]
            m = self.name(_enum_members(self.codec, t), "M")
            return f"{m}.get({e}, {e})"
        if isinstance(t, T.Float):
            fmt = _FLOAT_FMT.get(t.size)
            if fmt is None:
                return self.leaf(off, t.size, f"{t.size}s")[0]
            return self.leaf(off, t.size, fmt)[0]
        if isinstance(t, T.Pointer):
            return self.leaf(off, 8, "Q")[0]
        if isinstance(t, T.Array):
            return self.array(t, off, depth)
        if isinstance(t, (T.Struct, T.Union, T.Datasec)):
            cls, fields = _class_for(self.codec, t)
            args = ", ".join(self.field_expr(f, off, depth) for f in fields)
            return f"{self.name(cls, 'C')}({args})"
        raise TypeError(f"no value codec for {t.kind} {t.name or '(anon)'}")

    def array(self, t: T.Array, off: int, depth: int) -> str:
        elem = T.underlying(t.type)
        n = t.nelems
        if n == 0:
            return "b''" if _is_byte_int(elem) else "[]"
        # (isinstance first: it tells checkers that elem has .signed.)
        if isinstance(elem, T.Int) and _is_byte_int(elem) and (not elem.signed or _is_c_char(t.type)):
            e = self.leaf(off, n, f"{n}s")[0]
            return f"_cstr({e})" if _is_c_char(t.type) else e
        if isinstance(elem, (T.Int, T.Pointer, T.Float)) and not (
                isinstance(elem, T.Int) and (elem.is_bool or elem.size == 16 or elem.bits != elem.size * 8)) \
                and not (isinstance(elem, T.Float) and elem.size not in _FLOAT_FMT):
            if isinstance(elem, T.Int):
                fmt = _INT_FMT[(elem.size, elem.signed)]
                esize = elem.size
            elif isinstance(elem, T.Float):
                fmt, esize = _FLOAT_FMT[elem.size], elem.size
            else:
                fmt, esize = "Q", 8
            e, si, idx = self.leaf(off, esize * n, f"{n}{fmt}", n)
            return f"list(t{si}[{idx}:{idx + n}])"
        # Composite elements: one call of the element's decoder per element.
        ec = codec_for(t.type)
        es = ec.size
        fn = self.name(ec._decode_from, "D")
        return f"[{fn}(buf, __BASE__ + {off} + _j * {es}) for _j in range({n})]"

    def field_expr(self, f: "_Field", base: int, depth: int) -> str:
        off_bits = base * 8 + f.bit_offset
        if f.bitfield_size:
            return self.bits(f.type, off_bits, f.bitfield_size, 0)
        if off_bits % 8:
            raise BTFError(f"member {f.name} is not byte aligned")
        return self.value(f.type, off_bits // 8, depth + 1)

    def bits(self, t: T.Type, bit_off: int, nbits: int, _: int) -> str:
        base = T.underlying(t)
        first = bit_off // 8
        last = (bit_off + nbits - 1) // 8
        length = last - first + 1
        # Neighbouring bitfields usually share their bytes: read them once.
        key = (first, length, "s")
        if key not in self.shared:
            self.shared[key] = self.leaf(first, length, f"{length}s")
        e = self.shared[key][0]
        if self.order == "little":
            shift = bit_off - first * 8
        else:
            shift = length * 8 - (bit_off - first * 8) - nbits
        mask = (1 << nbits) - 1
        raw = f"((_from_bytes({e}, {self.order!r}) >> {shift}) & {mask})"
        signed = (isinstance(base, T.Int) and base.signed) or (isinstance(base, T.Enum) and base.signed)
        if signed:
            raw = f"_sx({raw}, {nbits})"
        if isinstance(base, T.Int) and base.is_bool:
            return f"bool({raw})"
        if isinstance(base, T.Enum):
            m = self.name(_enum_members(self.codec, base), "M")
            return f"(lambda _v: {m}.get(_v, _v))({raw})"
        return raw


class _Field:
    __slots__ = ("name", "type", "bit_offset", "bitfield_size", "in_union", "type_name")

    def __init__(self, name: str, type: T.Type, bit_offset: int, bitfield_size: int,
                 in_union: bool) -> None:
        self.name = name
        self.type = type
        self.bit_offset = bit_offset
        self.bitfield_size = bitfield_size
        self.in_union = in_union
        self.type_name = _type_name(type)


def _flatten(t: T.Type, depth: int = 0) -> List[_Field]:
    """Fields of a struct/union/datasec, anonymous members flattened (C semantics)."""
    if depth > _MAX_DEPTH:
        raise BTFError("anonymous member nesting too deep")
    fields: List[_Field] = []
    if isinstance(t, T.Datasec):
        for v in t.vars:
            var = v.type
            if isinstance(var, T.Var):
                fields.append(_Field(var.name, var.type, v.offset * 8, 0, False))
        return fields
    assert isinstance(t, (T.Struct, T.Union))
    union = isinstance(t, T.Union)
    for m in t.members:
        if not m.name and not m.bitfield_size:
            inner = T.underlying(m.type)
            if isinstance(inner, (T.Struct, T.Union)):
                for f in _flatten(inner, depth + 1):
                    fields.append(_Field(f.name, f.type, m.offset + f.bit_offset, f.bitfield_size,
                                         f.in_union or union or isinstance(inner, T.Union)))
                continue
        if not m.name:
            continue  # unnamed padding bitfield
        fields.append(_Field(m.name, m.type, m.offset, m.bitfield_size, union))
    seen = set()
    unique = []
    for f in fields:
        if f.name not in seen:
            seen.add(f.name)
            unique.append(f)
    return unique


def _default(f: _Field) -> Any:
    if f.in_union:
        return None
    t = T.underlying(f.type)
    if isinstance(t, T.Int):
        return False if t.is_bool else 0
    if isinstance(t, (T.Enum, T.Pointer)):
        return 0
    if isinstance(t, T.Float):
        return 0.0 if t.size in _FLOAT_FMT else None
    return None


def _class_for(codec: Codec, t: T.Type) -> Tuple[type, List[_Field]]:
    """The generated class of struct/union/datasec ``t`` (one per type)."""
    if t is not codec._real:
        sub = codec_for(t)
        assert sub.cls is not None
        return sub.cls, sub._fields
    if codec.cls is not None:
        return codec.cls, codec._fields
    fields = _flatten(t)
    bound = _bound_class(t)
    if bound is not None:
        codec.cls = bound
        codec._fields = fields
        bound._codec = codec  # type: ignore[attr-defined]
        return bound, fields
    params = []
    body = []
    ns: Dict[str, Any] = {}
    used = {"self"}  # parameter names must differ from each other and from self
    for n, f in enumerate(fields):
        pname = f.name if f.name.isidentifier() and not keyword.iskeyword(f.name) else f"{f.name}_"
        if not pname.isidentifier() or keyword.iskeyword(pname) or pname in used:
            pname = f"_f{n}"
        while pname in used:
            pname += "_"
        used.add(pname)
        d = _default(f)
        dname = f"_d{n}"
        ns[dname] = d
        params.append(f"{pname}={dname}")
        if pname == f.name:
            body.append(f"    self.{f.name} = {pname}")
        else:
            body.append(f"    setattr(self, {f.name!r}, {pname})")
    src = f"def __init__(self, {', '.join(params)}):\n" + ("\n".join(body) or "    pass")
    exec(src, ns)
    cname = t.name if t.name and t.name.isidentifier() else f"anon_{t.kind}"
    names = [f.name for f in fields]
    slots: Dict[str, Any] = {}
    if all(n.isidentifier() and not _mangled(n) for n in names) and len(set(names)) == len(names):
        # Slots: smaller, faster to fill, and a misspelt field is an error.
        slots["__slots__"] = tuple(names)
    cls = type(cname, (StructValue,), {
        **slots,
        "__init__": ns["__init__"],
        "_fields": tuple(f.name for f in fields),
        "_codec": codec,
        "__module__": __name__,
        "__qualname__": cname,
        "__doc__": f"Value of BTF {t.kind} {t.name or '(anonymous)'} ({codec.size} bytes).",
    })
    codec.cls = cls
    codec._fields = fields
    return cls, fields


def _mangled(name: str) -> bool:
    """Whether a class would store slot ``name`` under another name
    (``__pad`` becomes ``_cls__pad``, out of reach of ``o.__pad = ...``)."""
    return name.startswith("__") and not name.endswith("__")


def _enum_members(codec: Codec, t: T.Enum) -> Dict[int, Any]:
    """value -> IntEnum member for enum ``t``; the IntEnum is made once per type."""
    ec = codec if codec._real is t else codec_for(t)
    bound: Any = _bound_class(t) if ec.enum is None else None
    if bound is not None:
        ec.enum = bound
        ec._members = {m.value: m for m in bound}
    if ec.enum is None:
        names = []
        seen = set()
        for v in t.values:
            # Underscore names are private/sunder in IntEnum; they are
            # kernel sentinels (__MAX_...) and decode as plain ints.
            if v.name.isidentifier() and not v.name.startswith("_") and v.name not in seen:
                seen.add(v.name)
                names.append((v.name, v.value))
        cname = t.name if t.name and t.name.isidentifier() else "anon_enum"
        if names:
            # mypy's enum plugin models only the functional API with a literal name.
            members: _PyType[enum.IntEnum] = enum.IntEnum(cname, names, module=__name__)  # type: ignore[misc]
            ec.enum = members
            ec._members = {m.value: m for m in members}
        else:
            ec.enum = int
            ec._members = {}
    return ec._members


# -- encoding ------------------------------------------------------------------

Writer = Callable[[bytearray, int, Any, str], None]


def _as_raw(value: Any, size: int) -> Optional[bytes]:
    """Bytes of a bytes-like value of exactly ``size`` bytes, else None."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value) if len(value) == size else None
    if isinstance(value, (int, float, str, list, tuple, dict, StructValue)) or value is None:
        return None
    try:
        mv = memoryview(value)
    except TypeError:
        if hasattr(value, "__bytes__"):
            b = bytes(value)
            return b if len(b) == size else None
        return None
    b = mv.cast("B").tobytes() if mv.ndim else mv.tobytes()
    return b if len(b) == size else None


def _bad_size(path: str, value: Any, size: int) -> ValueError:
    n = len(value) if hasattr(value, "__len__") else "?"
    return ValueError(f"{path}: expected {size} bytes, got {n}")


def _make_writer(codec: Codec, t: T.Type, tname: str, depth: int) -> Writer:
    if depth > _MAX_DEPTH:
        raise BTFError("type nesting too deep for a codec")
    t = T.underlying(t)
    prefix = codec._prefix
    size = T.sizeof(t)

    def raw_or(fn: Writer) -> Writer:
        def write(buf: bytearray, off: int, value: Any, path: str) -> None:
            if not isinstance(value, (int, float, str, list, tuple, dict, StructValue)) and value is not None:
                raw = _as_raw(value, size)
                if raw is None:
                    if isinstance(value, (bytes, bytearray, memoryview)) or hasattr(value, "__bytes__"):
                        raise _bad_size(path, value, size)
                    raise TypeError(f"{path}: cannot encode {type(value).__name__} as {tname}")
                buf[off:off + size] = raw
                return
            fn(buf, off, value, path)
        return write

    _check_scalar(t)
    if isinstance(t, (T.Int, T.Enum, T.Pointer)):
        if isinstance(t, T.Pointer):
            signed, nbytes, is_bool = False, 8, False
        else:
            signed, nbytes = t.signed, t.size
            is_bool = isinstance(t, T.Int) and t.is_bool
        lo, hi = (-(1 << (nbytes * 8 - 1)), (1 << (nbytes * 8 - 1)) - 1) if signed else (0, (1 << nbytes * 8) - 1)
        names: Dict[str, int] = {v.name: v.value for v in t.values} if isinstance(t, T.Enum) else {}
        order = codec.byte_order

        def write_int(buf: bytearray, off: int, value: Any, path: str) -> None:
            if value is None and isinstance(t, T.Pointer):
                value = 0
            if isinstance(value, str) and names:
                if value not in names:
                    raise ValueError(f"{path}: {value!r} is not an enumerator of {tname}")
                value = names[value]
            if not isinstance(value, int):
                raise TypeError(f"{path}: expected an integer for {tname}, got {type(value).__name__}")
            if is_bool and value not in (0, 1):
                raise ValueError(f"{path}: {value} is not a bool")
            if not lo <= value <= hi:
                raise ValueError(f"{path}: {value} does not fit in {tname}")
            buf[off:off + nbytes] = int(value).to_bytes(nbytes, order, signed=signed)
        return raw_or(write_int)

    if isinstance(t, T.Float):
        fmt = _FLOAT_FMT.get(t.size)
        if fmt is None:
            def write_ld(buf: bytearray, off: int, value: Any, path: str) -> None:
                raise TypeError(f"{path}: {tname} takes {size} raw bytes")
            return raw_or(write_ld)
        fs = struct.Struct(prefix + fmt)

        def write_float(buf: bytearray, off: int, value: Any, path: str) -> None:
            if not isinstance(value, (int, float)):
                raise TypeError(f"{path}: expected a number for {tname}, got {type(value).__name__}")
            try:
                fs.pack_into(buf, off, value)
            except (struct.error, OverflowError) as e:
                raise ValueError(f"{path}: {value} does not fit in {tname}: {e}") from None
        return raw_or(write_float)

    if isinstance(t, T.Array):
        elem = T.underlying(t.type)
        n = t.nelems
        if isinstance(elem, T.Int) and _is_byte_int(elem):  # (isinstance for checkers: elem.signed below)
            def write_bytes(buf: bytearray, off: int, value: Any, path: str) -> None:
                if isinstance(value, str):
                    value = value.encode("utf-8")
                if isinstance(value, (list, tuple)):
                    try:
                        value = bytes(v & 0xFF if elem.signed and v < 0 and v >= -128 else v for v in value)
                    except (ValueError, TypeError):
                        raise ValueError(f"{path}: not a list of bytes for {tname}") from None
                if isinstance(value, (bytearray, memoryview)):
                    value = bytes(value)
                if not isinstance(value, bytes):
                    raw = _as_raw(value, n)
                    if raw is None:
                        raise TypeError(f"{path}: expected bytes or str for {tname}, got {type(value).__name__}")
                    value = raw
                if len(value) > n:
                    raise ValueError(f"{path}: {len(value)} bytes do not fit in {tname}")
                buf[off:off + len(value)] = value
            return write_bytes
        esize = T.sizeof(t.type)
        ew = _make_writer(codec, t.type, _type_name(t.type), depth + 1)

        def write_array(buf: bytearray, off: int, value: Any, path: str) -> None:
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{path}: expected a list for {tname}, got {type(value).__name__}")
            if len(value) != n:
                raise ValueError(f"{path}: expected {n} elements, got {len(value)}")
            for j, v in enumerate(value):
                ew(buf, off + j * esize, v, f"{path}[{j}]")
        return raw_or(write_array)

    if isinstance(t, (T.Struct, T.Union, T.Datasec)):
        fields = _flatten(t)
        by_name = {f.name: f for f in fields}
        plan: List[Tuple[_Field, Writer]] = []
        for f in fields:
            if f.bitfield_size:
                plan.append((f, _bit_writer(codec, f)))
            else:
                plan.append((f, _make_writer(codec, f.type, f.type_name, depth + 1)))
        label = f"{t.kind} {t.name}" if t.name else f"anonymous {t.kind}"

        def write_struct(buf: bytearray, off: int, value: Any, path: str) -> None:
            if isinstance(value, dict):
                for k in value:
                    if k not in by_name:
                        raise ValueError(f"{path}: {label} has no field {k!r}")
                get = value.get
            elif isinstance(value, StructValue):
                if set(value._fields) != set(by_name):
                    raise TypeError(f"{path}: {type(value).__name__} is not a {label}")
                def get(k: str, _v: Any = value) -> Any:
                    return getattr(_v, k)
            else:
                raise TypeError(f"{path}: expected a dict or struct value for {label}, "
                                f"got {type(value).__name__}")
            for f, w in plan:
                v = get(f.name)
                if v is None:
                    continue
                fpath = f"{path}.{f.name}"
                if f.bitfield_size:
                    w(buf, off, v, fpath)
                else:
                    w(buf, off + f.bit_offset // 8, v, fpath)
        return raw_or(write_struct)

    raise TypeError(f"no value codec for {t.kind} {t.name or '(anon)'}")


def _bit_writer(codec: Codec, f: _Field) -> Writer:
    base = T.underlying(f.type)
    nbits = f.bitfield_size
    signed = isinstance(base, (T.Int, T.Enum)) and base.signed
    lo, hi = (-(1 << (nbits - 1)), (1 << (nbits - 1)) - 1) if signed else (0, (1 << nbits) - 1)
    first = f.bit_offset // 8
    last = (f.bit_offset + nbits - 1) // 8
    length = last - first + 1
    order = codec.byte_order
    if order == "little":
        shift = f.bit_offset - first * 8
    else:
        shift = length * 8 - (f.bit_offset - first * 8) - nbits
    mask = ((1 << nbits) - 1) << shift
    names = {v.name: v.value for v in base.values} if isinstance(base, T.Enum) else {}
    tname = f"{f.type_name}:{nbits}"

    def write(buf: bytearray, off: int, value: Any, path: str) -> None:
        if isinstance(value, str) and names:
            if value not in names:
                raise ValueError(f"{path}: {value!r} is not an enumerator of {tname}")
            value = names[value]
        if not isinstance(value, int):
            raise TypeError(f"{path}: expected an integer for {tname}, got {type(value).__name__}")
        if not lo <= value <= hi:
            raise ValueError(f"{path}: {value} does not fit in {tname}")
        start = off + first
        cur = int.from_bytes(buf[start:start + length], order)
        cur = (cur & ~mask) | ((value << shift) & mask)
        buf[start:start + length] = cur.to_bytes(length, order)
    return write
