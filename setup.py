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

import importlib.util
import json
import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _load_compiled_module():
    """dnsguard/_compiled.py by path (standard library only): its module list and digest."""
    spec = importlib.util.spec_from_file_location("_dnsguard_compiled",
                                                  ROOT / "dnsguard" / "_compiled.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_COMPILED = _load_compiled_module()
MODULES = list(_COMPILED.MODULES)
BUILD_INFO = ROOT / "dnsguard" / "_build.json"


_source = _COMPILED._source  # module name -> its .py
digest = _COMPILED._digest  # the .py and its .pxd, as checked at import


class RecordingBuildExt(build_ext):
    """build_ext that records the source digest of each extension it actually built."""

    def finalize_options(self) -> None:
        super().finalize_options()
        # pip runs build_ext without -j: compile the extensions side by side anyway, one per
        # CPU (they are independent; a 2-core sensor installs in about half the time).
        if not self.parallel:
            self.parallel = True  # setuptools: os.cpu_count() workers

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

    def copy_file(self, infile, outfile, *args, **kwargs):
        """An in-place build (``build_ext --inplace``, ``pip install -e .``) replaces each
        extension file by a rename, not by rewriting it: a process running from this tree
        keeps the file it mapped, which rewritten in place would change or shrink under it
        (garbage or SIGBUS in a running daemon)."""
        if not self.inplace:
            return super().copy_file(infile, outfile, *args, **kwargs)
        tmp = f"{outfile}.new"
        result = super().copy_file(infile, tmp, *args, **kwargs)
        if os.path.exists(tmp):  # not in a dry run
            os.replace(tmp, outfile)
        return outfile, result[1]


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
        nthreads=os.cpu_count() or 1,  # C generation in parallel too
    )
    for e in exts:
        e.optional = True  # no compiler: warn and keep the interpreted module
        if os.name == "posix":
            # Float arithmetic rounds as Python's does: no fused multiply-add, which GCC
            # uses by default where the target has it (aarch64, ppc64le, -march=native); the
            # compiled entropy must equal the interpreted one to the bit (test_compiled).
            e.extra_compile_args = ["-ffp-contract=off"]
    return exts


setup(ext_modules=extensions(), cmdclass={"build_ext": RecordingBuildExt})
