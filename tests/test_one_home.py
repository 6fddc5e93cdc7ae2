"""One home per concept (docs/architecture.md): query-type classes come from
``dns/rdatatype.py``; the feature catalog lists exactly the features the code produces."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dnsguard import metrics
from dnsguard.dns import rdatatype
from dnsguard.domain import RegisteredDomains
from dnsguard.features import catalog
from dnsguard.features import window as win
from dnsguard.features.payload import NameAnalyzer
from dnsguard.series import store

PKG = Path(__file__).resolve().parents[1] / "dnsguard"


def test_query_type_classes_come_from_rdatatype() -> None:
    assert win.ORDINARY_QTYPES is rdatatype.ORDINARY
    assert win.CARRIER_QTYPES is rdatatype.CARRIER
    assert rdatatype.buckets(rdatatype.MIX_ALERT) == win.MIX_TYPES
    assert rdatatype.buckets(rdatatype.MIX_METRICS) == metrics.QTYPE_BUCKETS
    assert store.QTYPE_NAMES[:-2] == tuple(rdatatype.to_text(t) for t in rdatatype.MIX_SERIES)
    for t in range(1, 300):
        assert win._qtype_info(t)[:2] == (int(not rdatatype.is_ordinary(t)),
                                          int(rdatatype.is_carrier(t)))


def test_no_other_module_spells_out_query_type_numbers() -> None:
    """A type only rdatatype names by number (PRIVATE, 65399; NULL next to KEY) appearing
    elsewhere means a second copy of a query-type class."""
    pat = re.compile(r"\b65399\b|\b10\s*:\s*\"NULL\"|\{\s*16\s*,\s*10\b")
    offenders = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                 if p.name != "rdatatype.py" and pat.search(p.read_text())]
    assert offenders == []


def _stats() -> win.KeyStats:
    names = NameAnalyzer(RegisteredDomains(64), 64)
    st = win.KeyStats(0.0, 128)
    nf = names.analyze((b"aGVsbG8gd29ybGQ", b"t", b"example", b"com"))
    win.note_query(st, nf, 16, b"\x01\x02\x03\x04", b"\x05\x06\x07\x08")
    win.note_client_domain(st, nf)
    win.note_response(st, 40, 0)
    return st


@pytest.mark.parametrize("scope", ["domain", "client_domain", "client", "flow"])
def test_catalog_equals_the_features_produced(scope: str) -> None:
    assert set(win.features(_stats(), scope)) == set(catalog.for_scope(scope))


def test_catalog_equals_the_message_features_produced() -> None:
    nf = NameAnalyzer(RegisteredDomains(64), 64).analyze((b"www", b"example", b"com"))
    produced = set(nf.fdict()) | {"qtype", "qtype_rare"}  # the judge adds the type's two
    assert produced == set(catalog.for_scope("message"))
