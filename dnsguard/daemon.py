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
"""

from __future__ import annotations

import contextlib
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

    for name in ("datasketch",  # distinct counts past their exact cap (features/sketch.py)
                 "dnsguard.feedback"):  # the model re-reads its feedback on SIGHUP
        try:
            importlib.import_module(name)
        except ImportError as e:
            log.debug("preload %s: %s", name, e)


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
        self.written = 0  # alert records written
        self.notifier = Notifier()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # signal handlers: flags only
    def _on_stop(self, signum, frame) -> None:
        self.stop_signal = signum

    def _on_hup(self, signum, frame) -> None:
        self.hup = True

    def _emit(self, alert: dict) -> None:
        m = self.metrics
        try:
            self.writer.write(alert)
        except (OSError, ValueError) as e:
            m.alert_errors.inc()
            log.error("cannot write alert: %s", e)
            return
        self.written += 1
        m.alert_records.inc()
        m.count_alert(alert)

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
        pipe.source = f"live:{','.join(self.cfg.interfaces)}"
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

    def run(self) -> int:
        from prometheus_client import disable_created_metrics

        from dnsguard.capture.live import CaptureOpenError, open_interfaces
        from dnsguard.metrics import Metrics

        cfg = self.cfg
        if not cfg.interfaces:
            log.error("no interface to capture on: set 'interfaces:' or --interface")
            return 2
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
        if not self._prepare_state_dir(pw) and hasattr(settings, "model_state"):
            settings.model_state = None
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
        try:
            self.interfaces = open_interfaces(cfg.interfaces, settings.ports, cfg.promiscuous)
        except CaptureOpenError as e:
            log.error("%s", e)
            return 2
        self.metrics.interfaces = self.interfaces
        if cfg.metrics_port:
            try:
                host, port = self.metrics.serve(cfg.metrics_host, cfg.metrics_port)
            except OSError as e:
                log.error("metrics: cannot listen on %s: %s", cfg.metrics_address,
                          e.strerror or e)
                return 2
            log.info("metrics on http://%s/metrics",
                     f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        _preload()
        if pw is not None:
            try:
                drop_privileges(pw)
            except OSError as e:
                log.error("cannot become user %s: %s", pw.pw_name, e)
                return 2
            log.info("running as user %s (uid %d)", pw.pw_name, pw.pw_uid)
            if cfg.alerts != "-":
                parent = Path(cfg.alerts).resolve().parent
                if not os.access(parent, os.W_OK | os.X_OK):
                    log.warning("%s is not writable by %s: reopening the alert file after "
                                "rotation will fail unless the file already exists", parent,
                                pw.pw_name)
        elif os.geteuid() == 0:
            log.warning("running as root (user: root); consider an unprivileged user")
        return self._loop()

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _loop(self) -> int:
        self._install_signals()
        pipe, m = self.pipeline, self.metrics
        feed = pipe.feed
        by_fd = {i.fileno(): i for i in self.interfaces}
        wake_fd = self._wake_r.fileno()
        names = ", ".join(i.name for i in self.interfaces)
        log.info("capturing on %s (filter: %s); %d rules", names, self.interfaces[0].filter,
                 len(pipe.ruleset.rules))
        self.notifier.notify("READY=1", f"STATUS=capturing on {names}")
        errors_logged = 0
        next_stats = time.monotonic() + STATS_EVERY
        observe = m.processing.observe
        batches = m.batch_frames
        rc = 0
        while self.stop_signal is None:
            try:
                ready, _, _ = select.select([wake_fd, *by_fd], [], [], SELECT_TIMEOUT)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                ready = []
            for fd in ready:
                if fd == wake_fd:
                    with contextlib.suppress(OSError):
                        while self._wake_r.recv(256):
                            pass
                    continue
                iface = by_fd[fd]
                t0 = time.perf_counter()
                try:
                    n = iface.read(feed)
                except OSError as e:
                    log.error("%s: capture failed: %s; closing it", iface.name, e)
                    del by_fd[fd]
                    iface.close()
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
            if self.hup:
                self.hup = False
                self._reload()
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_EVERY
                for i in by_fd.values():
                    i.poll_stats()
            if not by_fd:
                log.error("no capture interface left")
                rc = 1
                break
        return self._shutdown(rc)

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
            self.writer.reopen()
        except OSError as e:
            log.error("cannot reopen %s, still writing to the old file: %s", self.cfg.alerts,
                      e.strerror or e)

    def _shutdown(self, rc: int) -> int:
        sig = self.stop_signal
        log.info("stopping%s", f" on {signal.Signals(sig).name}" if sig else "")
        self.notifier.notify("STOPPING=1")
        pipe = self.pipeline
        try:
            pipe.finish()  # evaluate every open window once more
        except Exception:
            log.exception("while evaluating the last windows")
        try:
            pipe.close()  # the model checkpoints what it learned
        except Exception:
            log.exception("while closing the detectors")
            rc = rc or 1
        if self.writer is not None:
            self.writer.close()
        for i in self.interfaces:
            with contextlib.suppress(OSError):
                i.close()
        drops = sum(i.kernel_drops for i in self.interfaces)
        s = pipe.summary()
        log.info("stopped: %d frames, %d queries, %d responses, %d alerts written, "
                 "%d kernel drops", s["packets"], s["queries"], s["responses"],
                 self.written, drops)
        self.metrics.close()
        self.notifier.close()
        signal.set_wakeup_fd(-1)
        return rc
