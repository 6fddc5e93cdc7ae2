"""Leave-one-out of the long-horizon model over the low-and-slow captures (docs/model.md,
"The long-horizon model").

Each training capture is replayed once through the real pipeline with the rules off
(``dnsguard.train.collect``, long-horizon keys only) and its labelled long-horizon snapshots
are kept (``--cache``). Then, for each held-out capture X (``--hold-out``, default the
captures of ``pcaps/slow``), a long model is fitted on every snapshot but X's
(``dnsguard.train.fit_long``) and X is replayed with the allowlist as the only rules and that
long model (``dnsguard.evaluate.evaluate_capture``): does the long model find X, how soon
after its first tunnel query? Last, a model fitted on everything is replayed on the benign
sets (``--benign``): false-positive keys of the long model alone (allowlist only) and of the
product (rules, window model and long model).

    python bench/long_loo.py --truth T.yaml ... --hold-out pcaps/slow \\
        --benign /work/scratch/lab-benign/v3 --cache /tmp/long.pkl CAPTURE_OR_DIR...

Costs: collection is a replay of every training capture (the lab's hour-long benign seeds
dominate: ~30 s each); each fold's fit takes seconds.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from argparse import Namespace
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dnsguard.detect import longmodel as LM  # noqa: E402
from dnsguard.detect.rules import RuleSet, load_dir  # noqa: E402
from dnsguard.evaluate import evaluate_capture, expand, load_truth  # noqa: E402
from dnsguard.settings import Settings  # noqa: E402
from dnsguard.train import collect, save_long  # noqa: E402


def _judged_x(scope: str, x: dict) -> bool:
    """``longmodel.evidence`` on a collected input vector (its span passed when it was
    collected; the vector does not hold it)."""
    f = {n: LM._natural(n, v) for n, v in x.items()}
    f["new_names"] = round(f["new_names"], 4)
    f["span"] = float("inf")
    return LM.evidence(scope, f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", type=Path, action="append", required=True)
    ap.add_argument("--hold-out", type=Path, action="append", default=[],
                    help="captures (or directories) held out one at a time")
    ap.add_argument("--benign", type=Path, action="append", default=[],
                    help="test directories (with truth.yaml) for false positives")
    ap.add_argument("--cache", type=Path, help="keep the collected snapshots here")
    ap.add_argument("--keep", type=Path, help="write the model fitted on everything here")
    ap.add_argument("captures", nargs="+")
    a = ap.parse_args(argv)
    truth = {}
    for t in a.truth:
        truth.update(load_truth(t))
    settings = Settings()
    rules = load_dir(settings.rules)
    allow_only = RuleSet(rules=[], allowlist=rules.allowlist)
    paths = expand([str(p) for p in a.captures])
    held = expand([str(p) for p in a.hold_out])
    caps = {}
    if a.cache and a.cache.exists():
        caps = pickle.loads(a.cache.read_bytes())  # noqa: S301 - our own cache
    t0 = time.monotonic()
    for p in paths + [h for h in held if h not in paths]:
        if p.name in caps or p.name not in truth:
            continue
        caps[p.name] = collect(p, truth[p.name], settings, rules, window=False)
        print(f"collected {p.name}: {len(caps[p.name].long_samples)} long snapshots "
              f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)
        if a.cache:
            a.cache.write_bytes(pickle.dumps(caps))
    for c in caps.values():  # snapshots collected under an older, looser gate: drop them
        c.long_samples = [r for r in c.long_samples if _judged_x(r[1], r[2])]
    args = Namespace(epochs=2, seed=7)
    tmp = Path(tempfile.mkdtemp(prefix="lm7-loo-"))
    print("| held out | tunnel | long model alone | ttd s | queries | first detectors "
          "| FP keys |\n|---|---|---|---:|---:|---|---|")
    for h in held:
        train = [c for n, c in caps.items() if n != h.name]
        mp = tmp / f"long_{h.stem}.pkl"
        if save_long(train, mp, args, a.truth) is None:
            continue
        s = replace(settings, long_model=mp)
        r = evaluate_capture(h, truth[h.name], s, allow_only)
        for t in r["tunnels"]:
            print(f"| {h.name} | {t['tunnel']} | {'hit' if t['hit'] else 'miss'} | "
                  f"{t['time_to_detect']} | {t['queries_to_detect']}/{t['tunnel_queries']} | "
                  f"{','.join(t['detectors'])} | {r['false_positive_keys'] or 0} |")
    full = a.keep or tmp / "long_all.pkl"
    save_long(list(caps.values()), full, args, a.truth)
    for d in a.benign:
        bt = load_truth(d / "truth.yaml")
        for p in expand([str(d)]):
            if p.name not in bt:
                continue
            s = replace(settings, long_model=full)
            alone = evaluate_capture(p, bt[p.name], s, allow_only)
            prod = evaluate_capture(p, bt[p.name], s, rules)
            print(f"benign {p.name}: long model alone FP keys "
                  f"{alone['false_positive_keys'] or 0}; product FP keys "
                  f"{prod['false_positive_keys'] or 0}")
    print(f"long model inputs: {len(LM.INPUTS)}; total {time.monotonic() - t0:.0f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
