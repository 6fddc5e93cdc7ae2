"""The daemon's configuration file: defaults, the shipped example, errors that name the key and
the line, the mapping onto Settings, and the command line (check-config, run overrides)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dnsguard import cli
from dnsguard import config as dconf
from dnsguard.capture import live
from dnsguard.detect.yamlsrc import SourceError
from dnsguard.settings import DEFAULT_RULES, Settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "systemd" / "dnsguard.yaml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "dnsguard.yaml"
    p.write_text(text)
    return p


def test_defaults_map_onto_settings_defaults():
    c = dconf.DaemonConfig()
    s, d = c.to_settings(), Settings()
    for f in ("ports", "window", "suppress", "max_domains", "max_client_domains",
              "max_clients", "max_flows", "exact_cap", "tcp_max_flows", "tcp_max_bytes",
              "name_cache", "domain_cache", "allow_cache", "policy_keys", "rules", "sensor"):
        assert getattr(s, f) == getattr(d, f), f
    assert c.socket_buffer == live.RCVBUF
    assert c.metrics_address == "127.0.0.1:9153"
    assert c.rules == DEFAULT_RULES and c.alerts == "-" and c.interfaces == []


def test_empty_file_is_all_defaults(tmp_path):
    c = dconf.load(write(tmp_path, "# nothing\n"))
    assert c.to_settings().ports == frozenset({53}) and c.metrics_port == 9153


def test_shipped_example_is_valid_and_complete():
    c = dconf.load(EXAMPLE)
    text = EXAMPLE.read_text()
    for key in dconf.TOP_KEYS:  # every key appears in the example (maybe commented out)
        assert f"{key}:" in text, key
    assert c.interfaces == ["eth0"] and c.sensor == "edge-1"
    assert c.vantage == "client" and ipaddress.ip_network("10.0.0.0/8") in c.home_networks
    assert c.alerts == "/var/log/dnsguard/alerts.json"
    assert (c.metrics_host, c.metrics_port) == ("127.0.0.1", 9153)
    s = c.to_settings()
    assert s.max_domains == 20000 and s.tcp_max_bytes == 16777216 and s.sensor == "edge-1"
    for key, attr in dconf.CAPS.items():  # every state cap in the example, at its default
        assert f"  {key}:" in text, key
        assert getattr(s, attr) == getattr(Settings(), attr), key
    assert c.socket_buffer == live.RCVBUF


def test_every_key_is_documented():
    doc = (ROOT / "docs" / "daemon.md").read_text()
    for key in dconf.TOP_KEYS:
        assert f"`{key}`" in doc, key
    for key in (*dconf.CAPS, *dconf.VANTAGE_KEYS, *dconf.MODEL_KEYS):
        assert f"`{key}`" in doc, key


def test_full_mapping(tmp_path):
    c = dconf.load(write(tmp_path, """\
sensor: s1
interfaces: [eth1, eth2]
promiscuous: false
socket_buffer: 67108864
vantage: {mode: resolver, home_networks: [192.168.0.0/16], resolvers: ["10.0.0.53", "::1"]}
ports: [53, 5353]
window: 60
suppress: 120.5
state_caps: {domains: 10, client_domains: 20, clients: 30, flows: 40, exact_distinct: 16,
             tcp_flows: 50, tcp_bytes: 4096, names: 60, psl_walks: 70,
             allowlist_verdicts: 80, alerted_keys: 90}
rules: /etc/dnsguard/rules
state_dir: /srv/dg
model: {enabled: false, path: /m.pkl, feedback: /f.jsonl, learn_from_rules: true,
        checkpoint_every: 60}
alerts: /var/log/x.json
metrics_address: "[::1]:9100"
user: dg
log_level: debug
hash_key: "00112233445566778899AABBCCDDEEFF"
"""))
    s = c.to_settings()
    assert s.ports == frozenset({53, 5353}) and s.window == 60 and s.suppress == 120.5
    assert (s.max_domains, s.max_client_domains, s.max_clients, s.max_flows) == (10, 20, 30, 40)
    assert (s.exact_cap, s.tcp_max_flows, s.tcp_max_bytes) == (16, 50, 4096)
    assert (s.name_cache, s.domain_cache, s.allow_cache, s.policy_keys) == (60, 70, 80, 90)
    assert c.socket_buffer == 64 << 20
    assert s.rules == Path("/etc/dnsguard/rules") and s.sensor == "s1"
    assert c.interfaces == ["eth1", "eth2"] and c.promiscuous is False
    assert c.vantage == "resolver" and len(c.resolvers) == 2
    assert c.state_dir == Path("/srv/dg") and c.alerts == "/var/log/x.json"
    assert (c.metrics_host, c.metrics_port, c.user, c.log_level) == ("::1", 9100, "dg", "debug")
    assert c.metrics_address == "[::1]:9100"
    assert s.hash_key == bytes.fromhex("00112233445566778899aabbccddeeff")
    if hasattr(s, "use_model"):  # the model's settings, where Settings has them
        assert s.use_model is False and s.model == Path("/m.pkl")
        assert s.feedback == Path("/f.jsonl") and s.learn_from_rules is True
        assert s.model_state == Path("/srv/dg") / dconf.MODEL_STATE
        assert s.checkpoint_every == 60


BAD = [
    # (file text, line, field, words in the message)
    ("sensor: a\nbogus: 1\n", 2, "bogus", "unknown key"),
    ("sensor: a\nhash_key: \"abc\"\n", 2, "hash_key", "32 hex digits"),
    ("hash_key: 00000000000000000000000000000000\n", 1, "hash_key", "in quotes"),
    ("hash_key: \"" + "z" * 32 + "\"\n", 1, "hash_key", "hex digits only"),
    ("interfaces:\n  - eth0\n  - 'bad name!'\n", 3, "interfaces[1]", "not an interface"),
    ("interfaces: [eth0, eth0]\n", 1, "interfaces[1]", "twice"),
    ("ports: [53, 70000]\n", 1, "ports[1]", "out of range"),
    ("ports:\n  - 53\n  - x\n", 3, "ports[1]", "integer"),
    ("ports: []\n", 1, "ports", "non-empty"),
    ("window: -5\n", 1, "window", "out of range"),
    ("suppress: soon\n", 1, "suppress", "number"),
    ("state_caps:\n  domains: 10\n  keys: 5\n", 3, "state_caps.keys", "unknown key"),
    ("state_caps:\n  clients: 0\n", 2, "state_caps.clients", "out of range"),
    ("state_caps: 5\n", 1, "state_caps", "mapping"),
    ("state_caps:\n  domains: 10\n  names: 0\n", 3, "state_caps.names", "out of range"),
    ("state_caps:\n  alerted_keys: many\n", 2, "state_caps.alerted_keys", "integer"),
    ("state_caps:\n  psl_walks: 20000001\n", 2, "state_caps.psl_walks", "out of range"),
    ("state_caps:\n  allowlist_verdicts: 1.5\n", 2, "state_caps.allowlist_verdicts",
     "integer"),
    ("promiscuous: true\nsocket_buffer: 1024\n", 2, "socket_buffer",
     "out of range (65536 to 1073741824)"),
    ("socket_buffer: 2147483648\n", 1, "socket_buffer", "out of range"),
    ("socket_buffer: -8388608\n", 1, "socket_buffer", "out of range"),
    ("socket_buffer: 8MiB\n", 1, "socket_buffer", "must be an integer"),
    ("socket_buffer: 8388608.5\n", 1, "socket_buffer", "must be an integer"),
    ("socket_buffer: true\n", 1, "socket_buffer", "must be an integer"),
    ("capture: pcap\n", 1, "capture", "not one of ring, socket"),
    ("ring:\n  block_size: 100000\n", 2, "ring.block_size", "power of two"),
    ("ring:\n  block_count: 4\n  block_size: 32768\n", 3, "ring.block_size",
     "from 65536"),
    ("ring:\n  block_count: 1\n", 2, "ring.block_count", "from 2 to 65536"),
    ("ring:\n  block_size: 134217728\n  block_count: 64\n", 3, "ring.block_count",
     "at most 4294967296"),
    ("ring:\n  frame_timeout: 0\n", 2, "ring.frame_timeout", "1 to 10000 ms"),
    ("ring:\n  frame_timeout: 5.5\n", 2, "ring.frame_timeout", "integer"),
    ("ring:\n  blocks: 8\n", 2, "ring.blocks", "unknown key"),
    ("ring: 8\n", 1, "ring", "mapping"),
    ("workers: 0\n", 1, "workers", "out of range (1 to 64)"),
    ("workers: two\n", 1, "workers", "integer"),
    ("vantage:\n  mode: resolvr\n", 2, "vantage.mode", "not one of"),
    ("vantage:\n  mode: resolver\n", 1, "vantage.resolvers", "needs"),
    ("vantage:\n  home_networks:\n    - 10.0.0.0/8\n    - 10.0.0/33\n", 4,
     "vantage.home_networks[1]", "not a network"),
    ("vantage:\n  resolvers: [1.2.3.4, nope]\n", 2, "vantage.resolvers[1]", "IP address"),
    ("metrics_address: localhost\n", 1, "metrics_address", "HOST:PORT"),
    ("metrics_address: 127.0.0.1:99999\n", 1, "metrics_address", "port"),
    ("metrics_address: example.com:9153\n", 1, "metrics_address", "IP address"),
    ("state_dir: relative/dir\n", 1, "state_dir", "absolute"),
    ("alerts: 5\n", 1, "alerts", "path"),
    ("model:\n  enabled: maybe\n", 2, "model.enabled", "true or false"),
    ("model:\n  pth: /x\n", 2, "model.pth", "unknown key"),
    ("user: 'Bad User'\n", 1, "user", "user name"),
    ("log_level: loud\n", 1, "log_level", "not one of"),
    ("promiscuous: yes please\n", 1, "promiscuous", "true or false"),
    ("sensor: a\nsensor: b\n", 2, "", "duplicate key"),
    ("interfaces: [eth0\n", 2, "", "YAML syntax"),
    ("- a\n- b\n", 1, "", "mapping"),
]


@pytest.mark.parametrize(("text", "line", "field", "words"), BAD,
                         ids=[b[2] or b[3] for b in BAD])
def test_errors_name_key_and_line(tmp_path, text, line, field, words):
    p = write(tmp_path, text)
    with pytest.raises(SourceError) as ei:
        dconf.load(p)
    e = ei.value
    assert (e.line, e.field) == (line, field), str(e)
    assert words in e.message, str(e)
    assert str(e).startswith(f"{p}:{line}: ")


def test_capture_ring_and_workers(tmp_path):
    c = dconf.load(write(tmp_path, "capture: socket\nring:\n  block_size: 131072\n"
                                   "  frame_timeout: 50\nworkers: 4\n"))
    assert c.capture == "socket" and c.workers == 4
    assert (c.ring.block_size, c.ring.block_count, c.ring.frame_timeout) == (131072, 128, 50)
    d = dconf.DaemonConfig()
    assert d.capture == "ring" and d.workers == 1 and d.ring.problem() is None


def test_check_config_command(tmp_path):
    good = write(tmp_path, f"interfaces: [lo]\nrules: {ROOT / 'rules'}\n")
    r = subprocess.run([sys.executable, "-m", "dnsguard", "check-config", str(good)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("interfaces: [eth0]\nwindow: 0\n")
    r = subprocess.run([sys.executable, "-m", "dnsguard", "check-config", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"{bad}:2: window:" in r.stderr


def test_check_config_says_libpcap_is_missing(tmp_path):
    """A host without libpcap (a minimal Debian: found by test_systemd_nspawn.py) fails at
    check-config, the unit's ExecStartPre, with the package to install. libpcap is hidden
    for real: /dev/null mounted over it in a private mount namespace (root and unshare)."""
    import ctypes.util
    import shutil

    lib = ctypes.util.find_library("pcap")
    if os.geteuid() != 0 or shutil.which("unshare") is None or lib is None:
        pytest.skip("needs root, unshare and an installed libpcap to hide")
    paths = sorted({p.resolve() for d in ("/usr/lib", "/usr/local/lib")
                    for p in Path(d).rglob(f"{lib}*") if p.is_file()})
    assert paths, f"{lib} not found under /usr/lib"
    good = write(tmp_path, f"interfaces: [lo]\nrules: {ROOT / 'rules'}\n")
    hide = "; ".join(f"mount --bind /dev/null {p}" for p in paths)
    r = subprocess.run(["unshare", "-m", "sh", "-c",
                        f"{hide} && exec {sys.executable} -m dnsguard check-config {good}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{good}: cannot compile the capture filter" in r.stderr, r.stderr
    assert "apt-get install libpcap0.8" in r.stderr, r.stderr


def test_check_config_refuses_an_interface_that_does_not_exist(tmp_path):
    p = write(tmp_path, "interfaces: [lo, nonexist9]\n")
    r = subprocess.run([sys.executable, "-m", "dnsguard", "check-config", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    lines = [ln for ln in r.stderr.splitlines()  # not a stale build's warnings
             if "changed since it was compiled" not in ln]
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith(f"dnsguard: {p}: interfaces: nonexist9 does not exist")
    assert "lo" in lines[0].split("has:")[1]  # what exists, to pick from


def test_check_config_says_when_it_could_not_check(tmp_path, capsys, monkeypatch):
    import errno
    import socket

    def refused():
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket, "if_nameindex", refused)
    p = write(tmp_path, "interfaces: [nonexist9]\n")
    assert cli.main(["check-config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "interfaces nonexist9 (not checked: cannot list this host's interfaces: " \
           "Permission denied)" in out


def test_run_checks_interfaces_before_any_work(tmp_path, capsys, restore_logging):
    alerts = tmp_path / "alerts.json"
    assert cli.main(["run", "-i", "nonexist9", "--alerts", str(alerts), "--metrics-address",
                     "127.0.0.1:0"]) == 1
    err = capsys.readouterr().err
    assert "interface nonexist9 does not exist" in err and "Traceback" not in err
    assert not alerts.exists()  # refused before the alert file was opened


def test_check_config_checks_the_rules_too(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - id: x\n")
    p = write(tmp_path, f"rules: {rules}\n")
    assert cli.main(["check-config", str(p)]) == 1


def test_run_command_line_overrides_the_file(tmp_path):
    p = write(tmp_path, "interfaces: [eth0]\nalerts: /a.json\nwindow: 30\nsensor: f\n")
    args = cli.build_parser().parse_args(
        ["run", "-c", str(p), "--interface", "veth1", "--interface", "veth2", "--alerts",
         "/b.json", "--metrics-address", "127.0.0.1:9999", "--ports", "53,5353",
         "--no-model"])
    c = cli._run_config(args)
    assert c.interfaces == ["veth1", "veth2"] and c.alerts == "/b.json"
    assert (c.metrics_host, c.metrics_port) == ("127.0.0.1", 9999)
    assert c.window == 30 and c.sensor == "f" and c.ports == frozenset({53, 5353})
    assert c.model_enabled is False


def test_run_without_a_file_uses_defaults():
    args = cli.build_parser().parse_args(["run", "--interface", "eth9", "--alerts", "/x"])
    c = cli._run_config(args)
    assert c.interfaces == ["eth9"] and c.alerts == "/x" and c.metrics_port == 9153
    assert c.to_settings().ports == frozenset({53})


@pytest.fixture
def restore_logging():
    """``dnsguard run`` installs its own root handler: put pytest's back afterwards."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_run_refuses_a_bad_file_or_no_interface(tmp_path, capsys, restore_logging):
    bad = write(tmp_path, "ports: [0]\n")
    assert cli.main(["run", "-c", str(bad)]) == 2
    assert f"{bad}:1: ports[0]" in capsys.readouterr().err
    assert cli.main(["run", "--metrics-address", "nohost"]) == 2
    assert cli.main(["run", "--alerts", str(tmp_path / "a.json"), "--metrics-address",
                     "127.0.0.1:0"]) == 2  # no interface
