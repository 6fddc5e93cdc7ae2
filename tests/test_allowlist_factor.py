"""The allowlist factor a window is judged with is the same on every path: on a packet, when
the next window starts, at the end of input (``finish``) and when a quiet key is swept
(``sweep``). It is the factor of the window's last packet (``detect.judge``).

Before the split into measurement and judgment, a window's last evaluation at ``finish()`` or
``sweep()`` looked the factor up again by registered domain only: a ``client:`` or
``resolver:`` entry with ``action: raise`` was ignored there, and a window held to 10x
thresholds on every packet alerted at 1x when it closed."""

from __future__ import annotations

import pytest

from conftest import dns_query, eth, udp4
from dnsguard.detect.rules import load_dir
from dnsguard.pipeline import Pipeline
from dnsguard.settings import Settings

RULES = """
rules:
  - id: many-queries
    description: many queries to one domain
    severity: low
    scope: domain
    when:
      - queries >= 10
allowlist:
  - {kind}: {addr}
    action: raise
    factor: 10
    source: the test
"""


def _run(tmp_path, kind: str, close: str, n: int) -> list[dict]:
    addr = "192.0.2.10" if kind == "client" else "198.51.100.53"
    (tmp_path / "r.yaml").write_text(RULES.format(kind=kind, addr=addr))
    s = Settings(use_model=False, series=False, window=60.0)
    alerts: list[dict] = []
    p = Pipeline(s, load_dir(tmp_path), alerts.append)
    for i in range(n):
        f = eth(udp4(dns_query(f"w{i}.example.com", qid=i)))
        p.feed(1000.0 + i * 0.1, 1, f, len(f))
    if close == "finish":
        p.finish()
    elif close == "sweep":
        p.sweep(2000.0)
    else:  # the next window of the same key starts
        f = eth(udp4(dns_query("next.example.com")))
        p.feed(2000.0, 1, f, len(f))
    return alerts


@pytest.mark.parametrize("kind", ["client", "resolver"])
@pytest.mark.parametrize("close", ["finish", "sweep", "next window"])
def test_a_raised_window_is_not_judged_at_factor_one_when_it_closes(tmp_path, kind,
                                                                    close) -> None:
    # 37 queries: past the rule's 10, short of the raised 100. Evaluated after each of the
    # first 32 (due), then next at 40: the window's last evaluation sees new evidence.
    assert _run(tmp_path, kind, close, 37) == []


@pytest.mark.parametrize("close", ["finish", "sweep"])
def test_a_raised_window_past_the_raised_threshold_still_alerts(tmp_path, close) -> None:
    alerts = _run(tmp_path, "client", close, 120)
    assert [a["detectors"] for a in alerts] == [["many-queries"]]
