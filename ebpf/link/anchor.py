"""Anchors: where a program goes among the others on a multi-program hook.

tcx (kernel 6.6+) and netkit (6.7+) hooks hold an ordered list of programs,
each attached by a ``bpf_link`` or by ``BPF_PROG_ATTACH``.  An
:class:`Anchor` names a position in that list, as cilium/ebpf's
``link.Anchor`` does::

    ebpf.link.attach_tcx("eth0", prog, "ingress", anchor=ebpf.link.head())
    ebpf.link.attach_tcx("eth0", prog, "ingress", anchor=ebpf.link.before_link(other_link))
    ebpf.link.raw_attach_program("eth0", new, AttachType.TCX_INGRESS,
                                 anchor=ebpf.link.replace_program(old))

The target of an anchor is a :class:`ebpf.Program` or a link (by its fd) or
the kernel id of either.  The kernel resolves it when the attach happens: a
target that is not on the hook fails the attach with ENOENT.  A link cannot
take another program's place (the kernel refuses ``replace`` for links):
use :meth:`ebpf.link.Link.update` to swap a link's program, or
:func:`ebpf.link.raw_attach_program` to replace an attached program.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .. import _syscall, features
from ..errors import ENOTSUPP, EBPFError, NotSupportedError
from ..types import AttachType
from ._link import FDLink, Link

__all__ = [
    "Anchor",
    "head",
    "tail",
    "before_program",
    "after_program",
    "before_program_by_id",
    "after_program_by_id",
    "replace_program",
    "replace_program_by_id",
    "before_link",
    "after_link",
    "before_link_by_id",
    "after_link_by_id",
]

# uapi linux/bpf.h, the mprog attach flags (6.6+)
BPF_F_REPLACE = 1 << 2
BPF_F_BEFORE = 1 << 3
BPF_F_AFTER = 1 << 4
BPF_F_ID = 1 << 5
BPF_F_LINK = 1 << 13

_FLAGS = {"before": BPF_F_BEFORE, "after": BPF_F_AFTER, "replace": BPF_F_REPLACE}


@dataclass(frozen=True)
class Anchor:
    """A position on a multi-program hook; make one with :func:`head`,
    :func:`tail`, :func:`before_program`, :func:`after_link`, ...

    ``position`` is ``"before"``, ``"after"`` or ``"replace"``; ``target``
    the Program, link or id it is relative to (None for :func:`head` and
    :func:`tail`); ``kind`` says what the target is: ``"program"`` or
    ``"link"``.
    """

    position: str
    target: Any = None
    kind: str = "program"
    by_id: bool = False

    def resolve(self) -> Tuple[int, int]:
        """``(relative fd or id, flags)`` for the attach call.

        A closed target raises :class:`~ebpf.errors.ClosedError`.
        """
        flags = _FLAGS[self.position]
        if self.target is None:
            return 0, flags
        if self.kind == "link":
            flags |= BPF_F_LINK
        if self.by_id:
            return int(self.target), flags | BPF_F_ID
        if isinstance(self.target, int):  # a raw fd (before=/after= take those)
            return self.target, flags
        return int(self.target.fd), flags  # .fd of a closed object raises ClosedError

    def __str__(self) -> str:
        if self.target is None:
            return "head" if self.position == "before" else "tail"
        if self.by_id or isinstance(self.target, int):
            what = f"{self.kind} {'id' if self.by_id else 'fd'} {int(self.target)}"
        else:
            what = f"{self.kind} {_describe(self.target)}"
        return f"{self.position} {what}"


def _describe(target: Any) -> str:
    name = getattr(target, "name", None)
    return repr(name) if name else type(target).__name__


def _program(target: Any, fn: str) -> Any:
    if isinstance(target, Link) or isinstance(target, (int, bool)) or getattr(target, "fd", None) is None:
        raise TypeError(f"{fn}() takes an ebpf.Program, not {type(target).__name__}"
                        + (f"; use {fn}_by_id() for an id" if isinstance(target, int) else ""))
    return target


def _link(target: Any, fn: str) -> Any:
    if not isinstance(target, FDLink):
        hint = f"; use {fn}_by_id() for an id" if isinstance(target, int) else (
            "; this attachment has no bpf_link" if isinstance(target, Link) else "")
        raise TypeError(f"{fn}() takes a link with a bpf_link fd (an FDLink), not {type(target).__name__}{hint}")
    return target


def _id(target: object, fn: str) -> int:
    if isinstance(target, bool) or not isinstance(target, int) or not 0 < target < 1 << 32:
        raise TypeError(f"{fn}() takes a kernel id (a positive 32-bit int), not {target!r}")
    return target


def head() -> Anchor:
    """The first position: run before every program already attached."""
    return Anchor("before")


def tail() -> Anchor:
    """The last position (where an attach without an anchor goes)."""
    return Anchor("after")


def before_program(prog: Any) -> Anchor:
    """Just in front of ``prog``, a Program attached to the hook."""
    return Anchor("before", _program(prog, "before_program"))


def after_program(prog: Any) -> Anchor:
    """Just behind ``prog``."""
    return Anchor("after", _program(prog, "after_program"))


def before_program_by_id(prog_id: int) -> Anchor:
    """Just in front of the program with kernel id ``prog_id``."""
    return Anchor("before", _id(prog_id, "before_program_by_id"), by_id=True)


def after_program_by_id(prog_id: int) -> Anchor:
    """Just behind the program with kernel id ``prog_id``."""
    return Anchor("after", _id(prog_id, "after_program_by_id"), by_id=True)


def replace_program(prog: Any) -> Anchor:
    """In the place of ``prog`` (for :func:`~ebpf.link.raw_attach_program`:
    the new program takes over the old one's slot atomically)."""
    return Anchor("replace", _program(prog, "replace_program"))


def replace_program_by_id(prog_id: int) -> Anchor:
    """In the place of the program with kernel id ``prog_id``."""
    return Anchor("replace", _id(prog_id, "replace_program_by_id"), by_id=True)


def before_link(link: Any) -> Anchor:
    """Just in front of the program of ``link`` (a tcx or netkit link)."""
    return Anchor("before", _link(link, "before_link"), kind="link")


def after_link(link: Any) -> Anchor:
    """Just behind the program of ``link``."""
    return Anchor("after", _link(link, "after_link"), kind="link")


def before_link_by_id(link_id: int) -> Anchor:
    """Just in front of the link with kernel id ``link_id``."""
    return Anchor("before", _id(link_id, "before_link_by_id"), kind="link", by_id=True)


def after_link_by_id(link_id: int) -> Anchor:
    """Just behind the link with kernel id ``link_id``."""
    return Anchor("after", _id(link_id, "after_link_by_id"), kind="link", by_id=True)


def legacy_anchor(before: Any, after: Any, fn: str) -> Any:
    """The anchor that ``before=``/``after=`` (a Program or a link) name, or None."""
    if before is not None and after is not None:
        raise EBPFError(f"{fn}: give before= or after=, not both", errno.EINVAL)
    target = before if before is not None else after
    if target is None:
        return None
    if isinstance(target, Anchor):
        raise TypeError(f"{fn}: pass an Anchor as anchor=, not as before=/after=")
    position = "before" if before is not None else "after"
    if isinstance(target, FDLink):
        return Anchor(position, target, kind="link")
    if isinstance(target, Link):
        raise EBPFError(f"{fn}: a {type(target).__name__} cannot anchor a link; pass a tcx/netkit link or a Program",
                        errno.EINVAL)
    if isinstance(target, int) and not isinstance(target, bool):
        return Anchor(position, target)  # a program's fd, as program_fd() takes it
    return Anchor(position, _program(target, f"{fn} {position}="))


# --------------------------------------------------------------------------
# What tcx and netkit attach calls share: the attach itself and its errors.


def parse_attach_type(value: Any, names: Dict[str, AttachType], fn: str) -> AttachType:
    """An attach type given as one of ``names``' keys or values."""
    if isinstance(value, str):
        try:
            return names[value]
        except KeyError:
            raise EBPFError(f"{fn}: direction must be {' or '.join(map(repr, names))}, not {value!r}",
                            errno.EINVAL) from None
    try:
        at = AttachType(int(value))
    except ValueError:
        at = None
    if at not in names.values():
        raise EBPFError(f"{fn}: attach type must be {' or '.join(a.name for a in names.values())}, not "
                        f"{getattr(at, 'name', value)}", errno.EINVAL)
    return at  # type: ignore[return-value]


def check_revision(revision: int, fn: str) -> int:
    if isinstance(revision, bool) or not isinstance(revision, int) or not 0 <= revision < 1 << 64:
        raise ValueError(f"{fn}: expected_revision must be an integer in [0, 2**64), not {revision!r}")
    return revision


def link_create(fn: str, prog_fd: int, ifindex: int, attach_type: AttachType, anchor: Optional[Anchor],
                expected_revision: int, where: str, link_type: int) -> int:
    """``BPF_LINK_CREATE`` on a multi-program hook: the link's fd.

    libbpf 1.1.2 cannot pass anchors or revisions, so the attribute block
    is built here (tcx and netkit share its layout).
    """
    if anchor is not None and anchor.position == "replace":
        raise EBPFError(f"{fn}: a link cannot take another program's place (the kernel refuses it): swap a "
                        f"link's program with Link.update(), or replace a program attached without a link "
                        f"with raw_attach_program(..., anchor=replace_program(old))", errno.EINVAL)
    relative, flags = anchor.resolve() if anchor is not None else (0, 0)
    attr = _syscall.link_create_attr(prog_fd=prog_fd, target_ifindex=ifindex, attach_type=int(attach_type),
                                     flags=flags)
    attr.tcx.relative_fd = relative
    attr.tcx.expected_revision = expected_revision
    try:
        return _syscall.link_create(attr, f"{where} link")
    except EBPFError as exc:
        raise attach_error(exc, fn, where, anchor, expected_revision, link_type) from None


def attach_error(exc: EBPFError, fn: str, where: str, anchor: Optional[Anchor], revision: int,
                 link_type: int) -> EBPFError:
    """The typed error of a failed attach at ``where`` (a tcx or netkit hook)."""
    err = exc.errno
    if err in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP):
        try:
            features.have_link_type(link_type)
        except NotSupportedError as missing:
            return missing
    if err == errno.ESTALE:
        return EBPFError(f"{fn}: {where} changed since revision {revision}", err)
    if err == errno.ENOENT and anchor is not None and anchor.target is not None:
        return EBPFError(f"{fn}: the anchor ({anchor}) is not attached at {where}", err)
    if err == errno.EEXIST:
        return EBPFError(f"{fn}: this program is already attached at {where}", err)
    if err == errno.ERANGE:
        return EBPFError(f"{fn}: {where} holds as many programs as the kernel allows, or the anchor "
                         f"({anchor}) contradicts the position asked for", err)
    if err == errno.EBUSY and anchor is not None and anchor.position == "replace":
        return EBPFError(f"{fn}: the program to replace ({anchor}) is attached by a link: use that link's "
                         f"update()", err)
    return exc
