"""Types users see: mypy, run as a user runs it on a script that uses ebpf,
names the real classes and functions (not ``Any``), and catches misuse.

``import ebpf`` loads its names lazily at run time; checkers read the
``TYPE_CHECKING`` imports and the literal ``__all__`` instead, so those
must name the same things as the run-time tables.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import ebpf

from conftest import ROOT

_REVEALED = re.compile(r'^(?P<file>[^:]+):(?P<line>\d+): note: Revealed type is "(?P<type>.*)"$')
_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")

# (expression, the type mypy must reveal for it, as it spells them for Python 3.9)
USER_SCRIPT_TYPES: List[Tuple[str, str]] = [
    ("spec", "ebpf.spec.CollectionSpec"),
    ('spec.maps["m"]', "ebpf.spec.MapSpec"),
    ('spec.programs["p"]', "ebpf.spec.ProgramSpec"),
    ('spec.programs["p"].instructions', "ebpf.asm.instructions.Instructions"),
    ('spec.variables["v"]', "ebpf.spec.VariableSpec"),
    ("coll", "ebpf.collection.Collection"),
    ('coll.programs["p"]', "ebpf.programs.Program"),
    ('coll.maps["m"]', "ebpf.maps.Map"),
    ('coll.variables["v"]', "ebpf.collection.Variable"),
    ('coll.programs["p"].run(b"")', "ebpf.programs.RunResult"),
    ("ebpf.Map(spec.maps['m'])", "ebpf.maps.Map"),
    ("ebpf.MapType.HASH", "Literal[ebpf.types.MapType.HASH]?"),
    ("spec.load_and_assign(Objects)", "user.Objects"),
    ("spec.load_and_assign(Objects())", "user.Objects"),
    ("asm.mov_imm", "def (dst: Union[ebpf.asm.registers.Register, builtins.int], imm: builtins.int) "
                    "-> ebpf.asm.instruction.Instruction"),
    ("asm.jsgt32_reg", "def (dst: Union[ebpf.asm.registers.Register, builtins.int], "
                       "src: Union[ebpf.asm.registers.Register, builtins.int], "
                       "target: Union[builtins.str, builtins.int]) -> ebpf.asm.instruction.Instruction"),
    ("asm.Helper.map_lookup_elem", "Literal[ebpf.asm.helpers.Helper.map_lookup_elem]?"),
    ("asm.FN_MAP_LOOKUP_ELEM", "ebpf.asm.helpers.Helper"),
    ("ebpf.rlimit.remove_memlock", "def ()"),
    ("ebpf.errors.KeyNotExistError", "def (message: builtins.str =, errno: Union[builtins.int, None] =) "
                                     "-> ebpf.errors.KeyNotExistError"),
]

# ebpf.link's names, seen through its TYPE_CHECKING imports; the readers'
# records, through EventReader's type parameter (mypy spells a NamedTuple as
# the tuple of its fields with the class as "fallback").
_RINGBUF_RECORD = "tuple[builtins.bytes, builtins.int, Any, builtins.int, fallback=ebpf.ringbuf.Record]"
LINK_AND_READER_TYPES: List[Tuple[str, str]] = [
    ("ebpf.link.Link", "def () -> ebpf.link._link.Link"),
    ('ebpf.link.attach_tracepoint("syscalls", "sys_enter_getpid", coll.programs["p"])', "ebpf.link._link.Link"),
    ("ebpf.link.open_executable", "def (path: Union[os.PathLike[builtins.str], builtins.str]) "
                                  "-> ebpf.link.uprobe.Executable"),
    ("ebpf.link.attach_iter", "def (prog: Any, map: Any =) -> ebpf.link.iter.Iter"),
    ('ebpf.ringbuf.Reader(coll.maps["m"]).read()', _RINGBUF_RECORD),
    ('ebpf.ringbuf.Reader(coll.maps["m"]).read_batch()', f"builtins.list[{_RINGBUF_RECORD}]"),
    ('next(iter(ebpf.ringbuf.Reader(coll.maps["m"])))', _RINGBUF_RECORD),
    ('ebpf.ringbuf.Reader(coll.maps["m"]).__aiter__()', f"typing.AsyncIterator[{_RINGBUF_RECORD}]"),
]

# (statement, a piece of the error mypy must report on its line)
USER_SCRIPT_ERRORS: List[Tuple[str, str]] = [
    ("wrong: ebpf.Map = spec", 'incompatible types in assignment (expression has type "collectionspec", '
                               'variable has type "map")'),
    ('ebpf.ProgramSpec("p", instructions=[1, 2])', 'list item 0 has incompatible type "int"'),
    ('asm.mov_imm(asm.R0, "1")', 'argument 2 to "mov_imm" has incompatible type "str"'),
    ('coll.programs["p"].run(42)', 'argument 1 to "run" of "program" has incompatible type "int"'),
    ("ebpf.load_collection_spec(3.5)", 'argument 1 to "load_collection_spec" has incompatible type "float"'),
    ("ebpf.no_such_name", 'module has no attribute "no_such_name"'),
]

HEADER = """\
from __future__ import annotations

import ebpf
import ebpf.rlimit
from ebpf import asm


class Objects:
    p: ebpf.Program
    m: ebpf.Map


def main(path: str) -> None:
    spec = ebpf.load_collection_spec(path)
    coll = ebpf.Collection(spec)
    ebpf.ProgramSpec("p", ebpf.ProgramType.XDP, instructions=[asm.mov_imm(asm.R0, 2), asm.exit()])
"""


def _script(lines: List[str]) -> Tuple[str, Dict[int, int]]:
    """The user's module and, per line number, the index of its check."""
    text = HEADER
    where: Dict[int, int] = {}
    first = text.count("\n") + 1
    for i, line in enumerate(lines):
        where[first + i] = i
        text += f"    {line}\n"
    return text, where


def _mypy(tmp_path: Path, lines: List[str]) -> Tuple[Dict[int, List[str]], Dict[int, List[str]], Dict[int, int], str]:
    pytest.importorskip("mypy", reason="mypy is installed into the project environment by scripts/setup.sh")
    text, where = _script(lines)
    (tmp_path / "user.py").write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    # This checkout's package, its own errors not reported: what a user sees
    # of an installed package (tests/test_packaging.py checks py.typed ships).
    env["MYPYPATH"] = str(ROOT)
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-version", "3.9", "--follow-imports", "silent",
         "--no-error-summary", "--show-absolute-path", "--hide-error-context", "--no-color-output",
         "--cache-dir", str(tmp_path / ".mypy_cache"), "--config-file", os.devnull, "user.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode in (0, 1), r.stdout + r.stderr
    revealed: Dict[int, List[str]] = {}
    errors: Dict[int, List[str]] = {}
    for out in r.stdout.splitlines():
        m = _REVEALED.match(out)
        if m and m["file"].endswith("user.py"):
            revealed.setdefault(int(m["line"]), []).append(m["type"])
            continue
        m = _ERROR.match(out)
        if m and m["file"].endswith("user.py"):
            errors.setdefault(int(m["line"]), []).append(m["message"])
    return revealed, errors, where, r.stdout


def _reveal(tmp_path: Path, checks: List[Tuple[str, str]]) -> None:
    revealed, errors, where, out = _mypy(tmp_path, [f"reveal_type({expr})" for expr, _ in checks])
    wrong = []
    for line, i in where.items():
        expr, want = checks[i]
        got = revealed.get(line, ["(nothing)"])
        if got != [want] or line in errors:
            wrong.append(f"{expr}: want {want}, got {got} {errors.get(line, '')}")
    assert not wrong, "\n".join(wrong) + "\n--- mypy said:\n" + out
    stray = {line: e for line, e in errors.items() if line not in where}
    assert not stray, out


def test_mypy_sees_the_real_types(tmp_path):
    _reveal(tmp_path, USER_SCRIPT_TYPES)


def test_mypy_sees_the_types_of_links_and_readers(tmp_path):
    _reveal(tmp_path, LINK_AND_READER_TYPES)


def test_mypy_catches_misuse(tmp_path):
    revealed, errors, where, out = _mypy(tmp_path, [stmt for stmt, _ in USER_SCRIPT_ERRORS])
    missing = []
    for line, i in where.items():
        stmt, want = USER_SCRIPT_ERRORS[i]
        if not any(want in e.lower() for e in errors.get(line, [])):
            missing.append(f"{stmt}: want an error with {want!r}, got {errors.get(line)}")
    assert not missing, "\n".join(missing) + "\n--- mypy said:\n" + out
    assert set(errors) <= set(where), out  # the script is otherwise clean


# -- what checkers read agrees with what runs ---------------------------------------------------


def _type_checking_imports(path: Path) -> Dict[str, str]:
    """name -> module of each import under ``if TYPE_CHECKING:`` in ``path``."""
    out: Dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                if isinstance(imp, ast.ImportFrom):
                    for alias in imp.names:
                        out[alias.asname or alias.name] = "." * imp.level + (imp.module or "")
    return out


def test_package_names_agree_for_checkers_and_at_run_time():
    static = _type_checking_imports(ROOT / "ebpf" / "__init__.py")
    lazy = dict(ebpf._LAZY_NAMES)
    submodules = set(ebpf._SUBMODULES)
    assert {n: m for n, m in static.items() if n not in submodules} == lazy
    assert set(static) - set(lazy) == submodules
    eager = {n for n in ebpf.__all__ if n not in lazy}
    assert set(lazy) <= set(ebpf.__all__) and not submodules & set(ebpf.__all__)
    for name in ebpf.__all__:
        value = getattr(ebpf, name)
        if name in lazy:
            module = sys.modules["ebpf" + lazy[name]]
            assert value is getattr(module, name), name
        else:
            assert name in vars(ebpf), name  # defined at import time
    assert eager == set(ebpf.errors.__all__) | {"__version__"}  # what loads with `import ebpf`
    for name in submodules:
        assert getattr(ebpf, name) is sys.modules[f"ebpf.{name}"]


def test_link_names_agree_for_checkers_and_at_run_time():
    import ebpf.link as link

    static = _type_checking_imports(ROOT / "ebpf" / "link" / "__init__.py")
    lazy = dict(link._LAZY)
    assert static == lazy
    eager = {n for n in link.__all__ if n not in lazy}
    assert set(lazy) <= set(link.__all__) and len(link.__all__) == len(set(link.__all__))
    assert eager == {"FDLink", "Link", "LinkInfo", "LinkType", "link_from_id", "load_pinned_link"}
    for name in link.__all__:
        value = getattr(link, name)
        if name in lazy:
            module = importlib.import_module(lazy[name], "ebpf.link")
            assert value is getattr(module, name), name
        else:
            assert name in vars(link), name  # defined at import time
    with pytest.raises(AttributeError):
        link.attach_tracpoint  # noqa: B018 - a misspelt name is an error at run time too


def test_asm_names_agree_for_checkers_and_at_run_time():
    from ebpf import asm

    static = _type_checking_imports(ROOT / "ebpf" / "asm" / "__init__.py")
    assert set(static) == {"Helper", "helper_by_name"}
    for name in asm.__all__:
        assert getattr(asm, name) is not None, name
    assert asm.FN_MAP_LOOKUP_ELEM is asm.Helper.map_lookup_elem


@pytest.mark.parametrize("name", ["ebpf", "ebpf.link", "ebpf.asm"])
def test_dir_lists_the_api_for_shells_and_editors(name):
    module = importlib.import_module(name)
    listed = dir(module)
    public = {n for n in listed if not n.startswith("__")}
    assert set(module.__all__) <= set(listed)
    # The module's own imports are not offered as completions...
    assert not {"Any", "List", "TYPE_CHECKING", "annotations", "importlib", "types"} & set(listed)
    assert not {n for n in public if n.startswith("_")}
    # ...and everything offered exists.
    for n in listed:
        getattr(module, n)
