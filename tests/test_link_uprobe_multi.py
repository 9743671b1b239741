"""uprobe.multi links on a real user binary: one link, many probes.

The programs of ``fixtures/uprobe_multi.bpf.c`` count every hit under its
BPF cookie (and add up return values), so each probe of a link is told
apart; ``fixtures/uprobe_target.c`` calls ``target_value``, ``target_add``
and ``target_asm`` COUNT times each (see tests/test_link_uprobe.py for the
target and its private copies).
"""

from __future__ import annotations

import errno
from typing import Iterator

import pytest
from test_link_uprobe import COUNT, VALUE, fd_count, private_binaries, run_target, target, target_bin  # noqa: F401

import ebpf
from ebpf import AttachType, ProgramType, asm, features
from ebpf.errors import ClosedError, EBPFError, InvalidObjectError, NotSupportedError
from ebpf.link import LinkType, open_executable
from ebpf.link.uprobe import ProcessNotFoundError, SymbolNotFoundError

from conftest import fixture_path, require

pytestmark = pytest.mark.kernel

FUNCS = ["target_value", "target_add", "target_asm"]


def multi_spec() -> ebpf.CollectionSpec:
    return ebpf.load_collection_spec(fixture_path("uprobe_multi.o"))


def test_uprobe_multi_sections_have_their_types():
    # libbpf 1.1.2 reads SEC("uprobe.multi") as UNSPEC; the section table knows better.
    for name in ("multi_entry", "multi_return"):
        p = multi_spec().programs[name]
        assert (p.type, p.attach_type) == (ProgramType.KPROBE, AttachType.TRACE_UPROBE_MULTI), name


@pytest.fixture
def coll() -> Iterator[ebpf.Collection]:
    require(features.have_link_type, LinkType.UPROBE_MULTI)
    with ebpf.Collection(multi_spec()) as c:
        yield c


def counts(c: ebpf.Collection, name: str) -> list:
    m = c.maps[name]
    return [int(m[i]) for i in range(8)]


def test_one_link_probes_every_symbol_with_its_cookie(coll):
    exe = open_executable(target_bin())
    before = fd_count()
    with exe.uprobe_multi(FUNCS, coll.programs["multi_entry"], cookies=[1, 2, 3]) as link:
        assert fd_count() == before + 1  # one link, no perf events
        run_target()
        run_target(count=2)
        info = link.info()
    assert counts(coll, "entry_hits") == [0, COUNT + 2, COUNT + 2, COUNT + 2, 0, 0, 0, 0]
    assert info.type == LinkType.UPROBE_MULTI
    assert info.program_id == coll.programs["multi_entry"].info().id
    assert info.extra["path"] == exe.path
    assert info.extra["offsets"] == [exe.address(f) for f in FUNCS]
    assert info.extra["cookies"] == [1, 2, 3]
    assert info.extra["count"] == 3 and info.extra["retprobe"] is False and info.extra["pid"] == 0
    run_target()  # detached: nothing more is counted
    assert counts(coll, "entry_hits")[1] == COUNT + 2


def test_return_probes_see_return_values(coll):
    exe = open_executable(target_bin())
    with exe.uretprobe_multi(["target_value", "target_add"], coll.programs["multi_return"], cookies=[4, 5]) as link:
        run_target()
        info = link.info()
    assert counts(coll, "return_hits")[4:6] == [COUNT, COUNT]
    # target_value(v) returns v, target_add(v, 1) returns v + 1
    assert counts(coll, "return_sum")[4:6] == [COUNT * VALUE, COUNT * (VALUE + 1)]
    assert info.extra["retprobe"] is True and info.extra["flags"] == 1


def test_pid_filter_counts_one_process(coll):
    exe = open_executable(target_bin())
    with target() as watched, target() as other:
        with exe.uprobe_multi(FUNCS[:2], coll.programs["multi_entry"], cookies=[1, 2], pid=watched.pid) as link:
            assert link.info().extra["pid"] == watched.pid
            other.go()
            assert counts(coll, "entry_hits")[1:3] == [0, 0]
            watched.go()
    assert counts(coll, "entry_hits")[1:3] == [COUNT, COUNT]
    assert int(coll.maps["last"][0]) == watched.pid
    assert int(coll.maps["last"][1]) == VALUE  # the first argument, at the entry


def test_addresses_and_offsets_instead_of_symbols(coll):
    exe = open_executable(target_bin())
    with target() as t:
        # target_asm: a 1-byte nop, then a 3-byte mov (fixtures/uprobe_target.c)
        with exe.uprobe_multi(["target_asm", "target_asm"], coll.programs["multi_entry"], offsets=[0, 1],
                              cookies=[6, 7], pid=t.pid) as a, \
                exe.uprobe_multi(None, coll.programs["multi_entry"], addresses=[exe.address("target_value")],
                                 cookies=[3], pid=t.pid) as b:
            assert a.info().extra["offsets"] == [exe.address("target_asm"), exe.address("target_asm") + 1]
            assert b.info().extra["count"] == 1
            t.go()
    assert counts(coll, "entry_hits")[6:8] == [COUNT, COUNT]
    assert counts(coll, "entry_hits")[3] == COUNT


def test_a_standalone_program_works_too(coll):
    spec = multi_spec()
    with ebpf.Program(spec.programs["multi_entry"], maps=coll.maps) as prog:
        with open_executable(target_bin()).uprobe_multi(["target_add"], prog, cookies=[2]):
            run_target()
    assert counts(coll, "entry_hits")[2] == COUNT


def test_typed_errors(coll):
    exe = open_executable(target_bin())
    prog = coll.programs["multi_entry"]
    before = fd_count()
    with pytest.raises(SymbolNotFoundError, match="no_such_function"):
        exe.uprobe_multi(["target_value", "no_such_function"], prog)
    with pytest.raises(ValueError, match="cookies: 1 given for 2 probes"):
        exe.uprobe_multi(FUNCS[:2], prog, cookies=[1])
    with pytest.raises(ValueError, match="not both"):
        exe.uprobe_multi(FUNCS[:1], prog, addresses=[0x1000])
    with pytest.raises(ValueError, match="no symbols"):
        exe.uprobe_multi([], prog)
    with pytest.raises(ValueError, match=r"\[0, 2\*\*64\)"):
        exe.uprobe_multi(FUNCS[:1], prog, cookies=[-1])
    with pytest.raises(ProcessNotFoundError):
        exe.uprobe_multi(FUNCS[:1], prog, pid=2**22 + 12345)
    with pytest.raises(InvalidObjectError, match="refused"):
        exe.uprobe_multi(None, prog, addresses=[1 << 40])  # past the end of the file
    with pytest.raises(NotSupportedError, match="updating a uprobe.multi link"):
        with exe.uprobe_multi(FUNCS[:1], prog) as link:
            link.update(coll.programs["multi_return"])
    assert fd_count() == before


def test_wrong_programs_are_refused_before_any_syscall(coll):
    exe = open_executable(target_bin())
    spec = multi_spec()
    spec.programs["multi_entry"].attach_type = AttachType.NONE  # a plain uprobe program
    with ebpf.Collection(spec) as plain:
        with pytest.raises(InvalidObjectError, match="TRACE_UPROBE_MULTI"):
            exe.uprobe_multi(FUNCS, plain.programs["multi_entry"])
    insns = asm.Instructions([asm.mov_imm(asm.R0, 0), asm.exit()])
    with ebpf.Program(ebpf.ProgramSpec("sf", ProgramType.SOCKET_FILTER, instructions=insns, license="GPL")) as sf:
        with pytest.raises(InvalidObjectError, match="SOCKET_FILTER program") as exc:
            exe.uprobe_multi(FUNCS, sf)
        assert exc.value.errno == errno.EINVAL
    closed = ebpf.Program(multi_spec().programs["multi_entry"], maps=coll.maps)
    closed.close()
    with pytest.raises(ClosedError):
        exe.uprobe_multi(FUNCS, closed)


def test_a_kernel_without_uprobe_multi_is_not_supported(coll, monkeypatch):
    """What a pre-6.6 kernel answers (EINVAL to the link, and to the probe)
    becomes NotSupportedError naming the kernel version."""
    from ebpf import _syscall

    def old_kernel(attr, what):
        raise EBPFError(f"{what}: Invalid argument", errno.EINVAL)

    missing = NotSupportedError("uprobe.multi links", min_kernel="6.6", errno=errno.EINVAL)
    monkeypatch.setattr(_syscall, "link_create", old_kernel)
    monkeypatch.setattr(features, "_probe_link", lambda t: missing if t == LinkType.UPROBE_MULTI else None)
    with pytest.raises(NotSupportedError) as exc:
        open_executable(target_bin()).uprobe_multi(FUNCS, coll.programs["multi_entry"])
    assert exc.value.min_kernel == "6.6"


def test_auto_attach_of_a_uprobe_multi_section_with_a_glob(coll):
    from ebpf.link.auto import section_hook

    attach = section_hook(f"uprobe.multi/{target_bin()}:target_a*")  # target_add, target_asm
    assert section_hook("uprobe.multi") is None  # no binary: attached by hand
    with attach(coll.programs["multi_entry"]) as link:
        info = link.info()
        run_target()
    exe = open_executable(target_bin())
    assert sorted(info.extra["offsets"]) == sorted([exe.address("target_add"), exe.address("target_asm")])
    assert counts(coll, "entry_hits")[0] == 2 * COUNT  # no cookies: every hit under 0
    with pytest.raises(SymbolNotFoundError):
        section_hook(f"uretprobe.multi/{target_bin()}:nothing_like_this*")(coll.programs["multi_return"])
