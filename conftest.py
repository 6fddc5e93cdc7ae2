"""Root pytest configuration: the doctests of compiled modules.

A module that runs compiled (setup.py, dnsguard/_compiled.py) is an extension module, and
pytest refuses to collect doctests from a ``.py`` whose module came from elsewhere. Those
modules' doctests run interpreted instead, in tests/test_compiled.py (DNSGUARD_PURE=1).
"""

from __future__ import annotations

from dnsguard import _compiled

# The modules running compiled: those with an extension that _compiled.install() did not
# route to source (with DNSGUARD_PURE=1 it routes all of them, and nothing is skipped).
_SKIP = {str(_compiled._source(m)) for m in _compiled.MODULES
         if _compiled._has_extension(m) and m not in _compiled.ROUTED}


def pytest_ignore_collect(collection_path, config):
    return True if str(collection_path) in _SKIP else None
