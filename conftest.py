"""Root pytest configuration: the doctests of compiled modules.

A module that runs compiled (setup.py, dnsguard/_compiled.py) is an extension module, and
pytest refuses to collect doctests from a ``.py`` whose module came from elsewhere. Those
modules' doctests run interpreted instead, in tests/test_compiled.py (DNSGUARD_PURE=1).
"""

from __future__ import annotations

import os

from dnsguard import _compiled


def _compiled_sources() -> set[str]:
    if os.environ.get("DNSGUARD_PURE", "") not in ("", "0"):
        return set()
    return {str(_compiled._source(m)) for m in _compiled.MODULES
            if _compiled._has_extension(m) and m not in _compiled.ROUTED}


_SKIP = _compiled_sources()


def pytest_ignore_collect(collection_path, config):
    return True if str(collection_path) in _SKIP else None
