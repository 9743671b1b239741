"""Maps: kernel key/value stores, with a dict-like Python face.

Keys and values are accepted as bytes, ints, ctypes objects, anything with
``__bytes__``, or -- where the map has BTF -- natural Python values.  Sizes are
checked before every syscall.  Per-CPU maps take and return one value per
possible CPU; map-in-map values are :class:`Map` objects and program-array
values are :class:`~ebpf.Program` objects.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import mmap
import os
import struct
import sys
import threading
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

from . import _libbpf
from ._fd import FDOwner, check_pin_path, open_pinned, pin_error
from ._values import encode_fixed
from .errors import (
    ClosedError,
    EBPFError,
    IterationAbortedError,
    KeyExistError,
    KeyNotExistError,
    MapIncompatibleError,
    MarshalError,
    NotSupportedError,
    PermissionDeniedError,
)
from .info import MapInfo, map_info
from .names import object_name
from .spec import MapSpec
from .types import MapFlags, MapType, UpdateFlags

__all__ = ["Map", "new_map", "load_pinned_map", "map_from_id"]

_ENOENT, _EEXIST, _ENOSPC, _EINVAL, _EPERM = 2, 17, 28, 22, 1
_ANY = int(UpdateFlags.ANY)  # a plain int default: no int() on the hot path
_BYTEORDER = sys.byteorder
_u64 = _libbpf.u64
_U64_ZERO = _libbpf.u64(0)

PER_CPU_TYPES = frozenset(
    {MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH, MapType.PERCPU_CGROUP_STORAGE}
)
MAP_IN_MAP_TYPES = frozenset({MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS})
# Values written as fds but read back as ids of other kernel objects.
_FD_VALUE_TYPES = frozenset(
    {MapType.PROG_ARRAY, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS, MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY}
)
_KEYLESS_TYPES = frozenset({MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER})
_BATCH_TYPES = frozenset(
    {
        MapType.HASH,
        MapType.PERCPU_HASH,
        MapType.LRU_HASH,
        MapType.LRU_PERCPU_HASH,
        MapType.ARRAY,
        MapType.PERCPU_ARRAY,
    }
)
_ARRAY_TYPES = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.PROG_ARRAY, MapType.ARRAY_OF_MAPS, MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY})
# Types whose elements cannot be read from user space at all.
_NO_LOOKUP_TYPES = frozenset({MapType.RINGBUF, MapType.USER_RINGBUF, MapType.STRUCT_OPS, MapType.PERF_EVENT_ARRAY})

def _codec(btf_type: Any) -> Any:
    if btf_type is None:
        return None
    try:
        from .btf import codec_for

        return codec_for(btf_type)
    except Exception:
        return None


# memoryview.cast formats of native integers, by (size, signed).
_INT_FMT = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
            (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}


_CT_INT = {(1, False): ctypes.c_uint8, (1, True): ctypes.c_int8, (2, False): ctypes.c_uint16,
           (2, True): ctypes.c_int16, (4, False): ctypes.c_uint32, (4, True): ctypes.c_int32,
           (8, False): ctypes.c_uint64, (8, True): ctypes.c_int64}


def _plain_int(codec: Any, size: int) -> Optional[bool]:
    """Signedness if ``codec`` decodes a plain native-endian int of ``size``
    bytes (not bool, not a bitfield, not an enum), else None."""
    if codec is None or (size, False) not in _INT_FMT or codec.byte_order != _BYTEORDER:
        return None
    try:
        from .btf import types as T

        real = T.underlying(codec.type)
    except Exception:
        return None
    if (type(real) is T.Int and real.size == size and real.bits == size * 8
            and not real.offset and not real.is_bool):
        return bool(real.signed)
    return None


@functools.lru_cache(maxsize=4)
def _splitter(size: int, count: int) -> "struct.Struct":
    """Cuts ``count`` consecutive ``size``-byte items into a tuple of bytes
    in one C call (4x faster than slicing in a comprehension)."""
    return struct.Struct(f"{size}s" * count)


class Map(FDOwner):
    """A map in the kernel.

    Create one from a :class:`MapSpec` (``Map(spec)``), get them from a
    :class:`~ebpf.Collection`, or open a pin with :func:`load_pinned_map`.
    Thread-safety: all element operations may be used from several threads
    at once; ``close()`` must not race with them.
    """

    _kind = "map"

    def __init__(self, spec: MapSpec) -> None:
        actual = spec.copy()
        if actual.type == MapType.PERF_EVENT_ARRAY:
            # cilium: a perf event array with no sizes gets 4-byte slots, one
            # per possible CPU; report what the kernel really has.
            actual.key_size = actual.key_size or 4
            actual.value_size = actual.value_size or 4
            actual.max_entries = actual.max_entries or _libbpf.num_possible_cpus()
        fd = _create(actual)
        self._setup(fd, actual)
        try:
            if spec.contents:
                self._apply_contents(spec.contents)
        except BaseException:
            self.close()
            raise

    # -- construction helpers ---------------------------------------------

    @classmethod
    def _from_fd(cls, fd: int, spec: Optional[MapSpec] = None) -> "Map":
        """Wrap an fd we own; the spec is read from the kernel if not given."""
        self = cls.__new__(cls)
        try:
            if spec is None:
                info = map_info(fd)
                spec = MapSpec(
                    name=info.name,
                    type=info.type,
                    key_size=info.key_size,
                    value_size=info.value_size,
                    max_entries=info.max_entries,
                    flags=info.flags,
                    map_extra=info.map_extra,
                )
        except BaseException:
            os.close(fd)
            raise
        self._setup(fd, spec)
        return self

    def _setup(self, fd: int, spec: MapSpec) -> None:
        FDOwner.__init__(self, fd)
        self._spec = spec
        t = spec.type
        self._type = t
        self._key_size = spec.key_size
        self._value_size = spec.value_size
        self._per_cpu = t in PER_CPU_TYPES
        self._ncpus = _libbpf.num_possible_cpus() if self._per_cpu else 1
        self._stride = (spec.value_size + 7) & ~7 if self._per_cpu else spec.value_size
        self._vbuf_size = self._stride * self._ncpus
        self._key_codec = _codec(spec.key)
        self._value_codec = _codec(spec.value)
        self._memory: Optional[mmap.mmap] = None
        # Hot-path precomputation for lookup/update/items (see bench/maps.py).
        # A fresh ctypes array per lookup is cheaper than create_string_buffer
        # and keeps calls from different threads apart (ctypes drops the GIL).
        self._vbuf_t = ctypes.c_char * self._vbuf_size
        # Keys that are exactly this many bytes go to the kernel unchanged
        # (-1: never, for keyless maps, which must reject b"").
        self._key_len = self._key_size or -1
        # Signedness when the BTF type is a plain native-endian integer of the
        # whole key/value size, else None: then an int is one to_bytes /
        # from_bytes (exactly what the codec does) and a batch is one
        # memoryview cast.
        self._key_int = _plain_int(self._key_codec, self._key_size)
        special = self._per_cpu or t in _FD_VALUE_TYPES
        self._value_int = None if special else _plain_int(self._value_codec, self._value_size)
        # Values come back as the raw bytes (no BTF, nothing to translate).
        self._raw_value = not special and self._value_codec is None
        if self._value_int is not None:
            # Read plain int values straight out of a one-element ctypes int
            # array (vb[0]): cheaper than .raw plus int.from_bytes.
            self._vbuf_t = _CT_INT[(self._value_size, self._value_int)] * 1
        # Called without argtypes (see _libbpf.unchecked): fd is an int, keys
        # and values are bytes, ctypes arrays or None, flags a c_uint64.
        self._lookup_elem = _libbpf.unchecked("bpf_map_lookup_elem")
        self._update_elem = _libbpf.unchecked("bpf_map_update_elem")

    # -- properties --------------------------------------------------------

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def type(self) -> MapType:
        return self._type

    @property
    def key_size(self) -> int:
        return self._key_size

    @property
    def value_size(self) -> int:
        return self._value_size

    @property
    def max_entries(self) -> int:
        return self._spec.max_entries

    @property
    def flags(self) -> int:
        return self._spec.flags

    @property
    def spec(self) -> MapSpec:
        """A copy of the spec this map was created from (or read from the kernel)."""
        return self._spec.copy()

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"fd={self._fd}"
        t = self._type.name if isinstance(self._type, MapType) else self._type
        return f"<Map {self.name!r} {t} key={self._key_size} value={self._value_size} max={self.max_entries} {state}>"

    # -- encoding ----------------------------------------------------------

    def _key(self, key: Any) -> Optional[bytes]:
        if self._key_size == 0:
            if key is not None:
                raise MarshalError(f"map {self.name}: {self._type.name} maps take no key (pass None)")
            return None
        return encode_fixed(key, self._key_size, self._key_codec, f"map {self.name}: key")

    def _value(self, value: Any) -> bytes:
        t = self._type
        if t in _FD_VALUE_TYPES:
            return _fd_value(value, self._value_size, self.name)
        if self._per_cpu:
            if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == self._vbuf_size:
                return bytes(value)
            if not isinstance(value, (list, tuple)):
                raise TypeError(
                    f"map {self.name}: a per-CPU map takes a list of {self._ncpus} values (one per possible CPU)"
                )
            if len(value) != self._ncpus:
                raise MarshalError(f"map {self.name}: expected {self._ncpus} per-CPU values, got {len(value)}")
            pad = bytes(self._stride - self._value_size)
            return b"".join(
                encode_fixed(v, self._value_size, self._value_codec, f"map {self.name}: value[{i}]") + pad
                for i, v in enumerate(value)
            )
        return encode_fixed(value, self._value_size, self._value_codec, f"map {self.name}: value")

    def _decode_key(self, raw: bytes) -> Any:
        c = self._key_codec
        return c.decode(raw) if c is not None else raw

    def _decode_value(self, raw: bytes) -> Any:
        t = self._type
        if self._per_cpu:
            s, n, c = self._stride, self._value_size, self._value_codec
            parts = [raw[i * s : i * s + n] for i in range(self._ncpus)]
            return [c.decode(p) for p in parts] if c is not None else parts
        if t in _FD_VALUE_TYPES:
            return _object_from_id(t, int.from_bytes(raw[:4], _BYTEORDER))
        c = self._value_codec
        return c.decode(raw) if c is not None else raw

    # -- element operations ------------------------------------------------

    def lookup(self, key: Any = None, flags: int = 0) -> Any:
        """The value stored under ``key``; :class:`KeyNotExistError` if absent.

        Queues and stacks take no key: this peeks at the next element.
        ``flags`` may be ``UpdateFlags.LOCK`` for maps with a spin lock.
        """
        # The hot path is spelled out inline: every attribute lookup and call
        # here costs a measurable share of a ~0.5 us syscall.
        fd = self._fd
        if fd < 0:
            raise ClosedError(self._kind)
        if type(key) is bytes and len(key) == self._key_len:
            kb: Optional[bytes] = key  # already exactly key_size bytes
        elif type(key) is int and self._key_int is not None:
            try:
                kb = key.to_bytes(self._key_size, _BYTEORDER, signed=self._key_int)
            except OverflowError:
                kb = self._key(key)  # raises the codec's error
        else:
            kb = self._key(key)
        vb = self._vbuf_t()
        if flags:
            ret = _libbpf.unchecked("bpf_map_lookup_elem_flags")(fd, kb, vb, _libbpf.u64(int(flags)))
        else:
            ret = self._lookup_elem(fd, kb, vb)
        if ret < 0:
            raise self._error(-ret, "lookup", key)
        if self._value_int is not None:
            return vb[0]  # vb is a one-element ctypes int array (see _setup)
        if self._raw_value:
            return vb.raw
        return self._decode_value(vb.raw)

    def get(self, key: Any = None, default: Any = None) -> Any:
        """Like :meth:`lookup` but returns ``default`` when the key is absent."""
        try:
            return self.lookup(key)
        except KeyNotExistError:
            return default

    def update(self, key: Any, value: Any, flags: int = _ANY) -> None:
        """Store ``value`` under ``key`` (for queues/stacks: push; key is None).

        ``UpdateFlags.NOEXIST`` fails with :class:`KeyExistError` on a present
        key; ``EXIST`` fails with :class:`KeyNotExistError` on an absent one.
        """
        fd = self._fd  # inline fast paths as in lookup()
        if fd < 0:
            raise ClosedError(self._kind)
        if type(key) is bytes and len(key) == self._key_len:
            kb: Optional[bytes] = key
        elif type(key) is int and self._key_int is not None:
            try:
                kb = key.to_bytes(self._key_size, _BYTEORDER, signed=self._key_int)
            except OverflowError:
                kb = self._key(key)
        else:
            kb = self._key(key)
        if type(value) is bytes and len(value) == self._vbuf_size:
            vb = value  # what _value() returns for it, on every map type
        elif type(value) is int and self._value_int is not None:
            try:
                vb = value.to_bytes(self._value_size, _BYTEORDER, signed=self._value_int)
            except OverflowError:
                vb = self._value(value)
        else:
            vb = self._value(value)
        ret = self._update_elem(fd, kb, vb, _u64(flags) if flags else _U64_ZERO)
        if ret < 0:
            raise self._error(-ret, "update", key)

    def put(self, key: Any, value: Any) -> None:
        """``update(key, value, UpdateFlags.ANY)``."""
        self.update(key, value, UpdateFlags.ANY)

    def delete(self, key: Any) -> None:
        """Remove ``key``; :class:`KeyNotExistError` if absent."""
        fd = self.fd
        kb = self._key(key)
        ret = _libbpf.lib.bpf_map_delete_elem(fd, kb)
        if ret < 0:
            raise self._error(-ret, "delete", key)

    def lookup_and_delete(self, key: Any = None) -> Any:
        """Remove ``key`` and return its value (for queues/stacks: pop)."""
        fd = self.fd
        kb = self._key(key)
        vb = ctypes.create_string_buffer(self._vbuf_size)
        ret = _libbpf.lib.bpf_map_lookup_and_delete_elem(fd, kb, vb)
        if ret < 0:
            raise self._error(-ret, "lookup_and_delete", key)
        return self._decode_value(vb.raw)

    def next_key(self, key: Any = None) -> Any:
        """The key after ``key`` (the first key for None); None at the end."""
        raw = self._next_key_raw(None if key is None else self._key(key))
        return None if raw is None else self._decode_key(raw)

    def _next_key_raw(self, kb: Optional[bytes]) -> Optional[bytes]:
        out = ctypes.create_string_buffer(self._key_size)
        ret = _libbpf.lib.bpf_map_get_next_key(self.fd, kb, out)
        if ret == -_ENOENT:
            return None
        if ret < 0:
            raise self._error(-ret, "next_key", None)
        return out.raw

    def _error(self, err: int, op: str, key: Any) -> EBPFError:
        what = f"map {self.name}: {op}"
        if err == _ENOENT:
            return KeyNotExistError(f"{what}: key {_show(key)} does not exist" if key is not None else f"{what}: map is empty")
        if err == _EEXIST:
            return KeyExistError(f"{what}: key {_show(key)} already exists")
        if err == _ENOSPC and op == "update":
            return EBPFError(f"{what}: map is full ({self.max_entries} entries)", err)
        if err == _EPERM and self._flags_readonly():
            return PermissionDeniedError(f"{what}: map is read-only (frozen or BPF_F_RDONLY)", err)
        if err in (95, 524, _EINVAL) and op in ("lookup", "lookup_and_delete", "delete", "next_key") and self._type in _NO_LOOKUP_TYPES:
            return NotSupportedError(f"{op} on a {self._type.name} map", errno=err)
        return _libbpf.errno_error(err, what)

    def _flags_readonly(self) -> bool:
        return bool(self._spec.flags & (MapFlags.RDONLY | MapFlags.RDONLY_PROG))

    # -- mapping protocol ----------------------------------------------------

    # Aliases rather than wrappers: one Python call less per m[k] / m[k] = v.
    __getitem__ = lookup
    __setitem__ = update

    def __delitem__(self, key: Any) -> None:
        self.delete(key)

    def __contains__(self, key: Any) -> bool:
        try:
            self.lookup(key)
        except KeyNotExistError:
            return False
        return True

    def __iter__(self) -> Iterator[Any]:
        return self.keys()

    def keys(self) -> Iterator[Any]:
        """Iterate over the keys (see :meth:`items`)."""
        return itertools.chain.from_iterable(self._chunks(True, False))

    def values(self) -> Iterator[Any]:
        """Iterate over the values (see :meth:`items`)."""
        return itertools.chain.from_iterable(self._chunks(False, True))

    def items(self) -> Iterator[Tuple[Any, Any]]:
        """Iterate over ``(key, value)`` pairs.

        Uses batch lookups where the kernel has them (hash and array maps),
        else ``next_key``.  Survives concurrent deletes; if the map changes so
        much that iteration cannot make progress it raises
        :class:`IterationAbortedError` instead of stopping silently.
        """
        # chain.from_iterable over per-batch zips: list(m.items()) and
        # for-loops run per item in C, not through a generator frame.
        return itertools.chain.from_iterable(self._chunks(True, True))

    def _chunks(self, keys: bool, values: bool) -> Iterator[Iterable[Any]]:
        """The decoded map, one iterable (keys, values or zipped pairs) per
        batch syscall.  Lazy: nothing happens before the first item is asked."""
        if self._type in _NO_LOOKUP_TYPES or self._key_size == 0:
            raise NotSupportedError(f"iterating a {self._type.name} map")
        if self._type in _BATCH_TYPES and _batch_supported():
            for kraw, vraw, n in self._iter_batch():
                if not values:
                    yield self._decode_keys(kraw, n)
                elif not keys:
                    yield self._decode_values(vraw, n)
                else:
                    yield zip(self._decode_keys(kraw, n), self._decode_values(vraw, n))
            return
        dk, dv = self._decode_key, self._decode_value
        if not values:
            yield (dk(k) for k, _ in self._iter_next_key(False))
        elif not keys:
            yield (dv(v) for _, v in self._iter_next_key(True))
        else:
            yield ((dk(k), dv(v)) for k, v in self._iter_next_key(True))

    def _decode_keys(self, raw: bytes, n: int) -> List[Any]:
        """The first ``n`` keys packed in ``raw``, decoded in as few C calls as possible."""
        ks = self._key_size
        if self._key_int is not None:
            return memoryview(raw).cast(_INT_FMT[(ks, self._key_int)])[:n].tolist()
        # Split the whole buffer (its size is fixed per map, so the Struct is
        # built once; hash batches end at bucket boundaries, n varies).
        parts = _splitter(ks, len(raw) // ks).unpack_from(raw)[:n]
        c = self._key_codec
        return list(parts) if c is None else list(map(c.decode, parts))

    def _decode_values(self, raw: bytes, n: int) -> List[Any]:
        vs = self._vbuf_size
        if self._value_int is not None:
            return memoryview(raw).cast(_INT_FMT[(vs, self._value_int)])[:n].tolist()
        parts = _splitter(vs, len(raw) // vs).unpack_from(raw)[:n]
        return list(parts) if self._raw_value else list(map(self._decode_value, parts))

    # Entries per batch syscall when iterating: big batches amortise the
    # per-call cost (the kernel's own per-entry cost dominates beyond ~4k),
    # capped in bytes so per-CPU maps on large machines stay reasonable.
    _ITER_BATCH = 65536
    _ITER_BATCH_BYTES = 4 << 20

    def _iter_batch(self) -> Iterator[Tuple[bytes, bytes, int]]:
        """Yield ``(keys, values, n)`` raw batches covering the whole map.

        While the caller decodes one batch, a helper thread already runs the
        syscall for the next (ctypes drops the GIL during it): the kernel's
        walk of the map then overlaps the Python work instead of adding to
        it.  Each batch has its own buffers, and at most one call is in
        flight; it is waited for when the iteration ends or is abandoned.
        """
        ks, vs = self._key_size, self._vbuf_size
        count = max(1, min(self.max_entries, self._ITER_BATCH, self._ITER_BATCH_BYTES // (ks + vs)))

        def fetch(cursor: Optional[bytes]) -> Tuple[bytes, bytes, int, Optional[bytes]]:
            nonlocal count
            while True:
                try:
                    return self._batch(count, cursor, delete=False)
                except _BucketTooSmall:
                    count *= 2

        keys, vals, n, cursor = fetch(None)
        ahead: Optional[_Ahead] = None
        try:
            while True:
                if cursor is not None:
                    ahead = _Ahead(fetch, cursor)
                if n:
                    yield keys, vals, n
                if ahead is None:
                    return
                keys, vals, n, cursor = ahead.result()
                ahead = None
        finally:
            if ahead is not None:
                ahead.join()

    def _iter_next_key(self, values: bool) -> Iterator[Tuple[bytes, bytes]]:
        # The kernel restarts from the first key when the current one was
        # deleted; bound the walk like cilium does, so a map that changes
        # faster than we read cannot loop us forever.
        limit = max(self.max_entries, 1) * 2 + 16
        key = self._next_key_raw(None)
        seen = 0
        lookup = _libbpf.lib.bpf_map_lookup_elem
        while key is not None:
            seen += 1
            if seen > limit:
                raise IterationAbortedError(f"map {self.name}: iteration aborted after {limit} keys (map changed concurrently)")
            if values:
                vb = ctypes.create_string_buffer(self._vbuf_size)
                ret = lookup(self.fd, key, vb)
                if ret == -_ENOENT:
                    key = self._next_key_raw(key)
                    continue  # deleted since next_key: skip it
                if ret < 0:
                    raise self._error(-ret, "lookup", key)
                yield key, vb.raw
            else:
                yield key, b""
            key = self._next_key_raw(key)

    # -- batch operations ------------------------------------------------

    def _batch(self, count: int, cursor: Optional[bytes], delete: bool) -> Tuple[bytes, bytes, int, Optional[bytes]]:
        ks, vs = self._key_size, self._vbuf_size
        token = max(ks, 8)
        keys = ctypes.create_string_buffer(ks * count)
        vals = ctypes.create_string_buffer(vs * count)
        out = ctypes.create_string_buffer(token)
        n = ctypes.c_uint32(count)
        opts = _libbpf.bpf_map_batch_opts()
        fn = _libbpf.lib.bpf_map_lookup_and_delete_batch if delete else _libbpf.lib.bpf_map_lookup_batch
        in_buf = None if cursor is None else ctypes.create_string_buffer(cursor, token)
        ret = fn(self.fd, in_buf, out, keys, vals, ctypes.byref(n), ctypes.byref(opts))
        if ret < 0:
            err = -ret
            if err == _ENOENT:
                return keys.raw, vals.raw, n.value, None
            if err == _ENOSPC:
                raise _BucketTooSmall()
            if err in (_EINVAL, 95, 524) and not _batch_supported():
                raise NotSupportedError("batch operations", min_kernel="5.6", errno=err)
            raise self._error(err, "batch lookup", None)
        return keys.raw, vals.raw, n.value, out.raw

    def batch_lookup(self, cursor: Optional[bytes] = None, count: int = 4096) -> Tuple[List[Tuple[Any, Any]], Optional[bytes]]:
        """Read up to ``count`` entries in one syscall.

        Returns ``(items, cursor)``; pass the cursor back to continue, it is
        None once the map is exhausted.
        """
        return self._batch_items(cursor, count, delete=False)

    def batch_lookup_and_delete(self, cursor: Optional[bytes] = None, count: int = 4096) -> Tuple[List[Tuple[Any, Any]], Optional[bytes]]:
        """Like :meth:`batch_lookup`, deleting what it returns."""
        return self._batch_items(cursor, count, delete=True)

    def _batch_items(self, cursor: Optional[bytes], count: int, delete: bool) -> Tuple[List[Tuple[Any, Any]], Optional[bytes]]:
        if count <= 0:
            raise ValueError("count must be positive")
        keys, vals, n, nxt = self._batch(count, cursor, delete)
        ks, vs = self._key_size, self._vbuf_size
        items = [(self._decode_key(keys[i * ks : (i + 1) * ks]), self._decode_value(vals[i * vs : (i + 1) * vs])) for i in range(n)]
        return items, nxt

    def batch_update(self, keys: Sequence[Any], values: Sequence[Any], flags: int = UpdateFlags.ANY) -> int:
        """Write many entries in one syscall; returns how many were written."""
        if len(keys) != len(values):
            raise ValueError(f"batch_update: {len(keys)} keys but {len(values)} values")
        if not keys:
            return 0
        kb = b"".join(self._key(k) or b"" for k in keys)
        vb = b"".join(self._value(v) for v in values)
        n = ctypes.c_uint32(len(keys))
        opts = _libbpf.bpf_map_batch_opts(elem_flags=int(flags))
        ret = _libbpf.lib.bpf_map_update_batch(self.fd, kb, vb, ctypes.byref(n), ctypes.byref(opts))
        if ret < 0:
            raise self._error(-ret, "batch update", None)
        return n.value

    def batch_delete(self, keys: Sequence[Any]) -> int:
        """Delete many keys in one syscall; returns how many were deleted."""
        if not keys:
            return 0
        kb = b"".join(self._key(k) or b"" for k in keys)
        n = ctypes.c_uint32(len(keys))
        opts = _libbpf.bpf_map_batch_opts()
        ret = _libbpf.lib.bpf_map_delete_batch(self.fd, kb, ctypes.byref(n), ctypes.byref(opts))
        if ret < 0:
            raise self._error(-ret, "batch delete", None)
        return n.value

    # -- whole-map operations ------------------------------------------------

    def freeze(self) -> None:
        """Make the map read-only from user space (BPF_MAP_FREEZE)."""
        fd = self.fd
        try:
            _libbpf.lib.bpf_map_freeze(fd)
        except EBPFError as exc:
            raise _libbpf.errno_error(exc.errno or 22, f"map {self.name}: freeze") from None

    def info(self) -> MapInfo:
        """What the kernel reports about this map."""
        return map_info(self.fd)

    def clone(self) -> "Map":
        """A second handle on the same kernel map (a duplicated fd)."""
        new = Map._from_fd(self._dup(), self._spec.copy())
        return new

    def memory(self) -> mmap.mmap:
        """The map's values as shared memory (``BPF_F_MMAPABLE`` arrays).

        Writes are seen by programs at once.  Frozen maps (such as
        ``.rodata``) are mapped read-only, since the kernel refuses a
        writable mapping of them.
        """
        if self._memory is not None and not self._memory.closed:
            return self._memory
        if self._type not in (MapType.ARRAY, MapType.ARENA) or not self._spec.flags & MapFlags.MMAPABLE:
            raise NotSupportedError(f"memory() of map {self.name}", detail="needs an ARRAY map with BPF_F_MMAPABLE")
        size = _round_page(self._stride * self.max_entries if self._stride else 0)
        try:
            mem = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except PermissionError:
            mem = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        except OSError as exc:
            raise _libbpf.errno_error(exc.errno or 22, f"map {self.name}: mmap") from None
        self._memory = mem
        return mem

    def close(self) -> None:
        mem, self._memory = getattr(self, "_memory", None), None
        if mem is not None:
            try:
                mem.close()
            except BufferError:
                pass  # a memoryview still uses it; the mapping dies with it
        super().close()

    def pin(self, path: "os.PathLike[str] | str") -> None:
        """Pin the map to ``path`` on bpffs (see :func:`load_pinned_map`)."""
        super().pin(path)

    def _apply_contents(self, contents: Sequence[Tuple[Any, Any]], resolve: Optional[Callable[[Any], Any]] = None) -> None:
        for k, v in contents:
            if resolve is not None:
                v = resolve(v)
            self.update(k, v)


class _BucketTooSmall(Exception):
    pass


class _Ahead(threading.Thread):
    """Runs ``fn(arg)`` in a daemon thread at once; ``result()`` waits for it
    and returns its value or raises its exception."""

    def __init__(self, fn: Callable[[Any], Any], arg: Any) -> None:
        super().__init__(name="ebpf-map-batch", daemon=True)
        self._fn, self._arg = fn, arg
        self._value: Any = None
        self._error: Optional[BaseException] = None
        self.start()

    def run(self) -> None:
        try:
            self._value = self._fn(self._arg)
        except BaseException as exc:  # handed to the consumer by result()
            self._error = exc

    def result(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def _show(key: Any) -> str:
    r = repr(key)
    return r if len(r) <= 64 else r[:61] + "..."


def _fd_value(value: Any, size: int, name: str) -> bytes:
    fd = getattr(value, "fd", value)
    if isinstance(fd, (bytes, bytearray)) and len(fd) == size:
        return bytes(fd)
    if not isinstance(fd, int):
        raise TypeError(f"map {name}: values are maps/programs (or their fds), not {type(value).__name__}")
    return fd.to_bytes(size, _BYTEORDER)


def _object_from_id(t: MapType, obj_id: int) -> Any:
    if t == MapType.PROG_ARRAY:
        from .programs import program_from_id

        return program_from_id(obj_id)
    if t in MAP_IN_MAP_TYPES:
        return map_from_id(obj_id)
    return obj_id


def map_from_id(map_id: int) -> Map:
    """Open the map with kernel id ``map_id``."""
    try:
        fd = _libbpf.lib.bpf_map_get_fd_by_id(map_id)
    except EBPFError as exc:
        if exc.errno == _ENOENT:
            raise KeyNotExistError(f"no map with id {map_id}") from None
        raise
    return Map._from_fd(fd)


def _round_page(n: int) -> int:
    page = mmap.PAGESIZE
    return max(page, (n + page - 1) // page * page)


_BATCH_OK: Optional[bool] = None


def _batch_supported() -> bool:
    global _BATCH_OK
    if _BATCH_OK is None:
        from .features import have_batch_api

        _BATCH_OK = have_batch_api()
    return _BATCH_OK


# --------------------------------------------------------------------------
# Creation


def _create(spec: MapSpec, inner_fd: Optional[int] = None) -> int:
    from .features import have_map_type, object_names_supported

    if spec.type in MAP_IN_MAP_TYPES and inner_fd is None:
        if spec.inner_map is None:
            raise ValueError(f"map {spec.name}: {spec.type.name} needs inner_map")
        tmp = _create(spec.inner_map)
        try:
            return _create(spec, inner_fd=tmp)
        finally:
            os.close(tmp)
    opts = _libbpf.bpf_map_create_opts(
        map_flags=int(spec.flags),
        numa_node=spec.numa_node,
        map_extra=spec.map_extra,
        inner_map_fd=inner_fd or 0,
    )
    name = object_name(spec.name) if object_names_supported() else ""
    key_size = spec.key_size
    value_size = spec.value_size
    max_entries = spec.max_entries
    try:
        return int(_libbpf.lib.bpf_map_create(int(spec.type), name.encode() or None, key_size, value_size, max_entries, ctypes.byref(opts)))
    except PermissionDeniedError as exc:
        raise PermissionDeniedError(
            f"creating map {spec.name}: {os.strerror(exc.errno or 1)} (needs CAP_BPF or CAP_SYS_ADMIN)", exc.errno
        ) from None
    except NotSupportedError:
        raise
    except EBPFError as exc:
        if exc.errno == _EINVAL:
            have_map_type(spec.type)  # NotSupportedError for a type this kernel lacks
        raise EBPFError(f"creating map {spec.name} ({_describe(spec)}): {os.strerror(exc.errno or 22)}", exc.errno) from None


def _describe(spec: MapSpec) -> str:
    t = spec.type.name if isinstance(spec.type, MapType) else spec.type
    return f"{t}, key {spec.key_size}, value {spec.value_size}, max_entries {spec.max_entries}, flags {spec.flags:#x}"


def new_map(spec: MapSpec) -> Map:
    """Create a map from ``spec`` (same as ``Map(spec)``)."""
    return Map(spec)


def load_pinned_map(path: "os.PathLike[str] | str", read_only: bool = False) -> Map:
    """Open a map pinned at ``path``."""
    fd = open_pinned(path, read_only)
    m = Map._from_fd(fd)
    m._pinned_path = os.fspath(path)
    return m


def check_compatible(spec: MapSpec, info: MapInfo, what: str) -> None:
    """Raise MapIncompatibleError naming every field where ``info`` differs."""
    diffs = {}
    # Flags the kernel adds on its own are not a mismatch.
    ignore = int(MapFlags.INNER_MAP | MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG)
    pairs = [
        ("type", int(spec.type), int(info.type)),
        ("key_size", spec.key_size, info.key_size),
        ("value_size", spec.value_size, info.value_size),
        ("max_entries", spec.max_entries, info.max_entries),
        ("flags", int(spec.flags) & ~ignore, info.flags & ~ignore),
    ]
    if spec.type == MapType.PERF_EVENT_ARRAY and spec.max_entries == 0:
        pairs = [p for p in pairs if p[0] != "max_entries"]
    for field_name, want, have in pairs:
        if want != have:
            diffs[field_name] = (want, have)
    if diffs:
        detail = ", ".join(f"{k} {w} != {h}" for k, (w, h) in diffs.items())
        raise MapIncompatibleError(f"{what}: incompatible map: {detail}", diffs)


__all__ += ["check_compatible", "check_pin_path", "pin_error"]
