"""What an ELF section name says about its program or map.

One table, read by the ELF reader (which hook a program's section names:
``ProgramSpec.attach_to``; the types of sections the installed libbpf does
not know) and by :mod:`ebpf.link.auto` (which attach function a section's
hook goes to).  To teach the library a new program section, add a row to
:data:`SECTIONS`; if its hook can be attached without the caller's help,
give :func:`ebpf.link.auto.section_hook` a branch for its :class:`Hook`.

Pure data: no kernel, no libbpf.
"""

from __future__ import annotations

import enum
import re
from typing import Dict, NamedTuple, Optional, Tuple

from .types import AttachType, ProgramType

__all__ = ["Hook", "Section", "SECTIONS", "lookup", "attach_to", "newer_section_types", "is_data_section"]


class Hook(enum.Enum):
    """What the part of a section name after ``prefix/`` names."""

    TRACEPOINT = "tracepoint"  # <group>/<name>
    RAW_TRACEPOINT = "raw_tracepoint"  # <name>
    TRACING = "tracing"  # a kernel function (tp_btf, fentry, fexit, fmod_ret, lsm)
    FREPLACE = "freplace"  # a function of another BPF program
    LSM_CGROUP = "lsm_cgroup"  # an LSM hook, attached per cgroup
    ITER = "iter"  # an iterator target
    KPROBE = "kprobe"  # <function>[+<offset>]
    KRETPROBE = "kretprobe"
    KSYSCALL = "ksyscall"  # <syscall name>
    KRETSYSCALL = "kretsyscall"
    KPROBE_MULTI = "kprobe_multi"  # <glob>
    KRETPROBE_MULTI = "kretprobe_multi"
    UPROBE = "uprobe"  # [<binary>:<function>[+<offset>]]
    URETPROBE = "uretprobe"
    USDT = "usdt"  # [<binary>:<provider>:<name>]
    UPROBE_MULTI = "uprobe_multi"  # [<binary>:<glob>]
    URETPROBE_MULTI = "uretprobe_multi"
    STRUCT_OPS = "struct_ops"  # a member of an ops struct


class Section(NamedTuple):
    """One row of the table.

    ``name`` ending in ``/`` is a prefix whose remainder names ``hook``
    (``"kprobe/"``); any other name matches exactly.  ``program_type`` and
    ``attach_type`` are given only for sections libbpf 1.1 reads as
    ``UNSPEC``: the types newer libbpf releases give them, so a spec is the
    same whichever libbpf is installed.
    """

    name: str
    hook: Optional[Hook] = None
    sleepable: bool = False
    program_type: Optional[ProgramType] = None
    attach_type: Optional[AttachType] = None


_H = Hook
SECTIONS: Tuple[Section, ...] = (
    Section("tracepoint/", _H.TRACEPOINT),
    Section("tp/", _H.TRACEPOINT),
    Section("raw_tracepoint/", _H.RAW_TRACEPOINT),
    Section("raw_tp/", _H.RAW_TRACEPOINT),
    Section("raw_tracepoint.w/", _H.RAW_TRACEPOINT),
    Section("raw_tp.w/", _H.RAW_TRACEPOINT),
    Section("tp_btf/", _H.TRACING),
    Section("fentry/", _H.TRACING),
    Section("fexit/", _H.TRACING),
    Section("fmod_ret/", _H.TRACING),
    Section("fentry.s/", _H.TRACING, sleepable=True),
    Section("fexit.s/", _H.TRACING, sleepable=True),
    Section("fmod_ret.s/", _H.TRACING, sleepable=True),
    Section("lsm/", _H.TRACING),
    Section("lsm.s/", _H.TRACING, sleepable=True),
    Section("freplace/", _H.FREPLACE),
    Section("lsm_cgroup/", _H.LSM_CGROUP),
    Section("iter/", _H.ITER),
    Section("iter.s/", _H.ITER, sleepable=True),
    Section("kprobe/", _H.KPROBE),
    Section("kretprobe/", _H.KRETPROBE),
    Section("ksyscall/", _H.KSYSCALL),
    Section("kretsyscall/", _H.KRETSYSCALL),
    Section("kprobe.multi/", _H.KPROBE_MULTI),
    Section("kretprobe.multi/", _H.KRETPROBE_MULTI),
    Section("uprobe/", _H.UPROBE),
    Section("uretprobe/", _H.URETPROBE),
    Section("uprobe.s/", _H.UPROBE, sleepable=True),
    Section("uretprobe.s/", _H.URETPROBE, sleepable=True),
    Section("usdt/", _H.USDT),
    Section("usdt.s/", _H.USDT, sleepable=True),
    Section("struct_ops/", _H.STRUCT_OPS),
    Section("struct_ops.s/", _H.STRUCT_OPS, sleepable=True),
    # Learnt by libbpf after 1.1.
    Section("netfilter", program_type=ProgramType.NETFILTER, attach_type=AttachType.NETFILTER),
    Section("tcx/ingress", program_type=ProgramType.SCHED_CLS, attach_type=AttachType.TCX_INGRESS),
    Section("tcx/egress", program_type=ProgramType.SCHED_CLS, attach_type=AttachType.TCX_EGRESS),
    Section("netkit/primary", program_type=ProgramType.SCHED_CLS, attach_type=AttachType.NETKIT_PRIMARY),
    Section("netkit/peer", program_type=ProgramType.SCHED_CLS, attach_type=AttachType.NETKIT_PEER),
    Section("uprobe.multi", program_type=ProgramType.KPROBE, attach_type=AttachType.TRACE_UPROBE_MULTI),
    Section("uretprobe.multi", program_type=ProgramType.KPROBE, attach_type=AttachType.TRACE_UPROBE_MULTI),
    Section("uprobe.multi/", _H.UPROBE_MULTI, program_type=ProgramType.KPROBE,
            attach_type=AttachType.TRACE_UPROBE_MULTI),
    Section("uretprobe.multi/", _H.URETPROBE_MULTI, program_type=ProgramType.KPROBE,
            attach_type=AttachType.TRACE_UPROBE_MULTI),
)

_BY_NAME: Dict[str, Section] = {s.name: s for s in SECTIONS}


def lookup(section: str) -> Tuple[Optional[Section], str]:
    """The row for a section name and what follows its prefix.

    ``("kprobe/do_sys_open")`` gives the ``kprobe/`` row and
    ``"do_sys_open"``; an exact row gives ``""``; an unknown name, or a
    prefix with nothing after it, gives ``(None, "")``.
    """
    exact = _BY_NAME.get(section)
    if exact is not None and not exact.name.endswith("/"):
        return exact, ""
    prefix, sep, rest = section.partition("/")
    if sep and rest:
        row = _BY_NAME.get(prefix + "/")
        if row is not None:
            return row, rest
    return None, ""


def attach_to(section: str) -> str:
    """The hook a section names (``ProgramSpec.attach_to``), or ``""``.

    Anything after ``/`` in a section without a hook (``socket/tail``) is
    just a label.
    """
    row, rest = lookup(section)
    return rest if row is not None and row.hook is not None else ""


def newer_section_types(section: str) -> Optional[Tuple[ProgramType, AttachType]]:
    """Program and attach type of a section libbpf 1.1 does not know."""
    row = _BY_NAME.get(section) or lookup(section)[0]  # exact, or "prefix/..."
    if row is None or row.program_type is None:
        return None
    return row.program_type, row.attach_type if row.attach_type is not None else AttachType.NONE


# Sections (and so map names) that hold globals: libbpf turns each into an
# array map with one element, named "<obj>.data" etc. in the kernel.
_DATA_SECTION = re.compile(r"^\.(data|rodata|bss)(\..*)?$|^\.kconfig$")


def is_data_section(name: str) -> bool:
    """Whether ``name`` is a section of globals (``.data``, ``.rodata.str1``, ``.bss``, ``.kconfig``)."""
    return bool(_DATA_SECTION.match(name))
