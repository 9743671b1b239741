"""The package as users get it: a wheel, installed into a fresh virtual
environment, carries its types (py.typed), its license, and type checkers
see the real types through it (not the editable checkout)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.wheel

SCRIPT = """\
import ebpf
import ebpf.link
import ebpf.ringbuf

spec = ebpf.load_collection_spec("prog.o")
reveal_type(spec)
reveal_type(spec.maps["m"])
coll = ebpf.Collection(spec)
reveal_type(coll.programs["p"])
reveal_type(ebpf.Map)
reveal_type(ebpf.__version__)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(out), str(ROOT)], check=True, capture_output=True)
    (found,) = out.glob("ebpf-*.whl")
    return found


def test_wheel_ships_types_and_license(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "ebpf/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    assert not any(n.startswith("tests/") for n in names)
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Classifier: Typing :: Typed" in text and "Requires-Python: >=3.9" in text


def test_types_are_seen_from_an_installed_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    # A PYTHONPATH pointing at a checkout would make pip find ebpf installed
    # already and mypy read the sources: neither sees it.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                    "--disable-pip-version-check", str(wheel)], check=True, capture_output=True, env=env)
    user = tmp_path / "user"
    user.mkdir()
    (user / "tool.py").write_text(SCRIPT)
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-executable", str(py),
                          "tool.py"], cwd=user, env=env, capture_output=True, text=True)
    text = out.stdout
    # The real classes, from the installed copy: nothing is Any.
    assert 'Revealed type is "ebpf.spec.CollectionSpec"' in text, text
    assert 'Revealed type is "ebpf.spec.MapSpec"' in text, text
    assert 'Revealed type is "ebpf.programs.Program"' in text, text
    assert 'Revealed type is "def (spec: ebpf.spec.MapSpec) -> ebpf.maps.Map"' in text, text
    assert 'Revealed type is "builtins.str"' in text, text
    assert "Any" not in text, text
    # And it really was the wheel's copy that mypy read.
    site = subprocess.run([str(py), "-c", "import ebpf, os; print(os.path.dirname(ebpf.__file__))"],
                          capture_output=True, text=True, check=True, cwd=user, env=env).stdout.strip()
    assert str(venv) in site and str(ROOT) not in site
