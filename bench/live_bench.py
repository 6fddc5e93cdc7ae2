"""Live-capture benchmark: the real daemon (``python -m dnsguard run``) on one end of a veth
pair, real DNS frames replayed into the other end by tcpreplay at stepped rates.

Usage (root; from the repository root):

    sudo python bench/live_bench.py [--seconds 60] [--rates 20000,30000,40000,50000,60000,80000]
                                    [--capture ring,socket] [--ring-block-size BYTES]
                                    [--ring-block-count N] [--ring-frame-timeout MS]
                                    [--socket-buffer BYTES[,BYTES...]] [--no-model]
                                    [--pcap FILE ...] [--flood N [--flood-shape torture]]
                                    [--tree DIR] [--pure] [--pps-multi N] [--stop-after N]
                                    [--json results.json]

``--tree DIR`` runs the daemon from another source tree (a snapshot, when this checkout is
being edited: ``git archive HEAD | tar -x -C DIR``); results: docs/daemon.md ("Live capture
benchmark") and bench/live-results.md.

What it does:

1. Builds the traffic: the DNS frames (UDP/TCP port 53) of ``--pcap`` (default: the project's
   own ``pcaps/benign_lookups.pcap`` and ``pcaps/mixed_iodine_and_benign.pcap``, real
   lookups and a real iodine tunnel), concatenated, as Ethernet, with every IPv4 address
   moved into 10.251.0.0/16 (checksums adjusted). The MAC addresses are left as captured:
   they are not the sensor's, so its namespace's IP stack discards the frames at once
   (PACKET_OTHERHOST), while the packet socket sees them as a tap or SPAN port would.
2. Creates two network namespaces (``dgbench-s-TAG``, ``dgbench-p-TAG``) joined by a veth
   pair (``dgbenchTAGs`` / ``dgbenchTAGp``, 10.251.254.1/30 and .2/30). Nothing is routed:
   every frame stays on that pair.
3. For each rate and each capture kind (``--capture``: the TPACKET_V3 ring, then the plain
   socket, back to back so both meet the same machine load): starts a fresh daemon in the
   sensor namespace from a configuration file (``interfaces``, ``capture``, ``ring``,
   ``socket_buffer``, alerts and state in a temporary directory, metrics on
   the namespace's loopback, ``user: nobody``); replays the traffic into the peer end with
   ``tcpreplay --pps RATE --loop N --limit RATE*SECONDS --duration SECONDS --preload-pcap``;
   waits until the daemon has read everything the kernel passed it; reads its Prometheus
   metrics (``dnsguard_kernel_packets_total``: frames that passed the kernel filter, drops
   included; ``dnsguard_kernel_drops_total``: dropped because the socket buffer was full,
   both from the socket's PACKET_STATISTICS; ``dnsguard_captured_frames_total``: frames the
   daemon read); stops it with SIGTERM and checks its own closing line (``stopped: N frames,
   … N kernel drops``). CPU use of the daemon and of tcpreplay, and of the whole machine,
   is taken from /proc over the replay.
4. Prints one row per rate — requested and achieved (tcpreplay's own report) rate, frames
   sent, passed by the kernel, read by the daemon, kernel drops, veth drops, CPU — and the
   highest rate with zero drops.

Every child runs in its own process group and is killed at the end, also on Ctrl-C or
SIGTERM; the namespaces (and with them the veth pair) and the temporary directory are removed
in ``finally``. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PCAPS = [ROOT / "pcaps" / "benign_lookups.pcap",
                 ROOT / "pcaps" / "mixed_iodine_and_benign.pcap"]
DEFAULT_RATES = "20000,30000,40000,50000,60000,80000"
METRICS_PORT = 19253  # on the sensor namespace's own loopback
NET = "10.251"  # every address this benchmark uses or writes is in 10.251.0.0/16
DNS_PORT = 53
HOT_MODULES = ("dnsguard.pipeline", "dnsguard.features.window", "dnsguard.features.payload",
               "dnsguard.features.sketch", "dnsguard.series.store")


# --- the traffic ------------------------------------------------------------------------------
_RAW_IP = {101, 228, 229, 12, 14}  # link types whose frames are bare IP packets
_LINUX_SLL = 113
_ETH = 1
_FAKE_ETH = bytes.fromhex("025300000001" "02530000000a")  # dst, src (as the project's pcaps)


def read_pcap(path: Path):
    """(linktype, frame bytes) of a classic pcap file (either byte order, µs or ns)."""
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            raise ValueError(f"{path}: not a pcap file (too short)")
        magic = head[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            e = "<"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            e = ">"
        else:
            raise ValueError(f"{path}: not a classic pcap file (pcapng? convert it with "
                             "'editcap -F pcap')")
        linktype = struct.unpack(e + "I", head[20:24])[0] & 0x0FFFFFFF
        rec = struct.Struct(e + "IIII")
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            _, _, incl, _ = rec.unpack(h)
            data = f.read(incl)
            if len(data) < incl:
                return
            yield linktype, data


def to_ethernet(linktype: int, data: bytes) -> bytes | None:
    if linktype == _ETH:
        return data
    if linktype in _RAW_IP and data:
        v = data[0] >> 4
        et = b"\x08\x00" if v == 4 else b"\x86\xdd" if v == 6 else None
        return _FAKE_ETH + et + data if et else None
    if linktype == _LINUX_SLL and len(data) >= 16:
        return _FAKE_ETH + data[14:16] + data[16:]
    return None


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _adjust(csum: int, old: bytes, new: bytes) -> int:
    """RFC 1624: the one's-complement checksum after ``old`` (even length) became ``new``."""
    s = ~csum & 0xFFFF
    for i in range(0, len(old), 2):
        s += ~((old[i] << 8) | old[i + 1]) & 0xFFFF
        s += (new[i] << 8) | new[i + 1]
    return ~_fold(s) & 0xFFFF


def rewrite(frame: bytes, port: int = DNS_PORT) -> bytes | None:
    """The frame with its IPv4 addresses moved into 10.251.0.0/16 (low 16 bits kept, IP and
    UDP/TCP checksums adjusted), or None when it is not UDP/TCP to or from ``port``."""
    off = 14
    if len(frame) < off:
        return None
    et = struct.unpack_from("!H", frame, 12)[0]
    while et in (0x8100, 0x88A8, 0x9100) and len(frame) >= off + 4:
        et = struct.unpack_from("!H", frame, off + 2)[0]
        off += 4
    if et == 0x86DD:  # IPv6: kept as captured (no extension headers walked)
        if len(frame) < off + 44 or frame[off + 6] not in (6, 17):
            return None
        sp, dp = struct.unpack_from("!HH", frame, off + 40)
        return frame if port in (sp, dp) else None
    if et != 0x0800 or len(frame) < off + 20:
        return None
    ihl = (frame[off] & 0x0F) * 4
    proto = frame[off + 9]
    frag = struct.unpack_from("!H", frame, off + 6)[0] & 0x1FFF
    l4 = off + ihl
    if proto not in (6, 17) or frag or len(frame) < l4 + 4:
        return None
    sp, dp = struct.unpack_from("!HH", frame, l4)
    if port not in (sp, dp):
        return None
    old = frame[off + 12:off + 20]
    new = bytes((10, 251, old[2], old[3], 10, 251, old[6], old[7]))
    b = bytearray(frame)
    b[off + 12:off + 20] = new
    ipsum = struct.unpack_from("!H", b, off + 10)[0]
    struct.pack_into("!H", b, off + 10, _adjust(ipsum, old, new))
    at = l4 + (6 if proto == 17 else 16)  # UDP or TCP checksum field
    if len(b) >= at + 2:
        c = struct.unpack_from("!H", b, at)[0]
        if proto == 6 or c:  # UDP checksum 0: none was computed; leave it so
            c = _adjust(c, old, new)
            struct.pack_into("!H", b, at, c or (0xFFFF if proto == 17 else 0))
    return bytes(b)


def _flooded(pcaps: list[Path], flood: int, shape: str):
    """(linktype, frame) of ``pcaps`` spread evenly among ``flood`` flood queries
    (run_bench.flood_frames), or of ``pcaps`` alone when ``flood`` is 0."""
    own = [x for p in pcaps for x in read_pcap(p)]
    if not flood:
        yield from own
        return
    from run_bench import flood_frames

    every = max(flood // max(len(own), 1), 1)
    k = 0
    for i, (_, ip) in enumerate(flood_frames(flood, shape)):
        if i % every == 0 and k < len(own):
            yield own[k]
            k += 1
        yield 101, ip
    yield from own[k:]


def build_traffic(pcaps: list[Path], out: Path, flood: int = 0,
                  shape: str = "random") -> dict:
    """Write the DNS frames of ``pcaps`` as one Ethernet pcap, spread among ``flood`` flood
    queries if asked (a tunnel inside a random-subdomain flood); return counts."""
    kept = skipped = bytes_ = 0
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, _ETH))
        t = 1_700_000_000
        for lt, data in _flooded(pcaps, flood, shape):
            eth = to_ethernet(lt, data)
            frame = rewrite(eth) if eth is not None else None
            if frame is None:
                skipped += 1
                continue
            kept += 1
            bytes_ += len(frame)
            usec = kept % 1_000_000  # 1 µs apart: --pps ignores them anyway
            f.write(struct.pack("<IIII", t + kept // 1_000_000, usec, len(frame),
                                len(frame)))
            f.write(frame)
    if not kept:
        raise SystemExit(f"no DNS frames (UDP/TCP port {DNS_PORT}) in "
                         f"{', '.join(map(str, pcaps))}")
    return {"frames": kept, "skipped": skipped, "bytes": bytes_}


# --- processes, namespaces ------------------------------------------------------------------
class Proc:
    """A child in its own process group, output to a file; killed (group) at the end."""

    def __init__(self, cmd: list[str], log: Path, env: dict | None = None,
                 cwd: Path | None = None) -> None:
        self.cmd = cmd
        self.log = log
        self._f = open(log, "wb")  # noqa: SIM115 - closed in kill()
        self.p = subprocess.Popen(cmd, stdout=self._f, stderr=subprocess.STDOUT, env=env,
                                  cwd=cwd, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.p.wait(timeout=10)
        self._f.close()


def run(*cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


class Namespaces:
    def __init__(self, tag: str) -> None:
        self.sensor, self.peer = f"dgbench-s-{tag}", f"dgbench-p-{tag}"
        self.if_s, self.if_p = f"dgbench{tag}s", f"dgbench{tag}p"
        self.created: list[str] = []

    def up(self) -> None:
        for ns in (self.sensor, self.peer):
            run("ip", "netns", "add", ns)
            self.created.append(ns)
        # Created inside the namespaces: the pair never exists in the caller's namespace.
        run("ip", "link", "add", self.if_s, "netns", self.sensor, "type", "veth", "peer",
            "name", self.if_p, "netns", self.peer)
        for ns, ifn, addr in ((self.sensor, self.if_s, f"{NET}.254.1/30"),
                              (self.peer, self.if_p, f"{NET}.254.2/30")):
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "addr", "add", addr, "dev", ifn)
            run("ip", "-n", ns, "link", "set", ifn, "up")

    def down(self) -> None:
        for ns in reversed(self.created):  # deleting a namespace deletes its veth end
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.created.clear()

    def veth_drops(self) -> dict[str, int]:
        """Drop counters of both ends (frames lost before any packet socket)."""
        out = {}
        for ns, ifn, side in ((self.sensor, self.if_s, "sensor"), (self.peer, self.if_p, "peer")):
            r = run("ip", "-n", ns, "-s", "-j", "link", "show", "dev", ifn, check=False)
            try:
                st = json.loads(r.stdout)[0]["stats64"]
                out[f"{side}_rx_dropped"] = st["rx"]["dropped"]
                out[f"{side}_tx_dropped"] = st["tx"]["dropped"]
            except (ValueError, LookupError):
                pass
        return out


def ns_get(ns: str, url: str) -> str | None:
    code = ("import sys, urllib.request\n"
            "try:\n"
            "    sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read()"
            ".decode())\n"
            "except Exception as e:\n"
            "    sys.stderr.write(str(e)); sys.exit(1)\n")
    try:
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, url],
                           capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return None
    return r.stdout if r.returncode == 0 else None


def metrics(ns: str) -> dict[str, float] | None:
    """The daemon's counters that matter here, summed over label sets."""
    body = ns_get(ns, f"http://127.0.0.1:{METRICS_PORT}/metrics")
    if body is None:
        return None
    want = ("dnsguard_kernel_packets_total", "dnsguard_kernel_drops_total",
            "dnsguard_captured_frames_total", "dnsguard_packets_total",
            "dnsguard_processed_batches_total", "dnsguard_processing_seconds_sum",
            "dnsguard_alert_records_total", "dnsguard_parse_errors_total",
            "dnsguard_kernel_freezes_total")
    out: dict = dict.fromkeys(want, 0.0)
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
        if m and m.group(1) in out:
            out[m.group(1)] += float(m.group(3))
        elif m and m.group(1) == "dnsguard_capture_info":
            kind = re.search(r'kind="(\w+)"', m.group(2) or "")
            out["capture_kind"] = kind[1] if kind else None
    return out


# --- CPU from /proc ------------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def queued_bytes(pid: int) -> int | None:
    """Bytes waiting in the receive queues of the packet sockets of ``pid``'s network
    namespace (``Rmem`` of /proc/PID/net/packet: only the daemon's capture socket there). The
    kernel drops a frame when this reaches the socket's buffer (SO_RCVBUF as granted)."""
    try:
        lines = Path(f"/proc/{pid}/net/packet").read_text().splitlines()[1:]
    except OSError:
        return None
    return sum(int(x.split()[6]) for x in lines if len(x.split()) > 6)


def machine_cpu() -> list[int]:
    """Aggregate /proc/stat jiffies: user nice system idle iowait irq softirq steal."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def machine_share(a: list[int], b: list[int]) -> dict[str, float]:
    d = [y - x for x, y in zip(a, b, strict=True)]
    total = sum(d) or 1
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return {n: round(100 * v / total, 1) for n, v in zip(names, d, strict=True)}


# --- one rate ---------------------------------------------------------------------------------
def tcpreplay_report(text: str) -> dict:
    """tcpreplay's closing statistics: packets sent, seconds, achieved rate, failures."""
    out = {}
    m = re.search(r"Actual: (\d+) packets \((\d+) bytes\) sent in ([\d.]+) seconds", text)
    if m:
        out["sent"], out["bytes"], out["seconds"] = int(m[1]), int(m[2]), float(m[3])
    m = re.search(r"Rated: [\d.]+ Bps, ([\d.]+) Mbps, ([\d.]+) pps", text)
    if m:
        out["mbps"], out["pps"] = float(m[1]), float(m[2])
    m = re.search(r"Failed packets:\s+(\d+)", text)
    if m:
        out["failed"] = int(m[1])
    return out


def wait_for(cond, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(every)


def one_rate(rate: int, kind: str, sockbuf: int, args, nsx: Namespaces, traffic: Path,
             frames: int, work: Path, procs: list[Proc]) -> dict:
    cfg = work / "dnsguard.yaml"
    tag = f"{rate}-{kind}-{sockbuf}"
    alerts = work / "alerts" / f"alerts-{tag}.json"
    cfg.write_text(
        f"interfaces: [{nsx.if_s}]\n"
        f"capture: {kind}\n"
        f"socket_buffer: {sockbuf}\n"
        f"ring:\n  block_size: {args.ring_block_size}\n  block_count: "
        f"{args.ring_block_count}\n  frame_timeout: {args.ring_frame_timeout}\n"
        f"alerts: {alerts}\n"
        f"state_dir: {work / f'state-{tag}'}\n"  # no model state carried over
        f"metrics_address: 127.0.0.1:{METRICS_PORT}\n"
        f"model: {'false' if args.no_model else 'true'}\n"
        "user: nobody\n"
        "log_level: info\n")
    log = work / f"sensor-{tag}.log"
    sensor = Proc(["ip", "netns", "exec", nsx.sensor, sys.executable, "-m", "dnsguard", "run",
                   "--config", str(cfg)], log, env=daemon_env(args), cwd=args.tree)
    procs.append(sensor)
    if not wait_for(lambda: "capturing on" in sensor.text() or sensor.p.poll() is not None, 90):
        raise RuntimeError(f"the daemon did not start within 90 s:\n{sensor.text()}")
    if sensor.p.poll() is not None:
        raise RuntimeError(f"the daemon exited with {sensor.p.returncode}:\n{sensor.text()}")
    if not wait_for(lambda: metrics(nsx.sensor) is not None, 20, every=0.5):
        raise RuntimeError(f"no metrics from the daemon:\n{sensor.text()}")
    time.sleep(1.0)  # let start-up settle (model import, first housekeeping)

    limit = rate * args.seconds
    loops = math.ceil(limit / frames) + 1
    cmd = ["ip", "netns", "exec", nsx.peer, "tcpreplay", f"--intf1={nsx.if_p}",
           f"--pps={rate}", f"--loop={loops}", f"--limit={limit}",
           f"--duration={args.seconds}", "--preload-pcap", "--no-flow-stats"]
    if args.pps_multi > 1:
        cmd.append(f"--pps-multi={args.pps_multi}")
    cmd.append(str(traffic))
    veth0 = nsx.veth_drops()
    cpu_d0, mach0, t0 = proc_cpu(sensor.p.pid), machine_cpu(), time.monotonic()
    load0 = os.getloadavg()[0]
    rp = Proc(cmd, work / f"tcpreplay-{tag}.log")
    procs.append(rp)
    cpu_r = 0.0
    queue: list[int] = []  # the capture socket's queued bytes, every 0.1 s
    deadline = time.monotonic() + args.seconds + 60
    while rp.p.poll() is None and time.monotonic() < deadline:
        c = proc_cpu(rp.p.pid)  # sampled until it exits: its last reading is kept
        cpu_r = c if c is not None else cpu_r
        q = queued_bytes(sensor.p.pid)
        if q is not None:
            queue.append(q)
        time.sleep(0.1)
    if rp.p.poll() is None:
        rp.kill()
        raise RuntimeError(f"tcpreplay did not finish within {args.seconds + 60} s")
    t1 = time.monotonic()
    cpu_d1, mach1 = proc_cpu(sensor.p.pid), machine_cpu()
    rp.kill()  # closes its log
    rep = tcpreplay_report(rp.text())
    if "sent" not in rep:
        raise RuntimeError(f"tcpreplay failed:\n{rp.text()}")
    # Drained: everything the kernel passed has been read or counted as dropped, and the
    # counters (read once a second by the daemon) have stopped moving.
    last: dict = {}

    def drained() -> bool:
        m = metrics(nsx.sensor)
        if m is None:
            return False
        stable = m == last.get("m")
        last["m"] = m
        kp = m["dnsguard_kernel_packets_total"]
        return stable and kp > 0 and (m["dnsguard_captured_frames_total"]
                                      + m["dnsguard_kernel_drops_total"] >= kp)

    t_drain = time.monotonic()
    wait_for(drained, 120, every=1.0)
    drain_s = time.monotonic() - t_drain
    m = last.get("m") or {}
    veth1 = nsx.veth_drops()
    sensor.p.send_signal(signal.SIGTERM)  # ip netns exec execs: this is the daemon
    try:
        rc = sensor.p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        rc = None
    sensor.kill()
    text = sensor.text()
    alerted: dict[str, int] = {}  # domain (or client) → alerts: is the tunnel among them?
    try:
        for line in alerts.read_text().splitlines():
            a = json.loads(line)
            who = a.get("domain") or a.get("src_ip") or "?"
            alerted[who] = alerted.get(who, 0) + 1
    except (OSError, ValueError):
        pass
    stopped = re.search(r"stopped: (\d+) frames, .* (\d+) kernel drops", text)
    buf = re.search(r"socket receive buffer (?:only )?(\d+) bytes", text)
    wall = t1 - t0
    kp = int(m.get("dnsguard_kernel_packets_total", 0))
    drops = int(m.get("dnsguard_kernel_drops_total", 0))
    captured = int(m.get("dnsguard_captured_frames_total", 0))
    veth = {k: veth1.get(k, 0) - veth0.get(k, 0) for k in veth1}
    batches = m.get("dnsguard_processed_batches_total", 0) or 0
    # How full the socket buffer got: zero drops with a buffer filling up means it absorbed
    # a deficit that a longer run would overflow.
    granted = int(buf[1]) if buf else 0
    tail = queue[-max(1, len(queue) // 10):]  # the last tenth of the run

    def fill(b: float) -> float | None:
        return round(100 * b / granted, 1) if granted and queue else None
    row = {
        "rate": rate,
        "capture": kind,
        "capture_used": m.get("capture_kind"),  # "socket" after a fallback
        "socket_buffer": sockbuf if kind == "socket" else None,
        "ring_bytes": args.ring_block_size * args.ring_block_count if kind == "ring" else None,
        "achieved_pps": round(rep.get("pps", 0)),
        "sent": rep["sent"],
        "tcpreplay_seconds": rep.get("seconds"),
        "tcpreplay_failed": rep.get("failed", 0),
        "kernel_packets": kp,
        "captured": captured,
        "processed": int(m.get("dnsguard_packets_total", 0)),
        "kernel_drops": drops,
        "kernel_freezes": int(m.get("dnsguard_kernel_freezes_total", 0)),
        "lost_before_socket": rep["sent"] - kp,
        "veth_drops": veth,
        "zero_drops": drops == 0 and rep["sent"] == kp == captured
        and not any(veth.values()),
        "daemon_cpu_pct": round(100 * (cpu_d1 - cpu_d0) / wall, 1)
        if cpu_d0 is not None and cpu_d1 is not None else None,
        # CPU time per frame read during the replay (the drain after it is not in cpu_d1)
        "daemon_cpu_us_per_frame": round(1e6 * (cpu_d1 - cpu_d0) / captured, 1)
        if cpu_d0 is not None and cpu_d1 is not None and captured else None,
        "tcpreplay_cpu_pct": round(100 * cpu_r / wall, 1),
        "machine_cpu_pct": machine_share(mach0, mach1),
        "load_average_before": round(load0, 2),
        "frames_per_batch": round(captured / batches, 1) if batches else None,
        "busy_pct": round(100 * m.get("dnsguard_processing_seconds_sum", 0) / wall, 1),
        "drain_seconds": round(drain_s, 1),
        "queue_max_pct": fill(max(queue, default=0)),
        "queue_mean_pct": fill(sum(queue) / len(queue)) if queue else None,
        "queue_last_tenth_mean_pct": fill(sum(tail) / len(tail)) if queue else None,
        "alerts": int(m.get("dnsguard_alert_records_total", 0)),
        "alerted": dict(sorted(alerted.items(), key=lambda kv: -kv[1])[:10]),
        "socket_buffer_granted": int(buf[1]) if buf and kind == "socket" else None,
        "daemon_exit": rc,
        "daemon_stopped_line": (f"{stopped[1]} frames, {stopped[2]} kernel drops"
                                if stopped else None),
    }
    if "Traceback" in text or rc != 0:
        row["daemon_log_tail"] = text[-2000:]
    if "running it interpreted" in text:
        row["stale_compiled_modules"] = re.findall(r"(\S+\.py): the source changed", text)
    return row


# --- the report -------------------------------------------------------------------------------
def machine(tree: Path) -> dict:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    tr = run("tcpreplay", "--version", check=False)
    info = {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(),
            "tcpreplay": (tr.stdout or tr.stderr).splitlines()[0] if (tr.stdout or tr.stderr)
            else "?",
            "rmem_max": Path("/proc/sys/net/core/rmem_max").read_text().strip(),
            "netdev_max_backlog": Path("/proc/sys/net/core/netdev_max_backlog").read_text()
            .strip()}
    g = run("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD", check=False)
    d = run("git", "-C", str(ROOT), "status", "--porcelain", check=False)
    info["git"] = g.stdout.strip() + (" (uncommitted changes)" if d.stdout.strip() else "")
    info["daemon_tree"] = str(tree)
    return info


def daemon_env(args) -> dict:
    """The daemon's environment: ``--tree`` first on the path, ``--pure`` as DNSGUARD_PURE."""
    env = dict(os.environ)
    if args.pure:
        env["DNSGUARD_PURE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(args.tree), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def compiled_status(args) -> dict:
    """Which hot-path modules the daemon would load compiled (the checkout may carry
    Cython builds of them)."""
    code = ("import importlib, json, sys\n"
            f"mods = {list(HOT_MODULES)!r}\n"
            "out = {}\n"
            "for m in mods:\n"
            "    try:\n"
            "        f = importlib.import_module(m).__file__ or ''\n"
            "    except Exception as e:\n"
            "        f = f'error: {e}'\n"
            "    out[m.rsplit('.', 1)[1]] = 'compiled' if f.endswith(('.so', '.pyd')) "
            "else 'interpreted'\n"
            "import dnsguard\n"
            "out['dnsguard'] = dnsguard.__file__\n"
            "print(json.dumps(out))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=daemon_env(args), cwd=args.tree)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (r.stderr or r.stdout)[-300:]}


def mib(b: int | None) -> str:
    return f"{(b or 0) / (1 << 20):g} MiB"


def table(rows: list[dict]) -> str:
    head = ("| requested pps | capture | buffer (granted) | achieved pps | sent | kernel passed "
            "| daemon read | kernel drops | ring freezes "
            "| other loss | zero drops | buffer fill max / mean | daemon CPU | tcpreplay CPU "
            "| machine idle | frames/batch | daemon CPU µs/frame |")
    out = [head, "|" + "|".join(["---:"] * (head.count("|") - 1)) + "|"]
    for r in rows:
        other = r["lost_before_socket"] + sum(r["veth_drops"].values())
        if r["capture"] == "ring":
            buf = f"ring {mib(r['ring_bytes'])}"
        else:
            buf = f"{mib(r['socket_buffer'])} ({mib(r['socket_buffer_granted'])})"
        fill = ("—" if r["queue_max_pct"] is None
                else f"{r['queue_max_pct']}% / {r['queue_mean_pct']}%")
        kind = r["capture"] if r["capture_used"] in (None, r["capture"]) else \
            f"{r['capture']} (fell back to {r['capture_used']})"
        out.append(
            f"| {r['rate']:,} | {kind} | {buf} | "
            f"{r['achieved_pps']:,} | "
            f"{r['sent']:,} | "
            f"{r['kernel_packets']:,} | {r['captured']:,} | {r['kernel_drops']:,} | "
            f"{r['kernel_freezes']:,} | "
            f"{other:,} | {'yes' if r['zero_drops'] else 'no'} | "
            f"{fill} | "
            f"{r['daemon_cpu_pct']}% | {r['tcpreplay_cpu_pct']}% | "
            f"{r['machine_cpu_pct'].get('idle')}% | {r['frames_per_batch']} | "
            f"{r['daemon_cpu_us_per_frame']} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60, help="replay time per rate (default 60)")
    ap.add_argument("--rates", default=DEFAULT_RATES,
                    help=f"requested packets/s, comma-separated (default {DEFAULT_RATES})")
    ap.add_argument("--socket-buffer", default=str(8 << 20),
                    help="the daemon's socket_buffer, bytes (default 8388608); several, "
                    "comma-separated: each rate is run with each, back to back (a fair "
                    "comparison on a machine whose load changes)")
    ap.add_argument("--capture", default="ring,socket",
                    help="capture kinds, comma-separated (default ring,socket: each rate is "
                    "run with the ring and then with the socket, back to back)")
    ap.add_argument("--ring-block-size", type=int, default=1 << 18,
                    help="ring.block_size, bytes (default 262144, the daemon's)")
    ap.add_argument("--ring-block-count", type=int, default=128,
                    help="ring.block_count (default 128)")
    ap.add_argument("--ring-frame-timeout", type=int, default=50,
                    help="ring.frame_timeout, ms (default 50)")
    ap.add_argument("--no-model", action="store_true", help="rules only (model: false)")
    ap.add_argument("--pure", action="store_true",
                    help="DNSGUARD_PURE=1: the hot path interpreted even if compiled")
    ap.add_argument("--tree", type=Path, default=ROOT,
                    help="run the daemon from this source tree (default: this checkout), e.g. "
                    "a snapshot made with 'git archive HEAD | tar -x -C DIR' while the "
                    "checkout is being edited")
    ap.add_argument("--pcap", type=Path, nargs="+", default=DEFAULT_PCAPS,
                    help="classic pcap files to take the DNS frames from")
    ap.add_argument("--flood", type=int, default=0, metavar="N",
                    help="spread the --pcap frames among N flood queries (run_bench.py's "
                    "flood_frames; e.g. --pcap pcaps/iodine_null.pcap --flood 1000000: does "
                    "the tunnel still alert, with no drop?)")
    ap.add_argument("--flood-shape", choices=("random", "torture"), default="random")
    ap.add_argument("--pps-multi", type=int, default=1,
                    help="tcpreplay --pps-multi: packets sent per timing interval (default 1)")
    ap.add_argument("--stop-after", type=int, default=0, metavar="N",
                    help="stop after N consecutive rates with drops (default 0: run them all)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args(argv)
    args.tree = args.tree.resolve()
    if not (args.tree / "dnsguard" / "__main__.py").is_file():
        ap.error(f"--tree {args.tree}: no dnsguard package there")
    rates = [int(x) for x in args.rates.split(",") if x.strip()]
    if not rates or min(rates) <= 0 or not 1 <= args.seconds <= 3600:
        ap.error("rates must be positive and --seconds 1..3600")
    try:
        buffers = [int(x) for x in args.socket_buffer.split(",") if x.strip()]
    except ValueError:
        ap.error("--socket-buffer: integers (bytes), comma-separated")
    if not buffers or not all((64 << 10) <= b <= (1 << 30) for b in buffers):
        ap.error("--socket-buffer must be 65536..1073741824 bytes (the daemon's range)")
    kinds = [k.strip() for k in args.capture.split(",") if k.strip()]
    if not kinds or not set(kinds) <= {"ring", "socket"}:
        ap.error("--capture: ring, socket or both, comma-separated")
    # The ring's shape is checked by the daemon's own rules (config ring.*).
    sys.path.insert(0, str(args.tree))
    from dnsguard.capture.ring import RingGeometry

    problem = RingGeometry(args.ring_block_size, args.ring_block_count,
                           args.ring_frame_timeout).problem()
    if problem:
        ap.error(f"--ring-*: {problem}")
    # Each rate: the ring once, the socket once per socket buffer.
    variants = [(k, b) for k in kinds for b in (buffers if k == "socket" else buffers[:1])]
    if os.geteuid() != 0:
        ap.error("needs root (network namespaces, packet sockets)")
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} is not installed")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too: a shell starts
        signal.signal(sig, on_term)  # background jobs with it ignored, and we must clean up
    tag = str(os.getpid() % 100000)
    nsx = Namespaces(tag)
    procs: list[Proc] = []
    work = Path(tempfile.mkdtemp(prefix="dgbench-"))
    rows: list[dict] = []
    info: dict = {}
    try:
        os.chmod(work, 0o755)  # the daemon writes here after becoming nobody
        import pwd

        nobody = pwd.getpwnam("nobody")
        (work / "alerts").mkdir()
        os.chown(work / "alerts", nobody.pw_uid, nobody.pw_gid)
        traffic = work / "traffic.pcap"
        tinfo = build_traffic(args.pcap, traffic, args.flood, args.flood_shape)
        info = {"machine": machine(args.tree), "hot_path": compiled_status(args),
                "traffic": {**tinfo, "from": [str(p) for p in args.pcap],
                            "flood": args.flood, "flood_shape": args.flood_shape},
                "seconds": args.seconds, "socket_buffers": buffers, "captures": kinds,
                "ring": {"block_size": args.ring_block_size,
                         "block_count": args.ring_block_count,
                         "frame_timeout": args.ring_frame_timeout},
                "model": not args.no_model, "pps_multi": args.pps_multi,
                "command": " ".join([Path(sys.executable).name, *sys.argv])}
        print(json.dumps(info, indent=1), flush=True)
        nsx.up()
        bad = 0
        for rate in rates:
            clean = False
            for kind, sockbuf in variants:
                row = one_rate(rate, kind, sockbuf, args, nsx, traffic, tinfo["frames"], work,
                               procs)
                rows.append(row)
                print(json.dumps(row), flush=True)
                clean = clean or row["zero_drops"]
            bad = 0 if clean else bad + 1
            if args.stop_after and bad >= args.stop_after:
                print(f"stopping: {bad} consecutive rates with drops", flush=True)
                break
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        print(f"live_bench: {e}", file=sys.stderr)
        return 1
    finally:
        for p in reversed(procs):
            p.kill()
        nsx.down()
        shutil.rmtree(work, ignore_errors=True)
        if rows:
            print()
            print(table(rows))
            print()
            for kind, sockbuf in dict.fromkeys((r["capture"], r["socket_buffer"])
                                               for r in rows):
                ok = [r for r in rows if r["zero_drops"] and r["capture"] == kind
                      and r["socket_buffer"] == sockbuf]
                what = (f"socket, socket_buffer {sockbuf:,}" if kind == "socket" else
                        f"ring {mib(args.ring_block_size * args.ring_block_count)}")
                if ok:
                    best = max(ok, key=lambda r: r["achieved_pps"])
                    print(f"{what}: highest rate with zero drops {best['achieved_pps']:,} "
                          f"packets/s achieved ({best['rate']:,} requested), "
                          f"{best['sent']:,} frames in {best['tcpreplay_seconds']} s")
                else:
                    print(f"{what}: no rate without drops")
            if args.json:
                args.json.write_text(json.dumps({**info, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
