"""Typed skeletons without a kernel: the codec's class binding, what
``python -m ebpf gen`` writes (deterministic, named without clashes), that
``mypy --strict`` accepts every fixture's skeleton and a user's script and
rejects wrong types, and that generated modules bind to their object.

mypy runs in a subprocess from a scratch directory, with ``strict = True``,
``python_version = 3.9`` (the oldest Python the generated code must run
on) and ``follow_imports = silent`` for ``ebpf``: the package's signatures
still type the user's calls (``skip`` would make them ``Any``), but errors
inside the package, which is not yet strict-clean itself, are not reported
(as for any installed package).  Only the skeletons and the scripts are
the files under test.
"""

from __future__ import annotations

import enum
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest

import ebpf
from ebpf import skeleton as skel_rt
from ebpf.btf import Enum, EnumValue, Int, IntEncoding, Member, Struct, codec_for
from ebpf.btf.codec import StructValue, bind_class, fields, value_shape
from ebpf.cli import main as cli
from ebpf.gen import GenerateError, generate

from conftest import ROOT, fixture_path

TESTS = Path(__file__).resolve().parent
u32 = Int("unsigned int", 4)
s32 = Int("int", 4, IntEncoding.SIGNED)


# -- the codec's hooks -----------------------------------------------------------


def test_double_underscore_fields_decode() -> None:
    # A slot "__pad" would be stored mangled, out of the decoder's reach.
    s = Struct("padded", 8, [Member("a", u32, 0), Member("__pad", u32, 32)])
    v = codec_for(s).decode(bytes(range(8)))
    assert v._asdict() == {"a": 0x03020100, "__pad": 0x07060504}
    assert bytes(v) == bytes(range(8))


def test_bind_class_decodes_into_the_class() -> None:
    t = Struct("pair", 8, [Member("a", u32, 0), Member("b", s32, 32)])

    class Pair(StructValue):
        __slots__ = ("a", "b")
        _fields = ("a", "b")

        def __init__(self, a: int = 0, b: int = 0) -> None:
            self.a, self.b = a, b

    bind_class(t, Pair)
    bind_class(t, Pair)  # again: nothing happens
    c = codec_for(t)
    v = c.decode(b"\x01\0\0\0\xff\xff\xff\xff")
    assert type(v) is Pair and (v.a, v.b) == (1, -1)
    assert c.encode(Pair(2, -2)) == b"\x02\0\0\0\xfe\xff\xff\xff"
    assert bytes(Pair(3, 4)) == b"\x03\0\0\0\x04\0\0\0"  # the class got the codec

    class Other(Pair):
        pass

    with pytest.raises(ValueError, match="already bound"):
        bind_class(t, Other)


def test_bind_class_refuses_mismatches() -> None:
    t = Struct("trio", 12, [Member("a", u32, 0), Member("b", u32, 32), Member("c", u32, 64)])

    class Wrong(StructValue):
        _fields = ("a", "c", "b")

    with pytest.raises(TypeError, match="has fields"):
        bind_class(t, Wrong)
    with pytest.raises(TypeError, match="StructValue subclass"):
        bind_class(t, int)
    with pytest.raises(TypeError, match="only structs, unions and enums"):
        bind_class(u32, Wrong)
    codec_for(t)
    Wrong._fields = ("a", "b", "c")
    with pytest.raises(ValueError, match="before first use"):
        bind_class(t, Wrong)


def test_bind_enum() -> None:
    t = Enum("shade", 4, [EnumValue("DARK", 1), EnumValue("LIGHT", 2)])

    class Shade(enum.IntEnum):
        DARK = 1
        LIGHT = 2

    bind_class(t, Shade)
    c = codec_for(t)
    assert c.decode(b"\x02\0\0\0") is Shade.LIGHT
    assert type(c.decode(b"\x09\0\0\0")) is int  # no enumerator: a plain int
    holder = Struct("holder", 4, [Member("s", t, 0)])
    assert codec_for(holder).decode(b"\x01\0\0\0").s is Shade.DARK
    with pytest.raises(TypeError, match="IntEnum"):
        bind_class(Enum("other", 4, []), int)


def test_fields_and_shapes() -> None:
    spec = ebpf.load_collection_spec(fixture_path("skeleton.o"))
    stats = spec.maps["stats_map"].value
    fs = fields(stats)
    by = {f.name: f for f in fs}
    # Anonymous members flattened, bitfields in place, union members marked.
    assert [f.name for f in fs] == ["count", "total", "label", "where", "hist", "last", "tag", "lo", "hi",
                                    "ready", "level", "ok", "ratio"]
    assert (by["level"].bit_offset, by["level"].bitfield_size) == (513, 7)
    assert not by["tag"].in_union
    shapes = {f.name: value_shape(f.type)[0] for f in fs}
    assert shapes == {"count": "int", "total": "int", "label": "cstr", "where": "struct", "hist": "list",
                      "last": "enum", "tag": "struct", "lo": "int", "hi": "int", "ready": "int",
                      "level": "int", "ok": "bool", "ratio": "float"}
    tag = fields(by["tag"].type)
    assert [(f.name, f.in_union, value_shape(f.type)[0]) for f in tag] == [("word", True, "int"),
                                                                         ("octets", True, "bytes")]


# -- generation -------------------------------------------------------------------


def _gen(tmp: Path, obj: str, out: str, *args: str) -> Path:
    """``python -m ebpf gen`` in-process; the object is copied next to the module."""
    src = fixture_path(obj)
    shutil.copy(src, tmp / obj)
    assert cli(["gen", str(tmp / obj), "-o", str(tmp / out), *args]) == 0
    return tmp / out


def _import(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_output_is_deterministic(tmp_path: Path) -> None:
    obj = str(fixture_path("skeleton.o"))
    runs = []
    for seed in ("1", "2"):  # set and dict orders must not leak into the output
        env = dict(os.environ, PYTHONHASHSEED=seed)
        runs.append(subprocess.run([sys.executable, "-m", "ebpf", "gen", obj, "--type", "event"],
                                   env=env, capture_output=True, check=True).stdout)
    assert runs[0] == runs[1]
    data = fixture_path("skeleton.o").read_bytes()
    assert generate(data, object_file="skeleton.o", types=["event"]).encode() == runs[0]
    # Types given in another order: the same module.
    assert generate(obj, types=["enum kind", "event"]) == generate(obj, types=["event", "enum kind"])


def test_header_names_the_tool_object_and_digest() -> None:
    import hashlib

    obj = fixture_path("skeleton.o")
    text = generate(obj, types=["event"], embed=True, name="skel", version="9.9")
    digest = hashlib.sha256(obj.read_bytes()).hexdigest()
    head = text.splitlines()[:3]
    assert head == [
        "# Code generated by `python -m ebpf gen` (ebpf 9.9); DO NOT EDIT.",
        f"# Object: skeleton.o (sha256 {digest})",
        "# Options: --name skel --type event --embed",
    ]
    assert f"OBJECT_SHA256 = {digest!r}" in text
    assert "OBJECT_NAME = 'skel'" in text


def test_cli_writes_once_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _gen(tmp_path, "skeleton.o", "skel.py", "--type", "event")
    first = out.stat().st_mtime_ns
    os.utime(out, ns=(first - 10**9, first - 10**9))
    assert cli(["gen", str(tmp_path / "skeleton.o"), "-o", str(out), "--type", "event"]) == 0
    assert out.stat().st_mtime_ns == first - 10**9  # unchanged content: not rewritten
    capsys.readouterr()
    assert cli(["gen", str(tmp_path / "skeleton.o"), "--type", "nosuch"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("ebpf gen: --type nosuch: no such type in the object's BTF")
    assert cli(["gen", str(tmp_path / "skeleton.o"), "--type", "u32"]) == 1
    assert "only structs, unions and enums become classes" in capsys.readouterr().err
    assert cli(["gen", str(tmp_path / "skeleton.o"), "--name", "no-dash"]) == 1
    assert "letters, digits and underscores" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli(["gen"])
    assert exc.value.code == 2


def test_cli_notes_a_missing_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "elsewhere" / "skel.py"
    out.parent.mkdir()
    assert cli(["gen", str(fixture_path("skeleton.o")), "-o", str(out)]) == 0
    assert "load() reads skeleton.o from the module's directory" in capsys.readouterr().err
    assert cli(["gen", str(fixture_path("skeleton.o")), "-o", str(out), "--embed"]) == 0
    assert capsys.readouterr().err == ""


def test_names_that_python_cannot_take_as_they_are() -> None:
    text = generate(fixture_path("skeleton_names.o"))
    # struct level and the typedef level are two C types: struct_level, level.
    assert "class struct_level(_skel.Struct):" in text and "class level(_skel.Struct):" in text
    assert "class struct_range(" in text  # range() is a builtin the module uses
    assert "class pair_t(" in text and "class anon_map_value(" in text
    # Fields: keyword, mangled and base-method names become properties.
    for alias, cname in (("from_", "from"), ("_pad", "__pad"), ("keys_", "keys")):
        assert f"    def {alias}(self) -> int:" in text and f"getattr(self, {cname!r})" in text
    # A field named like a builtin or a class: qualified type names in the body.
    assert "    label: _b.bytes" in text and "    point: _point_type" in text
    assert "point_: _t.Optional[_point_type] = None" in text and "self_: int = 0" in text
    # Objects attributes that clash with its methods or load()'s keywords.
    assert "    close_: ebpf.typed.TypedMap[pair_t, struct_range]" in text
    assert "    path_: ebpf.typed.TypedVariable[int]" in text and "    Objects_: ebpf.typed" in text
    assert "    queue: ebpf.typed.TypedMap[None, int]" in text
    assert "    outer: ebpf.typed.TypedMap[int, ebpf.Map]" in text
    assert "hidden_counter" not in text  # static: private to the object
    assert "    # None = 3 is not a valid member name" in text and "    LOW = 1" in text


def test_unknown_type_and_ambiguity() -> None:
    obj = fixture_path("skeleton_names.o")
    with pytest.raises(GenerateError, match="several types have that name.*struct, typedef"):
        generate(obj, types=["level"])
    assert "class struct_level(" in generate(obj, types=["struct level"])
    with pytest.raises(GenerateError, match="write NAME"):
        generate(obj, types=["struct a b"])


def _fixture_objects() -> List[Path]:
    """The (little-endian) object of every fixtures/*.bpf.c."""
    sources = sorted((ROOT / "fixtures").glob("*.bpf.c"))
    return [fixture_path(src.name[: -len(".bpf.c")] + ".o") for src in sources]


def test_every_fixture_skeleton_binds(tmp_path: Path) -> None:
    for i, obj in enumerate(_fixture_objects()):
        shutil.copy(obj, tmp_path / obj.name)
        out = tmp_path / f"fx{i}.py"
        out.write_text(generate(tmp_path / obj.name))
        mod = _import(out, f"_gen_fx{i}_{os.getpid()}")
        spec = mod.load_spec()
        for cls, _, _, _ in mod._TYPES:
            if issubclass(cls, skel_rt.Struct):
                assert isinstance(cls.from_bytes(bytes(4096)), cls), (obj.name, cls)
        assert set(mod.Objects._ebpf_maps.values()) <= set(spec.maps)


def test_structs_from_bytes(tmp_path: Path) -> None:
    mod = _import(_gen(tmp_path, "skeleton.o", "skel_fb.py", "--type", "event"), f"_gen_fb_{os.getpid()}")
    event = mod.event
    with pytest.raises(TypeError, match="not bound to BTF yet"):
        bytes(event(pid=1))
    mod.load_spec()
    zero = event.from_bytes(bytes(40))
    assert zero == event() and zero.kind is mod.kind.KIND_NONE
    e = event(pid=5, seq=6, kind=mod.kind.KIND_TAIL, comm=b"sh", cookie=-9)
    raw = bytes(e)
    assert len(raw) == 40 and event.from_bytes(raw + b"pad") == e  # perf samples carry padding
    with pytest.raises(ValueError, match="40 bytes needed, got 39"):
        event.from_bytes(raw[:39])
    stats = mod.stats
    s = stats.from_bytes(bytes(80))
    assert s.where == mod.point() and s.hist == [0] * 4 and s.tag.word == 0


def test_stale_skeleton_is_refused(tmp_path: Path) -> None:
    mod = _import(_gen(tmp_path, "skeleton.o", "skel_stale.py", "--type", "event"), f"_gen_stale_{os.getpid()}")
    with pytest.raises(skel_rt.StaleSkeletonError, match="no struct 'point' for class point"):
        mod.load_spec(path=fixture_path("ringbuf.o"))
    # ringbuf.o has a struct event too, laid out differently.
    entry = next(e for e in mod._TYPES if e[0] is mod.event)
    spec = ebpf.load_collection_spec(fixture_path("ringbuf.o"))
    with pytest.raises(skel_rt.StaleSkeletonError, match="struct event in the object differs from event"):
        skel_rt.bind_types(spec, [entry])
    assert skel_rt.layout(spec.types.type_by_name("event", "struct")) == \
        "struct 16: seq u64 @0, val u64 @64"


# -- mypy ---------------------------------------------------------------------------


def _mypy(workdir: Path, files: List[str], cache: Path) -> List[str]:
    pytest.importorskip("mypy")
    (workdir / "mypy.ini").write_text(
        "[mypy]\nstrict = True\npython_version = 3.9\n"
        f"cache_dir = {cache}\n"
        "[mypy-ebpf.*]\nfollow_imports = silent\n"
    )
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini", *files],
                          cwd=workdir, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ": error:" in ln]
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 2: mypy itself failed
    assert (proc.returncode == 1) == bool(lines), proc.stdout
    return lines


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def test_mypy_strict_accepts_every_fixture_skeleton(tmp_path: Path, mypy_cache: Path) -> None:
    files = []
    for i, obj in enumerate(_fixture_objects()):
        out = tmp_path / f"skel_{obj.stem}.py"
        out.write_text(generate(obj, embed=i % 2 == 0))
        files.append(out.name)
    assert _mypy(tmp_path, files, mypy_cache) == []


def test_mypy_strict_checks_user_code(tmp_path: Path, mypy_cache: Path) -> None:
    _gen(tmp_path, "skeleton.o", "skel.py", "--type", "event")
    _gen(tmp_path, "skeleton_names.o", "names.py")
    for script in ("skeleton_user.py", "skeleton_user_wrong.py", "skeleton_names_user.py"):
        shutil.copy(TESTS / script, tmp_path / script)
    errors = _mypy(tmp_path, ["skel.py", "names.py", "skeleton_user.py", "skeleton_names_user.py",
                              "skeleton_user_wrong.py"], mypy_cache)
    wrong = (TESTS / "skeleton_user_wrong.py").read_text().splitlines()
    expected = {i + 1 for i, ln in enumerate(wrong) if ln.rstrip().endswith("# error")}
    got = set()
    for ln in errors:
        m = re.match(r"skeleton_user_wrong\.py:(\d+): error:", ln)
        assert m, f"an error outside the wrong script: {ln}"
        got.add(int(m.group(1)))
    assert got == expected, "\n".join(errors)


def readme_example() -> str:
    """The Python example of the README's skeleton section."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Typed skeletons: `python -m ebpf gen`"):]
    assert "python -m ebpf gen skeleton.o -o skel.py --type event" in section
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_example_type_checks(tmp_path: Path, mypy_cache: Path) -> None:
    _gen(tmp_path, "skeleton.o", "skel.py", "--type", "event")
    (tmp_path / "readme_example.py").write_text(readme_example())
    assert _mypy(tmp_path, ["skel.py", "readme_example.py"], mypy_cache) == []
