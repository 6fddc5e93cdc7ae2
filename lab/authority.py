"""The stand-in authoritative "internet": a UDP+TCP DNS server answering every name.

Run inside the lab's ``net`` namespace (``python -m lab.authority --address IP``); answers come
from ``lab.internet.Internet``. Built on dnspython (wire parsing and rendering of every record
type, name compression, EDNS, TC on overflow); dnslib was the alternative, chosen against
because dnspython renders HTTPS/SVCB and truncation exactly as real servers do and is the
better-kept library. A query that does not parse is counted and dropped, as a real server's
FORMERR path would leave it; the process ends after ``--seconds`` and bounds its TCP
connections (count and idle time).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rcode

from lab.internet import Internet

MAX_TCP = 64
TCP_IDLE = 10.0


class Authority:
    def __init__(self, address: str, port: int = 53, seed: int = 0) -> None:
        self.internet = Internet(seed=seed, address=address)
        self.address, self.port = address, port
        self.counts: Counter[str] = Counter()
        self.stop = threading.Event()
        self._tcp_slots = threading.BoundedSemaphore(MAX_TCP)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.udp.bind((address, port))
        self.udp.settimeout(0.5)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((address, port))
        self.tcp.listen(64)
        self.tcp.settimeout(0.5)

    def respond(self, wire: bytes, tcp: bool) -> bytes | None:
        try:
            q = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - any undecodable query is counted and dropped
            self.counts["malformed"] += 1
            return None
        if q.opcode() != 0 or len(q.question) != 1:
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.NOTIMP if q.opcode() else dns.rcode.FORMERR)
            self.counts["refused"] += 1
            return r.to_wire()
        qq = q.question[0]
        r = dns.message.make_response(q, our_payload=1232)
        try:
            rep = self.internet.answer(qq.name, qq.rdtype)
        except Exception as e:  # noqa: BLE001 - a policy bug answers SERVFAIL, counted, logged
            self.counts["error"] += 1
            if self.counts["error"] <= 20:
                print(f"error answering {qq.name} {qq.rdtype}: {type(e).__name__}: {e}",
                      flush=True)
            r.set_rcode(dns.rcode.SERVFAIL)
            return r.to_wire()
        r.flags |= dns.flags.AA
        r.set_rcode(rep.rcode)
        r.answer.extend(rep.answer)
        r.authority.extend(rep.authority)
        r.additional.extend(rep.additional)
        self.counts[dns.rcode.to_text(rep.rcode)] += 1
        limit = 65535 if tcp else (max(512, q.payload) if q.edns >= 0 else 512)
        try:
            return r.to_wire(max_size=limit)
        except dns.exception.TooBig:
            self.counts["truncated"] += 1
            r.answer.clear()
            r.authority.clear()
            r.additional.clear()
            r.flags |= dns.flags.TC
            return r.to_wire(max_size=limit)

    def serve_udp(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            out = self.respond(data, tcp=False)
            if out is not None:
                self.udp.sendto(out, peer)

    def _tcp_conn(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(TCP_IDLE)
            buf = b""
            while not self.stop.is_set():
                while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
                    chunk = conn.recv(65535)
                    if not chunk:
                        return
                    buf += chunk
                n = int.from_bytes(buf[:2], "big")
                msg, buf = buf[2:2 + n], buf[2 + n:]
                out = self.respond(msg, tcp=True)
                if out is None:
                    return
                conn.sendall(len(out).to_bytes(2, "big") + out)
        except OSError:
            pass
        finally:
            conn.close()
            self._tcp_slots.release()

    def serve_tcp(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._tcp_slots.acquire(blocking=False):
                self.counts["tcp_refused"] += 1
                conn.close()
                continue
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def run(self, seconds: float, stats: Path | None = None) -> None:
        ts = [threading.Thread(target=f, daemon=True) for f in (self.serve_udp, self.serve_tcp)]
        for t in ts:
            t.start()
        print(f"authority listening on {self.address}:{self.port}", flush=True)
        self.stop.wait(seconds)
        self.stop.set()
        for t in ts:
            t.join(2)
        if stats:
            stats.write_text(json.dumps(dict(self.counts), sort_keys=True))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--stats", type=Path)
    a = ap.parse_args(argv)
    srv = Authority(a.address, a.port, a.seed)
    signal.signal(signal.SIGTERM, lambda *_: srv.stop.set())
    signal.signal(signal.SIGINT, lambda *_: srv.stop.set())
    t0 = time.monotonic()
    srv.run(a.seconds, a.stats)
    print(f"authority done after {time.monotonic() - t0:.0f}s: {dict(srv.counts)}", flush=True)


if __name__ == "__main__":
    main()
