"""CollectionSpec from ELF: pure data, no kernel."""

from __future__ import annotations

import copy
import io
import sys

import pytest

import ebpf
from ebpf import AttachType, MapType, PinType, ProgramType
from ebpf.errors import InvalidObjectError, MarshalError, NotSupportedError
from ebpf.spec import _decoded

from conftest import fixture_path


@pytest.fixture(scope="module")
def core_spec():
    return ebpf.load_collection_spec(fixture_path("core.o"))


def test_maps_are_read(core_spec):
    m = core_spec.maps
    assert m["hash_map"] == ebpf.MapSpec("hash_map", MapType.HASH, 4, 8, 64)
    assert m["array_map"].type == MapType.ARRAY and m["array_map"].max_entries == 4
    assert m["queue_map"].key_size == 0 and m["queue_map"].value_size == 4
    assert m["lpm_map"].flags == 1  # BPF_F_NO_PREALLOC
    assert m["pinned_map"].pinning == PinType.BY_NAME
    assert m["percpu_map"].type == MapType.PERCPU_ARRAY


def test_inner_map_and_init_slots(core_spec):
    outer = core_spec.maps["outer_map"]
    assert outer.type == MapType.ARRAY_OF_MAPS
    assert outer.inner_map is not None
    assert (outer.inner_map.type, outer.inner_map.key_size, outer.inner_map.value_size) == (MapType.ARRAY, 4, 4)
    assert outer.contents == [(0, "inner_a")]
    assert core_spec.maps["jump_table"].contents == [(1, "tail_target")]


def test_data_sections_are_maps_keyed_by_section(core_spec):
    for sec in (".data", ".rodata", ".bss", ".data.custom"):
        assert sec in core_spec.maps
        assert core_spec.maps[sec].is_data_section
    assert core_spec.maps[".rodata"].value_size == 4
    assert core_spec.maps[".data"].contents[0][1][:4] == (1).to_bytes(4, "little")


def test_programs_read_with_libbpf_types(core_spec):
    p = core_spec.programs
    assert set(p) == {"tail_target", "xdp_pass", "run_syscall", "sock_filter", "tp_getpid", "raw_tp_prog"}
    assert "add_twice" not in p  # .text functions are not programs
    assert p["xdp_pass"].type == ProgramType.XDP and p["xdp_pass"].attach_type == AttachType.XDP
    assert p["sock_filter"].type == ProgramType.SOCKET_FILTER
    assert p["run_syscall"].type == ProgramType.SYSCALL
    tp = p["tp_getpid"]
    assert tp.type == ProgramType.TRACEPOINT
    assert tp.section_name == "tracepoint/syscalls/sys_enter_getpid"
    assert tp.attach_to == "syscalls/sys_enter_getpid"
    assert p["raw_tp_prog"].type == ProgramType.RAW_TRACEPOINT
    assert all(x.license == "GPL" for x in p.values())
    raw = p["run_syscall"].encoded_instructions()
    assert len(raw) % 8 == 0 and raw


def test_instructions_decode_with_named_map_references(core_spec):
    from ebpf import asm

    insns = core_spec.programs["sock_filter"].instructions
    assert isinstance(insns, asm.Instructions)
    assert insns.find_reference("array_map")
    assert insns.encode() == core_spec.programs["sock_filter"]._origin.linked()


def test_variables(core_spec):
    v = core_spec.variables
    assert {"counter", "ret_value", "bss_value", "custom_value", "message"} <= set(v)
    assert v["counter"].section == ".data" and v["counter"].size == 4
    assert v["ret_value"].section == ".rodata" and v["ret_value"].constant
    assert v["custom_value"].section == ".data.custom"
    assert v["counter"].get_bytes() == (1).to_bytes(4, "little")
    assert v["custom_value"].get_bytes() == (42).to_bytes(4, "little")


def test_variable_set_changes_spec_only_and_checks_size():
    spec = ebpf.load_collection_spec(fixture_path("core.o"))
    before = spec.copy()
    spec.variables["ret_value"].set(99)
    assert spec.variables["ret_value"].get_bytes() == (99).to_bytes(4, "little")
    assert spec.maps[".rodata"].contents[0][1] == (99).to_bytes(4, "little")
    assert before.variables["ret_value"].get_bytes() == (7).to_bytes(4, "little")
    with pytest.raises(MarshalError):
        spec.variables["ret_value"].set(b"\x01\x02")
    with pytest.raises(MarshalError):
        spec.variables["ret_value"].set(1 << 40)
    assert spec.variables["ret_value"].get_bytes() == (99).to_bytes(4, "little")


def test_same_bytes_give_equal_specs():
    data = fixture_path("core.o").read_bytes()
    a = ebpf.load_collection_spec(data)
    b = ebpf.load_collection_spec(io.BytesIO(data))
    assert a == b
    assert a.maps == b.maps and a.programs == b.programs


def test_copy_is_deep():
    spec = ebpf.load_collection_spec(fixture_path("core.o"))
    c = spec.copy()
    assert c == spec
    c.maps["hash_map"].max_entries = 1
    c.programs["xdp_pass"].license = "MIT"
    c.variables["counter"].set(5)
    c.maps["outer_map"].inner_map.max_entries = 9
    assert spec.maps["hash_map"].max_entries == 64
    assert spec.programs["xdp_pass"].license == "GPL"
    assert spec.variables["counter"].get_bytes() == (1).to_bytes(4, "little")
    assert spec.maps["outer_map"].inner_map.max_entries == 1
    assert c != spec
    d = copy.deepcopy(spec)
    assert d == spec and d.maps["hash_map"] is not spec.maps["hash_map"]


def test_btf_types_attached(core_spec):
    assert core_spec.types is not None
    assert core_spec.maps["hash_map"].key is not None
    assert core_spec.maps["hash_map"].value is not None


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", b"\x7fELF" + b"\0" * 10, b"\x7fELF\x02\x01\x01" + b"\0" * 100],
    ids=["empty", "text", "truncated-ident", "truncated-header"],
)
def test_malformed_elf_is_typed_error(data):
    with pytest.raises(InvalidObjectError):
        ebpf.load_collection_spec(data)


def test_truncated_object_is_typed_error():
    data = fixture_path("core.o").read_bytes()
    for cut in (64, len(data) // 2, len(data) - 1):
        with pytest.raises(InvalidObjectError):
            ebpf.load_collection_spec(data[:cut])


def test_missing_file_is_typed_error(tmp_path):
    with pytest.raises(InvalidObjectError):
        ebpf.load_collection_spec(tmp_path / "nope.o")


def test_big_endian_object_names_libbpf_version():
    with pytest.raises(NotSupportedError) as exc:
        ebpf.load_collection_spec(fixture_path("core.bpfeb.o"))
    assert exc.value.min_libbpf == "1.5"
    assert "libbpf 1.5" in str(exc.value)


def test_load_spec_makes_no_bpf_syscall(monkeypatch):
    # Any bpf() syscall goes through these low-level entry points.
    from ebpf import _libbpf

    calls = []
    for name in ("bpf_map_create", "bpf_prog_load", "bpf_btf_load"):
        real = getattr(_libbpf.lib, name)
        monkeypatch.setattr(_libbpf.lib, name, lambda *a, _n=name, _r=real: calls.append(_n) or _r(*a))
    ebpf.load_collection_spec(fixture_path("core.o"))
    assert calls == []


def test_sections_newer_than_libbpf_get_their_types(fixture):
    """libbpf 1.1.2 reads netfilter/tcx sections as UNSPEC; the spec gives
    them the types newer libbpf does, so they load with this libbpf too."""
    spec = ebpf.load_collection_spec(fixture("newer_sections.o"))
    got = {n: (p.type, p.attach_type) for n, p in spec.programs.items()}
    assert got == {
        "nf": (ebpf.ProgramType.NETFILTER, ebpf.AttachType.NETFILTER),
        "tcx_in": (ebpf.ProgramType.SCHED_CLS, ebpf.AttachType.TCX_INGRESS),
        "tcx_out": (ebpf.ProgramType.SCHED_CLS, ebpf.AttachType.TCX_EGRESS),
    }


@pytest.mark.kernel
def test_sections_newer_than_libbpf_load(fixture):
    with ebpf.Collection(ebpf.load_collection_spec(fixture("newer_sections.o"))) as coll:
        assert {n: p.type for n, p in coll.programs.items()} == {
            "nf": ebpf.ProgramType.NETFILTER,
            "tcx_in": ebpf.ProgramType.SCHED_CLS,
            "tcx_out": ebpf.ProgramType.SCHED_CLS,
        }


# -- objects that are pleasant to use ----------------------------------------------------------


def test_program_spec_repr_counts_instructions_instead_of_listing_them():
    big = ebpf.ProgramSpec("big", ProgramType.SOCKET_FILTER, license="GPL",
                           instructions=[ebpf.asm.mov_imm(ebpf.asm.R0, i) for i in range(895)] + [ebpf.asm.exit()])
    text = repr(big)
    assert len(text) < 200, text
    assert text.startswith("ProgramSpec(name='big', type=SOCKET_FILTER") and "instructions=<896 instructions>" in text
    assert "license='GPL'" in text


def test_collection_spec_repr_names_maps_and_programs_without_decoding_them():
    spec = ebpf.load_collection_spec(fixture_path("core.o"))  # fresh: nothing decoded yet
    text = repr(spec)
    assert len(text) < 1000, text
    for name in list(spec.maps) + list(spec.variables):
        assert repr(name) in text
    for name, p in spec.programs.items():
        assert f"{name!r}: <{p.instruction_count()} instructions>" in text
    assert not any(_decoded(p) for p in spec.programs.values())  # printing decoded nothing
    for name, p in spec.programs.items():
        assert p.instruction_count() == len(p.instructions), name
        assert repr(p).startswith(f"ProgramSpec(name={name!r}") and len(repr(p)) < 300
    for ms in spec.maps.values():
        assert len(repr(ms)) < 400 and repr(ms).startswith(f"MapSpec(name={ms.name!r}")


def test_instructions_accept_any_iterable_of_instructions():
    asm = ebpf.asm
    body = [asm.mov_imm(asm.R0, 2), asm.exit()]
    for given in (body, tuple(body), (ins for ins in body), asm.Instructions(body).encode(sys.byteorder)):
        ps = ebpf.ProgramSpec("p", ProgramType.SOCKET_FILTER, instructions=given)
        assert type(ps.instructions) is asm.Instructions and ps.instructions == body
    kept = asm.Instructions(body)
    assert ebpf.ProgramSpec("p", instructions=kept).instructions is kept
    ps = ebpf.ProgramSpec("p")
    ps.instructions = body  # assigning later converts too
    assert type(ps.instructions) is asm.Instructions
    # The default is an empty list of one's own.
    a, b = ebpf.ProgramSpec("a"), ebpf.ProgramSpec("b")
    a.instructions.append(asm.exit())
    assert type(b.instructions) is asm.Instructions and len(b.instructions) == 0


def test_a_wrong_instruction_is_a_typed_error_at_construction():
    asm = ebpf.asm
    with pytest.raises(TypeError, match=r"program p: instructions\[1\] is int"):
        ebpf.ProgramSpec("p", instructions=[asm.exit(), 0x95])
    with pytest.raises(TypeError, match="not str"):
        ebpf.ProgramSpec("p", instructions="exit")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not int"):
        ebpf.ProgramSpec("p", instructions=7)  # type: ignore[arg-type]
    with pytest.raises(InvalidObjectError, match="multiple of 8"):
        ebpf.ProgramSpec("p", instructions=b"\x95\0\0")


def test_missing_names_in_a_spec_list_those_present(core_spec):
    spec = core_spec.copy()
    for table, kind, present in ((spec.maps, "map", "hash_map"), (spec.programs, "program", "run_syscall"),
                                 (spec.variables, "variable", "counter")):
        with pytest.raises(KeyError, match=f"no {kind} 'nope' in this spec") as info:
            table["nope"]
        assert present in str(info.value)
    spec.programs = {}  # a plain dict assigned is wrapped too
    with pytest.raises(KeyError, match=r"its programs: none"):
        spec.programs["nope"]
    assert spec.maps.get("nope") is None and "nope" not in spec.maps  # the dict API is unchanged
