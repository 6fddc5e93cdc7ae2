"""A peer that speaks other protocols on port 53, as some applications do.

VPNs are run on UDP/TCP 53 to pass captive portals and strict firewalls (WireGuard and
OpenVPN servers on port 53 are a common recipe), and some games and P2P clients probe it.
This peer answers the first packets of such exchanges plausibly, by the client's first byte:
WireGuard handshake initiation (type 1, 148 bytes) gets a handshake response (type 2, 92 bytes;
https://www.wireguard.com/protocol/), an OpenVPN P_CONTROL_HARD_RESET_CLIENT_V2 (opcode 7 in the
top five bits) a P_CONTROL_HARD_RESET_SERVER_V2 (opcode 8), anything else a same-sized reply.
On TCP it reads OpenVPN's 2-byte length framing (which a DNS parser also reads as a length).
Bounded: ``--seconds``, at most 32 TCP connections, 10 s idle.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading


def reply(data: bytes) -> bytes:
    """The peer's answer to one client packet.

    >>> len(reply(bytes([1, 0, 0, 0]) + bytes(144))), reply(bytes([1]) + bytes(147))[0]
    (92, 2)
    >>> reply(bytes([0x38]) + bytes(13))[0] >> 3
    8
    """
    if len(data) == 148 and data[0] == 1:
        return bytes([2, 0, 0, 0]) + os.urandom(88)
    if data and data[0] >> 3 == 7:
        return bytes([8 << 3]) + os.urandom(8) + bytes([0]) + os.urandom(4) + os.urandom(12)
    if data and data[0] == 4:       # WireGuard transport data: keepalive/echo of similar size
        return bytes([4, 0, 0, 0]) + os.urandom(max(28, len(data) - 4))
    return os.urandom(max(16, min(len(data), 1200)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="non-DNS peer on port 53")
    ap.add_argument("--address", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--seconds", type=float, default=600)
    a = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    slots = threading.BoundedSemaphore(32)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((a.address, a.port))
    u.settimeout(0.5)
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((a.address, a.port))
    t.listen(16)
    t.settimeout(0.5)

    def udp() -> None:
        while not stop.is_set():
            try:
                data, peer = u.recvfrom(65535)
            except TimeoutError:
                continue
            u.sendto(reply(data), peer)

    def conn(c: socket.socket) -> None:
        try:
            c.settimeout(10)
            buf = b""
            while not stop.is_set():
                chunk = c.recv(65535)
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                    n = int.from_bytes(buf[:2], "big")
                    out = reply(buf[2:2 + n])
                    buf = buf[2 + n:]
                    c.sendall(len(out).to_bytes(2, "big") + out)
        except OSError:
            pass
        finally:
            c.close()
            slots.release()

    def tcp() -> None:
        while not stop.is_set():
            try:
                c, _ = t.accept()
            except TimeoutError:
                continue
            if slots.acquire(blocking=False):
                threading.Thread(target=conn, args=(c,), daemon=True).start()
            else:
                c.close()

    for f in (udp, tcp):
        threading.Thread(target=f, daemon=True).start()
    print(f"peer listening on {a.address}:{a.port}", flush=True)
    stop.wait(a.seconds)
    stop.set()


if __name__ == "__main__":
    main()
