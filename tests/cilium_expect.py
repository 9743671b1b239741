"""What cilium/ebpf 0.9.1's own tests expect of its test objects, in Python.

Source: Debian's golang-github-cilium-ebpf-dev, /usr/share/gocode/src/github.com/cilium/ebpf
(elf_reader_test.go, collection_test.go, prog_test.go, map_test.go,
linker_test.go, link/tracing_test.go, btf/*_test.go and testdata/*.c).

``CILIUM`` holds cilium's answer for every object that libbpf 1.1.2 can open.
Where cilium's tests only exercise part of an object, the rest is what
cilium's ELF reader derives from the C source in testdata/ (the same BTF map
definitions and section names).  ``LIBBPF_DIFFERENCES`` lists every place
where libbpf 1.1.2 legitimately answers differently, with the reason; the
tests assert libbpf's answer there.  ``LIBBPF_REJECTS`` lists the
little-endian objects libbpf 1.1.2 refuses to open at all, with the reason
libbpf gives.
"""

from __future__ import annotations

import os

from ebpf import AttachType, MapType, PinType, ProgramType

TESTDATA = "/usr/share/gocode/src/github.com/cilium/ebpf/testdata"
BTF_TESTDATA = "/usr/share/gocode/src/github.com/cilium/ebpf/btf/testdata"

BPF_F_NO_PREALLOC = 1 << 0
BPF_F_MMAPABLE = 1 << 10


def path(obj: str) -> str:
    """Full path of ``obj`` (``"loader-el.elf"`` or ``"relocs-el.elf"``)."""
    for d in (TESTDATA, BTF_TESTDATA):
        p = os.path.join(d, obj)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(obj)


def _map(type, key_size=0, value_size=0, max_entries=0, flags=0, pinning=PinType.NONE, inner_map=None, contents=()):
    return {
        "type": type,
        "key_size": key_size,
        "value_size": value_size,
        "max_entries": max_entries,
        "flags": flags,
        "pinning": pinning,
        "inner_map": inner_map,
        "contents": list(contents),
    }


def _prog(type, section_name, license="", attach_type=AttachType.NONE):
    # attach_to and kernel_version are checked by separate tests.
    return {"type": type, "attach_type": attach_type, "section_name": section_name, "license": license}


# --------------------------------------------------------------------------
# TestLoadCollectionSpec (elf_reader_test.go): the expected spec of
# testdata/loader-*.elf.  Maps prefixed btf_ are only expected from objects
# with BTF (clang >= 9).  cilium sets perf_event_array's max_entries to the
# number of possible CPUs at spec time.

LOADER = {
    "maps": {
        "hash_map": _map(MapType.HASH, 4, 8, 1, flags=BPF_F_NO_PREALLOC),
        "hash_map2": _map(MapType.HASH, 4, 8, 2),
        "array_of_hash_map": _map(MapType.ARRAY_OF_MAPS, 4, 0, 2),
        "perf_event_array": _map(MapType.PERF_EVENT_ARRAY, 0, 0, "possible_cpus"),
        "btf_pin": _map(MapType.HASH, 4, 8, 1, pinning=PinType.BY_NAME),
        "btf_outer_map": _map(
            MapType.ARRAY_OF_MAPS, 4, 4, 1, inner_map=("btf_outer_map_inner", _map(MapType.HASH, 4, 4, 1))
        ),
        "btf_outer_map_anon": _map(
            MapType.ARRAY_OF_MAPS, 4, 4, 1, inner_map=("btf_outer_map_anon_inner", _map(MapType.HASH, 4, 4, 1))
        ),
    },
    "programs": {
        "xdp_prog": _prog(ProgramType.XDP, "xdp", "MIT"),
        "no_relocation": _prog(ProgramType.SOCKET_FILTER, "socket", "MIT"),
        "asm_relocation": _prog(ProgramType.SOCKET_FILTER, "socket/2", "MIT"),
        "data_sections": _prog(ProgramType.SOCKET_FILTER, "socket/3", "MIT"),
        "global_fn3": _prog(ProgramType.UNSPEC, "other", "MIT"),
        "static_fn": _prog(ProgramType.UNSPEC, "static", "MIT"),
        "anon_const": _prog(ProgramType.SOCKET_FILTER, "socket/4", "MIT"),
    },
}

LOADER_VARIANTS = ["loader-clang-7-el.elf", "loader-clang-9-el.elf", "loader-clang-14-el.elf", "loader-el.elf"]

# --------------------------------------------------------------------------
# Objects libbpf 1.1.2 opens: cilium's spec.

CILIUM = {
    # TestLoadInitializedBTFMap, TestTailCall (elf_reader_test.go).
    "btf_map_init-el.elf": {
        "maps": {
            "prog_array_init": _map(MapType.PROG_ARRAY, 4, 4, 2, contents=[(1, "tail_1")]),
            "inner_map": _map(MapType.ARRAY, 4, 4, 1),
            "outer_map_init": _map(
                MapType.ARRAY_OF_MAPS,
                4,
                4,
                2,
                inner_map=("outer_map_init_inner", _map(MapType.ARRAY, 4, 4, 1)),
                contents=[(1, "inner_map")],
            ),
        },
        "programs": {
            "tail_1": _prog(ProgramType.SOCKET_FILTER, "socket/tail"),
            "tail_main": _prog(ProgramType.SOCKET_FILTER, "socket/main"),
        },
    },
    # TestMapWithLock, TestBatchMapWithLock (map_test.go).
    "map_spin_lock-el.elf": {
        "maps": {"spin_lock_map": _map(MapType.HASH, 4, 8, 2)},
        "programs": {},
    },
    # TestLoadRawTracepoint (elf_reader_test.go).
    "raw_tracepoint-el.elf": {
        "maps": {},
        "programs": {
            "sched_process_exec": _prog(ProgramType.RAW_TRACEPOINT, "raw_tracepoint/sched_process_exec", "MIT"),
        },
    },
    # TestFreplace (link/tracing_test.go).
    "freplace-el.elf": {
        "maps": {},
        "programs": {
            "sched_process_exec": _prog(ProgramType.RAW_TRACEPOINT, "raw_tracepoint/sched_process_exec", "MIT"),
            "replacement": _prog(ProgramType.EXT, "freplace/subprog", "MIT"),
        },
    },
    # TestCORERelocationLoad (btf/core_reloc_test.go): no license section.
    "relocs-el.elf": {
        "maps": {},
        "programs": {
            name: _prog(ProgramType.SOCKET_FILTER, "socket_filter/" + name)
            for name in ("type_ids", "types", "enums", "fields", "err_ambiguous", "err_ambiguous_flavour")
        },
    },
    # TestCORERelocationRead (btf/core_reloc_test.go).
    "relocs_read-el.elf": {
        "maps": {},
        "programs": {"reads": _prog(ProgramType.SOCKET_FILTER, "socket")},
    },
    # Only a CO-RE target (BTF source); its .bss is ignored by cilium's
    # spec comparisons, so only the absence of programs and maps is cilium's.
    "relocs_read_tgt-el.elf": {"maps": {}, "programs": {}},
    # TestStringSection: cilium refuses it (see LIBBPF_DIFFERENCES); the
    # program is what cilium's reader would produce before refusing.
    "strings-el.elf": {
        "maps": {},
        "programs": {"filter": _prog(ProgramType.SOCKET_FILTER, "socket", "MIT")},
    },
}

# cilium's AttachTo: only set for section prefixes ending in "/" (getProgType
# in elf_reader.go; TestGetProgType: "socket/garbage" -> "", "xdp/foo" -> "").
CILIUM_ATTACH_TO = {
    ("btf_map_init-el.elf", "tail_1"): "",
    ("btf_map_init-el.elf", "tail_main"): "",
    ("raw_tracepoint-el.elf", "sched_process_exec"): "sched_process_exec",
    ("freplace-el.elf", "sched_process_exec"): "sched_process_exec",
    ("freplace-el.elf", "replacement"): "subprog",
    ("relocs_read-el.elf", "reads"): "",
    ("strings-el.elf", "filter"): "",
    **{
        ("relocs-el.elf", n): ""
        for n in ("type_ids", "types", "enums", "fields", "err_ambiguous", "err_ambiguous_flavour")
    },
}

# (object, "maps"|"programs", name, field) -> (libbpf 1.1.2's value, reason)
LIBBPF_DIFFERENCES = {
    # libbpf 1.x matches SEC("socket") exactly (SEC_DEF("socket", ...) without
    # '+' or '/'); "socket/tail" is an unknown section, so the program type
    # stays UNSPEC and loading needs the type set in the spec.  cilium 0.9.1
    # matches the prefix "socket".
    ("btf_map_init-el.elf", "programs", "tail_1", "type"): (
        ProgramType.UNSPEC,
        "libbpf 1.x: SEC('socket/...') is not a socket filter section",
    ),
    ("btf_map_init-el.elf", "programs", "tail_main", "type"): (
        ProgramType.UNSPEC,
        "libbpf 1.x: SEC('socket/...') is not a socket filter section",
    ),
    # Same for "socket_filter/<name>": no such SEC_DEF in libbpf, while
    # cilium's prefix match of "socket" makes it a socket filter.
    **{
        ("relocs-el.elf", "programs", n, "type"): (
            ProgramType.UNSPEC,
            "libbpf 1.x has no SEC('socket_filter/...') definition",
        )
        for n in ("type_ids", "types", "enums", "fields", "err_ambiguous", "err_ambiguous_flavour")
    },
    # libbpf names the inner map template "<outer>.inner"
    # (bpf_object__init_user_btf_map), cilium "<outer>_inner".
    ("btf_map_init-el.elf", "maps", "outer_map_init", "inner_map"): (
        ("outer_map_init.inner", _map(MapType.ARRAY, 4, 4, 1)),
        "libbpf names inner map templates '<outer>.inner'",
    ),
}

# Objects cilium 0.9.1 refuses at LoadCollectionSpec with ErrNotSupported but
# libbpf 1.1.2 opens (the tests assert libbpf's answer):
#  * strings-el.elf: libbpf turns string sections (.rodata.str1.1) into a
#    read-only data map; cilium 0.9.1 did not support references to them.
#    The program still cannot load: its license is "MIT" and
#    bpf_trace_printk is GPL-only, so the verifier refuses it.
LIBBPF_OPENS_CILIUM_REFUSES = {
    "strings-el.elf": "libbpf 1.1.2 supports string sections as .rodata.str1.1 maps",
}

# Little-endian objects libbpf 1.1.2 cannot open: object -> (regex the error
# message must match to say why, libbpf's reason, what cilium does instead).
_LEGACY = r"legacy map definition|'maps' section"
_STATIC = r"static"
LIBBPF_REJECTS = {
    # The first fatal problem libbpf meets in clang >= 9 builds is the static
    # entry point static_fn in SEC("static") (bpf_object__add_programs:
    # "program 'static_fn' is static and not supported"); clang 7 builds
    # without BTF fail first on the legacy SEC("maps") definitions (libbpf
    # 1.0 dropped them).  cilium reads both.
    "loader-clang-7-el.elf": (_LEGACY, "legacy SEC(\"maps\") definitions", "cilium reads the spec, xdp_prog returns 7"),
    "loader-clang-9-el.elf": (_STATIC, "static program static_fn in SEC(\"static\")", "cilium reads the spec"),
    "loader-clang-14-el.elf": (_STATIC, "static program static_fn in SEC(\"static\")", "cilium reads the spec"),
    "loader-el.elf": (_STATIC, "static program static_fn in SEC(\"static\")", "cilium reads the spec"),
    # cilium reads the spec and refuses NewMap because of non-zero Extra bytes.
    "invalid_map-el.elf": (_LEGACY, "legacy SEC(\"maps\") definitions", "cilium: NewMap fails"),
    # cilium refuses the spec too (static map symbol).
    "invalid_map_static-el.elf": (_LEGACY, "legacy SEC(\"maps\") definitions", "cilium: LoadCollectionSpec fails"),
    # cilium exposes iproute2's extra bpf_elf_map fields as MapSpec.Extra.
    "iproute2_map_compat-el.elf": (_LEGACY, "legacy SEC(\"maps\") definitions", "cilium: Extra holds id/pinning"),
    # cilium loads fp_relocation and it returns 42.
    "subprog_reloc-el.elf": (_LEGACY, "legacy SEC(\"maps\") definitions", "cilium: returns 42"),
    # libbpf resolves extern functions at open and fails; cilium reads the
    # spec and fails at NewProgram with ErrUnsatisfiedProgramReference.
    "fwd_decl-el.elf": (r"fwd", "unresolved extern function fwd()", "cilium: NewProgram fails"),
}

BIG_ENDIAN_OBJECTS = sorted(
    [f for f in os.listdir(TESTDATA) if f.endswith("-eb.elf")]
    + [f for f in os.listdir(BTF_TESTDATA) if f.endswith("-eb.elf")]
)
LITTLE_ENDIAN_OBJECTS = sorted(
    [f for f in os.listdir(TESTDATA) if f.endswith("-el.elf")]
    + [f for f in os.listdir(BTF_TESTDATA) if f.endswith("-el.elf")]
)
