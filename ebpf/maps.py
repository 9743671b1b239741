"""Maps: kernel key/value stores, with a dict-like Python face.

A :class:`Map` is a :class:`collections.abc.MutableMapping` (``m[k]``,
``m[k] = v``, ``del m[k]``, ``k in m``, ``len(m)``, ``m.clear()``,
``m.update(mapping)``, ``m.pop(k)``, ...) on top of the cilium-style
methods (``lookup``, ``update``, ``delete``, ``batch_*``, ``next_key``).

How keys and values become bytes is the marshaller's business
(:mod:`ebpf._marshal`): bytes, ints, ctypes objects, anything with
``__bytes__``, or -- where the map has BTF -- natural Python values.  Sizes
are checked before every syscall.  Integers are range-checked against the
slot: unsigned unless the BTF type says signed, so a negative int key is
refused by untyped maps and ``__u32``-keyed maps alike.  Per-CPU maps take
and return one value per possible CPU; map-in-map values are :class:`Map`
objects and program-array values are :class:`~ebpf.Program` objects.
"""

from __future__ import annotations

import collections.abc
import ctypes
import errno as _errno
import itertools
import mmap
import os
import threading
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from . import _libbpf, features
from ._fd import FDOwner, check_pin_path, open_pinned, pin_error
from ._marshal import (
    CTYPES as _CTYPES,
)
from ._marshal import (
    FD_VALUE_TYPES,
    MAP_IN_MAP_TYPES,
    OUT_INT,
    OUT_RAW,
    PER_CPU_TYPES,
    Layout,
    StructError,
)
from .errors import (
    ClosedError,
    EBPFError,
    IterationAbortedError,
    KeyExistError,
    KeyNotExistError,
    MapIncompatibleError,
    MarshalError,
    MarshalTypeError,
    NotSupportedError,
    PermissionDeniedError,
)
from .info import MapInfo, map_info
from .names import object_name
from .spec import MapSpec
from .types import MapFlags, MapType, UpdateFlags

__all__ = ["Map", "new_map", "load_pinned_map", "map_from_id"]

_ENOENT, _EEXIST, _ENOSPC, _EINVAL, _EPERM, _E2BIG, _EBADF = (
    _errno.ENOENT, _errno.EEXIST, _errno.ENOSPC, _errno.EINVAL, _errno.EPERM, _errno.E2BIG, _errno.EBADF
)
_EOPNOTSUPP, _ENOTSUPP = _errno.EOPNOTSUPP, 524
_ANY = int(UpdateFlags.ANY)  # a plain int default: no int() on the hot path
_u64 = _libbpf.u64
_U64_ZERO = _libbpf.u64(0)
_byref = ctypes.byref

# The element calls, bound once from the shim (_bind_calls, at the first
# map): module globals are the cheapest thing to call in CPython (a
# callable in an instance attribute costs an unspecialised method lookup).
_lookup_elem: Any = None
_lookup_elem_flags: Any = None
_update_elem: Any = None
_delete_elem: Any = None
_lookup_and_delete_elem: Any = None
_get_next_key: Any = None


def _bind_calls() -> None:
    global _lookup_elem, _lookup_elem_flags, _update_elem, _delete_elem, _lookup_and_delete_elem, _get_next_key
    (_lookup_elem, _lookup_elem_flags, _update_elem, _delete_elem, _lookup_and_delete_elem,
     _get_next_key) = _libbpf.map_elem_calls()

if TYPE_CHECKING:  # the btf subpackage loads when a map first needs it
    from .btf import Handle as BTFHandle

if TYPE_CHECKING:
    _MutableMapping = collections.abc.MutableMapping[Any, Any]
else:
    _MutableMapping = collections.abc.MutableMapping

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
# The only element flag the kernel's batch calls take (NOEXIST/EXIST: EINVAL).
_BATCH_FLAGS = int(UpdateFlags.LOCK)
# Every index of these exists from creation on and none can be deleted.
_DENSE_TYPES = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY})
_ARRAY_TYPES = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.PROG_ARRAY, MapType.ARRAY_OF_MAPS,
                          MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY})
# Types whose elements cannot be read from user space at all.
_NO_LOOKUP_TYPES = frozenset({MapType.RINGBUF, MapType.USER_RINGBUF, MapType.STRUCT_OPS, MapType.PERF_EVENT_ARRAY})

# ``update(mapping)``: the marker for "no value given".
_NOTHING: Any = object()


# One batch call's entries, and the cursor to continue from (None: done).
_Batch = Tuple[List[Tuple[Any, Any]], Optional[bytes]]


class Map(FDOwner, _MutableMapping):
    """A map in the kernel.

    Create one from a :class:`MapSpec` (``Map(spec)``), get them from a
    :class:`~ebpf.Collection`, or open a pin with :func:`load_pinned_map`.

    A map is a mutable mapping of its keys to its values where its type
    allows (hash, array, LPM trie, ... maps; not queues, stacks, ring
    buffers): ``len(m)`` counts the entries by iterating (array maps have
    all ``max_entries`` of theirs), ``clear()`` deletes every entry, and
    ``update(mapping)`` writes many entries with batch syscalls.  A map is
    true when it has an entry; maps compare and hash by identity.

    Thread-safety: every operation may be used from several threads at
    once, ``close()`` included: an operation in flight finishes on this map
    or raises :class:`~ebpf.errors.ClosedError`, and never reaches another
    map that reused the fd number (see :mod:`ebpf._fd`).
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
                spec = _spec_of(map_info(fd, fdinfo=False))
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
        self._memory: Optional[mmap.mmap] = None
        per_cpu = t in PER_CPU_TYPES
        layout = Layout(
            spec.name, t, spec.key_size, spec.value_size, spec.key, spec.value,
            ncpus=_libbpf.num_possible_cpus() if per_cpu else 1,
            open_id=_program_from_id if t == MapType.PROG_ARRAY else map_from_id if t in MAP_IN_MAP_TYPES else None,
        )
        self._layout = layout
        # The layout's hot-path pieces, copied so that an operation reads
        # them in one attribute load each (see bench/maps.py).
        self._key_len = layout.key_len
        self._pack_key = layout.pack_key
        self._value_len = layout.value_len
        self._pack_value = layout.pack_value
        self._vbuf_t = layout.value_buffer
        self._out = layout.value_out
        self._holds_values = layout.fd_values
        # ctypes types seen as keys/values whose size fits: passed by
        # reference, without a copy (see _key_slow).
        self._ctypes_keys: Set[type] = set()
        self._ctypes_values: Set[type] = set()
        if _lookup_elem is None:
            _bind_calls()

    def _new_token(self) -> Any:
        # Tokens of operations in flight are value buffers: one pop() gives
        # a lookup its place in flight and its buffer (see ebpf._fd).
        return self._vbuf_t()

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

    # A handle, not a value: identity equality, hashable (the Mapping
    # mixins would compare contents and make maps unhashable).
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    # -- element operations ------------------------------------------------
    #
    # lookup(), update() and delete() spell their hot path out inline (the
    # same steps in each, kept in step by hand): every attribute lookup and
    # call costs a measurable share of a ~0.5 us syscall (bench/maps.py).
    # Each encodes the key (plain ints: the layout's struct pack; exact
    # bytes: as they are; ctypes objects: by reference; else the layout),
    # takes a token (a value buffer) so that close() cannot release the fd
    # under it (ebpf/_fd.py), makes the call and gives the token back.  The
    # other operations encode through _key_bytes(), the same steps in one
    # place.

    def lookup(self, key: Any = None, flags: int = 0) -> Any:
        """The value stored under ``key``; :class:`KeyNotExistError` if absent.

        Queues and stacks take no key: this peeks at the next element.
        ``flags`` may be ``UpdateFlags.LOCK`` for maps with a spin lock.
        """
        kt = type(key)
        if kt is int:
            pack = self._pack_key  # a local: calling an attribute is slower
            try:
                kb = pack(key)
            except StructError:
                kb = self._layout.key(key)  # raises the marshaller's error
        elif kt is bytes and len(key) == self._key_len:
            kb = key
        elif kt in self._ctypes_keys:
            kb = _byref(key)
        else:
            kb = self._key_slow(key)
        idle = self._idle
        try:
            vb = idle.pop()
        except IndexError:
            vb = self._grow()
        try:
            # A closed map's fd is -1: the kernel says EBADF, _error() says
            # ClosedError; no separate check on the hot path.
            if flags:
                ret = _lookup_elem_flags(self._fd, kb, vb, _u64(int(flags)))
            else:
                ret = _lookup_elem(self._fd, kb, vb)
            if not ret:
                out = self._out
                if not out:  # OUT_INT: vb is a one-element ctypes int array
                    return vb[0]
                if out == 1:  # OUT_RAW
                    return vb.raw
                return self._layout.decode_value(vb.raw)
        finally:
            idle.append(vb)
            if self._fd < 0:
                self._settle()
        raise self._error(-ret, "lookup", key)

    def get(self, key: Any = None, default: Any = None) -> Any:
        """Like :meth:`lookup` but returns ``default`` when the key is absent."""
        try:
            return self.lookup(key)
        except KeyNotExistError:
            return default

    def update(self, key: Any, value: Any = _NOTHING, flags: int = _ANY) -> None:  # type: ignore[override]
        """Store ``value`` under ``key`` (for queues/stacks: push; key is None).

        ``UpdateFlags.NOEXIST`` fails with :class:`KeyExistError` on a present
        key; ``EXIST`` fails with :class:`KeyNotExistError` on an absent one.

        ``update(mapping_or_pairs, flags=...)`` (one positional argument, as
        ``dict.update``) writes many entries, in batch syscalls where the map
        type has them; it stops at the first failure, having written the
        entries before it.
        """
        kt = type(key)
        if kt is int:
            pack = self._pack_key
            try:
                kb = pack(key)
            except StructError:
                kb = self._layout.key(key)
        elif kt is bytes and len(key) == self._key_len:
            kb = key
        elif kt in self._ctypes_keys:
            kb = _byref(key)
        elif value is _NOTHING:  # update(mapping): here, off the hot path
            self._update_many(key, flags)
            return
        else:
            kb = self._key_slow(key)
        vt = type(value)
        if vt is int:
            pack = self._pack_value
            try:
                vb = pack(value)
            except StructError:
                vb = self._layout.value(value)
        elif vt is bytes and len(value) == self._value_len:
            vb = value  # what the layout returns for it, on every map type
        elif vt in self._ctypes_values:
            vb = _byref(value)
        elif self._holds_values and isinstance(value, FDOwner):
            self._update_holding(kb, value, flags, key)
            return
        else:
            vb = self._value_slow(value)
        idle = self._idle
        try:
            tok = idle.pop()
        except IndexError:
            tok = self._grow()
        try:
            ret = _update_elem(self._fd, kb, vb, _u64(flags) if flags else _U64_ZERO)
        finally:
            idle.append(tok)
            if self._fd < 0:
                self._settle()
        if ret:
            raise self._error(-ret, "update", key)

    def _update_holding(self, kb: Any, value: FDOwner, flags: int, key: Any) -> None:
        """update() with a Map/Program value: its fd is written into the
        kernel map, so it must stay that object's until the call returns."""
        tok = value._enter()
        try:
            vb = self._layout.value(value)
            with self._using() as fd:
                ret = _update_elem(fd, kb, vb, _u64(flags) if flags else _U64_ZERO)
        finally:
            value._leave(tok)
        if ret:
            raise self._error(-ret, "update", key)

    def _key_bytes(self, key: Any) -> Any:
        """The key as the element calls take it: what lookup(), update() and
        delete() spell out inline (a call less on their hot paths), for
        the other operations."""
        kt = type(key)
        if kt is int:
            pack = self._pack_key
            try:
                return pack(key)
            except StructError:
                return self._layout.key(key)
        if kt is bytes and len(key) == self._key_len:
            return key
        if kt in self._ctypes_keys:
            return _byref(key)
        return self._key_slow(key)

    def _key_slow(self, key: Any) -> Any:
        """The key as the element calls take it, for keys that are neither
        plain ints nor exact bytes.  ctypes objects of the right size go by
        reference (and their type is remembered for the hot path)."""
        if isinstance(key, _CTYPES) and ctypes.sizeof(key) == self._key_size and self._key_size:
            self._ctypes_keys.add(type(key))
            return _byref(key)
        return self._layout.key(key)

    def _value_slow(self, value: Any) -> Any:
        if value is _NOTHING:
            raise MarshalTypeError(f"map {self.name}: update() takes a key and a value, or one mapping")
        if (isinstance(value, _CTYPES) and ctypes.sizeof(value) == self._value_len
                and not self._holds_values and self._value_len):
            self._ctypes_values.add(type(value))
            return _byref(value)
        return self._layout.value(value)

    def put(self, key: Any, value: Any) -> None:
        """``update(key, value, UpdateFlags.ANY)``."""
        self.update(key, value, UpdateFlags.ANY)

    def delete(self, key: Any) -> None:
        """Remove ``key``; :class:`KeyNotExistError` if absent."""
        kt = type(key)
        if kt is int:
            pack = self._pack_key
            try:
                kb = pack(key)
            except StructError:
                kb = self._layout.key(key)
        elif kt is bytes and len(key) == self._key_len:
            kb = key
        elif kt in self._ctypes_keys:
            kb = _byref(key)
        else:
            kb = self._key_slow(key)
        idle = self._idle
        try:
            tok = idle.pop()
        except IndexError:
            tok = self._grow()
        try:
            ret = _delete_elem(self._fd, kb)
        finally:
            idle.append(tok)
            if self._fd < 0:
                self._settle()
        if ret:
            raise self._error(-ret, "delete", key)

    def lookup_and_delete(self, key: Any = None) -> Any:
        """Remove ``key`` and return its value (for queues/stacks: pop)."""
        kb = self._key_bytes(key)
        vb = self._enter()
        try:
            fd = self._fd
            if fd < 0:
                raise ClosedError(self._kind)
            ret = _lookup_and_delete_elem(fd, kb, vb)
            if not ret:
                return self._value_of(vb)
        finally:
            self._leave(vb)
        raise self._error(-ret, "lookup_and_delete", key)

    def _value_of(self, vb: Any) -> Any:
        """The value in a token buffer, as lookup() returns it."""
        out = self._out
        if out == OUT_INT:
            return vb[0]
        if out == OUT_RAW:
            return vb.raw
        return self._layout.decode_value(vb.raw)

    def next_key(self, key: Any = None) -> Any:
        """The key after ``key`` (the first key for None); None at the end."""
        raw = self._next_key_raw(None if key is None else self._layout.key(key))
        return None if raw is None else self._layout.decode_key(raw)

    def _next_key_raw(self, kb: Optional[bytes]) -> Optional[bytes]:
        out = ctypes.create_string_buffer(max(self._key_size, 1))
        with self._using() as fd:
            ret = _get_next_key(fd, kb, out)
        if ret == -_ENOENT:
            return None
        if ret < 0:
            raise self._error(-ret, "next_key", None)
        return out.raw

    def _error(self, err: int, op: str, key: Any) -> EBPFError:
        what = f"map {self.name}: {op}"
        if err == _ENOENT:
            if key is None:
                return KeyNotExistError(f"{what}: map is empty")
            return KeyNotExistError(f"{what}: key {_show(key)} does not exist")
        if err == _EEXIST:
            return KeyExistError(f"{what}: key {_show(key)} already exists")
        if err == _E2BIG and op in ("update", "batch update"):
            if self._type in _ARRAY_TYPES:
                which = f"index {_show(key)}" if key is not None else "an index"
                return EBPFError(f"{what}: {which} is out of range (max_entries {self.max_entries})", err)
            return EBPFError(f"{what}: map is full (max_entries {self.max_entries})", err)
        if err == _ENOSPC and op in ("update", "batch update"):
            return EBPFError(f"{what}: map is full (max_entries {self.max_entries})", err)
        if err == _EBADF and self._fd < 0:
            return ClosedError(self._kind)
        if err == _EPERM and self._flags_readonly():
            return PermissionDeniedError(f"{what}: map is read-only (frozen or BPF_F_RDONLY)", err)
        if err in (_EOPNOTSUPP, _ENOTSUPP, _EINVAL) and op in ("lookup", "lookup_and_delete", "delete", "next_key") \
                and self._type in _NO_LOOKUP_TYPES:
            return NotSupportedError(f"{op} on a {self._type.name} map", errno=err)
        if err == _EINVAL and op == "delete" and self._type in _ARRAY_TYPES and self._type not in FD_VALUE_TYPES:
            return EBPFError(f"{what}: elements of {self._type.name} maps cannot be deleted", err)
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
        kb = self._key_bytes(key)
        vb = self._enter()
        try:
            ret = _lookup_elem(self._fd, kb, vb)
        finally:
            self._leave(vb)
        if ret == -_ENOENT:
            return False
        if ret:
            raise self._error(-ret, "lookup", key)
        return True

    def __iter__(self) -> Iterator[Any]:
        return self.keys()

    def __len__(self) -> int:
        """The number of entries, counted by iterating (a syscall per batch,
        or per key for maps without batch lookups).  Array maps always hold
        ``max_entries``."""
        if self._type in _DENSE_TYPES:
            return self.max_entries
        self._check_iterable()
        if self._type in _BATCH_TYPES and _batch_supported():
            return sum(n for _, _, n in self._iter_batch())
        return sum(1 for _ in self._iter_next_key(self._type in FD_VALUE_TYPES))

    def __bool__(self) -> bool:
        """True if the map has an entry (one syscall, not a count)."""
        if self._type in _DENSE_TYPES:
            return self.max_entries > 0
        if self._type in _NO_LOOKUP_TYPES or self._key_size == 0:
            return True  # not a mapping: an object is true
        return next(iter(self._iter_next_key(self._type in FD_VALUE_TYPES)), None) is not None

    def clear(self) -> None:
        """Delete every entry.  Array maps cannot lose their elements:
        :class:`NotSupportedError` for them (and for queues, stacks, ...)."""
        t = self._type
        if t in _ARRAY_TYPES and t not in FD_VALUE_TYPES:
            raise NotSupportedError(f"clear() of a {t.name} map", detail="array elements cannot be deleted")
        self._check_iterable()
        if t in _BATCH_TYPES and _batch_supported():
            count = self._iter_count()
            cursor: Optional[bytes] = None
            while True:
                try:
                    _, _, _, cursor = self._batch(count, cursor, delete=True)
                except _BucketTooSmall:
                    count *= 2
                    continue
                if cursor is None:
                    return
        keys = [k for k, _ in self._iter_next_key(False)]
        for kb in keys:
            try:
                self.delete(kb)
            except KeyNotExistError:
                pass

    def popitem(self) -> Tuple[Any, Any]:
        """Remove and return some ``(key, value)``; KeyError when empty."""
        self._check_iterable()
        while True:
            raw = self._next_key_raw(None)
            if raw is None:
                raise KeyNotExistError(f"map {self.name}: popitem(): map is empty")
            try:
                value = self.lookup(raw)
                self.delete(raw)
            except KeyNotExistError:
                continue  # deleted by someone else meanwhile: take the next
            return self._layout.decode_key(raw), value

    def keys(self) -> Iterator[Any]:  # type: ignore[override]
        """Iterate over the keys (see :meth:`items`)."""
        return itertools.chain.from_iterable(self._chunks(True, False))

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        """Iterate over the values (see :meth:`items`)."""
        return itertools.chain.from_iterable(self._chunks(False, True))

    def items(self) -> Iterator[Tuple[Any, Any]]:  # type: ignore[override]
        """Iterate over ``(key, value)`` pairs.

        Uses batch lookups where the kernel has them (hash and array maps),
        else ``next_key``.  Survives concurrent deletes; if the map changes so
        much that iteration cannot make progress (more than ``max_entries +
        1`` keys seen, as cilium's ``MapIterator``) it raises
        :class:`IterationAbortedError` instead of stopping silently.
        """
        # chain.from_iterable over per-batch zips: list(m.items()) and
        # for-loops run per item in C, not through a generator frame.
        return itertools.chain.from_iterable(self._chunks(True, True))

    def _check_iterable(self) -> None:
        if self._type in _NO_LOOKUP_TYPES or self._key_size == 0:
            t = self._type.name if isinstance(self._type, MapType) else self._type
            raise NotSupportedError(f"iterating a {t} map")

    def _chunks(self, keys: bool, values: bool) -> Iterator[Iterable[Any]]:
        """The decoded map, one iterable (keys, values or zipped pairs) per
        batch syscall.  Lazy: nothing happens before the first item is asked."""
        self._check_iterable()
        layout = self._layout
        if self._type in _BATCH_TYPES and _batch_supported():
            for kraw, vraw, n in self._iter_batch():
                if not values:
                    yield layout.decode_keys(kraw, n)
                elif not keys:
                    yield layout.decode_values(vraw, n)
                else:
                    yield zip(layout.decode_keys(kraw, n), layout.decode_values(vraw, n))
            return
        dk, dv = layout.decode_key, layout.decode_value
        if not values:
            yield (dk(k) for k, _ in self._iter_next_key(False))
        elif not keys:
            yield (dv(v) for _, v in self._iter_next_key(True))
        else:
            yield ((dk(k), dv(v)) for k, v in self._iter_next_key(True))

    # Entries per batch syscall when iterating: big batches amortise the
    # per-call cost (the kernel's own per-entry cost dominates beyond ~4k),
    # capped in bytes so per-CPU maps on large machines stay reasonable.
    _ITER_BATCH = 65536
    _ITER_BATCH_BYTES = 4 << 20

    # The first batch is fetched before anything overlaps it: keep it small
    # so that decoding starts early (and small maps cost one small call).
    _ITER_FIRST = 4096

    def _iter_count(self) -> int:
        return max(1, min(self.max_entries, self._ITER_BATCH,
                          self._ITER_BATCH_BYTES // (self._key_size + self._layout.vbuf_size)))

    def _iter_batch(self) -> Iterator[Tuple[bytes, bytes, int]]:
        """Yield ``(keys, values, n)`` raw batches covering the whole map.

        While the caller decodes one batch, a helper thread already runs the
        syscall for the next (ctypes drops the GIL during it): the kernel's
        walk of the map then overlaps the Python work instead of adding to
        it.  Each batch has its own buffers, and at most one call is in
        flight; it is waited for when the iteration ends or is abandoned.
        Every call holds the map (see :mod:`ebpf._fd`): a concurrent close()
        ends the iteration with ClosedError, never with another map's data.
        """
        count = self._iter_count()
        first = min(count, self._ITER_FIRST)

        def fetch(cursor: Optional[bytes], size: int = 0) -> Tuple[bytes, bytes, int, Optional[bytes]]:
            nonlocal count
            size = size or count
            while True:
                try:
                    return self._batch(size, cursor, delete=False)
                except _BucketTooSmall:
                    # A hash bucket holds more than fits: the kernel wants
                    # room for the whole bucket at once.
                    size = count = max(count, size) * 2

        keys, vals, n, cursor = fetch(None, first)
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
        # deleted.  As cilium's MapIterator, give up once more keys than
        # max_entries + 1 came back: a map that changes faster than we read
        # cannot keep us looping.
        limit = self.max_entries
        key: Optional[bytes] = None
        seen = 0
        ks = max(self._key_size, 1)
        while True:
            if seen > limit:
                raise IterationAbortedError(
                    f"map {self.name}: iteration aborted after {seen} keys (max_entries {limit}): "
                    "the map changed concurrently"
                )
            # One token for the step: next_key and the lookup of what it gave.
            out = ctypes.create_string_buffer(ks)
            vb = self._enter()
            try:
                ret = _get_next_key(self._fd, key, out)
                if not ret and values:
                    look = _lookup_elem(self._fd, out, vb)
                    raw = bytes(vb)
            finally:
                self._leave(vb)
            if ret == -_ENOENT:
                return
            if ret < 0:
                raise self._error(-ret, "next_key", None)
            key = out.raw
            seen += 1
            if not values:
                yield key, b""
                continue
            if look == -_ENOENT:
                continue  # deleted since next_key (or an empty fd slot): skip it
            if look < 0:
                raise self._error(-look, "lookup", key)
            yield key, raw

    # -- batch operations ------------------------------------------------

    def _batch(self, count: int, cursor: Optional[bytes], delete: bool) -> Tuple[bytes, bytes, int, Optional[bytes]]:
        ks, vs = self._key_size, self._layout.vbuf_size
        keys = ctypes.create_string_buffer(ks * count)
        vals = ctypes.create_string_buffer(vs * count)
        out = ctypes.create_string_buffer(max(ks, 8))
        with self._using() as fd:
            ret, n = _libbpf.map_lookup_batch(fd, cursor, out, keys, vals, count, delete)
        if ret < 0:
            err = -ret
            if err == _ENOENT:
                return keys.raw, vals.raw, n, None
            if err == _ENOSPC:
                raise _BucketTooSmall()
            if err in (_EINVAL, _EOPNOTSUPP, _ENOTSUPP) and not _batch_supported():
                raise NotSupportedError("batch operations", min_kernel="5.6", errno=err)
            raise self._error(err, "batch lookup", None)
        return keys.raw, vals.raw, n, out.raw

    def batch_lookup(self, cursor: Optional[bytes] = None, count: int = 4096) -> "_Batch":
        """Read up to ``count`` entries in one syscall.

        Returns ``(items, cursor)``; pass the cursor back to continue, it is
        None once the map is exhausted.
        """
        return self._batch_items(cursor, count, delete=False)

    def batch_lookup_and_delete(self, cursor: Optional[bytes] = None, count: int = 4096) -> "_Batch":
        """Like :meth:`batch_lookup`, deleting what it returns."""
        return self._batch_items(cursor, count, delete=True)

    def _batch_items(self, cursor: Optional[bytes], count: int, delete: bool) -> "_Batch":
        if count <= 0:
            raise ValueError("count must be positive")
        keys, vals, n, nxt = self._batch(count, cursor, delete)
        layout = self._layout
        return list(zip(layout.decode_keys(keys, n), layout.decode_values(vals, n))), nxt

    # Entries per update/delete batch syscall: bounds the packed buffers
    # (a few MiB) without adding measurable syscall overhead.
    _WRITE_BATCH = 65536

    def batch_update(self, keys: Sequence[Any], values: Sequence[Any], flags: int = UpdateFlags.ANY) -> int:
        """Write many entries with batch syscalls; returns how many were written.

        ``keys`` and ``values`` must have the same length
        (:class:`MarshalError` otherwise).  Every key and value is encoded
        before the first syscall.
        """
        if len(keys) != len(values):
            raise MarshalError(f"map {self.name}: batch_update of {len(keys)} keys but {len(values)} values")
        if not len(keys):
            return 0
        if int(flags) & ~_BATCH_FLAGS:
            raise NotSupportedError(
                f"batch_update with flags {int(flags):#x}",
                detail="the kernel's batch calls take UpdateFlags.ANY or LOCK only; use update() per entry",
            )
        layout = self._layout
        kb = layout.keys_blob(keys)
        vb = layout.values_blob(values)
        owners = [v for v in values if isinstance(v, FDOwner)] if self._holds_values else []
        return self._write_batches(kb, vb, len(keys), int(flags), owners)

    def _write_batches(self, kb: bytes, vb: bytes, total: int, flags: int, owners: Sequence[FDOwner] = ()) -> int:
        ks, vs = self._key_size, self._layout.vbuf_size
        step = self._WRITE_BATCH
        done = 0
        toks = [o._enter() for o in owners]  # their fds are in vb
        try:
            with self._using() as fd:
                while done < total:
                    n = min(step, total - done)
                    ret, wrote = _libbpf.map_update_batch(
                        fd, kb[done * ks:(done + n) * ks], vb[done * vs:(done + n) * vs], n, flags)
                    done += wrote
                    if ret < 0:
                        err = -ret
                        if err in (_EINVAL, _EOPNOTSUPP, _ENOTSUPP) and not _batch_supported():
                            raise NotSupportedError("batch operations", min_kernel="5.6", errno=err)
                        exc = self._error(err, "batch update", None)
                        exc.args = (f"{exc.args[0]} (after writing {done} of {total} entries)",)
                        raise exc
                    if wrote < n:  # the kernel stopped without saying why
                        break
        finally:
            for o, t in zip(owners, toks):
                o._leave(t)
        return done

    def _update_many(self, other: Any, flags: int) -> None:
        """``update(mapping_or_pairs)``: many entries, batched where possible."""
        if isinstance(other, dict):
            keys: Sequence[Any] = list(other)
            values: Sequence[Any] = list(other.values())
        else:
            if isinstance(other, Mapping):
                pairs = list(other.items())
            elif isinstance(other, (str, bytes)) or not isinstance(other, collections.abc.Iterable):
                raise MarshalTypeError(
                    f"map {self.name}: update() takes a key and a value, or a mapping or iterable of pairs, "
                    f"not {type(other).__name__}"
                )
            else:
                pairs = list(other)
                for i, p in enumerate(pairs):
                    if not isinstance(p, (tuple, list)) or len(p) != 2:
                        raise MarshalError(f"map {self.name}: update(): element {i} is not a (key, value) pair")
            keys = [p[0] for p in pairs]
            values = [p[1] for p in pairs]
        if not keys:
            return
        if (self._type in _BATCH_TYPES and not self._holds_values and not int(flags) & ~_BATCH_FLAGS
                and _batch_supported()):
            layout = self._layout
            self._write_batches(layout.keys_blob(keys), layout.values_blob(values), len(keys), int(flags))
            return
        for k, v in zip(keys, values):
            self.update(k, v, flags)

    def batch_delete(self, keys: Sequence[Any]) -> int:
        """Delete many keys in batch syscalls; returns how many were deleted."""
        if not len(keys):
            return 0
        kb = self._layout.keys_blob(keys)
        ks, total, done, step = self._key_size, len(keys), 0, self._WRITE_BATCH
        with self._using() as fd:
            while done < total:
                n = min(step, total - done)
                ret, deleted = _libbpf.map_delete_batch(fd, kb[done * ks:(done + n) * ks], n)
                done += deleted
                if ret < 0:
                    raise self._error(-ret, "batch delete", None)
                if deleted < n:
                    break
        return done

    # -- whole-map operations ------------------------------------------------

    def freeze(self) -> None:
        """Make the map read-only from user space (BPF_MAP_FREEZE)."""
        with self._using() as fd:
            try:
                _libbpf.map_freeze(fd)
            except EBPFError as exc:
                raise _libbpf.errno_error(exc.errno or _EINVAL, f"map {self.name}: freeze") from None

    def info(self) -> MapInfo:
        """What the kernel reports about this map."""
        with self._using() as fd:
            return map_info(fd)

    def handle(self) -> BTFHandle:
        """The map's BTF in the kernel, as a new :class:`ebpf.btf.Handle`
        (cilium's ``Map.Handle``; the caller closes it).  A map without BTF
        raises :class:`~ebpf.errors.NotSupportedError`."""
        from .btf import Handle  # a lazily loaded subpackage

        with self._using() as fd:
            btf_id = map_info(fd, fdinfo=False).btf_id
        if not btf_id:
            raise NotSupportedError(f"BTF of map {self.name}", detail="the map was created without BTF")
        return Handle.from_id(btf_id)

    def clone(self) -> "Map":
        """A second handle on the same kernel map (a duplicated fd)."""
        return Map._from_fd(self._dup(), self._spec.copy())

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
        stride = self._layout.stride
        size = _round_page(stride * self.max_entries if stride else 0)
        with self._using() as fd:
            try:
                mem = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            except PermissionError:
                mem = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
            except OSError as exc:
                raise _libbpf.errno_error(exc.errno or _EINVAL, f"map {self.name}: mmap") from None
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
        """Pin the map to ``path`` on bpffs (see :func:`load_pinned_map`).

        A map pinned already is moved to ``path`` (cilium's semantics)."""
        super().pin(path)

    def _apply_contents(self, contents: Sequence[Tuple[Any, Any]],
                        resolve: Optional[Callable[[Any], Any]] = None) -> None:
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


def _spec_of(info: MapInfo) -> MapSpec:
    return MapSpec(
        name=info.name,
        type=info.type,
        key_size=info.key_size,
        value_size=info.value_size,
        max_entries=info.max_entries,
        flags=info.flags,
        map_extra=info.map_extra,
    )


def _program_from_id(prog_id: int) -> Any:
    # programs imports the loader, which imports this module: a real cycle,
    # so the program side is reached when a program array is first read.
    from .programs import program_from_id

    return program_from_id(prog_id)


def map_from_id(map_id: int) -> Map:
    """Open the map with kernel id ``map_id``."""
    try:
        fd = _libbpf.map_get_fd_by_id(map_id)
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
        _BATCH_OK = features.have_batch_api()
    return _BATCH_OK


# --------------------------------------------------------------------------
# Creation


def _create(spec: MapSpec, inner_fd: Optional[int] = None) -> int:
    if spec.type in MAP_IN_MAP_TYPES and inner_fd is None:
        if spec.inner_map is None:
            raise ValueError(f"map {spec.name}: {spec.type.name} needs inner_map")
        tmp = _create(spec.inner_map)
        try:
            return _create(spec, inner_fd=tmp)
        finally:
            os.close(tmp)
    name = object_name(spec.name) if features.object_names_supported() else ""
    handle, key_id, value_id = _map_btf(spec)
    try:
        btf_fd = handle.fd if handle is not None else 0
        try:
            return _libbpf.map_create(
                int(spec.type), name.encode(), spec.key_size, spec.value_size, spec.max_entries,
                flags=int(spec.flags), numa_node=spec.numa_node, map_extra=spec.map_extra, inner_map_fd=inner_fd or 0,
                btf_fd=btf_fd, btf_key_type_id=key_id, btf_value_type_id=value_id,
            )
        except (NotSupportedError, EBPFError) as exc:
            if not btf_fd or exc.errno not in (_EINVAL, _ENOTSUPP, _EOPNOTSUPP):
                raise
        # cilium's fallback: some map types take no BTF key/value (on some
        # kernels); such a map is created without.
        return _libbpf.map_create(
            int(spec.type), name.encode(), spec.key_size, spec.value_size, spec.max_entries,
            flags=int(spec.flags), numa_node=spec.numa_node, map_extra=spec.map_extra, inner_map_fd=inner_fd or 0,
        )
    except PermissionDeniedError as exc:
        raise PermissionDeniedError(
            f"creating map {spec.name}: {os.strerror(exc.errno or _EPERM)} (needs CAP_BPF or CAP_SYS_ADMIN)", exc.errno
        ) from None
    except NotSupportedError:
        raise
    except EBPFError as exc:
        if exc.errno == _EINVAL:
            features.have_map_type(spec.type)  # NotSupportedError for a type this kernel lacks
        reason = os.strerror(exc.errno or _EINVAL)
        raise EBPFError(f"creating map {spec.name} ({_describe(spec)}): {reason}", exc.errno) from None
    finally:
        if handle is not None:
            handle.close()  # the map keeps its own reference to the BTF


def _map_btf(spec: MapSpec) -> Tuple[Optional[BTFHandle], int, int]:
    """The spec's BTF key and value types loaded into the kernel (cilium's
    ``MarshalMapKV``): ``(btf.Handle, key type id, value type id)``, or
    ``(None, 0, 0)`` for a spec without them (or a kernel without BTF)."""
    if (spec.key is None and spec.value is None) or spec.type == MapType.STRUCT_OPS:
        return None, 0, 0  # struct_ops maps get the kernel's value type from the loader
    from .btf import Builder, Handle, sizeof  # a lazily loaded subpackage

    for what, t, size in (("key", spec.key, spec.key_size), ("value", spec.value, spec.value_size)):
        if t is None:
            continue
        try:
            have = sizeof(t)
        except TypeError:
            raise MapIncompatibleError(f"map {spec.name}: the {what} type {t!r} has no size", {what: (size, None)}) \
                from None
        if have != size:
            # The kernel would refuse the BTF (EINVAL) and the map would be
            # created without it: say so instead.
            raise MapIncompatibleError(f"map {spec.name}: the {what} type {t!r} is {have} bytes, "
                                       f"{what}_size is {size}", {f"{what}_size": (size, have)})
    b = Builder()
    key_id = b.add(spec.key) if spec.key is not None else 0
    value_id = b.add(spec.value) if spec.value is not None else 0
    try:
        return Handle(b), key_id, value_id
    except NotSupportedError:
        return None, 0, 0  # no BTF in this kernel: the map works without it


def _describe(spec: MapSpec) -> str:
    t = spec.type.name if isinstance(spec.type, MapType) else spec.type
    return f"{t}, key {spec.key_size}, value {spec.value_size}, max_entries {spec.max_entries}, flags {spec.flags:#x}"


def new_map(spec: MapSpec) -> Map:
    """Create a map from ``spec`` (same as ``Map(spec)``)."""
    return Map(spec)


def load_pinned_map(path: "os.PathLike[str] | str", read_only: bool = False, *,
                    spec: Optional[MapSpec] = None) -> Map:
    """Open a map pinned at ``path``.

    What is pinned there must be a map: a program, a link or a file
    outside bpffs is a :class:`~ebpf.errors.PinError` saying what was
    found.  With ``spec``, the map must also match its type, sizes,
    ``max_entries`` and flags (:class:`MapIncompatibleError` naming the
    fields that differ), and its BTF key/value types decode the values.
    """
    fd = open_pinned(path, read_only, kind="map")
    if spec is not None:
        try:
            check_compatible(spec, map_info(fd, fdinfo=False), f"map pinned at {os.fspath(path)}")
        except BaseException:
            os.close(fd)
            raise
        m = Map._from_fd(fd, spec.copy())
    else:
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


__all__ += ["check_compatible", "check_pin_path", "pin_error", "PER_CPU_TYPES", "MAP_IN_MAP_TYPES"]
