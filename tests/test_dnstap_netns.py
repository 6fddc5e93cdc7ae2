"""dnstap end to end with real resolvers, in three network namespaces this test creates:

    client ns ──veth── resolver ns ──veth── sink ns
    10.153.1.2         10.153.1.1 | 10.153.2.1   10.153.2.2 (authoritative for everything)

(a) a real Unbound in the resolver namespace logs its clients' queries and responses over
dnstap to ``dnsguard run --dnstap unix:PATH`` (the bidirectional Frame Streams handshake);
the client exfiltrates a fake file through it as encoded names (a bounded loop); the alert
on the exfiltration zone must name the client's own address, and SIGTERM must exit 0 with
every message Unbound answered received (Unbound's own count against dnsguard's).

(b) a real BIND (``named``) writes a dnstap file (``dnstap { client; resolver; };``) of the
same traffic; ``dnsguard replay`` and ``dnsguard eval`` read it (plain and gzip) to the same
verdict.

(c) Unbound at the lab's highest query rate (~300/s, lab/README.md) for 8 s: every query and
answer Unbound counts arrives (unbound-control against dnsguard's metrics).

(d) BIND sending over a unix socket (``dnstap-output unix``) to ``dnsguard run``.

Needs root, ``ip netns``, and Unbound / BIND built with dnstap (Debian's are); skipped with
the reason otherwise. Every wait is bounded, every process and namespace removed at the end.
Cost: ~10-16 s each.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_dnstapwire import assert_same

from conftest import ROOT, Proc, wait_for
from dnsguard.capture.framestream import FileStats, read_file_frames

pytestmark = pytest.mark.netns

NET = ROOT / "tests" / "dnstap_net.py"
CLIENT, RES_IN, RES_OUT, SINK = "10.153.1.2", "10.153.1.1", "10.153.2.1", "10.153.2.2"
ZONE = "exfil-sink.test"
QUERIES = 60
METRICS = "127.0.0.1:19353"  # inside the resolver's fresh namespace: nothing else there
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _run(*cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


def _need(tool: str, feature: str | None = None) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if shutil.which("ip") is None or shutil.which(tool) is None:
        pytest.skip(f"{tool} (or ip) not installed")
    if feature is not None:
        r = subprocess.run([tool, "-V"], capture_output=True, text=True, timeout=10)
        if feature not in r.stdout + r.stderr:
            pytest.skip(f"{tool} is built without dnstap ({feature} not in '{tool} -V')")


@pytest.fixture
def nets():
    """The three namespaces and their two links; removed whatever happens."""
    tag = f"{os.getpid() % 100000}"
    ns = {"c": f"dns-c-{tag}", "r": f"dns-r-{tag}", "s": f"dns-s-{tag}"}
    created: list[str] = []
    links = [(f"dnc{tag}", ns["c"], CLIENT, f"dnr{tag}", ns["r"], RES_IN),
             (f"dno{tag}", ns["r"], RES_OUT, f"dns{tag}", ns["s"], SINK)]
    try:
        for n in ns.values():
            try:
                _run("ip", "netns", "add", n)
            except subprocess.CalledProcessError as e:
                pytest.skip(f"cannot create a network namespace: {e.stderr.strip()}")
            created.append(n)
            _run("ip", "-n", n, "link", "set", "lo", "up")
        for a, na, aa, b, nb, ab in links:
            _run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            for ifn, n, addr in ((a, na, aa), (b, nb, ab)):
                _run("ip", "link", "set", ifn, "netns", n)
                _run("ip", "-n", n, "addr", "add", f"{addr}/24", "dev", ifn)
                _run("ip", "-n", n, "link", "set", ifn, "up")
        yield ns
    finally:
        for n in created:
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=20)


@pytest.fixture
def work():
    d = Path(tempfile.mkdtemp(prefix="dns-tap-"))
    try:
        os.chmod(d, 0o755)  # the sensor drops to 'nobody' and must still reach its socket
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def ns_proc(ns: str, cmd: list[str], log: Path) -> Proc:
    """A background process in namespace ``ns``."""
    return Proc(["ip", "netns", "exec", ns, *cmd], log, env=ENV)


def exfil(ns: dict) -> int:
    r = _run("ip", "netns", "exec", ns["c"], sys.executable, str(NET), "exfil", RES_IN, ZONE,
             str(QUERIES), timeout=QUERIES * 1.5 + 10)
    return int(r.stdout.strip())


def ns_metric(ns: str, name: str) -> float | None:
    code = ("import sys, urllib.request\n"
            "try: sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read()"
            ".decode())\nexcept Exception: pass\n")
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code,
                        f"http://{METRICS}/metrics"], capture_output=True, text=True, timeout=20)
    m = re.search(rf"^{re.escape(name)} (\S+)$", r.stdout, re.M)
    return float(m.group(1)) if m else None


UNBOUND_CONF = """server:
  interface: {res_in}
  port: 53
  access-control: 10.153.0.0/16 allow
  username: ""
  chroot: ""
  directory: "{work}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  do-ip6: no
  module-config: "iterator"
  qname-minimisation: no
  outgoing-interface: {res_out}
  do-not-query-localhost: no
remote-control:
  control-enable: yes
  control-interface: "{work}/unbound.ctl"
  control-use-cert: no
stub-zone:
  name: "."
  stub-addr: {sink}
dnstap:
  dnstap-enable: yes
  dnstap-socket-path: "{sock}"
  dnstap-send-identity: yes
  dnstap-log-client-query-messages: yes
  dnstap-log-client-response-messages: yes
"""


def test_unbound_dnstap_to_run_alerts_on_the_real_client(nets, work):
    _need("unbound", "--enable-dnstap")
    sock = work / "tap" / "dnstap.sock"
    conf = work / "unbound.conf"
    conf.write_text(UNBOUND_CONF.format(res_in=RES_IN, res_out=RES_OUT, sink=SINK, work=work,
                                        sock=sock))
    alerts = work / "alerts.json"
    procs: list[Proc] = []
    try:
        sensor = ns_proc(nets["r"], [sys.executable, "-m", "dnsguard", "run", "--no-model",
                                  "--dnstap", f"unix:{sock}", "--alerts", str(alerts),
                                  "--metrics-address", METRICS, "--state-dir",
                                  str(work / "state")], work / "sensor.log")
        procs.append(sensor)
        wait_for("the sensor to listen", lambda: "capturing on" in sensor.text(), 60,
                 sensor.text)
        procs.append(ns_proc(nets["s"], [sys.executable, str(NET), "sink", SINK, "--seconds",
                                      "60"], work / "sink.log"))
        unbound = ns_proc(nets["r"], ["unbound", "-d", "-c", str(conf)], work / "unbound.log")
        procs.append(unbound)
        wait_for("Unbound to connect to the dnstap socket",
                 lambda: "connected on unix:" in sensor.text(), 30,
                 lambda: sensor.text() + unbound.text())
        assert exfil(nets) == QUERIES
        stats = _run("ip", "netns", "exec", nets["r"], "unbound-control", "-c", str(conf),
                     "stats_noreset").stdout
        answered = int(re.search(r"^total\.num\.queries=(\d+)$", stats, re.M).group(1))
        assert answered == QUERIES
        # Unbound sends its dnstap frames from its own thread: wait for them to arrive, then
        # stop the sensor while Unbound is still connected.
        wait_for("every client message over dnstap", lambda: ns_metric(
            nets["r"], 'dnsguard_dnstap_messages_total{type="client_response"}') == answered,
            20, sensor.text)
        rc = sensor.stop(signal.SIGTERM, timeout=30)
        log = sensor.text()
        assert rc == 0, log
        assert f"'client_query': {answered}, 'client_response': {answered}" in log, log
        assert "errors {}" in log, log
        recs = [json.loads(x) for x in alerts.read_text().splitlines() if x.strip()]
        hits = [r for r in recs if (r.get("domain") or "").endswith(ZONE)]
        assert hits, log
        assert {r["src_ip"] for r in hits} == {CLIENT}  # the client behind the resolver
        assert {r["dest_ip"] for r in hits} == {RES_IN}
    finally:
        for p in reversed(procs):
            p.stop()


def test_unbound_at_the_labs_highest_rate_loses_no_frame(nets, work):
    """The lab's resolver keeps up to ~300 queries/s (lab/README.md); at that rate for 8 s
    every query Unbound counts arrives over dnstap as a CLIENT_QUERY, and every answer as a
    CLIENT_RESPONSE (counted on both sides: unbound-control against dnsguard's metrics).
    ``DNSGUARD_DNSTAP_RATE=N`` runs it at N queries/s instead, at most 5,000 (the load
    client's bound), as a benchmark (bench/README.md, "dnstap input"; run with ``-s``: the
    counts are printed; the client's answers are then reported, not required)."""
    _need("unbound", "--enable-dnstap")
    rate = int(os.environ.get("DNSGUARD_DNSTAP_RATE", "300"))
    sock = work / "tap" / "dnstap.sock"
    conf = work / "unbound.conf"
    conf.write_text(UNBOUND_CONF.format(res_in=RES_IN, res_out=RES_OUT, sink=SINK, work=work,
                                        sock=sock))
    procs: list[Proc] = []
    try:
        sensor = ns_proc(nets["r"], [sys.executable, "-m", "dnsguard", "run", "--no-model",
                                  "--dnstap", f"unix:{sock}", "--alerts", str(work / "a.json"),
                                  "--metrics-address", METRICS, "--state-dir",
                                  str(work / "state")], work / "sensor.log")
        procs.append(sensor)
        wait_for("the sensor to listen", lambda: "capturing on" in sensor.text(), 60,
                 sensor.text)
        procs.append(ns_proc(nets["s"], [sys.executable, str(NET), "sink", SINK, "--seconds",
                                      "60"], work / "sink.log"))
        unbound = ns_proc(nets["r"], ["unbound", "-d", "-c", str(conf)], work / "unbound.log")
        procs.append(unbound)
        wait_for("Unbound to connect to the dnstap socket",
                 lambda: "connected on unix:" in sensor.text(), 30,
                 lambda: sensor.text() + unbound.text())
        t0 = time.monotonic()
        r = _run("ip", "netns", "exec", nets["c"], sys.executable, str(NET), "load", RES_IN,
                 str(rate), "8", timeout=40)
        took = time.monotonic() - t0
        sent, answered = map(int, r.stdout.split())
        if rate == 300:
            assert sent == 2400 and answered >= sent * 0.99, r.stdout
        # (above a few thousand a second the one-socket Python client sends fewer)
        stats = _run("ip", "netns", "exec", nets["r"], "unbound-control", "-c", str(conf),
                     "stats_noreset").stdout
        queries = int(re.search(r"^total\.num\.queries=(\d+)$", stats, re.M).group(1))
        assert queries == sent
        key = 'dnsguard_dnstap_messages_total{{type="{}"}}'
        wait_for("every client query over dnstap", lambda: ns_metric(
            nets["r"], key.format("client_query")) == queries, 20, sensor.text)
        # Unbound answers every query it counted (the sink answers all); the client may have
        # missed an answer on the way back, never got one more.
        wait_for("every client response over dnstap", lambda: ns_metric(
            nets["r"], key.format("client_response")) == queries, 20, sensor.text)
        assert answered <= queries
        assert ns_metric(nets["r"], "dnsguard_dnstap_senders") == 1
        print(f"rate {rate}/s: sent {sent} in {took:.1f} s, answered {answered}, Unbound "
              f"counted {queries}; "
              f"dnsguard received {ns_metric(nets['r'], key.format('client_query')):.0f} "
              f"client queries, {ns_metric(nets['r'], key.format('client_response')):.0f} "
              "responses")
        assert sensor.stop(signal.SIGTERM, timeout=30) == 0, sensor.text()
        assert "errors {}" in sensor.text(), sensor.text()
    finally:
        for p in reversed(procs):
            p.stop()


NAMED_CONF = """options {{
  directory "{work}";
  pid-file none;
  listen-on port 53 {{ {res_in}; }};
  listen-on-v6 {{ none; }};
  recursion yes;
  allow-query {{ any; }};
  allow-recursion {{ any; }};
  dnssec-validation no;
  qname-minimization off;
  query-source address {res_out};
  dnstap {{ client; resolver; }};
  dnstap-output {output};
}};
controls {{ }};
zone "." {{ type static-stub; server-addresses {{ {sink}; }}; }};
"""


def test_bind_dnstap_file_replay_and_eval_agree(nets, work):
    _need("named", "dnstap")
    tap = work / "resolver.dnstap"
    conf = work / "named.conf"
    conf.write_text(NAMED_CONF.format(work=work, res_in=RES_IN, res_out=RES_OUT, sink=SINK,
                                      output=f'file "{tap}"'))
    procs: list[Proc] = []
    try:
        procs.append(ns_proc(nets["s"], [sys.executable, str(NET), "sink", SINK, "--seconds",
                                      "60"], work / "sink.log"))
        named = ns_proc(nets["r"], ["named", "-g", "-u", "root", "-c", str(conf)],
                     work / "named.log")
        procs.append(named)
        wait_for("named to start", lambda: "running" in named.text(), 30, named.text)
        assert exfil(nets) == QUERIES
        assert named.stop(signal.SIGTERM, timeout=30) == 0, named.text()  # closes the file
    finally:
        for p in reversed(procs):
            p.stop()
    # The in-place reader and the protobuf runtime read BIND's own output the same way.
    st = FileStats()
    with open(tap, "rb") as f:
        c = assert_same(list(read_file_frames(f, st)))
    assert st.stopped and st.damaged is None and not c.errors.get("protobuf"), c.summary()
    assert c.messages["client_query"] == QUERIES
    gz = work / "resolver.dnstap.gz"
    gz.write_bytes(gzip.compress(tap.read_bytes()))
    caps = work / "caps"
    caps.mkdir()
    shutil.copy(tap, caps / tap.name)
    truth = work / "truth.yaml"
    truth.write_text(f"captures:\n  - file: {tap.name}\n    class: tunnel\n    tunnels:\n"
                     f"      - domain: {ZONE}\n")
    dg = [sys.executable, "-m", "dnsguard"]
    verdicts = []
    for f in (tap, gz):
        r = subprocess.run([*dg, "replay", "--no-model", "--summary-json", str(work / "s.json"),
                            str(f)], capture_output=True, text=True, env=ENV, timeout=120)
        assert r.returncode == 0, r.stderr
        recs = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
        s = json.loads((work / "s.json").read_text())
        # BIND logged the client side and its own upstream side of every lookup.
        assert s["queries"] == QUERIES and s["responses"] == QUERIES, s
        assert s["dnstap"]["messages"]["client_query"] == QUERIES, s["dnstap"]
        assert s["dnstap"]["messages"].get("resolver_query", 0) >= QUERIES, s["dnstap"]
        hits = [a for a in recs if (a.get("domain") or "").endswith(ZONE)]
        assert hits and {a["src_ip"] for a in hits} == {CLIENT}, recs
        assert all(not (a.get("domain") or "").endswith(ZONE) or a in hits for a in recs)
        verdicts.append(sorted({d for a in hits for d in a["detectors"]}))
    assert verdicts[0] == verdicts[1]
    out = work / "eval.json"
    r = subprocess.run([*dg, "eval", "--no-model", "--truth", str(truth), "--json", str(out),
                        str(caps)], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    ev = json.loads(out.read_text())
    assert ev["totals"]["detected"] == 1 and ev["totals"]["false_positive_keys"] == 0, ev
    (t,) = ev["captures"][0]["tunnels"]
    assert t["hit"] and t["tunnel_queries"] == QUERIES
    assert t["detectors"][0] in verdicts[0]  # eval's first alert is one replay raised too


def test_bind_sends_dnstap_to_run_over_a_unix_socket(nets, work):
    """BIND's ``dnstap-output unix`` (libfstrm's bidirectional writer) to ``dnsguard run``:
    the alert names the client; BIND's own upstream messages are counted, not analysed."""
    _need("named", "dnstap")
    sock = work / "tap" / "dnstap.sock"
    conf = work / "named.conf"
    conf.write_text(NAMED_CONF.format(work=work, res_in=RES_IN, res_out=RES_OUT, sink=SINK,
                                      output=f'unix "{sock}"'))
    alerts = work / "alerts.json"
    procs: list[Proc] = []
    try:
        sensor = ns_proc(nets["r"], [sys.executable, "-m", "dnsguard", "run", "--no-model",
                                  "--dnstap", f"unix:{sock}", "--alerts", str(alerts),
                                  "--metrics-address", METRICS, "--state-dir",
                                  str(work / "state")], work / "sensor.log")
        procs.append(sensor)
        wait_for("the sensor to listen", lambda: "capturing on" in sensor.text(), 60,
                 sensor.text)
        procs.append(ns_proc(nets["s"], [sys.executable, str(NET), "sink", SINK, "--seconds",
                                      "60"], work / "sink.log"))
        named = ns_proc(nets["r"], ["named", "-g", "-u", "root", "-c", str(conf)],
                     work / "named.log")
        procs.append(named)
        wait_for("named to start", lambda: "running" in named.text(), 30, named.text)
        assert exfil(nets) == QUERIES
        key = 'dnsguard_dnstap_messages_total{{type="{}"}}'
        wait_for("BIND's client messages over dnstap", lambda: ns_metric(
            nets["r"], key.format("client_response")) == QUERIES, 30,
            lambda: sensor.text() + named.text())
        assert ns_metric(nets["r"], key.format("client_query")) == QUERIES
        assert sensor.stop(signal.SIGTERM, timeout=30) == 0, sensor.text()
        log = sensor.text()
        assert "upstream_redundant" in log and "connected on unix:" in log, log
        recs = [json.loads(x) for x in alerts.read_text().splitlines() if x.strip()]
        hits = [r for r in recs if (r.get("domain") or "").endswith(ZONE)]
        assert hits and {r["src_ip"] for r in hits} == {CLIENT}, log
    finally:
        for p in reversed(procs):
            p.stop()
