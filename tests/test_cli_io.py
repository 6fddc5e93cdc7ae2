"""Where a command reads and writes (issue #14, item 3): output paths checked before any work
(one line naming the path, no traceback), captures from standard input and pipes (pcap,
pcapng, gzip: nothing seeks), and ``replay DIR`` as ``eval`` reads a directory.

Cost: about a dozen short subprocess runs on the bundled pcaps (~15 s interpreted)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, dns_query, eth, ng_epb, ng_idb, ng_shb, pcap_bytes, udp4

PCAPS = ROOT / "pcaps"
MIXED = PCAPS / "mixed_iodine_and_benign.pcap"


def dnsguard(*args, stdin=None, shell: str | None = None) -> subprocess.CompletedProcess:
    if shell is not None:  # process substitution needs bash
        cmd = ["bash", "-c", shell.replace("DNSGUARD", f"{sys.executable} -m dnsguard")]
    else:
        cmd = [sys.executable, "-m", "dnsguard", *map(str, args)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=120, stdin=stdin)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert "Traceback" not in err, err
    # An edited checkout not rebuilt warns per stale module (dnsguard/_compiled.py): not ours.
    err = "".join(ln for ln in err.splitlines(keepends=True)
                  if "changed since it was compiled" not in ln)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def alerts(text: str) -> list[dict]:
    return [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]


def key(a: dict) -> tuple:
    return a["timestamp"], a["domain"], a["src_ip"], tuple(a["detectors"])


# --- output paths, before any work ----------------------------------------------------------
@pytest.mark.parametrize("cmd, opt, what", [
    ("replay", "--summary-json", "summary"),
    ("replay", "--report", "report"),
    ("replay", "--alerts", "alerts"),
    ("eval", "--json", "evaluation result"),
])
def test_unwritable_output_is_one_line_before_any_work(tmp_path, cmd, opt, what):
    bad = tmp_path / "no" / "such" / "dir" / "out.json"
    extra = ["--truth", PCAPS / "truth.yaml"] if cmd == "eval" else []
    p = dnsguard(cmd, *extra, opt, bad, MIXED)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.splitlines()
    assert lines == [f"dnsguard: {bad}: cannot write the {what}: No such file or directory"]
    assert p.stdout == ""  # nothing replayed: no alert, no table


def test_output_check_leaves_no_file_and_keeps_existing_content(tmp_path):
    summ = tmp_path / "s.json"
    bad = tmp_path / "missing" / "r.html"
    p = dnsguard("replay", "-q", "--summary-json", summ, "--report", bad, MIXED)
    assert p.returncode == 2
    assert not summ.exists()  # made for the check only, removed again
    alerts_file = tmp_path / "a.jsonl"
    alerts_file.write_text('{"earlier": true}\n')
    p = dnsguard("replay", "-q", "--alerts", alerts_file, "--summary-json", summ, MIXED)
    assert p.returncode == 0, p.stderr
    assert alerts_file.read_text().startswith('{"earlier": true}\n')
    assert json.loads(summ.read_text())["packets"] > 0


# --- standard input and pipes ---------------------------------------------------------------
@pytest.fixture(scope="module")
def by_file() -> list[dict]:
    p = dnsguard("replay", "-q", MIXED)
    assert p.returncode == 0
    got = alerts(p.stdout)
    assert got  # the bundled capture has a tunnel
    return got


def test_replay_dash_reads_stdin(by_file):
    with open(MIXED, "rb") as f:
        p = dnsguard("replay", "-q", "-", stdin=f)
    assert p.returncode == 0, p.stderr
    assert [key(a) for a in alerts(p.stdout)] == [key(a) for a in by_file]
    assert {a["source"] for a in alerts(p.stdout)} == {"stdin"}


def test_replay_dev_stdin_from_a_pipe(by_file):
    # A pipe, not a file: `cat x | dnsguard replay /dev/stdin` (a file on stdin would seek).
    p = dnsguard(shell=f"cat {MIXED} | DNSGUARD replay -q /dev/stdin")
    assert p.returncode == 0, p.stderr
    assert [key(a) for a in alerts(p.stdout)] == [key(a) for a in by_file]


@pytest.mark.skipif(shutil.which("bash") is None, reason="process substitution needs bash")
def test_replay_process_substitution_of_gzip(by_file):
    p = dnsguard(shell=f"DNSGUARD replay -q <(gzip -c {MIXED})")
    assert p.returncode == 0, p.stderr
    assert [key(a) for a in alerts(p.stdout)] == [key(a) for a in by_file]


def test_replay_gzip_pcapng_from_stdin(tmp_path):
    frames = [eth(udp4(dns_query(f"host{i}.example.com"), sport=1000 + i)) for i in range(5)]
    ng = ng_shb() + ng_idb(1) + b"".join(ng_epb(0, (i + 1) * 1_000_000, f)
                                         for i, f in enumerate(frames))
    path = tmp_path / "x.pcapng.gz"
    path.write_bytes(gzip.compress(ng))
    with open(path, "rb") as f:
        p = dnsguard("replay", "-", "--summary-json", tmp_path / "s.json", stdin=f)
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["queries"] == 5 and s["files"]["read"] == 1


def test_replay_dash_twice_is_refused():
    p = dnsguard("replay", "-", "-", stdin=subprocess.DEVNULL)
    assert p.returncode == 2
    assert p.stderr.splitlines() == ["dnsguard: '-' (standard input) can be read only once"]


# --- directories ----------------------------------------------------------------------------
def test_replay_directory_reads_its_captures(tmp_path):
    d = tmp_path / "caps"
    d.mkdir()
    (d / "a.pcap").write_bytes(pcap_bytes([(1, 0, eth(udp4(dns_query("a.example.com"))))]))
    (d / "b.pcap.gz").write_bytes(gzip.compress(
        pcap_bytes([(2, 0, eth(udp4(dns_query("b.example.com"))))])))
    (d / "notes.txt").write_text("not a capture\n")
    p = dnsguard("replay", "--summary-json", tmp_path / "s.json", d)
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["files"]["read"] == 2 and s["queries"] == 2


def test_replay_empty_directory_says_so(tmp_path):
    p = dnsguard("replay", tmp_path)
    assert p.returncode == 2
    assert len(p.stderr.splitlines()) == 1
    assert str(tmp_path) in p.stderr and "no captures" in p.stderr
