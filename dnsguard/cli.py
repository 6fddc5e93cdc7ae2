"""The ``dnsguard`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dnsguard import __version__
from dnsguard.detect.rules import load_dir
from dnsguard.detect.yamlsrc import SourceError
from dnsguard.settings import DEFAULT_RULES, Settings

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


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return v


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", type=Path, default=DEFAULT_RULES,
                   help="rules directory or file (default: the rules shipped with dnsguard)")
    p.add_argument("--ports", type=_ports, default=frozenset({53}),
                   help="DNS ports, comma-separated (default: 53)")
    p.add_argument("--window", type=_positive, default=300.0,
                   help="traffic window in seconds (default: 300)")
    p.add_argument("--suppress", type=_positive, default=3600.0,
                   help="one alert per key per this many seconds (default: 3600)")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(ports=args.ports, window=args.window, suppress=args.suppress,
                    rules=args.rules)


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
    try:
        writer = AlertWriter(path=args.alerts) if args.alerts else AlertWriter(sys.stdout)
    except OSError as e:
        print(f"dnsguard: {args.alerts}: cannot open for writing: {e.strerror}", file=sys.stderr)
        return 2
    try:
        res = replay(args.captures, _settings(args), ruleset, writer.write,
                     progress=not args.quiet)
    finally:
        writer.close()
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(res.summary, indent=2) + "\n")
    if not args.quiet:
        print_summary(res, sys.stderr)
    if res.files_read == 0:
        return 2
    return 1 if res.errors else 0


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
    from dnsguard.evaluate import evaluate_cli

    ruleset = _load_rules(args.rules)
    if ruleset is None:
        return 2
    return evaluate_cli(args, _settings(args), ruleset)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dnsguard", description="Detect DNS tunneling and data "
                                 "exfiltration over DNS in packet captures.")
    ap.add_argument("--version", action="version", version=f"dnsguard {__version__}")
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("replay", help="replay pcap/pcapng files (also .gz) and print alerts",
                       description="Replay capture files as one stream in time order; alerts "
                       "go to stdout (or --alerts) as JSON lines, a summary to stderr.")
    p.add_argument("captures", nargs="+", help="pcap or pcapng files, optionally gzipped")
    p.add_argument("--alerts", metavar="PATH", help="append alerts to this file, not stdout")
    p.add_argument("--summary-json", metavar="PATH", help="also write the summary as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary, no progress bar")
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
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("dnsguard: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
