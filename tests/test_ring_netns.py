"""The TPACKET_V3 ring and the fanout program on real AF_PACKET sockets.

Two network namespaces joined by a veth pair; frames are sent into one end with a packet
socket (exact bytes, a known count) and read at the other end by ``capture.ring`` (and, for
comparison, the plain socket) in a reader process inside the namespace. Checks: every frame
sent arrives once, byte for byte and in order, also when the ring wraps; a ring left full
counts drops and freezes (``PACKET_STATISTICS``, ``tp_freeze_q_cnt``) that add up with what
was read to what was sent; a fanout group gives both directions of an address pair to the
same member, the one :func:`dnsguard.capture.fanout.fanout_index` predicts.

Needs root and ``ip netns``; skipped otherwise. Names start with ``rin``; namespaces are
removed at the end, also on failure; every wait is bounded. Cost: about 10 s in all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[1]
PCAPS = [ROOT / "pcaps" / "benign_lookups.pcap", ROOT / "pcaps" / "mixed_iodine_and_benign.pcap"]

# Runs inside the sensor namespace: opens the captures, says "ready", reads (during the
# sending, or only once told it is over), prints what each capture got as JSON.
READER = r"""
import hashlib, json, select, sys, time
from dnsguard.capture.live import CaptureOptions, open_capture
from dnsguard.capture.ring import RingGeometry

a = json.loads(sys.argv[1])
caps = [open_capture(a["iface"], frozenset({53}),
                     CaptureOptions(kind=a["kind"], geometry=RingGeometry(**a["geometry"]),
                                    fanout=a.get("fanout")))
        for _ in range(a.get("sockets", 1))]
for c in caps:
    c.start()
got = [[] for _ in caps]
print("ready", flush=True)

def feeder(k):
    def feed(ts, lt, data, wirelen):
        got[k].append((hashlib.sha1(data).hexdigest(), ts, lt, wirelen, data[26:34].hex()
                       if data[12:14] == b"\x08\x00" else data[22:54].hex()))
    return feed

feeds = [feeder(k) for k in range(len(caps))]
done = False
if not a["concurrent"]:
    sys.stdin.readline()
    done = True
quiet_since = None
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    fds = [sys.stdin] if not done else []
    r, _, _ = select.select(fds + caps, [], [], 0.05)
    if sys.stdin in r:
        sys.stdin.readline()
        done = True
    n = sum(c.read(f) for c, f in zip(caps, feeds))
    if n:
        quiet_since = None
    elif done:
        quiet_since = quiet_since or time.monotonic()
        if time.monotonic() - quiet_since > 0.6:  # > frame_timeout: every block retired
            break
out = []
for c, g in zip(caps, got):
    c.poll_stats()
    out.append({"kind": c.kind, "got": g, "kernel_packets": c.kernel_packets,
                "kernel_drops": c.kernel_drops, "kernel_freezes": c.kernel_freezes,
                "frames": c.frames, "read_errors": c.read_errors})
    c.close()
print(json.dumps(out), flush=True)
"""

# Runs in the peer namespace: sends the frames of a file (u32 length + bytes each), in
# chunks with a pause between them (the reader runs interpreted on a shared machine).
SENDER = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
chunk, pause = int(sys.argv[3]), float(sys.argv[4])
buf = open(sys.argv[2], "rb").read()
pos = n = 0
while pos < len(buf):
    (ln,) = struct.unpack_from("<I", buf, pos)
    s.send(buf[pos + 4:pos + 4 + ln])
    pos += 4 + ln
    n += 1
    if chunk and n % chunk == 0:
        time.sleep(pause)
print(n)
"""


def _need() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, AF_PACKET capture)")
    if shutil.which("ip") is None:
        pytest.skip("ip not installed")
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
    if r.returncode != 0:
        pytest.skip(f"'ip netns' unavailable: {r.stderr.decode().strip()}")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=True)


@pytest.fixture
def pair():
    """(sensor ns, its interface, peer ns, peer interface), removed afterwards."""
    _need()
    tag = f"{os.getpid() % 100000}"
    ns_s, ns_p, if_s, if_p = f"rin-s-{tag}", f"rin-p-{tag}", f"rin{tag}s", f"rin{tag}p"
    made: list[str] = []
    try:
        for ns in (ns_s, ns_p):
            try:
                _ip("netns", "add", ns)
            except subprocess.CalledProcessError as e:
                pytest.skip(f"cannot create a network namespace: {e.stderr.strip()}")
            made.append(ns)
        _ip("link", "add", if_s, "type", "veth", "peer", "name", if_p)
        _ip("link", "set", if_s, "netns", ns_s)
        _ip("link", "set", if_p, "netns", ns_p)
        for ns, ifn in ((ns_s, if_s), (ns_p, if_p)):
            _ip("-n", ns, "link", "set", "lo", "up")  # a sensor's metrics listen there
            _ip("-n", ns, "link", "set", ifn, "up")
        yield ns_s, if_s, ns_p, if_p
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        subprocess.run(["ip", "link", "del", if_s], capture_output=True, timeout=20)


def pcap_frames() -> list[bytes]:
    """The DNS frames of the project's own captures (Ethernet), as captured."""
    from dnsguard.capture.pcapfile import CaptureReader, open_capture

    out = []
    for p in PCAPS:
        for _ts, lt, data, wirelen in CaptureReader(open_capture(p), p.name):
            assert lt == 1 and len(data) == wirelen
            out.append(bytes(data))
    return out


def run_capture(pair, tmp: Path, frames: list[bytes], *, kind: str = "ring",
                geometry: dict | None = None, concurrent: bool = True, sockets: int = 1,
                fanout: int | None = None, chunk: int = 200, pause: float = 0.01) -> list:
    ns_s, if_s, ns_p, if_p = pair
    blob = tmp / "frames.bin"
    blob.write_bytes(b"".join(len(f).to_bytes(4, "little") + f for f in frames))
    args = {"iface": if_s, "kind": kind, "concurrent": concurrent, "sockets": sockets,
            "fanout": fanout,
            "geometry": geometry or {"block_size": 1 << 16, "block_count": 8,
                                     "frame_timeout": 20}}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reader = subprocess.Popen(["ip", "netns", "exec", ns_s, sys.executable, "-c", READER,
                               json.dumps(args)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, start_new_session=True)
    try:
        line = reader.stdout.readline()
        assert line.strip() == "ready", line + reader.stderr.read()
        sent = subprocess.run(["ip", "netns", "exec", ns_p, sys.executable, "-c", SENDER,
                               if_p, str(blob), str(chunk), str(pause)],
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        assert int(sent.stdout) == len(frames)
        time.sleep(0.1)
        out, err = reader.communicate("done\n", timeout=90)
        assert reader.returncode == 0, err
        return json.loads(out)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait(timeout=10)


def digest(f: bytes) -> str:
    return hashlib.sha1(f).hexdigest()


@pytest.mark.parametrize("kind", ["ring", "socket"])
def test_every_frame_sent_arrives_once_in_order(pair, tmp_path, kind):
    """~3,500 real DNS frames through a 512 KiB ring (it wraps several times): each arrives
    once, byte for byte, in order, with the kernel's timestamp; the kernel's counters agree.
    The plain socket, run the same way, gets the same frames."""
    frames = pcap_frames() * 3
    t0 = time.time()
    (cap,) = run_capture(pair, tmp_path, frames, kind=kind)
    t1 = time.time()
    got = cap["got"]
    assert cap["kind"] == kind
    assert [g[0] for g in got] == [digest(f) for f in frames]
    assert [g[3] for g in got] == [len(f) for f in frames]  # wire length = captured length
    assert all(g[2] == 1 for g in got)  # Ethernet
    ts = [g[1] for g in got]
    assert t0 - 1 <= ts[0] and ts[-1] <= t1 + 1 and ts == sorted(ts)
    assert cap["kernel_packets"] == cap["frames"] == len(frames)
    assert cap["kernel_drops"] == 0 and cap["kernel_freezes"] == 0 and not cap["read_errors"]


def test_a_full_ring_counts_drops_and_freezes(pair, tmp_path):
    """A ring of two 64 KiB blocks not read while ~3,500 frames arrive: the kernel fills both
    blocks, freezes the queue and drops the rest. What was read is the first frames, in
    order; read + dropped = passed by the filter = sent."""
    frames = pcap_frames() * 3
    (cap,) = run_capture(pair, tmp_path, frames, concurrent=False,
                         geometry={"block_size": 1 << 16, "block_count": 2,
                                   "frame_timeout": 20}, chunk=0)
    got = [g[0] for g in cap["got"]]
    assert 0 < len(got) < len(frames) // 2
    assert got == [digest(f) for f in frames[:len(got)]]
    assert cap["kernel_drops"] > 0 and cap["kernel_freezes"] >= 1, cap | {"got": len(got)}
    assert cap["kernel_packets"] == len(frames) == len(got) + cap["kernel_drops"]


def _pair_frames(n_pairs: int) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """A query (client → server, port 53) and its response back for ``n_pairs`` address
    pairs, IPv4 and IPv6; and the (client, server) packed addresses of each."""
    import ipaddress

    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    frames, pairs = [], []
    for i in range(n_pairs):
        q = DNS(id=i, rd=1, qd=DNSQR(qname=f"h{i}.example.com"))
        r = DNS(id=i, qr=1, qd=DNSQR(qname=f"h{i}.example.com"))
        if i % 4 == 3:
            c, s, L3 = f"2001:db8::{i + 1:x}", f"2001:db8:53::{i % 3 + 1:x}", IPv6
        else:
            c, s, L3 = f"198.51.{i // 200}.{i % 200 + 1}", f"192.0.2.{i % 3 + 53}", IP
        frames.append(bytes(eth / L3(src=c, dst=s) / UDP(sport=30000 + i, dport=53) / q))
        frames.append(bytes(eth / L3(src=s, dst=c) / UDP(sport=53, dport=30000 + i) / r))
        pairs.append((ipaddress.ip_address(c).packed, ipaddress.ip_address(s).packed))
    return frames, pairs


@pytest.mark.parametrize("members", [2, 3])
def test_fanout_sends_both_directions_of_a_pair_to_one_member(pair, tmp_path, members):
    """Queries and responses of 120 client/server pairs (IPv4 and IPv6) into a fanout group of
    ring sockets: every frame reaches exactly one member, both directions of a pair the same
    one, the member fanout_index() predicts (the classic-BPF program and its Python twin
    agree), and every member gets a share."""
    from dnsguard.capture.fanout import fanout_index

    frames, pairs = _pair_frames(120)
    caps = run_capture(pair, tmp_path, frames, sockets=members,
                       fanout=(os.getpid() + members) & 0xFFFF)
    where: dict[str, list[int]] = {}
    for k, cap in enumerate(caps):
        assert cap["kernel_drops"] == 0
        for g in cap["got"]:
            where.setdefault(g[0], []).append(k)
    assert sorted(where) == sorted(digest(f) for f in frames)
    assert all(len(v) == 1 for v in where.values())  # each frame once
    for i, (c, s) in enumerate(pairs):
        q, r = where[digest(frames[2 * i])][0], where[digest(frames[2 * i + 1])][0]
        assert q == r == fanout_index(c, s, members), (i, q, r)
    shares = [len(cap["got"]) for cap in caps]
    assert min(shares) >= len(frames) // (members * 3), shares
