"""Programs: verified code in the kernel, runnable with BPF_PROG_TEST_RUN.

Loading is :mod:`ebpf._loader`'s job; a :class:`Program` owns the result.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Tuple

from . import _libbpf, _loader
from ._fd import FDOwner, in_flight, open_pinned
from .errors import EBPFError, KeyNotExistError, NotSupportedError
from .info import ProgramInfo, ProgramStats, program_info, program_stats
from .spec import ProgramSpec
from .types import AttachType, ProgramType

if TYPE_CHECKING:  # the btf subpackage loads when a program first needs it
    from .btf import Handle as BTFHandle

__all__ = ["Program", "RunResult", "new_program", "load_pinned_program", "program_from_id"]


@dataclass(frozen=True)
class RunResult:
    """Outcome of :meth:`Program.run`."""

    retval: int
    data: bytes
    ctx: Optional[bytes]
    duration_ns: int


_CTX_IN_PLACE = frozenset({ProgramType.RAW_TRACEPOINT, ProgramType.SYSCALL, ProgramType.TRACING})


class Program(FDOwner):
    """A loaded program.

    Create one from a :class:`ProgramSpec` (``Program(spec)``; ``maps``
    resolves symbolic map references of ``ebpf.asm`` instructions, and for a
    program read from ELF names the maps of its object to use), get them
    from a :class:`~ebpf.Collection`, or open a pin with
    :func:`load_pinned_program`.  ``verifier_log`` holds the verifier's output
    when ``log_level`` > 0.  ``kernel_types`` (a path, raw BTF bytes or an
    ``ebpf.btf.Spec``) is the BTF that CO-RE relocations are resolved
    against instead of the running kernel's; ``extra_relocation_targets``
    (``ebpf.btf.Spec`` objects, such as a kernel module's BTF) are searched
    too (cilium's ``ProgramOptions.ExtraRelocationTargets``).
    """

    _kind = "program"

    def __init__(
        self,
        spec: ProgramSpec,
        *,
        maps: Optional[Mapping[str, Any]] = None,
        log_level: int = 0,
        log_size: Optional[int] = None,
        kernel_types: _loader.KernelTypes = None,
        extra_relocation_targets: _loader.RelocationTargets = None,
    ) -> None:
        fd, log = _loader.load_program(spec, maps or {}, log_level, log_size, kernel_types, extra_relocation_targets)
        self._setup(fd, spec.name, spec.type, spec.attach_type, log)
        self._spec: Optional[ProgramSpec] = spec.copy()

    @classmethod
    def _from_fd(
        cls,
        fd: int,
        name: Optional[str] = None,
        ptype: Optional[ProgramType] = None,
        attach_type: AttachType = AttachType.NONE,
        log: str = "",
    ) -> Program:
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

    def _setup(self, fd: int, name: str, ptype: ProgramType, attach_type: AttachType, log: str) -> None:
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

    @in_flight
    def info(self) -> ProgramInfo:
        """What the kernel reports about this program."""
        return program_info(self.fd)

    @in_flight
    def stats(self) -> ProgramStats:
        """The run count, run time and recursion misses the kernel counted
        for this program while statistics were on (:func:`ebpf.enable_stats`,
        cilium's ``Program.Stats``)."""
        return program_stats(self.fd)

    def handle(self) -> BTFHandle:
        """The program's BTF in the kernel, as a new :class:`ebpf.btf.Handle`
        (cilium's ``Program.Handle``; the caller closes it).  A program loaded
        without BTF raises :class:`~ebpf.errors.NotSupportedError`."""
        from .btf import Handle  # a lazily loaded subpackage

        btf_id = self.info().btf_id
        if not btf_id:
            raise NotSupportedError(f"BTF of program {self._name}", detail="the program was loaded without BTF")
        return Handle.from_id(btf_id)

    def clone(self) -> "Program":
        """A second handle on the same program (a duplicated fd)."""
        p = Program._from_fd(self._dup(), self._name, self._type, self._attach_type, self._log)
        p._spec = self._spec
        return p

    # -- BPF_PROG_TEST_RUN ---------------------------------------------------

    @in_flight
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
            r = _libbpf.prog_test_run(
                fd, data, ctx_in, out_size,
                # The kernel reads 0 as 1, and raw_tp/syscall programs accept only 0.
                0 if repeat == 1 else repeat, flags, cpu, in_place,
            )
            if r.errno == errno.EINTR:
                continue  # a signal interrupted a long run: the kernel wants a retry
            if r.errno == errno.ENOSPC and out_size and r.data_size_out > out_size:
                out_size = r.data_size_out
                continue
            if r.errno:
                # raw_tp and syscall programs can only be run once per call.
                once_only = repeat > 1 and self._type in (ProgramType.RAW_TRACEPOINT, ProgramType.SYSCALL)
                if r.errno in (errno.EOPNOTSUPP, 524) or (r.errno == errno.EINVAL and once_only):  # 524: ENOTSUPP
                    t = self._type.name if isinstance(self._type, ProgramType) else self._type
                    raise NotSupportedError(
                        f"test run of {t} programs" + (f" with repeat={repeat}" if repeat > 1 else ""),
                        errno=r.errno,
                    )
                raise _libbpf.errno_error(r.errno, f"program {self._name}: test run")
            return RunResult(retval=r.retval, data=r.data, ctx=r.ctx, duration_ns=r.duration_ns)

    def benchmark(self, data: bytes = b"", repeat: int = 1000, ctx: Optional[bytes] = None) -> Tuple[int, int]:
        """Run ``repeat`` times in the kernel; returns ``(retval, ns_per_run)``."""
        r = self.run(data, ctx=ctx, repeat=repeat)
        return r.retval, r.duration_ns


def new_program(spec: ProgramSpec, **kwargs: Any) -> Program:
    """Load a program from ``spec`` (same as ``Program(spec, ...)``)."""
    return Program(spec, **kwargs)


def load_pinned_program(path: "os.PathLike[str] | str") -> Program:
    """Open a program pinned at ``path``."""
    fd = open_pinned(path, kind="program")
    p = Program._from_fd(fd)
    p._pinned_path = os.fspath(path)
    return p


def program_from_id(prog_id: int) -> Program:
    """Open the program with kernel id ``prog_id``."""
    try:
        fd = _libbpf.prog_fd_by_id(prog_id)
    except EBPFError as exc:
        if exc.errno == 2:
            raise KeyNotExistError(f"no program with id {prog_id}") from None
        raise
    return Program._from_fd(fd)
