"""uprobe.multi links (kernel 6.6+): one program on many places of a binary.

:meth:`Executable.uprobe_multi` and :meth:`Executable.uretprobe_multi` are
cilium/ebpf's ``Executable.UprobeMulti``/``UretprobeMulti``: a single
``bpf_link`` (``BPF_TRACE_UPROBE_MULTI``) puts a probe on every symbol or
file offset given, each with its own BPF cookie, optionally only in one
process.  No perf events are opened, so it scales to thousands of probes.

libbpf 1.1.2 has no ``bpf_program__attach_uprobe_multi`` (1.3 has): the
``BPF_LINK_CREATE`` attribute block is issued from ``ebpf._syscall``.

The program must be a ``KPROBE``-type program loaded with expected attach
type ``TRACE_UPROBE_MULTI`` (libbpf's ``SEC("uprobe.multi")``); the
kernel picks the right ``bpf_get_attach_cookie()`` by it.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any, List, Optional, Sequence

from .. import _syscall, features
from ..errors import ENOTSUPP, EBPFError, InvalidObjectError, NotSupportedError
from ..types import AttachType, ProgramType
from ._link import BPF_F_UPROBE_MULTI_RETURN, FDLink, check_program_type, program_fd
from .uprobe import ExecutableNotFoundError, ProcessNotFoundError, _check_pid

__all__ = ["UprobeMultiLink", "attach_uprobe_multi"]


class UprobeMultiLink(FDLink):
    """A uprobe.multi link.  Its program cannot be swapped (as in cilium,
    ``update()`` raises NotSupportedError); ``info().extra`` lists the path,
    offsets, cookies and pid of the link."""

    def update(self, prog: Any, old_prog: Any = None) -> None:
        raise NotSupportedError("updating a uprobe.multi link", detail="the kernel cannot swap its program")


def _u64s(values: Optional[Sequence[int]], what: str, n: int) -> Optional[List[int]]:
    if values is None:
        return None
    items = list(values)
    if len(items) != n:
        raise ValueError(f"{what}: {len(items)} given for {n} probes (one each, or none)")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
            raise ValueError(f"{what} must be integers in [0, 2**64), not {v!r}")
    return items


def _check_program(prog: Any, hook: str) -> None:
    check_program_type(prog, (ProgramType.KPROBE,), hook)
    at = getattr(prog, "attach_type", None)
    if at is None or isinstance(prog, int) or int(at) == int(AttachType.TRACE_UPROBE_MULTI):
        return
    raise InvalidObjectError(
        f"{hook}: program {getattr(prog, 'name', '?')!r} was loaded with attach type "
        f"{getattr(at, 'name', at)}; load it with attach_type=AttachType.TRACE_UPROBE_MULTI "
        f"(libbpf's SEC(\"uprobe.multi\"))", errno.EINVAL)


def attach_uprobe_multi(exe: Any, symbols: Optional[Sequence[str]], prog: Any, *, retprobe: bool = False,
                        addresses: Optional[Sequence[int]] = None, offsets: Optional[Sequence[int]] = None,
                        cookies: Optional[Sequence[int]] = None, ref_ctr_offsets: Optional[Sequence[int]] = None,
                        pid: Optional[int] = None) -> UprobeMultiLink:
    """Attach ``prog`` to ``symbols`` (or ``addresses``) of ``exe``, an
    :class:`~ebpf.link.Executable`; see :meth:`Executable.uprobe_multi`."""
    kind = "uretprobe.multi" if retprobe else "uprobe.multi"
    if isinstance(symbols, str):
        symbols = [symbols]
    names = list(symbols) if symbols is not None else None
    if names is not None and addresses is not None:
        raise ValueError(f"{kind}: give symbols or addresses, not both")
    if names is not None and not all(isinstance(s, str) and s for s in names):
        raise TypeError(f"{kind}: symbols must be non-empty strings")
    n = len(names) if names is not None else len(list(addresses or ()))
    if n == 0:
        raise ValueError(f"{kind}: no symbols or addresses to probe")
    addrs = _u64s(addresses, "addresses", n)
    offs = _u64s(offsets, "offsets", n) or [0] * n
    cks = _u64s(cookies, "cookies", n)
    refs = _u64s(ref_ctr_offsets, "ref_ctr_offsets", n)
    pid_ = _check_pid(pid)
    shown = names if names is not None else [f"{a:#x}" for a in addrs or ()]
    hook = (f"{kind} {exe.path}:" + ",".join(shown[:3]) + (",..." if n > 3 else "")
            + (f" pid={pid_}" if pid_ > 0 else ""))
    _check_program(prog, hook)
    prog_fd = program_fd(prog)

    # Symbols resolve here, so an unknown one is a SymbolNotFoundError
    # naming it (the kernel would say only EINVAL or ENOENT).
    where = [(exe.address(s) if addrs is None else addrs[i]) + offs[i] for i, s in enumerate(names or [""] * n)]
    path = ctypes.create_string_buffer(os.fsencode(exe.path))
    arrays = {name: (ctypes.c_uint64 * n)(*values) for name, values in
              (("offsets", where), ("cookies", cks), ("ref_ctr_offsets", refs)) if values is not None}
    attr = _syscall.link_create_attr(prog_fd=prog_fd, attach_type=int(AttachType.TRACE_UPROBE_MULTI))
    um = attr.uprobe_multi
    um.path, um.cnt, um.pid = ctypes.addressof(path), n, max(pid_, 0)
    um.flags = BPF_F_UPROBE_MULTI_RETURN if retprobe else 0
    for name, array in arrays.items():
        setattr(um, name, ctypes.addressof(array))
    try:
        fd = _syscall.link_create(attr, hook)
    except EBPFError as exc:
        raise _error(exc, hook, pid_, exe.path) from None
    return UprobeMultiLink(fd, hook)


def _error(exc: EBPFError, hook: str, pid: int, path: str) -> EBPFError:
    err = exc.errno
    if err in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP, errno.E2BIG):
        try:
            features.have_link_type(12)  # LinkType.UPROBE_MULTI
        except NotSupportedError as missing:
            return missing
    if err == errno.ESRCH:
        return ProcessNotFoundError(pid)
    if err == errno.ENOENT:
        return ExecutableNotFoundError(f"{hook}: {path} disappeared")
    if err == errno.EINVAL:
        return InvalidObjectError(f"{hook}: the kernel refused it (EINVAL: an offset past the end of the file, "
                                  f"or a semaphore offset that differs from another probe's at the same place)", err)
    if err in (errno.EOPNOTSUPP, ENOTSUPP):
        return NotSupportedError(hook, errno=err, detail="the kernel cannot probe an instruction at one of the offsets")
    return exc
