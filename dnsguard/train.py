"""``dnsguard train``: label the pipeline's feature snapshots from ground truth and fit the model.

Each capture is replayed alone through the real pipeline with the rules off; a collector sits
in ``extra_detectors`` and records the feature vector of every key each time the pipeline
evaluates it (often while evidence is thin, then sparser; see ``measure.due``), so the model
learns from early, thin windows as well as full ones. Labels follow ``evaluate.py``'s matching
(docs/model.md, "Labels"). Samples are thinned per key and weighted per capture and class so
that big captures do not dominate, then shuffled and fed to the Hoeffding tree.
"""

from __future__ import annotations

import hashlib
import logging
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from dnsguard.capture.pcapfile import expand
from dnsguard.decode.packet import ip_text
from dnsguard.detect import longmodel as LM
from dnsguard.detect import model as M
from dnsguard.detect.base import Detector
from dnsguard.detect.rules import RuleSet
from dnsguard.evaluate import Truth, _related, load_truth
from dnsguard.output.files import check_writable, write_json
from dnsguard.settings import Settings

log = logging.getLogger(__name__)

KEEP_FIRST = 32  # snapshots kept per key: the first ones (thin evidence) ...
KEEP_LATER = 16  # ... and this many more, evenly spaced, of the rest
TUNNEL, BENIGN, SKIP = 1, 0, None


@dataclass
class CaptureSamples:
    name: str
    cls: str
    sha256: str
    # (group key, scope, x, label, queries)
    samples: list[tuple] = field(default_factory=list)
    skipped: int = 0
    # The long-horizon keys' snapshots the long model judges, in the same form (queries: 1)
    long_samples: list[tuple] = field(default_factory=list)
    long_skipped: int = 0


class _Collector(Detector):
    """An extra detector that only records what it is shown."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self._ctx: tuple = (None, None, None)

    def observe(self, scope, f, ident, *, factor=1.0, hits=None, ts=0.0, client=None,
                server=None, domain=None) -> None:
        self._ctx = (client, server, domain, factor)

    def score(self, scope, f, ident):
        if scope in M.MODEL_SCOPES:
            client, server, domain, factor = self._ctx
            self.rows.append((scope, ident, M.vectorize(scope, f), int(f["queries"]),
                              ip_text(client) if client else None,
                              ip_text(server) if server else None, domain, factor))
        return None


class _LongCollector(LM.LongModel):
    """The judge's long-horizon model during training: records every due long-horizon key
    with the long model's counts of evidence (``longmodel.evidence``: the gate without its
    conditions on the names' shape and the check-ins' regularity), judges nothing."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def score(self, scope, f, ident, client=None, factor=1.0):
        if LM.evidence(scope, f):
            self.rows.append((scope, ident, LM.vectorize(scope, f),
                              ip_text(client) if client else None, factor))
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def label_row(truth: Truth, tunnel_clients: set[str], scope: str, ident: tuple,
              client: str | None, server: str | None, domain: str | None, factor: float):
    """TUNNEL, BENIGN or SKIP (ambiguous) for one snapshot, by evaluate.py's matching."""
    if truth.cls == "benign" or factor > 1.0:
        return BENIGN
    dom_tunnels = [t.domain for t in truth.tunnels if t.domain]
    addr_tunnels = [t for t in truth.tunnels if not t.domain]
    if scope in ("domain", "client_domain"):
        rd = ident[1]
        if any(_related(rd, d) for d in dom_tunnels):
            return TUNNEL
        for t in addr_tunnels:
            cm = t.client is not None and client == t.client
            sm = t.server is not None and server == t.server
            if cm and (sm or t.server is None):
                return TUNNEL
            if cm or sm:
                return SKIP
        return BENIGN
    if scope == "client":
        if any(t.client is not None and client == t.client for t in addr_tunnels):
            return TUNNEL
        if client in tunnel_clients:
            return SKIP
        return BENIGN
    # flow: non-DNS bytes between a client and a server
    if domain and any(_related(domain, d) for d in dom_tunnels):
        return TUNNEL
    if any((t.client is not None and client == t.client)
           or (t.server is not None and server == t.server) for t in addr_tunnels):
        return TUNNEL
    if client in tunnel_clients:
        return SKIP
    return BENIGN


def collect(path: Path, truth: Truth, settings: Settings, ruleset: RuleSet,
            window: bool = True) -> CaptureSamples:
    """Replay one capture with the rules off and return its labelled snapshots: the window
    model's (unless ``window`` is False) and the long-horizon model's."""
    from dnsguard.pipeline import Pipeline
    from dnsguard.replay import replay

    s = replace(settings, use_model=False)
    empty = RuleSet(rules=[], allowlist=ruleset.allowlist)
    pipe = Pipeline(s, empty, lambda a: None)
    col = _Collector()
    if window:
        pipe.extra_detectors = [col]
    lcol = _LongCollector()
    pipe.judge.long_model = lcol
    pipe.judge.set_rules(empty)  # the long-horizon gates with the collector's bars
    dom = [t.domain for t in truth.tunnels if t.domain]
    tunnel_clients: set[str] = set()
    if dom:
        def on_query(ts, client, server, qname):
            if any(_related(qname, d) for d in dom):
                tunnel_clients.add(client)
        pipe.on_query = on_query
    replay([path], s, empty, lambda a: None, pipeline=pipe)
    out = CaptureSamples(path.name, truth.cls, _sha256(path))
    for scope, ident, x, q, client, server, domain, factor in col.rows:
        y = label_row(truth, tunnel_clients, scope, ident, client, server, domain, factor)
        if y is SKIP:
            out.skipped += 1
            continue
        g = (scope, ident, client if scope == "client_domain" else None)
        out.samples.append((g, scope, x, y, q))
    for scope, ident, x, client, factor in lcol.rows:
        # Labelled as the window scope of the same key (a domain; one client's traffic to it)
        y = label_row(truth, tunnel_clients, "domain" if scope == "long_domain"
                      else "client_domain", ident, client, None, ident[1], factor)
        if y is SKIP:
            out.long_skipped += 1
            continue
        g = (scope, ident, client if scope == "long_client_domain" else None)
        out.long_samples.append((g, scope, x, y, 1))
    return out


def _thin(rows: list[tuple]) -> list[tuple]:
    if len(rows) <= KEEP_FIRST + KEEP_LATER:
        return rows
    rest = rows[KEEP_FIRST:]
    step = len(rest) / KEEP_LATER
    return rows[:KEEP_FIRST] + [rest[int(i * step)] for i in range(KEEP_LATER)]


def weighted(caps: list[CaptureSamples], min_queries: int = 1,
             gate: bool = False) -> list[tuple[dict, bool, float]]:
    """(x, y, w): thinned per key; each capture's class gets weight ∝ sqrt(its samples); the
    two classes get equal total weight; mean weight 1. With ``gate``, only the snapshots the
    detector would judge (:func:`dnsguard.detect.model.judged`)."""
    parts: list[tuple[int, list[tuple]]] = []
    for c in caps:
        groups: dict = {}
        for g, scope, x, y, q in c.samples:
            if q >= min_queries and (not gate or M.judged(scope, x, q)):
                groups.setdefault((g, y), []).append((x, y))
        by_class: dict[int, list] = {0: [], 1: []}
        for (_g, y), rows in groups.items():
            by_class[y] += _thin(rows)
        for y, rows in by_class.items():
            if rows:
                parts.append((y, rows))
    totals = {0: 0.0, 1: 0.0}
    for y, rows in parts:
        totals[y] += len(rows) ** 0.5
    n = sum(len(rows) for _, rows in parts)
    out = []
    for y, rows in parts:
        if not totals[y]:
            continue
        # this part's share of its class, each class half of all weight
        w_part = (len(rows) ** 0.5) / totals[y] * (n / 2)
        w = w_part / len(rows)
        out += [(x, bool(yy), w) for x, yy in rows]
    return out


def fit(caps: list[CaptureSamples], kind: str = "hoeffding", epochs: int = 2, seed: int = 7,
        min_queries: int = 1, gate: bool = False, **params) -> dict:
    """A trained bundle (see :func:`dnsguard.detect.model.new_bundle`). The tree learns the
    windows the detector judges (``gate``); the anomaly scorer every benign window."""
    bundle = M.new_bundle(kind, seed=seed, **params)
    data = weighted(caps, min_queries, gate=gate)
    rng = random.Random(seed)
    tree, scaler, hst = bundle["tree"], bundle["scaler"], bundle["hst"]
    benign = [x for x, y, _ in weighted(caps, min_queries) if not y] if gate else \
        [x for x, y, _ in data if not y]
    for x in benign:
        scaler.learn_one(x)
    for _ in range(epochs):
        rng.shuffle(data)
        for x, y, w in data:
            tree.learn_one(x, y, w=w)
    rng.shuffle(benign)
    for x in benign:
        hst.learn_one(scaler.transform_one(x))
    # Each leaf's box of the windows it learnt from: the model abstains outside it
    # (docs/model.md, "Calibration").
    bundle["support"] = M.support_boxes(tree, data)
    bundle["n_samples"] = len(data)
    return bundle


def fit_long(caps: list[CaptureSamples], epochs: int = 2, seed: int = 7,
             **params) -> dict:
    """A trained long-horizon bundle (:func:`dnsguard.detect.longmodel.new_bundle`) from the
    captures' long-horizon snapshots, thinned and weighted as :func:`weighted` does the
    window model's; each leaf's tunnel box kept for the support check."""
    bundle = LM.new_bundle(**params)
    longs = [replace(c, samples=c.long_samples) for c in caps]
    data = weighted(longs)
    rng = random.Random(seed)
    tree = bundle["tree"]
    for _ in range(epochs):
        rng.shuffle(data)
        for x, y, w in data:
            tree.learn_one(x, y, w=w)
    bundle["support"] = M.support_boxes(tree, data, inputs=LM.INPUTS)
    bundle["n_samples"] = len(data)
    return bundle


def long_output(output: Path) -> Path:
    """Where the long-horizon model goes beside the window model ``output``:
    ``model.pkl`` → ``long_model.pkl`` (the shipped pair), ``fold.pkl`` → ``long_fold.pkl``."""
    return output.with_name("long_" + output.name)


def save_long(caps: list[CaptureSamples], path: Path, args, truth_files: list[Path]):
    """Fit and write the long-horizon model; its metadata, or None when the captures hold
    no long-horizon key of one class (nothing to learn; logged)."""
    n_t = sum(1 for c in caps for s in c.long_samples if s[3])
    n_b = sum(1 for c in caps for s in c.long_samples if not s[3])
    if not n_t or not n_b:
        print(f"dnsguard: {path}: not written: the captures hold {n_t} tunnel / {n_b} benign "
              f"long-horizon snapshots with enough evidence (both are needed)",
              file=sys.stderr)
        return None
    bundle = fit_long(caps, epochs=args.epochs, seed=args.seed)
    meta = {"threshold": LM.THRESHOLD,
            "training": {"digest": training_digest(caps, truth_files),
                         "captures": [{"file": c.name, "class": c.cls,
                                       "samples": len(c.long_samples),
                                       "skipped": c.long_skipped}
                                      for c in caps if c.long_samples],
                         "snapshots": {"tunnel": n_t, "benign": n_b},
                         "weighted_samples": bundle.pop("n_samples"),
                         "epochs": args.epochs, "seed": args.seed}}
    meta = LM.save(bundle, meta, path)
    print(f"{path}: long-horizon {meta['classifier']} trained on {n_t} tunnel / {n_b} benign "
          f"long-horizon snapshots; sha256 {meta['sha256']}", file=sys.stderr)
    return meta


def training_digest(caps: list[CaptureSamples], truth_files: list[Path]) -> str:
    h = hashlib.sha256()
    for c in sorted(caps, key=lambda c: c.name):
        h.update(f"{c.name}\0{c.sha256}\0{c.cls}\n".encode())
    for t in truth_files:
        h.update(_sha256(t).encode())
    return h.hexdigest()


DEFAULTS = {"threshold": 0.9, "min_queries": 4, "anomaly_threshold": 0.9}


def train_cli(args, settings: Settings, ruleset: RuleSet) -> int:
    t0 = time.monotonic()
    truth: dict[str, Truth] = {}
    for tp in args.truth:
        try:
            truth.update(load_truth(tp))
        except Exception as e:  # SourceError and I/O errors alike
            print(f"dnsguard: {e}", file=sys.stderr)
            return 2
    if not check_writable(args.json, "model metadata"):  # the model's directory is made
        return 2
    paths = expand(args.captures)
    caps = []
    for p in paths:
        t = truth.get(p.name)
        if t is None:
            print(f"dnsguard: {p.name}: not in the truth file(s), skipped", file=sys.stderr)
            continue
        caps.append(collect(p, t, settings, ruleset, window=not args.long_only))
    if not caps:
        print("dnsguard: no capture with ground truth to train on", file=sys.stderr)
        return 2
    long_path = args.long_output or long_output(args.output)
    if args.long_only:
        return 0 if save_long(caps, long_path, args, list(args.truth)) else 1
    bundle = fit(caps, kind=args.classifier, epochs=args.epochs, seed=args.seed)
    n_t = sum(1 for c in caps for s in c.samples if s[3])
    n_b = sum(1 for c in caps for s in c.samples if not s[3])
    meta = {
        "threshold": args.threshold, "min_queries": args.min_queries,
        "anomaly_threshold": DEFAULTS["anomaly_threshold"],
        "training": {
            "digest": training_digest(caps, list(args.truth)),
            "captures": [{"file": c.name, "class": c.cls, "sha256": c.sha256,
                          "samples": len(c.samples), "skipped": c.skipped} for c in caps],
            "snapshots": {"tunnel": n_t, "benign": n_b},
            "weighted_samples": bundle.pop("n_samples"),
            "epochs": args.epochs, "seed": args.seed,
            "window": settings.window,
        },
        "learned_online": 0,
    }
    meta = M.save(bundle, meta, args.output)
    secs = time.monotonic() - t0
    print(f"{args.output}: {meta['classifier']} trained on {len(caps)} captures "
          f"({n_t} tunnel / {n_b} benign snapshots) in {secs:.1f} s; sha256 {meta['sha256']}",
          file=sys.stderr)
    if args.json and not write_json(args.json, meta, "model metadata"):
        return 1
    save_long(caps, long_path, args, list(args.truth))
    return 0
