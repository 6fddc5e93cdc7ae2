"""Install says what it does (issue #14, item 7): the build announces the compile, with the
documented way around it, and says how long it took; ``DNSGUARD_NO_COMPILE=1`` builds nothing
and says so. Runs setup.py on a copy of the tree (no compile: ``--dry-run``, and the C files
already translated are reused). Cost: ~5 s."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from dnsguard import _compiled


def _tree(tmp_path):
    dst = tmp_path / "src"
    dst.mkdir()
    for f in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, dst / f)
    shutil.copytree(ROOT / "dnsguard", dst / "dnsguard",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return dst


def _setup(tree, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "setup.py", *args], cwd=tree, text=True,
                          capture_output=True, timeout=600, env={**os.environ, **env},
                          start_new_session=True)  # no controlling terminal: stderr only


def test_no_compile_says_so_and_builds_nothing(tmp_path):
    tree = _tree(tmp_path)
    p = _setup(tree, "build_ext", "--inplace", DNSGUARD_NO_COMPILE="1")
    assert p.returncode == 0, p.stderr
    assert "dnsguard: DNSGUARD_NO_COMPILE is set: not compiling; the hot path runs " \
           "interpreted" in p.stderr
    assert not list(tree.rglob("*.so"))
    readme = (ROOT / "README.md").read_text()
    assert "DNSGUARD_NO_COMPILE=1 pip install ." in readme  # the documented way


def test_compile_is_announced_with_its_duration(tmp_path):
    pytest.importorskip("Cython", reason="Cython (a test extra) translates the modules")
    tree = _tree(tmp_path)
    p = _setup(tree, "--dry-run", "build_ext", "--inplace")
    assert p.returncode == 0, p.stderr
    n = len(_compiled.MODULES)
    said = [ln for ln in p.stderr.splitlines() if ln.startswith("dnsguard: ")]
    assert said[-2].startswith(f"dnsguard: compiling {n} hot-path modules with Cython"), said
    assert "DNSGUARD_NO_COMPILE=1" in said[-2] and "minutes" in said[-2]
    # How many compile at once, as a number (it once read "True at a time").
    assert re.search(r", [1-9]\d* at a time;", said[-2]), said
    assert re.fullmatch(rf"dnsguard: compiled \d+ of {n} modules in \d+ s.*", said[-1]), said


def test_metadata_runs_say_nothing(tmp_path):
    """pip runs setup.py for metadata before building: no message there (once, not thrice)."""
    tree = _tree(tmp_path)
    p = _setup(tree, "--name", DNSGUARD_NO_COMPILE="1")
    assert p.returncode == 0 and "dnsguard: " not in p.stderr, p.stderr
