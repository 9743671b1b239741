"""ebpf.asm: builders, wire format, labels, references and disassembly (no kernel)."""

from __future__ import annotations

import copy
import pickle
import struct

import pytest

import ebpf
from ebpf import asm
from ebpf.asm import R0, R1, R2, R3, R10, RFP, Instruction, Instructions
from ebpf.errors import EBPFError


def word(opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", opcode, (src << 4) | dst, off, imm)


# -- registers and helpers -------------------------------------------------------------------


def test_registers() -> None:
    assert [int(r) for r in (asm.R0, asm.R1, asm.R5, asm.R9, asm.R10)] == [0, 1, 5, 9, 10]
    assert RFP is R10
    assert str(asm.R3) == "r3"


def test_reachable_from_ebpf() -> None:
    assert ebpf.asm is asm


def test_helpers() -> None:
    assert asm.Helper.map_lookup_elem == 1 == asm.FN_MAP_LOOKUP_ELEM
    assert asm.Helper.unspec == 0
    assert asm.Helper.trace_printk == 6
    assert asm.Helper.ringbuf_output == 130
    assert asm.Helper.user_ringbuf_drain == 209
    assert asm.Helper.cgrp_storage_delete == 211
    assert len(asm.Helper) == 212
    assert str(asm.Helper.ktime_get_ns) == "bpf_ktime_get_ns"
    assert asm.helper_by_name("bpf_get_current_pid_tgid") is asm.Helper.get_current_pid_tgid
    assert asm.helper_by_name("tail_call") == 12
    with pytest.raises(KeyError):
        asm.helper_by_name("no_such_helper")
    with pytest.raises(AttributeError):
        asm.FN_NO_SUCH_HELPER  # noqa: B018


def test_helpers_match_kernel_header() -> None:
    import re
    from pathlib import Path

    header = Path("/usr/include/linux/bpf.h")
    if not header.exists():
        pytest.skip("no kernel uapi headers")
    text = header.read_text()
    mapper = text[text.index("#define __BPF_FUNC_MAPPER(FN)") :]
    mapper = mapper[: mapper.index("/* */")]
    names = re.findall(r"FN\((\w+)", mapper)  # newer headers: FN(name, id, ...)
    for i, name in enumerate(names):
        assert asm.Helper[name] == i


def test_helper_enum_spells_out_the_table() -> None:
    # Helper is written out for type checkers; the cheap table call() and the
    # disassembler use must say the same.
    from ebpf.asm.helper_names import HELPER_NAMES

    assert tuple(h.name for h in asm.Helper) == HELPER_NAMES
    assert [int(h) for h in asm.Helper] == list(range(len(HELPER_NAMES)))
    assert str(asm.Helper.map_lookup_elem) == "bpf_map_lookup_elem"


# -- builders -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ins, text, raw",
    [
        (asm.mov_imm(R0, 0), "r0 = 0", word(0xB7)),
        (asm.mov_reg(R1, R2), "r1 = r2", word(0xBF, 1, 2)),
        (asm.mov32_imm(R1, -1), "w1 = -1", word(0xB4, 1, 0, 0, -1)),
        (asm.mov32_imm(R1, 0xFFFFFFFF), "w1 = -1", word(0xB4, 1, 0, 0, -1)),
        (asm.mov32_reg(R0, R1), "w0 = w1", word(0xBC, 0, 1)),
        (asm.add_imm(R1, 4), "r1 += 4", word(0x07, 1, 0, 0, 4)),
        (asm.add32_reg(R1, R2), "w1 += w2", word(0x0C, 1, 2)),
        (asm.sub_imm(R1, 1), "r1 -= 1", word(0x17, 1, 0, 0, 1)),
        (asm.mul_reg(R1, R2), "r1 *= r2", word(0x2F, 1, 2)),
        (asm.div_imm(R1, 3), "r1 /= 3", word(0x37, 1, 0, 0, 3)),
        (asm.sdiv_imm(R1, 3), "r1 s/= 3", word(0x37, 1, 0, 1, 3)),
        (asm.sdiv32_reg(R1, R2), "w1 s/= w2", word(0x3C, 1, 2, 1)),
        (asm.mod_reg(R1, R2), "r1 %= r2", word(0x9F, 1, 2)),
        (asm.smod_reg(R1, R2), "r1 s%= r2", word(0x9F, 1, 2, 1)),
        (asm.smod32_imm(R1, 7), "w1 s%= 7", word(0x94, 1, 0, 1, 7)),
        (asm.or_imm(R1, 8), "r1 |= 8", word(0x47, 1, 0, 0, 8)),
        (asm.and32_imm(R1, 8), "w1 &= 8", word(0x54, 1, 0, 0, 8)),
        (asm.lsh_imm(R1, 32), "r1 <<= 32", word(0x67, 1, 0, 0, 32)),
        (asm.rsh_reg(R1, R2), "r1 >>= r2", word(0x7F, 1, 2)),
        (asm.arsh_imm(R1, 3), "r1 s>>= 3", word(0xC7, 1, 0, 0, 3)),
        (asm.xor32_reg(R3, R3), "w3 ^= w3", word(0xAC, 3, 3)),
        (asm.neg(R1), "r1 = -r1", word(0x87, 1)),
        (asm.neg32(R1), "w1 = -w1", word(0x84, 1)),
        (asm.movsx_reg(R1, R2, 8), "r1 = (s8)r2", word(0xBF, 1, 2, 8)),
        (asm.movsx_reg(R1, R2, 32), "r1 = (s32)r2", word(0xBF, 1, 2, 32)),
        (asm.movsx32_reg(R1, R2, 16), "w1 = (s16)w2", word(0xBC, 1, 2, 16)),
        (asm.to_le(R1, 16), "r1 = le16 r1", word(0xD4, 1, 0, 0, 16)),
        (asm.to_be(R1, 32), "r1 = be32 r1", word(0xDC, 1, 0, 0, 32)),
        (asm.bswap(R1, 64), "r1 = bswap64 r1", word(0xD7, 1, 0, 0, 64)),
        (asm.load_mem(R0, R1, 4, 4), "r0 = *(u32 *)(r1 + 4)", word(0x61, 0, 1, 4)),
        (asm.load_mem(R0, RFP, -8, 8), "r0 = *(u64 *)(r10 - 8)", word(0x79, 0, 10, -8)),
        (asm.load_mem(R0, R1, 0, 2), "r0 = *(u16 *)(r1 + 0)", word(0x69, 0, 1)),
        (asm.load_mem(R0, R1, 0, 1), "r0 = *(u8 *)(r1 + 0)", word(0x71, 0, 1)),
        (asm.load_mem_sx(R0, R1, 2, 1), "r0 = *(s8 *)(r1 + 2)", word(0x91, 0, 1, 2)),
        (asm.load_mem_sx(R0, R1, 2, 2), "r0 = *(s16 *)(r1 + 2)", word(0x89, 0, 1, 2)),
        (asm.load_mem_sx(R0, R1, 2, 4), "r0 = *(s32 *)(r1 + 2)", word(0x81, 0, 1, 2)),
        (asm.store_mem(RFP, -8, R1, 8), "*(u64 *)(r10 - 8) = r1", word(0x7B, 10, 1, -8)),
        (asm.store_mem(R1, 2, R2, 1), "*(u8 *)(r1 + 2) = r2", word(0x73, 1, 2, 2)),
        (asm.store_imm(RFP, -4, 7, 4), "*(u32 *)(r10 - 4) = 7", word(0x62, 10, 0, -4, 7)),
        (asm.store_imm(R1, 0, -1, 2), "*(u16 *)(r1 + 0) = -1", word(0x6A, 1, 0, 0, -1)),
        (asm.load_abs(12, 2), "r0 = *(u16 *)skb[12]", word(0x28, 0, 0, 0, 12)),
        (asm.load_ind(R2, 0, 4), "r0 = *(u32 *)skb[r2]", word(0x40, 0, 2)),
        (asm.load_ind(R2, 6, 1), "r0 = *(u8 *)skb[r2 + 6]", word(0x50, 0, 2, 0, 6)),
        (asm.atomic_add(R1, R2, 0, 8), "lock *(u64 *)(r1 + 0) += r2", word(0xDB, 1, 2)),
        (asm.atomic_add(R1, R2, -4, 4), "lock *(u32 *)(r1 - 4) += r2", word(0xC3, 1, 2, -4)),
        (asm.atomic_or(R1, R2, 8), "lock *(u64 *)(r1 + 8) |= r2", word(0xDB, 1, 2, 8, 0x40)),
        (asm.atomic_and(R1, R2, 0, 4), "lock *(u32 *)(r1 + 0) &= w2", word(0xC3, 1, 2, 0, 0x50)),
        (asm.atomic_xor(R1, R2), "lock *(u64 *)(r1 + 0) ^= r2", word(0xDB, 1, 2, 0, 0xA0)),
        (
            asm.atomic_add(R1, R2, fetch=True),
            "r2 = atomic_fetch_add((u64 *)(r1 + 0), r2)",
            word(0xDB, 1, 2, 0, 0x01),
        ),
        (
            asm.atomic_xor(R1, R2, -4, 4, fetch=True),
            "w2 = atomic_fetch_xor((u32 *)(r1 - 4), w2)",
            word(0xC3, 1, 2, -4, 0xA1),
        ),
        (asm.atomic_xchg(R1, R2), "r2 = xchg_64(r1 + 0, r2)", word(0xDB, 1, 2, 0, 0xE1)),
        (asm.atomic_xchg(R1, R2, 0, 4), "w2 = xchg32_32(r1 + 0, w2)", word(0xC3, 1, 2, 0, 0xE1)),
        (asm.atomic_cmpxchg(R1, R2), "r0 = cmpxchg_64(r1 + 0, r0, r2)", word(0xDB, 1, 2, 0, 0xF1)),
        (asm.atomic_cmpxchg(R1, R2, 4, 4), "w0 = cmpxchg32_32(r1 + 4, w0, w2)", word(0xC3, 1, 2, 4, 0xF1)),
        (asm.ja(3), "goto +3", word(0x05, 0, 0, 3)),
        (asm.ja(-1), "goto -1", word(0x05, 0, 0, -1)),
        (asm.gotol(70000), "gotol +70000", word(0x06, 0, 0, 0, 70000)),
        (asm.may_goto(2), "may_goto +2", word(0xE5, 0, 0, 2)),
        (asm.jeq_imm(R1, 0, 3), "if r1 == 0 goto +3", word(0x15, 1, 0, 3, 0)),
        (asm.jne_reg(R1, R2, -2), "if r1 != r2 goto -2", word(0x5D, 1, 2, -2)),
        (asm.jgt32_imm(R1, 5, 1), "if w1 > 5 goto +1", word(0x26, 1, 0, 1, 5)),
        (asm.jset_imm(R1, 3, 1), "if r1 & 3 goto +1", word(0x45, 1, 0, 1, 3)),
        (asm.jsle32_reg(R1, R2, 1), "if w1 s<= w2 goto +1", word(0xDE, 1, 2, 1)),
        (asm.jslt_imm(R1, -1, 1), "if r1 s< -1 goto +1", word(0xC5, 1, 0, 1, -1)),
        (asm.jle_reg(R1, R2, 1), "if r1 <= r2 goto +1", word(0xBD, 1, 2, 1)),
        (asm.call(asm.Helper.map_lookup_elem), "call 1", word(0x85, 0, 0, 0, 1)),
        (asm.call(asm.FN_KTIME_GET_NS), "call 5", word(0x85, 0, 0, 0, 5)),
        (asm.call("bpf_trace_printk"), "call 6", word(0x85, 0, 0, 0, 6)),
        (asm.call(12), "call 12", word(0x85, 0, 0, 0, 12)),
        (asm.call_kfunc(1234), "call 1234", word(0x85, 0, 2, 0, 1234)),
        (asm.callx(R3), "callx r3", word(0x8D, 3)),
        (asm.exit(), "exit", word(0x95)),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_builder(ins: Instruction, text: str, raw: bytes) -> None:
    assert str(ins) == text
    assert ins.encode() == raw
    assert Instructions.decode(raw) == [ins]
    # The same instruction in big-endian order: swapped fields and nibbles.
    opcode, regs, off, imm = struct.unpack("<BBhi", raw)
    big = struct.pack(">BBhi", opcode, ((regs & 0xF) << 4) | (regs >> 4), off, imm)
    assert ins.encode("big") == big
    assert Instructions.decode(big, "big") == [ins]


def test_builders_are_plain_documented_functions() -> None:
    # Each builder is a def of its own name (what type checkers and editors
    # read), documented, and exported from ebpf.asm.
    import inspect

    from ebpf.asm import builders

    assert len(builders.__all__) == len(set(builders.__all__)) == 131
    for name in builders.__all__:
        f = getattr(builders, name)
        assert inspect.isfunction(f) and f.__name__ == name and f.__module__ == "ebpf.asm.builders", name
        assert inspect.getsource(f).startswith(f"def {name}("), name
        assert f.__doc__ and f.__doc__.strip(), name
        assert getattr(asm, name) is f and name in asm.__all__
    assert asm.jsgt32_reg(R1, R2, "out").reference == "out"
    assert str(asm.sdiv32_imm(R1, 3)) == "w1 s/= 3"


def test_load_imm64() -> None:
    ins = asm.load_imm64(R1, 0x1122334455667788)
    assert ins.slots == 2 and ins.is_load_imm64
    raw = ins.encode()
    assert raw == word(0x18, 1, 0, 0, 0x55667788) + word(0, 0, 0, 0, 0x11223344)
    assert Instructions.decode(raw) == [ins]
    assert str(ins) == "r1 = 1234605616436508552 ll"
    assert str(asm.load_imm64(R1, -1)) == "r1 = -1 ll"
    assert asm.load_imm64(R1, 0xFFFFFFFFFFFFFFFF).constant == -1
    assert str(asm.load_imm64(R1, 0xFFFFFFFF)) == "r1 = 4294967295 ll"
    big = ins.encode("big")
    assert big[:8] == struct.pack(">BBhi", 0x18, 0x10, 0, 0x55667788)
    assert Instructions.decode(big, "big") == [ins]


def test_load_map() -> None:
    by_name = asm.load_map_ptr(R1, "events")
    assert (by_name.src, by_name.constant, by_name.reference) == (asm.Pseudo.MAP_FD, 0, "events")
    assert by_name.is_map_load and by_name.map_fd == 0
    assert str(by_name) == "ld_pseudo r1, 1, 0 <events>"
    by_fd = asm.load_map_ptr(R1, 7)
    assert by_fd.constant == 7 and by_fd.reference is None
    assert by_fd.encode() == word(0x18, 1, 1, 0, 7) + word(0)

    class FakeMap:
        fd = 9
        name = "counts"

    by_obj = asm.load_map_ptr(R2, FakeMap())
    assert (by_obj.constant, by_obj.reference) == (9, "counts")

    value = asm.load_map_value(R1, "data", 16)
    assert value.src == asm.Pseudo.MAP_VALUE and value.map_value_offset == 16
    assert value.encode() == word(0x18, 1, 2, 0, 0) + word(0, 0, 0, 0, 16)
    assert str(asm.load_map_value(R1, 5, 8)) == "ld_pseudo r1, 2, 5, 8"
    with pytest.raises(asm.InvalidInstructionError):
        asm.load_map_ptr(R1, 1.5)


def test_instruction_is_immutable_and_copyable() -> None:
    ins = asm.mov_imm(R0, 1).with_symbol("start")
    with pytest.raises(AttributeError):
        ins.constant = 2  # type: ignore[misc]
    changed = ins.replace(constant=2)
    assert (ins.constant, changed.constant, changed.symbol) == (1, 2, "start")
    assert copy.deepcopy(ins) == ins
    assert pickle.loads(pickle.dumps(ins)) == ins
    assert hash(ins) == hash(asm.mov_imm(R0, 1).with_symbol("start"))
    assert ins != asm.mov_imm(R0, 1)
    assert "r0 = 1" in repr(ins)
    with pytest.raises(TypeError):
        ins.replace(bogus=1)


def test_instruction_kinds() -> None:
    assert asm.call(1).is_helper_call and asm.call(1).helper is asm.Helper.map_lookup_elem
    assert asm.call_func("f").is_function_call and not asm.call_func("f").is_helper_call
    assert asm.call_kfunc("bpf_obj_new").is_kfunc_call
    assert asm.exit().is_exit and not asm.exit().is_jump
    assert asm.ja("x").is_jump and asm.gotol("x").is_jump and asm.jeq_imm(R1, 0, "x").is_jump
    assert asm.load_func_ptr(R2, "cb").is_function_pointer_load
    assert asm.load_mem(R0, R1, 0, 2).access_size == 2
    assert asm.add_reg(R0, R1).uses_register_source
    assert asm.mov_imm(R0, 1).helper is None


@pytest.mark.parametrize(
    "build",
    [
        lambda: asm.mov_imm(11, 0),
        lambda: asm.mov_imm(R0, 1 << 32),
        lambda: asm.mov_imm(R0, -(1 << 31) - 1),
        lambda: asm.ja(1 << 15),
        lambda: asm.load_mem(R0, R1, 0, 3),
        lambda: asm.load_mem_sx(R0, R1, 0, 8),
        lambda: asm.atomic_add(R1, R2, 0, 2),
        lambda: asm.to_be(R1, 8),
        lambda: asm.movsx_reg(R1, R2, 64),
        lambda: asm.call("no_such_helper"),
        lambda: asm.load_imm64(R0, 1 << 64),
        lambda: Instruction(0x00),
        lambda: Instruction(0x1FF),
        lambda: Instruction(0xDB, 1, 2, 0, 0x42),
        lambda: asm.jeq_imm(R1, 0, 1.0),
        lambda: asm.mov_imm(R0, 0).with_symbol(""),
    ],
)
def test_builder_errors(build) -> None:
    with pytest.raises(asm.AsmError) as info:
        build()
    assert isinstance(info.value, EBPFError) and isinstance(info.value, ValueError)


# -- labels and references ------------------------------------------------------------------------


def sample_program() -> Instructions:
    return Instructions(
        [
            asm.mov_imm(R0, 0),
            asm.jeq_imm(R1, 0, "out"),
            asm.load_map_ptr(R1, "counts"),
            asm.call_func("helper_fn"),
            asm.ja("out"),
            asm.mov_imm(R0, 1).with_symbol("unreached"),
            asm.exit().with_symbol("out"),
            asm.load_map_value(R0, "data", 4).with_symbol("helper_fn"),
            asm.exit(),
        ]
    )


def test_encode_resolves_labels() -> None:
    prog = sample_program()
    raw = prog.encode()
    decoded = Instructions.decode(raw)
    assert prog.raw_offsets() == [0, 1, 2, 4, 5, 6, 7, 8, 10]
    assert decoded[1].offset == 7 - 2  # jeq at slot 1 -> exit at slot 7
    assert decoded[3].constant == 8 - 5  # call at slot 4 -> helper_fn at slot 8
    assert decoded[4].offset == 7 - 6
    assert decoded[3].src == asm.Pseudo.CALL
    assert prog.encode("big") == Instructions.decode(prog.encode("big"), "big").encode("big")
    assert len(raw) == 11 * 8


def test_str_lists_resolved_program() -> None:
    text = str(sample_program())
    assert "       1:\tif r1 == 0 goto +5 <out>" in text
    assert "       4:\tcall 3 <helper_fn>" in text
    assert "out:\n       7:\texit" in text
    assert text.count("\n") == 9 + 3 - 1


def test_decode_with_labels() -> None:
    raw = sample_program().encode()
    labelled = Instructions.decode(raw, labels=True)
    assert labelled.encode() == raw
    assert labelled[1].reference == labelled[6].symbol == "L7"
    assert labelled[3].reference == labelled[7].symbol == "L8"
    # Edit the program: insert an instruction; branches follow their labels.
    edited = labelled[:2] + [asm.mov_imm(R3, 3)] + labelled[2:]
    again = Instructions.decode(edited.encode())
    assert again[1].offset == 6  # jumps across the new instruction: one further
    assert again[4].constant == 3  # call and its target both moved: unchanged


def test_missing_label() -> None:
    prog = Instructions([asm.ja("nowhere"), asm.exit()])
    with pytest.raises(asm.UnresolvedReferenceError) as info:
        prog.encode()
    assert info.value.reference == "nowhere" and info.value.index == 0
    assert isinstance(info.value, EBPFError) and isinstance(info.value, ValueError)
    assert "goto +0 <nowhere>" in str(prog)  # printing still works


def test_duplicate_label() -> None:
    prog = Instructions([asm.mov_imm(R0, 0).with_symbol("a"), asm.exit().with_symbol("a")])
    with pytest.raises(asm.DuplicateSymbolError):
        prog.encode()


def test_jump_out_of_range() -> None:
    prog = Instructions([asm.ja("far")] + [asm.mov_imm(R0, 0)] * 40000 + [asm.exit().with_symbol("far")])
    with pytest.raises(asm.JumpOutOfRangeError):
        prog.encode()
    prog[0] = asm.gotol("far")
    assert Instructions.decode(prog.encode())[0].constant == 40000


def test_references() -> None:
    prog = sample_program()
    assert prog.symbols() == {"unreached": 5, "out": 6, "helper_fn": 7}
    assert prog.references() == {"out": [1, 4], "counts": [2], "helper_fn": [3], "data": [7]}
    assert prog.find_reference("out") == [1, 4]
    assert prog.find_reference("missing") == []
    assert prog.map_references() == {"counts": [2], "data": [7]}
    assert prog.function_references() == []
    assert Instructions([asm.call_func("ext"), asm.load_func_ptr(R1, "cb"), asm.exit()]).function_references() == [
        "ext",
        "cb",
    ]


def test_resolve_maps() -> None:
    class FakeMap:
        def __init__(self, fd: int) -> None:
            self.fd = fd

    prog = sample_program()
    original = prog.copy()
    prog.resolve_maps({"counts": 5, "data": FakeMap(6)})
    assert prog[2].constant == 5 and prog[2].reference == "counts"
    assert prog[7].map_fd == 6 and prog[7].map_value_offset == 4
    assert original[2].constant == 0  # copies are independent
    raw = prog.encode()
    assert raw[16:24] == word(0x18, 1, 1, 0, 5)
    assert raw[64:80] == word(0x18, 0, 2, 0, 6) + word(0, 0, 0, 0, 4)


def test_resolve_maps_missing() -> None:
    prog = sample_program()
    with pytest.raises(asm.MissingMapError) as info:
        prog.resolve_maps({"counts": 5})
    assert info.value.name == "data" and info.value.index == 7
    assert isinstance(info.value, EBPFError) and isinstance(info.value, ValueError)
    prog.resolve_maps({"counts": 5}, strict=False)
    assert prog[2].constant == 5 and prog[7].map_fd == 0
    with pytest.raises(asm.InvalidInstructionError):
        prog.resolve_maps({"counts": -1, "data": 1})


def test_list_behaviour() -> None:
    prog = sample_program()
    assert isinstance(prog[1:3], Instructions)
    assert isinstance(prog + [asm.exit()], Instructions)
    assert isinstance(prog.copy(), Instructions)
    assert repr(Instructions([asm.exit()])).startswith("Instructions([Instruction(")


# -- decoding errors ------------------------------------------------------------------------------


def test_decode_errors() -> None:
    with pytest.raises(asm.TruncatedInstructionError):
        Instructions.decode(b"\x95" + b"\0" * 6)
    with pytest.raises(asm.TruncatedInstructionError):
        Instructions.decode(word(0x18, 1, 0, 0, 1))
    with pytest.raises(asm.InvalidOpcodeError) as info:
        Instructions.decode(word(0xB7) + word(0xFF))
    assert info.value.opcode == 0xFF and info.value.index == 1
    assert "byte offset 8" in str(info.value)
    with pytest.raises(asm.InvalidInstructionError):
        Instructions.decode(word(0x18) + word(0x95))  # second half of lddw must be zero
    with pytest.raises(asm.InvalidInstructionError):
        Instructions.decode(word(0xB7, 11))  # no register 11
    with pytest.raises(asm.InvalidInstructionError):
        Instructions.decode(word(0xDC, 1, 0, 0, 24))  # be24
    with pytest.raises(ValueError):
        Instructions.decode(word(0x95), "middle")
    for err in (asm.TruncatedInstructionError, asm.InvalidOpcodeError, asm.MissingMapError):
        assert issubclass(err, EBPFError) and issubclass(err, ValueError)


def test_single_instruction_decode() -> None:
    assert Instruction.decode(word(0x95)) == asm.exit()
    assert Instruction.decode(word(0x18, 1, 0, 0, 1) + word(0)) == asm.load_imm64(R1, 1)
    with pytest.raises(asm.InvalidInstructionError):
        Instruction.decode(word(0x95) + word(0x95))
    with pytest.raises(asm.TruncatedInstructionError):
        Instruction.decode(word(0x18))


def test_import_is_light() -> None:
    import subprocess
    import sys

    # The helper enum is built lazily, on first use.
    code = "import sys, ebpf.asm; print('ebpf.asm.helpers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
