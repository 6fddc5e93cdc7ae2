"""A client's stub resolver, as operating systems' stubs behave on the wire (asyncio).

One ``Stub`` per client address. Each query opens a fresh UDP socket on a random source port
(glibc, Windows and systemd-resolved all do), carries EDNS0 or not as the client's OS does,
waits ``timeout`` and retransmits once, and repeats a truncated (TC) answer over TCP. The
answer comes back as a dnspython message so workloads can follow what the internet said
(SPF includes, PTR names to confirm, CNAME targets).

Bounded: at most ``Stub.MAX_INFLIGHT`` queries in flight per process (a semaphore shared by all
stubs), every wait has a timeout, and ``Budget`` stops all sending after a query count or a
deadline.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.rdatatype


@dataclass
class Budget:
    """The generation's hard limits: a wall-clock deadline and a query count."""
    deadline: float
    max_queries: int
    sent: int = 0
    counts: Counter = field(default_factory=Counter)

    def spend(self) -> bool:
        if self.sent >= self.max_queries or time.time() >= self.deadline:
            return False
        self.sent += 1
        return True


class Stub:
    MAX_INFLIGHT = 400
    _slots: asyncio.Semaphore | None = None

    CACHE_MAX = 4096

    def __init__(self, resolver: str, source: str, budget: Budget, rng: random.Random,
                 edns: bool = True, timeout: float = 1.5, cache: bool = False,
                 speed: float = 1.0) -> None:
        self.resolver, self.source = resolver, source
        self.budget, self.rng = budget, rng
        self.edns, self.timeout = edns, timeout
        # a host cache (Windows DNS Client, mDNSResponder, systemd-resolved) keeps answers for
        # their TTL in *simulated* time; glibc-only hosts, pods and IoT have none
        self.cache: dict[tuple[str, int], tuple[float, dns.message.Message]] | None = \
            {} if cache else None
        self.speed = speed

    @classmethod
    def slots(cls) -> asyncio.Semaphore:
        if cls._slots is None:
            cls._slots = asyncio.Semaphore(cls.MAX_INFLIGHT)
        return cls._slots

    def _message(self, name: str, qtype: str | int, edns: bool | None) -> dns.message.Message:
        use = self.edns if edns is None else edns
        q = dns.message.make_query(name, qtype, use_edns=0 if use else False,
                                   payload=1232 if use else 512)
        q.id = self.rng.getrandbits(16)
        return q

    async def query(self, name: str, qtype: str | int = "A", *, edns: bool | None = None,
                    tcp: bool = False) -> dns.message.Message | None:
        """Ask the resolver; the answer, or None after the retransmission timed out."""
        if not self.budget.spend():
            return None
        try:
            q = self._message(name, qtype, edns)
        except dns.exception.DNSException:   # a workload bug must not end the activity loop
            self.budget.counts["bad_name"] += 1
            return None
        rdtype = q.question[0].rdtype
        key = (name.lower(), rdtype)
        now = time.monotonic()
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and hit[0] > now:
                self.budget.sent -= 1
                self.budget.counts["host_cache_hit"] += 1
                return hit[1]
        t = dns.rdatatype.to_text(rdtype)
        self.budget.counts[t] += 1
        async with self.slots():
            r = await (self._tcp(q) if tcp else self._udp_retry(q))
        if r is not None and self.cache is not None:
            ttls = [rr.ttl for rr in r.answer + r.authority] or [60]
            if len(self.cache) >= self.CACHE_MAX:
                self.cache.clear()
            self.cache[key] = (now + min(min(ttls), 3600) / self.speed, r)
        return r

    async def _udp_retry(self, q: dns.message.Message) -> dns.message.Message | None:
        for attempt in range(2):
            r = await self._udp(q, self.timeout * (attempt + 1))
            if r is not None:
                break
        else:
            self.budget.counts["timeout"] += 1
            return None
        if r.flags & dns.flags.TC:
            self.budget.counts["tc_retry_tcp"] += 1
            return await self._tcp(q)
        return r

    async def _udp(self, q: dns.message.Message, timeout: float) -> dns.message.Message | None:
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET6 if ":" in self.resolver else socket.AF_INET,
                          socket.SOCK_DGRAM)
        try:
            s.setblocking(False)
            s.bind((self.source, 0))
            await loop.sock_sendto(s, q.to_wire(), (self.resolver, 53))
            end = loop.time() + timeout
            while True:
                left = end - loop.time()
                if left <= 0:
                    return None
                try:
                    data = await asyncio.wait_for(loop.sock_recv(s, 65535), left)
                except TimeoutError:
                    return None
                try:
                    r = dns.message.from_wire(data)
                except dns.exception.DNSException:
                    continue
                if r.id == q.id:
                    return r
        except OSError:
            self.budget.counts["udp_error"] += 1
            return None
        finally:
            s.close()

    async def _tcp(self, q: dns.message.Message) -> dns.message.Message | None:
        self.budget.counts["tcp"] += 1
        w = None
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(
                self.resolver, 53, local_addr=(self.source, 0)), self.timeout * 2)
            wire = q.to_wire()
            w.write(len(wire).to_bytes(2, "big") + wire)
            await w.drain()
            n = int.from_bytes(await asyncio.wait_for(r.readexactly(2), self.timeout * 2), "big")
            data = await asyncio.wait_for(r.readexactly(n), self.timeout * 2)
            return dns.message.from_wire(data)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, dns.exception.DNSException):
            self.budget.counts["tcp_error"] += 1
            return None
        finally:
            if w is not None:
                w.close()


def texts(msg: dns.message.Message | None, rdtype: str) -> list[str]:
    """The answer section's rdata of one type, as text (TXT strings joined)."""
    if msg is None:
        return []
    t = dns.rdatatype.from_text(rdtype)
    out = []
    for rrset in msg.answer:
        if rrset.rdtype != t:
            continue
        for rd in rrset:
            if t == dns.rdatatype.TXT:
                out.append(b"".join(rd.strings).decode("ascii", "replace"))
            else:
                out.append(rd.to_text())
    return out
