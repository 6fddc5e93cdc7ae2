"""Frame Streams: the framing dnstap travels in, over a socket or in a file.

A stream is a sequence of frames, each a 32-bit big-endian length and that many octets. A
length of zero escapes a *control frame*: a second 32-bit length, then a 32-bit control type
and fields (type 1, CONTENT_TYPE: a 32-bit length and the content type's name). A file is
``START`` (with the content type), data frames, ``STOP``. Over a socket the sender may first
offer its content types (``READY``), the receiver picks one (``ACCEPT``), the sender then sends
``START``, data frames and ``STOP``, which the receiver answers with ``FINISH``
(bidirectional mode). Reference: the Frame Streams protocol as fstrm documents it
(https://farsightsec.github.io/fstrm/, "Control frames" and "Bidirectional" sections) and its
``fstrm/control.h``.

The library on PyPI for this (``fstrm`` 0.6) concatenates its whole buffer on every read,
bounds no frame and raises bare ``Exception``; a sensor must bound what one sender can make it
hold and say what was wrong, so the framing is here: :class:`FrameDecoder` (sans-IO: bytes in,
frames out, never more than one frame buffered), :class:`ReceiverSession` (the receiver's side
of the handshake) and :func:`read_file_runs` / :func:`read_file_frames` (the file format).

Example:
    >>> d = FrameDecoder()
    >>> d.feed(encode_control(START, [CONTENT_TYPE]) + encode_data(b"abc") + encode_data(b"de")[:5])
    >>> [(f.kind, f.payload if f.kind == DATA else f.control) for f in d.frames()]
    [('control', 2), ('data', b'abc')]
    >>> d.feed(b"e")
    >>> [f.payload for f in d.frames()]
    [b'de']
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from dnsguard.capture.dnstapwire import frames_end

#: The content type dnstap senders offer (``fstrm`` content type string).
CONTENT_TYPE = b"protobuf:dnstap.Dnstap"

# Control frame types (fstrm/control.h).
ACCEPT, START, STOP, READY, FINISH = 1, 2, 3, 4, 5
CONTROL_NAMES = {ACCEPT: "accept", START: "start", STOP: "stop", READY: "ready",
                 FINISH: "finish"}
FIELD_CONTENT_TYPE = 1

#: A control frame longer than this is damage (fstrm's FSTRM_CONTROL_FRAME_LENGTH_MAX).
MAX_CONTROL = 512
#: Data frames longer than this are refused. A dnstap message holds at most a query and a
#: response of 65,535 octets each plus some metadata; a quarter MiB bounds what one sender
#: can make the receiver buffer.
MAX_FRAME = 262_144
CONTENT_TYPE_MAX = 256

DATA, CONTROL = "data", "control"
_U32 = struct.Struct("!I")
_U32X2 = struct.Struct("!II")


class FrameError(ValueError):
    """The stream broke the Frame Streams format; ``reason`` is a short fixed label (a
    metric label value), the message says where and what."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):
        # both fields, so the error survives a trip through pickle (process pools, workers)
        return (type(self), (self.reason, self.args[0]))


@dataclass(slots=True)
class Frame:
    kind: str  # DATA or CONTROL
    payload: bytes = b""  # a data frame's content
    control: int = 0  # a control frame's type
    content_types: list[bytes] = field(default_factory=list)


def encode_data(payload: bytes) -> bytes:
    return _U32.pack(len(payload)) + payload


def encode_control(ctype: int, content_types: list[bytes] | tuple = ()) -> bytes:
    """A control frame (escape, length, type, CONTENT_TYPE fields)."""
    body = _U32.pack(ctype) + b"".join(
        _U32X2.pack(FIELD_CONTENT_TYPE, len(c)) + c for c in content_types)
    return _U32X2.pack(0, len(body)) + body


def decode_control(body: bytes) -> Frame:
    """A control frame's body (after the escape and its length) → :class:`Frame`.

    >>> decode_control(encode_control(READY, [CONTENT_TYPE])[8:]).content_types
    [b'protobuf:dnstap.Dnstap']
    >>> decode_control(b"\\x00\\x00\\x00\\x09")
    Traceback (most recent call last):
    ...
    dnsguard.capture.framestream.FrameError: unknown control frame type 9
    """
    if len(body) < 4:
        raise FrameError("control_truncated", f"control frame of {len(body)} octets: no type")
    (ctype,) = _U32.unpack_from(body)
    if ctype not in CONTROL_NAMES:
        raise FrameError("control_unknown", f"unknown control frame type {ctype}")
    types: list[bytes] = []
    p, n = 4, len(body)
    while p < n:
        if p + 8 > n:
            raise FrameError("control_truncated", f"control field header cut at octet {p}")
        fid, flen = _U32X2.unpack_from(body, p)
        p += 8
        if flen > n - p or flen > CONTENT_TYPE_MAX:
            raise FrameError("control_truncated", f"control field of {flen} octets at octet "
                             f"{p - 8} runs past the frame ({n} octets)")
        if fid == FIELD_CONTENT_TYPE:
            types.append(body[p:p + flen])
        # other field types: skipped (fstrm defines none yet)
        p += flen
    return Frame(CONTROL, control=ctype, content_types=types)


class FrameDecoder:
    """Incremental Frame Streams decoder: :meth:`feed` bytes as they arrive, take complete
    :meth:`frames`. Holds at most one incomplete frame (at most ``max_frame`` + 8 octets):
    a length above ``max_frame`` raises :class:`FrameError` before anything is buffered,
    and the stream cannot be resynchronised after it (the caller drops the sender)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0
        self.frames_data = 0
        self.frames_control = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[:self._pos]  # compact: what was consumed goes before growing
            self._pos = 0
        self._buf += data

    def frames(self) -> Iterator[Frame]:
        """Complete frames in the buffer, in order; stops at an incomplete one."""
        buf = self._buf
        while True:
            p = self._pos
            avail = len(buf) - p
            if avail < 4:
                return
            (ln,) = _U32.unpack_from(buf, p)
            if ln:
                if ln > self.max_frame:
                    raise FrameError("oversized", f"data frame of {ln} octets (more than "
                                     f"{self.max_frame})")
                if avail < 4 + ln:
                    return
                self._pos = p + 4 + ln
                self.frames_data += 1
                yield Frame(DATA, bytes(buf[p + 4:p + 4 + ln]))
                continue
            if avail < 8:
                return
            (cl,) = _U32.unpack_from(buf, p + 4)
            if cl > MAX_CONTROL:
                raise FrameError("oversized", f"control frame of {cl} octets (more than "
                                 f"{MAX_CONTROL})")
            if avail < 8 + cl:
                return
            self._pos = p + 8 + cl
            self.frames_control += 1
            yield decode_control(bytes(buf[p + 8:p + 8 + cl]))


class ReceiverSession:
    """The receiving end of one Frame Streams connection (sans-IO).

    :meth:`receive` takes what the socket read and returns the data frames' payloads; what
    must be sent back (ACCEPT after READY, FINISH after STOP) accumulates in :attr:`outgoing`.
    Senders that skip READY (unidirectional, e.g. ``fstrm_capture``-style writers) are taken
    too. A broken stream sets :attr:`error` (a :class:`FrameError`: ``content_type`` for a
    content type other than ``content_type``, ``data_before_start``, ``oversized``, …) after
    returning the payloads that came before the fault; the connection is then useless.
    After STOP, :attr:`finished` is set.

    >>> s = ReceiverSession()
    >>> s.receive(encode_control(READY, [b"other", CONTENT_TYPE]))
    []
    >>> decode_control(s.take_outgoing()[8:]).control == ACCEPT
    True
    >>> s.receive(encode_control(START, [CONTENT_TYPE]) + encode_data(b"x") +
    ...           encode_control(STOP))
    [b'x']
    >>> s.finished, decode_control(s.take_outgoing()[8:]).control == FINISH
    (True, True)
    """

    def __init__(self, content_type: bytes = CONTENT_TYPE, max_frame: int = MAX_FRAME) -> None:
        self.content_type = content_type
        self.decoder = FrameDecoder(max_frame)
        self.started = False
        self.finished = False
        self.outgoing = bytearray()
        self.controls: dict[str, int] = {}
        self.error: FrameError | None = None

    def take_outgoing(self) -> bytes:
        out = bytes(self.outgoing)
        self.outgoing.clear()
        return out

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self.finished or self.error is not None:
            return out  # after STOP or a fault nothing more is read from this sender
        self.decoder.feed(data)
        try:
            self._frames(out)
        except FrameError as e:
            self.error = e
        return out

    def _frames(self, out: list[bytes]) -> None:
        for f in self.decoder.frames():
            if f.kind == DATA:
                if not self.started:
                    raise FrameError("data_before_start", "data frame before START")
                out.append(f.payload)
                continue
            name = CONTROL_NAMES[f.control]
            self.controls[name] = self.controls.get(name, 0) + 1
            if f.control == READY:
                if self.content_type not in f.content_types:
                    raise FrameError("content_type", "sender offers "
                                     f"{_types(f.content_types)}, not {self.content_type!r}")
                self.outgoing += encode_control(ACCEPT, [self.content_type])
            elif f.control == START:
                if f.content_types and self.content_type not in f.content_types:
                    raise FrameError("content_type", "stream content type "
                                     f"{_types(f.content_types)}, not {self.content_type!r}")
                self.started = True
            elif f.control == STOP:
                self.outgoing += encode_control(FINISH)
                self.finished = True
                return
            else:  # ACCEPT or FINISH: only a receiver sends those
                raise FrameError("control_unexpected", f"unexpected {name.upper()} from a "
                                 "sender")


def _types(types: list[bytes]) -> str:
    return ", ".join(repr(t) for t in types) or "no content type"


@dataclass
class FileStats:
    """What reading one Frame Streams file met."""

    frames: int = 0
    bytes: int = 0
    damaged: str | None = None  # where and why reading stopped early
    stopped: bool = False  # the file ended with STOP (written completely)


def looks_like_framestream(head: bytes) -> bool:
    """Whether a file's first 12 octets are a Frame Streams START control frame (what a
    dnstap file begins with; no pcap or pcapng file starts with four zero octets).

    >>> looks_like_framestream(encode_control(START, [CONTENT_TYPE]))
    True
    >>> looks_like_framestream(bytes.fromhex("d4c3b2a1") + bytes(8))
    False
    """
    if len(head) < 12:
        return False
    esc, ln, ctype = struct.unpack_from("!III", head)
    return esc == 0 and 4 <= ln <= MAX_CONTROL and ctype == START


def read_file_frames(f: BinaryIO, stats: FileStats, content_type: bytes = CONTENT_TYPE,
                     chunk: int = 1 << 20, max_frame: int = MAX_FRAME) -> Iterator[bytes]:
    """The data frames of a Frame Streams file (``START`` … ``STOP``), in order: the
    payloads of :func:`read_file_runs` (where damage and limits are told), each counted in
    ``stats.frames``.

    >>> import io
    >>> st = FileStats()
    >>> body = encode_control(START, [CONTENT_TYPE]) + encode_data(b"a") + encode_data(b"bc")
    >>> list(read_file_frames(io.BytesIO(body + encode_control(STOP)), st)), st.stopped
    ([b'a', b'bc'], True)
    >>> st = FileStats()
    >>> list(read_file_frames(io.BytesIO(body[:-1]), st)), st.damaged
    ([b'a'], 'truncated: a frame cut short at octet 47')
    """
    unpack = _U32.unpack_from
    for buf, pos, stop in read_file_runs(f, stats, content_type, chunk, max_frame):
        while pos < stop:
            (ln,) = unpack(buf, pos)
            stats.frames += 1
            yield buf[pos + 4:pos + 4 + ln]
            pos += 4 + ln


def read_file_runs(f: BinaryIO, stats: FileStats, content_type: bytes = CONTENT_TYPE,
                   chunk: int = 1 << 20,
                   max_frame: int = MAX_FRAME) -> Iterator[tuple[bytes, int, int]]:
    """The data frames of a Frame Streams file as runs read in place: ``(buf, pos, stop)``
    where ``buf[pos:stop]`` is a run of whole data frames (each a 32-bit length, at most
    ``max_frame``, and its payload), in file order; frames are not counted here.

    Damage (a truncated frame, an oversized length, a bad control frame, another content
    type) stops the iteration with ``stats.damaged`` saying where and why; every frame
    before it has been yielded. ``f`` is a binary stream (a gzip stream works: only
    ``read``). The file is read in chunks; the run ends are found by
    :func:`~dnsguard.capture.dnstapwire.frames_end` (compiled), control frames (START, STOP)
    here. The limits are those of :class:`FrameDecoder`.

    >>> import io
    >>> body = encode_control(START, [CONTENT_TYPE]) + encode_data(b"a") + encode_data(b"bc")
    >>> [(len(b), p, e) for b, p, e in read_file_runs(io.BytesIO(body), FileStats())]
    [(53, 42, 53)]
    """
    unpack = _U32.unpack_from
    buf = b""
    pos = 0  # next frame in buf
    base = 0  # file offset of buf[0]
    started = False
    while True:
        n = len(buf)
        while pos + 4 <= n:
            end = frames_end(buf, pos, n, max_frame)
            if end != pos:
                if not started:
                    stats.damaged = f"data frame before START at octet {base + pos}"
                    return
                yield buf, pos, end
                pos = end
                continue
            (ln,) = unpack(buf, pos)
            if ln:
                if ln > max_frame:
                    stats.damaged = (f"data frame of {ln} octets (more than {max_frame}) at "
                                     f"octet {base + pos}")
                    return
                break  # cut by the chunk's end: read on
            if pos + 8 > n:
                break
            (cl,) = unpack(buf, pos + 4)
            at = base + pos
            if cl > MAX_CONTROL:
                stats.damaged = f"control frame of {cl} octets (more than {MAX_CONTROL}) at " \
                                f"octet {at}"
                return
            end = pos + 8 + cl
            if end > n:
                break
            try:
                fr = decode_control(buf[pos + 8:end])
            except FrameError as e:
                stats.damaged = f"{e} at octet {at}"
                return
            pos = end
            if fr.control == START:
                if started:
                    stats.damaged = f"second START at octet {at}"
                    return
                if fr.content_types and content_type not in fr.content_types:
                    stats.damaged = (f"content type {_types(fr.content_types)}, not "
                                     f"{content_type!r}")
                    return
                started = True
            elif fr.control == STOP:
                stats.stopped = True
                return
            else:
                stats.damaged = (f"unexpected {CONTROL_NAMES[fr.control].upper()} control "
                                 f"frame at octet {at}")
                return
        try:
            data = f.read(chunk)
        except (OSError, EOFError, ValueError) as e:  # gzip damage: BadGzipFile, zlib.error
            stats.damaged = f"cannot read on ({e}) after octet {base + pos}"
            return
        if not data:
            break
        stats.bytes += len(data)
        base += pos
        buf = buf[pos:] + data  # the rest of a frame (< max_frame) and the new chunk
        pos = 0
    if pos < len(buf):
        stats.damaged = f"truncated: a frame cut short at octet {base + pos}"
    elif not started:
        stats.damaged = "no START control frame: empty or not a Frame Streams file"
    # A file without STOP but otherwise whole: a writer still running, or killed. Not damage.
