"""The long-horizon model: a second Hoeffding tree, on what a registered domain (and one
client's traffic to it) did over hours (``features.horizon``), judged when the judge
evaluates a long-horizon key (``Judge.on_long_due``) — never per packet. See docs/model.md,
"The long-horizon model".

The window model (``detect.model``) judges a key's five-minute window; a client sending a
file at one query a minute never puts more than a handful of names in one, below its
evidence gate, so it finds none of the low-and-slow captures. This model reads the
long-horizon features instead (new names, the data they carried up, answer bytes down, the
share of queries that are new names, how encoded they look, clients, and for a client →
domain pair the beacon timing), with the same protocol (``learn_one`` /
``predict_proba_one``), the same minimum-evidence idea (a key with few new names, little new
data or a short history is never judged: :func:`judged`), leaves smoothed toward 1/2 (a leaf
that saw few keys cannot answer 1.000) and the window model's support boxes (it abstains on a
key unlike every tunnel key its leaf learnt from).

Its own files beside the window model's (``long_model.pkl`` and ``long_model.pkl.json``,
format ``dnsguard-long-model/1``), checked before unpickling as the window model's are
(owner, mode, SHA-256, input list); built by ``dnsguard train`` in the same run.

Example:
    >>> x = vectorize("long_domain", {"new_names": 40.0, "new_bytes_up": 800.0,
    ...                               "new_name_share": 0.95})
    >>> x["new_name_share"], x["scope_long_domain"], round(math.expm1(x["bytes_per_new_name"]), 1)
    (0.95, 1.0, 20.0)
    >>> judged("long_domain", {"new_names": 40.0, "new_bytes_up": 800.0, "span": 1800.0,
    ...                        "new_encoded_share": 0.9, "new_name_share": 0.95})
    True
    >>> judged("long_domain", {"new_names": 40.0, "new_bytes_up": 800.0, "span": 1800.0})
    False
    >>> judged("long_domain", {"new_names": 40.0, "new_bytes_up": 80.0, "span": 1800.0})
    False
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import time
from functools import partial
from pathlib import Path

from dnsguard.detect import model as M
from dnsguard.detect.base import Detector
from dnsguard.features import catalog

log = logging.getLogger(__name__)

FORMAT = "dnsguard-long-model/1"
DETECTOR_ID = "model-long"
LONG_SCOPES = ("long_domain", "long_client_domain")
# The inputs, chosen from the catalog's long-horizon features (features/catalog.py). Left
# out: ``span`` (the gate reads it; as an input the tree would learn "a short history is a
# tunnel" from the corpus' minutes-long captures, the opposite of what this model is for),
# ``interval_madm`` (interval_jitter × interval_median) and ``size_skew`` (DNS queries are
# alike in size; ``size_madm`` says it).
FEATURES = [
    "long_queries", "new_names", "new_name_share", "new_bytes_up", "long_bytes_down",
    "new_encoded_share", "new_mean_sub_len", "new_mean_sub_entropy", "long_carrier_share",
    "long_clients",
    "checkins", "beacon_score", "timing_score", "interval_median", "interval_jitter",
    "interval_skew", "size_madm", "count_score",
]
LOG_FEATURES = frozenset(n for n in FEATURES if catalog.FEATURES[n].volume) | {
    "new_mean_sub_len", "long_clients", "interval_median", "size_madm"}
# Inputs derived from the features (no rule reads them): what each new name carried, and
# the answer data per query, whatever the rate.
DERIVED = {
    "bytes_per_new_name": "estimated bytes each new name carried up (new_bytes_up / "
                          "new_names)",
    "down_per_query": "answer bytes per query (long_bytes_down / long_queries)",
}
SCOPE_FEATURES = [f"scope_{s}" for s in LONG_SCOPES]
INPUTS = FEATURES + list(DERIVED) + SCOPE_FEATURES

DEFAULT_LONG_MODEL = M.DEFAULT_MODEL.with_name("long_model.pkl")

# --- the evidence gate: which long keys the model may judge --------------------------------
# A domain: enough new names carrying enough data over a long enough history (the bars of
# the long-horizon rules: rules/long_horizon.yaml, slow-encoded-exfil's 16 names, 10 min) …
MIN_NEW_NAMES = 16.0  # new names (decayed count, as the rules read it)
MIN_NEW_BYTES = 150.0  # estimated bytes carried up by them
MIN_SPAN = 600.0  # seconds from the key's first to its last query
# … in names of a data shape: most of them encoded (``NameFeatures.encoded``: a long,
# high-entropy label, not an identifier such as a UUID, a hex digest of a hash's length or a
# cloud resource id). Not names of no data shape (short labels, words, host names), at any
# volume: one client looking up two dozen host names of its company's internal zone over
# half an hour (``printer-16``, ``desktop-o76mdz1``, ``android-<hex>``: every query a new
# name, ~7 bytes each) raised a false alarm on the lab's benign test seeds 102 and 103, 48
# such names over 90 minutes still did with a volume path; and not high entropy or many
# bytes a name alone: a client's ad frames, one 32-hex digest each under
# ``safeframe.googlesyndication.com`` (3.9 bits a character, ~20 bytes a name), did
# (tests/test_generalisation.py; docs/model.md).
MIN_ENCODED_SHARE = 0.5
# … and most queries new names: a channel must keep asking new names to move new data (a
# cache answers a repeat), while a service's encoded-looking tokens are asked again and
# again. Inside the rest of the gate the training data hold few benign keys (71 snapshots
# of the lab's benign training seeds), too few for the tree to draw this line itself.
MIN_NEW_SHARE = 0.5
# A client → domain pair: the same data evidence, or a beacon's check-ins (the
# cache-busting-beacon rule's 30 over 15 min).
MIN_CHECKINS = 30
MIN_BEACON_SPAN = 900.0
# … at intervals regular for their period: a median absolute deviation at most 15 % of the
# median interval, or at most 35 % (the beacon rule's bar) with RITA's timing score at least
# 0.8. Memoryless arrivals sit at ~0.69 of the median, a sleeping beacon with ±10 % jitter at
# ~0.05-0.07; RITA's own dispersion score is measured against 30 s, so it is high for any
# second-scale process and low for long periods. Without this, 30 lookups of names that are
# each new passed as "check-ins" and the tree judged their names as data: one client's ISP
# host names at random times (jitter 1.0, timing 0.49) and another's ``static.<address>.
# clients.your-server.de`` names every ~13 s (jitter 1.0, timing 0.84) on the lab's benign
# test seed 101, and a monitor looking up new internal host names every 60-150 s (timing
# 0.63-0.71, jitter 0.20-0.25: tests/test_longmodel.py). A beacon sleeping ±40 % is as
# irregular as that monitor: neither this model's nor the rules'.
MAX_BEACON_JITTER = 0.15
MAX_TIMED_JITTER = 0.35
MIN_BEACON_TIMING = 0.8
THRESHOLD = 0.9
SMOOTHING = 2.0  # leaf prior mass (half tunnel, half benign): P = (t + 1) / (t + b + 2)


def evidence(scope: str, f: dict) -> bool:
    """The counts and history :func:`judged` asks before the shape of the names and the
    regularity of the check-ins: ``MIN_NEW_NAMES`` names carrying ``MIN_NEW_BYTES`` over
    ``MIN_SPAN`` seconds, or (a pair) ``MIN_CHECKINS`` over ``MIN_BEACON_SPAN``. Training
    learns from every key past this (``dnsguard.train``): past the whole gate the lab's
    benign training seeds hold no key at all, and a tree trained there would be one leaf —
    the gate would be the model (the window model's training made the same choice:
    docs/model.md, "Synthetic tunnels")."""
    g = f.get
    span = g("span", 0.0)
    if (g("new_names", 0.0) >= MIN_NEW_NAMES and g("new_bytes_up", 0.0) >= MIN_NEW_BYTES
            and span >= MIN_SPAN):
        return True
    return (scope == "long_client_domain" and g("checkins", 0) >= MIN_CHECKINS
            and span >= MIN_BEACON_SPAN)


def judged(scope: str, f: dict) -> bool:
    """Is there enough long-horizon evidence to ask the tree about this key? A domain (or a
    pair) whose new names carried data: ``MIN_NEW_NAMES`` names, ``MIN_NEW_BYTES`` bytes,
    ``MIN_SPAN`` seconds, most of them encoded (``MIN_ENCODED_SHARE``) and most queries
    new names (``MIN_NEW_SHARE``); or a pair that checked in
    ``MIN_CHECKINS`` times over ``MIN_BEACON_SPAN`` seconds at regular intervals
    (``MAX_BEACON_JITTER``, or ``MAX_TIMED_JITTER`` with ``MIN_BEACON_TIMING``: a beacon
    moves little data, but keeps its period).

    >>> host_names = {"new_names": 22.4, "new_bytes_up": 153.3, "span": 2076.5,
    ...               "new_encoded_share": 0.0, "new_mean_sub_entropy": 3.38}
    >>> judged("long_domain", host_names), judged("long_domain", dict(host_names, new_names=50,
    ...                                                               new_bytes_up=420))
    (False, False)
    >>> judged("long_domain", dict(host_names, new_encoded_share=0.9, new_name_share=1.0))
    True
    """
    g = f.get
    span = g("span", 0.0)
    names, up = g("new_names", 0.0), g("new_bytes_up", 0.0)
    if (names >= MIN_NEW_NAMES and up >= MIN_NEW_BYTES and span >= MIN_SPAN
            and g("new_encoded_share", 0.0) >= MIN_ENCODED_SHARE
            and g("new_name_share", 0.0) >= MIN_NEW_SHARE):
        return True
    return (scope == "long_client_domain" and g("checkins", 0) >= MIN_CHECKINS
            and span >= MIN_BEACON_SPAN
            and (g("interval_jitter", 1.0) <= MAX_BEACON_JITTER
                 or (g("interval_jitter", 1.0) <= MAX_TIMED_JITTER
                     and g("timing_score", 0.0) >= MIN_BEACON_TIMING)))


def vectorize(scope: str, f: dict) -> dict[str, float]:
    """The model's input for one long-horizon key: every input present (0 for a feature
    the scope does not have), log1p on counts and sizes."""
    x: dict[str, float] = {}
    for n in FEATURES:
        v = float(f.get(n, 0.0) or 0.0)
        x[n] = round(math.log1p(v), 6) if n in LOG_FEATURES and v > 0 else v
    names = float(f.get("new_names", 0.0) or 0.0)
    q = float(f.get("long_queries", 0.0) or 0.0)
    per = float(f.get("new_bytes_up", 0.0) or 0.0) / names if names > 0 else 0.0
    down = float(f.get("long_bytes_down", 0.0) or 0.0) / q if q > 0 else 0.0
    x["bytes_per_new_name"] = round(math.log1p(per), 6) if per > 0 else 0.0
    x["down_per_query"] = round(math.log1p(down), 6) if down > 0 else 0.0
    for s in LONG_SCOPES:
        x[f"scope_{s}"] = 1.0 if s == scope else 0.0
    return x


def _natural(name: str, v: float) -> float:
    return math.expm1(v) if name in LOG_FEATURES or name in DERIVED else v


def new_bundle(**params) -> dict:
    """A fresh, untrained tree. Majority-class leaves: the probability is the leaf's
    (smoothed) class weights, which :meth:`LongModel.predict_proba_one` reads."""
    from river import tree

    p = {"grace_period": 50, "delta": 1e-5, "max_depth": 6, "leaf_prediction": "mc"}
    p.update(params)
    return {"tree": tree.HoeffdingTreeClassifier(**p), "params": p}


# --- files -----------------------------------------------------------------------------------
def save(bundle: dict, meta: dict, path: str | Path) -> dict:
    """``path`` (pickle) and ``path.json`` (metadata with its SHA-256), each atomically, as
    :func:`dnsguard.detect.model.save` writes the window model."""
    path = Path(path)
    blob = pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL)
    meta = dict(meta)
    meta.update({"format": FORMAT, "features": INPUTS, "log_features": sorted(LOG_FEATURES),
                 "classifier": type(bundle["tree"]).__name__,
                 "params": bundle.get("params", {}), "versions": M.versions(),
                 "sha256": hashlib.sha256(blob).hexdigest(),
                 "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    M._atomic_write(path, blob)
    M._atomic_write(M.meta_path(path), (json.dumps(meta, indent=2) + "\n").encode())
    return meta


def load(path: str | Path) -> tuple[dict, dict]:
    """(bundle, metadata), after the window model's checks (owner, mode, format, inputs,
    digest); :class:`dnsguard.detect.model.ModelError` naming the file and what to do."""
    path = Path(path)
    mp = M.meta_path(path)
    M._check_file(path)
    M._check_file(mp)
    try:
        meta = json.loads(mp.read_text())
    except (OSError, ValueError) as e:
        raise M.ModelError(f"{mp}: unreadable long-horizon model metadata ({e}); rebuild it "
                           f"with 'dnsguard train' (docs/model.md)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise M.ModelError(f"{mp}: not a {FORMAT} metadata file; rebuild the long-horizon "
                           f"model with 'dnsguard train' (docs/model.md)")
    if meta.get("features") != INPUTS:
        raise M.ModelError(f"{path}: long-horizon model built for other inputs than this "
                           f"version's (detect/longmodel.py INPUTS); retrain it with "
                           f"'dnsguard train' (docs/model.md)")
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != meta.get("sha256"):
        raise M.ModelError(f"{path}: SHA-256 {digest} does not match {mp.name} "
                           f"({meta.get('sha256')}); refusing to unpickle it. Restore it or "
                           f"rebuild it with 'dnsguard train' (docs/model.md).")
    try:
        bundle = pickle.loads(blob)  # noqa: S301 - checked above: owner, mode, digest
    except Exception as e:
        raise M.ModelError(f"{path}: cannot unpickle the long-horizon model "
                           f"({type(e).__name__}: {e}); rebuild it with 'dnsguard train'") \
            from None
    if not isinstance(bundle, dict) or "tree" not in bundle:
        raise M.ModelError(f"{path}: not a dnsguard long-horizon model (no classifier "
                           f"inside); rebuild it with 'dnsguard train'")
    return bundle, meta


class LongModel(Detector):
    """The judge asks :meth:`score` on a due long-horizon key (``Judge.on_long_due``) with
    its features; a hit is raised like a long-horizon rule's (what moved since when)."""

    detector_id = DETECTOR_ID
    description = ("A decision tree trained on the long-horizon records (hours) of lab and "
                   "synthetic tunnels and benign networks judges the registered domain's, or "
                   "the client's traffic to it, tunnel-like: a low-and-slow channel or a "
                   "beacon too quiet for any five-minute window.")
    mitre = ("T1071.004", "T1048.003")
    # The gate's bars (the judge computes no feature dict below them: Judge.set_rules).
    min_new_names = MIN_NEW_NAMES
    min_span = MIN_SPAN
    min_checkins = MIN_CHECKINS

    def __init__(self, bundle: dict, meta: dict | None = None,
                 threshold: float | None = None) -> None:
        self.bundle = bundle
        self.tree = bundle["tree"]
        self.meta = meta or {}
        self.threshold = threshold if threshold is not None else \
            self.meta.get("threshold", THRESHOLD)
        self.abstained = 0  # keys over the threshold outside their leaf's tunnel box
        self.judged = 0  # keys past the evidence gate

    def learn_one(self, x: dict, y: bool, w: float = 1.0) -> None:
        self.tree.learn_one(x, y, w=w)

    def predict_proba_one(self, x: dict) -> dict[bool, float]:
        """P(tunnel) from the leaf's class weights, smoothed toward 1/2 with ``SMOOTHING``
        of prior mass: a leaf that learnt from a handful of tunnel keys says 0.8, not 1.0."""
        _path, leaf = M.leaf_path(self.tree, x)
        stats = getattr(leaf, "stats", None) or {}
        t, b = float(stats.get(True, 0.0)), float(stats.get(False, 0.0))
        p = (t + SMOOTHING / 2) / (t + b + SMOOTHING)
        return {True: p, False: 1.0 - p}

    def score(self, scope: str, f: dict, ident: tuple, client: bytes | None = None,
              factor: float = 1.0):
        """A hit on the long key, or None: not past the gate, under an allowlist ``raise``
        entry (``factor`` > 1: the model has no raised thresholds to apply), below the
        threshold, or outside its leaf's support."""
        if factor > 1.0 or not judged(scope, f):
            return None
        self.judged += 1
        x = vectorize(scope, f)
        p = self.predict_proba_one(x)[True]
        if p < self.threshold:
            return None
        path, _ = M.leaf_path(self.tree, x)
        out = M.outside_box(self.bundle.get("support") or {}, path, x, inputs=INPUTS)
        if out:
            self.abstained += 1
            return None
        sev = "high" if p >= 0.99 else "medium"
        return (DETECTOR_ID, sev, round(p, 4), partial(self._reasons, scope, x, p))

    def _reasons(self, scope: str, x: dict, p: float) -> list[str]:
        """The split tests on the key's path in words and natural units (a feature tested
        twice once, with its tightest bound), the leaf's training mass, the probability."""
        tests: dict[str, tuple[int, float]] = {}
        node = getattr(self.tree, "_root", None)
        while node is not None and getattr(node, "children", None):
            i = node.branch_no(x)
            feat, thr = getattr(node, "feature", None), getattr(node, "threshold", None)
            if feat is not None and thr is not None and not feat.startswith("scope_"):
                tests[feat] = (i, thr)  # deeper tests on a feature are tighter
            node = node.children[i]
        out: list[str] = []
        for feat, (i, thr) in list(tests.items())[:4]:
            v, t = _natural(feat, x.get(feat, 0.0)), _natural(feat, thr)
            if feat in DERIVED:
                words = f"{DERIVED[feat].split(' (')[0]} {catalog.rounded(feat, v)}"
            else:
                words = catalog.in_words(feat, v)
            side = "above" if i else "at most"
            out.append(f"model-long: {words} ({side} {catalog.rounded(feat, t)}, learned)")
        stats = getattr(node, "stats", None) or {}
        out.append(f"model-long: leaf learned from {stats.get(True, 0.0):.0f} tunnel / "
                   f"{stats.get(False, 0.0):.0f} benign (weighted) long-horizon keys")
        out.append(f"model-long: P(tunnel) {p:.3f} >= {self.threshold} (smoothed)")
        return out


def detector_for(settings) -> LongModel | None:
    """The long-horizon model the settings ask for: ``Settings.long_model``, else the shipped
    file if present (None, logged, when there is none: the long-horizon rules still run)."""
    path = getattr(settings, "long_model", None)
    if path is None:
        if not DEFAULT_LONG_MODEL.exists():
            log.info("%s: no long-horizon model; long-horizon rules only", DEFAULT_LONG_MODEL)
            return None
        try:
            bundle, meta = load(DEFAULT_LONG_MODEL)
        except M.ModelError as e:
            log.error("%s; long-horizon rules only", e)
            return None
    else:
        bundle, meta = load(path)
    return LongModel(bundle, meta)
