"""The lab (lab/): the stand-in internet's answers, and a real Unbound in namespaces.

The namespace tests need root and cost ~5 s (two labs up and down, a handful of queries).
"""

from __future__ import annotations

import gzip
import io
import struct
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("dns.message", reason="the lab needs dnspython (the [test] extra)")

import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rdatatype as T  # noqa: E402

from lab.capture import rescale, rescale_stream  # noqa: E402
from lab.internet import Internet  # noqa: E402
from lab.netns import list_ns, require_root  # noqa: E402

NET = Internet(seed=7)


def _rcode(q: str, t: int) -> int:
    return int(NET.answer(q, t).rcode)


def test_answers_are_deterministic_and_plausible():
    a = NET.answer("www.wikipedia.org.", T.A)
    assert a.answer and a == NET.answer("www.wikipedia.org.", T.A)
    # address-embedded customer names resolve to their address, forward and reverse
    fwd = NET.answer("70-112-9-4.austin.res.rr.com.", T.A)
    assert [r.address for r in fwd.answer[0]] == ["70.112.9.4"]
    # DNSBL: the always-listed test entry, and most addresses are not listed (NXDOMAIN)
    assert NET.answer("2.0.0.127.zen.spamhaus.org.", T.A).answer[0][0].address == "127.0.0.2"
    misses = sum(_rcode(f"{i}.{i + 1}.51.198.zen.spamhaus.org.", T.A) == 3 for i in range(200))
    assert misses > 170
    # unknown TLDs and single labels (search-list misses, random probes) are NXDOMAIN
    assert _rcode("kjhsdfkjh.", T.A) == 3 and _rcode("printer.invalid.", T.A) == 3
    # Kubernetes: a service exists, a search-list expansion of an outside name does not
    assert _rcode("kube-dns.kube-system.svc.cluster.local.", T.A) == 0
    assert _rcode("api.github.com.default.svc.cluster.local.", T.A) == 3
    # AD DC locator by domain GUID answers SRV
    srv = NET.answer("_ldap._tcp.1c2b3d4e-5a2f-4e71-9a55-2d0e3b0c5f60.domains._msdcs."
                     "corp.fabrikam.com.", T.SRV)
    assert srv.answer and srv.answer[0].rdtype == T.SRV


def test_dkim_keys_are_real_sized():
    r = NET.answer("selector1._domainkey.contoso.com.", T.TXT)
    text = b"".join(r.answer[-1][0].strings)
    assert text.startswith(b"v=DKIM1; k=rsa; p=") and len(text) > 200


def test_rescale_changes_only_time_offsets(tmp_path: Path):
    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    recs = [(1000, 0, b"abc"), (1000, 250_000, b"de"), (1002, 0, b"f")]
    raw = hdr + b"".join(struct.pack("<IIII", s, u, len(b), len(b)) + b for s, u, b in recs)
    src = tmp_path / "a.pcap"
    src.write_bytes(raw)
    assert rescale(src, tmp_path / "b.pcap.gz", 4.0) == 3
    out = gzip.decompress((tmp_path / "b.pcap.gz").read_bytes())
    assert len(out) == len(raw) and out[:24] == hdr
    assert struct.unpack_from("<II", out, 24 + 16 + 3) == (1001, 0)
    assert struct.unpack_from("<II", out, 24 + 2 * 16 + 5) == (1008, 0)
    with pytest.raises(Exception, match="not a classic pcap"):
        rescale_stream(io.BytesIO(b"\x0a\x0d\x0d\x0a" + bytes(40)), io.BytesIO(), 2.0)


def _query_all(resolver: str, source: str, names: list[tuple[str, str]]) -> list[int]:
    out = []
    for n, t in names:
        r = dns.query.udp(dns.message.make_query(n, t), resolver, timeout=3, source=source)
        out.append(r.rcode())
    return out


@pytest.mark.netns
@pytest.mark.parametrize("mode", ["forward", "stub"])
def test_lab_resolves_through_unbound_and_cleans_up(tmp_path: Path, mode: str):
    why = require_root()
    if why:
        pytest.skip(why)
    from lab import Lab, LabConfig
    names = [("www.example.org.", "A"), ("example.org.", "MX"), ("qwzzkjh.", "A"),
             ("2.0.0.127.zen.spamhaus.org.", "A")]
    with Lab(LabConfig(clients=3, seconds=60, mode=mode)) as lab:
        ns = (lab.client_ns, lab.resolver_ns, lab.net_ns)
        assert set(ns) <= set(list_ns())
        cap = lab.capture(tmp_path / "c.pcap")
        egress = lab.capture(tmp_path / "e.pcap", link="egress")
        rcodes = lab.call(_query_all, lab.context().resolver, lab.clients[2], names, timeout=30)
        peer = lab.run(["sh", "-c", f"printf hello | nc -u -w 1 {lab.context().peer} 53 | wc -c"])
        time.sleep(0.3)
        cap.stop()
        egress.stop()
    assert rcodes == [0, 0, 3, 0]
    assert int(peer.stdout) >= 5                      # the non-DNS port-53 peer answered
    assert cap.dropped == 0 and cap.packets >= 2 * len(names) + 2
    seen = subprocess.run(["tcpdump", "-n", "-r", str(cap.path)], capture_output=True,
                          text=True).stdout
    assert "10.77.1.3" in seen and "10.77.0.1.53" in seen
    upstream = subprocess.run(["tcpdump", "-n", "-r", str(egress.path)], capture_output=True,
                              text=True).stdout
    # the resolver's cache misses go out from 10.78.0.1 to the stand-in; clients reach the
    # stand-in only through the resolver (their own packets on the egress link are the
    # routed exchange with the port-53 peer)
    assert "10.78.0.1." in upstream and "10.78.0.53.53" in upstream
    assert not [line for line in upstream.splitlines() if "10.77.1." in line and
                "10.78.0.53" in line]
    assert not set(ns) & set(list_ns())               # namespaces removed
