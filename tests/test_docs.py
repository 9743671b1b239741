"""The user guide's examples run, on the real kernel, as written.

Each page of docs/*.md is one test: its ```python blocks run in order in one
namespace (a page reads as one session), in a directory holding the objects
built from examples/*.bpf.c (`counter.o`, `ringbuf.o`, ...), as a reader
following the guide would have them."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.kernel

DOCS = ROOT / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md"))
_FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks(page: str) -> list:
    return _FENCE.findall((DOCS / page).read_text())


@pytest.fixture(scope="session")
def example_objects(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    arch = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True, check=True).stdout.strip()
    for src in sorted((ROOT / "examples").glob("*.bpf.c")):
        obj = out / (src.name[: -len(".bpf.c")] + ".o")
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-I/usr/include/{arch}", "-c", str(src),
                        "-o", str(obj)], check=True)
    return out


def test_every_page_is_in_the_toctree():
    index = (DOCS / "index.md").read_text()
    for page in PAGES:
        if page != "index.md":
            assert f"\n{page[:-3]}\n" in index, f"{page} is not in docs/index.md's toctree"


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)])
def test_examples_run(page, example_objects, monkeypatch):
    monkeypatch.chdir(example_objects)
    monkeypatch.syspath_prepend(str(example_objects))  # modules a page generates import from there
    # A real module, as a user's script is: annotations resolve through it.
    module = types.ModuleType(f"docs_{page[:-3].replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for i, block in enumerate(python_blocks(page)):
        code = compile(block, f"docs/{page} (python block {i + 1})", "exec")
        exec(code, module.__dict__)
