"""Make benign capture sets: one lab per seed, the workload, a capture, a truth file, a manifest.

    sudo python -m lab.generate --out lab/out/benign --seeds 1,2,3 --hours 1 --speed 10

For each seed: a fresh lab (clients, Unbound, the stand-in internet seeded with the same seed),
``lab.benign.run.run_workload`` for ``--hours`` of simulated time at ``--speed`` times real
time, tcpdump on the client↔resolver link, then the capture's time offsets multiplied by
``--speed`` (``lab.capture.rescale``; nothing else changes) into
``<out>/benign_lab_s<seed>.pcap.gz`` (and ``.egress.pcap.gz`` with ``--egress``). The folder
gets ``truth.yaml`` (the corpus format, class benign; ``dnsguard eval --truth`` and
``bench/loso.py`` read it), ``MANIFEST.md`` (a table with a ``source repo`` column, as the
corpus has) and ``manifest.json`` (every parameter, the time factor, the roles, query counts,
tool versions). Existing entries of other seeds in the folder are kept.
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lab.benign.run import run_workload
from lab.capture import rescale
from lab.netns import LabError, require_root
from lab.topology import Lab, LabConfig

TRAIN_SEEDS = (1, 2, 3, 4, 5, 6)
TEST_SEEDS = (101, 102, 103)
CI_SEED = 9001          # tests/test_lab_benign.py: never used for training


def _version(cmd: list[str]) -> str:
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (cp.stdout or cp.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def generate_one(out: Path, seed: int, hours: float, speed: float, clients: int,
                 egress: bool = False, mode: str = "forward", roles: list[str] | None = None,
                 ipv6: bool = False,
                 max_queries: int = 5_000_000, log=print) -> dict:
    """One capture for one seed; returns its manifest entry."""
    sim = hours * 3600
    wall = sim / speed
    out.mkdir(parents=True, exist_ok=True)
    name = f"benign_lab_s{seed}.pcap.gz"
    t0 = time.time()
    cfg = LabConfig(clients=clients, mode=mode, seed=seed, seconds=wall + 180, ipv6=ipv6,
                    workdir=out / f".work-s{seed}")
    with Lab(cfg) as lab:
        raw = out / f".benign_lab_s{seed}.raw.pcap"
        cap = lab.capture(raw)
        eg = lab.capture(out / f".benign_lab_s{seed}.egress.raw.pcap", link="egress") \
            if egress else None
        log(f"seed {seed}: {clients} clients, {sim:.0f} s simulated at {speed}x "
            f"(~{wall:.0f} s wall)")
        stats = lab.call(run_workload, lab.context(seconds=wall + 90), seed, sim, speed,
                         roles, max_queries, timeout=wall + 120)
        time.sleep(1.0)
        cap.stop()
        if eg:
            eg.stop()
        auth = {}
        try:
            lab.procs[0].stop()   # the authority writes its counts on exit
            auth = json.loads((cfg.workdir / "authority.json").read_text())
        except (OSError, ValueError, IndexError):
            pass
        unbound = lab.describe()["unbound"]
    n = rescale(raw, out / name, speed)
    raw.unlink()
    for log_file in out.glob(f".benign_lab_s{seed}.*.log"):
        log_file.unlink()
    entry = {"file": name, "seed": seed, "split": split_of(seed), "class": "benign",
             "simulated_seconds": sim, "time_factor": speed,
             "wall_seconds": round(time.time() - t0, 1),
             "packets": n, "kernel_drops": cap.dropped, "clients": clients,
             "resolver_mode": mode, "ipv6": ipv6,
             "roles": stats["roles"], "queries_sent": stats["queries_sent"],
             "query_counts": stats["counts"], "authority_counts": auth, "world": stats["world"],
             "unbound": unbound}
    if eg:
        en = rescale(eg.path, out / name.replace(".pcap.gz", ".egress.pcap.gz"), speed)
        eg.path.unlink()
        entry["egress_file"] = name.replace(".pcap.gz", ".egress.pcap.gz")
        entry["egress_packets"] = en
    (out / f".clients-s{seed}.json").write_text(json.dumps(stats["clients"], indent=1))
    import shutil
    shutil.rmtree(cfg.workdir, ignore_errors=True)
    log(f"seed {seed}: {n} packets, {stats['queries_sent']} queries, drops {cap.dropped}, "
        f"{entry['wall_seconds']} s")
    return entry


def split_of(seed: int) -> str:
    return "ci-test" if seed == CI_SEED else ("test" if seed >= 100 else "train")


def write_index(out: Path, entries: list[dict]) -> None:
    """truth.yaml, MANIFEST.md and manifest.json for every capture in the folder."""
    man = out / "manifest.json"
    old = json.loads(man.read_text()) if man.exists() else {"captures": []}
    by = {e["file"]: e for e in old.get("captures", [])}
    by.update({e["file"]: e for e in entries})
    caps = [by[k] for k in sorted(by)]
    man.write_text(json.dumps({
        "generator": "python -m lab.generate (lab/README.md)",
        "time_scaling": "traffic generated time_factor times faster than real time; every "
                        "packet's offset from the first packet multiplied by time_factor, "
                        "nothing else changed",
        "python": platform.python_version(), "tcpdump": _version(["tcpdump", "--version"]),
        "train_seeds": list(TRAIN_SEEDS), "test_seeds": list(TEST_SEEDS), "ci_seed": CI_SEED,
        "captures": caps}, indent=1))
    truth = {"captures": [{"file": e["file"], "class": "benign", "tool": "lab-benign",
                           "split": e["split"]} for e in caps]}
    for e in caps:
        if "egress_file" in e:
            truth["captures"].append({"file": e["egress_file"], "class": "benign",
                                      "tool": "lab-benign", "split": e["split"]})
    (out / "truth.yaml").write_text(
        "# Ground truth for lab-made benign captures (python -m lab.generate; lab/README.md).\n"
        "# Every capture is benign: any alert on it is a false positive.\n"
        "# split: train | test | ci-test (seeds: see manifest.json). Time-scaled: see there.\n"
        + yaml.safe_dump(truth, sort_keys=False))
    rows = ["| file | source repo | class | split | seed | simulated | time factor | clients "
            "| queries | packets |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in caps:
        rows.append(f"| {e['file']} | dnsguard-lab/benign-s{e['seed']} | benign | {e['split']} "
                    f"| {e['seed']} | {e['simulated_seconds'] / 3600:.2f} h | {e['time_factor']} "
                    f"| {e['clients']} | {e['queries_sent']} | {e['packets']} |")
    (out / "MANIFEST.md").write_text(
        "# Lab-made benign captures\n\nMade by `python -m lab.generate` (see lab/README.md). "
        "Timestamps are rescaled by the time factor (traffic was generated that many times "
        "faster than real time; only packet time offsets were multiplied).\n\n"
        + "\n".join(rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="make lab benign capture sets (root)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "benign")
    ap.add_argument("--seeds", default="1", help="comma-separated, e.g. 1,2,3,101")
    ap.add_argument("--hours", type=float, default=1.0, help="simulated hours per seed")
    ap.add_argument("--speed", type=float, default=10.0, help="time factor (>= 1)")
    ap.add_argument("--clients", type=int, default=40)
    ap.add_argument("--mode", choices=("forward", "stub"), default="forward")
    ap.add_argument("--egress", action="store_true", help="also capture the resolver's egress")
    ap.add_argument("--ipv6", action="store_true",
                    help="dual-stack clients: ~40%% of desktops, laptops and servers reach the "
                    "resolver over IPv6")
    ap.add_argument("--max-queries", type=int, default=5_000_000)
    a = ap.parse_args(argv)
    # SIGTERM (timeout, kill) unwinds like Ctrl-C so the lab's cleanup runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    why = require_root()
    if why:
        print(f"lab.generate: {why}", file=sys.stderr)
        return 2
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"lab.generate: --seeds {a.seeds!r}: comma-separated integers", file=sys.stderr)
        return 2
    if a.speed < 1 or a.hours <= 0 or a.clients < 1:
        print("lab.generate: --speed >= 1, --hours > 0, --clients >= 1", file=sys.stderr)
        return 2
    entries = []
    for s in seeds:
        try:
            entries.append(generate_one(a.out, s, a.hours, a.speed, a.clients, a.egress,
                                        a.mode, ipv6=a.ipv6, max_queries=a.max_queries))
        except LabError as e:
            print(f"lab.generate: seed {s}: {e}", file=sys.stderr)
            write_index(a.out, entries)
            return 1
        write_index(a.out, entries)
    print(f"wrote {len(entries)} capture(s), truth file {a.out / 'truth.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
