"""Network namespaces and bounded processes: the lab's only contact with the kernel.

Everything here is run as root. Every process the lab starts is bounded in time (coreutils
``timeout -k``), recorded, and ended by its own process id on cleanup; every namespace is named
``lab-<pid>-<n>-<role>`` so a later run can remove the leftovers of a crashed one (the creating
process is gone) without ever touching another engineer's or another live lab's namespaces.

    >>> ns_name(1234, 0, "cli")
    'lab-1234-0-cli'
    >>> stale_owner("lab-1234-0-cli"), stale_owner("sys-client")
    (1234, None)
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CLONE_NEWNET = 0x40000000
PREFIX = "lab"
_NAME = re.compile(rf"^{PREFIX}-(\d+)-\d+-[a-z0-9]+$")


class LabError(RuntimeError):
    """A lab step failed; the message says which step and what to do."""


def ns_name(owner_pid: int, serial: int, role: str) -> str:
    return f"{PREFIX}-{owner_pid}-{serial}-{role}"


def stale_owner(name: str) -> int | None:
    """The creating process id encoded in a lab namespace name (None: not a lab name)."""
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


def require_root() -> str | None:
    """None when the lab can run here, else the reason it cannot (for a test's skip)."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    for tool in ("ip", "tcpdump", "unbound", "timeout"):
        if shutil.which(tool) is None:
            return f"the lab needs {tool!r} (Debian: iproute2 tcpdump unbound coreutils)"
    return None


def sh(argv: Sequence[str], *, timeout: float = 20, check: bool = True,
       ns: str | None = None) -> subprocess.CompletedProcess:
    """Run a short command (optionally inside namespace ``ns``) to completion, bounded."""
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    try:
        cp = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise LabError(f"command timed out after {timeout}s: {' '.join(full)}") from e
    if check and cp.returncode != 0:
        raise LabError(f"command failed ({cp.returncode}): {' '.join(full)}: "
                       f"{cp.stderr.strip()[-500:]}")
    return cp


def list_ns() -> list[str]:
    cp = sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_ns_processes(ns: str, grace: float = 2.0) -> None:
    """TERM then KILL every process still inside ``ns`` (ours by construction)."""
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while True:
        cp = sh(["ip", "netns", "pids", ns], check=False)
        pids = [int(p) for p in cp.stdout.split() if p.isdigit()]
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            if sig == signal.SIGKILL:
                return
            sig = signal.SIGKILL
            deadline = time.monotonic() + 1.0
        time.sleep(0.1)


def delete_ns(ns: str) -> None:
    if ns in list_ns():
        kill_ns_processes(ns)
        sh(["ip", "netns", "del", ns], check=False)


def remove_stale() -> list[str]:
    """Delete lab namespaces whose creating process is gone (a crashed or killed earlier run)."""
    gone = []
    for ns in list_ns():
        pid = stale_owner(ns)
        if pid is not None and not _alive(pid):
            delete_ns(ns)
            gone.append(ns)
    return gone


def setns(ns: str) -> None:
    """Move the calling process (a forked child) into namespace ``ns`` (Python 3.11: ctypes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise LabError(f"setns({ns}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def _child(ns: str, fn: Callable[..., Any], args: tuple, kwargs: dict, conn) -> None:
    try:
        setns(ns)
        conn.send(("ok", fn(*args, **kwargs)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def call_in_ns(ns: str, fn: Callable[..., Any], *args: Any, timeout: float,
               **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` in a forked child inside ``ns``; its (picklable) result.

    The child is killed when it outlives ``timeout`` seconds (LabError). ``fn`` must bound its
    own loops too; the timeout is the backstop.
    """
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(ns, fn, args, kwargs, child), daemon=True)
    p.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise LabError(f"{getattr(fn, '__name__', fn)} in {ns} ran over {timeout}s")
        status, value = parent.recv()
    except EOFError:
        status, value = "error", f"the child died (exit code {p.exitcode})"
    finally:
        if p.is_alive():
            p.terminate()
            p.join(2)
            if p.is_alive():
                p.kill()
        p.join(2)
        parent.close()
    if status != "ok":
        raise LabError(f"{getattr(fn, '__name__', fn)} in {ns} failed: {value}")
    return value


class Proc:
    """A background process inside a namespace, bounded by ``timeout -k 3 SECONDS``."""

    def __init__(self, ns: str | None, argv: Sequence[str], seconds: float, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log = log
        self.ns = ns
        full = (["ip", "netns", "exec", ns] if ns else []) + \
            ["timeout", "-k", "3", str(max(1, int(seconds)))] + self.argv
        self._logf = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(full, stdout=self._logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, grace: float = 5.0) -> int | None:
        """Signal the process (``timeout`` forwards it to the command), wait, then KILL."""
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(3)
        self._logf.close()
        return self.popen.returncode


def wait_until(pred: Callable[[], bool], seconds: float, what: str, step: float = 0.1) -> None:
    end = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > end:
            raise LabError(f"{what} not ready after {seconds}s")
        time.sleep(step)
