"""The DNS transaction log (``--dns-log``, issue #14): EVE ``dns`` records of every message,
the same Community ID as the alerts (the pivot), rate-bounded with the excess counted, and
reopened after rotation. Cost: ~5 s."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from conftest import ROOT, dns_query, eth, udp4
from dnsguard.dns.message import parse
from dnsguard.output.dnslog import DnsLog

MIXED = ROOT / "pcaps" / "mixed_iodine_and_benign.pcap"


def test_replay_writes_eve_dns_records_an_alert_pivots_to(tmp_path):
    log, summ = tmp_path / "dns.json", tmp_path / "s.json"
    p = subprocess.run([sys.executable, "-m", "dnsguard", "replay", "-q", "--dns-log", log,
                        "--summary-json", summ, MIXED], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    alerts = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    recs = [json.loads(ln) for ln in log.read_text().splitlines()]
    s = json.loads(summ.read_text())
    assert len(recs) == s["queries"] + s["responses"] == s["dns_log"]["written"]
    assert {r["event_type"] for r in recs} == {"dns"}
    assert {r["dns"]["type"] for r in recs} == {"query", "answer"}
    q = next(r for r in recs if r["dns"]["type"] == "query")
    assert set(q) >= {"timestamp", "src_ip", "src_port", "dest_ip", "dest_port", "proto",
                      "community_id"} and q["dns"]["rrname"] and q["dns"]["rrtype"]
    # The pivot: an alert's flow is in the log, its queries and their answers.
    cids = {a["community_id"] for a in alerts if a["community_id"]}
    assert cids, alerts
    for cid in cids:
        kinds = {r["dns"]["type"] for r in recs if r["community_id"] == cid}
        assert kinds == {"query", "answer"}, cid


def test_rate_bound_counts_what_it_drops():
    wire = dns_query("www.example.com")
    m = parse(wire)
    out = io.StringIO()
    log = DnsLog(stream=out, rate=10.0, burst=20)
    for i in range(100):
        log.message(100.0, b"\x0a\0\0\x01", b"\x0a\0\0\x35", 40000 + i, 53, False, m)
    for i in range(20):  # one second later: ten more tokens
        log.message(101.0, b"\x0a\0\0\x01", b"\x0a\0\0\x35", 41000 + i, 53, False, m)
    log.close()
    assert log.written == 30 and log.dropped == 90  # 20 at once, then 10 a second
    assert len(out.getvalue().splitlines()) == 30


def test_reopen_after_rotation(tmp_path):
    path = tmp_path / "dns.json"
    m = parse(dns_query("a.example.com"))
    log = DnsLog(str(path))
    log.message(1.0, b"\x0a\0\0\x01", b"\x0a\0\0\x35", 40000, 53, False, m)
    path.rename(tmp_path / "dns.json.1")  # logrotate
    log.reopen()
    log.message(2.0, b"\x0a\0\0\x01", b"\x0a\0\0\x35", 40001, 53, True, m)
    log.close()
    old = (tmp_path / "dns.json.1").read_text().splitlines()
    new = path.read_text().splitlines()
    assert len(old) == 1 and len(new) == 1 and json.loads(new[0])["proto"] == "TCP"
    assert eth(udp4(dns_query("x")))  # the helpers build real frames (sanity)


def test_run_takes_the_dns_log_from_the_file_or_the_command_line(tmp_path):
    from dnsguard import cli
    from dnsguard import config as dconf

    p = tmp_path / "c.yaml"
    p.write_text("interfaces: [lo]\ndns_log: /var/log/dnsguard/dns.json\n")
    assert dconf.load(p).dns_log == "/var/log/dnsguard/dns.json"
    args = cli.build_parser().parse_args(["run", "-c", str(p), "--dns-log", "/x/dns.json"])
    assert cli._run_config(args).dns_log == "/x/dns.json"
    p.write_text("dns_log: 7\n")
    with pytest.raises(dconf.SourceError, match="dns_log"):
        dconf.load(p)
