"""File-descriptor ownership shared by maps, programs and links.

An :class:`FDOwner` owns exactly one kernel handle: ``close()`` releases it
once, the object is a context manager, and the finalizer is safe at
interpreter shutdown (it touches no module globals).  The life cycle is
:class:`ebpf._handle.Handle`'s; the release is closing the fd -- once no
operation is using it.

Operations in flight.  Objects may be shared between threads, and ctypes
drops the GIL around every C call, so a ``close()`` in one thread can run
while another thread sits between reading ``self._fd`` and the syscall that
uses it.  Were the number closed then, the kernel could hand it to the next
map or program created anywhere in the process, and the late syscall would
read or write *that* object.  So an operation takes a token before it reads
the fd and gives it back after its syscall; ``close()`` only marks the
object closed, and the number is closed by whoever sees the last token
come home (``close()`` itself when nothing is in flight).  An operation
that starts after ``close()`` sees ``_fd < 0`` and raises
:class:`~ebpf.errors.ClosedError` without touching the number.

Tokens live in a deque, ``_idle``; its ``pop()`` and ``append()`` are
atomic under the GIL, so taking and returning one costs two C calls and no
lock (the map hot path, ``bench/maps.py``, inlines exactly this).  A deque
rather than a list: a list that empties and refills reallocates its array
twice per operation, which doubles what the guard costs.  A token
is any object: maps use value buffers as tokens, so that a lookup gets its
buffer and its place in flight from one ``pop()``.  ``_tokens`` counts the
tokens ever made; ``len(_idle) == _tokens`` means nothing is in flight.
Why that is race-free is spelled out in :meth:`FDOwner._settle`.
"""

from __future__ import annotations

import collections
import errno as _errno
import functools
import os
import stat
import threading
from typing import Any, Callable, Deque, List, Optional, TypeVar

from . import _libbpf, _syscall
from ._handle import Handle
from .errors import ClosedError, EBPFError, PinError

BPF_FS_MAGIC = 0xCAFE4A11

_F = TypeVar("_F", bound=Callable[..., Any])

# Serialises token creation only (rare: once per level of concurrency).
_GROW = threading.Lock()

# What /proc/self/fd/N links to for each kind of bpf object.
_ANON_KINDS = {"anon_inode:bpf-map": "map", "anon_inode:bpf-prog": "program", "anon_inode:bpf-link": "link"}


class FDOwner(Handle):
    """Base class of objects that own one bpf file descriptor."""

    _kind = "object"
    _fd: int = -1
    # Until __init__ ran (a subclass that failed early): nothing to release.
    _fdbox: Any = ()
    _idle: Any = ()
    _tokens = 0

    def __init__(self, fd: int) -> None:
        self._fd = fd
        # The number until it is released: pop() is the one-time claim, so
        # close(), the last operation in flight and the finalizer can race
        # for it and exactly one wins.
        self._fdbox: List[int] = [fd] if fd >= 0 else []
        self._idle: Deque[Any] = collections.deque()
        self._tokens = 0
        self._pinned_path: Optional[str] = None
        Handle.__init__(self)

    @property
    def fd(self) -> int:
        """The file descriptor (raises ClosedError after close())."""
        fd = self._fd
        if fd < 0:
            raise ClosedError(self._kind)
        return fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Release the file descriptor; calling it again does nothing.

        Operations running in other threads finish on this object first:
        the number is closed when the last of them returns.
        """
        Handle.close(self)

    def _release(self) -> None:
        self._fd = -1
        self._settle()

    def _finalize(self, _close: Any = os.close) -> None:
        # Nothing can be in flight on an unreachable object; the default
        # argument keeps os.close reachable during shutdown.
        self._fd = -1
        box = self._fdbox
        if box:
            _close(box.pop())

    def detach_fd(self) -> int:
        """Give up ownership of the fd and return it (the caller must close it)."""
        fd = self.fd
        self._fd = -1
        try:
            self._fdbox.pop()
        except (IndexError, AttributeError):
            raise ClosedError(self._kind) from None
        return fd

    def __enter__(self) -> Any:
        return self

    # -- operations in flight ----------------------------------------------

    def _new_token(self) -> Any:
        """A fresh token; subclasses hand out something useful (a buffer)."""
        return None

    def _grow(self) -> Any:
        """A new token, counted before it is used (see :meth:`_settle`)."""
        tok = self._new_token()
        with _GROW:
            self._tokens += 1
        return tok

    def _settle(self) -> None:
        """Close the number if the object is closed and nothing is in flight.

        Called after ``_fd = -1`` was stored, by ``close()`` and by every
        operation that ends while the object is closed.  An operation takes
        its token (``pop`` or ``_grow``) before it reads ``_fd``.  If this
        comparison sees every token idle, any operation not counted took its
        token after ``_fd = -1`` and reads -1; one counted as idle that is
        just taking its token reads -1 too, for the store came first.  An
        operation that read a valid fd holds a token that was out before
        the store, so the comparison fails, and that operation settles when
        it returns the token.
        """
        if self._fd < 0 and len(self._idle) == self._tokens:
            box = self._fdbox
            if not box:
                return  # already released (or detached, or never owned)
            try:
                fd = box.pop()
            except IndexError:
                return  # another thread released it just now
            try:
                os.close(fd)
            except OSError:
                pass

    def _enter(self) -> Any:
        """Take a token; raise ClosedError if the object is closed."""
        idle = self._idle
        try:
            tok = idle.pop()
        except IndexError:
            tok = self._grow()
        if self._fd < 0:
            idle.append(tok)
            self._settle()
            raise ClosedError(self._kind)
        return tok

    def _leave(self, tok: Any) -> None:
        self._idle.append(tok)
        if self._fd < 0:
            self._settle()

    def _using(self) -> "_InFlight":
        """``with self._using() as fd:`` -- the fd stays this object's for
        the whole block, even if another thread calls ``close()``."""
        return _InFlight(self)

    def _dup(self) -> int:
        with self._using() as fd:
            return os.dup(fd)

    # -- pinning -----------------------------------------------------------

    def pin(self, path: "os.PathLike[str] | str") -> None:
        """Pin the object to ``path`` on a bpf filesystem.

        An object already pinned elsewhere is moved (its old pin is renamed,
        never left behind), as cilium/ebpf does.  An existing file at
        ``path`` is never replaced: PinError, also for the object's own pin.
        """
        path = os.fspath(path)
        check_pin_path(path)
        old = self._pinned_path
        with self._using() as fd:
            if old is not None and old != path:
                try:
                    _syscall.rename_noreplace(old, path)
                    self._pinned_path = path
                    return
                except FileNotFoundError:
                    pass  # the old pin is gone: pin afresh
                except OSError as exc:
                    raise pin_error(exc, path) from None
            try:
                _libbpf.obj_pin(fd, path)
            except EBPFError as exc:
                raise pin_error(exc, path) from None
        self._pinned_path = path

    def unpin(self) -> None:
        """Remove the pin made by :meth:`pin` (or the one it was loaded from)."""
        path = self._pinned_path
        if path is None:
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self._pinned_path = None

    @property
    def pinned_path(self) -> Optional[str]:
        return self._pinned_path


class _InFlight:
    """The context manager behind :meth:`FDOwner._using`."""

    __slots__ = ("_owner", "_tok")

    def __init__(self, owner: FDOwner) -> None:
        self._owner = owner

    def __enter__(self) -> int:
        owner = self._owner
        self._tok = owner._enter()
        fd = owner._fd
        if fd < 0:  # closed between the check and here: the token is ours
            self._owner._leave(self._tok)
            raise ClosedError(owner._kind)
        return fd

    def __exit__(self, *exc: Any) -> None:
        self._owner._leave(self._tok)


def in_flight(method: _F) -> _F:
    """Decorator: the method runs with a token, so every ``self.fd`` it
    reads stays this object's until it returns (see the module docstring)."""

    @functools.wraps(method)
    def wrapper(self: FDOwner, *args: Any, **kwargs: Any) -> Any:
        tok = self._enter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self._leave(tok)

    return wrapper  # type: ignore[return-value]


def _mount_of(path: str) -> Optional[str]:
    """The filesystem type mounted at the deepest mount point above ``path``."""
    path = os.path.realpath(path)
    best, fstype = "", None
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        return None
    return fstype


def check_pin_path(path: str) -> None:
    """Refuse pin paths the kernel would refuse, with a clear reason."""
    if not path:
        raise PinError("empty pin path")
    parent = os.path.dirname(os.path.abspath(path)) or "/"
    if not os.path.isdir(parent):
        raise PinError(f"cannot pin to {path}: directory {parent} does not exist", 2)
    fstype = _mount_of(parent)
    if fstype is not None and fstype != "bpf":
        raise PinError(f"cannot pin to {path}: {parent} is on {fstype}, not a bpf filesystem "
                       f"(mount -t bpf bpf /sys/fs/bpf)", 1)


def pin_error(exc: BaseException, path: str) -> BaseException:
    err = getattr(exc, "errno", None)
    if err == _errno.EEXIST:
        return PinError(f"cannot pin to {path}: file exists", err)
    if err == _errno.ENOENT:
        return PinError(f"cannot pin to {path}: no such directory", err)
    if err == _errno.EPERM:
        return PinError(f"cannot pin to {path}: not on a bpf filesystem or not permitted", err)
    return exc


def fd_kind(fd: int) -> Optional[str]:
    """What kind of bpf object ``fd`` is: "map", "program" or "link"; the
    readlink target for anything else; None when procfs cannot tell."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return _ANON_KINDS.get(target, target)


_ARTICLE = {"map": "a map", "program": "a program", "link": "a link"}


def open_pinned(path: "os.PathLike[str] | str", read_only: bool = False, kind: Optional[str] = None) -> int:
    """Open a pinned object; a clear PinError when the path is not a pin.

    With ``kind`` ("map", "program" or "link") the pin must hold that kind
    of object: anything else is a :class:`PinError` naming what was found
    (its ``found`` attribute), as cilium's ``LoadPinned*`` check the type of
    what they open.  Paths outside a bpf filesystem are PinError too.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise PinError(f"no pinned object at {path}", _errno.ENOENT) from None
    if stat.S_ISDIR(st.st_mode):
        raise PinError(f"{path} is a directory, not a pinned object", _errno.EISDIR)
    fstype = _mount_of(path)
    if fstype is not None and fstype != "bpf":
        raise PinError(f"{path} is on {fstype}, not a bpf filesystem: it cannot be a pinned object", _errno.EINVAL)
    try:
        fd = _libbpf.obj_get(path, read_only)
    except EBPFError as exc:
        if exc.errno in (_errno.EPERM, _errno.EINVAL, _errno.EACCES) and fstype is None and _mount_of(path) != "bpf":
            raise PinError(f"{path} is not on a bpf filesystem", exc.errno) from None
        raise
    if kind is not None:
        found = fd_kind(fd)
        if found is not None and found != kind:
            os.close(fd)
            what = _ARTICLE.get(found, f"not a bpf object ({found})")
            err = PinError(f"{path} is {what}, not {_ARTICLE.get(kind, kind)}", _errno.EINVAL)
            err.found = found
            raise err
    return fd
