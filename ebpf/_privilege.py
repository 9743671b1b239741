"""Telling a missing privilege from a refusal by the kernel's policy.

The kernel answers EPERM both when the caller lacks CAP_BPF/CAP_SYS_ADMIN
and when a policy forbids what was asked (kernel lockdown, an LSM such as
SELinux or the BPF LSM, a sandbox).  The two need different answers: the
first is the caller's to fix (:class:`PermissionDeniedError` naming the
capability), the second is a property of this machine
(:class:`KernelPolicyError`, a :class:`NotSupportedError` that callers and
tests can skip on).

A load refused by policy is recognised by EPERM while the verifier did no
work: its log is empty, or says only that it processed 0 instructions.  That
happens to a caller with CAP_BPF or CAP_SYS_ADMIN; without them EPERM is the
privilege check.
"""

from __future__ import annotations

import errno
import functools
import re
from typing import Any, Optional

from .errors import EBPFError, KernelPolicyError, PermissionDeniedError

__all__ = ["capabilities", "bpf_privileged", "verifier_did_no_work", "load_refusal", "lockdown_mode"]

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

_PROCESSED_NOTHING = re.compile(r"^processed 0 insns\b")


def capabilities() -> int:
    """The effective capability set of this thread's process, as a bit mask
    (0 when /proc cannot tell)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def bpf_privileged() -> bool:
    """Whether the caller holds what bpf() asks of it for most program and
    map types: CAP_BPF (5.8+) or CAP_SYS_ADMIN."""
    caps = capabilities()
    return bool(caps & ((1 << CAP_BPF) | (1 << CAP_SYS_ADMIN)))


def verifier_did_no_work(log: str) -> bool:
    """True for an empty verifier log or one whose every line says it
    processed 0 instructions (the kernel refused before verifying)."""
    lines = [line for line in log.splitlines() if line.strip()]
    return all(_PROCESSED_NOTHING.match(line) for line in lines)


@functools.lru_cache(maxsize=None)
def lockdown_mode() -> Optional[str]:
    """The active kernel lockdown mode (``none``, ``integrity``,
    ``confidentiality``), or None where securityfs does not say."""
    try:
        with open("/sys/kernel/security/lockdown") as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else None


def _name(value: Any) -> str:
    return getattr(value, "name", None) or str(value)


def load_refusal(
    program: str,
    ptype: Any,
    err: int,
    log: str,
    *,
    attach_type: Any = None,
    target: str = "",
    privileged: Optional[bool] = None,
) -> Optional[EBPFError]:
    """The error for a program load the kernel refused without verifying it,
    or None when ``err``/``log`` are not such a refusal (the verifier's own
    rejection, or another errno, is for the caller to report).

    ``privileged`` defaults to what :func:`bpf_privileged` says now; tests
    pass it to classify a recorded refusal.
    """
    if err != errno.EPERM or not verifier_did_no_work(log):
        return None
    if privileged is None:
        privileged = bpf_privileged()
    kind = _name(ptype)
    if not privileged:
        return PermissionDeniedError(
            f"loading program {program}: operation not permitted: loading a {kind} program needs CAP_BPF "
            "(with CAP_PERFMON for tracing, CAP_NET_ADMIN for networking) or CAP_SYS_ADMIN",
            err,
        )
    how = []
    if attach_type is not None and int(attach_type) != 0:  # 0: none given (or cgroup ingress)
        how.append(_name(attach_type))
    if target:
        how.append(f"on {target}")
    what = f"{kind} programs" + (f" ({' '.join(how)})" if how else "")
    mode = lockdown_mode()
    why = f"kernel lockdown is '{mode}'" if mode and mode != "none" else "kernel lockdown or an LSM, most likely"
    return KernelPolicyError(
        what,
        program=program,
        errno=err,
        detail=(
            f"the kernel refused to load program {program} by policy (EPERM before the verifier ran, "
            f"while the caller has CAP_BPF/CAP_SYS_ADMIN); {why}"
        ),
    )
