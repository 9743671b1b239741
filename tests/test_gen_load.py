"""Typed skeletons on the kernel: ``python -m ebpf gen fixture.o -o
skel.py``, then user scripts that load the object through it, write and
read struct-valued maps, set globals, fill a program array and read ring
buffer events (type-checked with ``mypy --strict`` in tests/test_gen.py,
run here), and what ``Objects`` owns and closes."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import ebpf
from ebpf.cli import main as cli
from ebpf.typed import ReadOnlyVariable, TypedMap, TypedVariable

from conftest import ROOT, fixture_path

pytestmark = pytest.mark.kernel
TESTS = Path(__file__).resolve().parent


def _gen(tmp: Path, obj: str, out: str, *args: str, copy: bool = True) -> Path:
    if copy:
        shutil.copy(fixture_path(obj), tmp / obj)
        src = tmp / obj
    else:
        src = fixture_path(obj)
    assert cli(["gen", str(src), "-o", str(tmp / out), *args]) == 0
    return tmp / out


def _import(path: Path) -> Any:
    name = f"_skel_{path.stem}_{os.getpid()}_{id(path)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _run_script(tmp: Path, script: str) -> str:
    if not (tmp / script).exists():
        shutil.copy(TESTS / script, tmp / script)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp), str(ROOT)]))
    proc = subprocess.run([sys.executable, script], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_user_script_runs(tmp_path: Path) -> None:
    """The issue's "done when": gen, then a script that loads, writes and
    reads a struct-valued map, sets globals, fills a program array, reads
    events."""
    _gen(tmp_path, "skeleton.o", "skel.py", "--type", "event")
    assert _run_script(tmp_path, "skeleton_user.py").startswith("ok: event(pid=")


def test_readme_example_runs(tmp_path: Path) -> None:
    from test_gen import readme_example

    _gen(tmp_path, "skeleton.o", "skel.py", "--type", "event")
    (tmp_path / "readme_example.py").write_text(readme_example())
    pid, comm, is_exec = _run_script(tmp_path, "readme_example.py").split()
    assert int(pid) > 0 and comm.startswith("b'") and is_exec == "True"


def test_names_script_runs(tmp_path: Path) -> None:
    _gen(tmp_path, "skeleton_names.o", "names.py")
    assert _run_script(tmp_path, "skeleton_names_user.py").startswith("ok: odd(from=2")


def test_objects_own_and_close_everything(tmp_path: Path) -> None:
    skel = _import(_gen(tmp_path, "skeleton.o", "skel_own.py", "--type", "event"))
    with skel.load(target_pid=os.getpid()) as objs:
        assert isinstance(objs.stats_map, TypedMap) and isinstance(objs.events, ebpf.Map)
        assert isinstance(objs.entry, ebpf.Program)
        assert type(objs.calls) is TypedVariable and type(objs.target_pid) is ReadOnlyVariable
        assert objs.target_pid.read_only and not objs.calls.read_only
        with pytest.raises(ebpf.PermissionDeniedError, match="read-only"):
            objs.target_pid.variable.set(1)
        assert objs.default_kind.get() is skel.kind.KIND_EXEC
        # Program array keys decode as ints although the ELF gives no key type.
        assert objs.jump_table.next_key(None) == 0 and objs.jump_table.key_size == 4
        links = objs.attach()
        assert objs.links == links
        maps = [objs.stats_map, objs.events, objs.jump_table, objs.calls.variable.map]
        progs = [objs.entry, objs.on_getppid, objs.tail_zero]
        link = links["on_getppid"]
        assert "closed" not in repr(objs)
    assert all(m.closed for m in maps) and all(p.closed for p in progs)
    with pytest.raises(ebpf.ClosedError):
        link.info()
    objs.close()  # again: nothing to do
    assert "closed" in repr(objs)


def test_embedded_object_and_edited_spec(tmp_path: Path) -> None:
    out = _gen(tmp_path, "skeleton.o", "skel_embed.py", "--embed", "--type", "event", copy=False)
    assert not (tmp_path / "skeleton.o").exists()
    skel = _import(out)
    spec = skel.load_spec()
    spec.maps["stats_map"].max_entries = 5
    with skel.load(spec=spec, tail_index=1) as objs:
        assert objs.stats_map.max_entries == 5
        assert objs.tail_index.get() == 1
        assert spec.variables["tail_index"].get() == 0  # the caller's spec is left alone
        for i in range(5):
            objs.stats_map[i] = skel.stats(count=i)
        with pytest.raises(ebpf.EBPFError) as full:
            objs.stats_map[5] = skel.stats()
        assert full.value.errno == 7  # E2BIG: a full hash map
        assert sorted(v.count for v in objs.stats_map.values()) == [0, 1, 2, 3, 4]
    # A spec read without the skeleton's load_spec() is bound by load().
    with skel.load(spec=ebpf.load_collection_spec(fixture_path("skeleton.o"))) as objs:
        objs.stats_map[1] = skel.stats(count=9)
        assert type(objs.stats_map[1]) is skel.stats
    # Data-section maps get the object name the module records.
    with skel.load() as objs:
        assert objs.calls.variable.map.info().name.startswith("skeleton.")


def test_pinned_maps_and_constants(tmp_path: Path, pin_dir: Path) -> None:
    core = _import(_gen(tmp_path, "core.o", "core_skel.py"))
    with pytest.raises(ValueError, match="pass pin_path"):
        core.load()
    with core.load(pin_path=str(pin_dir), ret_value=9) as objs:
        assert objs.run_syscall.run().retval == 9  # a .rodata constant set before load
        assert objs.ret_value.get() == 9 and objs.counter.get() == 2
        assert objs.hash_map[1] == 10
        assert objs.pinned_map.pinned_path == str(pin_dir / "pinned_map")
    assert (pin_dir / "pinned_map").exists()  # pins outlive the objects, as in a Collection
    with core.load(pin_path=str(pin_dir)) as objs:  # the pin is reused
        assert objs.run_syscall.run().retval == 7


def test_load_refuses_another_object(tmp_path: Path) -> None:
    skel = _import(_gen(tmp_path, "skeleton.o", "skel_other.py", "--type", "event"))
    from ebpf.skeleton import StaleSkeletonError

    with pytest.raises(StaleSkeletonError, match="run `python -m ebpf gen` again"):
        skel.load(path=fixture_path("btf_values.o"))
    with pytest.raises(KeyError, match="no_such"):
        from ebpf.skeleton import load_objects

        load_objects(skel.Objects, skel.load_spec(), variables={"no_such": 1})


def test_typed_map_from_map_keeps_the_kernel_object(pin_dir: Path) -> None:
    spec = ebpf.MapSpec("plain", ebpf.MapType.ARRAY, 4, 8, 2)
    m = ebpf.Map(spec)
    m.pin(pin_dir / "plain")
    ident = m.info().id
    t = TypedMap[int, bytes].from_map(m)
    assert m.closed and not t.closed
    assert t.info().id == ident and t.pinned_path == str(pin_dir / "plain")
    t[1] = b"12345678"
    assert t[1] == b"12345678"
    t.unpin()
    t.close()
    assert not (pin_dir / "plain").exists()
