"""Issue #12 (lab benign test seed 103): the volume series count allowlisted ``raise`` traffic
as the rules do, at 1/factor.

A monitoring host that reverse-sweeps whole /24s (``nmap -sL``, Zabbix/NetBox discovery:
https://nmap.org/book/host-discovery-dns.html) multiplies its queries 10-20x for a few
minutes, every one a PTR under ``in-addr.arpa`` (``action: raise``, factor 10: the rules
hold it to 10x thresholds). The series counted those queries at full weight, so every
volume test fired on the host (``dns_volume_anomaly`` on ``client:<monitor>``) while no rule
did. The same host moving the same bytes through a tunnel under an ordinary domain must
still raise it.

The captures are crafted with scapy (deterministic: no clock, no randomness) and replayed
from a pcap file through the pipeline with the default settings but the model (the model
raises no volume anomaly; it is the slow part). Cost: ~2-5 s per test, most of it scapy
building ~4,000 DNS messages.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRROPT

from conftest import pcap_bytes
from dnsguard.detect.rules import RuleSet
from dnsguard.replay import replay
from dnsguard.series.monitor import EVENT_VOLUME
from dnsguard.settings import Settings

MONITOR = "10.77.9.16"
RESOLVER = "10.77.0.53"
T0 = 1_700_000_000.0  # a round minute, so steps are whole minutes of the capture
BASELINE_STEPS = 14
SWEEP_STEPS = 3
SWEEPS_PER_STEP = 2  # /24s a step (508 PTR: ~17x the baseline's 30 queries a minute)
BASELINE_PER_STEP = 30


def _udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """Ethernet/IPv4/UDP around a scapy-built DNS message, packed here: scapy's own layers
    cost ~3 ms a frame (a route lookup each), ten times the DNS message."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + udp


def _pair(ts: float, qid: int, name: str, qtype: str, answer=None, rcode: int = 0,
          sport: int = 40000) -> list[tuple[float, bytes]]:
    """A query and its response (EDNS, as a stub sends them), as the resolver's interface
    sees them."""
    q = DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype=qtype), ar=DNSRROPT(rclass=1232))
    r = DNS(id=qid, qr=1, rd=1, ra=1, rcode=rcode, qd=DNSQR(qname=name, qtype=qtype),
            an=[answer] if answer is not None else [], ar=DNSRROPT(rclass=1232))
    if rcode == 3:  # NXDOMAIN carries the zone's SOA (RFC 2308)
        r.ns = [DNSRR(rrname="10.in-addr.arpa", type="SOA", ttl=300,
                      rdata=b"\x02ns\x00\x0ahostmaster\x00" + bytes(20))]
    return [(ts, _udp_frame(MONITOR, RESOLVER, sport, 53, bytes(q))),
            (ts + 0.002, _udp_frame(RESOLVER, MONITOR, 53, sport, bytes(r)))]


def _baseline_step(step: int) -> list:
    """A monitor's own checks: forward lookups of the hosts it watches, 30 a minute."""
    out = []
    for i in range(BASELINE_PER_STEP):
        ts = T0 + step * 60 + 0.5 + i * (59.0 / BASELINE_PER_STEP)
        name = f"host{(step * BASELINE_PER_STEP + i) % 300}.corp.example.com"
        out += _pair(ts, (step * 97 + i) & 0xFFFF, name, "A",
                     DNSRR(rrname=name, type="A", ttl=300, rdata=f"10.77.2.{i + 1}"))
    return out


def _sweep_step(step: int) -> list:
    """Two /24s reverse-resolved, every address: most answer with a generated PTR name,
    the unused ones NXDOMAIN."""
    out = []
    n = 0
    for k in range(SWEEPS_PER_STEP):
        net = (10, 80 + step, k)
        for host in range(1, 255):
            ts = T0 + step * 60 + 0.2 + n * 0.1
            name = f"{host}.{net[2]}.{net[1]}.{net[0]}.in-addr.arpa"
            qid = (step * 1009 + n) & 0xFFFF
            if host % 3:
                ptr = f"host-{net[0]}-{net[1]}-{net[2]}-{host}.corp.example.com"
                out += _pair(ts, qid, name, "PTR",
                             DNSRR(rrname=name, type="PTR", ttl=3600, rdata=ptr))
            else:
                out += _pair(ts, qid, name, "PTR", rcode=3)
            n += 1
    return out


def _tunnel_step(step: int, per_step: int = 200) -> list:
    """The same host moving data: long Base32 names under one ordinary domain, TXT answers
    (about the sweep's bytes up)."""
    import base64

    out = []
    for i in range(per_step):
        ts = T0 + step * 60 + 0.2 + i * (59.0 / per_step)
        data = base64.b32encode(((step * 1000 + i).to_bytes(4, "big") * 10)[:36]).decode()
        name = f"{data[:50].lower()}.{data[50:].lower()}.t.exfil-sync.net"
        out += _pair(ts, (step * 613 + i) & 0xFFFF, name, "TXT",
                     DNSRR(rrname=name, type="TXT", ttl=0, rdata="x" * 120))
    return out


def _capture(tmp_path: Path, burst) -> Path:
    pkts = []
    for step in range(BASELINE_STEPS):
        pkts += _baseline_step(step)
    for step in range(BASELINE_STEPS, BASELINE_STEPS + SWEEP_STEPS):
        pkts += _baseline_step(step) + burst(step)
    for step in range(BASELINE_STEPS + SWEEP_STEPS, BASELINE_STEPS + SWEEP_STEPS + 2):
        pkts += _baseline_step(step)
    pkts.sort(key=lambda p: p[0])
    path = tmp_path / "monitor.pcap"
    path.write_bytes(pcap_bytes([(int(ts), round(ts % 1 * 1e6), f) for ts, f in pkts]))
    return path


def _replay(path: Path, ruleset: RuleSet) -> list[dict]:
    alerts: list[dict] = []
    replay([path], Settings(use_model=False), ruleset, alerts.append)
    return alerts


def test_a_monitors_reverse_sweeps_raise_no_volume_anomaly(tmp_path, ruleset):
    alerts = _replay(_capture(tmp_path, _sweep_step), ruleset)
    assert [(a["event_type"], a.get("stats", {}).get("series")) for a in alerts] == []


def test_the_same_hosts_tunnel_jump_still_raises_one(tmp_path, ruleset):
    alerts = _replay(_capture(tmp_path, _tunnel_step), ruleset)
    vol = [a for a in alerts if a["event_type"] == EVENT_VOLUME]
    assert any(a["stats"]["series"] == f"client:{MONITOR}" for a in vol), [
        (a["event_type"], a["detectors"]) for a in alerts]


def test_the_store_counts_each_message_with_its_weight():
    """Weight 1 keeps the integer counts; 1/factor counts a raised message as that fraction
    in every metric (distinct names too)."""
    from dnsguard.series.store import SeriesStore

    s = SeriesStore(step=60, span=600, max_keys=2)
    for i in range(10):
        s.observe_query(1.0 + i, b"m", "in-addr.arpa", i, 50, 12, 0.1)
        s.observe_response(1.5 + i, b"m", "in-addr.arpa", 100, 3, 0.1)
        s.observe_query(1.0 + i, b"o", "x.example", i, 40, 1)
        s.observe_response(1.5 + i, b"o", "x.example", 80, 0)
    s.flush()
    t = s.tables["client"]
    got = {m: float(t.values(t.slot_of[b"m"], m, 1)[0])
           for m in ("queries", "names", "bytes_up", "bytes_down", "nxdomain")}
    assert got == pytest.approx({"queries": 1.0, "names": 1.0, "bytes_up": 50.0,
                                 "bytes_down": 100.0, "nxdomain": 1.0}, rel=1e-5)
    assert t.values(t.slot_of[b"o"], "bytes_up", 1).tolist() == [400.0]  # weight 1


def _txt_step(step: int, name_of, ttl: int, per_step: int = 120) -> list:
    """``per_step`` TXT lookups in one minute, the ``i``-th of ``name_of(step, i)``."""
    out = []
    for i in range(per_step):
        ts = T0 + step * 60 + 0.3 + i * (59.0 / per_step)
        name = name_of(step, i)
        out += _pair(ts, (step * 331 + i) & 0xFFFF, name, "TXT",
                     DNSRR(rrname=name, type="TXT", ttl=ttl, rdata="x" * 43))
    return out


def _acme_step(step: int) -> list:
    """cert-manager's DNS-01 renewal (https://cert-manager.io/docs/configuration/acme/dns01/):
    it polls ``_acme-challenge.<host>`` TXT until the token propagates, here 12 hosts every
    6 s, against the node's baseline of A lookups: a shift of the type mix to TXT."""
    return _txt_step(step, lambda s, i: f"_acme-challenge.app{i % 12}.corp.example.com", 60)


def _txt_channel_step(step: int) -> list:
    """The same TXT volume as a channel: a new short name under one domain each time."""
    return _txt_step(step, lambda s, i: f"c{s}x{i}.poll.example.net", 0)


def test_service_lookups_do_not_shift_the_type_mix(tmp_path, ruleset):
    """A TXT (or SRV) under a registered service label (RFC 8552: ``_acme-challenge``,
    ``_domainkey``, ``_ldap._tcp``) asks for a service's record, not for data: the chi-square
    test counts it apart from the carrier types (lab seed 9103: cert-manager's polling raised
    ``series:chi2`` on a Kubernetes node). The same TXT volume under ordinary names still
    does."""
    alerts = _replay(_capture(tmp_path, _acme_step), ruleset)
    assert [(a["event_type"], a.get("detectors")) for a in alerts] == []
    alerts = _replay(_capture(tmp_path, _txt_channel_step), ruleset)
    chi2 = [a for a in alerts if a["event_type"] == EVENT_VOLUME
            and any(t["test"] == "chi2" for t in a["stats"]["tests"])]
    assert chi2, [(a["event_type"], a.get("detectors")) for a in alerts]
