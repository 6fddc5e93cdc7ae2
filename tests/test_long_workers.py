"""The long horizon with ``workers`` > 1 (dnsguard.workers): the client → domain keys live in
the workers, the judge checkpoints them with its own in the single process's file, and a
restart resumes them in whichever worker the client's frames reach. In one process
(``ShardedPipelines``, split as the kernel's fanout would split it); the live daemon's form is
tests/test_workers_netns.py. ~2 s."""

from __future__ import annotations

import random

import pytest

from conftest import RULES_DIR, dns_query, eth, udp4
from dnsguard.detect.rules import load_dir
from dnsguard.features import horizon as hz
from dnsguard.pipeline import Pipeline
from dnsguard.settings import Settings
from dnsguard.workers import ShardedPipelines

ZONE = "poll.beacon-sync.net"
CLIENTS = [f"10.77.0.{i}" for i in (1, 2, 3, 4, 5, 6)]
T0 = 1_700_000_000.0


def beacon(start: int, n: int) -> list[tuple]:
    """Each client checks in every 60 s (± 5 s) under a new name (TXT), ``n`` check-ins from
    the ``start``-th: a sleeping implant on six hosts."""
    rng = random.Random(start)
    out = []
    for k, c in enumerate(CLIENTS):
        for i in range(start, start + n):
            ts = T0 + k * 7.0 + i * 60.0 + (rng.uniform(-5, 5) if i else 0.0)
            name = f"{k:02x}{0x5eed:04x}-{i:x}.{ZONE}"
            fr = eth(udp4(dns_query(name, "TXT", qid=(k * 1000 + i) & 0xFFFF), src=c))
            out.append((ts, 1, fr, len(fr)))
    out.sort(key=lambda f: f[0])
    return out


def settings(tmp_path) -> Settings:
    return Settings(use_model=False, series=False, long_state=tmp_path / "long.json.gz")


@pytest.fixture(scope="module")
def rules():
    return load_dir(RULES_DIR)


def run(pipe, frames) -> None:
    for f in frames:
        pipe.feed(*f)


def pair_alerts(alerts: list) -> list:
    return [a for a in alerts if a["scope"] == "long_client_domain"]


@pytest.mark.parametrize("before,after", [(2, 2), (1, 3), (3, 1)])
def test_restart_resumes_the_workers_client_domain_keys(tmp_path, rules, before, after):
    """20 check-ins per client, a restart, 15 more: ``cache-busting-beacon`` (30 check-ins)
    fires after the restart with ``first_seen`` from before it, whichever layout wrote the
    checkpoint and whichever reads it (the one process's file and format; the clients land
    on other workers when their number changes)."""
    alerts: list = []

    def make(n):
        s = settings(tmp_path)
        return Pipeline(s, rules, alerts.append) if n == 1 else ShardedPipelines(
            s, rules, alerts.append, n)

    p = make(before)
    run(p, beacon(0, 20))
    p.finish()
    p.close()
    assert not pair_alerts(alerts), alerts
    if before > 1:
        assert all(p.shares), p.shares  # the clients are spread over the workers
    g = hz.Horizon()
    assert hz.load(g, tmp_path / "long.json.gz") > 0
    assert {(c, d) for (c, d) in g.pairs if d == "beacon-sync.net"} and len(g.pairs) == 6
    q = make(after)
    run(q, beacon(20, 15))
    q.finish()
    a = pair_alerts(alerts)
    assert a and a[0]["detectors"] == ["cache-busting-beacon"], alerts
    assert a[0]["first_seen"] < "2023-11-14T22:14:00", a[0]  # the first half's first query
    # Both halves: more check-ins and a longer span than the second half's 15 minutes.
    assert a[0]["stats"]["queries"] >= 30 and a[0]["stats"]["span"] > 15 * 60
    # The control: without the checkpoint the second half alone stays below the rule.
    (tmp_path / "long.json.gz").unlink()
    alerts.clear()
    r = make(after)
    run(r, beacon(20, 15))
    r.finish()
    assert not pair_alerts(alerts)


def test_the_checkpoint_keeps_every_workers_latest_copy(tmp_path, rules):
    """A key restored into every worker and claimed by one: the checkpoint keeps that
    worker's copy, not another's stale one; keys no worker saw again are kept too."""
    s = settings(tmp_path)
    p = ShardedPipelines(s, rules, lambda a: None, 2)
    run(p, beacon(0, 10))
    p.finish()
    p.close()
    q = ShardedPipelines(s, rules, lambda a: None, 3)
    assert all(w.measure.restored and len(w.measure.restored) == 6 for w in q.workers)
    only = [f for f in beacon(10, 5) if f[2][26:30] == bytes([10, 77, 0, 1])]
    run(q, only)  # one client comes back
    q.finish()
    q.close()
    assert sum(w.measure.claimed for w in q.workers) == 1
    # A day after the newest restored key every one would start afresh: the workers stop
    # looking for them.
    m = next(w.measure for w in q.workers if w.measure.restored)
    m._claim(T0 + 10 * 60 + 86400 + 1, bytes([10, 77, 0, 2]), "beacon-sync.net")
    assert m.restored is None
    g = hz.Horizon()
    hz.load(g, tmp_path / "long.json.gz")
    back = [r for (c, _), r in g.pairs.items() if c == bytes([10, 77, 0, 1])]
    assert len(back) == 1 and back[0].q_total == 15
    assert len(g.pairs) == 6 and all(r.q_total == 10 for (c, _), r in g.pairs.items()
                                     if c != bytes([10, 77, 0, 1]))
