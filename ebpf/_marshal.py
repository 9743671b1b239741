"""The marshaller: how keys and values become the bytes a map holds, and back.

This is the one place that knows it (cilium's ``marshalers.go`` and
``sysenc``).  :func:`encode_fixed` turns one Python value into exactly the
bytes of one slot; a :class:`Layout`, computed once per map, knows the
map's slots (sizes, per-CPU stride, BTF codecs, fd values) and gives
``Map`` both the general encoders/decoders and the precomputed pieces of
its hot path.

Accepted for a slot of ``size`` bytes, in this order:

* ``bytes``/``bytearray``/``memoryview`` of exactly ``size`` bytes (with a
  BTF codec, shorter ones too where the codec pads, e.g. ``char[16]``);
* with a BTF codec: whatever the codec takes (ints, dicts, struct values,
  lists, ``str`` for char arrays) -- see :mod:`ebpf.btf.codec`;
* ``int`` (and ``bool``) for slots of 1, 2, 4, 8 or 16 bytes, native byte
  order;
* ctypes instances and anything with ``__bytes__`` of exactly ``size`` bytes.

Integers are range-checked one way everywhere: a slot is unsigned unless
its BTF type is a signed integer.  So ``-1`` is refused (``MarshalError``)
by maps without BTF and by maps whose BTF key is ``__u32`` alike, and
accepted by an ``int`` key; it never wraps silently to ``0xffffffff``.
Pass ``(-1).to_bytes(4, sys.byteorder, signed=True)`` to store that
pattern in an untyped map.

Errors: :class:`~ebpf.errors.MarshalTypeError` (a ``MarshalError`` and a
``TypeError``) for values of a type the slot cannot take -- ``None``,
``str``, ``float``, ... -- and :class:`~ebpf.errors.MarshalError` (a
``ValueError``) for values that do not fit.  Both are raised before any
syscall, so the kernel never reads past a Python buffer.

Per-CPU maps take and return one value per possible CPU, each padded to 8
bytes.  Map-in-map and program-array values are written as the fd of a
``Map``/``Program`` (or an int fd) and read back as the kernel's id, which
the layout turns into an object through the ``open_id`` callable the map
gives it (this module imports nothing of the objects layer).

Adding an encoding: teach :func:`encode_fixed` (one slot) or the
``Layout`` methods (whole keys/values, batches) about it; ``Map`` needs no
change unless the new kind deserves a hot-path shortcut.
"""

from __future__ import annotations

import array
import ctypes
import functools
import itertools
import keyword
import struct
import sys
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

from .errors import MarshalError, MarshalTypeError
from .types import MapType

__all__ = [
    "Layout",
    "encode_fixed",
    "BulkDecoder",
    "bulk_decoder",
    "SampleDecoder",
    "value_codec",
    "PER_CPU_TYPES",
    "MAP_IN_MAP_TYPES",
    "FD_VALUE_TYPES",
    "OUT_INT",
    "OUT_RAW",
    "OUT_DECODE",
]

_BYTEORDER = sys.byteorder
# ctypes instances: a slot's bytes are theirs (Map passes them by reference).
CTYPES = (ctypes._SimpleCData, ctypes.Structure, ctypes.Union, ctypes.Array)
_CTYPES = CTYPES
_BYTES_LIKE = (bytes, bytearray, memoryview)
StructError = struct.error

PER_CPU_TYPES = frozenset(
    {MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH, MapType.PERCPU_CGROUP_STORAGE}
)
MAP_IN_MAP_TYPES = frozenset({MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS})
# Values written as fds but read back as ids of other kernel objects.
FD_VALUE_TYPES = frozenset(
    {MapType.PROG_ARRAY, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS, MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY}
)

# How a lookup's value buffer becomes the returned value (Layout.value_out).
OUT_INT = 0  # a one-element ctypes int array: vb[0]
OUT_RAW = 1  # bytes as they are: vb.raw
OUT_DECODE = 2  # Layout.decode_value(vb.raw)

_INT_SIZES = (1, 2, 4, 8)
# struct formats of native integers, by (size, signed); '=' is standard
# size in native order, so these are exact on every platform.
_PACK_FMT = {(1, False): "=B", (1, True): "=b", (2, False): "=H", (2, True): "=h",
             (4, False): "=I", (4, True): "=i", (8, False): "=Q", (8, True): "=q"}
# memoryview.cast formats (native sizes; checked below).  Any: typeshed
# wants literals there.
_CAST_FMT: Dict[Tuple[int, bool], Any] = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
             (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}
_CT_INT = {(1, False): ctypes.c_uint8, (1, True): ctypes.c_int8, (2, False): ctypes.c_uint16,
           (2, True): ctypes.c_int16, (4, False): ctypes.c_uint32, (4, True): ctypes.c_int32,
           (8, False): ctypes.c_uint64, (8, True): ctypes.c_int64}
# array typecodes of exactly each size (a batch of ints is one array() call).
_ARRAY_CODE: Dict[Tuple[int, bool], str] = {}
for _code in "bBhHiIlLqQ":
    _ARRAY_CODE.setdefault((array.array(_code).itemsize, _code.islower()), _code)
del _code


def _int_range(size: int, signed: bool) -> str:
    bits = size * 8
    if signed:
        return f"{-(1 << (bits - 1))}..{(1 << (bits - 1)) - 1}"
    return f"0..{(1 << bits) - 1}"


def _bad_type(what: str, value: Any, wants: str) -> MarshalTypeError:
    return MarshalTypeError(f"{what}: cannot encode {type(value).__name__} {_show(value)}; {wants}")


def _show(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 64 else r[:61] + "..."


def encode_fixed(value: Any, size: int, codec: Optional[Any] = None, what: str = "value",
                 signed: bool = False) -> bytes:
    """Encode ``value`` to exactly ``size`` bytes, or raise MarshalError
    (MarshalTypeError for a value of the wrong type).

    ``codec`` is a BTF codec for the slot, if it has one; without one an
    int is unsigned unless ``signed`` says otherwise.
    """
    if isinstance(value, _BYTES_LIKE) and (codec is None or len(value) == size):
        raw = bytes(value)
    elif codec is not None and (
        isinstance(value, _BYTES_LIKE)  # a short char[N] is padded by the codec
        or (not isinstance(value, _CTYPES) and not hasattr(value, "__bytes__"))
    ):
        try:
            raw = codec.encode(value, path=what)
        except MarshalError:
            raise
        except TypeError as exc:
            raise MarshalTypeError(str(exc)) from None
        except ValueError as exc:
            # One error type for "does not fit", whether BTF said so or we did.
            raise MarshalError(str(exc)) from None
    elif isinstance(value, int):  # bool included: True is 1
        if size not in (1, 2, 4, 8, 16):
            raise MarshalTypeError(f"{what}: cannot encode an int into {size} bytes; pass bytes")
        try:
            raw = int(value).to_bytes(size, _BYTEORDER, signed=signed)
        except OverflowError:
            hint = "" if signed or value >= 0 else " (the slot is unsigned: pass bytes for another bit pattern)"
            bounds = _int_range(size, signed)
            raise MarshalError(f"{what}: {value} does not fit in {size} bytes ({bounds}){hint}") from None
    elif isinstance(value, _CTYPES):
        raw = bytes(memoryview(value).cast("B"))
    elif hasattr(value, "__bytes__") and not isinstance(value, str):
        raw = bytes(value)
    else:
        raise _bad_type(what, value, f"pass bytes, an int or a ctypes object of {size} bytes")
    if len(raw) != size:
        raise MarshalError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


def _codec(btf_type: Any) -> Any:
    """The BTF codec of ``btf_type``, or None (no type, or no value codec)."""
    if btf_type is None:
        return None
    try:
        from .btf import codec_for

        return codec_for(btf_type)
    except Exception:
        return None


def _value_type(btf_type: Any) -> Any:
    """The BTF type values of ``btf_type`` have (a variable's: its type's),
    or None where there is no value codec for it (no BTF, a function, a
    forward declaration...), decided without building the codec."""
    if btf_type is None:
        return None
    try:
        from .btf import types as T

        real = T.underlying(btf_type)
        if isinstance(real, T.Var):
            real = T.underlying(real.type)
        if isinstance(real, (T.Void, T.Func, T.FuncProto, T.Fwd, T.DeclTag)):
            return None
        return real
    except Exception:
        return None


def _plain_int(real: Any, size: int) -> Optional[bool]:
    """Signedness if values of ``real`` (a :func:`_value_type`) are plain
    native-endian integers of ``size`` bytes (not bool, not a bitfield, not
    an enum), else None."""
    if real is None or size not in _INT_SIZES:
        return None
    from .btf import types as T

    if not (type(real) is T.Int and real.size == size and real.bits == size * 8
            and not real.offset and not real.is_bool):
        return None
    spec = getattr(real, "_spec", None)
    if (spec.byte_order if spec is not None else "little") != _BYTEORDER:
        return None
    return bool(real.signed)


def _signed_slot(real: Any, plain_int: Optional[bool], size: int) -> Optional[bool]:
    """Signedness of an int slot of values of ``real`` (a :func:`_value_type`;
    ``plain_int`` is its :func:`_plain_int`): from BTF where it is a plain
    integer, unsigned where there is no BTF at all; None where ints go
    through the codec (enums, bools, structs...)."""
    if real is None:
        return False if size in _INT_SIZES else None
    return plain_int


@functools.lru_cache(maxsize=8)
def _splitter(size: int, count: int) -> "struct.Struct":
    """Cuts ``count`` consecutive ``size``-byte items into a tuple of bytes
    in one C call (4x faster than slicing in a comprehension)."""
    return struct.Struct(f"{size}s" * count)


def _split(raw: bytes, size: int, n: int) -> Sequence[bytes]:
    """The first ``n`` ``size``-byte items of ``raw`` as a tuple of bytes.
    The whole buffer is cut (its size is fixed per map, so the Struct is
    built once; hash batches end at bucket boundaries, so n varies)."""
    parts = _splitter(size, len(raw) // size).unpack_from(raw)
    return parts if n == len(parts) else parts[:n]


class Layout:
    """How the keys and values of one map become bytes and back.

    Built once per map from its type, sizes and BTF.  The attributes
    ``key_len``/``pack_key``/``value_len``/``pack_value``/``value_buffer``/
    ``value_out`` are the precomputed pieces of ``Map``'s hot path; the
    methods are the general (checked, slower) paths every operation falls
    back to.
    """

    def __init__(self, name: str, map_type: Any, key_size: int, value_size: int,
                 key_type: Any = None, value_type: Any = None, *, ncpus: int = 1,
                 open_id: Optional[Callable[[int], Any]] = None) -> None:
        self.name = name
        self.type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.per_cpu = map_type in PER_CPU_TYPES
        self.fd_values = map_type in FD_VALUE_TYPES
        self.ncpus = ncpus if self.per_cpu else 1
        self.stride = (value_size + 7) & ~7 if self.per_cpu else value_size
        self.vbuf_size = self.stride * self.ncpus
        # The codecs (and the batch decoders built on them) are compiled on
        # first use: creating a map must not pay for decoding it.
        self._key_btf = key_type
        self._value_btf = value_type
        self._open_id = open_id
        self._key_what = f"map {name}: key"
        self._value_what = f"map {name}: value"

        # Keys: exactly key_size bytes go to the kernel as they are (-1:
        # never, for keyless maps, which must reject b"").  Plain ints are
        # one struct pack; everything else takes key().
        # Each type is resolved once here (a map is created per load).
        key_real, value_real = _value_type(key_type), _value_type(value_type)
        key_int, value_int = _plain_int(key_real, key_size), _plain_int(value_real, value_size)
        self.key_len = key_size or -1
        self.key_signed = _signed_slot(key_real, key_int, key_size) if key_size else None
        self.pack_key: Callable[[Any], Any] = (
            struct.Struct(_PACK_FMT[(key_size, self.key_signed)]).pack if self.key_signed is not None else self.key
        )
        # Values: bytes of exactly the buffer size pass on every map type.
        self.value_len = self.vbuf_size
        special = self.per_cpu or self.fd_values
        if self.fd_values:
            vsigned: Optional[bool] = False if value_size in _INT_SIZES else None  # an fd number
        else:
            vsigned = None if special else _signed_slot(value_real, value_int, value_size)
        self.value_signed = vsigned
        self.pack_value: Callable[[Any], Any] = (
            struct.Struct(_PACK_FMT[(value_size, vsigned)]).pack if vsigned is not None else self.value
        )
        # What a lookup returns: BTF ints straight out of a one-element
        # ctypes int array (cheaper than .raw plus int.from_bytes), untyped
        # values as bytes, everything else decoded.
        self.value_int = None if special else value_int  # None without BTF too
        if self.value_int is not None:
            self.value_out = OUT_INT
            self.value_buffer: Any = _CT_INT[(value_size, self.value_int)] * 1
        else:
            self.value_out = OUT_RAW if not special and value_real is None else OUT_DECODE
            self.value_buffer = ctypes.c_char * max(self.vbuf_size, 1)
        self.key_int = key_int
        self._special = special

    @functools.cached_property
    def key_codec(self) -> Any:
        """The BTF codec of the keys, or None."""
        return _codec(self._key_btf)

    @functools.cached_property
    def value_codec(self) -> Any:
        """The BTF codec of the values (of one CPU's value), or None."""
        return _codec(self._value_btf)

    @functools.cached_property
    def _key_bulk(self) -> Optional["BulkDecoder"]:
        # Batches of flat struct keys: one unpack per batch.
        return bulk_decoder(self.key_codec) if self.key_codec is not None else None

    @functools.cached_property
    def _value_bulk(self) -> Optional["BulkDecoder"]:
        if self.value_codec is None or self._special or self.value_int is not None:
            return None
        return bulk_decoder(self.value_codec)

    # -- one key, one value --------------------------------------------------

    def key(self, key: Any) -> Optional[bytes]:
        """The bytes of ``key`` (None for keyless maps, which take None)."""
        if self.key_size == 0:
            if key is not None:
                t = self.type.name if isinstance(self.type, MapType) else self.type
                raise MarshalTypeError(f"map {self.name}: {t} maps take no key (pass None)")
            return None
        if key is None:
            raise MarshalTypeError(f"{self._key_what}: None is not a key (this map takes {self.key_size}-byte keys)")
        return encode_fixed(key, self.key_size, self.key_codec, self._key_what, bool(self.key_signed))

    def value(self, value: Any) -> bytes:
        """The bytes of ``value`` (for per-CPU maps: all CPUs, padded)."""
        if self.fd_values:
            return self._fd_value(value)
        if self.per_cpu:
            if isinstance(value, _BYTES_LIKE) and len(value) == self.vbuf_size:
                return bytes(value)
            if not isinstance(value, (list, tuple)):
                raise MarshalTypeError(
                    f"map {self.name}: a per-CPU map takes a list of {self.ncpus} values (one per possible CPU), "
                    f"not {type(value).__name__}"
                )
            if len(value) != self.ncpus:
                raise MarshalError(f"map {self.name}: expected {self.ncpus} per-CPU values, got {len(value)}")
            pad = bytes(self.stride - self.value_size)
            size, codec, signed = self.value_size, self.value_codec, bool(self.value_signed)
            return b"".join(
                self._slot(v, size, codec, f"{self._value_what}[{i}]", signed) + pad for i, v in enumerate(value)
            )
        return self._slot(value, self.value_size, self.value_codec, self._value_what, bool(self.value_signed))

    @staticmethod
    def _slot(value: Any, size: int, codec: Any, what: str, signed: bool) -> bytes:
        if value is None:
            raise MarshalTypeError(f"{what}: None is not a value")
        return encode_fixed(value, size, codec, what, signed)

    def _fd_value(self, value: Any) -> bytes:
        fd = getattr(value, "fd", value)  # a Map or Program (ClosedError when closed), or an fd
        size = self.value_size
        if isinstance(fd, _BYTES_LIKE) and len(fd) == size:
            return bytes(fd)
        if type(fd) is bool or not isinstance(fd, int):
            raise MarshalTypeError(
                f"{self._value_what}: values are maps/programs (or their fds), not {type(value).__name__}"
            )
        try:
            return int(fd).to_bytes(size, _BYTEORDER)
        except OverflowError:
            raise MarshalError(f"{self._value_what}: {fd} is not a file descriptor") from None

    def decode_key(self, raw: bytes) -> Any:
        c = self.key_codec
        return c.decode(raw) if c is not None else raw

    def decode_value(self, raw: bytes) -> Any:
        if self.per_cpu:
            s, n, c = self.stride, self.value_size, self.value_codec
            parts = [raw[i * s: i * s + n] for i in range(self.ncpus)]
            return [c.decode(p) for p in parts] if c is not None else parts
        if self.fd_values:
            obj_id = int.from_bytes(raw[:4], _BYTEORDER)
            return self._open_id(obj_id) if self._open_id is not None else obj_id
        c = self.value_codec
        return c.decode(raw) if c is not None else raw

    # -- batches -------------------------------------------------------------

    def keys_blob(self, keys: Sequence[Any]) -> bytes:
        """All ``keys`` packed back to back, as the batch calls take them."""
        return self._blob(keys, self.key_size, self.key_signed, self.key_len, self.key, True)

    def values_blob(self, values: Sequence[Any]) -> bytes:
        """All ``values`` packed back to back (per-CPU: each value all CPUs)."""
        return self._blob(values, self.value_size, self.value_signed, self.value_len, self.value, False)

    @staticmethod
    def _blob(items: Sequence[Any], size: int, signed: Optional[bool], exact: int,
              one: Callable[[Any], Any], keys: bool) -> bytes:
        if not items:
            return b""
        first = type(items[0])
        if first is int and signed is not None:
            # One array() call; it refuses floats, bytes and out-of-range
            # ints, and then the general path names the culprit.
            code = _ARRAY_CODE.get((size, signed))
            if code is not None:
                try:
                    return array.array(code, items).tobytes()
                except (TypeError, OverflowError):
                    pass
        elif first is not int and first is not bool:
            # Bytes-like items all of the exact size: one join.  len() and
            # join() refuse what is not bytes-like; a buffer whose len() is
            # not its size in bytes (a memoryview of wider items) makes the
            # total come out longer, so every item is exactly right if the
            # lengths and the total are.
            try:
                if set(map(len, items)) == {exact}:
                    blob = b"".join(items)
                    if len(blob) == exact * len(items):
                        return blob
            except TypeError:
                pass
        return b"".join(map(one, items))

    def decode_keys(self, raw: bytes, n: int) -> Sequence[Any]:
        """The first ``n`` keys packed in ``raw``, in as few C calls as possible."""
        ks = self.key_size
        if self.key_int is not None:
            return memoryview(raw).cast(_CAST_FMT[(ks, self.key_int)])[:n].tolist()
        if self._key_bulk is not None:
            return list(self._key_bulk.decode(raw, 0, ks, n))
        parts = _split(raw, ks, n)
        c = self.key_codec
        return parts if c is None else list(map(c.decode, parts))

    def decode_values(self, raw: bytes, n: int) -> Sequence[Any]:
        vs = self.vbuf_size
        if self.value_int is not None:
            return memoryview(raw).cast(_CAST_FMT[(vs, self.value_int)])[:n].tolist()
        if self._value_bulk is not None:
            return list(self._value_bulk.decode(raw, 0, vs, n))
        parts = _split(raw, vs, n)
        return parts if self.value_out == OUT_RAW else list(map(self.decode_value, parts))


# -- many values at once ----------------------------------------------------------
#
# Ring buffer records and map batches hold many values of one type side by
# side.  Decoding them one codec call each costs a Python call and a struct
# unpack per value; for the common flat struct (plain integer and float
# fields) one unpack covers a whole run and the values are built straight
# from its columns -- the codec's own rule for its classes (a slotted class
# is filled field by field, another is called with the fields in order, as
# ebpf.btf.codec.bind_class promises), checked against the codec once.

_FLAT_FMT = {1: "b", 2: "h", 4: "i", 8: "q"}
_FLAT_FLOAT = {2: "e", 4: "f", 8: "d"}


class BulkDecoder:
    """Decodes ``n`` values of one codec's type laid out ``stride`` bytes
    apart: ``decode(buf, off, stride, n)`` returns an iterable of them
    (lazy, so a consumer that drops them as it goes keeps no garbage)."""

    def __init__(self, codec: Any, fmt: str, make: Callable[..., Any], nfields: int) -> None:
        self.codec = codec
        self.size = codec.size
        self._fmt = fmt  # one value's fields, padded to the value's size
        self._make = make
        self._k = nfields
        # (stride, n) -> Struct; readers ask for power-of-two runs, maps for
        # their batch size, so a few entries serve every call.
        self._structs: Dict[Tuple[int, int], "struct.Struct"] = {}

    def _struct(self, stride: int, n: int) -> "struct.Struct":
        s = self._structs.get((stride, n))
        if s is None:
            if len(self._structs) >= 32:
                self._structs.clear()
            gap = f"{stride - self.size}x" if stride > self.size else ""
            s = struct.Struct(self.codec._prefix + (self._fmt + gap) * (n - 1) + self._fmt)
            self._structs[(stride, n)] = s
        return s

    def decode(self, buf: Any, off: int, stride: int, n: int) -> Iterable[Any]:
        if n <= 0:
            return ()
        t = self._struct(stride, n).unpack_from(buf, off)
        k = self._k
        return map(self._make, *(t[i::k] for i in range(k)))


def bulk_decoder(codec: Any) -> Optional[BulkDecoder]:
    """A :class:`BulkDecoder` for ``codec``'s type if it is a flat struct
    of plain numbers (no bitfields, enums, arrays, nested structs or
    unions), else None (decode one value at a time then)."""
    try:
        from .btf import codec as C
        from .btf import types as T
    except Exception:  # pragma: no cover - btf is part of the package
        return None
    try:
        real = T.underlying(codec.type)
        if not isinstance(real, T.Struct) or getattr(codec, "cls", None) is None:
            return None
        cls = codec.cls
        fields = C.fields(real)
        if not fields or tuple(f.name for f in fields) != tuple(getattr(cls, "_fields", ())):
            return None
        fmt, pos = [], 0
        for f in fields:
            ft = T.underlying(f.type)
            if f.bitfield_size or f.in_union or f.bit_offset % 8:
                return None
            off = f.bit_offset // 8
            if isinstance(ft, T.Int) and ft.size in _FLAT_FMT and ft.bits == ft.size * 8 and not ft.offset:
                if ft.is_bool:
                    if ft.size != 1:
                        return None
                    code, size = "?", 1
                else:
                    code = _FLAT_FMT[ft.size]
                    code, size = (code if ft.signed else code.upper()), ft.size
            elif isinstance(ft, T.Float) and ft.size in _FLAT_FLOAT:
                code, size = _FLAT_FLOAT[ft.size], ft.size
            elif isinstance(ft, T.Pointer):
                code, size = "Q", 8
            else:
                return None
            if off < pos:
                return None
            if off > pos:
                fmt.append(f"{off - pos}x")
            fmt.append(code)
            pos = off + size
        if pos > codec.size:
            return None
        if pos < codec.size:
            fmt.append(f"{codec.size - pos}x")
        names = [f.name for f in fields]
        if "__slots__" in cls.__dict__ and all(n.isidentifier() and not keyword.iskeyword(n)
                                               and not (n.startswith("__") and not n.endswith("__")) for n in names):
            args = ", ".join(f"_a{i}" for i in range(len(names)))
            body = "".join(f"    o.{n} = _a{i}\n" for i, n in enumerate(names))
            ns: Dict[str, Any] = {"_new": object.__new__, "_C": cls}
            exec(f"def make({args}):\n    o = _new(_C)\n{body}    return o\n", ns)
            make = ns["make"]
        else:
            make = cls
        bulk = BulkDecoder(codec, "".join(fmt), make, len(names))
        # The same values as the codec's, or no shortcut at all.
        # (repr: a NaN field is not equal to itself)
        probe = bytes((i * 37 + 11) & 0xFF for i in range(codec.size)) * 2
        if repr(list(bulk.decode(probe, 0, codec.size, 2))) != repr([codec.decode(probe[:codec.size])] * 2):
            return None
        return bulk
    except Exception:
        return None


def value_codec(value_type: Any) -> Any:
    """A decoder (``.decode(bytes)``, ``.size``) for ``value_type``: a BTF
    type (through :func:`ebpf.btf.codec_for`) or an object that already has
    ``decode`` and ``size`` (a codec).  None stays None."""
    if value_type is None:
        return None
    if hasattr(value_type, "decode") and hasattr(value_type, "size"):
        return value_type
    from .btf import codec_for
    from .btf import types as T

    if not isinstance(value_type, T.Type):
        raise TypeError(f"value_type must be a BTF type (ebpf.btf) or a codec, not {type(value_type).__name__}")
    return codec_for(value_type)


class SampleDecoder:
    """How the readers turn samples (ring buffer and perf records) into
    values of one type: whole runs of equal-length records at once where
    the type allows (:func:`bulk_decoder`), else one codec call each.
    A sample shorter than the type decodes as None; a longer one by its
    leading bytes."""

    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self.size = codec.size
        self._bulk = bulk_decoder(codec) if hasattr(codec, "_prefix") else None

    def many(self, length: int, samples: Sequence[bytes], buf: Any = None, off: int = 0,
             stride: int = 0) -> Iterable[Any]:
        """Values of ``samples``, all ``length`` bytes long.  When the caller
        also gives where they lie (``buf``, the first one's offset ``off``,
        ``stride`` bytes apart), a flat struct is decoded in one go."""
        size = self.size
        if length < size:
            return itertools.repeat(None, len(samples))
        if self._bulk is not None and buf is not None:
            return self._bulk.decode(buf, off, stride, len(samples))
        if length == size:
            return map(self.codec.decode, samples)
        return map(self.codec.decode, [s[:size] for s in samples])

    def one(self, sample: bytes) -> Any:
        size = self.size
        n = len(sample)
        if n == size:
            return self.codec.decode(sample)
        if n > size:
            return self.codec.decode(sample[:size])
        return None


# memoryview.cast uses native sizes: the formats above must match them.
for (_size, _signed), _fmt in _CAST_FMT.items():
    assert struct.calcsize(_fmt) == _size, _fmt
del _size, _signed, _fmt
