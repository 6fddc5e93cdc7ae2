"""Build: the hot path compiled with Cython when it can be, plain Python when it cannot.

The modules in ``dnsguard._compiled.MODULES`` are ordinary Python; Cython compiles the same
files (typed by the ``.pxd`` beside each) into extension modules. ``pyproject.toml`` asks for
Cython at build time; every extension is ``optional``, so a machine without a C compiler
installs and runs the same code interpreted (about 3x slower: bench/README.md). Set
``DNSGUARD_NO_COMPILE=1`` to skip compiling on purpose. Each compiled module's source digest
is written to ``dnsguard/_build.json``; at import, a module whose ``.py`` no longer matches
is loaded from source instead of running a stale build (dnsguard/_compiled.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
MODULES = [  # keep in step with dnsguard/_compiled.py
    "dnsguard.dns.name",
    "dnsguard.decode.packet",
    "dnsguard.domain",
    "dnsguard.detect.allowlist",
    "dnsguard.detect.policy",
    "dnsguard.detect.rules",
    "dnsguard.detect.model",
    "dnsguard.features.sketch",
    "dnsguard.features.payload",
    "dnsguard.features.window",
    "dnsguard.series.store",
    "dnsguard.series.monitor",
    "dnsguard.capture.pcapfile",
    "dnsguard.pipeline",
]
BUILD_INFO = ROOT / "dnsguard" / "_build.json"


def _source(mod: str) -> Path:
    return ROOT / (mod.replace(".", "/") + ".py")


def digest(mod: str) -> str:
    """The source a module is compiled from: its .py and its .pxd (as dnsguard/_compiled.py)."""
    h = hashlib.sha256(_source(mod).read_bytes())
    pxd = _source(mod).with_suffix(".pxd")
    if pxd.exists():
        h.update(pxd.read_bytes())
    return h.hexdigest()


class RecordingBuildExt(build_ext):
    """build_ext that records the source digest of each extension it actually built."""

    def run(self) -> None:
        self._built: dict[str, str] = {}
        super().run()
        if self._built:
            BUILD_INFO.write_text(json.dumps(self._built, indent=1, sort_keys=True) + "\n")
            # A non-editable build copies package files before build_ext: ship the record.
            out = Path(self.build_lib) / "dnsguard" / "_build.json"
            if out.parent.is_dir():
                out.write_text(BUILD_INFO.read_text())

    def build_extension(self, ext) -> None:
        super().build_extension(ext)
        self._built[ext.name] = digest(ext.name)


def extensions() -> list:
    if os.environ.get("DNSGUARD_NO_COMPILE"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:  # no Cython: the pure-Python package
        return []
    exts = cythonize(
        [str(_source(m).relative_to(ROOT)) for m in MODULES],
        compiler_directives={
            "language_level": 3,
            # Types come from the .pxd files only: Python annotations stay Python's.
            "annotation_typing": False,
            "boundscheck": True,  # hostile packets: every index stays checked
            "wraparound": True,
            "binding": False,
        },
        quiet=True,
    )
    for e in exts:
        e.optional = True  # no compiler: warn and keep the interpreted module
    return exts


setup(ext_modules=extensions(), cmdclass={"build_ext": RecordingBuildExt})
