"""BPF iterators (``SEC("iter/...")``): programs that dump kernel objects.

:func:`attach_iter` makes the ``bpf_link``; each :meth:`Iter.open` starts a
fresh walk over the objects (``BPF_ITER_CREATE``) and returns a binary file
whose contents are what the program printed with ``BPF_SEQ_PRINTF`` or
``bpf_seq_write``::

    with attach_iter(coll.programs["dump_tasks"]) as it:
        text = it.read().decode()

Iterators over a map's elements (``iter/bpf_map_elem``, ``iter/sockmap``,
``iter/bpf_sk_storage_map``) take the map: ``attach_iter(prog, map=m)``.
"""

from __future__ import annotations

import errno as _errno
import io
import os
from typing import Any, BinaryIO

from .. import _libbpf, _syscall
from .._handle import Handle
from ..errors import ENOTSUPP, EBPFError, InvalidObjectError, NotSupportedError
from ..types import AttachType, ProgramType
from ._link import FDLink, check_program_type, program_fd

__all__ = ["Iter", "attach_iter"]


class _IterReader(Handle, io.RawIOBase):
    """Raw reader over an iterator fd; errors come out typed.

    Its life cycle is the Handle's (``closed`` included, which the io
    machinery above it asks)."""

    _kind = "iterator"

    def __init__(self, fd: int, what: str) -> None:
        io.RawIOBase.__init__(self)
        self._fd = fd
        self._what = what
        Handle.__init__(self)

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        self._check_open()
        return self._fd

    def readinto(self, buf: Any) -> int:
        fd = self.fileno()
        while True:
            try:
                return os.readv(fd, [buf])
            except InterruptedError:
                continue
            except OSError as exc:
                err = exc.errno or _errno.EIO
                if err == _errno.E2BIG:
                    raise EBPFError(f"reading {self._what}: one object's output is larger than the seq_file buffer "
                                    f"(E2BIG)", err) from None
                if err == _errno.EAGAIN:
                    # The kernel asks for a retry when the program was
                    # interrupted before it produced anything.
                    continue
                raise _libbpf.errno_error(err, f"reading {self._what}") from None

    def close(self) -> None:
        Handle.close(self)

    def _release(self, _close: Any = os.close, _iobase_close: Any = io.RawIOBase.close) -> None:
        fd, self._fd = self._fd, -1
        try:
            _close(fd)
        finally:
            _iobase_close(self)  # marks the io object closed too


class Iter(FDLink):
    """An iterator link.  Each :meth:`open` is a new, independent walk."""

    def open(self) -> BinaryIO:
        """Start a walk: a readable binary file of the program's output."""
        link_fd = self.fd  # ClosedError after close()
        try:
            fd = _libbpf.iter_create(link_fd)
        except EBPFError as exc:
            what = f"starting {self._description or 'iterator'}"
            raise _libbpf.errno_error(exc.errno or _errno.EINVAL, what) from None
        raw = _IterReader(fd, self._description or "iterator")
        return io.BufferedReader(raw)

    def read(self) -> bytes:
        """Run the iterator once and return everything it wrote."""
        with self.open() as f:
            return f.read()


# Iterator targets that walk one map and therefore need ``map=``.
MAP_TARGETS = frozenset({"bpf_map_elem", "bpf_sk_storage_map", "sockmap"})


def attach_iter(prog: Any, map: Any = None) -> Iter:
    """Attach an ``SEC("iter/...")`` program; returns a readable :class:`Iter`.

    ``map`` (a :class:`ebpf.Map` or a map fd) is the map walked by
    ``bpf_map_elem``, ``sockmap`` and ``bpf_sk_storage_map`` iterators.
    """
    check_program_type(prog, {ProgramType.TRACING}, "an iterator")
    name = getattr(prog, "name", "")
    at = getattr(prog, "attach_type", AttachType.TRACE_ITER)
    if not isinstance(prog, int) and getattr(prog, "spec", None) is not None and at != AttachType.TRACE_ITER:
        raise InvalidObjectError(f"program {name!r} is not an iterator (its section must start with iter/)",
                                 _errno.EINVAL)
    fd = program_fd(prog)
    spec = getattr(prog, "spec", None)
    target = spec.attach_to if spec is not None else ""
    hook = f"iterator {target}".strip()
    info = None
    if map is not None:
        if target and target not in MAP_TARGETS:
            # The kernel would read the map fd as another target's option
            # (a task iterator takes it for a thread id).
            raise InvalidObjectError(f"{hook} does not walk a map: map= is only for "
                                     f"{', '.join(sorted(MAP_TARGETS))} iterators", _errno.EINVAL)
        map_fd = map if isinstance(map, int) else getattr(map, "fd", None)
        if map_fd is None:
            raise TypeError(f"map must be an ebpf.Map or an fd, not {type(map).__name__}")
        info = _syscall.bpf_iter_link_info()
        info.map.map_fd = int(map_fd)
        hook += f" over map {getattr(map, 'name', '') or map_fd}"
    elif target in MAP_TARGETS:
        raise InvalidObjectError(f"{hook} walks a map: pass map=", _errno.EINVAL)
    try:
        lfd = _libbpf.link_create(fd, 0, int(AttachType.TRACE_ITER), iter_info=info)
    except EBPFError as exc:
        if exc.errno == _errno.EACCES and map is not None:
            raise InvalidObjectError(f"attaching {hook}: the program reads more of each key or value than the map "
                                     f"has (EACCES)", exc.errno) from None
        if exc.errno == _errno.EINVAL:
            if map is not None:
                raise InvalidObjectError(f"attaching {hook}: the kernel refused the map or program (EINVAL: "
                                         f"wrong map type for this iterator, or a map for an iterator that takes none)",
                                         exc.errno) from None
            raise InvalidObjectError(f"attaching {hook}: the kernel refused it (EINVAL; this iterator may need map=)",
                                     exc.errno) from None
        if exc.errno in (_errno.EOPNOTSUPP, ENOTSUPP):
            raise NotSupportedError(f"{hook}", min_kernel="5.8", errno=exc.errno) from None
        raise
    return Iter(lfd, hook)
