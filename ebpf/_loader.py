"""The loader: specs into kernel objects, for Collection and Program alike.

Two ways into the kernel, one way out when it refuses:

* :func:`load_object` reopens a spec's ELF with libbpf (so CO-RE, BTF and
  relocations stay libbpf's job), applies every field of the spec to
  libbpf's object, loads the programs and maps asked for, and hands back
  duplicates of their fds.  :class:`ebpf.Collection` loads this way, and so
  does a CO-RE program loaded alone (:func:`load_program`): only it and the
  maps it uses are created, no Collection is built.
* :func:`load_own` loads one program with ``bpf_prog_load`` from its
  instructions: programs built by hand, and ELF programs edited beyond what
  libbpf can relocate.

:func:`load_error` turns every refusal into one typed error (policy,
verifier, CO-RE relocation, missing program type).  This is the only module
that reads the private origin of a spec.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import os
import re
import tempfile
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union, cast

from . import _elf, _libbpf, features
from ._fd import check_pin_path, open_pinned
from ._privilege import load_refusal
from .errors import ClosedError, EBPFError, InvalidObjectError, KeyNotExistError, NotSupportedError, VerifierError
from .info import map_info, program_info
from .maps import MAP_IN_MAP_TYPES, Map, check_compatible
from .names import object_name
from .spec import CollectionSpec, MapSpec, ProgramSpec, _decoded, _ObjectOrigin
from .types import AttachType, MapType, PinType, ProgramType

if TYPE_CHECKING:
    from .btf import Spec as BTFSpec

__all__ = [
    "LOG_SIZE_MIN", "LOG_SIZE_MAX", "TRACING_TYPES", "ObjectLoad", "load_object", "load_program", "load_own",
    "load_error", "verifier_error", "references", "elf_maps", "elf_of", "elf_map_name", "fill_contents", "pin_file",
    "check_attach_target", "attach_target_btf_id",
]

KernelTypes = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, "BTFSpec", None]
"""What ``kernel_types=`` takes: the BTF that CO-RE relocates against, as a
path (raw BTF or an ELF with BTF), raw BTF bytes or an ``ebpf.btf.Spec``."""

RelocationTargets = Optional[Sequence["BTFSpec"]]
"""What ``extra_relocation_targets=`` takes: BTF searched beside the kernel
types (a kernel module's, say), as ``ebpf.btf.Spec`` objects."""

# Smallest and largest verifier log buffers tried.  The kernel caps the
# size at UINT32_MAX >> 2; a log that big is a runaway, so stop at 256 MiB.
LOG_SIZE_MIN = 64 * 1024
LOG_SIZE_MAX = 256 * 1024 * 1024

# Program types the kernel refuses under lockdown (and that then answer
# EPERM with an empty log, leaving nothing else to explain the refusal).
TRACING_TYPES = frozenset({ProgramType.TRACING, ProgramType.LSM, ProgramType.EXT})

# Map types whose definition libbpf fills in or rounds while loading (the
# number of CPUs, page-sized ring buffers, the kernel's struct_ops value).
_ADJUSTED_AT_LOAD = frozenset({MapType.PERF_EVENT_ARRAY, MapType.RINGBUF, MapType.USER_RINGBUF, MapType.STRUCT_OPS})

_FAILED_PROG = re.compile(r"prog '([^']+)': failed to load: (-?\d+)")
_CORE_POISON = 0xBAD2310  # libbpf's poisoned-helper id for failed CO-RE relocations


# --------------------------------------------------------------------------
# What the spec's origin says


def references(spec: CollectionSpec, program: str) -> Tuple[str, ...]:
    """The maps the linked code of ``program`` (read from ELF) loads."""
    origin = spec._origin
    return tuple(origin.references.get(program, ())) if origin is not None else ()


def elf_maps(spec: CollectionSpec) -> Optional[Set[str]]:
    """The keys of the maps ``spec``'s ELF defines, or None for a spec built
    by hand (maps added to a spec after reading are not among them)."""
    return set(spec._origin.map_keys.values()) if spec._origin is not None else None


def elf_of(spec: CollectionSpec) -> Optional[_elf.ElfFile]:
    """The ELF ``spec`` was read from, or None for a spec built by hand."""
    return _elf.ElfFile(spec._origin.elf) if spec._origin is not None else None


def elf_map_name(spec: CollectionSpec, key: str) -> str:
    """The ELF's (libbpf's) name of the map ``spec.maps[key]``."""
    if spec._origin is not None:
        for elf_name, k in spec._origin.map_keys.items():
            if k == key:
                return elf_name
    return key


# --------------------------------------------------------------------------
# Refusals


def verifier_error(name: str, err: int, log: str, truncated: bool) -> VerifierError:
    lines = log.rstrip("\n").split("\n") if log else []
    return VerifierError(
        f"program {name}: load rejected by the verifier: {os.strerror(err)}",
        lines,
        truncated=truncated,
        errno=err,
        program=name,
    )


def load_error(ps: ProgramSpec, err: int, log: str, truncated: bool, warnings: Sequence[str] = (),
               *, by_kernel: bool = True) -> EBPFError:
    """The error for a program whose load failed with ``err``.

    A refusal by policy is a :class:`KernelPolicyError`; one by the verifier
    a :class:`VerifierError` with its log (saying so when the cause is a
    failed CO-RE relocation); a type this kernel lacks a
    :class:`NotSupportedError`.  ``warnings`` are libbpf's messages of this
    load; ``by_kernel`` says the errno came from ``bpf()`` itself (libbpf
    also fails loads for reasons of its own).
    """
    refused = load_refusal(ps.name, ps.type, err, log, attach_type=ps.attach_type, target=ps.attach_to)
    if refused is not None:
        return refused
    if log.strip():
        exc = verifier_error(ps.name, err, log, truncated)
        core = _core_relo_failures(log, warnings)
        if core:
            # libbpf 1.1 does not fail the load on a failed CO-RE
            # relocation: it poisons the instruction (a call to helper
            # 0xbad2310) and the verifier rejects it.  Say so, with
            # libbpf's own line naming the type and field.
            exc.args = (
                f"program {ps.name}: CO-RE relocation failed (the target BTF lacks a type or field "
                f"the program accesses): " + "; ".join(core),
            )
        return exc
    if by_kernel and err == errno.EINVAL:
        features.have_program_type(ps.type)  # raises NotSupportedError for unknown types
    return _libbpf.errno_error(err, f"loading program {ps.name}" + _hint(warnings), warnings)


def _hint(warnings: Sequence[str]) -> str:
    # errno_error appends the last warning itself.
    hint = "; ".join(warnings[-3:-1])
    return f": {hint}" if hint else ""


def _core_relo_failures(log_text: str, warnings: Sequence[str]) -> List[str]:
    """libbpf's lines about failed CO-RE relocations (empty when none failed)."""
    lines = [ln.strip() for ln in log_text.splitlines()]
    found = [ln for ln in lines if "CO-RE relocation" in ln and "failed" in ln]
    found += [w.strip() for w in warnings if re.search(r"relo #\d+:", w) and ("fail" in w or "no matching" in w)]
    if not found and (f"unknown#{_CORE_POISON}" in log_text or "<invalid CO-RE relocation>" in log_text):
        poisoned = [ln for ln in lines if f"unknown#{_CORE_POISON}" in ln or "invalid CO-RE" in ln]
        found = [f"poisoned instruction: {ln}" for ln in poisoned[:3]]
    return list(dict.fromkeys(found))


# --------------------------------------------------------------------------
# One program with bpf_prog_load


def load_program(ps: ProgramSpec, maps: Mapping[str, Any], log_level: int = 0, log_size: Optional[int] = None,
                 kernel_types: KernelTypes = None,
                 extra_relocation_targets: RelocationTargets = None) -> Tuple[int, str]:
    """Load one program; returns its fd and the verifier's log.

    A program read from ELF with CO-RE relocations or externs goes through
    libbpf with the object it came from: only this program is loaded, the
    ``maps`` given replace the object's (they must be compatible), and the
    others it uses are created for it and live as long as it does.
    """
    check_attach_target(ps)
    origin = ps._origin
    if origin is None or origin.collection is None:
        _check_kernel_types(kernel_types)
        _check_extra_targets(extra_relocation_targets)  # nothing to relocate, but a wrong type is still wrong
        return load_own(ps, maps, log_level, log_size)
    cs = origin.collection
    unknown = sorted(set(maps) - set(cs.maps))
    if unknown:
        raise KeyError(f"program {ps.name}: maps {unknown} are not in its object")
    wanted = set(references(cs, ps.name)) | set(maps)
    loaded = load_object(cs, programs={ps.name}, maps=wanted, replacements=dict(maps), log_level=log_level,
                         log_size=log_size, kernel_types=kernel_types, program_specs={ps.name: ps},
                         extra_relocation_targets=extra_relocation_targets)
    created: Dict[str, Map] = {}
    try:
        if ps.name in loaded.separate:
            raise _core_edited(ps)
        for key in list(loaded.maps):
            fd, created_spec = loaded.maps.pop(key)
            created[key] = Map._from_fd(fd, created_spec)
        fd, log = loaded.programs[ps.name]
        fill_contents(cs, created, {ps.name: fd}, skip=set(maps))
        loaded.programs.pop(ps.name)
        return fd, log
    finally:
        loaded.close()
        for m in created.values():
            m.close()  # the program holds the maps it uses


def _core_edited(ps: ProgramSpec) -> NotSupportedError:
    # Loading it ourselves would run it with unrelocated field offsets.
    return NotSupportedError(
        f"program {ps.name}: it has CO-RE relocations and its instructions changed in a way "
        "libbpf cannot relocate (only in-place edits of the program's own instructions keep them)"
    )


def load_own(ps: ProgramSpec, maps: Mapping[str, Any], log_level: int = 0,
             log_size: Optional[int] = None) -> Tuple[int, str]:
    """Load one program from its instructions with ``bpf_prog_load``."""
    if ps._origin is not None and ps._origin.collection is not None:
        raise _core_edited(ps)
    check_attach_target(ps)
    insns = _resolved_instructions(ps, maps)
    if not insns:
        raise ValueError(f"program {ps.name}: no instructions")
    if not ps.license:
        raise ValueError(f"program {ps.name}: license is empty (the kernel needs one, e.g. 'GPL')")
    name = object_name(ps.name) if features.object_names_supported() else ""
    with _attach_targets([ps]) as target_fds:
        attach_prog_fd = target_fds.get(ps.name, 0)
        attach_btf_id = 0
        if attach_prog_fd:
            attach_btf_id = attach_target_btf_id(ps, attach_prog_fd)
        elif ps.type in TRACING_TYPES and ps.attach_to and ps.type != ProgramType.EXT:
            attach_btf_id = _vmlinux_btf_id(ps.attach_to, ps.attach_type)
        return _load_own(ps, insns, name, attach_prog_fd, attach_btf_id, log_level, log_size)


def _load_own(ps: ProgramSpec, insns: bytes, name: str, attach_prog_fd: int, attach_btf_id: int, log_level: int,
              log_size: Optional[int]) -> Tuple[int, str]:
    btf_fd, func_info = _func_info(ps)
    try:
        size = max(log_size or LOG_SIZE_MIN, 1024)
        level = log_level
        while True:
            r = _libbpf.prog_load(
                int(ps.type), name, ps.license, insns,
                expected_attach_type=int(ps.attach_type), flags=ps.flags, kern_version=ps.kernel_version,
                attach_btf_id=attach_btf_id, attach_prog_fd=attach_prog_fd, btf_fd=btf_fd, func_info=func_info,
                log_level=level, log_size=size,
            )
            if r.fd >= 0:
                return r.fd, r.log
            if r.errno == errno.ENOSPC and level and size < LOG_SIZE_MAX:
                size = min(size * 8, LOG_SIZE_MAX)
                continue
            if level == 0 and r.errno in (errno.EACCES, errno.EINVAL, errno.EPERM, errno.E2BIG):
                level = 1  # retry once with a log so the error can say why
                continue
            raise load_error(ps, r.errno, r.log, r.log_full or r.errno == errno.ENOSPC)
    finally:
        if btf_fd >= 0:
            os.close(btf_fd)


def _resolved_instructions(ps: ProgramSpec, maps: Mapping[str, Any]) -> bytes:
    """Encode ``ps.instructions`` with map references turned into fds."""
    insns = ps.instructions
    if not hasattr(insns, "resolve_maps"):
        return ps.encoded_instructions()
    from .asm import Pseudo  # a lazily loaded subpackage
    from .asm.opcodes import LDDW

    insns = insns.copy()
    for i, ins in enumerate(insns):
        # A map load straight from an ELF still has src 0; libbpf would mark
        # it as a map fd load while relocating, so do the same here.
        if ins.reference is not None and ins.opcode == LDDW and ins.src == 0 and not ins.reference.startswith("."):
            insns[i] = ins.replace(src=Pseudo.MAP_FD)
    insns.resolve_maps(maps)
    return bytes(insns.encode())


def _func_info(ps: ProgramSpec) -> Tuple[int, Optional[List[int]]]:
    """BTF fd and ``bpf_func_info`` records for an ELF program loaded alone.

    One record per function in the linked instructions: the program at slot
    0 and each ``symbol`` at its slot, typed by the FUNC of that name in the
    object's BTF.  Without a FUNC for each of them, or when the kernel will
    not take the BTF, the program loads without (as before); only callbacks
    and global functions strictly need it.
    """
    btf = ps._origin.btf if ps._origin is not None else None
    insns = ps.instructions
    if btf is None or not hasattr(insns, "symbols"):
        return -1, None
    try:
        slots = insns.raw_offsets()
        funcs = [(0, ps.name)] + sorted((slots[i], sym) for sym, i in insns.symbols().items() if i)
        ids = [(slot, btf.type_id(btf.type_by_name(sym, "func"))) for slot, sym in funcs]
    except Exception:
        return -1, None
    try:
        btf_fd = _libbpf.btf_load(btf.raw)
    except EBPFError:
        return -1, None
    return btf_fd, [v for pair in ids for v in pair]


def _vmlinux_btf_id(target: str, attach_type: Any) -> int:
    try:
        return _libbpf.find_vmlinux_btf_id(target, int(attach_type))
    except NotSupportedError:
        raise
    except EBPFError as exc:
        raise KeyNotExistError(f"attach target {target!r} not found in kernel BTF") from exc


# --------------------------------------------------------------------------
# Attach targets: programs loaded against another BPF program


# (program type, attach type) that load against a function of another
# program (cilium's findTargetInProgram): freplace, fentry and fexit.
_PROGRAM_TARGET_KINDS = frozenset({
    (ProgramType.EXT, AttachType.NONE),
    (ProgramType.TRACING, AttachType.TRACE_FENTRY),
    (ProgramType.TRACING, AttachType.TRACE_FEXIT),
})


def check_attach_target(ps: ProgramSpec) -> None:
    """Refuse, before any syscall, an ``attach_target`` the kernel could
    not take: not a Program, a program type other than EXT or TRACING
    fentry/fexit, or no function named in ``attach_to``."""
    target = ps.attach_target
    if target is None:
        return
    if getattr(target, "_kind", None) != "program" or not hasattr(target, "_using"):
        raise TypeError(f"program {ps.name}: attach_target must be a loaded ebpf.Program, "
                        f"not {type(target).__name__}")
    if (ps.type, ps.attach_type) not in _PROGRAM_TARGET_KINDS:
        t = getattr(ps.type, "name", ps.type)
        at = getattr(ps.attach_type, "name", ps.attach_type)
        raise InvalidObjectError(
            f"program {ps.name}: only EXT programs (freplace) and TRACING programs with attach type "
            f"TRACE_FENTRY or TRACE_FEXIT load against another program, not {t} with attach type {at}")
    if not ps.attach_to:
        raise InvalidObjectError(f"program {ps.name}: attach_target needs attach_to, the name of the "
                                 f"function of program {target.name} to attach to")


@contextlib.contextmanager
def _attach_targets(specs: Sequence[ProgramSpec]) -> Any:
    """name -> fd of each spec's attach target, held in flight (so that a
    concurrent close() cannot hand the number to another object) until the
    block ends."""
    fds: Dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        for ps in specs:
            if ps.attach_target is not None:
                try:
                    fds[ps.name] = stack.enter_context(ps.attach_target._using())
                except ClosedError:
                    raise ClosedError(f"attach_target of program {ps.name} (a program)") from None
        yield fds


def attach_target_btf_id(ps: ProgramSpec, target_fd: int) -> int:
    """The BTF id of the FUNC ``ps.attach_to`` in the BTF of the program
    behind ``target_fd`` (what ``attach_btf_id`` means with ``attach_prog_fd``)."""
    from . import btf  # a lazily loaded subpackage

    target = ps.attach_target
    tname = getattr(target, "name", "?")
    info = program_info(target_fd)
    if not info.btf_id:
        raise NotSupportedError(f"program {ps.name}: attach target program {tname} has no BTF",
                                detail="load it with BTF (from an ELF object built with -g) to attach to its functions")
    with btf.Handle.from_id(info.btf_id) as h:
        types = h.spec()
    try:
        func = types.type_by_name(ps.attach_to, btf.Func)
    except btf.AmbiguousTypeError:
        raise InvalidObjectError(f"program {ps.name}: attach target function {ps.attach_to!r} names several "
                                 f"functions in the BTF of program {tname}") from None
    except btf.TypeNotFoundError:
        funcs = sorted(f.name for f in types if isinstance(f, btf.Func))
        raise KeyNotExistError(
            f"program {ps.name}: attach target function {ps.attach_to!r} is not in the BTF of program {tname} "
            f"(its functions: {', '.join(funcs) or 'none'})") from None
    return int(types.type_id(func))


# --------------------------------------------------------------------------
# Objects through libbpf


class ObjectLoad:
    """What :func:`load_object` created: fds the caller takes over.

    ``maps``: key -> (fd, the MapSpec as created); ``programs``: name ->
    (fd, verifier log); ``pinned``: key -> pin path of maps pinned by name;
    ``separate``: programs the spec wants that libbpf could not load (added
    after reading, or edited beyond what libbpf relocates) -- for
    :func:`load_own`.  :meth:`close` closes every fd not taken (popped).
    """

    def __init__(self) -> None:
        self.maps: Dict[str, Tuple[int, MapSpec]] = {}
        self.programs: Dict[str, Tuple[int, str]] = {}
        self.pinned: Dict[str, str] = {}
        self.separate: List[str] = []

    def close(self) -> None:
        for fd, _ in list(self.maps.values()) + list(self.programs.values()):
            _libbpf.close_fd(fd)
        self.maps.clear()
        self.programs.clear()


def load_object(
    spec: CollectionSpec,
    *,
    programs: Optional[Set[str]] = None,
    maps: Optional[Set[str]] = None,
    replacements: Optional[Mapping[str, Map]] = None,
    pin_path: Optional[str] = None,
    log_level: int = 0,
    log_size: Optional[int] = None,
    kernel_types: KernelTypes = None,
    program_specs: Optional[Mapping[str, ProgramSpec]] = None,
    extra_relocation_targets: RelocationTargets = None,
) -> ObjectLoad:
    """Load the maps and programs of ``spec`` that are in its ELF.

    ``programs``/``maps`` limit what is loaded (None: everything);
    ``replacements`` are existing maps used instead of creating new ones;
    maps pinned by name are reused or pinned under ``pin_path``;
    ``program_specs`` override ``spec.programs``; CO-RE relocates against
    ``kernel_types`` (default: the running kernel's) and
    ``extra_relocation_targets``.
    """
    if spec._origin is None:
        raise ValueError("the spec was not read from an ELF object")
    if pin_path is not None:
        check_pin_path(os.path.join(pin_path, "x"))
    job = _ObjectJob(spec, programs, maps, dict(replacements or {}), pin_path, log_level, program_specs)
    for ps in job.wanted_specs():
        check_attach_target(ps)
    btf_path = _kernel_types_file(kernel_types, extra_relocation_targets)
    # Without log_level nothing is logged unless a load fails: then the
    # load is repeated with log buffers (allocating them for every program
    # of every load costs more than the rare second load).
    size = max(log_size or LOG_SIZE_MIN, 1024) if log_level else 0
    while True:
        try:
            return job.run(btf_path, size)
        except _LogTooSmall:
            if size >= LOG_SIZE_MAX:
                raise
            size = min(size * 8, LOG_SIZE_MAX) if size else max(log_size or LOG_SIZE_MIN, 1024)


class _LogTooSmall(Exception):
    """The load failed and its logs were cut short (or not kept)."""


class _ObjectJob:
    """One load of a spec's ELF through libbpf."""

    def __init__(self, spec: CollectionSpec, programs: Optional[Set[str]], maps: Optional[Set[str]],
                 replacements: Dict[str, Map], pin_path: Optional[str], log_level: int,
                 program_specs: Optional[Mapping[str, ProgramSpec]]) -> None:
        self.spec = spec
        assert spec._origin is not None
        self.origin: _ObjectOrigin = spec._origin
        self.only_programs = programs
        self.only_maps = maps
        self.replacements = replacements
        self.pin_path = pin_path
        self.log_level = log_level
        self.program_specs = dict(spec.programs)
        self.program_specs.update(program_specs or {})
        self.target_fds: Dict[str, int] = {}

    def wanted_map(self, key: str) -> bool:
        return key in self.spec.maps and (self.only_maps is None or key in self.only_maps)

    def wanted_program(self, name: str) -> bool:
        return name in self.program_specs and (self.only_programs is None or name in self.only_programs)

    def wanted_specs(self) -> List[ProgramSpec]:
        return [ps for name, ps in self.program_specs.items() if self.wanted_program(name)]

    def pin_file(self, ms: MapSpec) -> str:
        return pin_file(self.pin_path, ms)

    def run(self, btf_path: Optional[str], log_size: int) -> ObjectLoad:
        out = ObjectLoad()
        temp_fds: List[int] = []
        try:
            with _attach_targets(self.wanted_specs()) as self.target_fds, \
                    _libbpf.open_object(self.origin.elf, self.origin.object_name, btf_path) as obj:
                created = self.prepare_maps(obj, temp_fds)
                progs = self.prepare_programs(obj, log_size, out)
                err = obj.load()
                if err:
                    self.raise_load_error(err, progs, log_size)
                for key, m, d in created:
                    out.maps[key] = (os.dup(m.fd), self.created_spec(key, m, d))
                    ms = self.spec.maps[key]
                    if ms.pinning == PinType.BY_NAME and self.pin_path is not None and key not in self.replacements:
                        out.pinned[key] = os.path.join(self.pin_path, ms.name)
                for name, p in progs:
                    log = p.log()[0] if self.log_level else ""
                    out.programs[name] = (os.dup(p.fd), log)
        except BaseException:
            out.close()
            raise
        finally:
            for fd in temp_fds:
                os.close(fd)
        return out

    # -- maps --------------------------------------------------------------------

    def prepare_maps(self, obj: _libbpf.BPFObject,
                     temp_fds: List[int]) -> List[Tuple[str, _libbpf.ObjectMap, Optional[_libbpf.MapDefinition]]]:
        """Apply the spec to libbpf's maps.  Returns the maps to create, each
        with its definition when loading will not change it (else None)."""
        created = []
        definitions = self.origin.definitions
        for m in obj.maps():
            name = m.name
            d = definitions.get(name) or m.definition()
            key = self.origin.map_keys.get(name, name)
            ms = self.spec.maps.get(key)
            if ms is None or not self.wanted_map(key):
                m.set_autocreate(False)
                if d.type == MapType.PROG_ARRAY:
                    # libbpf 1.1 fills ELF-initialised prog array slots even
                    # for maps it did not create (and fails with EBADF); it
                    # skips maps of other types, so retype the unused map.
                    m.set("type", int(MapType.ARRAY))
            else:
                same = self.apply_map(m, d, key, ms, temp_fds)
                created.append((key, m, d if same else None))
        return created

    def apply_map(self, m: _libbpf.ObjectMap, d: _libbpf.MapDefinition, key: str, ms: MapSpec,
                  temp_fds: List[int]) -> bool:
        """Make libbpf's map what ``ms`` says; returns whether its definition
        stays ``d`` through the load (nothing set, no fd reused, no size
        that libbpf adjusts at load)."""
        same = d.type not in _ADJUSTED_AT_LOAD
        for field in _libbpf.ObjectMap.SETTERS:
            want = int(getattr(ms, field))
            if want != getattr(d, field):
                m.set(field, want)
                same = False
        if d.internal and ms.contents:
            self.apply_image(m, key, ms)
        if ms.type in MAP_IN_MAP_TYPES and ms.inner_map is not None:
            inner = m.inner_map()
            if ms.inner_map != (_as_read(inner) if inner is not None else None):
                tmpl = Map(_without_contents(ms.inner_map))
                temp_fds.append(tmpl.detach_fd())
                m.set_inner_map_fd(temp_fds[-1])

        if key in self.replacements:
            r = self.replacements[key]
            check_compatible(ms, r.info(), f"map {key}")
            m.reuse_fd(r.fd)
            return False
        if ms.pinning == PinType.BY_NAME:
            path = self.pin_file(ms)
            if os.path.exists(path):
                fd = open_pinned(path, kind="map")
                try:
                    check_compatible(ms, map_info(fd, fdinfo=False), f"map {key} pinned at {path}")
                finally:
                    os.close(fd)
            m.set_pin_path(path)
            return False
        if d.pinned:
            m.set_pin_path(None)
        if ms.name != key and not d.internal:
            # libbpf 1.1 cannot rename a map: create it here and hand it over.
            own = Map(_without_contents(ms))
            temp_fds.append(own.detach_fd())
            m.reuse_fd(temp_fds[-1])
            return False
        return same

    def apply_image(self, m: _libbpf.ObjectMap, key: str, ms: MapSpec) -> None:
        image = ms.contents[0][1]
        as_read = self.origin.images.get(key)
        if image is as_read:
            return  # unchanged (and a .bss may be large: do not touch it)
        image = bytes(image)
        if len(image) != ms.value_size:
            raise InvalidObjectError(f"map {key}: contents are {len(image)} bytes, value_size is {ms.value_size}")
        if image == as_read:
            return
        if key == ".kconfig":
            # libbpf computes these from the running kernel at load.
            raise NotSupportedError(".kconfig values set in the spec", detail="libbpf fills them in at load time")
        m.set_initial_value(image)

    def created_spec(self, key: str, m: _libbpf.ObjectMap, d: Optional[_libbpf.MapDefinition]) -> MapSpec:
        """The spec of a map as libbpf created it, with the spec's name,
        pinning, BTF types and inner map."""
        if d is None:
            d = m.definition()
        ms = self.spec.maps[key]
        created = MapSpec(
            name=ms.name, type=cast(MapType, d.type), key_size=d.key_size, value_size=d.value_size,
            max_entries=d.max_entries,
            flags=d.flags, pinning=ms.pinning, inner_map=ms.inner_map.copy() if ms.inner_map is not None else None,
            key=ms.key, value=ms.value, numa_node=d.numa_node, map_extra=d.map_extra,
        )
        if d.internal:
            # libbpf computes .kconfig at load; other images are the spec's.
            image = m.initial_value() if key == ".kconfig" or not ms.contents else ms.contents[0][1]
            created.contents = [(0, image)]
        return created

    # -- programs ------------------------------------------------------------------

    def prepare_programs(self, obj: _libbpf.BPFObject, log_size: int,
                         out: ObjectLoad) -> List[Tuple[str, _libbpf.ObjectProgram]]:
        loaded = []
        elf_license = next((p.license for p in self.spec.programs.values() if p._origin is not None), "")
        seen: Set[str] = set()
        for p in obj.programs():
            name = p.name
            seen.add(name)
            ps = self.program_specs.get(name)
            if ps is None or not self.wanted_program(name):
                p.set_autoload(False)
                continue
            insns = _libbpf_view(ps)
            if insns is None or ps.license != elf_license:
                # libbpf 1.1 relocates by instruction index recorded at open
                # and has no license setter: load this one ourselves.
                p.set_autoload(False)
                out.separate.append(name)
                continue
            if int(ps.type) != p.type:
                p.set_type(int(ps.type))
            if int(ps.attach_type) != p.expected_attach_type:
                p.set_expected_attach_type(int(ps.attach_type))
            if ps.flags != p.flags:
                p.set_flags(ps.flags)
            if insns is not ps._origin.raw:  # type: ignore[union-attr]
                p.set_instructions(insns)
            target_fd = self.target_fds.get(name)
            if target_fd is not None:
                attach_target_btf_id(ps, target_fd)  # a missing function is our typed error, not libbpf's
                p.set_attach_target(ps.attach_to, target_fd)
            elif ps.type in TRACING_TYPES and ps.attach_to and ps.section_name.split("/", 1)[-1] != ps.attach_to:
                p.set_attach_target(ps.attach_to)
            if log_size:
                p.set_log(log_size, self.log_level)
            loaded.append((name, p))
        # Programs the user added to the spec are not in the ELF.
        out.separate.extend(n for n in self.program_specs if n not in seen and self.wanted_program(n))
        return loaded

    def raise_load_error(self, err: int, progs: List[Tuple[str, _libbpf.ObjectProgram]], log_size: int) -> None:
        if not log_size:
            raise _LogTooSmall()
        warnings = _libbpf.warnings()
        failed = None
        for w in warnings:
            match = _FAILED_PROG.search(w)
            if match:
                failed = match.group(1)
                err = abs(int(match.group(2))) or err
        logs = {name: p.log() for name, p in progs}
        if failed is None:
            # Without log_level, only the program that failed has a log.
            with_log = [n for n, _ in progs if logs[n][0].strip()]
            if with_log and (err in (errno.EACCES, errno.EINVAL, errno.ENOSPC, errno.E2BIG) or not self.log_level):
                failed = with_log[-1]
        if failed is not None and failed in logs:
            text, full = logs[failed]
            if err == errno.ENOSPC or (full and err in (errno.EACCES, errno.EINVAL)):
                if log_size < LOG_SIZE_MAX:
                    raise _LogTooSmall()
            raise load_error(self.program_specs[failed], err, text, full, warnings, by_kernel=False)
        raise _libbpf.errno_error(err, "loading collection" + _hint(warnings), warnings)


def fill_contents(spec: CollectionSpec, maps: Mapping[str, Map], objects: Mapping[str, Any], skip: Set[str]) -> None:
    """Write the contents of the maps created from ``spec`` (data sections
    were set before load; ``skip`` holds replaced maps).  A content naming a
    program or map refers to ``objects`` or ``maps``."""
    for key, m in maps.items():
        ms = spec.maps.get(key)
        if ms is None or not ms.contents or ms.is_data_section or key in skip:
            continue
        for k, v in ms.contents:
            if isinstance(v, str):
                obj = objects.get(v)
                if obj is None:
                    obj = maps.get(v)
                if obj is None:
                    raise KeyError(f"map {key}: contents refer to {v!r}, which is not in the collection")
                v = obj
            m.update(k, v)


def pin_file(pin_path: Optional[str], ms: MapSpec) -> str:
    """Where a map with ``pinning=BY_NAME`` is pinned under ``pin_path``."""
    if pin_path is None:
        raise ValueError(f"map {ms.name} has pinning=BY_NAME: pass pin_path= (a directory on bpffs)")
    return os.path.join(pin_path, ms.name)


def _libbpf_view(ps: ProgramSpec) -> Optional[bytes]:
    """The program's own code as libbpf should load it, or None when the
    user's changes need our own loader.

    ``ps.instructions`` is the program with its subprograms linked in (see
    ``_linker``); libbpf knows only the program's own unlinked code and
    relocates it by instruction index.  Slots the user left alone keep
    libbpf's bytes (unrelocated calls, map loads), changed ones take the
    user's, which only works while indexes and the subprograms stay put.
    """
    origin = ps._origin
    if origin is None:
        return None
    raw = origin.raw
    if not _decoded(ps):
        return raw  # never looked at: exactly what the ELF holds
    linked = origin.linked()
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


def _as_read(m: _libbpf.ObjectMap) -> MapSpec:
    """An inner map template as the ELF defines it."""
    d = m.definition()
    inner = m.inner_map()
    return MapSpec(d.name, cast(MapType, d.type), d.key_size, d.value_size, d.max_entries, d.flags,
                   PinType.BY_NAME if d.pinned else PinType.NONE, _as_read(inner) if inner is not None else None,
                   numa_node=d.numa_node, map_extra=d.map_extra)


def _without_contents(ms: MapSpec) -> MapSpec:
    c = ms.copy()
    c.contents = []
    return c


# --------------------------------------------------------------------------
# Kernel types: BTF handed to libbpf for CO-RE, validated first


_KERNEL_BTF_DIR = "/sys/kernel/btf"


def _check_kernel_types(kernel_types: Any) -> None:
    if kernel_types is None or isinstance(kernel_types, (str, os.PathLike, bytes, bytearray, memoryview)):
        return
    if getattr(kernel_types, "raw", None) is None:
        raise TypeError("kernel_types must be a path, bytes or an ebpf.btf.Spec")


def _check_extra_targets(extra: RelocationTargets) -> List[BTFSpec]:
    """``extra_relocation_targets`` as a list of ``ebpf.btf.Spec``."""
    if extra is None:
        return []
    if isinstance(extra, (str, os.PathLike, bytes, bytearray, memoryview)) or not hasattr(extra, "__iter__"):
        raise TypeError("extra_relocation_targets must be a list of ebpf.btf.Spec (e.g. "
                        "btf.load_kernel_module_spec(name)), not a single value")
    out = list(extra)
    for t in out:
        if getattr(t, "raw", None) is None or not hasattr(t, "base"):
            raise TypeError(f"extra_relocation_targets: expected an ebpf.btf.Spec, not {type(t).__name__}")
    return out


def _kernel_types_file(kernel_types: KernelTypes, extra_targets: RelocationTargets = None) -> Optional[str]:
    """A file with the BTF to relocate against, for libbpf's ``btf_custom_path``.

    libbpf 1.1.2 trusts that file (a mutated one crashes it), so it is
    checked with the library's own validator first, and libbpf is given a
    private copy of exactly the bytes that were checked.  The kernel's own
    BTF (``/sys/kernel/btf/...``) is handed over as it is.  With
    ``extra_targets`` the file is the merge of the kernel types and them
    (see :mod:`ebpf._relocation_targets`).
    """
    _check_kernel_types(kernel_types)
    extra = _check_extra_targets(extra_targets)
    if extra:
        return _merged_targets_file(kernel_types, extra)
    if kernel_types is None:
        return None
    if isinstance(kernel_types, (str, os.PathLike)):
        path = os.fspath(kernel_types)
        if os.path.realpath(path).startswith(_KERNEL_BTF_DIR + os.sep):
            return path  # checked by the kernel, which wrote it
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise InvalidObjectError(f"kernel_types: cannot read {path}: {exc.strerror}", exc.errno) from None
    elif isinstance(kernel_types, (bytes, bytearray, memoryview)):
        data = bytes(kernel_types)
    else:
        data = bytes(kernel_types.raw)
        if getattr(kernel_types, "validated", False):  # checked when it was parsed
            return _kernel_btf_path(data) or _private_file(data)
    own = _kernel_btf_path(data)
    return own if own is not None else _validated_file(data)


def _kernel_btf_path(data: bytes) -> Optional[str]:
    """The kernel's own BTF file, if ``data`` is exactly its content (as
    from ``btf.load_kernel_spec()``): nothing to check then."""
    path = os.path.join(_KERNEL_BTF_DIR, "vmlinux")
    try:
        if os.path.getsize(path) != len(data):
            return None
        with open(path, "rb") as f:
            return path if f.read() == data else None
    except OSError:
        return None


def _merged_targets_file(kernel_types: Any, extra: Sequence[Any]) -> str:
    """The kernel types (the running kernel's vmlinux and modules when None)
    and ``extra`` merged into one checked file."""
    from . import btf  # a lazily loaded subpackage
    from ._relocation_targets import merge, running_kernel_modules
    from .btf.parse import RawBTF

    modules: List[RawBTF] = []
    base: Optional[RawBTF] = None
    if kernel_types is None:
        # The running kernel's vmlinux and modules: btf caches them parsed.
        kernel = btf.load_kernel_spec()
        base = kernel._raw
        data = base.data
        modules = [btf.load_kernel_module_spec(name)._raw for name in running_kernel_modules()]
        trusted = True  # the kernel wrote these
    elif getattr(kernel_types, "raw", None) is not None:
        if getattr(kernel_types, "base", None) is not None:
            raise InvalidObjectError("kernel_types: split BTF cannot be the base of extra relocation targets")
        data = bytes(kernel_types.raw)
        trusted = bool(getattr(kernel_types, "validated", False)) or _kernel_btf_path(data) is not None
    else:
        if isinstance(kernel_types, (str, os.PathLike)):
            with open(os.fspath(kernel_types), "rb") as f:
                data = f.read()
        else:
            data = bytes(kernel_types)
        trusted = _kernel_btf_path(data) is not None
        if not trusted:
            try:
                data = btf.load_spec(data).raw  # checks it; an ELF gives its .BTF
            except InvalidObjectError as exc:
                exc.args = (f"kernel_types: {exc}",) + exc.args[1:]
                raise
            trusted = True
    if not trusted:
        try:
            btf.validate(data)
        except InvalidObjectError as exc:
            exc.args = (f"kernel_types: {exc}",) + exc.args[1:]
            raise
    if base is None:
        # The running kernel's BTF is parsed once (cached); other data here.
        base = btf.load_kernel_spec()._raw if _kernel_btf_path(data) is not None else RawBTF(data)
    parts = list(modules)
    for i, t in enumerate(extra):
        try:
            if not getattr(t, "validated", False):
                btf.validate(t.raw, t.base)  # libbpf trusts what it is given
            if t.base is not None:
                if t.base.raw != data:
                    raise btf.BTFError("it is split BTF on other types than the kernel types it is merged with "
                                       "(a module's BTF must be split on those kernel types)")
                parts.append(RawBTF(t.raw, base))
            else:
                parts.append(RawBTF(t.raw))
        except InvalidObjectError as exc:
            exc.args = (f"extra_relocation_targets[{i}]: {exc}",) + exc.args[1:]
            raise
    return _private_file(merge(base, parts))


# sha256 of checked BTF -> the private file libbpf reads it from.  libbpf
# 1.1 reads the file during bpf_object__load, after the open returns, so
# files live until exit; the same bytes reuse one file.
_CHECKED_BTF_FILES: Dict[str, str] = {}


def _validated_file(data: bytes) -> str:
    cached = _CHECKED_BTF_FILES.get(hashlib.sha256(data).hexdigest())
    if cached is not None and os.path.exists(cached):
        return cached
    from . import btf  # a lazily loaded subpackage

    try:
        # An ELF (libbpf reads its .BTF) or raw BTF, checked as libbpf reads it.
        btf.load_spec(data)
    except InvalidObjectError as exc:  # BTFError is one
        exc.args = (f"kernel_types: {exc}",) + exc.args[1:]
        raise
    return _private_file(data)


def _private_file(data: bytes) -> str:
    """A file only this process writes, holding ``data`` (checked BTF)."""
    digest = hashlib.sha256(data).hexdigest()
    cached = _CHECKED_BTF_FILES.get(digest)
    if cached is not None and os.path.exists(cached):
        return cached
    with tempfile.NamedTemporaryFile(prefix="ebpf-btf-", suffix=".btf", delete=False) as f:
        f.write(data)
    if not _CHECKED_BTF_FILES:
        atexit.register(_remove_checked_files)
    _CHECKED_BTF_FILES[digest] = f.name
    return f.name


def _remove_checked_files() -> None:
    for path in _CHECKED_BTF_FILES.values():
        try:
            os.unlink(path)
        except OSError:
            pass
    _CHECKED_BTF_FILES.clear()

