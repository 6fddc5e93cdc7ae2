"""The ``dnsguard`` command line."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path

from dnsguard import __version__
from dnsguard.detect.rules import load_dir
from dnsguard.detect.yamlsrc import SourceError
from dnsguard.features.namehash import parse_key
from dnsguard.output.files import check_writable, write_json
from dnsguard.settings import DEFAULT_FEEDBACK, DEFAULT_RULES, Settings

log = logging.getLogger("dnsguard")


def _setup_logging(verbose: int) -> None:
    # One line per record, level first, no timestamp: journald and terminals add their own.
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def _ports(text: str) -> frozenset[int]:
    try:
        ports = frozenset(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: ports are numbers, e.g. 53,5353") from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"{text!r}: ports must be 1..65535")
    return ports


def _settle(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= v <= 60:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 60 seconds")
    return v


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return v


def _workers(text: str) -> int:
    from dnsguard.config import WORKERS_RANGE

    lo, hi = WORKERS_RANGE
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not lo <= v <= hi:
        raise argparse.ArgumentTypeError(f"{text!r} must be from {lo} to {hi}")
    return v


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return v


def _hash_key(text: str) -> bytes:
    try:
        return parse_key(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} {e}") from None


_D = Settings()  # every default below is Settings' (one home: settings.py)


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", type=Path, default=DEFAULT_RULES,
                   help="rules directory or file (default: the rules shipped with dnsguard)")
    p.add_argument("--ports", type=_ports, default=_D.ports,
                   help="DNS ports, comma-separated (default: "
                   f"{','.join(map(str, sorted(_D.ports)))})")
    p.add_argument("--window", type=_positive, default=_D.window,
                   help=f"traffic window in seconds (default: {_D.window:g})")
    p.add_argument("--suppress", type=_positive, default=_D.suppress,
                   help=f"one alert per key per this many seconds (default: {_D.suppress:g})")
    p.add_argument("--settle", type=_settle, metavar="SECONDS", default=_D.settle,
                   help="detectors firing on one key within this many seconds make one alert "
                   f"record (0: one record per detector crossing; default: {_D.settle:g})")
    p.add_argument("--max-keys", type=_count, metavar="N",
                   help="cap on tracked keys per scope, least recently used evicted "
                   f"(default: {_D.max_domains} domains, {_D.max_client_domains} client/domain "
                   f"pairs, {_D.max_clients} clients, {_D.max_flows} flows)")
    p.add_argument("--exact-cap", type=_count, metavar="N", default=_D.exact_cap,
                   help="distinct counts are exact up to N per key, HyperLogLog past it "
                   f"(default: {_D.exact_cap})")
    p.add_argument("--hash-key", type=_hash_key, metavar="HEX", default=_D.hash_key,
                   help="key (32 hex digits) of the hash behind distinct counts and sketches: "
                   "a sensor's 'hash_key' to reproduce its results (default: the fixed "
                   "public key, so replays are identical across runs)")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--model", type=Path, metavar="PATH",
                   help="model file (default: the model shipped with dnsguard; docs/model.md)")
    m.add_argument("--no-model", action="store_true", help="rules only, no model")
    lm = p.add_mutually_exclusive_group()
    lm.add_argument("--long-model", type=Path, metavar="PATH",
                    help="long-horizon model file (default: the one shipped with dnsguard, "
                    "if any; docs/model.md)")
    lm.add_argument("--no-long-model", action="store_true",
                    help="no long-horizon model (the window model and the rules still run)")
    p.add_argument("--model-state", type=Path, metavar="PATH",
                   help="checkpoint what the model learns online here (atomically, every "
                   "5 min and at exit) and resume from it when it exists")
    p.add_argument("--feedback", type=Path, metavar="PATH",
                   help="analyst verdicts written by 'dnsguard label' (JSON lines): the model "
                   "learns from them and honours them")
    p.add_argument("--learn-from-rules", action="store_true",
                   help="the model also learns 'tunnel' from high-severity rule hits")
    p.add_argument("--no-volume-alerts", action="store_true",
                   help="no dns_volume_anomaly alerts: the series detectors are off "
                   "(docs/timeseries.md)")
    p.add_argument("--series-step", type=_positive, metavar="SECONDS",
                   default=_D.series_step,
                   help=f"step of the per-client and per-domain series (default: "
                   f"{_D.series_step:g})")


def _settings(args: argparse.Namespace) -> Settings:
    s = Settings(ports=args.ports, window=args.window, suppress=args.suppress,
                 settle=args.settle, rules=args.rules, exact_cap=args.exact_cap,
                 hash_key=args.hash_key)
    if args.max_keys:
        s.max_domains = s.max_client_domains = s.max_clients = s.max_flows = args.max_keys
    if getattr(args, "no_model", False):
        s.use_model = False
    s.model = getattr(args, "model", None)
    s.long_model = getattr(args, "long_model", None)
    if getattr(args, "no_long_model", False):
        s.use_long_model = False
    s.model_state = getattr(args, "model_state", None)
    s.feedback = getattr(args, "feedback", None)
    s.learn_from_rules = getattr(args, "learn_from_rules", False)
    s.series_step = getattr(args, "series_step", _D.series_step)
    if getattr(args, "no_volume_alerts", False):
        s.volume_alerts = False
        s.series = bool(getattr(args, "report", None))  # the report still draws the series
    return s


def _load_rules(path: Path):
    try:
        return load_dir(path)
    except SourceError as e:
        print(f"dnsguard: {e}", file=sys.stderr)
        return None


def cmd_replay(args: argparse.Namespace) -> int:
    from dnsguard.output.alerts import AlertWriter
    from dnsguard.output.summary import print_summary
    from dnsguard.replay import replay

    ruleset = _load_rules(args.rules)
    if ruleset is None:
        return 2
    if not all(check_writable(p, what) for p, what in (
            (args.summary_json, "summary"), (args.report, "report"),
            (args.dns_log, "DNS log"))):
        return 2
    captures = _captures(args.captures)
    if captures is None:
        return 2
    try:
        writer = AlertWriter(path=args.alerts) if args.alerts else AlertWriter(sys.stdout)
    except OSError as e:
        print(f"dnsguard: {args.alerts}: cannot write the alerts: {e.strerror}", file=sys.stderr)
        return 2
    from dnsguard.detect.model import ModelError
    from dnsguard.pipeline import Pipeline

    settings = _settings(args)
    emit = writer.write
    collected: list[dict] = []
    if args.report:
        # Keep the alerts (rare: one per key per suppression window) for the report.
        def emit(alert: dict, _write=writer.write) -> None:
            if len(collected) < 100_000:
                collected.append(alert)
            if recorder is not None:
                recorder.on_alert(alert)
            _write(alert)

    recorder = None
    try:
        pipe = Pipeline(settings, ruleset, emit)
    except ModelError as e:
        writer.close()
        print(f"dnsguard: {e}", file=sys.stderr)
        return 2
    if args.report:
        from dnsguard.report import Recorder

        recorder = Recorder(pipe)  # keeps what a run of days would lose from the series
    dns_log = None
    if args.dns_log:
        from dnsguard.output.dnslog import DnsLog

        dns_log = DnsLog(args.dns_log, sensor=settings.sensor)
        pipe.set_dns_log(dns_log)
    try:
        res = replay(captures, settings, ruleset, emit,
                     progress=not args.quiet, pipeline=pipe)
    finally:
        pipe.close()
        writer.close()
        if dns_log is not None:
            dns_log.close()
    if dns_log is not None:
        res.summary["dns_log"] = dns_log.summary()
    if args.report:
        from dnsguard.report import write_report

        try:
            write_report(args.report, pipe, collected, res.summary,
                         [str(c) for c in captures], recorder)
            report_ok = True
        except OSError as e:
            print(f"dnsguard: {args.report}: cannot write the report: {e.strerror}",
                  file=sys.stderr)
            report_ok = False
    else:
        report_ok = True
    if not args.quiet:
        print_summary(res, sys.stderr)
    summary_ok = not args.summary_json or write_json(args.summary_json, res.summary,
                                                     "summary")
    unwritten = _unwritten_alerts(writer, args.alerts or "stdout")
    if res.files_read == 0:
        return 2
    return 1 if res.errors or unwritten or not (report_ok and summary_ok) else 0


def _captures(paths: list[str]) -> list[Path] | None:
    """The captures to read: directories expanded as ``eval`` does, ``-`` (standard input)
    at most once. None (after one line on stderr) when that leaves nothing to read."""
    from dnsguard.capture.pcapfile import CAPTURE_SUFFIXES, STDIN, expand

    if sum(str(p) == STDIN for p in paths) > 1:
        print("dnsguard: '-' (standard input) can be read only once", file=sys.stderr)
        return None
    out = expand(paths)
    for p in map(Path, paths):
        if str(p) != STDIN and p.is_dir() and not any(q.parent == p for q in out):
            print(f"dnsguard: {p}: no captures in this directory (files ending in "
                  f"{', '.join(CAPTURE_SUFFIXES)})", file=sys.stderr)
    if not out:
        return None
    return out


def _unwritten_alerts(writer, name: str) -> int:
    """After a replay: alerts the output refused (disk full, …) go to stderr as a last
    resort, with one line naming the file and how many; returns that number."""
    pending = writer.dump_pending(sys.stderr)
    lost = writer.dropped
    if lost:
        print(f"dnsguard: {name}: {lost} alerts could not be written "
              f"({writer.last_error or 'write error'}); they are printed above on stderr "
              f"({pending} at the end, {lost - pending} as they were dropped)", file=sys.stderr)
    return lost


def cmd_rules_check(args: argparse.Namespace) -> int:
    try:
        rs = load_dir(args.dir)
    except SourceError as e:
        print(f"dnsguard: {e}", file=sys.stderr)
        return 1
    by_scope: dict[str, int] = {}
    for r in rs.rules:
        by_scope[r.scope] = by_scope.get(r.scope, 0) + 1
    scopes = ", ".join(f"{n} {s}" for s, n in sorted(by_scope.items()))
    print(f"{args.dir}: OK: {len(rs.files)} files, {len(rs.rules)} rules ({scopes}), "
          f"{len(rs.allowlist.entries)} allowlist entries")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from dnsguard.detect.model import ModelError
    from dnsguard.evaluate import evaluate_cli

    ruleset = _load_rules(args.rules)
    if ruleset is None:
        return 2
    try:
        return evaluate_cli(args, _settings(args), ruleset)
    except ModelError as e:
        print(f"dnsguard: {e}", file=sys.stderr)
        return 2


def cmd_train(args: argparse.Namespace) -> int:
    from dnsguard.train import train_cli

    ruleset = _load_rules(args.rules)
    if ruleset is None:
        return 2
    return train_cli(args, _settings(args), ruleset)


def cmd_label(args: argparse.Namespace) -> int:
    from dnsguard.feedback import append_label

    try:
        rec = append_label(args.feedback, args.target, args.label, note=args.note or "")
    except (ValueError, OSError) as e:
        print(f"dnsguard: {args.feedback}: {e}", file=sys.stderr)
        return 2
    print(f"{args.feedback}: {rec['target']} labelled {rec['label']}", file=sys.stderr)
    return 0


def _run_config(args: argparse.Namespace):
    """The daemon's configuration: the file (if any), then the command-line overrides."""
    from dnsguard import config as dconf

    cfg = dconf.load(args.config) if args.config else dconf.DaemonConfig()
    if args.interface:
        cfg.interfaces = list(dict.fromkeys(args.interface))
    if args.dnstap:
        cfg.dnstap = dconf.dnstap_list(args.dnstap, "--dnstap", 0)
    if args.alerts is not None:
        cfg.alerts = args.alerts
    if args.metrics_address is not None:
        cfg.metrics_host, cfg.metrics_port = dconf.parse_address(
            args.metrics_address, "--metrics-address", "command line", 0)
    for key in ("rules", "ports", "window", "suppress", "sensor", "user", "state_dir",
                "capture", "workers", "dns_log"):
        v = getattr(args, key)
        if v is not None:
            setattr(cfg, key, v)
    if args.no_model:
        cfg.model_enabled = False
    if args.log_level is not None:
        cfg.log_level = args.log_level
    if args.verbose:
        cfg.log_level = "debug"
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from dnsguard.daemon import Daemon, setup_logging

    try:
        cfg = _run_config(args)
    except SourceError as e:
        print(f"dnsguard: {e}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level)
    return Daemon(cfg).run()


def cmd_check_config(args: argparse.Namespace) -> int:
    from dnsguard import config as dconf
    from dnsguard.capture.live import CaptureOpenError, check_filter

    try:
        cfg = dconf.load(args.file)
        rs = load_dir(cfg.rules)
    except SourceError as e:
        print(f"dnsguard: {e}", file=sys.stderr)
        return 1
    try:
        check_filter(cfg.ports)
    except CaptureOpenError as e:
        print(f"dnsguard: {args.file}: {e}", file=sys.stderr)
        return 1
    ifaces = ", ".join(cfg.interfaces) or ("none" if cfg.dnstap else
                                           "none (pass --interface or --dnstap to 'run')")
    if cfg.interfaces:
        from dnsguard.capture.live import interface_names, missing_interfaces

        try:
            missing = missing_interfaces(cfg.interfaces)
        except OSError as e:  # cannot list them here: say so, do not fail
            ifaces += f" (not checked: cannot list this host's interfaces: {e.strerror or e})"
        else:
            if missing:
                print(f"dnsguard: {args.file}: interfaces: {', '.join(missing)} "
                      f"{'does' if len(missing) == 1 else 'do'} not exist on this host (it "
                      f"has: {', '.join(interface_names()) or 'none listed'}); fix "
                      "'interfaces:'", file=sys.stderr)
                return 1
            ifaces += " (present)"
    ifaces += f"; dnstap {', '.join(cfg.dnstap)}" if cfg.dnstap else ""
    print(f"{args.file}: OK: interfaces {ifaces}; ports {','.join(map(str, sorted(cfg.ports)))}"
          f"; {len(rs.rules)} rules from {cfg.rules}; alerts to {cfg.alerts}; metrics "
          f"{cfg.metrics_address if cfg.metrics_port else 'off'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dnsguard", description="Detect DNS tunneling and data "
                                 "exfiltration over DNS in packet captures.")
    ap.add_argument("--version", action="version", version=f"dnsguard {__version__}")
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("replay", help="replay pcap/pcapng files (also .gz) and print alerts",
                       description="Replay capture files (and dnstap files) as one stream in "
                       "time order; alerts go to stdout (or --alerts) as JSON lines, a summary "
                       "to stderr.")
    p.add_argument("captures", nargs="+", help="pcap, pcapng or dnstap (Frame Streams) files, "
                   "optionally gzipped; recognised by content")
    p.add_argument("--alerts", metavar="PATH", help="append alerts to this file, not stdout")
    p.add_argument("--summary-json", metavar="PATH", help="also write the summary as JSON")
    p.add_argument("--report", metavar="PATH", help="also write a self-contained HTML report "
                   "(timelines of alerted keys, feature distributions, top talkers)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary, no progress bar")
    p.add_argument("--dns-log", metavar="PATH", help="also write every DNS message as an EVE "
                   "'dns' record (JSON lines, appended; rate-bounded): the lookups around an "
                   "alert, as Zeek's dns.log (docs/alerts.md); slower")
    _add_pipeline_args(p)
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("rules", help="work with rule files")
    rsub = p.add_subparsers(dest="rules_cmd", required=True, metavar="ACTION")
    c = rsub.add_parser("check", help="validate a rules directory")
    c.add_argument("dir", type=Path)
    c.set_defaults(fn=cmd_rules_check)

    p = sub.add_parser("eval", help="score detection against ground truth",
                       description="Replay each capture separately and score alerts against a "
                       "truth.yaml (hits, misses, time to detect, false-positive keys).")
    p.add_argument("--truth", required=True, type=Path, help="truth.yaml")
    p.add_argument("captures", nargs="+", help="captures (or directories of captures)")
    p.add_argument("--json", metavar="PATH", help="write the full result as JSON")
    _add_pipeline_args(p)
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("train", help="train the model from captures and ground truth",
                       description="Replay captures with the rules off, label every key's "
                       "window snapshots from truth.yaml and train the Hoeffding tree "
                       "(docs/model.md).")
    p.add_argument("--truth", required=True, type=Path, action="append",
                   help="truth.yaml (repeatable; later files win for the same capture name)")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="MODEL",
                   help="model file to write (plus MODEL.json)")
    p.add_argument("captures", nargs="+", help="captures (or directories of captures)")
    p.add_argument("--classifier", choices=("hoeffding", "adaptive"), default="hoeffding",
                   help="river HoeffdingTreeClassifier or HoeffdingAdaptiveTreeClassifier")
    p.add_argument("--threshold", type=float, default=0.9,
                   help="P(tunnel) at or above which the model alerts (default: 0.9)")
    p.add_argument("--min-queries", type=int, default=4,
                   help="queries a key needs before the model may alert (default: 4)")
    p.add_argument("--epochs", type=int, default=2, help="passes over the data (default: 2)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", metavar="PATH", help="also write the metadata here")
    p.add_argument("--long-output", type=Path, metavar="PATH",
                   help="long-horizon model file to write (default: long_MODEL beside MODEL: "
                   "model.pkl → long_model.pkl)")
    p.add_argument("--long-only", action="store_true",
                   help="build only the long-horizon model (MODEL is not written)")
    _add_pipeline_args(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("label", help="record an analyst verdict the model learns from",
                       description="Append a verdict on a domain (or an IP address) to the "
                       "feedback file that replay/eval --feedback and the daemon read.")
    p.add_argument("target", metavar="DOMAIN", help="domain (or client/server IP address)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--tunnel", dest="label", action="store_const", const="tunnel")
    g.add_argument("--benign", dest="label", action="store_const", const="benign")
    p.add_argument("--feedback", type=Path, metavar="PATH", default=DEFAULT_FEEDBACK,
                   help=f"feedback file (default: {DEFAULT_FEEDBACK})")
    p.add_argument("--note", help="why (kept in the file)")
    p.set_defaults(fn=cmd_label)

    p = sub.add_parser("run", help="run the live sensor (capture, alerts, metrics)",
                       description="Capture DNS on network interfaces and raise alerts as "
                       "JSON lines; Prometheus metrics over HTTP. Options override the "
                       "configuration file (docs/daemon.md).")
    p.add_argument("-c", "--config", type=Path, metavar="FILE", help="YAML configuration")
    p.add_argument("-i", "--interface", action="append", metavar="IF",
                   help="capture on this interface (repeatable; replaces 'interfaces:')")
    p.add_argument("--dnstap", action="append", metavar="unix:PATH|tcp:HOST:PORT",
                   help="receive dnstap from DNS servers on this socket (repeatable; "
                   "replaces 'dnstap:'; with or without --interface)")
    p.add_argument("--capture", choices=("ring", "socket"),
                   help="capture kind: a memory-mapped TPACKET_V3 ring (default) or a plain "
                   "socket read one frame per system call")
    p.add_argument("--workers", type=_workers, help="worker processes sharing the capture "
                   "(PACKET_FANOUT; default 1)")
    p.add_argument("--alerts", metavar="PATH", help="alert file ('-' for stdout)")
    p.add_argument("--dns-log", metavar="PATH", help="also write every DNS message as an "
                   "EVE 'dns' record (replaces 'dns_log:')")
    p.add_argument("--metrics-address", metavar="HOST:PORT",
                   help="Prometheus exporter address (default 127.0.0.1:9153; port 0: off)")
    p.add_argument("--rules", type=Path, help="rules directory or file")
    p.add_argument("--ports", type=_ports, help="DNS ports, comma-separated")
    p.add_argument("--window", type=_positive, help="traffic window in seconds")
    p.add_argument("--suppress", type=_positive, help="one alert per key per this many s")
    p.add_argument("--sensor", help="sensor name put in every alert")
    p.add_argument("--user", help="user to become after opening the sockets (when root)")
    p.add_argument("--state-dir", type=Path, help="state directory (model checkpoints)")
    p.add_argument("--no-model", action="store_true", help="rules only, no model")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    # Also after the command (``dnsguard run -v``, as docs/daemon.md shows); SUPPRESS keeps
    # a ``dnsguard -v run`` given before it.
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                   help="debug logging (as --log-level debug)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("check-config", help="validate a daemon configuration file",
                       description="Validate a 'dnsguard run' configuration and the rules it "
                       "names; errors give file, line and key.")
    p.add_argument("file", type=Path)
    p.set_defaults(fn=cmd_check_config)
    return ap


# Batch commands whose state (windows, caches: hundreds of MB) the process can leave to the
# kernel: freeing it object by object at exit took about a second after a large replay.
_FAST_EXIT = frozenset({"replay", "eval"})


# Commands whose start-up runs without the cyclic collector, until their feed loop turns it
# on (pipeline.hot_loop_gc): importing river and scipy and loading the model allocate ~10^6
# objects that all stay alive, and the collector at its default thresholds walked them ~200
# times (~0.2 s of a replay's start).
_GC_AFTER_START = frozenset({"replay"})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    defer_gc = args.cmd in _GC_AFTER_START and gc.isenabled()
    if defer_gc:
        gc.disable()
    try:
        try:
            code = args.fn(args)
        except KeyboardInterrupt:
            print("dnsguard: interrupted", file=sys.stderr)
            code = 130
        except BrokenPipeError:
            code = 0
        if argv is None and args.cmd in _FAST_EXIT:
            # Run as a program (not called from Python): everything is written and closed by
            # now; flush the standard streams and skip the interpreter's teardown (and the
            # collection that turning the collector back on would start).
            logging.shutdown()
            try:
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                pass
            sys.stderr.flush()
            os._exit(code)
    finally:
        if defer_gc:
            gc.enable()
    return code
