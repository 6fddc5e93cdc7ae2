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
import sys
import time
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
_T0 = time.monotonic()
# What compiling costs (measured: 100-130 s on 2 cores one module at a time; 294 s with
# two at a time on a machine shared by several builds).
EXPECTED = "about 2 minutes on two idle cores"


def say(msg: str) -> None:
    """A line the installing user sees. pip captures a build's output (shown with ``-v`` or
    on failure), so the line also goes to the terminal itself when there is one: a silent
    two-minute build looks like a hang."""
    line = f"dnsguard: {msg}\n"
    sys.stderr.write(line)
    sys.stderr.flush()
    if not sys.stderr.isatty():
        try:
            with open("/dev/tty", "w") as tty:
                tty.write(line)
        except OSError:  # no controlling terminal (CI, a service): stderr only
            pass


class RecordingBuildExt(build_ext):
    """build_ext that records the source digest of each extension it actually built."""

    def finalize_options(self) -> None:
        super().finalize_options()
        # pip runs build_ext without -j: compile the extensions side by side anyway, one per
        # CPU (they are independent; a 2-core sensor installs in about half the time).
        # A number, not setuptools' True ("one per CPU"): the install message says it.
        if not self.parallel or self.parallel is True:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        self._built: dict[str, str] = {}
        if self.extensions:
            say(f"compiling {len(self.extensions)} hot-path modules with Cython and the C "
                f"compiler ({EXPECTED}, {self.parallel} at a time; DNSGUARD_NO_COMPILE=1 "
                "installs the interpreted path in seconds, README.md)")
        super().run()
        if self.extensions:
            n = len(self._built)
            say(f"compiled {n} of {len(self.extensions)} modules in "
                f"{time.monotonic() - _T0:.0f} s" + ("" if n == len(self.extensions) else
                                                     "; the others run interpreted"))
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


# Whether this run builds (pip also runs setup.py for metadata: say things once, here).
_BUILDING = bool({"build", "build_ext", "bdist_wheel", "editable_wheel", "install",
                  "develop"} & set(sys.argv[1:]))


def _note(msg: str) -> None:
    if _BUILDING:
        say(msg)


def extensions() -> list:
    if os.environ.get("DNSGUARD_NO_COMPILE"):
        _note("DNSGUARD_NO_COMPILE is set: not compiling; the hot path runs interpreted "
              "(about 3x slower, bench/README.md)")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:  # no Cython: the pure-Python package
        _note("Cython is not available: not compiling; the hot path runs interpreted")
        return []
    _note(f"translating {len(MODULES)} hot-path modules to C with Cython")
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
