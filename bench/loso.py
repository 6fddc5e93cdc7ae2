"""Leave-one-source-out evaluation of the model (docs/model.md).

Sources are the "source repo" column of the corpus MANIFEST.md (read, never copied). For each
source: train on every other source's captures, then replay the held-out captures through the
real pipeline (a) with the model alone (rules off, allowlist kept) and (b) as the product
(rules + model), scoring with ``dnsguard.evaluate``. Also sweeps the probability threshold and
the minimum-evidence gate on the held-out snapshots.

    python bench/loso.py [--corpus ../shared/corpus] [--classifier hoeffding|adaptive]
                         [--jobs 2] [--out bench/loso-hoeffding.md] [--json PATH]
                         [--extra DIR ...] [--train-only DIR ...] [--hold-out PREFIX]
                         [--snapshots DIR] [--folds DIR [--report-only]]

The rules are read once, before any fold runs (a fold used to read them from disk: an edit
to the rules during a long run made a fold raise, and the error, which then could not be
unpickled, broke the process pool as "terminated abruptly"). A fold that fails is reported
with its source and the run goes on. ``--folds DIR`` keeps each finished fold there, so an
interrupted run resumes where it stopped and ``--report-only`` writes the table from the folds
done so far, naming the ones missing (clear DIR when code, model settings or data change).
``--train-only DIR`` adds captures to every fold's training that are never held out or scored
(the synthetic set of ``lab/synth.py``). ``--snapshots DIR`` keeps each capture's collected
snapshots (``dnsguard.train.collect``, the slow first step) and reuses them while the capture's
SHA-256 is the same (clear DIR when the features or the labels change).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import pickle
import re
import resource
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dnsguard.detect import model as M  # noqa: E402
from dnsguard.detect.rules import RuleSet, load_dir  # noqa: E402
from dnsguard.evaluate import evaluate_capture, expand, load_truth  # noqa: E402
from dnsguard.settings import Settings  # noqa: E402
from dnsguard.train import _sha256, collect, fit  # noqa: E402

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
MIN_QUERIES = (2, 3, 4, 6, 8)
ANOMALY = (0.6, 0.7, 0.8, 0.9, 0.95)
SUPPORT = (0, 1, 2, 4, None)  # most inputs outside the leaf's tunnel box (None: no check)


def sources(corpus: Path) -> tuple[dict[str, str], list[str]]:
    """file → source repo (MANIFEST column), and notes on prefix/repo agreement."""
    out: dict[str, str] = {}
    text = (corpus / "MANIFEST.md").read_text()
    header = None
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None and "file" in cells and "source repo" in cells:
            header = cells
            continue
        if header is None or set(cells[0]) <= set("-: "):
            continue
        row = dict(zip(header, cells, strict=False))
        out[row["file"]] = row["source repo"]
    notes = []
    by_prefix: dict[str, set[str]] = {}
    for f, repo in out.items():
        by_prefix.setdefault(f.split("_", 1)[0], set()).add(repo)
    by_repo: dict[str, set[str]] = {}
    for p, repos in by_prefix.items():
        if len(repos) > 1:
            notes.append(f"prefix {p} spans repos {sorted(repos)}")
        for r in repos:
            by_repo.setdefault(r, set()).add(p)
    for r, ps in by_repo.items():
        if len(ps) > 1:
            notes.append(f"repo {r} has prefixes {sorted(ps)}")
    return out, notes


_CTX: dict = {}


def _fold(args):
    repo, held, kind, params = args
    caps, paths, truth, tmp = _CTX["caps"], _CTX["paths"], _CTX["truth"], _CTX["tmp"]
    t0 = time.monotonic()
    train = [c for c in caps if c.name not in held]
    bundle = fit(train, kind=kind, **params)
    bundle.pop("n_samples", None)
    mpath = Path(tmp) / (re.sub(r"[^A-Za-z0-9]+", "_", repo) + ".pkl")
    M.save(bundle, {"threshold": _CTX["threshold"], "min_queries": _CTX["min_queries"],
                    "learned_online": 0}, mpath)
    fit_s = time.monotonic() - t0
    # threshold / evidence sweep on held-out snapshots
    det = M.ModelDetector(bundle, {})
    sweep: dict = {}
    for c in caps:
        if c.name not in held:
            continue
        keys: dict = {}
        hst: dict = {}
        for g, scope, x, y, q in c.samples:
            if scope == "client" and math.expm1(x["distinct_domains"]) < det.min_client_domains:
                continue
            if not M.carries_data(scope, {k: M._natural(k, v) for k, v in x.items()}):
                continue
            p = det.proba(x)
            k = keys.setdefault((g, y), [])
            k.append((q, p))
            if q >= _CTX["min_queries"] and p >= _CTX["threshold"]:
                out = M.outside_box(bundle.get("support") or {},
                                    M.leaf_path(det.tree, x)[0], x)
                n_out = len(out) if out is not None else 0
                for kk in SUPPORT:
                    if kk is None or n_out <= kk:
                        sk = sweep.setdefault(f"support{kk}", {"tunnel_caps": set(),
                                                               "fp_keys": set()})
                        if y:
                            sk["tunnel_caps"].add(c.name)
                        else:
                            sk["fp_keys"].add((c.name, g))
            if q >= _CTX["min_queries"] and len(k) <= 48:
                hk = hst.setdefault((g, y), 0.0)
                hst[(g, y)] = max(hk, det.anomaly(x))
        for (_g, y), a in hst.items():
            for t in ANOMALY:
                s = sweep.setdefault(f"hst{t}", {"tunnel_caps": set(), "fp_keys": 0})
                if a >= t and y:
                    s["tunnel_caps"].add(c.name)
                elif a >= t:
                    s["fp_keys"] += 1
        for (_g, y), rows in keys.items():
            for t in THRESHOLDS:
                for mq in MIN_QUERIES:
                    fired = any(q >= mq and p >= t for q, p in rows)
                    s = sweep.setdefault(f"{t}/{mq}", {"tunnel_caps": set(), "fp_keys": 0})
                    if fired and y:
                        s["tunnel_caps"].add(c.name)
                    elif fired and not y:
                        s["fp_keys"] += 1
    for s in sweep.values():
        s["tunnel_caps"] = sorted(s["tunnel_caps"])
        if isinstance(s["fp_keys"], set):
            s["fp_keys"] = len(s["fp_keys"])
    rules_full = _CTX["rules"]  # read once in the parent: the same rules in every fold
    empty = RuleSet(rules=[], allowlist=rules_full.allowlist)
    s = replace(Settings(), model=mpath)
    if hasattr(s, "volume_alerts"):
        # Measure rules + model: the time-series volume detectors (docs/timeseries.md) are
        # another engineer's and are measured on their own.
        s.volume_alerts = False
    res = {"alone": [], "product": [], "rules": []}
    s_rules = replace(s, use_model=False)
    for p in paths:
        if p.name in held:
            res["alone"].append(evaluate_capture(p, truth[p.name], s, empty))
            res["product"].append(evaluate_capture(p, truth[p.name], s, rules_full))
            res["rules"].append(evaluate_capture(p, truth[p.name], s_rules, rules_full))
    return repo, held, res, sweep, fit_s


def _fold_safe(args):
    """_fold, with any failure returned as text (never raised through the pool) and the
    worker's peak RSS so far (MB)."""
    t0 = time.monotonic()
    try:
        out = _fold(args)
        err = None
    except Exception:  # noqa: BLE001 - reported per fold, the run goes on
        out, err = None, traceback.format_exc()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return args[0], out, err, rss, time.monotonic() - t0


def _fold_key(repo: str, held: set[str], kind: str, a) -> str:
    h = hashlib.sha256(json.dumps([repo, sorted(held), kind, a.threshold, a.min_queries]
                                  + ([sorted(str(d) for d in a.train_only)]
                                     if a.train_only else []))
                       .encode()).hexdigest()[:16]
    return re.sub(r"[^A-Za-z0-9]+", "_", repo)[:60] + "-" + h


def collect_cached(p: Path, truth, settings: Settings, ruleset: RuleSet, cache: Path | None):
    """``collect`` for one capture, through the ``--snapshots`` cache when given."""
    f = cache / (p.name + ".pkl") if cache else None
    if f is not None and f.exists():
        c = pickle.loads(f.read_bytes())
        if c.sha256 == _sha256(p) and c.cls == truth.cls:
            return c
    c = collect(p, truth, settings, ruleset)
    if f is not None:
        f.with_suffix(".tmp").write_bytes(pickle.dumps(c))
        f.with_suffix(".tmp").replace(f)
    return c


def summarize(rows: list[dict]) -> dict:
    tun = [(r, t) for r in rows for t in r["tunnels"]]
    hits = [t for _, t in tun if t["hit"]]
    ttd = sorted(t["time_to_detect"] for t in hits if t["time_to_detect"] is not None)
    cont = sorted(t["time_to_detect"] for t in hits
                  if t["time_to_detect"] is not None and t["tunnel_queries"] >= 100)
    def med(v):
        return (v[len(v) // 2] if v else None)
    return {"tunnels": len(tun), "detected": len(hits),
            "fp_keys": sum(len(r["false_positive_keys"]) for r in rows),
            "benign_alerting": sum(1 for r in rows if r["class"] == "benign" and r["alerts"]),
            "median_ttd": med(ttd), "median_ttd_continuous": med(cont),
            "continuous": len([t for _, t in tun if t["tunnel_queries"] >= 100])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    ap.add_argument("--classifier", choices=("hoeffding", "adaptive"), default="hoeffding")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--min-queries", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--extra", type=Path, action="append", default=[],
                    help="another directory of captures with its own truth.yaml, held out as "
                    "one more source (e.g. the project's pcaps/), or as the sources its "
                    "MANIFEST.md names (the lab's sets: one per seed)")
    ap.add_argument("--train-only", type=Path, action="append", default=[],
                    help="a directory of captures with its own truth.yaml in every fold's "
                    "training, never held out or scored (the synthetic set of lab/synth.py)")
    ap.add_argument("--snapshots", type=Path,
                    help="keep each capture's collected snapshots here and reuse them while "
                    "the capture is unchanged (clear it when features or labels change)")
    ap.add_argument("--hold-out", default="",
                    help="hold out only the sources whose name starts with one of these "
                    "comma-separated prefixes (e.g. 'dnsguard-lab/,slow/': the lab's seeds and "
                    "pcaps/slow), training each fold on all the rest; folds run in this order")
    ap.add_argument("--group", action="append", default=[], metavar="REGEX=SOURCE",
                    help="captures whose file name matches REGEX form one source SOURCE (e.g. "
                    "'benign_lab_s[0-9]+[.]pcap[.]gz=dnsguard-lab/benign': every seed of a "
                    "generator held out at once, the model never seeing that generator)")
    ap.add_argument("--folds", type=Path,
                    help="keep each finished fold here (pickle) and reuse it on the next run")
    ap.add_argument("--report-only", action="store_true",
                    help="with --folds: run no fold, write the table from the folds kept")
    ap.add_argument("--out", type=Path, help="write the markdown table here")
    ap.add_argument("--json", type=Path, help="write everything as JSON here")
    a = ap.parse_args()
    t0 = time.monotonic()
    truth = load_truth(a.corpus / "truth.yaml")
    src, notes = sources(a.corpus)
    paths = [p for p in expand([str(a.corpus)]) if p.name in truth]
    for d in a.extra:
        t = load_truth(d / "truth.yaml")
        dsrc = sources(d)[0] if (d / "MANIFEST.md").exists() else {}
        for p in expand([str(d)]):
            if p.name in t and p.name not in truth:
                truth[p.name] = t[p.name]
                src[p.name] = dsrc.get(p.name) or f"{d.name}/ (this project)"
                paths.append(p)
    settings = Settings()
    ruleset = load_dir(settings.rules)
    regroup = []
    for g in a.group:
        pat, sep, name = g.rpartition("=")
        if not sep or not pat or not name:
            ap.error(f"--group {g!r}: REGEX=SOURCE")
        regroup.append((re.compile(pat), name))
    for p in paths:
        for rx, name in regroup:
            if rx.fullmatch(p.name):
                src[p.name] = name
                break
    groups: dict[str, set[str]] = {}
    for p in paths:
        groups.setdefault(src.get(p.name, p.name.split("_", 1)[0]), set()).add(p.name)
    prefixes = a.hold_out.split(",")
    jobs = [(repo, held, a.classifier, {}) for pre in prefixes
            for repo, held in sorted(groups.items()) if repo.startswith(pre)]
    jobs = list({j[0]: j for j in jobs}.values())  # a source once, at its first prefix
    done: dict[str, tuple] = {}
    if a.folds:
        a.folds.mkdir(parents=True, exist_ok=True)
        for j in jobs:
            f = a.folds / (_fold_key(j[0], j[1], a.classifier, a) + ".pkl")
            if f.exists():
                done[j[0]] = pickle.loads(f.read_bytes())
    reused = len(done)
    todo = [] if a.report_only else [j for j in jobs if j[0] not in done]
    train_only = []
    for d in a.train_only:
        t = load_truth(d / "truth.yaml")
        train_only += [(p, t[p.name]) for p in expand([str(d)])
                       if p.name in t and p.name not in truth]
    caps = []
    if todo:
        if a.snapshots:
            a.snapshots.mkdir(parents=True, exist_ok=True)
        caps = [collect_cached(p, truth[p.name], settings, ruleset, a.snapshots)
                for p in paths]
        caps += [collect_cached(p, t, settings, ruleset, a.snapshots) for p, t in train_only]
    t_collect = time.monotonic() - t0
    print(f"loso: {len(jobs)} folds, {len(done)} kept in {a.folds}, {len(todo)} to run; "
          f"snapshots {sum(len(c.samples) for c in caps)} collected in {t_collect:.0f} s, "
          f"parent RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
          file=sys.stderr, flush=True)
    tmp = tempfile.mkdtemp(prefix="loso-")
    _CTX.update(caps=caps, paths=paths, truth=truth, tmp=tmp, threshold=a.threshold,
                min_queries=a.min_queries, rules=ruleset)
    failed: dict[str, str] = {}

    def finished(repo, out, err, rss, secs):
        print(f"loso: fold {repo}: {'FAILED' if err else 'done'} in {secs:.0f} s, worker "
              f"peak RSS {rss:.0f} MB", file=sys.stderr, flush=True)
        if err:
            failed[repo] = err
            print(err, file=sys.stderr, flush=True)
            return
        done[repo] = out
        if a.folds:
            j = next(j for j in jobs if j[0] == repo)
            f = a.folds / (_fold_key(repo, j[1], a.classifier, a) + ".pkl")
            f.with_suffix(".tmp").write_bytes(pickle.dumps(out))
            f.with_suffix(".tmp").replace(f)

    if a.jobs > 1 and len(todo) > 1:
        import multiprocessing as mp
        # forked workers share the parent's snapshots (copy-on-write) and are kept for all
        # folds; the worker's peak RSS is reported per fold
        with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("fork")) as ex:
            for fut in as_completed([ex.submit(_fold_safe, j) for j in todo]):
                finished(*fut.result())
    else:
        for j in todo:
            finished(*_fold_safe(j))
    missing = [j[0] for j in jobs if j[0] not in done]
    results = [done[j[0]] for j in jobs if j[0] in done]
    if not results:
        print("loso: no fold finished", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - t0
    alone = [r for _, _, res, _, _ in results for r in res["alone"]]
    prod = [r for _, _, res, _, _ in results for r in res["product"]]
    sweep: dict = {}
    for _, _, _, sw, _ in results:
        for k, v in sw.items():
            s = sweep.setdefault(k, {"tunnel_caps": 0, "fp_keys": 0})
            s["tunnel_caps"] += len(v["tunnel_caps"])
            s["fp_keys"] += v["fp_keys"]
    lines = [f"# Leave-one-source-out, {a.classifier}, threshold {a.threshold}, "
             f"min queries {a.min_queries}", "",
             f"{len(groups)} sources ({len(jobs)} held out in turn), {len(paths)} captures"
             + (f" (+ {len(train_only)} training-only, never held out or scored)"
                if train_only else "") + "; "
             f"wall time {elapsed:.0f} s "
             f"(snapshot collection {t_collect:.0f} s, {a.jobs} processes); "
             f"mean fit {sum(r[4] for r in results) / len(results):.1f} s per fold", ""]
    if notes:
        lines += ["Source grouping notes: " + "; ".join(notes), ""]
    if reused:
        lines += [f"{reused} folds were kept from an earlier invocation (`--folds`); the wall "
                  "time above is this invocation's.", ""]
    if missing:
        lines += [f"**Incomplete: {len(missing)} of {len(jobs)} folds missing** "
                  f"({', '.join(missing)}){': failed' if failed else ''}. "
                  "Complete by running the same command without `--report-only` (it resumes "
                  "from `--folds`).", ""]
    sa, sp = summarize(alone), summarize(prod)
    for name, s in (("model alone (rules off)", sa), ("product (rules + model)", sp)):
        lines.append(f"- {name}: {s['detected']}/{s['tunnels']} tunnels, {s['fp_keys']} FP "
                     f"keys, benign captures alerting {s['benign_alerting']}, median TTD "
                     f"{s['median_ttd']} s, median TTD of the {s['continuous']} tunnels with "
                     f"≥100 queries {s['median_ttd_continuous']} s")
    lines += ["", "Per held-out source (tunnels found by the model alone, the rules alone and "
              "the product; model-only = found by the product or the model alone, missed by "
              "the rules alone; FP keys alone / rules / product; benign captures alerting "
              "with the product):", "",
              "| source | captures | tunnels | model alone | rules alone | product | model-only "
              "| FP keys | benign alerting |", "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for repo, _held, res, _, _ in results:
        per = {k: summarize(res[k]) for k in ("alone", "rules", "product")}
        n_only = sum(1 for ra, rp, rr in zip(res["alone"], res["product"], res["rules"],
                                             strict=True)
                     for ta, tp, tr in zip(ra["tunnels"], rp["tunnels"], rr["tunnels"],
                                           strict=True)
                     if (ta["hit"] or tp["hit"]) and not tr["hit"])
        lines.append(f"| {repo} | {len(res['alone'])} | {per['alone']['tunnels']} | "
                     f"{per['alone']['detected']} | {per['rules']['detected']} | "
                     f"{per['product']['detected']} | {n_only} | {per['alone']['fp_keys']} / "
                     f"{per['rules']['fp_keys']} / {per['product']['fp_keys']} | "
                     f"{per['product']['benign_alerting']} |")
    lines += ["", "| source | capture | tunnel | alone | TTD s | q | FP keys (alone) | product "
              "| TTD s | detectors | FP keys (product) |", "|" + "---|" * 11]
    for repo, _held, res, _, _ in results:
        for ra, rp in zip(res["alone"], res["product"], strict=True):
            fa = ", ".join(ra["false_positive_keys"]) or "-"
            fp = ", ".join(f"{k} ({','.join(v)})" for k, v in
                           rp["false_positive_keys"].items()) or "-"
            if not ra["tunnels"]:
                lines.append(f"| {repo} | {ra['file']} | (benign) | "
                             f"{'clean' if not ra['alerts'] else 'ALERTS'} | | | {fa} | "
                             f"{'clean' if not rp['alerts'] else 'ALERTS'} | | | {fp} |")
            for ta, tp in zip(ra["tunnels"], rp["tunnels"], strict=True):
                lines.append(
                    f"| {repo} | {ra['file']} | {ta['tunnel']} | "
                    f"{'hit' if ta['hit'] else 'MISS'} | {ta['time_to_detect']} | "
                    f"{ta['queries_to_detect']}/{ta['tunnel_queries']} | {fa} | "
                    f"{'hit' if tp['hit'] else 'MISS'} | {tp['time_to_detect']} | "
                    f"{','.join(tp['detectors'])} | {fp} |")
    lines += ["", "Model-only detections (held out: tunnels the product or the model alone hit "
              "and the rules alone miss):", ""]
    only = []
    for repo, _held, res, _, _ in results:
        for ra, rp, rr in zip(res["alone"], res["product"], res["rules"], strict=True):
            for ta, tp, tr in zip(ra["tunnels"], rp["tunnels"], rr["tunnels"], strict=True):
                if (ta["hit"] or tp["hit"]) and not tr["hit"]:
                    only.append(f"- {repo}: {ra['file']}: {ta['tunnel']} (model alone "
                                f"{'hit' if ta['hit'] else 'miss'}, TTD {ta['time_to_detect']} "
                                f"s, {ta['queries_to_detect']}/{ta['tunnel_queries']} queries)")
    lines += only or ["- none"]
    sr = summarize([r for _, _, res, _, _ in results for r in res["rules"]])
    lines += ["", f"Rules alone on the same held-out captures: {sr['detected']}/{sr['tunnels']} "
              f"tunnels, {sr['fp_keys']} FP keys, benign captures alerting "
              f"{sr['benign_alerting']}."]
    lines += ["", "Held-out snapshot sweep (threshold/min queries: tunnel captures with a "
              "firing tunnel key, benign-labelled keys firing):", "",
              "| threshold | " + " | ".join(f"q≥{m}" for m in MIN_QUERIES) + " |",
              "|---|" + "---|" * len(MIN_QUERIES)]
    for t in THRESHOLDS:
        cells = []
        for m in MIN_QUERIES:
            s = sweep.get(f"{t}/{m}", {"tunnel_caps": 0, "fp_keys": 0})
            cells.append(f"{s['tunnel_caps']} / {s['fp_keys']}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += ["", f"Support check (threshold {a.threshold}, ≥{a.min_queries} queries; a window "
              "fires only if at most K of its inputs lie outside its leaf's box of tunnel "
              "training windows): tunnel captures with a firing tunnel key / benign-labelled "
              "keys firing:", ""]
    for kk in SUPPORT:
        s = sweep.get(f"support{kk}", {"tunnel_caps": 0, "fp_keys": 0})
        lines.append(f"- K = {'no check' if kk is None else kk}: {s['tunnel_caps']} / "
                     f"{s['fp_keys']}")
    lines += ["", "Half-Space-Trees alone on held-out keys (max anomaly score over snapshots "
              f"with ≥{a.min_queries} queries): tunnel captures with a key over the threshold "
              "/ benign-labelled keys over it:", ""]
    for t in ANOMALY:
        s = sweep.get(f"hst{t}", {"tunnel_caps": 0, "fp_keys": 0})
        lines.append(f"- anomaly ≥ {t}: {s['tunnel_caps']} / {s['fp_keys']}")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
    if a.json:
        a.json.write_text(json.dumps({"alone": sa, "product": sp, "sweep": sweep,
                                      "results": [(r[0], sorted(r[1]), r[2], r[4])
                                                  for r in results]}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
