"""The daemon's configuration file: one YAML mapping, every key optional, validated with the
file and line of each mistake (:class:`dnsguard.detect.yamlsrc.SourceError`).

Every key is documented in ``docs/daemon.md``; ``systemd/dnsguard.yaml`` is a full example.

Example:
    >>> c = DaemonConfig()
    >>> c.metrics_host, c.metrics_port, c.to_settings().ports
    ('127.0.0.1', 9153, frozenset({53}))
    >>> parse_address("[::1]:9100", "metrics_address", "f", 1)
    ('::1', 9100)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from dnsguard.capture.live import CAPTURE_KINDS, RCVBUF
from dnsguard.capture.ring import RingGeometry
from dnsguard.detect import yamlsrc
from dnsguard.detect.yamlsrc import LineDict, SourceError
from dnsguard.features.namehash import parse_key
from dnsguard.settings import DEFAULT_RULES, Settings

DEFAULT_METRICS = "127.0.0.1:9153"
DEFAULT_STATE_DIR = Path("/var/lib/dnsguard")
MODEL_STATE = "model-state.ckpt"
LONG_STATE = "long-horizon.json.gz"  # the long-horizon state (dnsguard.features.horizon)
VANTAGES = ("client", "resolver")
LOG_LEVELS = ("debug", "info", "warning", "error")
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")  # IFNAMSIZ - 1
_SENSOR = re.compile(r"^[A-Za-z0-9_.:-]{0,64}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\$?$")

# state_caps key → Settings field
CAPS = {
    "domains": "max_domains",
    "client_domains": "max_client_domains",
    "clients": "max_clients",
    "flows": "max_flows",
    "exact_distinct": "exact_cap",
    "tcp_flows": "tcp_max_flows",
    "tcp_bytes": "tcp_max_bytes",
    # caches of the hot path (entries)
    "names": "name_cache",
    "psl_walks": "domain_cache",
    "allowlist_verdicts": "allow_cache",
    "alerted_keys": "policy_keys",
}
SOCKET_BUFFER_RANGE = (64 << 10, 1 << 30)  # bytes: 64 KiB to 1 GiB
WORKERS_RANGE = (1, 64)
TOP_KEYS = ("sensor", "interfaces", "dnstap", "capture", "ring", "workers", "promiscuous",
            "socket_buffer", "vantage", "ports", "window", "suppress", "settle", "alert_rate",
            "alert_burst", "state_caps", "rules", "state_dir", "model", "alerts", "dns_log",
            "metrics_address", "user", "log_level", "hash_key")
_D = Settings()  # the defaults shared with replay: one home (settings.py)
VANTAGE_KEYS = ("mode", "home_networks", "resolvers")
MODEL_KEYS = ("enabled", "path", "feedback", "learn_from_rules", "checkpoint_every")
RING_KEYS = ("block_size", "block_count", "frame_timeout")


@dataclass
class DaemonConfig:
    sensor: str = ""
    interfaces: list[str] = field(default_factory=list)
    dnstap: list[str] = field(default_factory=list)  # unix:PATH / tcp:HOST:PORT listeners
    capture: str = "ring"  # "ring" (TPACKET_V3) or "socket" (one frame per system call)
    ring: RingGeometry = field(default_factory=RingGeometry)
    workers: int = 1  # capture processes sharing each interface (PACKET_FANOUT)
    promiscuous: bool = True
    socket_buffer: int = RCVBUF  # capture socket receive buffer asked for, bytes
    vantage: str = "client"
    home_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default_factory=list)
    resolvers: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = field(default_factory=list)
    ports: frozenset[int] = _D.ports
    window: float = _D.window
    suppress: float = _D.suppress
    settle: float = _D.settle  # alerts on a key this close together are one record
    alert_rate: float = _D.alert_rate  # alerts per second overall (token bucket) …
    alert_burst: int = _D.alert_burst  # … with this burst
    caps: dict[str, int] = field(default_factory=dict)  # Settings field → value
    rules: Path = field(default_factory=lambda: DEFAULT_RULES)
    state_dir: Path = DEFAULT_STATE_DIR
    model_enabled: bool = True
    model: Path | None = None  # model file; None: the shipped default
    feedback: Path | None = None  # analyst verdicts, JSON lines
    learn_from_rules: bool = _D.learn_from_rules
    checkpoint_every: float = _D.checkpoint_every
    alerts: str = "-"  # a file path, or "-" for stdout
    dns_log: str | None = None  # EVE dns records of every message (output/dnslog.py)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9153  # 0: no exporter
    user: str | None = None  # None: "dnsguard" if it exists, else "nobody"
    log_level: str = "info"
    hash_key: bytes = _D.hash_key  # features.namehash: 16 octets, written as 32 hex digits
    path: str = ""  # the file it came from

    def to_settings(self) -> Settings:
        s = Settings(ports=frozenset(self.ports), window=self.window, suppress=self.suppress,
                     settle=self.settle, alert_rate=self.alert_rate, alert_burst=self.alert_burst,
                     rules=self.rules, sensor=self.sensor, hash_key=self.hash_key)
        for attr, v in self.caps.items():
            setattr(s, attr, v)
        s.resolvers = tuple(str(a) for a in self.resolvers)
        s.home_networks = tuple(str(n) for n in self.home_networks)
        # The model's settings, where this version of Settings has them.
        have = {f.name for f in fields(Settings)}
        model = {"use_model": self.model_enabled, "model": self.model,
                 "model_state": self.model_state, "feedback": self.feedback,
                 "learn_from_rules": self.learn_from_rules,
                 "checkpoint_every": self.checkpoint_every}
        for attr, v in model.items():
            if attr in have:
                setattr(s, attr, v)
        s.long_state = self.state_dir / LONG_STATE
        return s

    @property
    def model_state(self) -> Path:
        """Where the model's online state is checkpointed and resumed from."""
        return self.state_dir / MODEL_STATE

    @property
    def metrics_address(self) -> str:
        h = f"[{self.metrics_host}]" if ":" in self.metrics_host else self.metrics_host
        return f"{h}:{self.metrics_port}"


def parse_address(text: object, key: str, path: str, line: int) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); port 0 turns the exporter off."""
    if not isinstance(text, str):
        raise SourceError(path, line, key, f"{text!r} must be a string HOST:PORT, "
                          "e.g. 127.0.0.1:9153")
    m = re.match(r"^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$", text) or re.match(
        r"^([^\s:\[\]]+):(\d{1,5})$", text)
    if not m:
        raise SourceError(path, line, key, f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9153 "
                          "or [::1]:9153)")
    host, port = m.group(1), int(m.group(2))
    if port > 65535:
        raise SourceError(path, line, key, f"port {port} is not 0..65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise SourceError(path, line, key, f"{host!r} is not an IP address "
                              "(or localhost)") from None
    return host, port


class _V:
    """Validation helpers bound to one file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def err(self, line: int, key: str, msg: str) -> SourceError:
        return SourceError(self.path, line, key, msg)

    def section(self, d: dict, line: int, name: str, allowed: tuple[str, ...]):
        """Refuse the keys of mapping ``d`` (the section ``name`` at ``line``) that are not
        ``allowed``; return the line of a key of ``d`` (``line`` when unknown)."""
        def at(key: str) -> int:
            return d.line_of(key) if isinstance(d, LineDict) else line

        for k in d:
            if k not in allowed:
                raise self.err(at(k), f"{name}.{k}",
                               f"unknown key (allowed: {', '.join(allowed)})")
        return at

    def number(self, v: object, key: str, line: int, lo: float, hi: float,
               integer: bool = False) -> float:
        span = f"{lo} to {hi}" if integer else f"{lo:g} to {hi:g}"  # integers in full
        if isinstance(v, bool) or not isinstance(v, int | float) or (
                integer and not isinstance(v, int)):
            kind = "an integer" if integer else "a number"
            raise self.err(line, key, f"{v!r} must be {kind} from {span}")
        if not lo <= v <= hi:
            raise self.err(line, key, f"{v!r} is out of range ({span})")
        return v

    def strlist(self, v: object, key: str, line: int, allow_scalar: bool = True) -> list:
        if allow_scalar and isinstance(v, str | int):
            return [v]
        if not isinstance(v, list):
            raise self.err(line, key, "must be a list")
        return v

    @staticmethod
    def item_line(lst: object, i: int, line: int) -> int:
        lines = getattr(lst, "item_lines", None)
        return lines[i] if lines and i < len(lines) else line


def load(path: str | Path) -> DaemonConfig:
    """Read and validate a configuration file."""
    doc = yamlsrc.load(path)
    return from_mapping(doc if doc is not None else LineDict(), str(path))


def from_mapping(doc: object, path: str = "<config>") -> DaemonConfig:
    v = _V(path)
    if not isinstance(doc, dict):
        raise v.err(getattr(doc, "line", 1), "", "the configuration must be a mapping of keys "
                    f"({', '.join(TOP_KEYS)})")

    def at(d: dict, key: str) -> int:
        return d.line_of(key) if isinstance(d, LineDict) else 0

    for k in doc:
        if k not in TOP_KEYS:
            raise v.err(at(doc, k), str(k), f"unknown key (allowed: {', '.join(TOP_KEYS)})")
    c = DaemonConfig(path=path)

    if "sensor" in doc:
        s = doc["sensor"]
        if not isinstance(s, str) or not _SENSOR.match(s):
            raise v.err(at(doc, "sensor"), "sensor", f"{s!r} must be a short name "
                        "(letters, digits, '.', '_', ':', '-'; at most 64)")
        c.sensor = s

    if "hash_key" in doc:
        k = doc["hash_key"]
        try:
            if not isinstance(k, str):
                raise ValueError("must be 32 hex digits in quotes (a 128-bit key)")
            c.hash_key = parse_key(k)
        except ValueError as e:
            raise v.err(at(doc, "hash_key"), "hash_key", f"{e}; e.g. the output of "
                        "'openssl rand -hex 16'") from None

    if "interfaces" in doc:
        ln = at(doc, "interfaces")
        lst = v.strlist(doc["interfaces"], "interfaces", ln)
        names: list[str] = []
        for i, n in enumerate(lst):
            il = v.item_line(lst, i, ln)
            if not isinstance(n, str) or not _IFNAME.match(n):
                raise v.err(il, f"interfaces[{i}]", f"{n!r} is not an interface name")
            if n in names:
                raise v.err(il, f"interfaces[{i}]", f"{n!r} is listed twice")
            names.append(n)
        c.interfaces = names

    if "dnstap" in doc:
        c.dnstap = dnstap_list(doc["dnstap"], path, at(doc, "dnstap"))

    if "capture" in doc:
        k = doc["capture"]
        if k not in CAPTURE_KINDS:
            raise v.err(at(doc, "capture"), "capture", f"{k!r} is not one of "
                        f"{', '.join(CAPTURE_KINDS)} (ring: memory-mapped TPACKET_V3; "
                        "socket: one frame per system call)")
        c.capture = k

    if "ring" in doc:
        _ring(v, doc["ring"], at(doc, "ring"), c)

    if "workers" in doc:
        lo, hi = WORKERS_RANGE
        c.workers = int(v.number(doc["workers"], "workers", at(doc, "workers"), lo, hi, True))

    if "promiscuous" in doc:
        p = doc["promiscuous"]
        if not isinstance(p, bool):
            raise v.err(at(doc, "promiscuous"), "promiscuous", f"{p!r} must be true or false")
        c.promiscuous = p

    if "socket_buffer" in doc:
        lo, hi = SOCKET_BUFFER_RANGE
        c.socket_buffer = int(v.number(doc["socket_buffer"], "socket_buffer",
                                       at(doc, "socket_buffer"), lo, hi, True))

    if "vantage" in doc:
        _vantage(v, doc["vantage"], at(doc, "vantage"), c)

    if "ports" in doc:
        ln = at(doc, "ports")
        lst = doc["ports"]
        lst = [lst] if isinstance(lst, int) and not isinstance(lst, bool) else lst
        if not isinstance(lst, list) or not lst:
            raise v.err(ln, "ports", "must be a non-empty list of port numbers, e.g. [53]")
        ports = set()
        for i, p in enumerate(lst):
            ports.add(int(v.number(p, f"ports[{i}]", v.item_line(lst, i, ln), 1, 65535, True)))
        c.ports = frozenset(ports)

    if "window" in doc:
        c.window = float(v.number(doc["window"], "window", at(doc, "window"), 1, 86400))
    if "suppress" in doc:
        c.suppress = float(v.number(doc["suppress"], "suppress", at(doc, "suppress"), 0.001,
                                    30 * 86400))
    if "settle" in doc:
        c.settle = float(v.number(doc["settle"], "settle", at(doc, "settle"), 0, 60))

    if "alert_rate" in doc:
        c.alert_rate = float(v.number(doc["alert_rate"], "alert_rate", at(doc, "alert_rate"),
                                      0.001, 1_000_000))
    if "alert_burst" in doc:
        c.alert_burst = int(v.number(doc["alert_burst"], "alert_burst", at(doc, "alert_burst"),
                                     1, 1_000_000, True))

    if "state_caps" in doc:
        caps = doc["state_caps"]
        ln = at(doc, "state_caps")
        if not isinstance(caps, dict):
            raise v.err(ln, "state_caps", f"must be a mapping with keys {', '.join(CAPS)}")
        for k, val in caps.items():
            kl = at(caps, k)
            if k not in CAPS:
                raise v.err(kl, f"state_caps.{k}", f"unknown key (allowed: {', '.join(CAPS)})")
            lo, hi = (1, 1 << 34) if k == "tcp_bytes" else (1, 10_000_000)
            if k == "exact_distinct":
                lo, hi = 1, 4096
            c.caps[CAPS[k]] = int(v.number(val, f"state_caps.{k}", kl, lo, hi, True))

    if "model" in doc:
        _model(v, doc["model"], at(doc, "model"), c)

    for key in ("rules", "state_dir", "alerts", "dns_log"):
        if key not in doc:
            continue
        val = doc[key]
        ln = at(doc, key)
        if not isinstance(val, str) or not val.strip() or "\0" in val:
            raise v.err(ln, key, f"{val!r} must be a path")
        if key == "rules":
            c.rules = Path(val)
        elif key == "state_dir":
            if not Path(val).is_absolute():
                raise v.err(ln, key, f"{val!r} must be an absolute path")
            c.state_dir = Path(val)
        elif key == "dns_log":
            c.dns_log = val
        else:
            c.alerts = val

    if "metrics_address" in doc:
        ma = doc["metrics_address"]
        ln = at(doc, "metrics_address")
        if ma is None or ma is False:
            c.metrics_port = 0
        else:
            c.metrics_host, c.metrics_port = parse_address(ma, "metrics_address", path, ln)

    if "user" in doc:
        u = doc["user"]
        if not isinstance(u, str) or not _USER.match(u):
            raise v.err(at(doc, "user"), "user", f"{u!r} is not a user name")
        c.user = u

    if "log_level" in doc:
        lv = doc["log_level"]
        if lv not in LOG_LEVELS:
            raise v.err(at(doc, "log_level"), "log_level",
                        f"{lv!r} is not one of {', '.join(LOG_LEVELS)}")
        c.log_level = lv
    return c


def dnstap_list(val: object, path: str, line: int) -> list[str]:
    """The ``dnstap:`` key (or ``--dnstap``): one or a list of ``unix:PATH`` /
    ``tcp:HOST:PORT``, normalised.

    >>> dnstap_list(["unix:/run/dnsguard/dnstap.sock", "tcp:[::1]:6000"], "f", 3)
    ['unix:/run/dnsguard/dnstap.sock', 'tcp:[::1]:6000']
    """
    from dnsguard.capture.dnstap_listen import DnstapAddressError, parse_endpoint

    v = _V(path)
    lst = v.strlist(val, "dnstap", line)
    out: list[str] = []
    for i, t in enumerate(lst):
        il = v.item_line(lst, i, line)
        try:
            ep = str(parse_endpoint(t))
        except DnstapAddressError as e:
            raise v.err(il, f"dnstap[{i}]", str(e)) from None
        if ep in out:
            raise v.err(il, f"dnstap[{i}]", f"{t!r} is listed twice")
        out.append(ep)
    return out


def _vantage(v: _V, d: object, line: int, c: DaemonConfig) -> None:
    if not isinstance(d, dict):
        raise v.err(line, "vantage", "must be a mapping with keys "
                    f"{', '.join(VANTAGE_KEYS)}")
    at = v.section(d, line, "vantage", VANTAGE_KEYS)
    if "mode" in d:
        if d["mode"] not in VANTAGES:
            raise v.err(at("mode"), "vantage.mode",
                        f"{d['mode']!r} is not one of {', '.join(VANTAGES)}")
        c.vantage = d["mode"]
    if "home_networks" in d:
        ln = at("home_networks")
        lst = v.strlist(d["home_networks"], "vantage.home_networks", ln)
        nets = []
        for i, n in enumerate(lst):
            try:
                nets.append(ipaddress.ip_network(str(n), strict=False))
            except ValueError:
                raise v.err(v.item_line(lst, i, ln), f"vantage.home_networks[{i}]",
                            f"{n!r} is not a network (e.g. 10.0.0.0/8, fd00::/8)") from None
        c.home_networks = nets
    if "resolvers" in d:
        ln = at("resolvers")
        lst = v.strlist(d["resolvers"], "vantage.resolvers", ln)
        addrs = []
        for i, a in enumerate(lst):
            try:
                addrs.append(ipaddress.ip_address(str(a)))
            except ValueError:
                raise v.err(v.item_line(lst, i, ln), f"vantage.resolvers[{i}]",
                            f"{a!r} is not an IP address") from None
        c.resolvers = addrs
    if c.vantage == "resolver" and not c.resolvers:
        raise v.err(line, "vantage.resolvers", "mode 'resolver' needs the resolvers' "
                    "addresses (the egress side of the resolvers this sensor watches)")


def _ring(v: _V, d: object, line: int, c: DaemonConfig) -> None:
    if not isinstance(d, dict):
        raise v.err(line, "ring", f"must be a mapping with keys {', '.join(RING_KEYS)}")
    at = v.section(d, line, "ring", RING_KEYS)
    got = {}
    for k in RING_KEYS:
        if k in d:
            got[k] = int(v.number(d[k], f"ring.{k}", at(k), 0, 1 << 40, True))
    g = RingGeometry(**{**c.ring.__dict__, **got})
    problem = g.problem()
    if problem:
        # The key the problem names (block_size x block_count: the later of the two given).
        key = next((k for k in RING_KEYS if problem.startswith(k)), None)
        if key is None:
            key = max((k for k in ("block_size", "block_count") if k in d), key=at,
                      default="block_size")
        raise v.err(at(key) if key in d else line, f"ring.{key}", problem)
    c.ring = g


def _model(v: _V, d: object, line: int, c: DaemonConfig) -> None:
    if isinstance(d, bool):
        c.model_enabled = d
        return
    if not isinstance(d, dict):
        raise v.err(line, "model", "must be true, false or a mapping with keys "
                    f"{', '.join(MODEL_KEYS)}")
    at = v.section(d, line, "model", MODEL_KEYS)
    for k in ("enabled", "learn_from_rules"):
        if k in d:
            if not isinstance(d[k], bool):
                raise v.err(at(k), f"model.{k}", f"{d[k]!r} must be true or false")
            setattr(c, "model_enabled" if k == "enabled" else k, d[k])
    for k in ("path", "feedback"):
        if k in d and d[k] is not None:
            val = d[k]
            if not isinstance(val, str) or not val.strip() or "\0" in val:
                raise v.err(at(k), f"model.{k}", f"{val!r} must be a path")
            setattr(c, "model" if k == "path" else k, Path(val))
    if "checkpoint_every" in d:
        c.checkpoint_every = float(v.number(d["checkpoint_every"], "model.checkpoint_every",
                                            at("checkpoint_every"), 1, 86400))
