"""Collections: the maps, programs and globals of one object, in the kernel.

Loading reopens the spec's ELF with libbpf (so CO-RE, BTF and relocations
stay libbpf's job), applies every field of the spec to libbpf's object before
``bpf_object__load``, then takes its own duplicate of every fd and closes the
libbpf object.  The result owns plain :class:`Map`/:class:`Program` objects.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import types
import typing
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from . import _libbpf
from ._fd import check_pin_path
from ._privilege import load_refusal
from .errors import ClosedError, EBPFError, InvalidObjectError, NotSupportedError, PermissionDeniedError
from .info import map_info
from .maps import MAP_IN_MAP_TYPES, Map, check_compatible
from .programs import (
    LOG_SIZE_MAX,
    LOG_SIZE_MIN,
    TRACING_TYPES,
    Program,
    verifier_error,
)
from .spec import CollectionSpec, MapSpec, ProgramSpec, VariableBase, _map_spec
from .types import MapFlags, MapType, PinType

__all__ = ["Collection", "Variable", "new_collection", "load_and_assign"]

_FAILED_PROG = re.compile(r"prog '([^']+)': failed to load: (-?\d+)")


class Variable(VariableBase):
    """A global variable of a loaded collection, backed by live map memory.

    ``get()`` reads what programs see now; ``set()`` changes it for them at
    once.  Variables in ``.rodata`` are read-only after load.
    """

    __slots__ = ("name", "offset", "size", "type", "_map")

    def __init__(self, name: str, m: Map, offset: int, size: int, type: Any) -> None:
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

    def get_bytes(self) -> bytes:
        mem = self._memory()
        if mem is not None:
            return bytes(mem[self.offset : self.offset + self.size])
        image = self._map.lookup(0)
        return bytes(image[self.offset : self.offset + self.size])

    def set(self, value: Any) -> None:
        """Write a new value into live memory (size checked)."""
        raw = self._encode(value)
        if self.read_only:
            raise PermissionDeniedError(f"variable {self.name} is in a read-only section (set it on the spec before loading)", 1)
        mem = self._memory()
        if mem is not None:
            mem[self.offset : self.offset + self.size] = raw
            return
        image = bytearray(self._map.lookup(0))
        image[self.offset : self.offset + self.size] = raw
        self._map.update(0, bytes(image))

    def __repr__(self) -> str:
        return f"<Variable {self.name} in {self._map.name} +{self.offset} size {self.size}>"


class Collection:
    """Maps, programs and variables loaded from a :class:`CollectionSpec`.

    ``map_replacements`` maps names to existing :class:`Map` objects used
    instead of creating new ones (they must be compatible).  ``pin_path`` is
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
        kernel_types: Any = None,
        _programs: Optional[Set[str]] = None,
        _maps: Optional[Set[str]] = None,
    ) -> None:
        self.maps: Dict[str, Map] = {}
        self.programs: Dict[str, Program] = {}
        self.variables: Dict[str, Variable] = {}
        self._closed = False
        try:
            _Loader(self, spec, dict(map_replacements or {}), pin_path, log_level, log_size, kernel_types, _programs, _maps).load()
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
        return self.maps.pop(name)

    def detach_program(self, name: str) -> Program:
        """Remove a program from the collection; the caller now owns it."""
        return self.programs.pop(name)

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


class _Loader:
    """One load of a spec into a Collection."""

    def __init__(
        self,
        coll: Collection,
        spec: CollectionSpec,
        replacements: Dict[str, Map],
        pin_path: Optional[str],
        log_level: int,
        log_size: Optional[int],
        kernel_types: Any,
        only_programs: Optional[Set[str]],
        only_maps: Optional[Set[str]],
    ) -> None:
        self.coll = coll
        self.spec = spec
        self.replacements = replacements
        self.pin_path = pin_path
        self.log_level = log_level
        self.log_size = max(log_size or LOG_SIZE_MIN, 1024)
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

    # -- top level ---------------------------------------------------------

    def load(self) -> None:
        spec = self.spec
        elf_maps = set(spec._elf_map_keys.values())
        if spec._elf is not None:
            separate = self._load_object()
        else:
            separate = [n for n in spec.programs if self.wanted_program(n)]
        # Maps the user added to the spec after reading the ELF.
        for key, ms in spec.maps.items():
            if key not in elf_maps and self.wanted_map(key) and key not in self.coll.maps:
                self.coll.maps[key] = self._standalone_map(key, ms)
        for name in separate:
            # Our own loader: this collection already is the object (CO-RE
            # is lost for a program edited beyond what libbpf can relocate).
            self.coll.programs[name] = Program(
                spec.programs[name], maps=self.coll.maps, log_level=self.log_level, log_size=self.log_size,
                _via_object=False,
            )
        self._fill_contents()
        self._bind_variables()
        if any(m.type == MapType.STRUCT_OPS for m in self.coll.maps.values()):
            # attach_struct_ops builds the kernel value from the ELF later.
            from .link.struct_ops import bind_struct_ops

            bind_struct_ops(spec, self.coll)

    def _standalone_map(self, key: str, ms: MapSpec) -> Map:
        if key in self.replacements:
            r = self.replacements[key]
            check_compatible(ms, r.info(), f"map {key}")
            return r.clone()
        if ms.pinning == PinType.BY_NAME:
            path = self._pin_file(ms)
            if os.path.exists(path):
                from .maps import load_pinned_map

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

    def _pin_file(self, ms: MapSpec) -> str:
        if self.pin_path is None:
            raise ValueError(f"map {ms.name} has pinning=BY_NAME: pass pin_path= (a directory on bpffs)")
        return os.path.join(self.pin_path, ms.name)

    # -- libbpf object -------------------------------------------------------

    def _load_object(self) -> List[str]:
        """Load the ELF through libbpf; returns programs to load separately."""
        size = self.log_size
        while True:
            try:
                return self._try_load_object(size)
            except _LogTooSmall:
                if size >= LOG_SIZE_MAX:
                    raise
                size = min(size * 8, LOG_SIZE_MAX)

    def _try_load_object(self, log_size: int) -> List[str]:
        lib = _libbpf.lib
        spec = self.spec
        data = spec._elf
        assert data is not None
        kt_path = _kernel_types_path(self.kernel_types)
        opts = _libbpf.bpf_object_open_opts(
            object_name=spec._object_name.encode(),
            btf_custom_path=kt_path.encode() if kt_path else None,
        )
        buf = ctypes.create_string_buffer(data, len(data))
        _libbpf.clear_warnings()
        try:
            obj = lib.bpf_object__open_mem(buf, len(data), ctypes.byref(opts))
        except EBPFError as exc:
            raise InvalidObjectError(f"libbpf cannot open the object: {exc}", exc.errno) from None
        keep: List[Any] = [buf]  # buffers libbpf points into until load
        try:
            maps = self._prepare_maps(obj, keep)
            progs, separate, logs = self._prepare_programs(obj, log_size, keep)
            err = lib.bpf_object__load(obj)
            if err < 0:
                self._raise_load_error(-err, progs, logs, log_size)
            self._take_maps(maps)
            self._take_programs(progs, logs)
            return separate
        finally:
            lib.bpf_object__close(obj)
            for fd in getattr(self, "_temp_fds", []):
                os.close(fd)
            self._temp_fds = []

    def _prepare_maps(self, obj: Any, keep: List[Any]) -> List[Tuple[str, Any]]:
        lib = _libbpf.lib
        spec = self.spec
        created: List[Tuple[str, Any]] = []
        self._temp_fds: List[int] = []
        m = lib.bpf_object__next_map(obj, None)
        while m:
            elf_name = lib.bpf_map__name(m).decode()
            key = spec._elf_map_keys.get(elf_name, elf_name)
            ms = spec.maps.get(key)
            if ms is None or not self.wanted_map(key):
                lib.bpf_map__set_autocreate(m, False)
                if lib.bpf_map__type(m) == MapType.PROG_ARRAY:
                    # libbpf 1.1 fills ELF-initialised prog array slots even
                    # for maps it did not create (and fails with EBADF); it
                    # skips maps of other types, so retype the unused map.
                    lib.bpf_map__set_type(m, int(MapType.ARRAY))
            else:
                self._apply_map(m, key, ms, keep)
                created.append((key, m))
            m = lib.bpf_object__next_map(obj, m)
        return created

    def _apply_map(self, m: Any, key: str, ms: MapSpec, keep: List[Any]) -> None:
        lib = _libbpf.lib
        current = _map_spec(lib, m, key, None)
        if int(ms.type) != int(current.type):
            lib.bpf_map__set_type(m, int(ms.type))
        if ms.key_size != current.key_size:
            lib.bpf_map__set_key_size(m, ms.key_size)
        if ms.value_size != current.value_size:
            lib.bpf_map__set_value_size(m, ms.value_size)
        if ms.max_entries != current.max_entries:
            lib.bpf_map__set_max_entries(m, ms.max_entries)
        if ms.flags != current.flags:
            lib.bpf_map__set_map_flags(m, ms.flags)
        if ms.numa_node != current.numa_node:
            lib.bpf_map__set_numa_node(m, ms.numa_node)
        if ms.map_extra != current.map_extra:
            lib.bpf_map__set_map_extra(m, ms.map_extra)
        if lib.bpf_map__is_internal(m) and ms.contents:
            image = bytes(ms.contents[0][1])
            if len(image) != ms.value_size:
                raise InvalidObjectError(f"map {key}: contents are {len(image)} bytes, value_size is {ms.value_size}")
            if image != _initial_value(lib, m):
                if key == ".kconfig":
                    # libbpf computes these from the running kernel at load.
                    raise NotSupportedError(".kconfig values set in the spec", detail="libbpf fills them in at load time")
                ibuf = ctypes.create_string_buffer(image, len(image))
                keep.append(ibuf)
                lib.bpf_map__set_initial_value(m, ibuf, len(image))
        if ms.type in MAP_IN_MAP_TYPES and ms.inner_map is not None and ms.inner_map != current.inner_map:
            inner = Map(_without_contents(ms.inner_map))
            fd = inner.detach_fd()
            self._temp_fds.append(fd)
            lib.bpf_map__set_inner_map_fd(m, fd)

        if key in self.replacements:
            r = self.replacements[key]
            check_compatible(ms, r.info(), f"map {key}")
            lib.bpf_map__reuse_fd(m, r.fd)
        elif ms.pinning == PinType.BY_NAME:
            path = self._pin_file(ms)
            if os.path.exists(path):
                from ._fd import open_pinned

                fd = open_pinned(path)
                try:
                    check_compatible(ms, map_info(fd), f"map {key} pinned at {path}")
                finally:
                    os.close(fd)
            lib.bpf_map__set_pin_path(m, path.encode())
        else:
            lib.bpf_map__set_pin_path(m, None)
            if ms.name != key and not lib.bpf_map__is_internal(m):
                # libbpf 1.1 cannot rename a map: create it here and hand it over.
                own = Map(_without_contents(ms))
                fd = own.detach_fd()
                self._temp_fds.append(fd)
                lib.bpf_map__reuse_fd(m, fd)

    def _prepare_programs(self, obj: Any, log_size: int, keep: List[Any]) -> Tuple[List[Tuple[str, Any]], List[str], Dict[str, Any]]:
        lib = _libbpf.lib
        spec = self.spec
        loaded: List[Tuple[str, Any]] = []
        separate: List[str] = []
        logs: Dict[str, Any] = {}
        elf_license = next((p.license for p in spec.programs.values() if p._elf_insns is not None), "")
        seen: Set[str] = set()
        p = lib.bpf_object__next_program(obj, None)
        while p:
            name = lib.bpf_program__name(p).decode()
            seen.add(name)
            ps = spec.programs.get(name)
            if ps is None or not self.wanted_program(name):
                lib.bpf_program__set_autoload(p, False)
                p = lib.bpf_object__next_program(obj, p)
                continue
            insns = _libbpf_view(ps)
            if insns is None or ps.license != elf_license:
                # libbpf 1.1 relocates by instruction index recorded at open
                # and has no license setter: load this one ourselves.
                lib.bpf_program__set_autoload(p, False)
                separate.append(name)
                p = lib.bpf_object__next_program(obj, p)
                continue
            original = ps._elf_raw
            if int(ps.type) != int(lib.bpf_program__type(p)):
                lib.bpf_program__set_type(p, int(ps.type))
            if int(ps.attach_type) != int(lib.bpf_program__expected_attach_type(p)):
                lib.bpf_program__set_expected_attach_type(p, int(ps.attach_type))
            if ps.flags != int(lib.bpf_program__flags(p)):
                lib.bpf_program__set_flags(p, ps.flags)
            if insns != original:
                ibuf = ctypes.create_string_buffer(insns, len(insns))
                keep.append(ibuf)
                lib.bpf_program__set_insns(p, ibuf, len(insns) // 8)
            if ps.type in TRACING_TYPES and ps.attach_to and ps.section_name.split("/", 1)[-1] != ps.attach_to:
                lib.bpf_program__set_attach_target(p, 0, ps.attach_to.encode())
            log = ctypes.create_string_buffer(log_size)
            keep.append(log)
            lib.bpf_program__set_log_buf(p, log, log_size)
            if self.log_level:
                lib.bpf_program__set_log_level(p, self.log_level)
            logs[name] = log
            loaded.append((name, p))
            p = lib.bpf_object__next_program(obj, p)
        # Programs the user added to the spec are not in the ELF.
        separate.extend(n for n in spec.programs if n not in seen and self.wanted_program(n))
        return loaded, separate, logs

    def _raise_load_error(self, err: int, progs: List[Tuple[str, Any]], logs: Dict[str, Any], log_size: int) -> None:
        spec = self.spec
        warnings = _libbpf.warnings()
        failed = None
        for w in warnings:
            match = _FAILED_PROG.search(w)
            if match:
                failed = match.group(1)
                err = abs(int(match.group(2))) or err
        if failed is None:
            # Without log_level, only the program that failed has a log.
            with_log = [n for n, _ in progs if logs[n].value.strip()]
            if with_log and (err in (13, 22, 28, 7) or not self.log_level):
                failed = with_log[-1]
        hint = "; ".join(warnings[-3:])
        if failed is not None and failed in logs:
            log_buf = logs[failed]
            text = log_buf.value.decode(errors="replace")
            full = len(log_buf.value) >= log_size - 1
            if err == 28 or (full and err in (13, 22)):
                if log_size < LOG_SIZE_MAX:
                    raise _LogTooSmall()
            ps = spec.programs[failed]
            refused = load_refusal(failed, ps.type, err, text, attach_type=ps.attach_type, target=ps.attach_to)
            if refused is not None:
                raise refused
            if text.strip():
                exc = verifier_error(failed, err, text, truncated=full)
                core = _core_relo_failures(text, warnings)
                if core:
                    # libbpf 1.1 does not fail the load on a failed CO-RE
                    # relocation: it poisons the instruction (a call to helper
                    # 0xbad2310) and the verifier rejects it.  Say so, with
                    # libbpf's own line naming the type and field.
                    exc.args = (
                        f"program {failed}: CO-RE relocation failed (the target BTF lacks a type or field "
                        f"the program accesses): " + "; ".join(core),
                    )
                raise exc
        raise _libbpf.errno_error(err, "loading collection" + (f": {hint}" if hint and hint not in _libbpf.last_warning() else ""), warnings)

    # -- taking ownership ------------------------------------------------------

    def _take_maps(self, maps: List[Tuple[str, Any]]) -> None:
        lib = _libbpf.lib
        for key, m in maps:
            fd = os.dup(lib.bpf_map__fd(m))
            actual = _map_spec(lib, m, key, None)
            ms = self.spec.maps[key]
            actual.key, actual.value = ms.key, ms.value
            actual.name = ms.name
            actual.pinning = ms.pinning
            actual.inner_map = ms.inner_map.copy() if ms.inner_map is not None else None
            mp = Map._from_fd(fd, actual)
            if ms.pinning == PinType.BY_NAME and self.pin_path is not None and key not in self.replacements:
                mp._pinned_path = os.path.join(self.pin_path, ms.name)
            self.coll.maps[key] = mp

    def _take_programs(self, progs: List[Tuple[str, Any]], logs: Dict[str, Any]) -> None:
        lib = _libbpf.lib
        for name, p in progs:
            fd = os.dup(lib.bpf_program__fd(p))
            ps = self.spec.programs[name]
            log = logs[name].value.decode(errors="replace") if self.log_level else ""
            prog = Program._from_fd(fd, name, ps.type, ps.attach_type, log)
            prog._spec = ps.copy()
            self.coll.programs[name] = prog

    # -- after load ----------------------------------------------------------

    def _fill_contents(self) -> None:
        """Write non-data contents (data sections were set before load)."""
        for key, m in self.coll.maps.items():
            ms = self.spec.maps.get(key)
            if ms is None or not ms.contents or ms.is_data_section or key in self.replacements:
                continue
            for k, v in ms.contents:
                m.update(k, self._resolve(v, key))

    def _resolve(self, v: Any, where: str) -> Any:
        if isinstance(v, str):
            obj = self.coll.programs.get(v) or self.coll.maps.get(v)
            if obj is None:
                raise KeyError(f"map {where}: contents refer to {v!r}, which is not in the collection")
            return obj
        return v

    def _bind_variables(self) -> None:
        for name, vs in self.spec.variables.items():
            m = self.coll.maps.get(vs.section)
            if m is not None:
                self.coll.variables[name] = Variable(name, m, vs.offset, vs.size, vs.type)


def _initial_value(lib: Any, m: Any) -> bytes:
    size = ctypes.c_size_t(0)
    ptr = lib.bpf_map__initial_value(m, ctypes.byref(size))
    return ctypes.string_at(ptr, size.value) if ptr else b""


def _libbpf_view(ps: ProgramSpec) -> Optional[bytes]:
    """The program's own code as libbpf should load it, or None when the
    user's changes need our own loader.

    ``ps.instructions`` is the program with its subprograms linked in (see
    ``_linker``); libbpf knows only the program's own unlinked code and
    relocates it by instruction index.  Slots the user left alone keep
    libbpf's bytes (unrelocated calls, map loads), changed ones take the
    user's, which only works while indexes and the subprograms stay put.
    """
    raw, linked = ps._elf_raw, ps._elf_insns
    if raw is None or linked is None:
        return None
    insns = ps.encoded_instructions()
    if insns == linked:
        return raw
    own = len(raw)
    if len(insns) != len(linked) or insns[own:] != linked[own:]:
        return None
    out = bytearray(raw)
    for off in range(0, own, 8):
        if insns[off:off + 8] != linked[off:off + 8]:
            out[off:off + 8] = insns[off:off + 8]
    return bytes(out)


class _LogTooSmall(Exception):
    pass


def _without_contents(ms: MapSpec) -> MapSpec:
    c = ms.copy()
    c.contents = []
    return c


_CORE_POISON = 0xBAD2310  # libbpf's poisoned-helper id for failed CO-RE relocations


def _core_relo_failures(log_text: str, warnings: List[str]) -> List[str]:
    """libbpf's lines about failed CO-RE relocations (empty when none failed)."""
    lines = [ln.strip() for ln in log_text.splitlines()]
    found = [ln for ln in lines if "CO-RE relocation" in ln and "failed" in ln]
    found += [w.strip() for w in warnings if re.search(r"relo #\d+:", w) and ("fail" in w or "no matching" in w)]
    if not found and (f"unknown#{_CORE_POISON}" in log_text or "<invalid CO-RE relocation>" in log_text):
        poisoned = [ln for ln in lines if f"unknown#{_CORE_POISON}" in ln or "invalid CO-RE" in ln]
        found = [f"poisoned instruction: {ln}" for ln in poisoned[:3]]
    return list(dict.fromkeys(found))


def _kernel_types_path(kernel_types: Any) -> Optional[str]:
    if kernel_types is None:
        return None
    if isinstance(kernel_types, (str, os.PathLike)):
        return os.fspath(kernel_types)
    path = getattr(kernel_types, "path", None)
    if path:
        return os.fspath(path)
    raw = getattr(kernel_types, "raw", None)
    if raw is None:
        raise TypeError("kernel_types must be a path or an ebpf.btf.Spec")
    import tempfile

    # libbpf 1.1 only takes a path for custom BTF.  It reads the file during
    # bpf_object__load, after this returns, so the file is removed at exit;
    # the same bytes reuse one file instead of leaking one per load.
    import atexit
    import hashlib

    data = bytes(raw)
    digest = hashlib.sha256(data).hexdigest()
    cached = _CUSTOM_BTF_FILES.get(digest)
    if cached is not None and os.path.exists(cached):
        return cached
    f = tempfile.NamedTemporaryFile(prefix="ebpf-btf-", suffix=".btf", delete=False)
    with f:
        f.write(data)
    if not _CUSTOM_BTF_FILES:
        atexit.register(_remove_custom_btf_files)
    _CUSTOM_BTF_FILES[digest] = f.name
    return f.name


_CUSTOM_BTF_FILES: Dict[str, str] = {}


def _remove_custom_btf_files() -> None:
    for path in _CUSTOM_BTF_FILES.values():
        try:
            os.unlink(path)
        except OSError:
            pass
    _CUSTOM_BTF_FILES.clear()


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
                    parts = [eval(part, scope) for part in ann.split("|")]  # noqa: S307 - the class's own annotation
                    ann = typing.Union[tuple(parts)] if len(parts) > 1 else parts[0]
                out[attr] = ann
            except Exception as exc:
                raise TypeError(f"cannot read the annotation {attr}: {ann} of {cls.__name__}: {exc}") from None
    return out


_UNION_ORIGINS: Tuple[Any, ...] = (typing.Union,) + ((types.UnionType,) if hasattr(types, "UnionType") else ())


def _wanted(objs: Any) -> Dict[str, Tuple[str, type, bool]]:
    """attribute -> (spec name, Map or Program, optional) from annotations.

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
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            optional = len(args) < len(typing.get_args(hint))
            hint = args[0] if len(args) == 1 else hint
        if hint in (Map, Program):
            out[attr] = (name, hint, optional)
    if not out:
        raise TypeError(f"{cls.__name__} has no attributes annotated as ebpf.Map or ebpf.Program")
    return out


def load_and_assign(spec: CollectionSpec, objs: Any, **options: Any) -> Any:
    """See :meth:`CollectionSpec.load_and_assign`."""
    wanted = _wanted(objs)
    absent = set()
    for attr, (n, t, optional) in wanted.items():
        pool = spec.programs if t is Program else spec.maps
        if n not in pool:
            if not optional:
                raise KeyError(f"{'program' if t is Program else 'map'} {n!r} is not in the spec")
            absent.add(attr)
    present = {a: (n, t) for a, (n, t, _) in wanted.items() if a not in absent}
    progs = {n for n, t in present.values() if t is Program}
    maps = {n for n, t in present.values() if t is Map}
    asked_maps = set(maps)
    # Everything the wanted programs use, and what map contents refer to.
    changed = True
    while changed:
        changed = False
        for p in list(progs):
            for m in spec._references.get(p, []):
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
            users = sorted(p for p in progs if m in spec._references.get(p, []))
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
        given: Dict[Tuple[str, type], Any] = {}
        for attr, (name, t) in present.items():
            if (name, t) in given:
                obj = given[(name, t)].clone()  # each attribute owns its handle
            else:
                obj = coll.detach_program(name) if t is Program else coll.detach_map(name)
                given[(name, t)] = obj
            setattr(target, attr, obj)
    finally:
        coll.close()
    return target

