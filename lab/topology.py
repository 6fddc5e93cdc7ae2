"""The lab: clients, a real recursive resolver (Unbound) and a stand-in internet, in namespaces.

::

    lab-<pid>-<n>-cli  labc0  10.77.0.0/16: clients 10.77.1.1, 10.77.1.2, ... (one address each)
          | veth                   default route via 10.77.0.1
    lab-<pid>-<n>-res  labr0  10.77.0.1   Unbound (recursive, cache, qname minimisation;
                       labr1  10.78.0.1   forwards "." or treats it as a stub zone), IP forwarding
          | veth
    lab-<pid>-<n>-net  labn0  10.78.0.53  the stand-in authoritative internet (lab.authority)
                              10.78.0.80  a non-DNS peer on port 53 (lab.peer)
                              + any server addresses a caller asks for (tunnel servers, ...)

Captures: the client↔resolver link (``labr0``, what a sensor beside the resolver sees) and,
optionally, the resolver's egress (``labr1``). Every process is bounded by ``seconds``; the
namespaces and processes go away on ``close()``/``with`` exit, at interpreter exit, and at the
next lab's start if the creating process died (see ``lab.netns``).

    with Lab(LabConfig(clients=8)) as lab:                  # doctest: +SKIP
        cap = lab.capture(Path("/tmp/x.pcap"))
        lab.call(my_workload, lab.context(), timeout=60)    # runs inside the client namespace
        lab.run(["dig", "@10.77.0.1", "example.com"])        # a command in the client namespace
        cap.stop()
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.capture import Capture
from lab.netns import (
    LabError,
    Proc,
    call_in_ns,
    delete_ns,
    ns_name,
    remove_stale,
    require_root,
    sh,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent
CLIENT_NET = ipaddress.IPv4Network("10.77.0.0/16")
RESOLVER = "10.77.0.1"
RESOLVER6 = "fd77::1"          # with LabConfig.ipv6: clients' IPv6 transport to the resolver
EGRESS = "10.78.0.1"
AUTHORITY = "10.78.0.53"
PEER = "10.78.0.80"
_serial = itertools.count()


def client_address6(i: int) -> str:
    """The i-th client's IPv6 address (LabConfig.ipv6).

    >>> client_address6(0), client_address6(255)
    ('fd77::1:1', 'fd77::1:100')
    """
    return f"fd77::1:{i + 1:x}"


def client_address(i: int) -> str:
    """The i-th client address: 10.77.1.1, ... 10.77.1.250, 10.77.2.1, ...

    >>> client_address(0), client_address(250)
    ('10.77.1.1', '10.77.2.1')
    """
    return f"10.77.{1 + i // 250}.{1 + i % 250}"


@dataclass
class LabConfig:
    clients: int = 16                 # client addresses on the client veth
    mode: str = "forward"             # "forward": forward-zone "."; "stub": stub-zone "."
    seed: int = 0                     # the internet's answers (lab.internet.Internet)
    seconds: float = 900              # hard bound on every process the lab starts
    peer: bool = True                 # the non-DNS port-53 peer at 10.78.0.80
    ipv6: bool = False                # clients also get fd77::1:<n>, Unbound listens on fd77::1
    server_addrs: list[str] = field(default_factory=list)    # more 10.78.0.x in the net ns
    delegations: dict[str, str] = field(default_factory=dict)  # zone -> server (stub-zone)
    workdir: Path | None = None       # logs and configs (a temp dir by default, removed)
    keep_workdir: bool = False


@dataclass
class LabContext:
    """What a workload running inside the client namespace needs to know (picklable)."""
    resolver: str
    clients: list[str]
    authority: str
    peer: str
    deadline: float                   # time.time() by which the workload must have ended
    resolver6: str | None = None      # set when the lab has IPv6 client transport
    clients6: list[str] | None = None


class Lab:
    """Three namespaces, Unbound, the stand-in internet; see the module docstring."""

    def __init__(self, config: LabConfig | None = None) -> None:
        self.config = config or LabConfig()
        if self.config.mode not in ("forward", "stub"):
            raise LabError(f"LabConfig.mode: {self.config.mode!r} (use 'forward' or 'stub')")
        if not 1 <= self.config.clients <= 250 * 200:
            raise LabError(f"LabConfig.clients: {self.config.clients} (1..50000)")
        serial = next(_serial)
        self.client_ns = ns_name(os.getpid(), serial, "cli")
        self.resolver_ns = ns_name(os.getpid(), serial, "res")
        self.net_ns = ns_name(os.getpid(), serial, "net")
        self.clients = [client_address(i) for i in range(self.config.clients)]
        self.clients6 = [client_address6(i) for i in range(self.config.clients)] \
            if self.config.ipv6 else []
        self.procs: list[Proc] = []
        self.captures: list[Capture] = []
        self._own_workdir = self.config.workdir is None
        self.workdir = Path(self.config.workdir or tempfile.mkdtemp(prefix="lab-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.started = 0.0
        self._closed = False

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Lab:
        why = require_root()
        if why:
            raise LabError(why)
        remove_stale()
        atexit.register(self.close)
        self.started = time.time()
        try:
            self._network()
            self._authority()
            self._resolver()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop captures and processes, delete the namespaces (idempotent, never raises)."""
        if self._closed:
            return
        self._closed = True
        for c in self.captures:
            try:
                if c.proc.running():
                    c.stop()
            except Exception:  # noqa: BLE001 - cleanup goes on regardless
                pass
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass
        for ns in (self.client_ns, self.resolver_ns, self.net_ns):
            try:
                delete_ns(ns)
            except Exception:  # noqa: BLE001
                pass
        if self._own_workdir and not self.config.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        try:
            atexit.unregister(self.close)
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------------ network
    def _network(self) -> None:
        c, r, n = self.client_ns, self.resolver_ns, self.net_ns
        for ns in (c, r, n):
            sh(["ip", "netns", "add", ns])
        sh(["ip", "link", "add", "labc0", "netns", c, "type", "veth", "peer", "name", "labr0",
            "netns", r])
        sh(["ip", "link", "add", "labr1", "netns", r, "type", "veth", "peer", "name", "labn0",
            "netns", n])
        for ns in (c, r, n):
            v6 = "0" if self.config.ipv6 and ns != n else "1"
            sh(["sysctl", "-qw", f"net.ipv6.conf.all.disable_ipv6={v6}"], ns=ns)
            sh(["sysctl", "-qw", f"net.ipv6.conf.default.disable_ipv6={v6}"], ns=ns)
            if v6 == "0":   # no duplicate-address detection: addresses usable at once
                sh(["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"], ns=ns)
                sh(["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"], ns=ns)
            sh(["ip", "link", "set", "lo", "up"], ns=ns)
        # many client addresses: one batch through `ip -batch` (thousands stay fast)
        batch = self.workdir / "client-addrs.ip"
        batch.write_text("".join(f"addr add {a}/16 dev labc0\n" for a in self.clients) +
                         "".join(f"addr add {a}/64 dev labc0 nodad\n" for a in self.clients6))
        sh(["ip", "-batch", str(batch)], ns=c, timeout=120)
        sh(["ip", "link", "set", "labc0", "up"], ns=c)
        sh(["ip", "route", "add", "default", "via", RESOLVER, "src", self.clients[0]], ns=c)
        sh(["ip", "addr", "add", f"{RESOLVER}/16", "dev", "labr0"], ns=r)
        if self.config.ipv6:
            sh(["ip", "addr", "add", f"{RESOLVER6}/64", "dev", "labr0", "nodad"], ns=r)
        sh(["ip", "addr", "add", f"{EGRESS}/16", "dev", "labr1"], ns=r)
        sh(["ip", "link", "set", "labr0", "up"], ns=r)
        sh(["ip", "link", "set", "labr1", "up"], ns=r)
        sh(["sysctl", "-qw", "net.ipv4.ip_forward=1"], ns=r)
        extra = [AUTHORITY] + ([PEER] if self.config.peer else []) + \
            list(self.config.server_addrs) + sorted(set(self.config.delegations.values()))
        for a in dict.fromkeys(extra):
            if ipaddress.IPv4Address(a) not in ipaddress.IPv4Network("10.78.0.0/16") or \
                    a == EGRESS:
                raise LabError(f"server address {a}: use 10.78.0.2-10.78.255.254")
            sh(["ip", "addr", "add", f"{a}/16", "dev", "labn0"], ns=n)
        sh(["ip", "link", "set", "labn0", "up"], ns=n)
        sh(["ip", "route", "add", "default", "via", EGRESS], ns=n)
        # no checksum/segmentation offload: captured packets carry real checksums and sizes
        for ns, dev in ((c, "labc0"), (r, "labr0"), (r, "labr1"), (n, "labn0")):
            sh(["ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off",
                "gro", "off"], ns=ns, check=False)

    def _python(self) -> list[str]:
        return [sys.executable]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in
                                             env.get("PYTHONPATH", "").split(os.pathsep) if p])
        return env

    def spawn(self, argv: Sequence[str], ns: str = "net", seconds: float | None = None,
              name: str | None = None, env: dict[str, str] | None = None) -> Proc:
        """Start a bounded background process in namespace ``client``/``resolver``/``net``."""
        nsname = self._ns(ns)
        secs = min(seconds or self.config.seconds, self.config.seconds)
        log = self.workdir / f"{name or Path(argv[0]).name}.{len(self.procs)}.log"
        p = Proc(nsname, argv, secs, log, env=env or self._env())
        self.procs.append(p)
        return p

    def _ns(self, ns: str) -> str:
        try:
            return {"client": self.client_ns, "resolver": self.resolver_ns,
                    "net": self.net_ns}[ns]
        except KeyError:
            raise LabError(f"namespace {ns!r}: use client, resolver or net") from None

    def _authority(self) -> None:
        a = self.spawn(self._python() + ["-m", "lab.authority", "--address", AUTHORITY,
                                         "--seed", str(self.config.seed), "--seconds",
                                         str(int(self.config.seconds)), "--stats",
                                         str(self.workdir / "authority.json")],
                       name="authority")
        wait_until(lambda: "listening" in a.output() or not a.running(), 20, "authority")
        if not a.running():
            raise LabError(f"the stand-in authority failed: {a.output()[-800:]}")
        if self.config.peer:
            p = self.spawn(self._python() + ["-m", "lab.peer", "--address", PEER, "--seconds",
                                             str(int(self.config.seconds))], name="peer")
            wait_until(lambda: "listening" in p.output() or not p.running(), 20, "peer")
            if not p.running():
                raise LabError(f"the port-53 peer failed: {p.output()[-800:]}")

    def unbound_conf(self) -> str:
        w = self.workdir
        upstream = (f'forward-zone:\n    name: "."\n    forward-addr: {AUTHORITY}\n'
                    if self.config.mode == "forward" else
                    f'stub-zone:\n    name: "."\n    stub-addr: {AUTHORITY}\n')
        stubs = "".join(f'stub-zone:\n    name: "{z}"\n    stub-addr: {a}\n'
                        for z, a in sorted(self.config.delegations.items()))
        v6 = (f"    interface: {RESOLVER6}\n    do-ip6: yes\n    prefer-ip4: yes\n"
              "    access-control: fd77::/64 allow\n") if self.config.ipv6 else "    do-ip6: no\n"
        return f"""server:
    interface: {RESOLVER}
    port: 53
    outgoing-interface: {EGRESS}
{v6}    access-control: 10.0.0.0/8 allow
    username: ""
    chroot: ""
    directory: "{w}"
    pidfile: "{w}/unbound.pid"
    logfile: "{w}/unbound.log"
    use-syslog: no
    verbosity: {4 if os.environ.get("LAB_DEBUG") else 1}
    num-threads: 1
    so-reuseport: no
    so-rcvbuf: 4m
    # no DNSSEC validation: the stand-in internet is unsigned (a real resolver would validate)
    module-config: "iterator"
    qname-minimisation: yes
    # the lab's private reverse zones (DHCP-registered PTR names) are answered upstream
    unblock-lan-zones: yes
    insecure-lan-zones: yes
    do-not-query-localhost: yes
    num-queries-per-thread: 2048
    outgoing-range: 4096
    jostle-timeout: 1000
remote-control:
    control-enable: yes
    control-interface: "{w}/unbound.ctl"
    control-use-cert: no
{upstream}{stubs}"""

    def _resolver(self) -> None:
        conf = self.workdir / "unbound.conf"
        conf.write_text(self.unbound_conf())
        sh(["unbound-checkconf", str(conf)])
        u = self.spawn(["unbound", "-d", "-p", "-c", str(conf)], ns="resolver", name="unbound")
        self.unbound = u

        def ready() -> bool:
            if not u.running():
                raise LabError(f"unbound exited: {u.output()[-800:]} "
                               f"{_tail(self.workdir / 'unbound.log')}")
            if not (self.workdir / "unbound.ctl").exists():
                return False
            try:
                return self.call(_probe, RESOLVER, self.clients[0], timeout=10)
            except LabError:
                return False
        wait_until(ready, 30, "unbound", step=0.3)
        self.unbound_control("flush_zone", ".")

    def unbound_control(self, *args: str) -> str:
        """Run ``unbound-control`` against the lab's resolver (e.g. ``stub_add zone addr``)."""
        cp = sh(["unbound-control", "-c", str(self.workdir / "unbound.conf"), *args],
                ns=self.resolver_ns, timeout=20)
        return cp.stdout

    def delegate(self, zone: str, server: str) -> None:
        """Send every query for ``zone`` to ``server`` (an address in the net namespace)."""
        if server not in self.config.server_addrs and server not in \
                self.config.delegations.values():
            sh(["ip", "addr", "add", f"{server}/16", "dev", "labn0"], ns=self.net_ns)
            self.config.server_addrs.append(server)
        self.unbound_control("stub_add", zone, server)
        self.unbound_control("flush_zone", zone)

    # ------------------------------------------------------------------- usage
    def context(self, seconds: float | None = None) -> LabContext:
        left = self.started + self.config.seconds - time.time() - 5
        return LabContext(RESOLVER, list(self.clients), AUTHORITY, PEER,
                          time.time() + min(seconds or left, left),
                          RESOLVER6 if self.config.ipv6 else None,
                          list(self.clients6) if self.config.ipv6 else None)

    def capture(self, path: Path, link: str = "client", seconds: float | None = None,
                bpf: str = "ip or ip6") -> Capture:
        """Start tcpdump on the client↔resolver link (``client``) or the egress (``egress``)."""
        dev = {"client": "labr0", "egress": "labr1"}.get(link)
        if dev is None:
            raise LabError(f"capture link {link!r}: use client or egress")
        secs = min(seconds or self.config.seconds, self.config.seconds)
        c = Capture(self.resolver_ns, dev, Path(path), secs, bpf=bpf)
        self.captures.append(c)
        return c

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float, ns: str = "client",
             **kwargs: Any) -> Any:
        """Call a picklable-result Python callable in a forked child inside a namespace."""
        return call_in_ns(self._ns(ns), fn, *args, timeout=timeout, **kwargs)

    def run(self, argv: Sequence[str], ns: str = "client", timeout: float = 60,
            check: bool = True):
        """Run a command to completion inside a namespace (bounded by ``timeout``)."""
        return sh(["timeout", "-k", "3", str(max(1, int(timeout)))] + list(argv),
                  ns=self._ns(ns), timeout=timeout + 10, check=check)

    def describe(self) -> dict[str, Any]:
        """The lab as a manifest records it."""
        return {"config": {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in asdict(self.config).items()},
                "namespaces": [self.client_ns, self.resolver_ns, self.net_ns],
                "resolver": RESOLVER, "egress": EGRESS, "authority": AUTHORITY,
                "peer": PEER if self.config.peer else None,
                "unbound": sh(["unbound", "-V"], check=False).stdout.splitlines()[0]}


def _tail(p: Path, n: int = 800) -> str:
    try:
        return p.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _probe(resolver: str, source: str) -> bool:
    """One query through the resolver (run inside the client namespace)."""
    import dns.message
    import dns.query
    try:
        r = dns.query.udp(dns.message.make_query("lab-ready.example.com.", "A"), resolver,
                          timeout=1.0, source=source)
    except Exception:  # noqa: BLE001 - not ready yet
        return False
    return r.rcode() in (0, 3)
