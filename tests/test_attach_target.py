"""``ProgramSpec.attach_target``: programs loaded against another BPF program
(freplace; fentry/fexit on a BPF function), alone and in a Collection.

The target is ``uses_subprogs`` of fixtures/subprog.bpf.c; the programs of
fixtures/attach_target.bpf.c replace or trace its global function
``middle``.  The spec side is tested everywhere: the function's BTF id in
the target's BTF, a missing function named, a wrong program type refused
before any syscall.  Kernels under lockdown refuse the load itself (EPERM
with an empty log): that is a KernelPolicyError, and the attach-and-run
tests skip there.
"""

from __future__ import annotations

from typing import Dict, Iterator

import pytest

import ebpf
from ebpf import AttachType, ProgramType, _libbpf, _loader, features, link
from ebpf.errors import ClosedError, InvalidObjectError, KernelPolicyError, KeyNotExistError

from conftest import fixture_path, require

pytestmark = pytest.mark.kernel

NAMES = ("new_middle", "on_middle_entry", "on_middle_exit")


@pytest.fixture
def target() -> Iterator[ebpf.Program]:
    with ebpf.Collection(ebpf.load_collection_spec(fixture_path("subprog.o"))) as coll:
        yield coll.programs["uses_subprogs"]


def target_ids() -> Dict[str, int]:
    """FUNC name -> id in the target's BTF, read from the object (libbpf
    loads the object's BTF with its ids unchanged on this kernel)."""
    types = ebpf.load_collection_spec(fixture_path("subprog.o")).types
    return {f.name: types.type_id(f) for f in types if isinstance(f, ebpf.btf.Func)}


def against(target: ebpf.Program, name: str = "new_middle", attach_to: str = "middle") -> ebpf.ProgramSpec:
    ps = ebpf.load_collection_spec(fixture_path("attach_target.o")).programs[name].copy()
    ps.attach_target = target
    ps.attach_to = attach_to
    return ps


def tracing_refused_by_policy() -> bool:
    try:
        features.have_tracing_programs()
    except KernelPolicyError:
        return True
    except ebpf.NotSupportedError:
        pytest.skip("the kernel has no tracing programs")
    return False


def own_maps(name: str) -> Dict[str, ebpf.Map]:
    spec = ebpf.load_collection_spec(fixture_path("attach_target.o"))
    return {k: ebpf.Map(spec.maps[k]) for k in _loader.references(spec, name)}


# --------------------------------------------------------------------------
# The spec side (no load needed)


def test_sections_read_as_their_kinds():
    progs = ebpf.load_collection_spec(fixture_path("attach_target.o")).programs
    assert (progs["new_middle"].type, progs["new_middle"].attach_type) == (ProgramType.EXT, AttachType.NONE)
    assert progs["on_middle_entry"].attach_type == AttachType.TRACE_FENTRY
    assert progs["on_middle_exit"].attach_type == AttachType.TRACE_FEXIT
    assert all(p.attach_to == "middle" and p.attach_target is None for p in progs.values())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("func", ["middle", "leaf", "uses_subprogs"])
def test_target_function_resolves_to_its_id_in_the_targets_btf(target, name, func):
    ps = against(target, name, func)
    with target._using() as fd:
        assert _loader.attach_target_btf_id(ps, fd) == target_ids()[func]
    assert ps.copy().attach_target is target  # copies refer to the same program


def test_missing_function_is_a_typed_error_naming_it(target):
    for ps in (against(target, "new_middle", "no_such_func"), against(target, "on_middle_entry", "no_such_func")):
        with pytest.raises(KeyNotExistError, match="'no_such_func'.*uses_subprogs.*middle"):
            ebpf.Program(ps, maps=own_maps(ps.name))
    spec = ebpf.load_collection_spec(fixture_path("attach_target.o"))
    spec.programs["on_middle_exit"].attach_target = target
    spec.programs["on_middle_exit"].attach_to = "nowhere"
    with pytest.raises(KeyNotExistError, match="'nowhere' is not in the BTF of program uses_subprogs"):
        ebpf.Collection(spec, _programs={"on_middle_exit"})


def _no_syscalls(monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("a syscall was made before the attach target was refused")

    for name in ("prog_load", "obj_get_info", "btf_get_fd_by_id", "open_object", "map_create"):
        monkeypatch.setattr(_libbpf, name, forbidden)


@pytest.mark.parametrize("ptype,attach_type", [
    (ProgramType.SOCKET_FILTER, AttachType.NONE),
    (ProgramType.TRACING, AttachType.TRACE_RAW_TP),
    (ProgramType.TRACING, AttachType.MODIFY_RETURN),
    (ProgramType.LSM, AttachType.LSM_MAC),
    (ProgramType.EXT, AttachType.TRACE_FENTRY),
])
def test_wrong_program_type_is_refused_before_any_syscall(target, monkeypatch, ptype, attach_type):
    from ebpf import asm

    ps = ebpf.ProgramSpec("wrong", ptype, attach_type, attach_to="middle", license="GPL",
                          instructions=asm.Instructions([asm.mov_imm(asm.R0, 0), asm.exit()]))
    ps.attach_target = target
    elf = against(target, "on_middle_entry")
    elf.type, elf.attach_type = ptype, attach_type
    spec = ebpf.load_collection_spec(fixture_path("attach_target.o"))
    spec.programs["on_middle_entry"] = elf
    _no_syscalls(monkeypatch)
    for load in (lambda: ebpf.Program(ps), lambda: ebpf.Program(elf), lambda: ebpf.Collection(spec)):
        with pytest.raises(InvalidObjectError, match="only EXT programs .* and TRACING programs"):
            load()


def test_attach_target_must_be_a_program_and_name_a_function(target, monkeypatch):
    bad = against(target)
    bad.attach_target = 3  # an fd is not enough: the program must stay open while loading
    empty = against(target, attach_to="")
    _no_syscalls(monkeypatch)
    with pytest.raises(TypeError, match="attach_target must be a loaded ebpf.Program"):
        ebpf.Program(bad)
    with pytest.raises(InvalidObjectError, match="needs attach_to"):
        ebpf.Program(empty)


def test_closed_attach_target(target):
    ps = against(target)
    other = target.clone()
    ps.attach_target = other
    other.close()
    with pytest.raises(ClosedError, match="attach_target of program new_middle"):
        ebpf.Program(ps)


# --------------------------------------------------------------------------
# The kernel's answer


@pytest.mark.parametrize("name", NAMES)
def test_kernel_refusal_is_a_policy_error(target, name):
    if not tracing_refused_by_policy():
        pytest.skip("this kernel loads tracing programs (see the attach-and-run tests)")
    maps = own_maps(name)
    try:
        with pytest.raises(KernelPolicyError) as info:
            ebpf.Program(against(target, name), maps=maps)
        assert info.value.program == name and "middle" in str(info.value)
    finally:
        for m in maps.values():
            m.close()
    spec = ebpf.load_collection_spec(fixture_path("attach_target.o"))
    spec.programs[name].attach_target = target
    with pytest.raises(KernelPolicyError):
        ebpf.Collection(spec, _programs={name})


def test_freplace_attached_and_run(target):
    require(features.have_tracing_programs)
    # run() hands a socket filter an Ethernet frame: skb->len is 20 - 14 = 6.
    assert target.run(bytes(20)).retval == 6 * 3 + 5
    with ebpf.Program(against(target)) as ext:
        info = ext.info()
        assert info.attach_btf_id == target_ids()["middle"]
        assert info.attach_btf_obj_id == target.info().btf_id
        with link.attach_tracing(ext):
            assert target.run(bytes(20)).retval == 6 + 1000
    assert target.run(bytes(20)).retval == 6 * 3 + 5


def test_fentry_fexit_on_a_bpf_function_in_a_collection(target):
    require(features.have_tracing_programs)
    spec = ebpf.load_collection_spec(fixture_path("attach_target.o"))
    for name in ("on_middle_entry", "on_middle_exit"):
        spec.programs[name].attach_target = target
    with ebpf.Collection(spec, _programs={"on_middle_entry", "on_middle_exit"}) as coll:
        links = [link.attach_tracing(coll.programs[n]) for n in ("on_middle_entry", "on_middle_exit")]
        try:
            for _ in range(3):
                target.run(bytes(20))
        finally:
            for lk in links:
                lk.close()
        assert coll.variables["entries"].get() == 3 and coll.variables["exits"].get() == 3
