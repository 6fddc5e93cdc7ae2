"""Several workers detect exactly what one process detects (dnsguard.workers).

A capture is split over N in-process workers as the kernel's fanout program would split it
(both directions of an address pair to one worker), the workers' DNS observations are merged
in frame order into the judge, and every alert passes one funnel. The alerts — every field —
must equal those of one Pipeline fed the whole capture. A control (N independent pipelines
without the merge) shows what the merge is for: a tunnel whose queries come from many clients
spread over the workers is missed when each worker judges its share of the domain.

Rules only (the model learns online, in an order that differs between the two layouts: see
docs/scaling.md). Cost: ~15 s interpreted (~40 s with the corpus) on a loaded machine.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from dnsguard.capture.fanout import shard_of
from dnsguard.capture.pcapfile import CaptureReader, open_capture
from dnsguard.detect.rules import RuleSet, load_dir
from dnsguard.pipeline import Pipeline
from dnsguard.settings import Settings
from dnsguard.workers import Merger, ShardedPipelines

ROOT = Path(__file__).resolve().parents[1]
PCAPS = sorted((ROOT / "pcaps").glob("*.pcap"))
CORPUS = ROOT.parent / "shared" / "corpus"


def _settings() -> Settings:
    s = Settings()
    s.use_model = False
    return s


def frames(path: Path) -> list[tuple]:
    return [(ts, lt, bytes(d), wl) for ts, lt, d, wl in
            CaptureReader(open_capture(path), path.name)]


def single(fr: list[tuple], rs: RuleSet) -> list[dict]:
    out: list[dict] = []
    p = Pipeline(_settings(), rs, out.append)
    for f in fr:
        p.feed(*f)
    p.finish()
    return out


def sharded(fr: list[tuple], rs: RuleSet, n: int) -> tuple[list[dict], ShardedPipelines]:
    out: list[dict] = []
    p = ShardedPipelines(_settings(), rs, out.append, n)
    for f in fr:
        p.feed(*f)
    p.finish()
    return out, p


def unmerged(fr: list[tuple], rs: RuleSet, n: int) -> list[dict]:
    """The control: N pipelines, each judging only its own share."""
    out: list[dict] = []
    ps = [Pipeline(_settings(), rs, out.append) for _ in range(n)]
    for f in fr:
        ps[shard_of(f[1], f[2], n)].feed(*f)
    for p in ps:
        p.finish()
    return out


def spread_clients(fr: list[tuple], clients: int) -> list[tuple]:
    """The same exchanges from ``clients`` different addresses (10.77.0.x, by DNS id: a query
    and its response keep one client); IPv4 header checksums recomputed."""
    out = []
    for ts, lt, d, wl in fr:
        b = bytearray(d)
        assert lt == 1 and b[12:14] == b"\x08\x00"
        ihl = (b[14] & 15) * 4
        sport, dport = struct.unpack_from("!HH", b, 14 + ihl)
        dnsid = struct.unpack_from("!H", b, 14 + ihl + 8)[0]
        c = bytes([10, 77, 0, 1 + dnsid % clients])
        if dport == 53:
            b[26:30] = c
        elif sport == 53:
            b[30:34] = c
        b[24:26] = b"\0\0"
        h = sum(struct.unpack_from("!10H", b, 14))
        h = (h & 0xFFFF) + (h >> 16)
        b[24:26] = struct.pack("!H", ~((h & 0xFFFF) + (h >> 16)) & 0xFFFF)
        out.append((ts, lt, bytes(b), wl))
    return out


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_dir(_settings().rules)


@pytest.mark.parametrize("path", PCAPS, ids=[p.name for p in PCAPS])
def test_workers_equal_one_process_on_each_capture(path, rules):
    fr = frames(path)
    want = single(fr, rules)
    for n in (2, 3):
        got, sp = sharded(fr, rules, n)
        assert got == want, (n, [(a["scope"], a["domain"]) for a in got],
                             [(a["scope"], a["domain"]) for a in want])
        assert sum(sp.shares) == len(fr)
        # Every DNS message a worker measured reached the judge.
        assert sp.judge.observed == sum(w.counters["queries"] + w.counters["responses"]
                                        for w in sp.workers) > 0


def test_a_tunnel_from_many_clients_over_workers_is_detected_as_in_one_process(rules):
    """iodine's first 24 frames, its queries from 64 clients: only the domain scope sees
    enough of it (no client has more than a few queries). Without the message rules (which
    fire on one name, in any layout), one process alerts on the domain; so do 2 and 3
    workers, with the same record; each worker alone sees too little."""
    rs = RuleSet([r for r in rules.rules if r.scope != "message"], rules.allowlist)
    fr = spread_clients(frames(ROOT / "pcaps" / "iodine_null.pcap"), 64)[:24]
    want = single(fr, rs)
    assert want and {(a["scope"], a["domain"]) for a in want} == {("domain",
                                                                   "t1.tunnel.example")}
    for n in (2, 3):
        got, sp = sharded(fr, rs, n)
        assert min(sp.shares) > 0, sp.shares  # the clients really are spread
        assert got == want
        assert unmerged(fr, rs, n) == []  # what the merge is for


def test_one_funnel_one_alert_per_key(rules):
    """With the message rules, every worker's share of the spread tunnel fires: without one
    policy over all workers each would alert (and escalate) on its own; with it, the alerts
    of one process, each naming the alert it escalates as one process would."""
    fr = spread_clients(frames(ROOT / "pcaps" / "dns2tcp_txt.pcap"), 64)
    want = single(fr, rules)
    got, _ = sharded(fr, rules, 3)
    assert got == want and want
    assert len(unmerged(fr, rules, 3)) > len(want)


# Captures where the split matters: several address pairs, a raw-UDP tunnel whose DNS
# handshake went through the resolver (another pair: the flow alert's domain comes from the
# judge), a tunnel whose names the fast path finds in the name cache.
CORPUS_FILES = ["korving_dnscat2_c2_bind9.pcap", "slips_benign_dnsbl_spamhaus_lookups.pcap",
                "elastic_iodine.pcap", "raaaaag_iodine_without_r_rawudp.pcapng",
                "raaaaag_ozymandns.pcapng"]


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_workers_equal_one_process_on_corpus_captures(name, rules):
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"{path} absent (the shared corpus)")
    fr = frames(path)
    want = single(fr, rules)
    for n in (2, 3):
        got, _ = sharded(fr, rules, n)
        assert got == want


def test_merger_orders_streams_and_counts_late_items():
    m = Merger(3)
    m.push(0, [(1, "a"), (5, "e")], 5)
    m.push(1, [(2, "b")], 2)
    assert list(m.ready()) == []  # stream 2 has said nothing yet
    m.push(2, [(3, "c")], 4)
    assert list(m.ready()) == ["a", "b"]  # 3 waits for stream 1 (at 2)
    m.push(1, [], 6)
    assert list(m.ready()) == ["c"]  # 5 waits for stream 2 (at 4)
    m.push(2, [(4.5, "d")], 7)
    assert list(m.ready()) == ["d", "e"]
    m.push(1, [(3, "late")], 8)  # below what was released: kept, counted
    assert list(m.ready()) == ["late"] and m.late == 1
    assert m.pending() == 0
