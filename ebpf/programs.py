"""Programs: verified code in the kernel, runnable with BPF_PROG_TEST_RUN."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from . import _libbpf
from ._fd import FDOwner, open_pinned
from ._privilege import load_refusal
from .errors import (
    EBPFError,
    KeyNotExistError,
    NotSupportedError,
    VerifierError,
)
from .info import ProgramInfo, program_info
from .spec import ProgramSpec
from .types import AttachType, ProgramType

__all__ = ["Program", "RunResult", "new_program", "load_pinned_program", "program_from_id"]

_EINTR, _ENOSPC, _EPERM, _EACCES, _EINVAL = 4, 28, 1, 13, 22

# Smallest and largest verifier log buffers tried.  The kernel caps the
# size at UINT32_MAX >> 2; a log that big is a runaway, so stop at 256 MiB.
LOG_SIZE_MIN = 64 * 1024
LOG_SIZE_MAX = 256 * 1024 * 1024

# Program types the kernel refuses under lockdown (and that then answer
# EPERM with an empty log, leaving nothing else to explain the refusal).
TRACING_TYPES = frozenset({ProgramType.TRACING, ProgramType.LSM, ProgramType.EXT})


@dataclass(frozen=True)
class RunResult:
    """Outcome of :meth:`Program.run`."""

    retval: int
    data: bytes
    ctx: Optional[bytes]
    duration_ns: int


_CTX_IN_PLACE = frozenset({ProgramType.RAW_TRACEPOINT, ProgramType.SYSCALL, ProgramType.TRACING})


def verifier_error(name: str, err: int, log: str, truncated: bool) -> VerifierError:
    lines = log.rstrip("\n").split("\n") if log else []
    return VerifierError(
        f"program {name}: load rejected by the verifier: {os.strerror(err)}",
        lines,
        truncated=truncated,
        errno=err,
        program=name,
    )


class Program(FDOwner):
    """A loaded program.

    Create one from a :class:`ProgramSpec` (``Program(spec)``; ``maps``
    resolves symbolic map references of ``ebpf.asm`` instructions), get them
    from a :class:`~ebpf.Collection`, or open a pin with
    :func:`load_pinned_program`.  ``verifier_log`` holds the verifier's output
    when ``log_level`` > 0.
    """

    _kind = "program"

    def __init__(
        self,
        spec: ProgramSpec,
        *,
        maps: Optional[Mapping[str, Any]] = None,
        log_level: int = 0,
        log_size: Optional[int] = None,
        _via_object: bool = True,
    ) -> None:
        if spec._collection is not None and not _via_object:
            # Loading it ourselves would run it with unrelocated field offsets.
            raise NotSupportedError(
                f"program {spec.name}: it has CO-RE relocations and its instructions changed in a way "
                "libbpf cannot relocate (only in-place edits of the program's own instructions keep them)"
            )
        if spec._collection is not None:
            fd, log = _load_core(spec, maps or {}, log_level, log_size)
        else:
            fd, log = _load(spec, maps or {}, log_level, log_size)
        self._setup(fd, spec.name, spec.type, spec.attach_type, log)
        self._spec = spec.copy()

    @classmethod
    def _from_fd(cls, fd: int, name: Optional[str] = None, ptype: Any = None, attach_type: Any = AttachType.NONE, log: str = "") -> "Program":
        self = cls.__new__(cls)
        if name is None or ptype is None:
            try:
                info = program_info(fd)
            except BaseException:
                os.close(fd)
                raise
            name = name if name is not None else info.name
            ptype = ptype if ptype is not None else info.type
        self._setup(fd, name, ptype, attach_type, log)
        self._spec = None
        return self

    def _setup(self, fd: int, name: str, ptype: Any, attach_type: Any, log: str) -> None:
        FDOwner.__init__(self, fd)
        self._name = name
        self._type = ptype
        self._attach_type = attach_type
        self._log = log

    @property
    def name(self) -> str:
        return self._name

    @property
    def type(self) -> ProgramType:
        return self._type

    @property
    def attach_type(self) -> AttachType:
        return self._attach_type

    @property
    def verifier_log(self) -> str:
        """The verifier's log of this program's load (empty with log_level 0)."""
        return self._log

    @property
    def spec(self) -> Optional[ProgramSpec]:
        """The spec the program was loaded from, if known."""
        return self._spec.copy() if self._spec is not None else None

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"fd={self._fd}"
        t = self._type.name if isinstance(self._type, ProgramType) else self._type
        return f"<Program {self._name!r} {t} {state}>"

    def info(self) -> ProgramInfo:
        """What the kernel reports about this program."""
        return program_info(self.fd)

    def clone(self) -> "Program":
        """A second handle on the same program (a duplicated fd)."""
        p = Program._from_fd(self._dup(), self._name, self._type, self._attach_type, self._log)
        p._spec = self._spec
        return p

    # -- BPF_PROG_TEST_RUN ---------------------------------------------------

    def run(
        self,
        data: bytes = b"",
        ctx: Optional[bytes] = None,
        repeat: int = 1,
        *,
        data_out_size: Optional[int] = None,
        flags: int = 0,
        cpu: int = 0,
    ) -> RunResult:
        """Run the program once (or ``repeat`` times) on ``data``/``ctx``.

        Returns the return value, the packet and context as the program left
        them, and the mean duration per run.  Raises NotSupportedError for
        program types the kernel cannot test-run.
        """
        if repeat < 1:
            raise ValueError("repeat must be at least 1")
        data = bytes(data)
        out_size = data_out_size if data_out_size is not None else (len(data) + 256 if data else 0)
        ctx_in = bytes(ctx) if ctx is not None else None
        # raw_tp, syscall and tracing programs refuse a ctx_out (EINVAL);
        # a syscall program writes its context back into ctx_in instead.
        in_place = self._type in _CTX_IN_PLACE
        fd = self.fd
        while True:
            data_out = ctypes.create_string_buffer(out_size) if out_size else None
            ctx_buf = ctypes.create_string_buffer(ctx_in, len(ctx_in)) if ctx_in else None
            ctx_out = ctypes.create_string_buffer(len(ctx_in)) if ctx_in and not in_place else None
            opts = _libbpf.bpf_test_run_opts(
                data_in=ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p) if data else None,
                data_size_in=len(data),
                data_out=ctypes.addressof(data_out) if data_out is not None else None,
                data_size_out=out_size,
                ctx_in=ctypes.addressof(ctx_buf) if ctx_buf is not None else None,
                ctx_size_in=len(ctx_in) if ctx_in else 0,
                ctx_out=ctypes.addressof(ctx_out) if ctx_out is not None else None,
                ctx_size_out=len(ctx_in) if ctx_out is not None else 0,
                # The kernel reads 0 as 1, and raw_tp/syscall programs accept only 0.
                repeat=0 if repeat == 1 else repeat,
                flags=flags,
                cpu=cpu,
            )
            try:
                _libbpf.lib.bpf_prog_test_run_opts(fd, ctypes.byref(opts))
            except EBPFError as exc:
                if exc.errno == _EINTR:
                    continue  # a signal interrupted a long run: the kernel wants a retry
                if exc.errno == _ENOSPC and data_out is not None and opts.data_size_out > out_size:
                    out_size = opts.data_size_out
                    continue
                # raw_tp and syscall programs can only be run once per call.
                once_only = repeat > 1 and self._type in (ProgramType.RAW_TRACEPOINT, ProgramType.SYSCALL)
                if exc.errno in (95, 524) or (exc.errno == _EINVAL and once_only):
                    t = self._type.name if isinstance(self._type, ProgramType) else self._type
                    raise NotSupportedError(
                        f"test run of {t} programs" + (f" with repeat={repeat}" if repeat > 1 else ""),
                        errno=exc.errno,
                    ) from None
                raise _libbpf.errno_error(exc.errno or 22, f"program {self._name}: test run") from None
            break
        out = data_out.raw[: opts.data_size_out] if data_out is not None else b""
        return RunResult(
            retval=int(opts.retval),
            data=out,
            ctx=(ctx_out.raw[: opts.ctx_size_out] if ctx_out is not None
                 else ctx_buf.raw if ctx_buf is not None else None),
            duration_ns=int(opts.duration),
        )

    def benchmark(self, data: bytes = b"", repeat: int = 1000, ctx: Optional[bytes] = None) -> Tuple[int, int]:
        """Run ``repeat`` times in the kernel; returns ``(retval, ns_per_run)``."""
        r = self.run(data, ctx=ctx, repeat=repeat)
        return r.retval, r.duration_ns


# --------------------------------------------------------------------------
# Loading


def _load(spec: ProgramSpec, maps: Mapping[str, Any], log_level: int, log_size: Optional[int]) -> Tuple[int, str]:
    from .features import object_names_supported
    from .maps import sanitize_name

    insns = _resolved_instructions(spec, maps)
    if not insns:
        raise ValueError(f"program {spec.name}: no instructions")
    if not spec.license:
        raise ValueError(f"program {spec.name}: license is empty (the kernel needs one, e.g. 'GPL')")
    name = sanitize_name(spec.name) if object_names_supported() else ""
    buf = ctypes.create_string_buffer(insns, len(insns))
    attach_btf_id = 0
    if spec.type in TRACING_TYPES and spec.attach_to and spec.type != ProgramType.EXT:
        attach_btf_id = _vmlinux_btf_id(spec.attach_to, spec.attach_type)

    btf_fd, func_info = _func_info(spec)
    try:
        return _load_with_log(spec, name, buf, attach_btf_id, btf_fd, func_info, log_level, log_size)
    finally:
        if btf_fd >= 0:
            os.close(btf_fd)


def _load_with_log(spec: ProgramSpec, name: str, buf: Any, attach_btf_id: int, btf_fd: int, func_info: Any,
                   log_level: int, log_size: Optional[int]) -> Tuple[int, str]:
    insns_len = len(buf.raw)
    size = max(log_size or LOG_SIZE_MIN, 1024)
    level = log_level
    while True:
        log_buf = ctypes.create_string_buffer(size) if level else None
        opts = _libbpf.bpf_prog_load_opts(
            prog_btf_fd=max(btf_fd, 0),
            func_info=ctypes.addressof(func_info) if func_info is not None else None,
            func_info_cnt=len(func_info) // 2 if func_info is not None else 0,
            func_info_rec_size=8 if func_info is not None else 0,
            expected_attach_type=int(spec.attach_type),
            prog_flags=spec.flags,
            kern_version=spec.kernel_version,
            attach_btf_id=attach_btf_id,
            log_level=level,
            log_size=size if level else 0,
            log_buf=ctypes.addressof(log_buf) if log_buf is not None else None,
        )
        fd = _libbpf.lib.bpf_prog_load(int(spec.type), name.encode() or None, spec.license.encode(), buf, insns_len // 8, ctypes.byref(opts))
        log = log_buf.value.decode(errors="replace") if log_buf is not None else ""
        if fd >= 0:
            return fd, log
        err = -fd
        full = log_buf is not None and len(log_buf.value) >= size - 1
        if err == _ENOSPC and log_buf is not None and size < LOG_SIZE_MAX:
            size = min(size * 8, LOG_SIZE_MAX)
            continue
        if level == 0 and err in (_EACCES, _EINVAL, _EPERM, 7):  # E2BIG too
            level = 1  # retry once with a log so the error can say why
            continue
        break
    refused = load_refusal(spec.name, spec.type, err, log, attach_type=spec.attach_type, target=spec.attach_to)
    if refused is not None:
        raise refused
    if err == _EINVAL and not log.strip():
        from .features import have_program_type

        have_program_type(spec.type)  # raises NotSupportedError for unknown types
    if log.strip():
        raise verifier_error(spec.name, err, log, truncated=full or err == _ENOSPC)
    raise _libbpf.errno_error(err, f"loading program {spec.name}")


def _load_core(spec: ProgramSpec, maps: Mapping[str, Any], log_level: int, log_size: Optional[int]) -> Tuple[int, str]:
    """Load an ELF program that has CO-RE relocations, alone.

    Relocating against the kernel's BTF is libbpf's job, so the program goes
    through the object it was read from: only this program is loaded, the
    ``maps`` given replace the object's (they must be compatible), the
    others are created for it and live as long as the program uses them.
    """
    from .collection import Collection

    cs = spec._collection.copy()
    cs.programs[spec.name] = spec.copy()
    wanted = set(cs._references.get(spec.name, []))
    unknown = sorted(set(maps) - set(cs.maps))
    if unknown:
        raise KeyError(f"program {spec.name}: maps {unknown} are not in its object")
    coll = Collection(cs, map_replacements=dict(maps), log_level=log_level, log_size=log_size,
                      _programs={spec.name}, _maps=wanted | set(maps))
    try:
        prog = coll.detach_program(spec.name)
    finally:
        coll.close()
    return prog.detach_fd(), prog.verifier_log


def _func_info(spec: ProgramSpec) -> Tuple[int, Any]:
    """BTF fd and ``bpf_func_info`` records for an ELF program loaded alone.

    One record per function in the linked instructions: the program at slot
    0 and each ``symbol`` at its slot, typed by the FUNC of that name in the
    object's BTF.  Without a FUNC for each of them, or when the kernel will
    not take the BTF, the program loads without (as before); only callbacks
    and global functions strictly need it.
    """
    btf, insns = spec._btf, spec.instructions
    if btf is None or not hasattr(insns, "symbols"):
        return -1, None
    try:
        slots = insns.raw_offsets()
        funcs = [(0, spec.name)] + sorted((slots[i], sym) for sym, i in insns.symbols().items() if i)
        ids = [(slot, btf.type_id(btf.type_by_name(sym, "func"))) for slot, sym in funcs]
    except Exception:
        return -1, None
    try:
        raw = btf.raw
        btf_fd = int(_libbpf.lib.bpf_btf_load(raw, len(raw), None))
    except EBPFError:
        return -1, None
    records = (ctypes.c_uint32 * (2 * len(ids)))(*[v for pair in ids for v in pair])
    return btf_fd, records


def _resolved_instructions(spec: ProgramSpec, maps: Mapping[str, Any]) -> bytes:
    """Encode ``spec.instructions`` with map references turned into fds."""
    insns = spec.instructions
    if not hasattr(insns, "resolve_maps"):
        return spec.encoded_instructions()
    from .asm import Pseudo
    from .asm.opcodes import LDDW

    insns = insns.copy()
    for i, ins in enumerate(insns):
        # A map load straight from an ELF still has src 0; libbpf would mark
        # it as a map fd load while relocating, so do the same here.
        if ins.reference is not None and ins.opcode == LDDW and ins.src == 0 and not ins.reference.startswith("."):
            insns[i] = ins.replace(src=Pseudo.MAP_FD)
    insns.resolve_maps(maps)
    return bytes(insns.encode())


def _vmlinux_btf_id(target: str, attach_type: Any) -> int:
    lib = _libbpf.lib
    if not _libbpf.has("libbpf_find_vmlinux_btf_id"):
        raise NotSupportedError("resolving attach targets", min_libbpf="0.1")
    try:
        return int(lib.libbpf_find_vmlinux_btf_id(target.encode(), int(attach_type)))
    except EBPFError as exc:
        raise KeyNotExistError(f"attach target {target!r} not found in kernel BTF") from exc


def new_program(spec: ProgramSpec, **kwargs: Any) -> Program:
    """Load a program from ``spec`` (same as ``Program(spec, ...)``)."""
    return Program(spec, **kwargs)


def load_pinned_program(path: "os.PathLike[str] | str") -> Program:
    """Open a program pinned at ``path``."""
    fd = open_pinned(path)
    p = Program._from_fd(fd)
    p._pinned_path = os.fspath(path)
    return p


def program_from_id(prog_id: int) -> Program:
    """Open the program with kernel id ``prog_id``."""
    try:
        fd = _libbpf.lib.bpf_prog_get_fd_by_id(prog_id)
    except EBPFError as exc:
        if exc.errno == 2:
            raise KeyNotExistError(f"no program with id {prog_id}") from None
        raise
    return Program._from_fd(fd)
