"""Errors raised by the library.

Every error derives from :class:`EBPFError`.  Where a syscall or libbpf call
failed, the error carries ``errno``.  Several errors also derive from the
builtin exception a Python user would reach for (``KeyError``, ``ValueError``,
``PermissionError``) so ordinary ``except`` clauses keep working.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Type

# The kernel-internal "not supported" errno that leaks out of some bpf() paths.
ENOTSUPP = 524

__all__ = [
    "EBPFError",
    "NotSupportedError",
    "KeyNotExistError",
    "KeyExistError",
    "VerifierError",
    "MapIncompatibleError",
    "IterationAbortedError",
    "ClosedError",
    "PermissionDeniedError",
    "KernelPolicyError",
    "InvalidObjectError",
    "PinError",
    "MarshalError",
    "MarshalTypeError",
]


class EBPFError(Exception):
    """Base class of every error raised by :mod:`ebpf`."""

    errno: Optional[int]

    def __init__(self, message: str = "", errno: Optional[int] = None) -> None:
        super().__init__(message)
        self.errno = errno

    @property
    def strerror(self) -> Optional[str]:
        """The text of ``errno`` (settable, as ``OSError.strerror`` is: some
        errors are also ``OSError`` subclasses)."""
        explicit: Optional[str] = self.__dict__.get("_strerror")
        if explicit is not None:
            return explicit
        return os.strerror(self.errno) if self.errno else None

    @strerror.setter
    def strerror(self, value: Optional[str]) -> None:
        self.__dict__["_strerror"] = value

    def __reduce__(self) -> Any:
        # Subclasses take other constructor arguments than their message, so
        # the default (calling the class with self.args) would rebuild them
        # wrong; copy and pickle restore the state as it is instead.
        return _rebuild, (type(self), self.args, dict(self.__dict__), self.errno)


def _rebuild(cls: Type[EBPFError], args: Tuple[Any, ...], state: Dict[str, Any], errno: Optional[int]) -> EBPFError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    err.errno = errno
    return err


class NotSupportedError(EBPFError):
    """The running kernel or the installed libbpf lacks a feature.

    ``feature`` names what is missing; ``min_kernel`` (e.g. ``"5.8"``) and
    ``min_libbpf`` (e.g. ``"1.3"``) say what would provide it, where known.
    """

    def __init__(
        self,
        feature: str,
        *,
        min_kernel: Optional[str] = None,
        min_libbpf: Optional[str] = None,
        errno: Optional[int] = None,
        detail: str = "",
    ) -> None:
        needs = []
        if min_kernel:
            needs.append(f"kernel {min_kernel}")
        if min_libbpf:
            needs.append(f"libbpf {min_libbpf}")
        msg = f"{feature} not supported"
        if needs:
            msg += " (requires " + " and ".join(needs) + ")"
        if detail:
            msg += f": {detail}"
        super().__init__(msg, errno if errno is not None else _errno.EOPNOTSUPP)
        self.feature = feature
        self.min_kernel = min_kernel
        self.min_libbpf = min_libbpf


class KeyNotExistError(EBPFError, KeyError):
    """The key is not in the map (ENOENT)."""

    def __init__(self, message: str = "key does not exist", errno: Optional[int] = _errno.ENOENT) -> None:
        EBPFError.__init__(self, message, errno)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "key does not exist"


class KeyExistError(EBPFError):
    """The key is already in the map (EEXIST), e.g. ``update(..., NOEXIST)``."""

    def __init__(self, message: str = "key already exists", errno: Optional[int] = _errno.EEXIST) -> None:
        super().__init__(message, errno)


class VerifierError(EBPFError):
    """The kernel refused to load a program (or BTF).

    ``log`` is the verifier's log as a list of lines; ``truncated`` says the log
    did not fit even the largest buffer tried.
    """

    def __init__(
        self,
        message: str,
        log: Sequence[str] = (),
        *,
        truncated: bool = False,
        errno: Optional[int] = None,
        program: Optional[str] = None,
    ) -> None:
        super().__init__(message, errno)
        self.log = list(log)
        self.truncated = truncated
        self.program = program

    def __str__(self) -> str:
        base = super().__str__()
        tail = [line for line in self.log if line.strip()][-5:]
        if tail:
            base += "\n  " + "\n  ".join(tail)
            if self.truncated:
                base += "\n  (log truncated)"
        return base


class MapIncompatibleError(EBPFError):
    """An existing map (e.g. a pin) does not match the spec.

    ``differences`` maps each differing field to ``(expected, found)``.
    """

    def __init__(self, message: str, differences: Optional[Mapping[str, Tuple[Any, Any]]] = None) -> None:
        super().__init__(message, _errno.EINVAL)
        self.differences = dict(differences or {})


class IterationAbortedError(EBPFError):
    """Map iteration could not continue (the map changed too much under it)."""


class ClosedError(EBPFError, ValueError):
    """An operation on a closed object, like I/O on a closed file."""

    def __init__(self, what: str = "object") -> None:
        super().__init__(f"operation on closed {what}", _errno.EBADF)


class PermissionDeniedError(EBPFError, PermissionError):
    """The caller lacks a privilege (CAP_BPF, CAP_SYS_ADMIN, ...) or the kernel
    refused for policy reasons (e.g. lockdown)."""


class KernelPolicyError(NotSupportedError, PermissionDeniedError):
    """The kernel refused by policy, not for want of privilege: kernel
    lockdown, an LSM (SELinux, the BPF LSM) or a sandbox forbids this program
    type or attach target on this machine, even to root.

    It is a :class:`NotSupportedError` (the feature is not available here,
    so callers and tests can skip on it) and a :class:`PermissionDeniedError`
    (the kernel said EPERM).  ``program`` names the refused program.
    """

    def __init__(self, feature: str, *, program: Optional[str] = None, errno: Optional[int] = _errno.EPERM,
                 detail: str = "") -> None:
        NotSupportedError.__init__(self, feature, errno=errno, detail=detail)
        self.program = program


class InvalidObjectError(EBPFError, ValueError):
    """Malformed input: an ELF or BTF blob that cannot be parsed, a bad value."""


class MarshalError(EBPFError, ValueError):
    """A key or value that does not fit the map or variable (wrong size,
    integer out of range, mismatched batch lengths).  Raised before any
    syscall."""


class MarshalTypeError(MarshalError, TypeError):
    """A key or value of a type the map cannot take (``None``, ``str``,
    ``float`` for an integer slot, ...): a :class:`MarshalError` that is
    also a ``TypeError``."""


class PinError(EBPFError, ValueError):
    """A pin path is unusable (not on bpffs, missing directory, ...), or it
    holds another kind of object than the one asked for: then ``found``
    names what is there (``"map"``, ``"program"``, ``"link"``, or what the
    file is)."""

    found: Optional[str] = None
