"""Lab-made benign traffic through a real Unbound must raise no alert (issue #12).

A short generation with the CI seed (9001, never used for training: lab/generate.py), 14
clients of every role, 3 simulated minutes at 10x, captured at the client↔resolver link,
time-rescaled, then replayed by the CLI with default settings and with rules alone. Needs
root and network namespaces (skips otherwise); costs ~35 s.

Any alert is a detection bug (lab/FINDINGS.md lists the ones this traffic raised before #12
parts 2-4: identifier-shaped names, service labels, sustained flow evidence, the model's
support check): the test fails on any alert, with or without the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dns.message", reason="the lab needs dnspython (the [test] extra)")

from lab.netns import require_root  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CI_SEED = 9001


def _replay(pcap: Path, tmp: Path, *extra: str) -> tuple[list[dict], dict]:
    summary = tmp / f"summary{len(extra)}.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cp = subprocess.run([sys.executable, "-m", "dnsguard", "replay", "-q", "--summary-json",
                         str(summary), *extra, str(pcap)], capture_output=True, text=True,
                        timeout=120, cwd=REPO, env=env)
    assert cp.returncode == 0, cp.stderr[-2000:]
    alerts = [json.loads(line) for line in cp.stdout.splitlines() if line.strip()]
    return alerts, json.loads(summary.read_text())


def _describe(a: dict) -> str:
    return (f"{a['severity']} {a['scope']} {a['domain']} src={a['src_ip']} "
            f"detectors={a['detectors']} samples={a['samples'][:2]}")


@pytest.mark.netns
def test_benign_lab_traffic_raises_no_alert(tmp_path: Path):
    why = require_root()
    if why:
        pytest.skip(why)
    from lab.generate import generate_one
    entry = generate_one(tmp_path, CI_SEED, hours=180 / 3600, speed=10, clients=14,
                         log=lambda *_: None)
    pcap = tmp_path / entry["file"]
    assert entry["kernel_drops"] == 0
    assert entry["queries_sent"] > 1000, entry["query_counts"]
    counts = entry["query_counts"]
    for t in ("A", "AAAA", "PTR", "TXT", "SRV", "MX", "HTTPS"):
        assert counts.get(t, 0) > 0, f"no {t} queries: {counts}"
    assert set(entry["roles"]) == {"mail", "ad_workstation", "laptop", "k8s_node", "iot",
                                   "web_server", "monitoring"}

    rules_only, summary = _replay(pcap, tmp_path, "--no-model")
    assert summary["packets"] == entry["packets"]
    default, _ = _replay(pcap, tmp_path)
    if rules_only or default:
        text = ("rules alone:\n" + "\n".join(map(_describe, rules_only)) +
                "\ndefault settings (rules and model):\n" + "\n".join(map(_describe, default)))
        pytest.fail(f"alerts on benign lab traffic (a detection bug):\n{text}")
