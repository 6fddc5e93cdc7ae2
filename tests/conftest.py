"""Shared helpers for the tests: craft DNS payloads and frames with scapy, write pcap and pcapng
bytes by hand (where scapy cannot: several link types, if_tsresol, damage), build a pipeline.

Test modules import the helpers with ``from conftest import ...`` (pytest puts this directory on
``sys.path`` because ``tests`` is not a package).
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from dnsguard.detect.rules import RuleSet, load_dir
from dnsguard.pipeline import Pipeline
from dnsguard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "rules"
PORTS = frozenset({53})

# What the live-capture tests (test_daemon_netns.py) run, command → Debian package: they skip
# without it. README.md names them and .ci/run installs them (tests/test_docs_agree.py).
LIVE_TOOLS = {"ip": "iproute2", "tcpreplay": "tcpreplay", "prometheus": "prometheus"}

CLIENT4, SERVER4 = "192.0.2.10", "198.51.100.53"
CLIENT6, SERVER6 = "2001:db8::10", "2001:db8::53"


# --- DNS payloads -----------------------------------------------------------------------------
def dns_query(name: str = "www.example.com", qtype: str | int = "A", qid: int = 0x1234) -> bytes:
    return bytes(DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype=qtype)))


def dns_response(name: str = "www.example.com", qid: int = 0x1234,
                 answers: tuple = (("A", "192.0.2.1"),)) -> bytes:
    an = [DNSRR(rrname=name, type=t, rdata=r, ttl=60) for t, r in answers]
    return bytes(DNS(id=qid, qr=1, rd=1, ra=1, qd=DNSQR(qname=name),
                     an=an or None, ancount=len(an)))


def header(qid: int = 1, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def wire_name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"


# --- frames ------------------------------------------------------------------------------------
def udp4(payload: bytes, sport: int = 40000, dport: int = 53, src: str = CLIENT4,
         dst: str = SERVER4):
    return IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload


def udp6(payload: bytes, sport: int = 40000, dport: int = 53, src: str = CLIENT6,
         dst: str = SERVER6):
    return IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload


def tcp4(payload: bytes, seq: int, flags: str = "PA", sport: int = 40000, dport: int = 53,
         src: str = CLIENT4, dst: str = SERVER4):
    return IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, seq=seq, flags=flags) / payload


def eth(pkt) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt)


# --- pcap / pcapng bytes -----------------------------------------------------------------------
def pcap_header(linktype: int = 1, endian: str = "<", nano: bool = False,
                snaplen: int = 65535, modified: bool = False) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2CD34 if modified else 0xA1B2C3D4
    return struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(sec: int, frac: int, data: bytes, wirelen: int | None = None,
                endian: str = "<", caplen: int | None = None, modified: bool = False) -> bytes:
    hdr = struct.pack(endian + "IIII", sec, frac, len(data) if caplen is None else caplen,
                      len(data) if wirelen is None else wirelen)
    if modified:
        hdr += struct.pack(endian + "IHBx", 2, 0x0800, 0)
    return hdr + data


def pcap_bytes(frames: list[tuple[int, int, bytes]], linktype: int = 1, endian: str = "<",
               nano: bool = False) -> bytes:
    """A pcap file from ``(seconds, fraction, data)`` tuples (fraction in the file's unit)."""
    return pcap_header(linktype, endian, nano) + b"".join(
        pcap_record(s, f, d, endian=endian) for s, f, d in frames)


def ng_block(btype: int, body: bytes, endian: str = "<", length: int | None = None) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    blen = 12 + len(body) if length is None else length
    return struct.pack(endian + "II", btype, blen) + body + struct.pack(endian + "I", blen)


def ng_shb(endian: str = "<") -> bytes:
    return ng_block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1), endian)


def ng_option(code: int, value: bytes, endian: str = "<") -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def ng_idb(linktype: int, tsresol: int | None = None, tsoffset: int | None = None,
           endian: str = "<", raw_options: bytes | None = None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += ng_option(9, bytes([tsresol]), endian)
    if tsoffset is not None:
        opts += ng_option(14, struct.pack(endian + "q", tsoffset), endian)
    if opts:
        opts += struct.pack(endian + "HH", 0, 0)
    if raw_options is not None:
        opts = raw_options
    return ng_block(1, struct.pack(endian + "HHI", linktype, 0, 262144) + opts, endian)


def ng_epb(iface: int, ticks: int, data: bytes, wirelen: int | None = None,
           endian: str = "<") -> bytes:
    body = struct.pack(endian + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                       len(data) if wirelen is None else wirelen) + data
    return ng_block(6, body, endian)


def ng_spb(data: bytes, endian: str = "<") -> bytes:
    return ng_block(3, struct.pack(endian + "I", len(data)) + data, endian)


# --- pipeline ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ruleset() -> RuleSet:
    return load_dir(RULES_DIR)


@pytest.fixture
def make_pipe(ruleset):
    """``make_pipe(settings=None) -> (pipeline, alerts list)``."""

    def make(settings: Settings | None = None) -> tuple[Pipeline, list[dict]]:
        alerts: list[dict] = []
        return Pipeline(settings or Settings(), ruleset, alerts.append), alerts

    return make


def memory_now() -> tuple[int, int]:
    """(Python allocated blocks, RSS in bytes) after a full collection: memory-flatness tests
    compare these between the halves of a long run."""
    import gc
    import os
    import sys

    gc.collect()
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return sys.getallocatedblocks(), rss


# --- processes in the end-to-end tests --------------------------------------------------------

def wait_for(what: str, cond, timeout: float, diag=None, *, every: float = 0.2):
    """Poll ``cond`` until it is true (and return it); fail after ``timeout`` seconds, naming
    ``what`` and adding ``diag()`` (e.g. the sensor's log)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            extra = f"\n{diag()}" if diag else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(every)


class Proc:
    """A background process in its own session, output to ``log``; ``stop`` signals it and
    then kills the whole group, whatever happens."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._f = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(cmd, stdout=self._f, stderr=subprocess.STDOUT,
                                  start_new_session=True, env=env)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGKILL, timeout: float = 20) -> int | None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=10)
        self._f.close()
        return self.p.returncode

    def kill(self) -> None:
        self.stop()
