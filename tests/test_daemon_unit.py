"""Daemon pieces that need no privileges: privilege-drop decisions, journald log lines,
sd_notify datagrams, the kernel filter text and link types."""

from __future__ import annotations

import logging
import socket

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
