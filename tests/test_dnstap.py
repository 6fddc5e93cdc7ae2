"""dnstap input without root: the Frame Streams framing (whole, cut anywhere, hostile), the
dnstap → DNS message mapping, replay/eval of dnstap files (plain, gzip, damaged, beside a
pcap), the live listener on real unix and TCP sockets (handshake, several and reconnecting
senders, garbage, oversized and truncated frames, an unknown content type, a flood) and
``dnsguard run --dnstap`` as a process. Real resolvers: tests/test_dnstap_netns.py.

Cost: ~10 s (the daemon process start dominates).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, dns_query, dns_response, eth, udp4
from dnsguard.capture import dnstap_pb2 as pb
from dnsguard.capture import framestream as fs
from dnsguard.capture.dnstap import (
    DnstapCounters,
    DnstapMapper,
    encode_message,
    is_dnstap_file,
)
from dnsguard.capture.dnstap_listen import DnstapServer, Endpoint, parse_endpoint
from dnsguard.detect.rules import load_dir
from dnsguard.evaluate import evaluate, load_truth
from dnsguard.replay import replay
from dnsguard.settings import Settings

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CLIENT, RESOLVER, AUTH = bytes([10, 9, 0, 7]), bytes([10, 9, 0, 1]), bytes([10, 9, 1, 2])
ZONE = "exf.dgtest.example"
T0 = 1_700_000_000.0
MT = pb.Message


def exfil_names(n: int) -> list[str]:
    out = []
    for i in range(n):
        b = base64.b32encode(hashlib.sha256(b"%d" % i).digest()[:30]).decode().lower()
        out.append(f"{b[:24]}.{b[24:48]}{i:04d}.{ZONE}")
    return out


def exchange(i: int, name: str, client: bytes = CLIENT, upstream: bool = False) -> list[bytes]:
    """The dnstap payloads a resolver logs for one client lookup (and its upstream query)."""
    q, r = dns_query(name, qid=i), dns_response(name, qid=i)
    ts = T0 + i * 0.05
    out = [encode_message(MT.CLIENT_QUERY, q, client, RESOLVER, 40000 + i, 53, ts)]
    if upstream:
        out += [encode_message(MT.RESOLVER_QUERY, q, RESOLVER, AUTH, 50000 + i, 53, ts + 0.001),
                encode_message(MT.RESOLVER_RESPONSE, r, RESOLVER, AUTH, 50000 + i, 53,
                               ts + 0.002)]
    out.append(encode_message(MT.CLIENT_RESPONSE, r, client, RESOLVER, 40000 + i, 53,
                              ts + 0.003))
    return out


def dnstap_file(payloads: list[bytes], stop: bool = True) -> bytes:
    body = fs.encode_control(fs.START, [fs.CONTENT_TYPE])
    body += b"".join(fs.encode_data(p) for p in payloads)
    return body + (fs.encode_control(fs.STOP) if stop else b"")


def exfil_payloads(n: int = 40, upstream: bool = True) -> list[bytes]:
    return [p for i, nm in enumerate(exfil_names(n)) for p in exchange(i, nm,
                                                                         upstream=upstream)]


@pytest.fixture(scope="module")
def ruleset():
    return load_dir(ROOT / "rules")


def rules_only() -> Settings:
    s = Settings(ports=frozenset({53}))
    s.use_model = False
    return s


# --- Frame Streams ----------------------------------------------------------------------------
def test_frames_cut_anywhere_come_out_whole():
    stream = dnstap_file([b"a" * n for n in (1, 100, 3000)])
    for step in (1, 3, 7, 64, len(stream)):
        d = fs.FrameDecoder()
        got = []
        for k in range(0, len(stream), step):
            d.feed(stream[k:k + step])
            got += [f.payload if f.kind == fs.DATA else f.control for f in d.frames()]
        assert got == [fs.START, b"a", b"a" * 100, b"a" * 3000, fs.STOP], step
        assert d.buffered == 0


def test_oversized_frame_is_refused_before_it_is_buffered():
    d = fs.FrameDecoder(max_frame=1000)
    d.feed(b"\x7f\xff\xff\xff" + b"x" * 10)
    with pytest.raises(fs.FrameError) as e:
        list(d.frames())
    assert e.value.reason == "oversized" and d.buffered == 14
    back = pickle.loads(pickle.dumps(e.value))  # e.g. re-raised from a worker process
    assert (back.reason, str(back)) == ("oversized", str(e.value))
    d = fs.FrameDecoder()
    d.feed(b"\x00\x00\x00\x00\x00\x01\x00\x00")  # a 64 KiB control frame
    with pytest.raises(fs.FrameError):
        list(d.frames())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_a_session_survives_any_bytes(data):
    s = fs.ReceiverSession(max_frame=4096)
    out = s.receive(data)  # never raises: a fault is s.error
    assert isinstance(out, list)
    assert s.error is None or s.error.reason in {
        "oversized", "control_truncated", "control_unknown", "content_type",
        "data_before_start", "control_unexpected"}
    assert s.decoder.buffered <= 4096 + 8


def test_session_refuses_another_content_type():
    s = fs.ReceiverSession()
    assert s.receive(fs.encode_control(fs.READY, [b"protobuf:other.Thing"])) == []
    assert s.error.reason == "content_type" and not s.outgoing
    s = fs.ReceiverSession()
    s.receive(fs.encode_control(fs.START, [b"json"]) + fs.encode_data(b"x"))
    assert s.error.reason == "content_type"


def test_payloads_before_a_fault_are_kept():
    s = fs.ReceiverSession()
    got = s.receive(fs.encode_control(fs.START) + fs.encode_data(b"one") + b"\xff" * 8)
    assert got == [b"one"] and s.error.reason == "oversized"


# --- the mapping ------------------------------------------------------------------------------
def test_client_messages_key_the_real_client_and_upstream_ones_are_not_counted_twice():
    c = DnstapCounters()
    m = DnstapMapper(c)
    out = [m.decode(p) for p in exchange(1, "a.example", upstream=True)]
    cq, rq, rr, cr = out
    assert cq[1:5] == (CLIENT, RESOLVER, 40001, 53) and cq[0] == pytest.approx(T0 + 0.05)
    assert cr[1:5] == (RESOLVER, CLIENT, 53, 40001)  # the response: from the resolver
    assert rq is None and rr is None  # the same lookup, upstream: counted, not analysed
    assert c.errors == {"upstream_redundant": 2}
    assert c.messages == {"client_query": 1, "resolver_query": 1, "resolver_response": 1,
                          "client_response": 1}


def test_a_resolver_only_stream_is_the_resolvers_vantage():
    m = DnstapMapper(DnstapCounters())
    q = dns_query("b.example")
    got = m.decode(encode_message(MT.RESOLVER_QUERY, q, RESOLVER, AUTH, 5000, 53, T0))
    assert got[1:3] == (RESOLVER, AUTH) and got[5] == q


def test_broken_messages_are_counted_not_fatal():
    c = DnstapCounters()
    m = DnstapMapper(c, now=lambda: 42.0)
    assert m.decode(b"\xff\xff\xff") is None  # not protobuf
    assert m.decode(pb.Dnstap(type=pb.Dnstap.MESSAGE).SerializeToString()) is None
    no_wire = pb.Dnstap(type=pb.Dnstap.MESSAGE)
    no_wire.message.type = MT.CLIENT_QUERY
    assert m.decode(no_wire.SerializeToString()) is None
    d = pb.Dnstap(type=pb.Dnstap.MESSAGE)
    d.message.type = MT.CLIENT_QUERY
    d.message.query_message = b"q"
    d.message.query_address = b"\x01\x02"  # broken length, no time
    assert m.decode(d.SerializeToString()) == (42.0, bytes(4), bytes(4), 0, 0, b"q", False)
    assert c.errors == {"protobuf": 1, "no_message": 1, "no_dns_message": 1,
                        "bad_address": 1, "no_time": 1}


def test_transports_are_labelled_and_count_like_udp_tcp():
    c = DnstapCounters()
    m = DnstapMapper(c)
    q = dns_query("c.example")
    for proto in (pb.UDP, pb.TCP, pb.DOT, pb.DOH, pb.DOQ):
        got = m.decode(encode_message(MT.CLIENT_QUERY, q, CLIENT, RESOLVER, 1, 853, T0,
                                      protocol=proto))
        assert got is not None and got[6] == (proto in (pb.TCP, pb.DOT, pb.DOH))
    assert c.transports == {"udp": 1, "tcp": 1, "dot": 1, "doh": 1, "doq": 1}


def test_feed_message_fast_and_general_paths_agree(ruleset):
    from dnsguard.pipeline import Pipeline

    m = DnstapMapper(DnstapCounters())
    msgs = [m.decode(p) for p in exfil_payloads(40, upstream=False)]
    msgs.append(m.decode(encode_message(MT.CLIENT_QUERY, b"\x00" * 5, CLIENT, RESOLVER, 1, 53,
                                        T0 + 9)))  # not DNS
    out = []
    for fast in (True, False):
        got: list[dict] = []
        pipe = Pipeline(rules_only(), ruleset, got.append)
        pipe.fast_path = fast
        outcomes = [pipe.feed_message(*x) for x in msgs]
        pipe.finish()
        s = pipe.summary()
        out.append((outcomes, s["outcomes"], s["queries"], s["responses"],
                    [(a["domain"], a["src_ip"], a["detectors"]) for a in got]))
    assert out[0] == out[1]
    assert out[0][4] and out[0][1]["not_dns"] + out[0][1]["malformed"] == 1


# --- replay and eval ----------------------------------------------------------------------
def _alerts(paths, ruleset) -> tuple[list[dict], object]:
    got: list[dict] = []
    res = replay(paths, rules_only(), ruleset, got.append)
    return got, res


def test_replay_a_dnstap_file_plain_and_gzip_recognised_by_content(tmp_path, ruleset):
    data = dnstap_file(exfil_payloads())
    plain = tmp_path / "resolver.log"  # no telling suffix: recognised by content
    plain.write_bytes(data)
    gz = tmp_path / "resolver.capture.gz"
    gz.write_bytes(gzip.compress(data))
    assert is_dnstap_file(plain) and is_dnstap_file(gz)
    a1, r1 = _alerts([plain], ruleset)
    a2, r2 = _alerts([gz], ruleset)
    assert r1.errors == [] and r1.damaged == [] and r1.files_read == 1
    tun = [a for a in a1 if a["domain"] and a["domain"].endswith(ZONE)]
    assert tun and {a["src_ip"] for a in tun} == {"10.9.0.7"}
    assert r1.summary["queries"] == 40 and r1.summary["responses"] == 40
    assert r1.summary["dnstap"]["messages"]["resolver_query"] == 40
    assert r1.summary["dnstap"]["errors"] == {"upstream_redundant": 80}
    strip = ("source",)
    assert ([{k: v for k, v in a.items() if k not in strip} for a in a1]
            == [{k: v for k, v in a.items() if k not in strip} for a in a2])


def test_replay_cli_summarises_the_dnstap_input(tmp_path):
    p = tmp_path / "r.dnstap"
    p.write_bytes(dnstap_file(exfil_payloads(10)))
    r = subprocess.run([sys.executable, "-m", "dnsguard", "replay", "--no-model", str(p)],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    assert ("dnstap: 40 frames; messages client_query 10, client_response 10, "
            "resolver_query 10, resolver_response 10; not analysed upstream_redundant 20"
            in r.stderr), r.stderr


def test_a_damaged_dnstap_file_is_read_up_to_the_damage(tmp_path, ruleset):
    data = dnstap_file(exfil_payloads(20, upstream=False), stop=False)
    p = tmp_path / "cut.fstrm"
    p.write_bytes(data[:-7])  # the last frame cut short
    _, res = _alerts([p], ruleset)
    assert res.summary["queries"] == 20 and res.summary["responses"] == 19
    assert len(res.damaged) == 1 and "truncated" in res.damaged[0] and str(p) in res.damaged[0]
    q = tmp_path / "bad.fstrm"
    q.write_bytes(fs.encode_control(fs.START, [b"protobuf:other.Thing"]) + fs.encode_data(b"x"))
    _, res = _alerts([q], ruleset)
    assert res.summary["queries"] == 0 and "content type" in res.damaged[0]


def test_dnstap_and_pcap_replay_together_in_time_order(tmp_path, ruleset):
    from conftest import pcap_header, pcap_record

    tap = tmp_path / "a.dnstap"
    tap.write_bytes(dnstap_file(exfil_payloads(20, upstream=False)))
    cap = tmp_path / "b.pcap"
    frames = [pcap_record(int(T0) + i, 0, eth(udp4(dns_query(f"www{i}.example.org"))))
              for i in range(5)]
    cap.write_bytes(pcap_header() + b"".join(frames))
    got, res = _alerts([tap, cap], ruleset)
    assert res.files_read == 2 and res.summary["queries"] == 25
    assert any(a["domain"] and a["domain"].endswith(ZONE) for a in got)


def test_eval_scores_a_dnstap_file(tmp_path, ruleset):
    (tmp_path / "caps").mkdir()
    (tmp_path / "caps" / "exfil.dnstap").write_bytes(dnstap_file(exfil_payloads()))
    (tmp_path / "truth.yaml").write_text(
        f"captures:\n  - file: exfil.dnstap\n    class: tunnel\n    tunnels:\n"
        f"      - domain: {ZONE}\n")
    from dnsguard.evaluate import expand

    r = evaluate(expand([str(tmp_path / "caps")]), load_truth(tmp_path / "truth.yaml"),
                 rules_only(), ruleset)
    assert r["totals"]["detected"] == 1 and r["totals"]["false_positive_keys"] == 0


# --- the live listener --------------------------------------------------------------------
class Sender:
    """A dnstap sender on a real socket, speaking the bidirectional handshake."""

    def __init__(self, ep: str, handshake: bool = True) -> None:
        e = parse_endpoint(ep)
        if e.kind == "unix":
            self.s = socket.socket(socket.AF_UNIX)
            self.s.connect(e.path)
        else:
            self.s = socket.create_connection((e.host, e.port), timeout=5)
        self.s.settimeout(5)
        self.handshake = handshake

    def start(self, srv: DnstapServer) -> None:
        if self.handshake:
            self.s.sendall(fs.encode_control(fs.READY, [fs.CONTENT_TYPE]))
            reply = _pump_until(srv, lambda: _readable(self.s))
            assert reply and fs.decode_control(self.s.recv(200)[8:]).control == fs.ACCEPT
        self.s.sendall(fs.encode_control(fs.START, [fs.CONTENT_TYPE]))

    def send(self, payloads: list[bytes]) -> None:
        self.s.sendall(b"".join(fs.encode_data(p) for p in payloads))

    def stop(self, srv: DnstapServer) -> None:
        self.s.sendall(fs.encode_control(fs.STOP))
        assert _pump_until(srv, lambda: _readable(self.s))
        assert fs.decode_control(self.s.recv(200)[8:]).control == fs.FINISH
        self.s.close()


def _readable(s: socket.socket) -> bool:
    return bool(select.select([s], [], [], 0)[0])


def _pump_until(srv: DnstapServer, cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        srv.poll(0.05)
    return cond()


@pytest.fixture
def server(tmp_path):
    got: list[tuple] = []
    c = DnstapCounters()
    path = tmp_path / "t" / "dnstap.sock"
    any_port = Endpoint("tcp", host="127.0.0.1", port=0)  # the kernel picks a free port
    srv = DnstapServer([f"unix:{path}", any_port], lambda *m: got.append(m), c, max_senders=4)
    tcp = next(s for s, ep in srv.listeners.values() if ep.kind == "tcp")
    eps = [f"unix:{path}", f"tcp:127.0.0.1:{tcp.getsockname()[1]}"]
    try:
        yield srv, eps, got, c
    finally:
        srv.close()
    assert not path.exists()  # the socket file is removed


def test_several_senders_unix_and_tcp_and_a_reconnect(server):
    srv, eps, got, c = server
    pay = exfil_payloads(10, upstream=False)
    a, b = Sender(eps[0]), Sender(eps[1], handshake=False)  # b: unidirectional
    a.start(srv)
    b.start(srv)
    a.send(pay[:10])
    b.send(pay[10:])
    assert _pump_until(srv, lambda: len(got) == 20)
    assert c.senders == 2
    a.stop(srv)
    a2 = Sender(eps[0])  # the resolver reconnects
    a2.start(srv)
    a2.send(pay[:4])
    assert _pump_until(srv, lambda: len(got) == 24)
    b.s.close()
    assert _pump_until(srv, lambda: c.senders == 1)
    assert c.connections == 3 and c.errors == {} and c.frames["data"] == 24


def test_hostile_senders_are_counted_and_cut_off_others_unaffected(server, caplog):
    srv, eps, got, c = server
    good = Sender(eps[0])
    good.start(srv)
    bad = [Sender(eps[1], handshake=False) for _ in range(3)]
    bad[0].s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # garbage: a huge "length"
    bad[1].s.sendall(fs.encode_control(fs.READY, [b"protobuf:other.Thing"]))
    bad[2].s.sendall(fs.encode_control(fs.START) + fs.encode_data(b"x" * 100)[:50])
    assert _pump_until(srv, lambda: c.errors.get("oversized") and c.errors.get("content_type"))
    bad[2].s.close()  # gone mid-frame
    assert _pump_until(srv, lambda: c.errors.get("truncated"))
    extra = [Sender(eps[0], handshake=False) for _ in range(4)]  # past max_senders (4)
    assert _pump_until(srv, lambda: c.errors.get("too_many_senders"))
    good.send(exfil_payloads(3, upstream=False))
    assert _pump_until(srv, lambda: len(got) == 6)
    for s in (*bad, *extra):
        s.s.close()
    assert _pump_until(srv, lambda: c.senders == 1)
    # The same fault again from the same sender (the TCP peer 127.0.0.1) is not logged again.
    again = Sender(eps[1], handshake=False)
    again.s.sendall(b"\xff" * 8)
    assert _pump_until(srv, lambda: c.errors.get("oversized") == 2)
    again.s.close()
    logged = [r for r in caplog.records if "reason oversized" in r.getMessage()]
    assert len(logged) == 1


def test_a_flooding_sender_loses_nothing(server):
    srv, eps, got, c = server
    s = Sender(eps[1])
    s.start(srv)
    pay = exfil_payloads(50, upstream=False)  # 100 messages
    n = 0
    s.s.setblocking(False)
    blob = b"".join(fs.encode_data(p) for p in pay) * 100  # 10,000 frames at once
    view = memoryview(blob)
    while n < len(blob):
        try:
            n += s.s.send(view[n:])
        except BlockingIOError:
            srv.poll(0.01)  # the receiver reads; the sender waits on TCP flow control
    s.s.setblocking(True)
    assert _pump_until(srv, lambda: len(got) == 10_000, timeout=30)
    assert c.frames["data"] == 10_000 and c.errors == {}
    s.stop(srv)


# --- dnsguard run --dnstap, as a process --------------------------------------------------
def _run_cmd(tmp_path: Path, *extra: str) -> list[str]:
    """``dnsguard run`` staying the user it is (``--user root``: as root, no drop)."""
    return [sys.executable, "-m", "dnsguard", "run", "--no-model", "--metrics-address",
            "127.0.0.1:0", "--state-dir", str(tmp_path / "state"), "--user", "root", *extra]



def test_run_with_dnstap_alone_alerts_and_stops_cleanly(tmp_path):
    sock = tmp_path / "dnstap.sock"
    alerts = tmp_path / "alerts.json"
    cmd = _run_cmd(tmp_path, "--dnstap", f"unix:{sock}", "--alerts", str(alerts))
    env = ENV
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        end = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < end and p.poll() is None:
            time.sleep(0.1)
        assert sock.exists(), p.stderr.read() if p.poll() is not None else "no socket"
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(sock))
        s.settimeout(10)
        s.sendall(fs.encode_control(fs.READY, [fs.CONTENT_TYPE]))
        assert fs.decode_control(s.recv(200)[8:]).control == fs.ACCEPT
        s.sendall(fs.encode_control(fs.START, [fs.CONTENT_TYPE]))
        s.sendall(b"".join(fs.encode_data(x) for x in exfil_payloads(30, upstream=True)))
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)  # the sender is still connected: drained, not lost
        _, err = p.communicate(timeout=30)
        s.close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert "client_query': 30" in err and "client_response': 30" in err, err
    recs = [json.loads(x) for x in alerts.read_text().splitlines()]
    assert any(r["domain"].endswith(ZONE) and r["src_ip"] == "10.9.0.7" for r in recs), recs
    assert not sock.exists()


def test_run_refuses_a_bad_dnstap_address_and_nothing_to_read():
    env = ENV
    r = subprocess.run([sys.executable, "-m", "dnsguard", "run", "--dnstap", "udp:1.2.3.4:5"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "unix:/absolute/path or tcp:HOST:PORT" in r.stderr
    r = subprocess.run([sys.executable, "-m", "dnsguard", "run", "--metrics-address",
                        "127.0.0.1:0"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "dnstap:" in r.stderr and "interfaces:" in r.stderr


def test_run_says_when_the_socket_path_is_taken(tmp_path):
    f = tmp_path / "plain-file"
    f.write_text("x")
    r = subprocess.run(_run_cmd(tmp_path, "--dnstap", f"unix:{f}"), capture_output=True,
                       text=True, env=ENV, timeout=60)
    assert r.returncode == 2 and "exists and is not a socket" in r.stderr, r.stderr
    assert f.read_text() == "x"


def test_config_key_and_errors(tmp_path):
    from dnsguard import config as dconf
    from dnsguard.detect.yamlsrc import SourceError

    p = tmp_path / "c.yaml"
    p.write_text("dnstap:\n  - unix:/run/dnsguard/dnstap.sock\n  - tcp:127.0.0.1:6000\n")
    assert dconf.load(p).dnstap == ["unix:/run/dnsguard/dnstap.sock", "tcp:127.0.0.1:6000"]
    p.write_text("dnstap:\n  - unix:relative.sock\n")
    with pytest.raises(SourceError) as e:
        dconf.load(p)
    assert f"{p}:2: dnstap[0]" in str(e.value) and "absolute" in str(e.value)


def test_metrics_expose_the_dnstap_counters():
    from prometheus_client import CollectorRegistry, generate_latest

    from dnsguard.metrics import DnstapCollector

    c = DnstapCounters()
    m = DnstapMapper(c)
    for p in exchange(1, "d.example", upstream=True):
        m.decode(p)
    c.frames["data"] += 4
    c.senders, c.bytes = 2, 999
    reg = CollectorRegistry()
    reg.register(DnstapCollector(c))
    text = generate_latest(reg).decode()
    for line in ('dnsguard_dnstap_senders 2.0', 'dnsguard_dnstap_frames_total{kind="data"} 4.0',
                 'dnsguard_dnstap_messages_total{type="client_query"} 1.0',
                 'dnsguard_dnstap_transport_messages_total{transport="udp"} 4.0',
                 'dnsguard_dnstap_errors_total{reason="upstream_redundant"} 2.0',
                 'dnsguard_dnstap_bytes_total 999.0'):
        assert line in text, line
