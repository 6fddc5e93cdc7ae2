"""Live dnstap: listening sockets (unix or TCP) that DNS servers connect to and stream
dnstap over Frame Streams, for ``dnsguard run --dnstap``.

:class:`DnstapServer` owns every listening socket and every sender connection; the daemon's
``select()`` loop asks it for its descriptors (:meth:`DnstapServer.fds`) and hands it the
readable ones (:meth:`DnstapServer.handle`). Each connection is a
:class:`~dnsguard.capture.framestream.ReceiverSession` (the bidirectional handshake) and a
:func:`~dnsguard.capture.dnstap.payload_reader` (the compiled in-place scanner, or the protobuf
runtime); each decoded message ``m`` goes to ``sink(*m)`` (the pipeline's ``feed_message``).

Bounded: at most ``max_senders`` connections (more are accepted and closed at once, counted),
at most one frame (``MAX_FRAME``) buffered per connection, at most ``READS_PER_WAKE`` reads of
``READ_SIZE`` per connection per wake-up (a flooding sender is throttled by TCP's own flow
control: what is not read stays in its socket buffer). Every fault (oversized or truncated
frame, garbage, unknown content type, a sender gone mid-frame) is counted by reason, closes
that connection only, and is logged once per sender and reason (a sender is its TCP address,
or the process id of a unix-socket peer, so a reconnecting resolver is one sender).

Example (a unix socket in a temporary directory, a sender speaking the handshake):
    >>> import os, socket, tempfile
    >>> from dnsguard.capture import framestream as fs
    >>> from dnsguard.capture.dnstap import DnstapCounters
    >>> path = os.path.join(tempfile.mkdtemp(), "tap.sock")
    >>> got = []
    >>> srv = DnstapServer([f"unix:{path}"], lambda *m: got.append(m), DnstapCounters())
    >>> c = socket.socket(socket.AF_UNIX); c.connect(path)
    >>> srv.poll(0.5)  # accepts the connection
    0
    >>> c.sendall(fs.encode_control(fs.READY, [fs.CONTENT_TYPE]))
    >>> _ = srv.poll(0.5)
    >>> fs.decode_control(c.recv(100)[8:]).control == fs.ACCEPT
    True
    >>> c.sendall(fs.encode_control(fs.START, [fs.CONTENT_TYPE]) + fs.encode_control(fs.STOP))
    >>> _ = srv.poll(0.5)
    >>> fs.decode_control(c.recv(100)[8:]).control == fs.FINISH
    True
    >>> c.close(); srv.close(); os.path.exists(path)
    False
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dnsguard.capture.dnstap import DnstapCounters, DnstapMapper, DnstapScanner, payload_reader
from dnsguard.capture.framestream import MAX_FRAME, ReceiverSession

log = logging.getLogger(__name__)

MAX_SENDERS = 64
READ_SIZE = 1 << 18
READS_PER_WAKE = 8  # per connection: then back to select(), so every socket gets its turn
SOCKET_MODE = 0o666  # who may connect is decided by the directory's permissions (docs)
LISTEN_BACKLOG = 16
LOGGED_CAP = 4096  # (sender, reason) pairs remembered for log-once


class DnstapAddressError(ValueError):
    """A ``--dnstap`` / ``dnstap:`` value that is not ``unix:PATH`` or ``tcp:HOST:PORT``."""


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "unix" or "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{h}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """``unix:/abs/path`` or ``tcp:HOST:PORT`` (HOST an IP address, ``[v6]`` or localhost).

    >>> parse_endpoint("unix:/run/dnsguard/dnstap.sock")
    Endpoint(kind='unix', path='/run/dnsguard/dnstap.sock', host='', port=0)
    >>> str(parse_endpoint("tcp:[::1]:6000"))
    'tcp:[::1]:6000'
    >>> parse_endpoint("udp:1.2.3.4:5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dnsguard.capture.dnstap_listen.DnstapAddressError: 'udp:1.2.3.4:5': a dnstap input is ...
    """
    import ipaddress

    usage = ("a dnstap input is unix:/absolute/path or tcp:HOST:PORT (e.g. "
             "unix:/run/dnsguard/dnstap.sock, tcp:127.0.0.1:6000)")
    if not isinstance(text, str):
        raise DnstapAddressError(f"{text!r}: {usage}")
    if text.startswith("unix:"):
        path = text[5:]
        if not path.startswith("/") or "\0" in path:
            raise DnstapAddressError(f"{text!r}: the socket path must be absolute; {usage}")
        if len(path.encode()) > 107:  # sun_path holds 108 octets with the terminating NUL
            raise DnstapAddressError(f"{text!r}: a unix socket path is at most 107 octets")
        return Endpoint("unix", path=path)
    if text.startswith("tcp:"):
        rest = text[4:]
        host, sep, port = rest.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            p = int(port)
        except ValueError:
            p = -1
        if not sep or not 0 < p < 65536:
            raise DnstapAddressError(f"{text!r}: port must be 1..65535; {usage}")
        if host != "localhost":
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise DnstapAddressError(f"{text!r}: {host!r} is not an IP address "
                                         f"(or localhost); {usage}") from None
        return Endpoint("tcp", host=host, port=p)
    raise DnstapAddressError(f"{text!r}: {usage}")


class DnstapOpenError(OSError):
    """A listening socket could not be opened; the message names it and says what to do."""


class _Conn:
    __slots__ = ("sock", "sender", "session", "mapper", "bytes")

    def __init__(self, sock: socket.socket, sender: str, session: ReceiverSession,
                 mapper: DnstapMapper | DnstapScanner) -> None:
        self.sock = sock
        self.sender = sender
        self.session = session
        self.mapper = mapper
        self.bytes = 0


class DnstapServer:
    """Every dnstap listening socket and sender connection of the daemon."""

    def __init__(self, endpoints: list[str | Endpoint], sink: Callable[..., object],
                 counters: DnstapCounters, max_senders: int = MAX_SENDERS,
                 max_frame: int = MAX_FRAME, socket_mode: int = SOCKET_MODE) -> None:
        self.sink = sink
        self.c = counters
        self.max_senders = max_senders
        self.max_frame = max_frame
        self.listeners: dict[int, tuple[socket.socket, Endpoint]] = {}
        self.conns: dict[int, _Conn] = {}
        self._logged: set[tuple[str, str]] = set()
        self.sink_errors = 0
        try:
            for e in endpoints:
                ep = e if isinstance(e, Endpoint) else parse_endpoint(e)
                s = self._listen(ep, socket_mode)
                self.listeners[s.fileno()] = (s, ep)
        except BaseException:
            self.close()
            raise

    # --- sockets ------------------------------------------------------------------------------
    @staticmethod
    def _listen(ep: Endpoint, mode: int) -> socket.socket:
        if ep.kind == "unix":
            p = Path(ep.path)
            try:
                p.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                if p.is_socket():
                    p.unlink()  # a stale socket from an earlier run
                elif p.exists() or p.is_symlink():
                    raise DnstapOpenError(errno.EEXIST, f"dnstap {ep}: {p} exists and is not "
                                          "a socket; remove it or choose another path")
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.bind(ep.path)
                    os.chmod(ep.path, mode)
                    s.listen(LISTEN_BACKLOG)
                except OSError:
                    s.close()
                    raise
            except DnstapOpenError:
                raise
            except OSError as e:
                raise DnstapOpenError(e.errno, f"dnstap {ep}: cannot listen: "
                                      f"{e.strerror or e}; check the directory exists and is "
                                      "writable, or choose another path") from None
        else:
            fam = socket.AF_INET6 if ":" in ep.host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((ep.host, ep.port))
                s.listen(LISTEN_BACKLOG)
            except OSError as e:
                s.close()
                what = ("another process holds it" if e.errno == errno.EADDRINUSE
                        else "check the address")
                raise DnstapOpenError(e.errno, f"dnstap {ep}: cannot listen: "
                                      f"{e.strerror or e}; {what}") from None
        s.setblocking(False)
        return s

    def fds(self) -> list[int]:
        return [*self.listeners, *self.conns]

    def __contains__(self, fd: int) -> bool:
        return fd in self.listeners or fd in self.conns

    @property
    def endpoints(self) -> list[Endpoint]:
        return [ep for _, ep in self.listeners.values()]

    def poll(self, timeout: float) -> int:
        """Wait up to ``timeout`` for activity and handle it (tests, the doctest); the daemon
        calls :meth:`handle` from its own loop. Returns the messages fed."""
        r, _, _ = select.select(self.fds(), [], [], timeout)
        return sum(self.handle(fd) for fd in r)

    def handle(self, fd: int) -> int:
        """Work on a readable descriptor; returns the number of messages fed."""
        lst = self.listeners.get(fd)
        if lst is not None:
            self._accept(*lst)
            return 0
        conn = self.conns.get(fd)
        return self._read(conn) if conn is not None else 0

    def _accept(self, ls: socket.socket, ep: Endpoint) -> None:
        for _ in range(LISTEN_BACKLOG):
            try:
                s, addr = ls.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and the like: count, try again on the next wake
                self._fault(str(ep), "accept", f"cannot accept a connection: {e}")
                return
            sender = self._sender(s, addr, ep)
            if len(self.conns) >= self.max_senders:
                s.close()
                self._fault(sender, "too_many_senders", f"more than {self.max_senders} "
                            "senders at once: connection refused")
                continue
            s.setblocking(False)
            self.conns[s.fileno()] = _Conn(s, sender, ReceiverSession(max_frame=self.max_frame),
                                           payload_reader(self.c, time.time))
            self.c.connections += 1
            self.c.senders = len(self.conns)
            log.info("dnstap: %s connected on %s", sender, ep)

    @staticmethod
    def _sender(s: socket.socket, addr, ep: Endpoint) -> str:
        if ep.kind == "tcp":
            return f"{addr[0]}"
        try:
            pid, uid, _ = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET,
                                                           socket.SO_PEERCRED,
                                                           struct.calcsize("3i")))
            return f"pid {pid} (uid {uid}) on {ep.path}"
        except OSError:
            return f"a peer on {ep.path}"

    def _read(self, conn: _Conn) -> int:
        fed = 0
        sess = conn.session
        for _ in range(READS_PER_WAKE):
            try:
                data = conn.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._fault(conn.sender, "read", f"connection failed: {e}")
                self._drop(conn)
                return fed
            if not data:
                if sess.decoder.buffered:
                    self._fault(conn.sender, "truncated", "disconnected in the middle of a "
                                f"frame ({sess.decoder.buffered} octets of it received)")
                elif not sess.finished:
                    log.info("dnstap: %s disconnected without STOP", conn.sender)
                self._drop(conn)
                return fed
            n = len(data)
            conn.bytes += n
            self.c.bytes += n
            d0, c0 = sess.decoder.frames_data, sess.decoder.frames_control
            payloads = sess.receive(data)
            self._count_frames(sess, d0, c0)
            fed += self._feed(conn, payloads)  # what came before a fault still counts
            if sess.error is not None:
                self._fault(conn.sender, sess.error.reason, str(sess.error))
                self._drop(conn)
                return fed
            if sess.outgoing:
                self._send(conn)
            if sess.finished:
                log.info("dnstap: %s stopped (STOP, answered FINISH)", conn.sender)
                self._drop(conn)
                return fed
            if n < READ_SIZE:
                break
        return fed

    def _count_frames(self, sess: ReceiverSession, d0: int, c0: int) -> None:
        self.c.frames["data"] += sess.decoder.frames_data - d0
        self.c.frames["control"] += sess.decoder.frames_control - c0

    def _feed(self, conn: _Conn, payloads: list[bytes]) -> int:
        decode, sink = conn.mapper.decode, self.sink
        fed = 0
        for p in payloads:
            m = decode(p)
            if m is None:
                continue
            try:
                sink(*m)
            except Exception:  # a bug on one message must not stop the sensor
                self.sink_errors += 1
                self.c.error("internal_error")
                if self.sink_errors <= 10 or not self.sink_errors % 1000:
                    log.exception("dnstap: internal error while processing a message (#%d)",
                                  self.sink_errors)
                continue
            fed += 1
        return fed

    def _send(self, conn: _Conn) -> None:
        out = conn.session.take_outgoing()
        try:
            sent = conn.sock.send(out)
        except OSError as e:
            sent = -1
            err = str(e)
        else:
            err = f"sent {sent} of {len(out)} octets"
        if sent != len(out):  # a control frame is a few dozen octets: a full buffer is a fault
            self._fault(conn.sender, "write", f"cannot answer the handshake: {err}")

    def _drop(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        self.conns.pop(fd, None)
        with contextlib.suppress(OSError):
            conn.sock.close()
        self.c.senders = len(self.conns)

    def _fault(self, sender: str, reason: str, text: str) -> None:
        self.c.error(reason)
        key = (sender, reason)
        if key in self._logged:
            return
        if len(self._logged) >= LOGGED_CAP:
            self._logged.clear()
        self._logged.add(key)
        log.warning("dnstap: %s: %s (reason %s; counted in dnsguard_dnstap_errors_total, "
                    "logged once per sender and reason)", sender, text, reason)

    def drain(self, timeout: float = 0.5) -> int:
        """At shutdown: read what the senders already sent (until nothing is readable for a
        moment or ``timeout`` passed), so frames in flight are not lost. Returns messages fed."""
        fed = 0
        end = time.monotonic() + timeout
        while self.conns and time.monotonic() < end:
            r, _, _ = select.select(list(self.conns), [], [], 0.05)
            if not r:
                break
            for fd in r:
                c = self.conns.get(fd)
                if c is not None:
                    fed += self._read(c)
        return fed

    def close(self) -> None:
        for c in list(self.conns.values()):
            self._drop(c)
        for s, ep in self.listeners.values():
            with contextlib.suppress(OSError):
                s.close()
            if ep.kind == "unix":
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(os.lstat(ep.path).st_mode):
                        os.unlink(ep.path)
        self.listeners.clear()
