"""The kernel's objects by id (``ebpf.program_ids()`` and friends) and the
commands over them: ``prog``, ``map``, ``link``, ``btf list``, ``features``.

A collection of the core fixture is loaded in this process, filled and
attached; the commands, run as subprocesses, must find and decode it."""

from __future__ import annotations

import os

import pytest

import ebpf
from ebpf import features
from ebpf.errors import KeyNotExistError

from cliutil import cli, cli_json, one_line_error
from conftest import fixture_path

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def loaded():
    spec = ebpf.load_collection_spec(fixture_path("core.o"))
    spec.maps["pinned_map"].pinning = ebpf.PinType.NONE
    with ebpf.Collection(spec) as coll:
        coll.maps["hash_map"][5] = 77
        coll.maps["hash_map"][6] = 78
        coll.maps["array_map"][1] = 9
        coll.maps["lpm_map"][{"prefixlen": 24, "addr": 0x0A000000}] = 3
        link = ebpf.link.attach_tracepoint("syscalls", "sys_enter_getpid", coll.programs["tp_getpid"])
        try:
            yield coll, link
        finally:
            link.close()


def ids(coll, link):
    return (coll.programs["tp_getpid"].info().id, coll.maps["hash_map"].info().id, link.info().id)


# -- the library's enumeration ---------------------------------------------


def test_ids_ascend_and_include_ours(loaded):
    coll, link = loaded
    prog_id, map_id, link_id = ids(coll, link)
    for walk, mine in ((ebpf.program_ids, prog_id), (ebpf.map_ids, map_id), (ebpf.link.link_ids, link_id)):
        got = list(walk())
        assert got == sorted(set(got)) and mine in got
    btf_ids = list(ebpf.btf.btf_ids())
    assert btf_ids == sorted(btf_ids)
    assert coll.programs["tp_getpid"].info().btf_id in btf_ids


def test_open_by_id(loaded):
    coll, link = loaded
    prog_id, map_id, link_id = ids(coll, link)
    with ebpf.program_from_id(prog_id) as p:
        assert p.info().name == "tp_getpid"
    with ebpf.map_from_id(map_id) as m:
        assert m.lookup((5).to_bytes(4, "little")) == (77).to_bytes(8, "little")
    with ebpf.link.link_from_id(link_id) as lk:
        assert lk.info().program_id == prog_id


def test_vanished_ids_are_key_errors():
    m = ebpf.Map(ebpf.MapSpec(name="gone", type=ebpf.MapType.ARRAY, key_size=4, value_size=4, max_entries=1))
    gone = m.info().id
    m.close()
    with pytest.raises(KeyNotExistError):
        ebpf.map_from_id(gone)
    with pytest.raises(KeyError):
        ebpf.program_from_id(0xFFFFFFF0)
    with pytest.raises(KeyNotExistError):
        ebpf.link.link_from_id(0xFFFFFFF0)
    from ebpf.ids import btf_info_from_id

    with pytest.raises(KeyNotExistError):
        btf_info_from_id(0xFFFFFFF0)


def test_btf_by_id(loaded):
    from ebpf.ids import btf_info_from_id, btf_spec_from_id

    coll, _ = loaded
    btf_id = coll.maps["lpm_map"].info().btf_id
    info = btf_info_from_id(btf_id)
    assert info.id == btf_id and not info.kernel and info.size > 0
    spec = btf_spec_from_id(btf_id)
    assert spec.type_by_name("lpm_key").size == 8
    vmlinux = next(i for i in ebpf.btf.btf_ids() if btf_info_from_id(i).name == "vmlinux")
    assert btf_spec_from_id(vmlinux) is ebpf.btf.load_kernel_spec()


# -- prog, map, link, btf list ---------------------------------------------


def test_prog_list_and_show(loaded):
    coll, link = loaded
    prog_id, map_id, _ = ids(coll, link)
    rows = {r["id"]: r for r in cli_json("prog", "list")}
    r = rows[prog_id]
    assert (r["type"], r["name"]) == ("tracepoint", "tp_getpid")
    assert r["map_ids"] == coll.programs["tp_getpid"].info().map_ids
    assert str(prog_id) in cli("prog", "list").stdout
    shown = cli_json("prog", "show", prog_id)
    assert shown["tag"] == r["tag"] and shown["btf_id"] == r["btf_id"]
    assert {"pid": os.getpid(), "comm": open("/proc/self/comm").read().strip()} in shown["pids"]
    text = cli("prog", "show", prog_id, "--disasm").stdout
    assert "name:" in text and "tp_getpid" in text and "exit" in text
    assert "# map outer_map" in text  # the kernel's map ids, named


def test_prog_show_of_a_missing_id_fails_in_one_line():
    err = one_line_error(cli("prog", "show", 0xFFFFFFF0, expect=1), "prog show")
    assert "KeyNotExistError" in err and "no program with id" in err
    assert "must be a number" in one_line_error(cli("prog", "show", "abc", expect=1), "prog show")


def test_map_list_show_dump(loaded):
    coll, link = loaded
    _, map_id, _ = ids(coll, link)
    rows = {r["id"]: r for r in cli_json("map", "list")}
    assert (rows[map_id]["name"], rows[map_id]["type"], rows[map_id]["value_size"]) == ("hash_map", "hash", 8)
    shown = cli_json("map", "show", map_id)
    assert (shown["key_type"], shown["value_type"]) == ("u32", "u64")
    dump = cli_json("map", "dump", map_id)
    assert dump["kind"] == "table"
    assert dump["entries"] == [{"key": 5, "value": 77}, {"key": 6, "value": 78}]
    text = cli("map", "dump", map_id).stdout
    assert text.splitlines()[0] == "hash_map (hash):"
    assert [line.split() for line in text.splitlines()[2:]] == [["5", "77"], ["6", "78"]]


def test_map_dump_decodes_struct_keys_through_kernel_btf(loaded):
    coll, _ = loaded
    dump = cli_json("map", "dump", coll.maps["lpm_map"].info().id)
    assert dump["entries"] == [{"key": {"prefixlen": 24, "addr": 0x0A000000}, "value": 3}]
    out = cli("map", "dump", coll.maps["lpm_map"].info().id).stdout
    assert "PREFIXLEN" in out and "ADDR" in out


def test_map_dump_of_an_array_of_counters_is_a_histogram(loaded):
    coll, _ = loaded
    dump = cli_json("map", "dump", coll.maps["array_map"].info().id)
    assert dump["kind"] == "hist" and dump["histograms"][0]["slots"] == [0, 9, 0, 0]
    out = cli("map", "dump", coll.maps["array_map"].info().id).stdout
    assert "         2 -> 3          : 9        |****************************************|" in out


def test_map_dump_of_a_pin(loaded, pin_dir):
    coll, _ = loaded
    path = pin_dir / "hash"
    coll.maps["hash_map"].pin(path)
    try:
        assert cli_json("map", "dump", path)["entries"][0] == {"key": 5, "value": 77}
    finally:
        coll.maps["hash_map"].unpin()


def test_map_dump_refuses_what_cannot_be_read(loaded):
    coll, _ = loaded
    err = one_line_error(cli("map", "dump", coll.maps["queue_map"].info().id, expect=1), "map dump")
    assert "queue map" in err and "hint:" in err
    assert "neither a map id" in one_line_error(cli("map", "dump", "/nonexistent", expect=1), "map dump")


def test_link_list(loaded):
    coll, link = loaded
    prog_id, _, link_id = ids(coll, link)
    rows = {r["id"]: r for r in cli_json("link", "list")}
    r = rows[link_id]
    assert (r["type"], r["prog_id"], r["prog_name"]) == ("perf_event", prog_id, "tp_getpid")
    assert r["tp_name"] == "sys_enter_getpid"
    line = next(line for line in cli("link", "list").stdout.splitlines() if line.split()[0] == str(link_id))
    assert "tp_getpid" in line and "tp_name=sys_enter_getpid" in line


def test_btf_list(loaded):
    coll, _ = loaded
    btf_id = coll.programs["tp_getpid"].info().btf_id
    rows = {r["id"]: r for r in cli_json("btf", "list")}
    assert not rows[btf_id]["kernel"]
    assert coll.programs["tp_getpid"].info().id in rows[btf_id]["prog_ids"]
    assert coll.maps["hash_map"].info().id in rows[btf_id]["map_ids"]
    assert any(r["name"] == "vmlinux" and r["kernel"] for r in rows.values())


# -- features ------------------------------------------------------------------


def _status(fn, *args) -> str:
    try:
        fn(*args)
    except ebpf.KernelPolicyError:
        return "policy"
    except ebpf.NotSupportedError:
        return "no"
    return "yes"


def test_features_agree_with_the_probes():
    doc = cli_json("features")
    assert doc["system"]["libbpf"].startswith("v1.")
    assert doc["program_types"]["socket_filter"]["status"] == "yes"
    assert doc["map_types"]["hash"]["status"] == "yes"
    assert doc["map_types"]["ringbuf"]["status"] == _status(features.have_map_type, ebpf.MapType.RINGBUF)
    assert doc["iterators"]["task"]["status"] == _status(features.have_iterator, "task")
    tracing = _status(features.have_tracing_programs)
    assert doc["attach_kinds"]["fentry/fexit/fmod_ret"]["status"] == tracing
    refused = {r["what"] for r in doc["policy_refusals"]}
    assert ("attach kind fentry/fexit/fmod_ret" in refused) == (tracing == "policy")
    helpers = doc["helpers"]["socket_filter"]
    assert "bpf_map_lookup_elem" in helpers and "bpf_probe_write_user" not in helpers
    assert "bpf_get_current_pid_tgid" in doc["helpers"]["tracepoint"]


def test_features_text():
    out = cli("features", "--no-helpers").stdout
    for section in ("program types:", "map types:", "attach kinds:", "iterator targets:", "refused by policy"):
        assert section in out
    assert "helpers per program type" not in out
