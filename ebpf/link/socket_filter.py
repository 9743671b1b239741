"""Socket filters: a ``SOCKET_FILTER`` program on one socket.

``SO_ATTACH_BPF`` puts the program in front of the socket's receive queue:
it returns how many bytes of each packet to keep, 0 drops the packet.  A
socket has at most one filter; attaching another replaces it.  Like
cilium/ebpf's ``link.AttachSocketFilter``/``DetachSocketFilter``.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any, Union

from ..errors import ClosedError, EBPFError
from ..types import ProgramType
from ._link import Link, check_program_type, program_fd

__all__ = ["attach_socket_filter", "detach_socket_filter", "SocketFilter"]

SO_ATTACH_BPF = 50
SO_DETACH_BPF = 27  # same value as SO_DETACH_FILTER

SocketLike = Union[socket.socket, int, Any]


def _sock(sock: SocketLike) -> socket.socket:
    """A socket object to call setsockopt on (a non-owning one for an fd)."""
    if isinstance(sock, socket.socket):
        if sock.fileno() < 0:
            raise ClosedError("socket")
        return sock
    if isinstance(sock, bool):
        raise TypeError("expected a socket or a file descriptor")
    fd = sock if isinstance(sock, int) else getattr(sock, "fileno", lambda: None)()
    if not isinstance(fd, int):
        raise TypeError(f"expected a socket or a file descriptor, got {type(sock).__name__}")
    try:
        # fileno= with a family/type probe; detach() below keeps the fd open.
        return socket.socket(fileno=fd)
    except OSError as exc:
        raise EBPFError(f"fd {fd} is not a socket: {exc.strerror}", exc.errno) from None


def _release(s: socket.socket, original: SocketLike) -> None:
    if s is not original:
        s.detach()  # do not close the caller's fd


def _setsockopt(sock: SocketLike, opt: int, value: int, what: str) -> None:
    s = _sock(sock)
    try:
        s.setsockopt(socket.SOL_SOCKET, opt, struct.pack("i", value))
    except OSError as exc:
        if exc.errno == errno.ENOTSOCK:
            raise EBPFError(f"{what}: not a socket", exc.errno) from None
        if exc.errno == errno.ENOENT and opt == SO_DETACH_BPF:
            raise EBPFError(f"{what}: the socket has no filter attached", exc.errno) from None
        if exc.errno == errno.EINVAL and opt == SO_ATTACH_BPF:
            raise EBPFError(f"{what}: the kernel refused the program (not a SOCKET_FILTER program?)",
                            exc.errno) from None
        raise EBPFError(f"{what}: {exc.strerror}", exc.errno) from None
    finally:
        _release(s, sock)


def attach_socket_filter(sock: SocketLike, prog: Any) -> "SocketFilter":
    """Attach ``prog`` to ``sock`` (a socket object or fd).

    Returns a :class:`SocketFilter` link whose ``close()`` detaches the
    filter; :func:`detach_socket_filter` does the same without the link.
    """
    fd = program_fd(prog)
    check_program_type(prog, (ProgramType.SOCKET_FILTER,), "attach_socket_filter")
    _setsockopt(sock, SO_ATTACH_BPF, fd, "attach_socket_filter")
    return SocketFilter(sock)


def detach_socket_filter(sock: SocketLike) -> None:
    """Remove the filter from ``sock``; EBPFError (ENOENT) if it has none."""
    _setsockopt(sock, SO_DETACH_BPF, 0, "detach_socket_filter")


class SocketFilter(Link):
    """A filter attached to a socket.

    There is no kernel link object: ``close()`` detaches whatever filter the
    socket has at that moment (a closed socket needs nothing), ``update()``
    attaches another program in its place.  Pinning and info are not
    supported.  Close the link before the socket when the socket is given
    as a bare fd: the number could be reused afterwards.  A link dropped
    without ``close()`` leaves the filter on the socket, whose lifetime it
    shares.
    """

    _kind = "socket filter"

    def __init__(self, sock: SocketLike) -> None:
        self._sock: Any = sock
        Link.__init__(self)

    def _release(self, _detach: Any = detach_socket_filter, _socket: Any = socket.socket,
                 _gone: Any = (errno.ENOENT, errno.EBADF, errno.ENOTSOCK)) -> None:
        sock, self._sock = self._sock, None
        if isinstance(sock, _socket) and sock.fileno() < 0:
            return  # the socket went first and took its filter with it
        try:
            _detach(sock)
        except Exception as exc:
            if getattr(exc, "errno", None) not in _gone:
                raise

    def _finalize(self) -> None:
        # A filter lives as long as its socket: a link dropped unclosed
        # leaves it attached (detach_socket_filter() still removes it), and
        # a socket given as a bare fd may have been closed and its number
        # reused by the time the finalizer runs.
        self._sock = None

    def update(self, prog: Any) -> None:
        """Atomically replace the socket's filter with ``prog``."""
        fd = program_fd(prog)
        check_program_type(prog, (ProgramType.SOCKET_FILTER,), "SocketFilter.update")
        with self._handle_lock:
            self._check_open()
            _setsockopt(self._sock, SO_ATTACH_BPF, fd, "SocketFilter.update")

    def __repr__(self) -> str:
        return "<SocketFilter closed>" if self.closed else f"<SocketFilter on {self._sock!r}>"
