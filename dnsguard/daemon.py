"""``dnsguard run``: the live sensor.

Capture sockets (one per interface, :mod:`dnsguard.capture.live`) → the same
:class:`~dnsguard.pipeline.Pipeline` as replay → alerts as JSON lines; Prometheus metrics on
their own port (:mod:`dnsguard.metrics`).

Lifecycle:

* started as root, it opens everything that needs privileges (capture sockets, state
  directory, alert file, metrics port) and then becomes an unprivileged user (``user:``;
  default ``dnsguard`` if that user exists, else ``nobody``); started unprivileged (systemd
  ``DynamicUser=`` with ambient ``CAP_NET_RAW``) it changes nothing;
* ``SIGHUP`` reloads rules and allowlists (a broken file is logged and the old rules stay) and
  reopens the alert file (logrotate);
* ``SIGTERM``/``SIGINT`` evaluate the open windows once more, flush the alerts, let the model
  checkpoint, and exit 0;
* ``READY=1`` / ``STOPPING=1`` go to systemd when ``NOTIFY_SOCKET`` is set.

Signal handlers only set flags and wake ``select()`` through a socket pair
(``signal.set_wakeup_fd``); the loop acts on them between batches.

The capture loop runs with the garbage-collector setting replay uses
(:func:`dnsguard.pipeline.hot_loop_gc`): what is alive when it starts (rules, model) is frozen
out of collection and collections run far less often; :func:`~dnsguard.pipeline.restore_gc`
undoes it when the loop ends, however it ends.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import importlib
import logging
import os
import pwd
import select
import signal
import socket
import sys
import time
from pathlib import Path

from dnsguard import __version__
from dnsguard.config import DaemonConfig
from dnsguard.detect.rules import RuleSet, load_dir
from dnsguard.detect.yamlsrc import SourceError

log = logging.getLogger("dnsguard.daemon")

SELECT_TIMEOUT = 0.5  # seconds; signals wake the loop at once anyway
STATS_EVERY = 1.0  # seconds between reads of the kernel's drop counters
HOUSEKEEP_EVERY = 1.0  # seconds between the periodic work (sweep, series steps, retries)
SWEEP_KEYS = 2_000  # at most this many keys examined per window table per sweep
REOPEN_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # seconds between capture reopen attempts
_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


# --- logging ----------------------------------------------------------------------------------
class JournalFormatter(logging.Formatter):
    """``LEVEL logger: message`` on one line; under journald (``JOURNAL_STREAM`` set) with a
    ``<N>`` syslog priority prefix, which journald turns into the record's priority."""

    def __init__(self, journal: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")  # one record, one line
        if self.journal:
            return f"<{_PRIORITY.get(record.levelname, 6)}>{text}"
        return text


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JournalFormatter(bool(os.environ.get("JOURNAL_STREAM"))))
    root.addHandler(h)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


# --- systemd notification ---------------------------------------------------------------------
class Notifier:
    """sd_notify(3) without libsystemd: datagrams to ``$NOTIFY_SOCKET``."""

    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET", "")
        self.addr = ("\0" + addr[1:]) if addr.startswith("@") else addr
        self.sock: socket.socket | None = None
        if self.addr:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            except OSError as e:
                log.warning("cannot create the systemd notification socket: %s", e)

    def notify(self, *lines: str) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.sendto("\n".join(lines).encode(), self.addr)
            return True
        except OSError as e:
            log.warning("sd_notify(%s) failed: %s", lines[0], e)
            return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


# --- privileges -------------------------------------------------------------------------------
def target_user(configured: str | None) -> pwd.struct_passwd | None:
    """The user to become after setup, or None to stay (not root, or ``user: root``)."""
    if os.geteuid() != 0:
        return None
    names = [configured] if configured else ["dnsguard", "nobody"]
    for n in names:
        try:
            pw = pwd.getpwnam(n)
        except KeyError:
            continue
        return None if pw.pw_uid == 0 else pw
    raise LookupError(f"user {names[0]!r} does not exist")


def drop_privileges(pw: pwd.struct_passwd) -> None:
    """Become ``pw`` for good: no supplementary groups, real/effective/saved ids all changed
    (which also clears every capability)."""
    os.setgroups([])
    os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
    os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - the kernel would have to be broken
        raise RuntimeError("privileges could be regained after dropping them")


def _preload() -> None:
    """Import what later code would import lazily: after the drop the interpreter's own
    library may be unreadable (e.g. a Python installed under /root)."""
    import encodings.ascii  # noqa: F401 - the alert file's codec
    import encodings.idna  # noqa: F401
    import gzip  # noqa: F401 - exporter, Accept-Encoding: gzip
    import json  # noqa: F401
    import traceback  # noqa: F401 - log.exception

    from dnsguard.detect import allowlist, rules  # noqa: F401 - SIGHUP reload

    for name in ("dnsguard.feedback",):  # the model re-reads its feedback on SIGHUP
        try:
            importlib.import_module(name)
        except ImportError as e:
            log.debug("preload %s: %s", name, e)


def _ifindex(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def _operstate(name: str) -> str | None:
    """The interface's operational state from sysfs (``up``, ``down``, ``unknown``, …)."""
    try:
        with open(f"/sys/class/net/{name}/operstate") as f:
            return f.read().strip()
    except OSError:
        return None


def _refresh_scapy_interfaces() -> None:
    try:
        from scapy.config import conf

        conf.ifaces.reload()
    except Exception as e:  # a refresh failing is no reason not to try the open
        log.debug("scapy interface refresh: %s", e)


def _interface_exists(name: str) -> bool:
    return _ifindex(name) is not None


def refuse_missing_interfaces(interfaces) -> bool:
    """Log one line naming each configured interface that does not exist, and the host's;
    True when any is missing (``run`` then exits 1 before any work: the model's load, the
    alert file). One process or a supervisor of workers alike."""
    from dnsguard.capture.live import interface_names

    missing = [n for n in interfaces if not _interface_exists(n)]
    if missing:
        log.error("interface %s does not exist (this host has: %s): fix 'interfaces:' in "
                  "the configuration or --interface", ", ".join(missing),
                  ", ".join(interface_names()) or "none listed")
    return bool(missing)


def _log_opened(iface) -> None:
    """Log what a capture opened (the socket's granted buffer, the ring's shape)."""
    level, line = iface.describe()
    log.log(level, "%s", line)


# --- the daemon -------------------------------------------------------------------------------
class Daemon:
    def __init__(self, cfg: DaemonConfig) -> None:
        self.cfg = cfg
        self.stop_signal: int | None = None
        self.hup = False
        self.pipeline = None
        self.writer = None
        self.metrics = None
        self.interfaces: list = []
        self.dnstap = None  # DnstapServer: the dnstap listening sockets and senders
        self.dns_log = None  # output.dnslog.DnsLog when 'dns_log' is set
        self.written = 0  # alert records written
        self._writer_seen = {"count": 0, "errors": 0, "dropped": 0}
        self._captures: dict[str, dict] = {}  # interface name → reopen state
        self.notifier = Notifier()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self.fanout: int | None = None  # fanout group base (workers > 1: a worker process)
        # Further descriptors the capture loop waits on, and who handles them (a worker
        # process: its link to the supervisor, dnsguard.workerproc).
        self.extra_fds: dict[int, object] = {}
        self._next_long_checkpoint = time.time() + cfg.checkpoint_every

    # signal handlers: flags only
    def _on_stop(self, signum, frame) -> None:
        self.stop_signal = signum

    def _on_hup(self, signum, frame) -> None:
        self.hup = True

    def _emit(self, alert: dict) -> None:
        """Write one alert. The writer never raises for an unwritable output: it keeps the
        alert pending (bounded) and retries; see AlertWriter and docs/daemon.md, Faults."""
        self.metrics.count_alert(alert)
        self.writer.write(alert)
        self._sync_writer()

    def _sync_writer(self) -> None:
        """Carry the writer's counts (written, failed attempts, dropped) into the metrics."""
        w, m = self.writer, self.metrics
        if w is None or m is None:
            return
        seen = self._writer_seen
        for attr, metric in (("count", m.alert_records), ("errors", m.alert_errors),
                             ("dropped", m.alert_dropped)):
            v = getattr(w, attr)
            if v > seen[attr]:
                metric.inc(v - seen[attr])
                seen[attr] = v
        self.written = w.count

    def _prepare_state_dir(self, pw) -> bool:
        d = self.cfg.state_dir
        try:
            d.mkdir(mode=0o750, parents=True, exist_ok=True)
            if pw is not None:
                st = d.stat()
                if st.st_uid != pw.pw_uid:
                    os.chown(d, pw.pw_uid, pw.pw_gid)
        except OSError as e:
            log.warning("state directory %s unusable (%s): the model's state will not be kept",
                        d, e.strerror or e)
            return False
        return True

    def _open_alerts(self, pw):
        from dnsguard.output.alerts import AlertWriter

        path = self.cfg.alerts
        if path == "-":
            return AlertWriter(sys.stdout)
        w = AlertWriter(path=path)
        if pw is not None:
            with contextlib.suppress(OSError):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        return w

    def _build_pipeline(self, settings, ruleset: RuleSet):
        from dnsguard.pipeline import Pipeline

        try:
            pipe = Pipeline(settings, ruleset, self._emit)
        except ImportError as e:
            if not getattr(settings, "use_model", False):
                raise
            log.warning("model unavailable (%s); running with the rules only", e)
            settings.use_model = False
            pipe = Pipeline(settings, ruleset, self._emit)
        for det in pipe.extra_detectors:
            self._instrument(det)
        pipe.source = f"live:{','.join([*self.cfg.interfaces, *self.cfg.dnstap])}"
        return pipe

    def _instrument(self, det) -> None:
        """Count the model's scores and the feedback labels it applies (wrapping its methods
        on the instance: nothing is added to the per-packet path when the model is off)."""
        m = self.metrics
        proba = getattr(det, "proba", None)
        if proba is not None:
            observe = m.model_score.observe

            def scored(x, _proba=proba):
                p = _proba(x)
                observe(p)
                return p

            det.proba = scored
        lookup = getattr(det, "_feedback", None)
        if lookup is not None:
            inc = m.feedback_labels.inc

            def labelled(scope, ident, _lookup=lookup):
                lab = _lookup(scope, ident)
                if lab is not None:
                    inc()
                return lab

            det._feedback = labelled

    def _open_dnstap(self) -> bool:
        """Listen on the dnstap sockets (before the privilege drop: a socket under /run)."""
        from dnsguard.capture.dnstap import DnstapCounters
        from dnsguard.capture.dnstap_listen import DnstapOpenError, DnstapServer
        from dnsguard.metrics import DnstapCollector

        counters = DnstapCounters()
        try:
            self.dnstap = DnstapServer(self.cfg.dnstap, self.pipeline.feed_message, counters)
        except DnstapOpenError as e:
            log.error("%s", e.strerror or e)
            return False
        self.metrics.registry.register(DnstapCollector(counters))
        for ep in self.dnstap.endpoints:
            log.info("dnstap: listening on %s", ep)
        return True

    def _prepare(self) -> tuple | int:
        """What every run checks and loads before any work, one process or a supervisor of
        workers: the interfaces exist, the rules load, the user exists, the state directory
        (no checkpoints without one). Returns ``(settings, ruleset, pw)`` or the exit code."""
        cfg = self.cfg
        if refuse_missing_interfaces(cfg.interfaces):
            return 1
        settings = cfg.to_settings()
        try:
            ruleset = load_dir(cfg.rules)
        except SourceError as e:
            log.error("rules: %s", e)
            return 2
        try:
            pw = target_user(cfg.user)
        except LookupError as e:
            log.error("%s (set 'user:' in the configuration)", e)
            return 2
        if not self._prepare_state_dir(pw):
            settings.model_state = settings.long_state = None
        return settings, ruleset, pw

    def run(self) -> int:
        from prometheus_client import disable_created_metrics

        from dnsguard.capture.live import CaptureOpenError
        from dnsguard.metrics import Metrics

        cfg = self.cfg
        if cfg.workers > 1:
            from dnsguard.workerproc import Supervisor

            return Supervisor(cfg).run()
        if not cfg.interfaces and not cfg.dnstap:
            log.error("nothing to read: set 'interfaces:' (or --interface) to capture, and/or "
                      "'dnstap:' (or --dnstap) to receive dnstap from DNS servers")
            return 2
        self._install_signals()
        ready = self._prepare()
        if isinstance(ready, int):
            return ready
        settings, ruleset, pw = ready
        try:
            self.writer = self._open_alerts(pw)
        except OSError as e:
            log.error("alerts: %s: cannot open for writing: %s", cfg.alerts, e.strerror or e)
            return 2
        disable_created_metrics()  # no *_created series: they only clutter the exposition
        self.metrics = Metrics(__version__)
        try:
            self.pipeline = self._build_pipeline(settings, ruleset)
        except Exception as e:
            log.error("cannot set up the pipeline: %s", e)
            return 2
        self.metrics.pipeline = self.pipeline
        self.metrics.writer = self.writer
        if cfg.dns_log:
            from dnsguard.output.dnslog import DnsLog

            try:
                self.dns_log = DnsLog(cfg.dns_log, sensor=cfg.sensor)
            except OSError as e:
                log.error("dns_log: %s: cannot open for writing: %s", cfg.dns_log,
                          e.strerror or e)
                return 2
            self.pipeline.set_dns_log(self.dns_log)
        self._ports = settings.ports
        try:
            if cfg.interfaces:
                self.interfaces = self._open_captures()
        except CaptureOpenError as e:
            log.error("%s", e)
            return 2
        if cfg.dnstap and not self._open_dnstap():
            for i in self.interfaces:
                with contextlib.suppress(OSError):
                    i.close()
            return 2
        self.metrics.interfaces = self.interfaces
        self._track_captures()
        if not self._serve_metrics():
            for i in self.interfaces:
                with contextlib.suppress(OSError):
                    i.close()
            if self.dnstap is not None:
                self.dnstap.close()
            return 1
        if not self._become(pw):
            return 2
        return self._loop()

    def _track_captures(self) -> None:
        """Log what each capture opened and start watching it (link state, reopening)."""
        for i in self.interfaces:
            _log_opened(i)
            self._captures[i.name] = {"iface": i, "ifindex": _ifindex(i.name), "down": False,
                                      "retry_at": None, "attempt": 0, "errors": i.read_errors}

    def _serve_metrics(self) -> bool:
        """Start the Prometheus exporter if one is configured; False (logged, with what to
        do) if its address cannot be bound."""
        cfg = self.cfg
        if not cfg.metrics_port:
            return True
        try:
            host, port = self.metrics.serve(cfg.metrics_host, cfg.metrics_port)
        except OSError as e:
            what = ("another process (another dnsguard?) holds it: stop it, or set"
                    if e.errno == errno.EADDRINUSE else "check the address, or set")
            log.error("metrics: cannot listen on %s: %s; %s 'metrics_address:' / "
                      "--metrics-address to a free port (0 turns the exporter off)",
                      cfg.metrics_address, e.strerror or e, what)
            return False
        log.info("metrics on http://%s/metrics",
                 f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return True

    def _become(self, pw) -> bool:
        """The last step before work: load what the dropped user may not be able to read,
        then become ``pw`` (False, logged, if that fails); warn about what it cannot do."""
        cfg = self.cfg
        _preload()
        if pw is None:
            if os.geteuid() == 0:
                log.warning("running as root (user: root); consider an unprivileged user")
            return True
        try:
            drop_privileges(pw)
        except OSError as e:
            log.error("cannot become user %s: %s", pw.pw_name, e)
            return False
        log.info("running as user %s (uid %d)", pw.pw_name, pw.pw_uid)
        if cfg.alerts != "-":
            parent = Path(cfg.alerts).resolve().parent
            if not os.access(parent, os.W_OK | os.X_OK):
                log.warning("%s is not writable by %s: reopening the alert file after "
                            "rotation will fail unless the file already exists", parent,
                            pw.pw_name)
        return True

    def _capture_options(self):
        from dnsguard.capture.live import CaptureOptions

        cfg = self.cfg
        return CaptureOptions(kind=cfg.capture, promisc=cfg.promiscuous,
                              rcvbuf=cfg.socket_buffer, geometry=cfg.ring, fanout=self.fanout)

    def _open_captures(self) -> list:
        """One capture per interface, of the configured kind. A ring the kernel refuses
        (no TPACKET_V3, no memory for it) falls back to the socket, with a warning: the
        sensor runs, at lower rates."""
        from dnsguard.capture.live import CaptureOpenError, open_interfaces

        opts = self._capture_options()
        try:
            return open_interfaces(self.cfg.interfaces, self._ports, opts)
        except CaptureOpenError as e:
            if opts.kind != "ring":
                raise
            log.warning("%s; falling back to a plain capture socket (capture: socket), "
                        "which reads one frame per system call and drops sooner", e)
            self.cfg.capture = "socket"
            return open_interfaces(self.cfg.interfaces, self._ports,
                                   self._capture_options())

    def _install_signals(self) -> None:
        """SIGTERM/SIGINT/SIGHUP set flags and wake the loop. Installed once, as early as the
        run starts: a stop during the start (``systemctl stop`` right after ``start``) is then
        a clean, logged stop (exit 0), not death by the signal's default action."""
        if self._wake_r is not None:
            return
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _loop(self) -> int:
        from dnsguard.pipeline import hot_loop_gc, restore_gc

        self._install_signals()
        # Free the start-up garbage (import-time reference cycles) rather than freeze it for
        # the life of the process; then freeze what is alive (rules, model, exporter) and
        # collect rarely, as replay does. A SIGHUP needs nothing more: the old rule set has
        # no reference cycles, so reference counting frees it although it was frozen
        # (tests/test_daemon_unit.py checks this); a full collection there would stall the
        # capture for tenths of a second at the state caps. New objects (the new rules, the
        # model's private copy once it learns, what a checkpoint pickles) are collected as
        # usual.
        gc.collect()
        gc_saved = hot_loop_gc()
        try:
            return self._capture_loop()
        finally:
            restore_gc(gc_saved)  # thresholds back, gc.unfreeze()

    def _capture_loop(self) -> int:
        pipe, m = self.pipeline, self.metrics
        feed = pipe.feed
        by_fd = {i.fileno(): i for i in self.interfaces}
        wake_fd = self._wake_r.fileno()
        tap = self.dnstap
        for i in list(self.interfaces):  # capture from now on (a ring waits for this)
            try:
                i.start()
            except OSError as e:
                log.error("%s: cannot start capturing: %s; closing it, reopening in %gs",
                          i.name, e, REOPEN_BACKOFF[0])
                by_fd.pop(i.fileno(), None)
                self._lost(i.name)
        names = ", ".join([*(i.name for i in self.interfaces), *self.cfg.dnstap])
        log.info("capturing on %s%s; %d rules", names,
                 f" (filter: {self.interfaces[0].filter})" if self.interfaces else "",
                 len(pipe.ruleset.rules))
        self.notifier.notify("READY=1", f"STATUS=capturing on {names}")
        errors_logged = 0
        next_stats = time.monotonic() + STATS_EVERY
        next_house = time.monotonic() + HOUSEKEEP_EVERY
        observe = m.processing.observe
        batches = m.batch_frames
        rc = 0
        while self.stop_signal is None:
            try:
                ready, _, _ = select.select([wake_fd, *by_fd, *(tap.fds() if tap else ()),
                                             *self.extra_fds], [], [], SELECT_TIMEOUT)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                ready = []
            for fd in ready:
                if fd == wake_fd:
                    with contextlib.suppress(OSError):
                        while self._wake_r.recv(256):
                            pass
                    continue
                iface = by_fd.get(fd)
                if iface is None:
                    handler = self.extra_fds.get(fd)
                    if handler is not None:
                        handler()
                        continue
                    if tap is not None and fd in tap:
                        t0 = time.perf_counter()
                        if tap.handle(fd):
                            observe(time.perf_counter() - t0)
                            batches.inc()
                    continue
                t0 = time.perf_counter()
                try:
                    n = iface.read(feed)
                except OSError as e:
                    log.error("%s: capture failed: %s; closing it, reopening in %gs",
                              iface.name, e, REOPEN_BACKOFF[0])
                    del by_fd[fd]
                    self._lost(iface.name)
                    continue
                except Exception:  # a bug on one frame must not stop the sensor
                    pipe.malformed["internal_error"] += 1
                    errors_logged += 1
                    if errors_logged <= 10 or not errors_logged % 1000:
                        log.exception("internal error while processing a frame (#%d)",
                                      errors_logged)
                    continue
                if n:
                    observe(time.perf_counter() - t0)
                    batches.inc()
            self.after_wake()
            self.flush_alerts(time.time())  # the records whose settle interval ended
            if self.hup:
                self.hup = False
                self._reload()
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_EVERY
                for i in by_fd.values():
                    i.poll_stats()
                self._watch_links(by_fd, now)
                if self._reopen_due(by_fd, now) == "hopeless":
                    log.error("no capture interface left and none can be reopened: exiting "
                              "so the service manager restarts the sensor")
                    rc = 1
                    break
            if now >= next_house:
                next_house = now + HOUSEKEEP_EVERY
                self.housekeeping(time.time())
        return self._shutdown(rc)

    def after_wake(self) -> None:
        """After the frames of one wake-up were fed (a worker process ships its share)."""

    # --- periodic work ------------------------------------------------------------------------
    def housekeeping(self, now: float) -> None:
        """About once a second of wall time: retry pending alerts, close the series steps and
        evaluate the traffic windows that ended without a packet to close them (live traffic
        may go quiet; replay never needs this). Never raises."""
        try:
            if self.writer is not None:
                self.writer.retry()
                self._sync_writer()
        except Exception:
            log.exception("while retrying the pending alerts")
        pipe = self.pipeline
        try:
            if pipe.series is not None:
                pipe.series.tick(now)
            self.sweep(now)
        except Exception:
            pipe.malformed["internal_error"] += 1
            log.exception("during the periodic window sweep")
        self.flush_alerts(now)
        if now >= self._next_long_checkpoint:
            # With the model's checkpoints: a restart resumes the long horizon's clock.
            self._next_long_checkpoint = now + pipe.s.checkpoint_every
            try:
                self.checkpoint_long()
            except Exception:
                log.exception("while checkpointing the long-horizon state")

    def checkpoint_long(self) -> None:
        """Checkpoint the long-horizon state (every ``checkpoint_every`` seconds; at exit,
        ``pipeline.close()`` does)."""
        self.pipeline.checkpoint()

    def flush_alerts(self, now: float | None = None) -> None:
        """Write the alert records whose settle interval ended by ``now`` (live capture
        time is the wall clock), so an incident's first record is written within the
        settle interval even when no other alert follows (detect.policy). Never raises."""
        try:
            self.pipeline.flush_alerts(now)
        except Exception:
            log.exception("while writing the settled alerts")

    def sweep(self, now: float, limit: int = SWEEP_KEYS) -> int:
        """Close the windows that ended without traffic (see ``Pipeline.sweep``)."""
        return self.pipeline.sweep(now, limit)

    # --- capture faults -----------------------------------------------------------------------
    def _lost(self, name: str) -> None:
        """A capture socket failed: close it and schedule a reopen with backoff."""
        c = self._captures[name]
        i = c["iface"]
        if i is not None:
            with contextlib.suppress(OSError):
                i.close()
        c["iface"] = None
        c["attempt"] = 0
        c["retry_at"] = time.monotonic() + REOPEN_BACKOFF[0]

    def _watch_links(self, by_fd: dict, now: float) -> None:
        """Log a link going down (the socket reported ENETDOWN) and coming back (frames
        again); reopen when the interface was removed or replaced (another ifindex)."""
        for name, c in self._captures.items():
            i = c["iface"]
            if i is None:
                continue
            oper = _operstate(name)
            errored = i.read_errors > c["errors"]
            c["errors"] = i.read_errors
            if (errored or oper == "down") and not c["down"]:
                c["down"], c["frames_at_down"] = True, i.frames
                log.warning("%s: link down (%s); the sensor keeps running and captures again "
                            "when it comes back", name,
                            "network is down" if errored else "operstate down")
            elif c["down"] and not errored and (oper in ("up", "unknown")
                                                 or i.frames > c["frames_at_down"]):
                c["down"] = False
                log.warning("%s: link up again, capturing", name)
            idx = _ifindex(name)
            if idx != c["ifindex"]:
                log.error("%s: interface %s; closing its capture socket, reopening with "
                          "backoff", name, "removed" if idx is None else "replaced")
                by_fd.pop(i.fileno(), None)
                self._lost(name)

    def _reopen_due(self, by_fd: dict, now: float) -> str:
        """Try the reopens that are due. 'hopeless' when no socket is open and the last
        attempts failed for lack of privilege (capabilities dropped): a restart is needed."""
        from dnsguard.capture.live import CaptureOpenError, open_capture

        denied = False
        for name, c in self._captures.items():
            if c["iface"] is not None or c["retry_at"] is None or now < c["retry_at"]:
                continue
            old = next((i for i in self.interfaces if i.name == name), None)
            try:
                if not _interface_exists(name):
                    raise CaptureOpenError(f"{name}: no such interface")
                _refresh_scapy_interfaces()  # scapy caches them: a recreated one is unknown
                new = open_capture(name, self._ports, self._capture_options())
                try:
                    new.start()
                except OSError as e:
                    new.close()
                    raise CaptureOpenError(f"{name}: cannot start capturing: {e}") from None
            except CaptureOpenError as e:
                c["attempt"] += 1
                delay = REOPEN_BACKOFF[min(c["attempt"], len(REOPEN_BACKOFF) - 1)]
                c["retry_at"] = now + delay
                denied = denied or "ermission" in str(e) or "not permitted" in str(e)
                if c["attempt"] <= 3 or delay == REOPEN_BACKOFF[-1] and c["attempt"] % 10 == 0:
                    log.warning("%s: cannot reopen the capture socket (%s); next try in %gs",
                                name, e, delay)
                continue
            if old is not None:  # counters stay monotonic across the reopen
                new.carry_counters(old)
                self.interfaces[self.interfaces.index(old)] = new
            else:
                self.interfaces.append(new)
            c.update(iface=new, ifindex=_ifindex(name), down=False, retry_at=None, attempt=0,
                     errors=new.read_errors)
            by_fd[new.fileno()] = new
            log.warning("%s: capture socket reopened", name)
            _log_opened(new)
        if not by_fd and denied:
            return "hopeless"
        return "ok"

    def _reload(self) -> None:
        log.info("SIGHUP: reloading rules from %s and reopening the alert output",
                 self.cfg.rules)
        try:
            rs = load_dir(self.cfg.rules)
        except SourceError as e:
            self.metrics.reloads.labels("error").inc()
            log.error("reload failed, keeping the current rules: %s", e)
        except Exception as e:
            self.metrics.reloads.labels("error").inc()
            log.error("reload failed, keeping the current rules: %s", e)
        else:
            self.pipeline.reload(rs)
            for det in self.pipeline.extra_detectors:
                fb = getattr(det, "reload_feedback", None)
                if fb is not None:
                    try:
                        fb()
                    except Exception as e:
                        log.error("reloading the model's feedback failed: %s", e)
            self.metrics.reloads.labels("ok").inc()
            log.info("rules reloaded: %d rules, %d allowlist entries", len(rs.rules),
                     len(rs.allowlist.entries))
        try:
            if self.writer is not None:  # a worker process has none (its supervisor has)
                self.writer.reopen()
            if self.dns_log is not None:
                self.dns_log.reopen()
        except OSError as e:
            log.error("cannot reopen %s, still writing to the old file: %s", self.cfg.alerts,
                      e.strerror or e)

    def _shutdown(self, rc: int) -> int:
        sig = self.stop_signal
        log.info("stopping%s", f" on {signal.Signals(sig).name}" if sig else "")
        self.notifier.notify("STOPPING=1")
        pipe = self.pipeline
        if self.dnstap is not None:
            try:
                self.dnstap.drain()  # what the senders sent before the signal is not lost
            except Exception:
                log.exception("while reading the last dnstap frames")
            self.dnstap.close()
        try:
            pipe.finish()  # evaluate every open window once more
        except Exception:
            log.exception("while evaluating the last windows")
        try:
            pipe.close()  # the model checkpoints what it learned
        except Exception:
            log.exception("while closing the detectors")
            rc = rc or 1
        if self.dns_log is not None:
            self.dns_log.close()
        if self.writer is not None:
            self.writer.close()
            self._sync_writer()
            if self.writer.pending:
                n = len(self.writer.pending)
                self.writer.dump_pending(sys.stderr)
                self._sync_writer()
                log.error("%s: %d alerts could not be written (%s); printed on stderr",
                          self.cfg.alerts, n, self.writer.last_error)
        for c in self._captures.values() or [{"iface": i} for i in self.interfaces]:
            if c["iface"] is not None:
                with contextlib.suppress(OSError):
                    c["iface"].close()
        drops = sum(i.kernel_drops for i in self.interfaces)
        s = pipe.summary()
        log.info("stopped: %d frames, %d queries, %d responses, %d alerts written, "
                 "%d kernel drops", s["packets"], s["queries"], s["responses"],
                 self.written, drops)
        if self.dnstap is not None:
            c = self.dnstap.c
            log.info("dnstap: %d data frames, messages %s, errors %s, %d bytes, %d connections",
                     c.frames["data"], dict(sorted(c.messages.items())),
                     dict(sorted(c.errors.items())), c.bytes, c.connections)
        self.metrics.close()
        self.notifier.close()
        signal.set_wakeup_fd(-1)
        return rc
