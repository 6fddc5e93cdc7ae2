"""Daemon pieces that need no privileges: privilege-drop decisions, journald log lines,
sd_notify datagrams, the kernel filter text and link types, the capture loop's garbage-collector
setting, the socket buffer obtained."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from dnsguard import daemon
from dnsguard.capture import live


def test_unprivileged_start_changes_no_user(monkeypatch):
    monkeypatch.setattr(daemon.os, "geteuid", lambda: 1000)  # e.g. systemd DynamicUser=yes
    assert daemon.target_user(None) is None
    assert daemon.target_user("nobody") is None


def test_root_becomes_the_configured_or_default_user(monkeypatch):
    monkeypatch.setattr(daemon.os, "geteuid", lambda: 0)
    assert daemon.target_user("nobody").pw_name == "nobody"
    assert daemon.target_user("root") is None  # explicitly staying root
    default = daemon.target_user(None).pw_name
    assert default in ("dnsguard", "nobody")
    with pytest.raises(LookupError, match="does-not-exist"):
        daemon.target_user("does-not-exist")


def _record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("dnsguard.daemon", level, __file__, 1, msg, None, None)


def test_log_lines_for_journald():
    plain = daemon.JournalFormatter(journal=False)
    assert plain.format(_record(logging.WARNING, "a\nb")) == "WARNING dnsguard.daemon: a | b"
    j = daemon.JournalFormatter(journal=True)
    assert j.format(_record(logging.ERROR, "x")) == "<3>ERROR dnsguard.daemon: x"
    assert j.format(_record(logging.INFO, "x")).startswith("<6>INFO ")


@pytest.mark.parametrize("abstract", [False, True])
def test_sd_notify(tmp_path, monkeypatch, abstract):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"dnsguard-test-{id(srv)}"
        srv.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    else:
        path = str(tmp_path / "notify")
        srv.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
    srv.settimeout(5)
    n = daemon.Notifier()
    try:
        assert n.notify("READY=1", "STATUS=capturing on eth0")
        assert srv.recv(1024) == b"READY=1\nSTATUS=capturing on eth0"
        assert n.notify("STOPPING=1")
        assert srv.recv(1024) == b"STOPPING=1"
    finally:
        n.close()
        srv.close()


def test_no_notify_socket_is_silent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert daemon.Notifier().notify("READY=1") is False


def test_bpf_filter_text_and_compiles():
    assert live.bpf_filter(frozenset({53})) == "port 53 or (vlan and port 53)"
    f = live.bpf_filter(frozenset({5353, 53}))
    assert f == "(port 53 or port 5353) or (vlan and (port 53 or port 5353))"
    try:
        from scapy.arch.common import compile_filter

        prog = compile_filter(f, linktype=1)  # libpcap; no interface, no privileges
    except ImportError as e:
        pytest.skip(f"libpcap unavailable: {e}")
    assert prog.bf_len > 10


def test_link_types():
    assert live.linktype_of(1) == 1  # Ethernet
    assert live.linktype_of(772) == 1  # loopback: zeroed Ethernet header
    assert live.linktype_of(65534) == 101  # tun, WireGuard: raw IP
    assert live.linktype_of(801) is None  # 802.11 (radiotap): refused at start


# --- the capture loop's garbage-collector setting ----------------------------------------------
# One Ethernet/IPv4/UDP DNS query for www.example.com (A).
QUERY = bytes.fromhex(
    "02000000000202000000000108004500003d000100004011f678c0000201c00002350f"
    "a0003500290f0012340100000100000000000003777777076578616d706c6503636f6d"
    "0000010001")


class FakeInterface(live.Capture):
    """Stands for a capture: always readable (a byte waits in a socket pair that is never
    drained), each read() calls ``on_read(feed)``."""

    def __init__(self, on_read) -> None:
        super().__init__("test0", "port 53")
        self._r, self._w = socket.socketpair()
        self._w.send(b"x")
        self.on_read = on_read

    def fileno(self) -> int:
        return self._r.fileno()

    def read(self, feed) -> int:
        n = self.on_read(feed)
        self.frames += n
        return n

    def poll_stats(self):
        return self.kernel_packets, self.kernel_drops

    def close(self) -> None:
        self._r.close()
        self._w.close()


@pytest.fixture
def loop_daemon():
    """A Daemon with pipeline, metrics and an in-memory alert writer, and a factory for its
    fake interface; signal handlers and the wakeup fd the loop installs are put back."""
    import io
    import signal

    from dnsguard.config import DaemonConfig
    from dnsguard.detect.rules import load_dir
    from dnsguard.metrics import Metrics
    from dnsguard.output.alerts import AlertWriter
    from dnsguard.settings import Settings

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    d = daemon.Daemon(DaemonConfig(interfaces=["test0"]))
    d.metrics = Metrics("test")
    d.writer = d.metrics.writer = AlertWriter(io.StringIO())
    s = Settings(use_model=False)
    d.pipeline = d._build_pipeline(s, load_dir(s.rules))
    d.metrics.pipeline = d.pipeline
    made = []

    def attach(on_read) -> FakeInterface:
        i = FakeInterface(on_read)
        made.append(i)
        d.interfaces = [i]
        d._captures = {i.name: {"iface": i, "ifindex": None, "down": False, "retry_at": None,
                                "attempt": 0, "errors": 0}}
        return i

    try:
        yield d, attach
    finally:
        signal.set_wakeup_fd(-1)
        for s, h in handlers.items():
            signal.signal(s, h)
        for i in made:
            i.close()
        for sock in (d._wake_r, d._wake_w):
            if sock is not None:
                sock.close()


def test_capture_loop_runs_with_the_hot_loop_gc_and_restores_it(loop_daemon):
    """Inside the loop: replay's thresholds and a frozen heap; a SIGHUP reload frees the old
    rule set although it was frozen (a reference cycle in it would leak one rule set per
    reload: frozen objects are never collected); after the loop: thresholds back, nothing
    frozen."""
    import gc
    import signal
    import weakref

    from dnsguard.pipeline import GC_THRESHOLD

    d, attach = loop_daemon
    before = gc.get_threshold()
    assert before != GC_THRESHOLD and gc.get_freeze_count() == 0
    seen: dict = {}

    def on_read(feed) -> int:
        feed(time.time(), 1, QUERY, len(QUERY))
        if "first" not in seen:
            seen["first"] = (gc.get_threshold(), gc.get_freeze_count())
            seen["old_rules"] = weakref.ref(d.pipeline.ruleset)
            d.hup = True  # as the SIGHUP handler does; the loop reloads after this batch
        else:
            seen["after_reload"] = (gc.get_threshold(), gc.get_freeze_count(),
                                    seen["old_rules"]() is None)
            d.stop_signal = signal.SIGTERM
        return 1

    attach(on_read)
    assert d._loop() == 0
    assert seen["first"][0] == GC_THRESHOLD and seen["first"][1] > 0
    threshold, frozen, old_freed = seen["after_reload"]
    assert threshold == GC_THRESHOLD and frozen > 0
    assert d.metrics.reloads.labels("ok")._value.get() == 1
    assert old_freed, "the replaced rule set outlived the reload (a reference cycle, frozen)"
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    assert d.pipeline.summary()["queries"] == 2


def test_capture_loop_restores_the_gc_when_it_ends_by_an_exception(loop_daemon):
    import gc

    d, attach = loop_daemon
    before = gc.get_threshold()

    def on_read(feed) -> int:
        raise KeyboardInterrupt  # not caught per frame, as an Exception would be

    attach(on_read)
    with pytest.raises(KeyboardInterrupt):
        d._loop()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


@pytest.mark.parametrize(("asked", "granted", "level"), [
    (8 << 20, 16 << 20, logging.INFO),  # SO_RCVBUFFORCE: asked, doubled
    (8 << 20, 425984, logging.WARNING),  # clamped to net.core.rmem_max (208 KiB, doubled)
    (1 << 30, 2147483646, logging.INFO),  # the kernel's ceiling: INT_MAX / 2, doubled
])
def test_socket_buffer_obtained_is_logged(caplog, asked, granted, level):
    i = object.__new__(live.LiveInterface)  # no packet socket: only what describe() reads
    i.name, i.rcvbuf_asked, i.rcvbuf = "eth9", asked, granted

    with caplog.at_level(logging.INFO, logger="dnsguard.daemon"):
        daemon._log_opened(i)
    (rec,) = caplog.records
    assert rec.levelno == level and f"{granted} bytes" in rec.getMessage()
    if level == logging.WARNING:
        assert "net.core.rmem_max" in rec.getMessage()


def test_a_frame_that_raises_is_still_counted_as_read():
    """dnsguard_captured_frames_total counts the frames read from the socket, also in a
    batch cut short by an exception on one frame (it is compared with the kernel's count)."""
    r, w = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        i = object.__new__(live.LiveInterface)  # no packet socket: a datagram pair instead
        i.sock, i.snaplen, i.linktype, i.loopback = r, 2048, 1, False
        i._buf = bytearray(i.snaplen)
        i._view = memoryview(i._buf)
        i.frames = i.read_errors = 0
        r.setblocking(False)
        for _ in range(3):
            w.send(QUERY)
        fed = []

        def feed(ts, lt, data, wirelen):
            fed.append(data)
            if len(fed) == 2:
                raise ValueError("a bug on one frame")

        with pytest.raises(ValueError):
            i.read(feed)
        assert i.frames == 2 and fed == [QUERY, QUERY]
        assert i.read(feed) == 1 and i.frames == 3
        assert i.read(feed) == 0 and i.frames == 3
    finally:
        r.close()
        w.close()


def test_a_settling_alert_is_written_by_the_timer(loop_daemon):
    """detect.policy holds an incident's record for the settle interval; with no later alert
    to write it, the daemon's periodic work does once the interval has passed (capture time
    is the wall clock live). (Shutdown writes whatever still settles through
    ``Pipeline.finish``, as the end of a replay does: test_escalation.py.)"""
    from conftest import ROOT
    from dnsguard.capture.pcapfile import CaptureReader

    d, _ = loop_daemon
    pipe = d.pipeline
    assert pipe.s.settle == 1.0
    r = CaptureReader.open(ROOT / "pcaps" / "mixed_iodine_and_benign.pcap")
    try:
        for ts, lt, data, wirelen in r:
            pipe.feed(ts, lt, data, wirelen)
            if pipe.policy.pending:
                break
    finally:
        r.close()
    assert pipe.policy.pending == 1 and d.writer.count == 0
    d.housekeeping(ts + 0.5)  # still settling
    assert d.writer.count == 0
    d.housekeeping(ts + 1.0)
    assert d.writer.count == 1 and pipe.policy.pending == 0
    assert d.metrics.alert_records._value.get() == 1
