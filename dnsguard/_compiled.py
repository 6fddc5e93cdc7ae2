"""Which hot-path modules run compiled, and a guard against running a stale build.

setup.py compiles the modules below with Cython (same source, typed by the ``.pxd`` beside
each) and records each one's source digest in ``_build.json``. At ``import dnsguard`` this
module checks the record: a compiled module whose ``.py`` or ``.pxd`` has changed since (an edited
checkout not yet rebuilt) is loaded from its source instead, with a warning, so edits are
never silently ignored. ``DNSGUARD_PURE=1`` loads all of them from source (the interpreted
reference the compiled build is tested against: tests/test_compiled.py).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

MODULES = (  # setup.py compiles these (it reads this list)
    "dnsguard.dns.name",
    "dnsguard.decode.packet",
    "dnsguard.decode.fastpath",
    "dnsguard.domain",
    "dnsguard.detect.allowlist",
    "dnsguard.detect.policy",
    "dnsguard.detect.rules",
    "dnsguard.detect.model",
    "dnsguard.detect.judge",
    "dnsguard.features.namehash",
    "dnsguard.features.sketch",
    "dnsguard.features.payload",
    "dnsguard.features.window",
    "dnsguard.features.horizon",
    "dnsguard.features.measure",
    "dnsguard.series.store",
    "dnsguard.series.monitor",
    "dnsguard.capture.pcapfile",
    "dnsguard.capture.dnstapwire",
    "dnsguard.pipeline",
)
_PKG = Path(__file__).resolve().parent
ROUTED: set[str] = set()  # compiled modules loaded from source instead (stale, or PURE)
log = logging.getLogger(__name__)


def _source(name: str) -> Path:
    return _PKG.parent / (name.replace(".", "/") + ".py")


class NoCython:
    """What a compiled module's ``import cython`` falls back to when Cython is not installed
    (it then runs interpreted): the class decorators it uses, doing nothing."""

    compiled = False

    @staticmethod
    def cclass(c):
        return c

    no_gc = cclass


class _FromSource:
    """A meta-path finder that loads the named modules from their ``.py`` files."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in self.names:
            return None
        src = _source(fullname)
        loader = importlib.machinery.SourceFileLoader(fullname, str(src))
        return importlib.util.spec_from_file_location(fullname, src, loader=loader)


def _digest(name: str) -> str:
    """As setup.py records it: the module's .py, then its .pxd if it has one."""
    h = hashlib.sha256(_source(name).read_bytes())
    pxd = _source(name).with_suffix(".pxd")
    if pxd.exists():
        h.update(pxd.read_bytes())
    return h.hexdigest()


def _built() -> dict[str, str]:
    try:
        return json.loads((_PKG / "_build.json").read_text())
    except (OSError, ValueError):
        return {}


@functools.cache
def _extensions_in(folder: Path) -> frozenset[str]:
    """Module names of the extension modules in ``folder`` (listed once per process)."""
    return frozenset(p.name.split(".", 1)[0] for p in folder.iterdir()
                     if p.suffix in (".so", ".pyd"))


def _has_extension(name: str) -> bool:
    src = _source(name)
    return src.stem in _extensions_in(src.parent)


def _cimports(name: str) -> set[str]:
    """The hot-path modules ``name``'s ``.pxd`` cimports (its C-level dependencies)."""
    try:
        text = _source(name).with_suffix(".pxd").read_text()
    except OSError:
        return set()
    return {m for m in MODULES if f"from {m} cimport" in text}


def _cimporters(routed: set[str]) -> set[str]:
    """The compiled modules that cimport a routed one, directly or not: they must run from
    source too, since a compiled module refuses at import an extension type it cimports that
    comes as a Python class ("DnstapScanner size changed ...")."""
    deps = {m: _cimports(m) for m in MODULES if _has_extension(m)}
    out: set[str] = set()
    routed = routed & set(MODULES)
    grew = True
    while grew:
        grew = False
        for m, d in deps.items():
            if m not in routed and m not in out and d & (routed | out):
                out.add(m)
                grew = True
                log.warning("%s runs interpreted too: it uses a module that runs from source",
                            _source(m))
    return out


def install() -> set[str]:
    """Route stale (or, with DNSGUARD_PURE=1, all) compiled modules to their source; return
    the names routed."""
    pure = os.environ.get("DNSGUARD_PURE", "") not in ("", "0")
    built = {} if pure else _built()
    names = set()
    for name in MODULES:
        if not _has_extension(name):
            continue
        if pure:
            names.add(name)
            continue
        try:
            digest = _digest(name)
        except OSError:
            continue  # no source shipped: only the extension can run
        if built.get(name) != digest:
            names.add(name)
            log.warning("%s: the source changed since it was compiled; running it "
                        "interpreted (slower). Rebuild with: pip install -e .", _source(name))
    if not pure:
        # a module not compiled at all (its optional build failed) counts as from source too
        uncompiled = {m for m in MODULES if not _has_extension(m)}
        if names or uncompiled:
            names |= _cimporters(names | uncompiled)
    if names:
        sys.meta_path.insert(0, _FromSource(names))
    ROUTED.update(names)
    return names


def status() -> dict[str, bool]:
    """Module → whether it runs compiled, for the hot-path modules imported so far."""
    out = {}
    for name in MODULES:
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = not str(getattr(mod, "__file__", "")).endswith(".py")
    return out


def hot_path() -> str:
    """"compiled", "interpreted" or "partly compiled" (the run summary's ``hot_path``)."""
    st = status().values()
    if st and all(st):
        return "compiled"
    return "partly compiled" if any(st) else "interpreted"
