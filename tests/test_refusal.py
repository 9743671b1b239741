"""Telling a refusal by the kernel's policy from a missing privilege and
from the verifier's own rejection, on recorded errnos and logs (no kernel
needed), so the classification is tested on every machine."""

from __future__ import annotations

import errno

import pytest

from ebpf import AttachType, ProgramType, _privilege
from ebpf.errors import KernelPolicyError, NotSupportedError, PermissionDeniedError

# What kernels print when they refuse before verifying (recorded on 6.18:
# an iter/bpf_map_elem program under a policy that refuses it).
ZERO_INSNS = "processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n"
REJECTED = "0: R1=ctx() R10=fp0\n0: (b7) r0 = 0\n1: (95) exit\nR0 unbounded\nprocessed 2 insns (limit 1000000)\n"


@pytest.mark.parametrize("log", ["", "\n", ZERO_INSNS, ZERO_INSNS * 2])
def test_eperm_before_verification_is_a_policy_refusal(log):
    exc = _privilege.load_refusal("dump_elems", ProgramType.TRACING, errno.EPERM, log,
                                  attach_type=AttachType.TRACE_ITER, target="bpf_map_elem", privileged=True)
    assert isinstance(exc, KernelPolicyError)
    assert isinstance(exc, NotSupportedError) and isinstance(exc, PermissionDeniedError)
    assert exc.errno == errno.EPERM and exc.program == "dump_elems"
    text = str(exc)
    assert "dump_elems" in text and "bpf_map_elem" in text and "TRACE_ITER" in text and "policy" in text
    # libbpf's hints for other causes must not reach the message.
    assert "ulimit" not in text and "memlock" not in text.lower() and "CONFIG_" not in text


@pytest.mark.parametrize("log", ["", ZERO_INSNS])
def test_eperm_without_privilege_names_the_capability(log):
    exc = _privilege.load_refusal("p", ProgramType.XDP, errno.EPERM, log, privileged=False)
    assert type(exc) is PermissionDeniedError
    assert "CAP_BPF" in str(exc) and "CAP_SYS_ADMIN" in str(exc)
    assert not isinstance(exc, NotSupportedError)


@pytest.mark.parametrize("err,log", [
    (errno.EPERM, REJECTED),          # the verifier worked, then refused
    (errno.EACCES, ""),               # not EPERM
    (errno.EINVAL, ZERO_INSNS),
])
def test_other_failures_are_not_refusals(err, log):
    assert _privilege.load_refusal("p", ProgramType.XDP, err, log, privileged=True) is None


def test_verifier_did_no_work():
    assert _privilege.verifier_did_no_work("")
    assert _privilege.verifier_did_no_work(ZERO_INSNS)
    assert not _privilege.verifier_did_no_work(REJECTED)
    assert not _privilege.verifier_did_no_work("processed 12 insns (limit 1000000)\n")


def test_capabilities_are_read_from_proc():
    caps = _privilege.capabilities()
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("CapEff:"))
    assert caps == int(line.split()[1], 16)


def test_policy_errors_copy_and_pickle_whole():
    import copy
    import pickle

    exc = KernelPolicyError("iterator bpf_map_elem", program="dump_elems", detail="refused")
    for again in (copy.copy(exc), pickle.loads(pickle.dumps(exc))):
        assert type(again) is KernelPolicyError
        assert str(again) == str(exc) and again.errno == exc.errno and again.program == "dump_elems"
        assert again.feature == "iterator bpf_map_elem"
