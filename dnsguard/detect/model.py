"""The online model: a Hoeffding tree on the pipeline's per-key window features, with a
Half-Space-Trees anomaly score beside it. See docs/model.md for what it sees, how it is trained,
how it keeps learning and how a model file is checked before it is loaded.

A model is two files: ``MODEL`` (a pickle of river objects: code, not data) and ``MODEL.json``
(metadata: the feature list, library versions, training data digest, the SHA-256 of ``MODEL``).
:func:`load` refuses a file that others can write, whose digest does not match, or that was
built for other features.

Example:
    >>> x = vectorize("domain", {"queries": 3, "encoded_share": 0.5})
    >>> x["queries"] == round(math.log1p(3), 6), x["encoded_share"], x["scope_domain"]
    (True, 0.5, 1.0)
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import math
import os
import pickle
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from dnsguard.detect.base import Detector
from dnsguard.features import catalog

log = logging.getLogger(__name__)

FORMAT = "dnsguard-model/1"
DETECTOR_ID = "model:hoeffding"
MODEL_SCOPES = ("domain", "client_domain", "client", "flow")
# Window features the shipped model was not trained with (added to the catalog after it):
# a retrain (docs/model.md) may take them in, and then drops them from here.
NOT_INPUTS: frozenset[str] = frozenset({"ident_share"})
# Every window feature of the model's scopes, in catalog order (missing in a scope → 0).
WINDOW_FEATURES = [n for n, f in catalog.FEATURES.items()
                   if any(s in MODEL_SCOPES for s in f.scopes) and n not in NOT_INPUTS]
# Heavy-tailed features enter as log1p(value): river's default (Gaussian) split estimator
# models each class's values with a normal distribution, which fits counts badly otherwise.
LOG_FEATURES = frozenset(n for n in WINDOW_FEATURES
                         if catalog.FEATURES[n].volume
                         or n in ("duration", "max_label", "down_per_response", "clients",
                                  "mean_sub_len"))
# Inputs the model derives from the window's features (not in the catalog: no rule reads
# them). A ratio the tree cannot form by axis-aligned splits, independent of the alphabet a
# channel writes in (issue #12 point 3).
DERIVED = {
    "new_data_per_name": "octets of information per distinct name (new_data / "
                         "distinct_names): what each new name carries, whatever its alphabet",
}
SCOPE_FEATURES = [f"scope_{s}" for s in MODEL_SCOPES]
INPUTS = WINDOW_FEATURES + list(DERIVED) + SCOPE_FEATURES

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "data" / "model" / "model.pkl"


class ModelError(Exception):
    """A model file that cannot or must not be loaded; the message says what to do."""


def vectorize(scope: str, f: dict) -> dict[str, float]:
    """The model's input for one key and window: every input present, log1p on counts."""
    x: dict[str, float] = {}
    for n in WINDOW_FEATURES:
        v = float(f.get(n, 0.0) or 0.0)
        x[n] = round(math.log1p(v), 6) if n in LOG_FEATURES and v > 0 else v
    names = float(f.get("distinct_names", 0.0) or 0.0)
    per = float(f.get("new_data", 0.0) or 0.0) / names if names > 0 else 0.0
    x["new_data_per_name"] = round(math.log1p(per), 6) if per > 0 else 0.0
    for s in MODEL_SCOPES:
        x[f"scope_{s}"] = 1.0 if s == scope else 0.0
    return x


# The evidence gate: the model may alert on a window only if it shows data moving in DNS.
MIN_SUB_LEN = 24.0  # mean octets left of the registered domain per query
MIN_DOWN = 100.0  # answer rdata octets per response
MIN_STRONG_NAMES = 8  # distinct names with data-shaped names or rare types …
MIN_STRONG_SHARE = 0.5  # … in at least half the queries (a mail server's few DANE TLSA
# lookups among its MX names are not a channel; a tunnel's zone is nearly all data names)
MIN_WEAK_NAMES = 40  # distinct names with only long subdomains or big answers …
MIN_WEAK_DISTINCT_RATIO = 0.3  # … most of them new (a resolver leg doubles each: ≥ 0.5)
MAX_STRUCTURED_SHARE = 0.5  # … and most of them not service names, UUIDs or addresses
MIN_NEW_DATA = 1500.0  # octets of information in new names: a channel with short labels …
MIN_NEW_NAMES = 40  # … over this many distinct names …
MIN_NEW_LABEL_SHARE = 0.9  # … and of names with no data shape, new labels in most new names
MIN_ENCODED_DOMAIN_SHARE = 0.2  # client keys: registered domains whose label is data …
MIN_ENCODED_DOMAINS = MIN_STRONG_NAMES  # … at least this many (the domain scope's bar): a
# home client's three Chrome intranet probes completed with an unknown search suffix
# (`<random letters>.lan`) are 3 of its 8 registered domains, not a channel
MIN_CLIENT_ENCODED_NAMES = 20  # client keys: encoded names spread over many domains
MIN_FLOW_PACKETS = 40  # flow keys: sustained non-DNS traffic on a DNS port (the rule's bar) …
MIN_FLOW_BYTES = 4000  # … moving real volume, not an application's 4-packet handshake


def carries_data(scope: str, f: dict) -> bool:
    """Does the window show data moving in DNS? A tunnel must keep asking *new* names to move
    new data (a cache answers repeats), so the evidence is counted in distinct names:

    * data-shaped names (encoded labels, raw octets) or rare query types in at least
      ``MIN_STRONG_SHARE`` of the queries, over at least ``MIN_STRONG_NAMES`` distinct names —
      the rules' own bar (a UUID per name, a DKIM selector or an AD GUID under a service
      label is an identifier, not encoded data: dnsguard/features/payload.py);
    * names of no data shape only on a ``domain`` key whose new names keep bringing labels
      never seen in the window (``new_label_share`` >= ``MIN_NEW_LABEL_SHARE``: a channel's
      fresh data, not search-list expansions or service names recombining a few labels),
      and then either by volume — ``MIN_NEW_DATA`` octets of information in
      ``MIN_NEW_NAMES`` new names, whatever the alphabet (short labels, word lists, a
      legitimate-looking prefix) — or by weaker signs (long subdomains, big answers) over
      ``MIN_WEAK_NAMES`` distinct names that are mostly new (``distinct_ratio``); in both
      cases mostly not identifiers (service names, UUIDs, hex digests, embedded addresses);
    * for a client key, data in the registered domains themselves (encoded labels, in at
      least ``MIN_ENCODED_DOMAINS`` of them), or encoded names spread over many domains
      (not volume alone: every busy client has it);
    * for a flow (non-DNS traffic on a DNS port), sustained evidence: ``MIN_FLOW_PACKETS``
      packets and ``MIN_FLOW_BYTES`` octets, not one application's short exchange.

    >>> carries_data("flow", {"packets": 4, "bytes_up": 700, "bytes_down": 600})
    False
    >>> carries_data("domain", {"distinct_names": 12, "encoded_share": 0.9})
    True
    >>> channel = {"distinct_names": 60, "new_data": 2000, "new_label_share": 0.98}
    >>> carries_data("domain", channel), carries_data("client_domain", channel)
    (True, False)
    >>> carries_data("domain", dict(channel, new_label_share=0.3))  # a search list
    False
    >>> carries_data("domain", {"distinct_names": 9, "rare_qtype_share": 0.1})  # DANE TLSA
    False
    >>> carries_data("domain", dict(channel, digest_share=1.0))  # a hex digest per name
    False
    >>> home = {"distinct_domains": 8, "encoded_domains": 3, "encoded_domain_share": 0.375}
    >>> carries_data("client", home)  # three random intranet probes under `.lan`
    False
    >>> carries_data("client", dict(home, encoded_domains=8, encoded_domain_share=0.5))
    True
    """
    g = f.get
    if scope == "flow":
        return (g("packets", 0) >= MIN_FLOW_PACKETS
                and g("bytes_up", 0) + g("bytes_down", 0) >= MIN_FLOW_BYTES)
    names = g("distinct_names", 0)
    if scope == "client":
        return ((g("encoded_domain_share", 0) >= MIN_ENCODED_DOMAIN_SHARE
                 and g("encoded_domains", 0) >= MIN_ENCODED_DOMAINS)
                or (g("encoded_share", 0) >= MIN_ENCODED_DOMAIN_SHARE
                    and g("encoded_queries", 0) >= MIN_CLIENT_ENCODED_NAMES))
    strong = g("encoded_share", 0) + g("non_ldh_share", 0) + g("rare_qtype_share", 0)
    if strong >= MIN_STRONG_SHARE and names >= MIN_STRONG_NAMES:
        return True
    if scope != "domain" or g("new_label_share", 0) < MIN_NEW_LABEL_SHARE:
        # Names of no data shape: judged only on a domain key whose new names keep
        # bringing labels never seen in the window (a channel's fresh data), not
        # search-list expansions or service names recombining a few labels.
        return False
    # Identifiers are not data (a hex digest per ad frame or per HashBL lookup, a UUID per
    # request, an address per host): mostly-identifier windows are not judged on volume or
    # weak signs either.
    structured = (g("service_share", 0) + g("uuid_share", 0) + g("addr_share", 0)
                  + g("digest_share", 0))
    if structured >= MAX_STRUCTURED_SHARE:
        return False
    if g("new_data", 0) >= MIN_NEW_DATA and names >= MIN_NEW_NAMES:
        return True
    weak = g("mean_sub_len", 0) >= MIN_SUB_LEN or g("down_per_response", 0) >= MIN_DOWN
    return bool(weak and names >= MIN_WEAK_NAMES
                and g("distinct_ratio", 0) >= MIN_WEAK_DISTINCT_RATIO)


MIN_CLIENT_DOMAINS = 8  # client keys: registered domains before the model judges one


def judged(scope: str, x: dict, queries: int, min_queries: int = 4,
           min_client_domains: int = MIN_CLIENT_DOMAINS) -> bool:
    """Would :meth:`ModelDetector.score` ask the tree about this input vector (``x``, as
    :func:`vectorize` made it)? Training fits the tree on these windows only: the tree
    decides nowhere else, and windows with too little evidence to judge (a tunnel's first
    few names) taught it "any new name is a tunnel" (docs/model.md, "Training")."""
    if queries < min_queries:
        return False
    f = {k: _natural(k, v) for k, v in x.items()}
    if scope == "client" and f.get("distinct_domains", 0) < min_client_domains:
        return False
    return carries_data(scope, f)


def _natural(name: str, v: float) -> float:
    return math.expm1(v) if name in LOG_FEATURES or name in DERIVED else v


# --- knowing what it does not know ----------------------------------------------------------
# A Hoeffding leaf that learnt only tunnel windows answers P(tunnel) = 1.000 for *any* window
# that reaches it, including benign kinds it never saw (ISP host names with addresses, AD
# GUID names: issue #12). So each leaf keeps the box (per-input min and max) of the tunnel
# windows it was trained on, and the model abstains on a window outside that box on more than
# ``SUPPORT_MAX_OUTSIDE`` inputs: the leaf has no evidence about windows of that kind.
# Chosen by measurement (bench/loso.py, docs/model.md "Calibration").
SUPPORT_MARGIN = 0.05  # in input units (log1p for counts), plus 10 % of the box's width
SUPPORT_MAX_OUTSIDE = 0


def leaf_path(tree, x: dict) -> tuple[tuple[int, ...], object]:
    """The branch numbers from the root to ``x``'s leaf, and the leaf."""
    path: list[int] = []
    node = getattr(tree, "_root", None)
    while node is not None and getattr(node, "children", None):
        try:
            i = node.branch_no(x)
        except (KeyError, TypeError):
            break
        path.append(i)
        node = node.children[i]
    return tuple(path), node


def support_boxes(tree, data, inputs: list[str] = INPUTS) -> dict:
    """Per leaf (its path) and class: the box of the training inputs that reach it, and the
    weight. ``data`` holds (x, y, w); ``inputs``: the model's input list (the long-horizon
    model has its own: detect.longmodel)."""
    boxes: dict = {}
    for x, y, w in data:
        path, _ = leaf_path(tree, x)
        b = boxes.setdefault(path, {})
        v = [x[n] for n in inputs]
        c = b.get(y)
        if c is None:
            b[y] = [list(v), list(v), w]
            continue
        lo, hi = c[0], c[1]
        for i, a in enumerate(v):
            if a < lo[i]:
                lo[i] = a
            elif a > hi[i]:
                hi[i] = a
        c[2] += w
    return boxes


def outside_box(boxes: dict, path: tuple, x: dict, cls: bool = True,
                inputs: list[str] = INPUTS) -> list[str] | None:
    """Inputs of ``x`` outside the ``cls`` box of its leaf (or of the nearest ancestor with
    one, for leaves grown online); None when no box is known (no support data)."""
    if not boxes:
        return None
    p = path
    while True:
        b = boxes.get(p)
        if b is not None and cls in b:
            break
        if not p:
            return None
        p = p[:-1]
    lo, hi, _w = b[cls]
    out = []
    for i, n in enumerate(inputs):
        v = x.get(n, 0.0)
        m = SUPPORT_MARGIN + 0.1 * (hi[i] - lo[i])
        if v < lo[i] - m or v > hi[i] + m:
            out.append(n)
    return out


# --- the model bundle ---------------------------------------------------------------------
def new_bundle(kind: str = "hoeffding", seed: int = 7, **params) -> dict:
    """Fresh, untrained river objects: the classifier and the anomaly scorer."""
    from river import anomaly, preprocessing, tree

    p = {"grace_period": 50, "delta": 1e-5, "max_depth": 8}
    p.update(params)
    if kind == "hoeffding":
        clf = tree.HoeffdingTreeClassifier(**p)
    elif kind == "adaptive":
        clf = tree.HoeffdingAdaptiveTreeClassifier(seed=seed, **p)
    else:
        raise ValueError(f"unknown classifier kind {kind!r} (hoeffding or adaptive)")
    return {"tree": clf, "scaler": preprocessing.MinMaxScaler(),
            "hst": anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=seed),
            "kind": kind, "params": p}


def versions() -> dict:
    import river

    from dnsguard import __version__
    return {"python": platform.python_version(), "river": river.__version__,
            "dnsguard": __version__}


# --- files: save atomically, load only what is safe --------------------------------------
def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Temp file in the same directory, fsync, rename; then fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def save(bundle: dict, meta: dict, path: str | Path) -> dict:
    """Write ``path`` (pickle) and ``path.json`` (metadata with its SHA-256), each atomically
    (the pickle first: a crash between the two renames leaves a digest mismatch, which
    :func:`load` reports, never a silently wrong model)."""
    path = Path(path)
    blob = pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL)
    meta = dict(meta)
    meta.update({"format": FORMAT, "features": INPUTS, "log_features": sorted(LOG_FEATURES),
                 "classifier": type(bundle["tree"]).__name__, "params": bundle.get("params", {}),
                 "versions": versions(), "sha256": hashlib.sha256(blob).hexdigest(),
                 "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    _atomic_write(path, blob)
    _atomic_write(meta_path(path), (json.dumps(meta, indent=2) + "\n").encode())
    return meta


def _private_group(st: os.stat_result) -> bool:
    """Whether the file's group is its owner's alone: the owner's primary group, no other
    member, no other user's primary group. Systems with user-private groups and umask 002
    (Ubuntu, Fedora: login.defs USERGROUPS_ENAB) create every file group-writable; write
    access is then the owner's only, and refusing it would turn a fresh install into a
    rules-only sensor."""
    import grp
    import pwd

    try:
        owner = pwd.getpwuid(st.st_uid)
        group = grp.getgrgid(st.st_gid)
    except KeyError:
        return False
    if owner.pw_gid != st.st_gid or set(group.gr_mem) - {owner.pw_name}:
        return False
    return all(u.pw_gid != st.st_gid or u.pw_uid == st.st_uid for u in pwd.getpwall())


def _check_file(p: Path) -> None:
    try:
        st = os.stat(p)
    except OSError as e:
        raise ModelError(f"{p}: cannot read model file: {e.strerror}") from None
    if st.st_mode & 0o002 or (st.st_mode & 0o020 and not _private_group(st)):
        raise ModelError(
            f"{p}: refusing to load: the file is writable by group or others (mode "
            f"{st.st_mode & 0o777:o}); a model file is a pickle and runs code when loaded. "
            f"Check where it came from, then 'chmod go-w {p}'.")
    uid = os.geteuid() if hasattr(os, "geteuid") else st.st_uid
    if st.st_uid not in (uid, 0):
        raise ModelError(
            f"{p}: refusing to load: owned by uid {st.st_uid}, not by this user ({uid}) or "
            f"root; a model file is a pickle and runs code when loaded. Check where it came "
            f"from, then 'chown' it.")


def load(path: str | Path) -> tuple[dict, dict]:
    """(bundle, metadata) of a model file, after the safety and compatibility checks."""
    path = Path(path)
    mp = meta_path(path)
    _check_file(path)
    _check_file(mp)
    try:
        meta = json.loads(mp.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{mp}: unreadable model metadata ({e}); rebuild the model with "
                         f"'dnsguard train' (docs/model.md)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{mp}: not a {FORMAT} metadata file; rebuild the model with "
                         f"'dnsguard train' (docs/model.md)")
    feats = meta.get("features")
    if feats != INPUTS:
        have = set(feats or [])
        missing = [n for n in INPUTS if n not in have]
        extra = [n for n in (feats or []) if n not in INPUTS]
        raise ModelError(
            f"{path}: model was built for other features (missing: {missing or 'none'}; "
            f"unknown: {extra or 'none'}{'; same names, other order' if not missing and not extra else ''}); "  # noqa: E501
            f"retrain it with this version of dnsguard: see docs/model.md, 'dnsguard train'")
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != meta.get("sha256"):
        raise ModelError(
            f"{path}: SHA-256 {digest} does not match the digest recorded in {mp.name} "
            f"({meta.get('sha256')}): the file was changed or half-written; refusing to "
            f"unpickle it. Restore it, or rebuild it with 'dnsguard train' (docs/model.md).")
    vers = meta.get("versions", {})
    import river
    if vers.get("river") and vers["river"] != river.__version__:
        log.warning("%s: built with river %s, running river %s", path, vers["river"],
                    river.__version__)
    try:
        bundle = pickle.loads(blob)  # noqa: S301 - checked above: owner, mode, digest
    except Exception as e:  # a digest that matches garbage: both files were replaced
        raise ModelError(f"{path}: cannot unpickle the model ({type(e).__name__}: {e}); "
                         f"restore it, or rebuild it with 'dnsguard train'") from None
    if not isinstance(bundle, dict) or not {"tree", "scaler", "hst"} <= bundle.keys():
        raise ModelError(f"{path}: not a dnsguard model (no classifier inside); restore it, "
                         f"or rebuild it with 'dnsguard train'")
    return bundle, meta


# --- analyst feedback -----------------------------------------------------------------------
def _related(a: str, b: str) -> bool:
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class Feedback:
    """Analyst verdicts from a JSON-lines file; the last line for a target wins."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self.domains: dict[str, str] = {}
        self.addresses: dict[str, str] = {}
        self.where: dict[str, str] = {}
        self._cache: dict[str, str | None] = {}
        if self.path is not None:
            self.reload()

    def __len__(self) -> int:
        return len(self.domains) + len(self.addresses)

    def reload(self) -> bool:
        """Re-read the file. Bad lines are skipped (logged with FILE:LINE). If the file cannot
        be read, has vanished, or has lines but not one valid, the verdicts already loaded
        are kept (logged): a broken file never erases good feedback. True if (re)loaded."""
        from dnsguard.feedback import load_feedback

        domains: dict[str, str] = {}
        addresses: dict[str, str] = {}
        where: dict[str, str] = {}
        if self.path is not None:
            got = load_feedback(self.path)
            broken = got.error or (got.bad and not got.records) or (got.missing and len(self))
            if broken:
                why = (got.error or ("file missing" if got.missing else
                                     f"no valid line, {got.bad} bad"))
                if len(self):
                    log.error("%s: feedback not reloaded (%s): keeping the %d verdicts "
                              "loaded before", self.path, why, len(self))
                    return False
                log.error("%s: no feedback loaded (%s)", self.path, why)
            for rec in got.records:
                t = rec["target"]
                (addresses if _is_ip(t) else domains)[t] = rec["label"]
                where[t] = f"{self.path}:{rec['line']}"
        self.domains, self.addresses, self.where = domains, addresses, where
        self._cache = {}
        return True

    def for_domain(self, rd: str) -> tuple[str, str] | None:
        """(label, target) of the verdict covering registered domain ``rd``."""
        if not self.domains:
            return None
        c = self._cache.get(rd, False)
        if c is False:
            c = None
            best = -1
            for t in self.domains:
                if _related(rd, t) and len(t) > best:
                    c, best = t, len(t)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[rd] = c
        return (self.domains[c], c) if c is not None else None

    def for_address(self, addr: str) -> tuple[str, str] | None:
        lab = self.addresses.get(addr)
        return (lab, addr) if lab is not None else None


# --- the detector -------------------------------------------------------------------------
def _ip(b) -> str:
    from dnsguard.decode.packet import ip_text
    return ip_text(b) if b else ""


class ModelDetector(Detector):
    """The shipped model as a :class:`~dnsguard.detect.base.Detector` (docs/model.md)."""

    detector_id = DETECTOR_ID
    description = ("A Hoeffding tree trained on real tunnels and benign traffic judges the "
                   "key's window tunnel-like (its P(tunnel) at or above the threshold), "
                   "after the window showed data moving in DNS.")
    mitre = ("T1071.004",)

    def __init__(self, bundle: dict, meta: dict, *, feedback: Feedback | None = None,
                 state: Path | None = None, learn_from_rules: bool = False,
                 checkpoint_every: float = 300.0, threshold: float | None = None,
                 min_queries: int | None = None, anomaly_alerts: bool = False,
                 fork=None) -> None:
        self._fork = fork
        self.tree = bundle["tree"]
        self.scaler = bundle["scaler"]
        self.hst = bundle["hst"]
        self.bundle = bundle
        self.meta = meta
        self.threshold = threshold if threshold is not None else meta.get("threshold", 0.9)
        self.min_queries = (min_queries if min_queries is not None
                            else meta.get("min_queries", 4))
        self.anomaly_threshold = meta.get("anomaly_threshold", 0.9)
        self.min_client_domains = meta.get("min_client_domains", MIN_CLIENT_DOMAINS)
        self.support_max_outside = meta.get("support_max_outside", SUPPORT_MAX_OUTSIDE)
        self.abstained = 0  # windows over the threshold the leaf had no evidence for
        self.anomaly_alerts = anomaly_alerts
        self.feedback = feedback if feedback is not None else Feedback()
        self.state = state
        self.learn_from_rules = learn_from_rules
        self.checkpoint_every = checkpoint_every
        self._next_checkpoint = time.monotonic() + checkpoint_every
        self.learned = meta.get("learned_online", 0)
        self.dirty = False
        self._factor = 1.0
        self._label: tuple[str, str] | None = None
        # The evaluation just observed and scored, for annotate(): whether an alert from it
        # shows the model's view (the rules hit, or the model fired), its input, its P.
        self._show = False
        self._x: dict | None = None
        self._p: float | None = None

    # -- verdict source lookups --
    def _feedback(self, scope: str, ident: tuple) -> tuple[str, str] | None:
        fb = self.feedback
        if not len(fb):
            return None
        kind, key = ident
        if kind == "d":
            return fb.for_domain(key)
        if kind == "c":
            return fb.for_address(_ip(key))
        if kind == "f":
            return fb.for_address(_ip(key[0])) or fb.for_address(_ip(key[1]))
        return None

    def _own(self) -> None:
        """Copy-on-write: detectors built from one cached file share its (read-only) objects
        until one of them learns; then it takes a private copy."""
        fork = self._fork
        if fork is not None:
            self._fork = None
            b = fork()
            self.bundle, self.tree, self.scaler, self.hst = b, b["tree"], b["scaler"], b["hst"]

    def learn_one(self, x: dict, y: bool, w: float = 1.0) -> None:
        if self._fork is not None:
            self._own()
        self.tree.learn_one(x, y, w=w)
        boxes = self.bundle.get("support")
        if boxes is not None:
            # What it learns online (an analyst's verdict) widens its leaf's box too.
            path, _ = leaf_path(self.tree, x)
            nb = support_boxes(self.tree, [(x, y, w)])[path][y]
            c = boxes.setdefault(path, {}).get(y)
            if c is None:
                boxes[path][y] = nb
            else:
                c[0] = [min(a, b) for a, b in zip(c[0], nb[0], strict=True)]
                c[1] = [max(a, b) for a, b in zip(c[1], nb[1], strict=True)]
                c[2] += w
        if not y:
            self.scaler.learn_one(x)
            self.hst.learn_one(self.scaler.transform_one(x))
        self.learned += 1
        self.dirty = True

    def anomaly(self, x: dict) -> float:
        return float(self.hst.score_one(self.scaler.transform_one(x)))

    def proba(self, x: dict) -> float:
        return float(self.tree.predict_proba_one(x).get(True, 0.0))

    def explain(self, x: dict, most: int = 3) -> list[str]:
        """Why the tree decided so, as an analyst reads it: the first ``most`` features
        tested on ``x``'s path from the root (the splits that separate the most), each once,
        in words with the value the tree learned (features/catalog.py), then how many
        windows its leaf learned from. Scope indicators are left out."""
        out: list[str] = []
        seen: set[str] = set()
        for feat, op, t, v in self._path(x):
            if feat in seen or len(seen) >= most or (feat not in catalog.FEATURES
                                                      and feat not in DERIVED):
                continue
            seen.add(feat)
            side = "above" if op == ">" else "at most"
            if feat in DERIVED:
                words = f"{catalog.rounded(feat, v)} bytes of information per distinct name"
            else:
                words = catalog.in_words(feat, v)
            out.append(f"model: {words} ({side} {catalog.rounded(feat, t)}, learned)")
        stats = self._leaf_stats(x)
        if stats:
            out.append(f"model: leaf learned from {stats.get(True, 0.0):.0f} tunnel / "
                       f"{stats.get(False, 0.0):.0f} benign (weighted) windows")
        return out

    def _path(self, x: dict) -> list[tuple[str, str, float, float]]:
        """(feature, '<=' or '>', threshold, value) of each split test on ``x``'s path from
        the root, in natural units."""
        out = []
        node = getattr(self.tree, "_root", None)
        while node is not None and getattr(node, "children", None):
            feat = getattr(node, "feature", None)
            thr = getattr(node, "threshold", None)
            try:
                i = node.branch_no(x)
            except (KeyError, TypeError):
                break
            if feat is not None and thr is not None:
                out.append((feat, "<=" if i == 0 else ">", _natural(feat, thr),
                            _natural(feat, x.get(feat, 0.0))))
            node = node.children[i]
        return out

    def _leaf_stats(self, x: dict) -> dict | None:
        node = getattr(self.tree, "_root", None)
        while node is not None and getattr(node, "children", None):
            try:
                node = node.children[node.branch_no(x)]
            except (KeyError, TypeError):
                return None
        stats = getattr(node, "stats", None)
        return stats if isinstance(stats, dict) and stats else None

    # -- pipeline hooks --
    def observe(self, scope: str, f: dict, ident: tuple, *, factor: float = 1.0,
                hits: list | None = None, ts: float = 0.0, client=None, server=None,
                domain=None) -> None:
        """Called before :meth:`score` with what the pipeline knows; learns from trusted
        verdicts (analyst feedback, allowlist entries, optionally high-severity rule hits)."""
        self._factor = factor
        self._label = None
        self._show = False
        self._x = self._p = None
        if scope not in MODEL_SCOPES:
            return
        x = None
        lab = self._feedback(scope, ident)
        if lab is not None:
            self._label = lab
            x = vectorize(scope, f)
            self.learn_one(x, lab[0] == "tunnel")
        elif factor > 1.0:
            x = vectorize(scope, f)
            self.learn_one(x, False)
        elif self.learn_from_rules and hits and any(h[1] == "high" for h in hits):
            x = vectorize(scope, f)
            self.learn_one(x, True)
        # An alert the rules raise shows the model's view too (annotate(): computed only
        # for an alert the policy lets through).
        self._show = bool(hits)
        self._x = x
        if self.state is not None and self.dirty and time.monotonic() >= self._next_checkpoint:
            self.checkpoint()

    def score(self, scope: str, f: dict, ident: tuple):
        if scope not in MODEL_SCOPES:
            return None
        lab = self._label
        if lab is not None:
            self._label = None
            if lab[0] == "benign":
                return None
            src = self.feedback.where.get(lab[1], "feedback")
            return (DETECTOR_ID, "high", 1.0,
                    [f"analyst verdict: {lab[1]} is a tunnel ({src})"])
        if self._factor > 1.0 or f.get("queries", 0) < self.min_queries:
            return None
        if not carries_data(scope, f):
            return None
        if scope == "client" and f.get("distinct_domains", 0) < self.min_client_domains:
            # The client scope is for tunnels with no fixed domain (data in the registered
            # domain itself): its evidence is many domains. A tunnel under one domain is the
            # domain scope's to report (an alert naming only the client would not name it).
            return None
        x = self._x = vectorize(scope, f)
        p = self._p = self.proba(x)
        a = None
        if p >= self.threshold and self.support_max_outside is not None:
            out = outside_box(self.bundle.get("support") or {}, leaf_path(self.tree, x)[0], x)
            if out is not None and len(out) > self.support_max_outside:
                # The leaf learnt from tunnel windows, but none like this one: abstain.
                self.abstained += 1
                return None
        if p < self.threshold:
            if not self.anomaly_alerts:
                return None
            a = self.anomaly(x)
            if a < self.anomaly_threshold:
                return None
        self._show = True
        sev = "high" if p >= 0.99 else "medium"
        # The texts and the anomaly score (HST) only for an alert the policy raises.
        return (DETECTOR_ID, sev, round(p, 4), partial(self._reasons, x, p, a))

    def _reasons(self, x: dict, p: float, a: float | None) -> list[str]:
        reasons = self.explain(x)
        reasons.append(f"model: P(tunnel) {p:.3f} >= {self.threshold}")
        if a is None:
            a = self.anomaly(x)
        if a >= self.anomaly_threshold:
            reasons.append(f"model: anomaly score {a:.3f} >= {self.anomaly_threshold} "
                           f"(unlike the benign traffic it learned)")
        return reasons

    def annotate(self, scope: str, f: dict, ident: tuple, hits: list) -> None:
        """An alert from the evaluation just scored shows the model's P(tunnel) and anomaly
        score in its ``stats`` when the rules hit or the model fired (not for an analyst's
        verdict alone)."""
        if not self._show or scope not in MODEL_SCOPES:
            return
        x = self._x if self._x is not None else vectorize(scope, f)
        p = self._p if self._p is not None else self.proba(x)
        f["model_p"] = round(p, 4)
        f["model_anomaly"] = round(self.anomaly(x), 4)

    def reload_feedback(self) -> None:
        """Re-read the feedback file (the daemon calls this on SIGHUP)."""
        self.feedback.reload()

    def checkpoint(self) -> None:
        """Save the learned state atomically to ``state`` (no-op without one)."""
        self._next_checkpoint = time.monotonic() + self.checkpoint_every
        if self.state is None or not self.dirty:
            return
        meta = {k: v for k, v in self.meta.items()
                if k not in ("features", "sha256", "versions", "format", "saved")}
        meta["learned_online"] = self.learned
        meta["base_sha256"] = self.meta.get("base_sha256", self.meta.get("sha256"))
        try:
            save(self.bundle, meta, self.state)
            self.dirty = False
        except OSError as e:
            log.error("%s: cannot checkpoint the model: %s", self.state, e)

    def close(self) -> None:
        self.checkpoint()


_CACHE: dict[Path, list] = {}  # path → [signature, verified bytes, metadata, shared bundle]


def _load_cached(path: Path):
    """(bundle, metadata, fork): :func:`load` once per unchanged file. The caller that
    loads the file gets that bundle as its own (fork None: a replay's one detector learns
    in place, with no copy); later callers share one copy unpickled from the verified
    bytes, and ``fork()`` unpickles a private one when a detector first learns (eval builds
    one pipeline per capture; each must start from the file's state, and unpickling costs
    ~0.2 s, ~0.3 G instructions for the shipped model)."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    sig = (st.st_mtime_ns, st.st_size, st.st_mode, st.st_uid) if st else None
    c = _CACHE.get(path)
    if c is None or c[0] != sig:
        bundle, meta = load(path)
        blob = pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL)
        if sig is not None:
            _CACHE.clear()
            _CACHE[path] = [sig, blob, meta, None]
        return bundle, dict(meta), None
    blob = c[1]
    if c[3] is None:
        c[3] = pickle.loads(blob)  # noqa: S301 - verified bytes
    return c[3], dict(c[2]), lambda: pickle.loads(blob)  # noqa: S301 - verified bytes


def detector_for(settings) -> ModelDetector | None:
    """The detector the settings ask for: resumed from ``model_state`` when that exists, else
    ``model``, else the shipped default (None, with a warning, if that is missing)."""
    path = settings.model
    state = settings.model_state
    bundle = meta = fork = None
    if state is not None and Path(state).exists():
        try:
            bundle, meta = load(state)
            log.info("%s: resumed the model (%s online updates)", state,
                     meta.get("learned_online", 0))
        except ModelError as e:
            log.error("%s; starting from the base model instead", e)
    if bundle is None:
        if path is None:
            if not DEFAULT_MODEL.exists():
                log.warning("%s: no shipped model; running rules only", DEFAULT_MODEL)
                return None
            try:
                bundle, meta, fork = _load_cached(DEFAULT_MODEL)
            except ModelError as e:
                # A configured model that cannot be loaded is an error (the caller reports
                # it); the shipped one out of step with this code (features changed, not yet
                # retrained) must not stop the sensor: say so loudly, run the rules.
                log.error("%s; running rules only", e)
                return None
        else:
            bundle, meta, fork = _load_cached(Path(path))
    fb = Feedback(settings.feedback) if settings.feedback else Feedback()
    return ModelDetector(bundle, meta, feedback=fb,
                         state=Path(state) if state is not None else None,
                         learn_from_rules=settings.learn_from_rules,
                         checkpoint_every=settings.checkpoint_every, fork=fork)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use 'dnsguard train' / 'dnsguard replay --model'")
