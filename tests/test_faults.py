"""Faults the sensor must survive, each with the behaviour docs/daemon.md ("Faults") defines:

* the alert output unwritable (disk full, I/O error): alerts pending in a bounded queue,
  retried, written in order when space returns; overflow logged with the alert's JSON and
  counted; replay exits 1 naming the file and the number not written;
* the metrics port taken / the interface missing at start: exit 1, one line, no traceback;
* the interface going down and up: the sensor logs it, keeps running, captures again;
* a corrupt model checkpoint: logged with the file name, the base model is used;
* a corrupt feedback file: bad lines skipped with FILE:LINE, good ones kept; on SIGHUP a
  broken file keeps the last good verdicts;
* SIGKILL: every alert the metrics counted is in the file;
* after the privilege drop the only files open for writing are the alert, state and log paths;
* the periodic sweep: a key that goes quiet gets its final evaluation without more packets.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from dnsguard.config import DaemonConfig
from dnsguard.daemon import Daemon
from dnsguard.detect import model as mdl
from dnsguard.detect.base import Detector
from dnsguard.detect.rules import load_dir
from dnsguard.feedback import MAX_LINE, load_feedback
from dnsguard.metrics import Metrics
from dnsguard.output.alerts import AlertWriter
from dnsguard.pipeline import Pipeline
from dnsguard.settings import DEFAULT_RULES, Settings

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"


def alert(i: int) -> dict:
    return {"timestamp": f"2026-01-01T00:00:{i % 60:02d}.000000Z", "event_type": "dns_tunnel",
            "severity": "high", "detectors": ["r"], "domain": f"t{i}.example", "n": i,
            "pad": "x" * 200}


class Flaky(io.StringIO):
    """A stream whose writes fail with ENOSPC while ``full`` is set."""

    name = "flaky"

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def write(self, s: str) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(s)


def lines_of(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines()]


# --- the alert output unwritable -------------------------------------------------------------
def test_unwritable_output_keeps_alerts_pending_and_writes_them_in_order(caplog):
    s = Flaky()
    w = AlertWriter(s)
    assert w.write(alert(0))
    s.full = True
    with caplog.at_level(logging.ERROR):
        for i in range(1, 6):
            assert not w.write(alert(i))
    assert len(w.pending) == 5 and w.errors == 5 and w.dropped == 0 and w.count == 1
    errs = [r.getMessage() for r in caplog.records if "cannot write alerts" in r.getMessage()]
    assert len(errs) == 1, errs  # once per minute, not once per alert
    assert "5 pending" not in errs[0] and "1 pending" in errs[0]  # logged at the first error
    assert w.retry() == 0  # still full
    s.full = False
    assert w.retry() == 5
    assert [a["n"] for a in lines_of(s.getvalue())] == [0, 1, 2, 3, 4, 5]
    assert not w.pending and w.count == 6


def test_full_queue_drops_oldest_with_its_json_on_stderr_log(caplog):
    s = Flaky()
    w = AlertWriter(s, max_pending=3)
    s.full = True
    with caplog.at_level(logging.ERROR):
        for i in range(5):
            w.write(alert(i))
    assert w.dropped == 2 and len(w.pending) == 3
    dropped = [r for r in caplog.records if "alert dropped" in r.getMessage()]
    assert len(dropped) == 2 and all(r.levelno == logging.ERROR for r in dropped)
    assert '"n": 0' in dropped[0].getMessage() and '"n": 1' in dropped[1].getMessage()
    s.full = False
    w.write(alert(5))  # queued first (the queue is full: 2 goes), then all are written
    assert [a["n"] for a in lines_of(s.getvalue())] == [3, 4, 5] and w.dropped == 3
    err = io.StringIO()
    s.full = True
    w.write(alert(6))
    assert w.dump_pending(err) == 1 and w.dropped == 4
    assert '"n": 6' in err.getvalue()


def _mounted(d: Path) -> bool:
    return any(line.split()[1] == str(d) for line in Path("/proc/mounts").read_text()
               .splitlines())


@contextmanager
def tiny_tmpfs(size: str = "64k"):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    d = Path(tempfile.mkdtemp(prefix="dnsguard-full-"))
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                           capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
        yield d
    finally:
        if _mounted(d):
            subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=20)
        shutil.rmtree(d, ignore_errors=True)


def fill(d: Path) -> Path:
    """Fill the file system of ``d`` to the last byte; returns the filler file."""
    filler = d / "filler"
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * 4096
        for _ in range(100_000):  # bounded: 400 MB at most
            try:
                f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
        for _ in range(4096):  # the last partial page, byte by byte
            try:
                f.write(b"\0")
            except OSError:
                break
    return filler


def test_alert_file_on_a_full_disk_recovers_in_order_without_torn_lines():
    with tiny_tmpfs() as d:
        path = d / "alerts.jsonl"
        w = AlertWriter(path=str(path))
        w.write(alert(0))
        filler = fill(d)
        for i in range(1, 41):  # ~10 KB of alerts into a full file system
            w.write(alert(i))
        assert w.pending and w.errors >= 1 and w.dropped == 0
        assert w.count + len(w.pending) == 41
        filler.unlink()  # space again
        w.retry()
        assert not w.pending and w.count == 41
        w.close()
        got = lines_of(path.read_text())  # every line whole: a short write was completed
        assert [a["n"] for a in got] == list(range(41))


def test_replay_to_a_full_disk_exits_1_naming_the_file_and_the_count():
    with tiny_tmpfs() as d:
        out = d / "alerts.jsonl"
        fill(d)
        p = subprocess.run([sys.executable, "-m", "dnsguard", "replay", "-q", "--no-model",
                            "--alerts", str(out), str(PCAPS / "mixed_iodine_and_benign.pcap")],
                           capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    final = [x for x in p.stderr.splitlines() if "alerts could not be written" in x]
    assert len(final) == 1 and str(out) in final[0], p.stderr
    n = int(final[0].split("alerts could not be written")[0].rsplit(" ", 2)[-2])
    printed = [x for x in p.stderr.splitlines() if x.startswith("dnsguard: alert not written: ")]
    assert n >= 1 and len(printed) == n  # each one on stderr, as JSON
    for x in printed:
        assert json.loads(x.split(": ", 2)[2])["event_type"]


def daemon_with(writer: AlertWriter, settings: Settings | None = None,
                cfg: DaemonConfig | None = None) -> Daemon:
    """A Daemon with its pipeline, metrics and writer, without capture (in-process)."""
    d = Daemon(cfg or DaemonConfig(interfaces=["test0"]))
    d.metrics = Metrics("test")
    d.writer = d.metrics.writer = writer
    s = settings or Settings(use_model=False)
    d.pipeline = d._build_pipeline(s, load_dir(s.rules))
    d.metrics.pipeline = d.pipeline
    return d


def sample(m: Metrics, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in fam.samples:
            if s.name == name:
                return s.value
    raise KeyError(name)


def test_daemon_exports_pending_errors_and_dropped_and_retries_every_second():
    s = Flaky()
    d = daemon_with(AlertWriter(s, max_pending=4))
    m = d.metrics
    s.full = True
    for i in range(6):
        d._emit(alert(i))
    assert sample(m, "dnsguard_alerts_pending") == 4
    assert sample(m, "dnsguard_alert_write_errors_total") >= 4
    assert sample(m, "dnsguard_alerts_dropped_total") == 2
    assert sample(m, "dnsguard_alert_records_total") == 0
    s.full = False
    d.housekeeping(time.time())  # the loop calls this about once a second
    assert sample(m, "dnsguard_alerts_pending") == 0
    assert sample(m, "dnsguard_alert_records_total") == 4
    assert [a["n"] for a in lines_of(s.getvalue())] == [2, 3, 4, 5]


# --- start-up faults ---------------------------------------------------------------------------
def run_daemon(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dnsguard", "run", "--no-model", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_missing_interface_exits_1_with_one_clear_line(tmp_path):
    p = run_daemon("--interface", "dgnope0", "--alerts", str(tmp_path / "a.json"),
                   "--metrics-address", "127.0.0.1:0", "--state-dir", str(tmp_path / "s"),
                   "--user", "root")
    assert p.returncode == 1, p.stderr
    errs = [x for x in p.stderr.splitlines() if x.startswith("ERROR")]
    assert len(errs) == 1, p.stderr
    assert errs[0].startswith("ERROR dnsguard.daemon: interface dgnope0 does not exist (this "
                              "host has: "), p.stderr
    assert errs[0].endswith("): fix 'interfaces:' in the configuration or --interface")
    assert "Traceback" not in p.stderr


@pytest.mark.netns
def test_metrics_port_taken_exits_1_naming_the_address(netns):  # noqa: F811
    ns_s = netns[0]
    holder = subprocess.Popen(
        ["ip", "netns", "exec", ns_s, sys.executable, "-c",
         "import socket, time\ns = socket.socket(); s.bind(('127.0.0.1', 19153)); s.listen()\n"
         "print('bound', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "bound"
        d = Path(tempfile.mkdtemp(prefix="dnsguard-port-"))
        try:
            p = subprocess.run(["ip", "netns", "exec", ns_s, sys.executable, "-m", "dnsguard",
                                "run", "--no-model", "--interface", "lo", "--alerts",
                                str(d / "a.json"), "--state-dir", str(d / "s"),
                                "--metrics-address", "127.0.0.1:19153"],
                               capture_output=True, text=True, timeout=60)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    assert p.returncode == 1, p.stderr
    errs = [x for x in p.stderr.splitlines() if x.startswith("ERROR")]
    assert len(errs) == 1 and "127.0.0.1:19153" in errs[0], p.stderr
    assert "in use" in errs[0] and "--metrics-address" in errs[0], errs
    assert "Traceback" not in p.stderr


# --- a corrupt model checkpoint ----------------------------------------------------------------
def _state_settings(state: Path) -> Settings:
    return Settings(model_state=state)


@pytest.mark.parametrize("damage", ["garbage", "digest", "garbage_with_digest", "no_bundle"])
def test_corrupt_checkpoint_falls_back_to_the_base_model(tmp_path, caplog, damage):
    bundle, meta = mdl.load(mdl.DEFAULT_MODEL)
    state = tmp_path / "model-state.ckpt"
    mdl.save(bundle, meta, state)
    mp = mdl.meta_path(state)
    if damage == "garbage":
        state.write_bytes(os.urandom(300))
        mp.write_bytes(b"\x00{not json")
    elif damage == "digest":
        blob = bytearray(state.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        state.write_bytes(bytes(blob))
    else:
        blob = (b"\x80\x04garbage, not a pickle" if damage == "garbage_with_digest"
                else pickle.dumps(["not", "a", "bundle"]))
        state.write_bytes(blob)
        m = json.loads(mp.read_text())
        m["sha256"] = hashlib.sha256(blob).hexdigest()
        mp.write_text(json.dumps(m))
    with caplog.at_level(logging.ERROR):
        det = mdl.detector_for(_state_settings(state))
    assert det is not None and det.state == state  # the base model, still checkpointing
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(str(state) in x and "base model" in x for x in msgs), msgs
    # and it runs: a pipeline with it scores a window
    pipe = Pipeline(_state_settings(state), load_dir(DEFAULT_RULES), lambda a: None)
    assert pipe.extra_detectors


# --- a corrupt feedback file -------------------------------------------------------------------
GOOD1 = '{"target": "tunnel.example", "label": "tunnel"}'
GOOD2 = '{"target": "192.0.2.7", "label": "benign"}'


def test_corrupt_feedback_lines_are_skipped_with_file_and_line(tmp_path, caplog):
    p = tmp_path / "feedback.jsonl"
    with open(p, "wb") as f:
        f.write(GOOD1.encode() + b"\n")  # 1
        f.write(b"\xff\xfe\x00garbage\n")  # 2 binary
        f.write(b'{"target": "x.example", "label": "evil"}\n')  # 3 unknown label
        f.write(b'{"target": "x.example"\n')  # 4 invalid JSON
        f.write(b"x" * (MAX_LINE * 3) + b"\n")  # 5 huge
        f.write(b"[" * 50_000 + b"\n")  # 6 nesting beyond the JSON parser's recursion
        f.write(b'{"target": ["a"], "label": "tunnel"}\n')  # 7 target not a string
        f.write(b'"just a string"\n')  # 8
        f.write(b'{"target": "has space.example", "label": "benign"}\n')  # 9 bad target
        f.write(GOOD2.encode() + b"\n")  # 10
        f.write(b'{"target": "no-newline.example", "label": "tunnel"}')  # 11, at EOF
    with caplog.at_level(logging.WARNING):
        got = load_feedback(p)
    assert [(r["target"], r["line"]) for r in got.records] == [
        ("tunnel.example", 1), ("192.0.2.7", 10), ("no-newline.example", 11)]
    assert got.bad == 8 and got.error is None
    warned = {int(r.getMessage().split(":")[1]) for r in caplog.records
              if r.getMessage().startswith(f"{p}:")}
    assert warned == {2, 3, 4, 5, 6, 7, 8, 9}
    fb = mdl.Feedback(p)
    assert fb.for_domain("tunnel.example") == ("tunnel", "tunnel.example")
    assert fb.for_address("192.0.2.7") == ("benign", "192.0.2.7")


def test_sighup_with_a_broken_feedback_file_keeps_the_last_good_verdicts(tmp_path, caplog):
    p = tmp_path / "feedback.jsonl"
    p.write_text(GOOD1 + "\n" + GOOD2 + "\n")
    cfg = DaemonConfig(interfaces=["test0"], rules=DEFAULT_RULES, feedback=p)
    s = cfg.to_settings()
    s.model_state = None
    d = daemon_with(AlertWriter(io.StringIO()), settings=s, cfg=cfg)
    det = d.pipeline.extra_detectors[0]
    assert len(det.feedback) == 2
    with caplog.at_level(logging.ERROR):
        p.write_bytes(os.urandom(2000).replace(b"\n", b"") + b"\n\x00\x01\n")  # garbage
        d._reload()
        assert len(det.feedback) == 2
        p.unlink()
        p.mkdir()  # unreadable: a directory now
        d._reload()
        assert len(det.feedback) == 2
        p.rmdir()
        d._reload()  # vanished
        assert det.feedback.for_domain("tunnel.example") == ("tunnel", "tunnel.example")
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("keeping the 2 verdicts" in x for x in msgs) == 3, msgs
    # a partly good file is a new set of verdicts
    p.write_text(GOOD2 + "\nnot json\n")
    d._reload()
    assert len(det.feedback) == 1 and det.feedback.for_domain("tunnel.example") is None


# --- the periodic sweep ------------------------------------------------------------------------
_ETH = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"


def qframe(name: bytes, client: int = 7, qid: int = 1) -> bytes:
    qname = b"".join(bytes([len(x)]) + x for x in name.split(b".")) + b"\x00"
    dns = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + b"\x00\x01\x00\x01"
    udp = struct.pack("!HHHH", 40000, 53, 8 + len(dns), 0) + dns
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     struct.pack("!I", 0x0A000000 | client), b"\xc6\x33\x64\x35")
    return _ETH + ip + udp


class Spy(Detector):
    """An extra detector that fires only on a window of exactly 35 queries."""

    min_queries = 1

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def score(self, scope, f, ident):
        self.seen.append((scope, f["queries"]))
        if scope == "client_domain" and f["queries"] == 35:
            return ("spy", "high", 0.9, ["queries 35 == 35"])
        return None


def test_a_key_that_goes_quiet_gets_its_final_evaluation_from_the_sweep():
    s = Settings(use_model=False, window=10.0, series_step=1.0)
    out = io.StringIO()
    d = daemon_with(AlertWriter(out), settings=s)
    pipe = d.pipeline
    spy = Spy()
    pipe.extra_detectors.append(spy)
    t0 = 1_700_000_000.0
    for i in range(35):  # evaluated after each of the first 32, then not before the 40th
        f = qframe(b"www%d.quiet.example" % i, qid=i)
        pipe.feed(t0 + i * 0.01, 1, f, len(f))
    key = (struct.pack("!I", 0x0A000007), "quiet.example")
    st = pipe.tables["client_domain"].keys[key]
    assert st.evaluated_at == 32 and out.getvalue() == ""
    assert d.sweep(t0 + 5) == 0  # the window has not ended
    assert pipe.series.store.cur_step == int(t0)
    d.housekeeping(t0 + 11)  # no packet since: the loop's once-a-second work
    assert st.evaluated_at == 35
    assert key not in pipe.tables["client_domain"].keys  # forgotten, as a new packet would
    got = lines_of(out.getvalue())
    assert [a["detectors"] for a in got] == [["spy"]] and got[0]["scope"] == "client_domain"
    assert pipe.series.store.cur_step == int(t0 + 11)  # the series step closed too
    n = len(spy.seen)
    d.housekeeping(t0 + 12)
    assert len(spy.seen) == n  # nothing evaluated twice


def test_sweep_work_per_tick_is_bounded():
    s = Settings(use_model=False, window=1.0, max_domains=50_000, max_client_domains=50_000,
                 max_clients=50_000)
    d = daemon_with(AlertWriter(io.StringIO()), settings=s)
    pipe = d.pipeline
    rng = random.Random(3)
    for i in range(5000):
        name = b"a.d%d.example" % rng.randrange(10**9)
        for q in range(2):  # a key is tracked from its second query (admission)
            f = qframe(name, client=i % 4000 + 1, qid=2 * i + q)
            pipe.feed(100.0, 1, f, len(f))
    before = {k: len(t) for k, t in pipe.tables.items()}
    assert before["domain"] == 5000
    n = d.sweep(200.0, limit=1000)
    assert n <= 1000 * len(pipe.tables)
    assert len(pipe.tables["domain"]) == 4000  # 1000 per table per tick
    for _ in range(10):
        d.sweep(200.0, limit=1000)
    assert all(len(t) == 0 for t in pipe.tables.values())


# --- live faults in network namespaces ---------------------------------------------------------
from test_daemon_netns import (  # noqa: E402 - the namespace harness, reused
    METRICS_PORT,
    Proc,
    alerts_in,
    netns,  # noqa: F401 - a fixture
    ns_get,
    replay,
    wait_for,
    workdir,  # noqa: F401 - a fixture
)


def scrape(ns: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    body = ns_get(ns, f"http://127.0.0.1:{METRICS_PORT}/metrics")
    if body is None:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def writable_files(pid: int) -> list[str]:
    """Paths of the regular files (and devices) a process holds open for writing."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        flags = int(next(x for x in info.splitlines() if x.startswith("flags:")).split()[1], 8)
        if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR) and target.startswith("/"):
            out.append(target)
    return out


@pytest.mark.netns
def test_link_down_up_least_privilege_and_sigkill(netns, workdir):  # noqa: F811
    """One sensor (as nobody) on a veth end: (1) its writable fds are only the alert, state
    and log paths; (2) the link goes down: logged, still running; up: captures and alerts
    again; (3) SIGKILL: every alert the metrics counted is in the file."""
    import pwd

    ns_s, if_s, ns_p, if_p = netns
    nobody = pwd.getpwnam("nobody")
    alert_dir, state_dir, log_dir = workdir / "alerts", workdir / "state", workdir / "log"
    for x in (alert_dir, log_dir):
        x.mkdir()
        os.chown(x, nobody.pw_uid, nobody.pw_gid)
    alerts = alert_dir / "alerts.json"
    sensor = Proc(["ip", "netns", "exec", ns_s, sys.executable, "-m", "dnsguard", "run",
                   "--interface", if_s, "--alerts", str(alerts), "--metrics-address",
                   f"127.0.0.1:{METRICS_PORT}", "--state-dir", str(state_dir), "--user",
                   "nobody", "--no-model", "--suppress", "1"], log_dir / "sensor.log")
    try:
        wait_for("the sensor to capture", lambda: "capturing on" in sensor.text()
                 or sensor.p.poll() is not None, 20, diag=sensor.text)
        assert sensor.p.poll() is None, sensor.text()

        # (1) least privilege: writable fds only under the alert/state/log directories
        allowed = (str(alert_dir) + "/", str(state_dir) + "/", str(log_dir) + "/", "/dev/null",
                   "/dev/pts/")  # the last two: stdin inherited from the test run
        w = writable_files(sensor.p.pid)
        assert w and all(x.startswith(allowed) for x in w), w
        assert str(alerts) in w

        # (2) traffic, link down, link up, traffic again
        replay(ns_p, if_p, PCAPS / "iodine_null.pcap")
        wait_for("alerts", lambda: scrape(ns_s).get("dnsguard_alert_records_total", 0) >= 1,
                 15, diag=sensor.text)
        wait_for("the queue drained", lambda: (lambda m: m.get("dnsguard_kernel_packets_total")
                 == m.get("dnsguard_captured_frames_total"))(scrape(ns_s)), 15)
        before = scrape(ns_s)
        subprocess.run(["ip", "-n", ns_s, "link", "set", "dev", if_s, "down"], check=True,
                       timeout=20)
        wait_for("the link-down log line", lambda: "link down" in sensor.text(), 10,
                 diag=sensor.text)
        time.sleep(1.5)
        assert sensor.p.poll() is None, sensor.text()
        subprocess.run(["ip", "-n", ns_s, "link", "set", "dev", if_s, "up"], check=True,
                       timeout=20)
        wait_for("the veth carrier", lambda: "LOWER_UP" in subprocess.run(
            ["ip", "-n", ns_s, "link", "show", if_s], capture_output=True, text=True,
            timeout=10).stdout, 10)
        replay(ns_p, if_p, PCAPS / "dns2tcp_txt.pcap")
        wait_for("frames and alerts after the link came back",
                 lambda: (lambda m: m.get("dnsguard_captured_frames_total", 0)
                          > before["dnsguard_captured_frames_total"]
                          and m.get("dnsguard_alert_records_total", 0)
                          > before["dnsguard_alert_records_total"])(scrape(ns_s)),
                 15, diag=sensor.text)
        wait_for("the link-up log line", lambda: "link up again" in sensor.text(), 5,
                 diag=sensor.text)
        assert sensor.p.poll() is None

        # (3) SIGKILL: nothing counted is lost
        counted = scrape(ns_s)["dnsguard_alert_records_total"]
        sensor.p.send_signal(signal.SIGKILL)
        sensor.p.wait(timeout=10)
        got = alerts_in(alerts)  # every line parses: none torn
        assert counted >= 2 and len(got) >= counted, (counted, len(got))
        assert "Traceback" not in sensor.text(), sensor.text()
        print(sensor.text())  # with -s: the sensor's log
    finally:
        sensor.kill()



@pytest.mark.netns
def test_interface_removed_and_recreated_is_reopened(netns, workdir):  # noqa: F811
    """Running with its capabilities (as under systemd), the sensor reopens the capture
    socket, with backoff, when its interface is deleted and created again."""
    ns_s, if_s, ns_p, if_p = netns
    sensor = Proc(["ip", "netns", "exec", ns_s, sys.executable, "-m", "dnsguard", "run",
                   "--interface", if_s, "--alerts", str(workdir / "alerts.json"),
                   "--metrics-address", f"127.0.0.1:{METRICS_PORT}", "--state-dir",
                   str(workdir / "state"), "--user", "root", "--no-model"],
                  workdir / "sensor.log")
    try:
        wait_for("the sensor to capture", lambda: "capturing on" in sensor.text()
                 or sensor.p.poll() is not None, 20, diag=sensor.text)
        subprocess.run(["ip", "-n", ns_s, "link", "del", if_s], check=True, timeout=20)
        wait_for("the removal noticed", lambda: "interface removed" in sensor.text(), 10,
                 diag=sensor.text)
        time.sleep(1.0)  # a failed reopen attempt or two
        assert sensor.p.poll() is None, sensor.text()
        subprocess.run(["ip", "link", "add", if_s, "netns", ns_s, "type", "veth", "peer",
                        "name", if_p, "netns", ns_p], check=True, timeout=20)
        for ns, ifn in ((ns_s, if_s), (ns_p, if_p)):
            subprocess.run(["ip", "-n", ns, "link", "set", ifn, "up"], check=True, timeout=20)
        wait_for("the reopen", lambda: "capture socket reopened" in sensor.text(), 40,
                 diag=sensor.text)
        wait_for("the veth carrier", lambda: "LOWER_UP" in subprocess.run(
            ["ip", "-n", ns_s, "link", "show", if_s], capture_output=True, text=True,
            timeout=10).stdout, 10)
        replay(ns_p, if_p, PCAPS / "iodine_null.pcap")
        wait_for("frames on the new socket",
                 lambda: scrape(ns_s).get("dnsguard_captured_frames_total", 0) > 0, 15,
                 diag=sensor.text)
        assert "Traceback" not in sensor.text(), sensor.text()
        print(sensor.text())
    finally:
        sensor.kill()
