"""The command line on bad input: short, located error messages, the right exit status, never
a traceback."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest

from conftest import (
    ROOT,
    RULES_DIR,
    dns_query,
    eth,
    ng_epb,
    ng_idb,
    ng_shb,
    pcap_bytes,
    pcap_record,
    udp4,
)

FRAME = eth(udp4(dns_query("www.example.com")))


def dnsguard(*args, cwd=None) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "dnsguard", *map(str, args)], cwd=cwd or ROOT,
                       capture_output=True, text=True, timeout=60)
    assert "Traceback" not in p.stderr, p.stderr
    assert "Traceback" not in p.stdout
    return p


def lines_with(text: str, *needles: str) -> list[str]:
    return [ln for ln in text.splitlines() if all(n in ln for n in needles)]


# --- replay ------------------------------------------------------------------------------------
def test_replay_good_capture(tmp_path):
    path = tmp_path / "good.pcap"
    path.write_bytes(pcap_bytes([(1, 0, FRAME), (2, 0, FRAME)]))
    p = dnsguard("replay", path)
    assert p.returncode == 0, p.stderr
    assert lines_with(p.stderr, "2 packets")
    assert lines_with(p.stderr, "DNS: 2 queries")


def test_replay_non_capture_file(tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("not a capture\nat all\n")
    p = dnsguard("replay", "-q", path)
    assert p.returncode != 0
    errs = lines_with(p.stderr, str(path), "not a pcap or pcapng file")
    assert errs, p.stderr
    assert "not a capture" not in p.stderr  # the file's content is not echoed


def test_replay_missing_file(tmp_path):
    path = tmp_path / "missing.pcap"
    p = dnsguard("replay", "-q", path)
    assert p.returncode != 0
    assert lines_with(p.stderr, str(path), "cannot open"), p.stderr


def test_replay_good_and_bad_file_reads_the_good_one(tmp_path):
    good, bad = tmp_path / "good.pcap", tmp_path / "bad.pcap"
    good.write_bytes(pcap_bytes([(1, 0, FRAME)]))
    bad.write_bytes(b"\x00" * 100)
    p = dnsguard("replay", good, bad)
    assert p.returncode == 1  # some input could not be read
    assert lines_with(p.stderr, "DNS: 1 queries")
    assert lines_with(p.stderr, "unreadable:", str(bad))


def test_replay_truncated_capture(tmp_path):
    path = tmp_path / "cut.pcap"
    whole = pcap_bytes([(1, 0, FRAME), (2, 0, FRAME)])
    path.write_bytes(whole + pcap_record(3, 0, FRAME)[:30])
    p = dnsguard("replay", path)
    assert p.returncode == 0, p.stderr
    damaged = lines_with(p.stderr, "damaged:", str(path))
    assert len(damaged) == 1, p.stderr
    assert f"at byte {len(whole)}" in damaged[0]
    assert lines_with(p.stderr, "DNS: 2 queries")


def test_replay_truncated_gzip_capture(tmp_path):
    frames = [eth(udp4(dns_query(f"{i:05d}.example.com"))) for i in range(300)]
    gz = gzip.compress(pcap_bytes([(i, 0, f) for i, f in enumerate(frames)]))
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(gz[:len(gz) * 2 // 3])
    p = dnsguard("replay", path)
    assert p.returncode == 0, p.stderr
    assert lines_with(p.stderr, "damaged:", str(path), "at byte")


def test_replay_unknown_link_type_pcap(tmp_path):
    path = tmp_path / "wifi.pcap"
    path.write_bytes(pcap_bytes([(1, 0, FRAME)], linktype=105))
    p = dnsguard("replay", "-q", path)
    assert p.returncode != 0
    assert lines_with(p.stderr, str(path), "unsupported link type 105"), p.stderr


def test_replay_unknown_link_type_pcapng(tmp_path):
    path = tmp_path / "usb.pcapng"
    path.write_bytes(ng_shb() + ng_idb(189) + ng_epb(0, 1, FRAME) + ng_epb(0, 2, FRAME))
    p = dnsguard("replay", path)
    assert p.returncode != 0
    assert lines_with(p.stderr, str(path), "unsupported link type 189"), p.stderr


# --- rules check -------------------------------------------------------------------------------
BAD_RULE = """\
rules:
  - id: bad-rule
    description: a rule with a typo in a feature name
    severity: high
    scope: domain
    when:
      - distinct_names >= 8
      - distinct_nmaes >= 3
"""


def test_rules_check_invalid_rules_file(tmp_path):
    (tmp_path / "rules.yaml").write_text(BAD_RULE)
    p = dnsguard("rules", "check", tmp_path)
    assert p.returncode == 1
    where = f"{tmp_path / 'rules.yaml'}:8: rules[0].when[1]"
    errs = lines_with(p.stderr, where, "distinct_nmaes")
    assert len(errs) == 1, p.stderr


def test_rules_check_yaml_syntax_error(tmp_path):
    (tmp_path / "a.yaml").write_text("rules:\n  - id: x\n    when: [unclosed\n")
    p = dnsguard("rules", "check", tmp_path)
    assert p.returncode == 1
    assert lines_with(p.stderr, str(tmp_path / "a.yaml") + ":", "YAML"), p.stderr


@pytest.mark.parametrize("what", ["missing", "empty"])
def test_rules_check_no_rules(tmp_path, what):
    d = tmp_path / "rules"
    if what == "empty":
        d.mkdir()
    p = dnsguard("rules", "check", d)
    assert p.returncode == 1
    assert lines_with(p.stderr, str(d)), p.stderr


def test_rules_check_valid_dir():
    p = dnsguard("rules", "check", RULES_DIR)
    assert p.returncode == 0, p.stderr
    assert "OK" in p.stdout


def test_replay_with_invalid_rules_does_not_start(tmp_path):
    (tmp_path / "rules.yaml").write_text(BAD_RULE)
    cap = tmp_path / "good.pcap"
    cap.write_bytes(pcap_bytes([(1, 0, FRAME)]))
    p = dnsguard("replay", "--rules", tmp_path, cap)
    assert p.returncode != 0
    assert lines_with(p.stderr, "rules[0].when[1]")
