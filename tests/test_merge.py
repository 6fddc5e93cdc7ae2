"""Window summaries merge across processes (features/merge.py): a key's traffic measured in
two parts and merged gives the features of the whole."""

from __future__ import annotations

import random

import pytest

from dnsguard.domain import RegisteredDomains
from dnsguard.features import window as win
from dnsguard.features.merge import merge_counter, merge_stats
from dnsguard.features.payload import NameAnalyzer
from dnsguard.features.sketch import DistinctCounter


@pytest.mark.parametrize("n", [50, 3000])
def test_counters_merge_to_the_count_of_the_union(n: int) -> None:
    whole, a, b = DistinctCounter(128), DistinctCounter(128), DistinctCounter(128)
    for i in range(n):
        item = f"n{i}.example"
        whole.add(item)
        (a if i % 3 else b).add(item)
        if i % 7 == 0:  # some items seen by both parts
            a.add(item)
            b.add(item)
    merge_counter(a, b)
    assert len(a) == len(whole) and a.exact == whole.exact
    if not whole.exact:
        assert a._regs == whole._regs


@pytest.mark.parametrize("scope", ["domain", "client"])
@pytest.mark.parametrize("queries", [60, 900])
def test_a_window_measured_in_two_parts_merges_to_the_whole(scope: str, queries: int) -> None:
    names = NameAnalyzer(RegisteredDomains(64), 4096)
    rng = random.Random(queries)
    multi = scope == "domain"
    whole = win.KeyStats(0.0, 128, multi)
    parts = [win.KeyStats(0.0, 128, multi), win.KeyStats(0.0, 128, multi)]
    for i in range(queries):
        label = "".join(rng.choice("abcdefghij0123456789") for _ in range(rng.randint(4, 40)))
        nf = names.analyze((label.encode(), b"t", rng.choice([b"example", b"other"]), b"com"))
        client = bytes([10, 0, 0, rng.randrange(20)])
        ts = i * 0.1
        part = parts[hash(nf.name) & 1]  # names split between the parts (none in both)
        qtype, down, rcode = rng.choice([1, 16, 10, 28]), rng.randrange(200), rng.choice([0, 3])
        for st in (whole, part):
            st.last = ts
            win.note_query(st, nf, qtype, client, b"\x01\x02\x03\x04")
            if scope == "client":
                win.note_client_domain(st, nf)
            if i % 2:
                win.note_response(st, down, rcode)
    merged = merge_stats(parts[0], parts[1])
    fw, fm = win.features(whole, scope), win.features(merged, scope)
    assert fw.keys() == fm.keys()
    for k in fw:
        if k == "new_label_share":
            # A bound, documented: a label fresh in both parts counts in both, and each
            # part's bitmap is emptier than the whole's (fewer collisions).
            assert fw[k] <= fm[k] <= fw[k] + 0.1, (fw[k], fm[k])
            continue
        assert fm[k] == pytest.approx(fw[k], rel=1e-12), k
    assert merged.qtypes == whole.qtypes and merged.suffix == whole.suffix
