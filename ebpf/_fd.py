"""File-descriptor ownership shared by maps, programs and links.

An :class:`FDOwner` owns exactly one kernel handle: ``close()`` releases it
once, the object is a context manager, and the finalizer is safe at
interpreter shutdown (it touches no module globals).  The life cycle is
:class:`ebpf._handle.Handle`'s; the release is closing the fd.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Optional

from ._handle import Handle
from .errors import ClosedError, PinError

BPF_FS_MAGIC = 0xCAFE4A11


class FDOwner(Handle):
    """Base class of objects that own one bpf file descriptor."""

    _kind = "object"
    _fd: int = -1

    def __init__(self, fd: int) -> None:
        self._fd = fd
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
        """Release the file descriptor; calling it again does nothing."""
        Handle.close(self)

    def _release(self, _close: Any = os.close) -> None:
        # Default-argument binding keeps os.close reachable during shutdown.
        fd, self._fd = self._fd, -1
        if fd >= 0:
            _close(fd)

    def detach_fd(self) -> int:
        """Give up ownership of the fd and return it (the caller must close it)."""
        fd = self.fd
        self._fd = -1
        return fd

    def __enter__(self) -> Any:
        return self

    def _dup(self) -> int:
        return os.dup(self.fd)

    # -- pinning -----------------------------------------------------------

    def pin(self, path: "os.PathLike[str] | str") -> None:
        """Pin the object to ``path`` on a bpf filesystem."""
        from . import _libbpf

        path = os.fspath(path)
        check_pin_path(path)
        try:
            _libbpf.lib.bpf_obj_pin(self.fd, path.encode())
        except Exception as exc:
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
        raise PinError(f"cannot pin to {path}: {parent} is on {fstype}, not a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)", 1)


def pin_error(exc: BaseException, path: str) -> BaseException:
    err = getattr(exc, "errno", None)
    if err == 17:
        return PinError(f"cannot pin to {path}: file exists", err)
    if err == 2:
        return PinError(f"cannot pin to {path}: no such directory", err)
    if err == 1:
        return PinError(f"cannot pin to {path}: not on a bpf filesystem or not permitted", err)
    return exc


def open_pinned(path: "os.PathLike[str] | str", read_only: bool = False) -> int:
    """Open a pinned object; a clear PinError when the path is not a pin."""
    from . import _libbpf
    from .errors import EBPFError

    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise PinError(f"no pinned object at {path}", 2) from None
    if stat.S_ISDIR(st.st_mode):
        raise PinError(f"{path} is a directory, not a pinned object", 21)
    try:
        if read_only and _libbpf.has("bpf_obj_get_opts"):
            opts = _libbpf.bpf_obj_get_opts(file_flags=1 << 3)  # BPF_F_RDONLY
            return int(_libbpf.lib.bpf_obj_get_opts(path.encode(), opts))
        return int(_libbpf.lib.bpf_obj_get(path.encode()))
    except EBPFError as exc:
        if exc.errno in (1, 22) and _mount_of(path) != "bpf":
            raise PinError(f"{path} is not on a bpf filesystem", exc.errno) from None
        raise
