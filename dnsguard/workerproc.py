"""``workers: N``: the daemon as N capture processes and one supervisor (docs/daemon.md,
Workers; the split itself: :mod:`dnsguard.workers`).

* The **supervisor** (the process systemd starts) reads the configuration and the rules, forks
  the workers (which build their pipelines on its parsed rules: not read again), then opens
  the alert file and the metrics port, drops privileges and runs the judge
  (:class:`~dnsguard.workers.JudgePipeline`), the merger and the one alert funnel.
* Each **worker** (:class:`WorkerDaemon`, the ordinary capture loop of
  :class:`~dnsguard.daemon.Daemon`) opens its own capture on every interface, joined to the
  interface's fanout group, drops privileges, and runs a
  :class:`~dnsguard.workers.WorkerPipeline`. After every wake-up it sends the supervisor what
  it produced — DNS observations and alerts, each keyed by capture time — and its watermark;
  every second a snapshot of its counters (the supervisor's /metrics sums them).

Messages on each worker's socket pair: a 4-byte length, then a pickle of ``(kind, payload)``:
``("ready", interfaces)`` (every capture is open and in its fanout group: frames reach this
worker from now on), ``("failed", cause)`` (it could not get there; it exits),
``("batch", (items, watermark))``, ``("stats", dict)``, ``("long", (keys, counts))`` (its
long-horizon client → domain keys that changed, for the checkpoint: when the supervisor asks
with one byte ``L``, every ``checkpoint_every`` seconds, and at stop), ``("final", items)`` (the
last windows' alerts, after SIGTERM). Both ends are this program; nothing else can reach the
socket pair.

Readiness: the supervisor logs "capturing on" and sends ``READY=1`` only once every worker
has said ``ready``. Until a worker has joined an interface's fanout group the kernel gives its
share of the frames to the members already there (or, before the first, to nobody): a unit
ordered after the sensor, or an operator who starts traffic on ``READY=1``, would otherwise
see frames lost or split. A worker that fails before it is ready makes the supervisor exit
(code 2) naming the worker and the cause; one that is not ready within
``WORKER_START_TIMEOUT`` is killed and the supervisor exits 1, rather than wait for the
service manager's start timeout, which would stop the sensor without saying why.

A worker that dies makes the supervisor stop (exit 1): the service manager restarts the
sensor whole, rather than running on with part of the traffic unseen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
from types import SimpleNamespace

from dnsguard import __version__
from dnsguard.daemon import (
    HOUSEKEEP_EVERY,
    SELECT_TIMEOUT,
    Daemon,
    _preload,
    drop_privileges,
)
from dnsguard.detect.rules import RuleSet
from dnsguard.detect.yamlsrc import SourceError
from dnsguard.workers import (
    ALERT,
    Funnel,
    JudgePipeline,
    Merger,
    WorkerPipeline,
    name_flow,
)

log = logging.getLogger("dnsguard.daemon")

_LEN = struct.Struct("!I")
# detect.policy.Policy's counters
_POLICY_COUNTS = ("suppressed", "rate_limited", "escalated", "merged")
MAX_MESSAGE = 64 << 20  # bytes: a batch is at most one wake-up's frames
STATS_EVERY = 1.0
FINAL_WAIT = 30.0  # seconds the supervisor waits for the workers' last windows at stop
# Seconds the supervisor waits for every worker to be capturing (in its fanout groups). A
# worker only builds its pipeline on the supervisor's parsed rules and opens its rings (the
# modules are imported and the rules read before the fork): well under a second. 30 s leaves
# the supervisor's own start-up room under the unit's TimeoutStartSec=60s, so a stuck worker
# is reported by name here, not killed by systemd without a cause.
WORKER_START_TIMEOUT = 30.0
# How far behind the wall clock a quiet worker's watermark stays: a frame still in a ring
# block the kernel has not handed over is at most frame_timeout old, plus scheduling slack.
QUIET_SLACK = 1.0


def fanout_base(pid: int) -> int:
    """The sensor's fanout group ids start here (+ each interface's index): from the
    supervisor's pid, so two sensors on one host are unlikely to meet in a group."""
    return (pid * 7919) & 0xFFFF


def send(sock: socket.socket, kind: str, payload: object) -> None:
    data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LEN.pack(len(data)) + data)


class Reader:
    """Length-prefixed messages from a non-blocking socket, as they complete."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def messages(self) -> list[tuple]:
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    self.eof = True
                    break
                self.buf += chunk
                if len(chunk) < 1 << 20:
                    break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.eof = True
        out = []
        buf = self.buf
        while len(buf) >= 4:
            (n,) = _LEN.unpack_from(buf)
            if n > MAX_MESSAGE:
                raise ValueError(f"message of {n} bytes from a worker")
            if len(buf) < 4 + n:
                break
            out.append(pickle.loads(bytes(buf[4:4 + n])))
            del buf[:4 + n]
        return out


# --- the worker ---------------------------------------------------------------------------------
class WorkerDaemon(Daemon):
    """One worker process: the daemon's capture loop over a :class:`WorkerPipeline`, its
    output to the supervisor instead of an alert file and a metrics port."""

    def __init__(self, cfg, index: int, sock: socket.socket, fanout: int) -> None:
        super().__init__(cfg)
        self.index = index
        self.sock = sock
        self.fanout = fanout
        self.items: list[tuple] = []
        self.key = 0.0  # capture time of the newest observation: the stream's order
        self.finishing: list[tuple] | None = None
        self._next_stats = 0.0

    def _ship(self, rec: tuple) -> None:
        ts = rec[1]
        if ts > self.key:
            self.key = ts
        self.items.append((self.key, rec))

    def _emit(self, alert: dict) -> None:
        self.metrics.count_alert(alert)
        ident, ts = self.pipeline.raised
        item = (ALERT, ident, ts, alert)
        if self.finishing is not None:
            self.finishing.append(item)
        else:
            self.items.append((self.key, item))

    def _build_pipeline(self, settings, ruleset):
        # The supervisor's judge keeps the model's checkpoint.
        settings = dataclasses.replace(settings, model_state=None)
        pipe = WorkerPipeline(settings, ruleset, self._emit, self._ship)
        pipe.source = f"live:{','.join(self.cfg.interfaces)}"
        return pipe

    def after_wake(self) -> None:
        now = time.time()
        mark = self.key
        if not self.items:  # quiet: no frame older than this can still arrive
            mark = max(mark, now - self.cfg.ring.frame_timeout / 1000 - QUIET_SLACK)
        try:
            send(self.sock, "batch", (self.items, mark))
            if now >= self._next_stats:
                self._next_stats = now + STATS_EVERY
                send(self.sock, "stats", self.snapshot())
        except OSError:  # the supervisor is gone: stop
            self.stop_signal = self.stop_signal or signal.SIGTERM
        self.items = []

    def _parent_closed(self) -> None:
        """The supervisor wrote (``L``: ship the long-horizon keys) or went away."""
        try:
            data = self.sock.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            log.error("worker %d: the supervisor is gone; stopping", self.index)
            self.stop_signal = self.stop_signal or signal.SIGTERM
        elif b"L" in data:
            self._ship_long()

    def _ship_long(self) -> None:
        try:
            send(self.sock, "long", self.pipeline.long_state())
        except OSError:  # the supervisor is gone: stop
            self.stop_signal = self.stop_signal or signal.SIGTERM

    def checkpoint_long(self) -> None:
        """The supervisor checkpoints (it asks for the keys when it does)."""

    def snapshot(self) -> dict:
        p = self.pipeline
        return {
            "counters": dict(p.counters), "malformed": dict(p.malformed),
            "query_types": dict(p.query_types), "response_types": dict(p.response_types),
            "tables": {sc: (len(t), t.evicted) for sc, t in p.tables.items()
                       if sc != "domain"},
            "long": p.long_counts(),
            "policy": {k: getattr(p.policy, k, 0) for k in _POLICY_COUNTS},
            "last_ts": p.last_ts,
            "learned": sum(int(getattr(d, "learned", 0) or 0) for d in p.extra_detectors),
            "interfaces": [(i.name, i.kind, i.frames, i.kernel_packets, i.kernel_drops,
                            i.kernel_freezes) for i in self.interfaces],
        }

    def starting_signals(self, parent: Daemon) -> None:
        """Just forked from ``parent``: this worker's own stop flag for SIGTERM/SIGINT (systemd
        signals the whole control group) and no wake-up descriptor of the parent's; a signal
        the parent's handler took in this process since the fork is kept."""
        signal.set_wakeup_fd(-1)
        for s in (parent._wake_r, parent._wake_w):
            if s is not None:
                s.close()
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor passes it on when ready
        self.stop_signal = self.stop_signal or parent.stop_signal

    def _stopped_starting(self) -> bool:
        """Told to stop before capturing: nothing to save, so end now (exit 0)."""
        if self.stop_signal is None:
            return False
        log.info("worker %d: stopping on %s before capturing", self.index,
                 signal.Signals(self.stop_signal).name)
        return True

    def run_worker(self, pw, ruleset: RuleSet) -> int:
        """Build the pipeline on ``ruleset``, the supervisor's (parsed and checked before the
        fork: a bad file has already stopped the start naming its FILE:LINE; not read again
        here, which took each worker about a second with a long allowlist), join the fanout
        groups, say ready, then capture."""
        from dnsguard.capture.live import CaptureOpenError
        from dnsguard.metrics import Metrics

        cfg = self.cfg
        settings = cfg.to_settings()
        if self._stopped_starting():
            return 0
        try:
            self.metrics = Metrics(__version__)  # not served: what the loop observes
            self.pipeline = self._build_pipeline(settings, ruleset)
            self._ports = settings.ports
            self.interfaces = self._open_captures()
        except (SourceError, CaptureOpenError, OSError, ImportError) as e:
            log.error("worker %d: %s", self.index, e)
            self.tell_failed(str(e))
            return 2
        if self._stopped_starting():
            return 0
        self._track_captures()
        _preload()
        if pw is not None:
            drop_privileges(pw)
        # Capture from now on: join every fanout group (a ring joins at start()), then tell
        # the supervisor, which reports the sensor ready once every worker has. Frames that
        # come before the loop runs wait in the ring or the socket's buffer.
        for i in self.interfaces:
            try:
                i.start()
            except OSError as e:
                cause = (f"{i.name}: cannot start capturing (fanout group {i.fanout}): "
                         f"{e.strerror or e}")
                if e.errno == errno.EINVAL:  # af_packet.c fanout_add: a member differs
                    cause += ("; another program holds this group id with other settings "
                              "(the ids derive from the supervisor's pid: a restart picks "
                              "others)")
                log.error("worker %d: %s", self.index, cause)
                self.tell_failed(cause)
                return 2
        self.sock.setblocking(True)
        try:
            send(self.sock, "ready", [(i.name, i.fanout) for i in self.interfaces])
        except OSError:  # the supervisor is gone
            return 1
        self.extra_fds = {self.sock.fileno(): self._parent_closed}
        self.notifier.close()  # only the supervisor speaks to systemd
        return self._loop()

    def tell_failed(self, cause: str) -> None:
        """Tell the supervisor why this worker cannot capture (it then stops the sensor)."""
        with contextlib.suppress(OSError):
            self.sock.setblocking(True)
            send(self.sock, "failed", cause)

    def _shutdown(self, rc: int) -> int:
        self.finishing = []
        rc = super()._shutdown(rc)  # finish(): the last windows' alerts, into finishing
        with contextlib.suppress(OSError):
            send(self.sock, "batch", (self.items, float("inf")))
            send(self.sock, "stats", self.snapshot())
            send(self.sock, "long", self.pipeline.long_state())  # for the last checkpoint
            send(self.sock, "final", self.finishing)
        return rc

    def _open_captures(self) -> list:  # no fallback: every worker must join the fanout
        from dnsguard.capture.live import open_interfaces

        return open_interfaces(self.cfg.interfaces, self._ports, self._capture_options())


def _name_worker_logs(index: int) -> None:
    """Log records of worker ``index`` say so (``dnsguard.daemon[worker 1]: …``)."""
    def tag(record: logging.LogRecord) -> bool:
        record.name = f"{record.name}[worker {index}]"
        return True

    for h in logging.getLogger().handlers:
        h.addFilter(tag)


# --- the supervisor -----------------------------------------------------------------------------
class _Table:
    def __init__(self, n: int, evicted: int) -> None:
        self.n, self.evicted = n, evicted

    def __len__(self) -> int:
        return self.n


class _Iface:
    def __init__(self, name: str, kind: str) -> None:
        self.name, self.kind = name, kind
        self.frames = self.kernel_packets = self.kernel_drops = self.kernel_freezes = 0


class _Sum:
    """What the metrics exporter reads of a pipeline, summed over the workers' snapshots
    (and the judge's domain table and policy)."""

    def __init__(self, judge: JudgePipeline, funnel: Funnel) -> None:
        self.judge, self.funnel = judge, funnel
        self.snaps: dict[int, dict] = {}

    def _add(self, field: str) -> dict:
        out: dict = {}
        for s in list(self.snaps.values()):
            for k, v in s[field].items():
                out[k] = out.get(k, 0) + v
        return out

    counters = property(lambda self: self._add("counters"))
    malformed = property(lambda self: self._add("malformed"))
    query_types = property(lambda self: self._add("query_types"))
    response_types = property(lambda self: self._add("response_types"))

    @property
    def tables(self) -> dict:
        out = {"domain": _Table(len(self.judge.tables["domain"]),
                                self.judge.tables["domain"].evicted)}
        for s in list(self.snaps.values()):
            for sc, (n, ev) in s["tables"].items():
                t = out.setdefault(sc, _Table(0, 0))
                t.n += n
                t.evicted += ev
        return out

    @property
    def policy(self) -> SimpleNamespace:
        """The policies' counts: each worker's, the judge's and the funnel's (an alert is
        held back by at most one of them)."""
        snaps = list(self.snaps.values())
        return SimpleNamespace(**{
            k: sum(s["policy"].get(k, 0) for s in snaps) + getattr(self.judge.policy, k, 0)
            + getattr(self.funnel.policy, k, 0) for k in _POLICY_COUNTS})

    @property
    def horizon(self):
        """The long-horizon tables as /metrics reads them: the judge's ``long_domain`` keys
        (it sees every worker's queries) and the workers' ``long_client_domain`` keys
        (``DomainMeasurements.pair_counts``)."""
        h = self.judge.horizon
        if h is None:
            return None
        n, ev = self.judge.measure.pair_counts()
        return SimpleNamespace(domains=h.domains, pairs=_Table(n, ev), evicted={
            "long_domain": h.evicted["long_domain"], "long_client_domain": ev})

    @property
    def last_ts(self) -> float:
        return max([s["last_ts"] for s in list(self.snaps.values())] + [self.judge.last_ts])

    @property
    def extra_detectors(self) -> list:
        return [SimpleNamespace(learned=sum(s["learned"] for s in list(self.snaps.values()))
                                + sum(int(getattr(x, "learned", 0) or 0)
                                      for x in self.judge.extra_detectors))]

    def interfaces(self) -> list[_Iface]:
        out: dict[str, _Iface] = {}
        for s in list(self.snaps.values()):
            for name, kind, fr, kp, kd, kf in s["interfaces"]:
                i = out.setdefault(name, _Iface(name, kind))
                i.frames += fr
                i.kernel_packets += kp
                i.kernel_drops += kd
                i.kernel_freezes += kf
        return list(out.values())


class _Ifaces:
    def __init__(self, view: _Sum) -> None:
        self.view = view

    def __iter__(self):
        return iter(self.view.interfaces())


class Supervisor(Daemon):
    """The process systemd starts when ``workers`` > 1."""

    def run(self) -> int:
        from prometheus_client import disable_created_metrics

        from dnsguard.metrics import Metrics

        cfg = self.cfg
        if not cfg.interfaces:
            log.error("workers: %d needs interfaces to capture on ('interfaces:' or "
                      "--interface)", cfg.workers)
            return 2
        for key in ("dnstap", "dns_log"):  # each runs in one process
            if getattr(cfg, key, None):
                log.error("workers: %d: '%s:' runs in one process; set workers: 1 to use "
                          "it", cfg.workers, key)
                return 2
        self.children: list[tuple[int, socket.socket]] = []
        self._install_signals()  # a stop from here on is a clean one (exit 0)
        ready = self._prepare()  # as one process: interfaces, rules, user, state dir
        if isinstance(ready, int):
            return ready
        settings, ruleset, pw = ready
        if self.stop_signal is not None:
            log.info("stopping on %s before the start", signal.Signals(self.stop_signal).name)
            return 0
        # Workers first: no thread and no output file exists yet to be inherited.
        fanout = fanout_base(os.getpid())
        for i in range(cfg.workers):
            ours, theirs = socket.socketpair()
            pid = os.fork()
            if pid == 0:  # the worker
                _name_worker_logs(i)
                ours.close()
                for _, s in self.children:
                    s.close()
                rc = 1
                worker = None
                try:
                    worker = WorkerDaemon(cfg, i, theirs, fanout)
                    worker.starting_signals(self)
                    rc = worker.run_worker(pw, ruleset)
                except BaseException as e:
                    log.exception("worker %d failed", i)
                    if worker is not None:
                        worker.tell_failed(f"{type(e).__name__}: {e}")
                finally:
                    logging.shutdown()
                    os._exit(rc)
            theirs.close()
            ours.setblocking(False)
            self.children.append((pid, ours))
        log.info("started %d workers (pids %s), fanout groups from %d", cfg.workers,
                 ", ".join(str(p) for p, _ in self.children), fanout)
        try:
            self.writer = self._open_alerts(pw)
        except OSError as e:
            log.error("alerts: %s: cannot open for writing: %s", cfg.alerts, e.strerror or e)
            self._stop_children()
            return 2
        disable_created_metrics()
        self.metrics = Metrics(__version__)
        try:
            self.funnel = Funnel(settings, self._emit)
            self.judge = JudgePipeline(settings, ruleset, self._judged, cfg.workers)
        except Exception as e:
            log.error("cannot set up the judge: %s", e)
            self._stop_children()
            return 2
        self.judge.source = f"live:{','.join(cfg.interfaces)}"
        self.pipeline = self.judge
        self._long_wait: set[int] = set()  # workers yet to send their keys for a checkpoint
        self.view = _Sum(self.judge, self.funnel)
        self.metrics.pipeline = self.view
        self.metrics.interfaces = _Ifaces(self.view)
        self.metrics.writer = self.writer
        if not self._serve_metrics():
            self._stop_children()
            return 1
        if not self._become(pw):
            self._stop_children()
            return 2
        return self._loop()  # Daemon's: signals, gc as in replay, then _capture_loop

    def _judged(self, alert: dict) -> None:
        self.funnel.offer(*self.judge.raised, alert)

    def checkpoint_long(self) -> None:
        """Ask every worker for its long-horizon client → domain keys; the checkpoint is
        written once all have answered (:meth:`_took_long`), with the judge's domains."""
        self._long_wait = set()
        for k, (_, s) in enumerate(self.children):
            try:
                s.send(b"L")
                self._long_wait.add(k)
            except OSError:  # full or gone: this round goes without it
                pass
        if not self._long_wait:
            self.judge.checkpoint()

    def _took_long(self, k: int, keys: list, counts: tuple) -> None:
        self.judge.measure.take_pairs(k, keys, counts)
        wait = self._long_wait
        if wait:
            wait.discard(k)
            if not wait:
                try:
                    self.judge.checkpoint()
                except Exception:
                    log.exception("while checkpointing the long-horizon state")

    def _stop_children(self, sig: int = signal.SIGTERM) -> None:
        for pid, _ in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _take(self, item: tuple) -> None:
        if item[0] == ALERT:
            self.funnel.offer(item[1], item[2], name_flow(item[3], self.judge))
        else:
            try:
                self.judge.observe(item)
            except Exception:
                self.judge.malformed["internal_error"] += 1
                log.exception("internal error while judging an observation")

    def _capture_loop(self) -> int:  # the workers capture; this process judges their output
        n = len(self.children)
        merger = Merger(n)
        readers = [Reader(s) for _, s in self.children]
        by_fd = {s.fileno(): k for k, (_, s) in enumerate(self.children)}
        finals: list[list] = [None] * n  # type: ignore[list-item]
        wake_fd = self._wake_r.fileno()
        observe, batches = self.metrics.processing.observe, self.metrics.batch_frames
        # Ready (the log line, READY=1) once every worker is in its fanout groups; a worker
        # that fails or hangs before that stops the sensor (see the module's text).
        starting = set(range(n))
        failed: set[int] = set()  # workers that said why they stopped
        start_by = time.monotonic() + WORKER_START_TIMEOUT
        next_house = time.monotonic() + HOUSEKEEP_EVERY
        stopping_since: float | None = None
        rc = 0
        while True:
            if starting and stopping_since is None and time.monotonic() > start_by:
                late = sorted(starting)
                pl = "s" if len(late) > 1 else ""
                log.error("worker%s %s (pid%s %s) not capturing within %gs of the start (not "
                          "in the fanout group yet): stopping the sensor", pl,
                          ", ".join(map(str, late)), pl,
                          ", ".join(str(self.children[k][0]) for k in late),
                          WORKER_START_TIMEOUT)
                for k in late:  # nothing to save yet: no SIGTERM's wait for them
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.children[k][0], signal.SIGKILL)
                rc = 1
                self.stop_signal = signal.SIGTERM
            if self.stop_signal is not None and stopping_since is None:
                stopping_since = time.monotonic()
                if not rc:
                    log.info("stopping on %s: waiting for the workers' last windows",
                             signal.Signals(self.stop_signal).name)
                self.notifier.notify("STOPPING=1")
                self._stop_children()
            open_fds = [s.fileno() for (_, s), r in zip(self.children, readers, strict=True)
                        if not r.eof]
            if not open_fds:
                break
            if stopping_since is not None and time.monotonic() - stopping_since > FINAL_WAIT:
                log.error("workers did not finish within %gs: stopping without their last "
                          "windows", FINAL_WAIT)
                self._stop_children(signal.SIGKILL)
                rc = 1
                break
            try:
                ready, _, _ = select.select([wake_fd, *open_fds], [], [], SELECT_TIMEOUT)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                ready = []
            for fd in ready:
                if fd == wake_fd:
                    with contextlib.suppress(OSError):
                        while self._wake_r.recv(256):
                            pass
                    continue
                k = by_fd[fd]
                t0 = time.perf_counter()
                try:
                    msgs = readers[k].messages()
                except (ValueError, pickle.UnpicklingError, EOFError) as e:
                    log.error("worker %d sent a broken message (%s): stopping", k, e)
                    readers[k].eof = True
                    msgs = []
                for kind, payload in msgs:
                    if kind == "ready":
                        starting.discard(k)
                        if not starting and stopping_since is None:
                            self._ready()
                    elif kind == "failed":
                        self._failed(k, payload, k in starting)
                        failed.add(k)
                        rc = 2 if k in starting else 1
                        self.stop_signal = self.stop_signal or signal.SIGTERM
                    elif kind == "batch":
                        items, mark = payload
                        merger.push(k, items, mark)
                    elif kind == "stats":
                        self.view.snaps[k] = payload
                        self.judge.measure.worker_long[k] = payload["long"]
                    elif kind == "long":
                        self._took_long(k, *payload)
                    elif kind == "final":
                        finals[k] = payload
                for item in merger.ready():
                    self._take(item)
                observe(time.perf_counter() - t0)
                batches.inc()
                if readers[k].eof:
                    merger.close(k)
                    if k in failed:
                        pass
                    elif k in starting and self.stop_signal is None:
                        # (asked to stop, a starting worker ends at once: systemd signals
                        # every process of the unit, the loop may not have seen it yet)
                        self._failed(k, None, True)
                        rc = 2
                        self.stop_signal = signal.SIGTERM
                    elif finals[k] is None and self.stop_signal is None:
                        log.error("worker %d (pid %d) ended unexpectedly: stopping the sensor "
                                  "so that the service manager restarts it whole", k,
                                  self.children[k][0])
                        rc = 1
                        self.stop_signal = signal.SIGTERM
            if self.hup and not starting:  # a worker not yet in its loop would die of it
                self.hup = False
                self._reload()
                self._stop_children(signal.SIGHUP)
            now = time.monotonic()
            if now >= next_house:
                next_house = now + HOUSEKEEP_EVERY
                self.housekeeping(time.time())
        for k in range(n):
            merger.close(k)
        for item in merger.ready():
            self._take(item)
        if merger.late:
            log.info("%d observations arrived after later ones had been judged (capture "
                     "times out of order between workers)", merger.late)
        return self._finish(finals, rc)

    def _ready(self) -> None:
        """Every worker captures, in its fanout groups: the sensor is ready."""
        n, names = len(self.children), ", ".join(self.cfg.interfaces)
        log.info("capturing on %s with %d workers; %d rules", names, n,
                 len(self.judge.ruleset.rules))
        self.notifier.notify("READY=1", f"STATUS=capturing on {names} with {n} workers")

    def _failed(self, k: int, cause: str | None, starting: bool) -> None:
        """Worker ``k`` said why it cannot capture (``cause``), or ended before it was
        capturing (``cause`` None: its exit status says how)."""
        pid = self.children[k][0]
        if cause is None:
            cause = f"it ended ({self._exit_status(pid)}) before joining its fanout groups"
        if starting:
            log.error("worker %d (pid %d) failed to start: %s; stopping the sensor", k, pid,
                      cause)
        else:
            log.error("worker %d (pid %d) failed: %s; stopping the sensor", k, pid, cause)

    @staticmethod
    def _exit_status(pid: int, wait: float = 2.0) -> str:
        """How a worker whose socket closed ended (it has exited, or is about to: its
        socket closes only with it), waiting at most ``wait`` seconds to reap it."""
        until = time.monotonic() + wait
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return "exit status unknown"
            if done:
                code = os.waitstatus_to_exitcode(status)
                return (f"killed by {signal.Signals(-code).name}" if code < 0
                        else f"exit code {code}")
            if time.monotonic() > until:
                return "still exiting"
            time.sleep(0.02)

    def _finish(self, finals: list, rc: int) -> int:
        from dnsguard.workers import _FINISH_ORDER

        try:
            self.judge.finish()
        except Exception:
            log.exception("while evaluating the last windows")
        last = [it for f in finals if f for it in f]
        last.sort(key=lambda it: (_FINISH_ORDER.get(it[3].get("scope"), 9), it[2]))
        for it in last:
            self.funnel.offer(it[1], it[2], name_flow(it[3], self.judge))
        self.funnel.flush()  # the records still settling
        try:
            self.judge.close()
        except Exception:
            log.exception("while closing the detectors")
            rc = rc or 1
        if self.writer is not None:
            self.writer.close()
            self._sync_writer()
            if self.writer.pending:
                n = len(self.writer.pending)
                self.writer.dump_pending(sys.stderr)
                self._sync_writer()
                log.error("%s: %d alerts could not be written (%s); printed on stderr",
                          self.cfg.alerts, n, self.writer.last_error)
        for pid, s in self.children:
            s.close()
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                log.error("worker pid %d exited with %d", pid, code)
                rc = rc or 1
        c = self.view.counters
        drops = sum(i.kernel_drops for i in self.view.interfaces())
        log.info("stopped: %d frames, %d queries, %d responses, %d alerts written, "
                 "%d kernel drops (%d workers)", sum(c.get(o, 0) for o in (
                     "dns_query", "dns_response", "dns_partial", "not_dns", "malformed",
                     "not_dns_port", "unsupported")), c.get("queries", 0),
                 c.get("responses", 0), self.written, drops, len(self.children))
        self.metrics.close()
        self.notifier.close()
        signal.set_wakeup_fd(-1)
        return rc

    def housekeeping(self, now: float) -> None:
        """The judge's periodic work (its domain windows that ended, the series steps) and
        the pending alerts; the workers sweep their own keys."""
        super().housekeeping(now)

    def flush_alerts(self, now: float | None = None) -> None:
        """The funnel holds the records settling (the workers and the judge write at once)."""
        self.funnel.flush(now)

