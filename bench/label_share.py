"""Where ``new_label_share`` stands for each busy domain of some captures (docs/detection.md,
"Search-list expansion"): the rule ``unique-subdomain-volume`` asks ``>= 0.5``.

    DNSGUARD_PURE=1 python bench/label_share.py ../shared/corpus/*.pcap* CAPTURE...

Replays each capture with rules alone and, for every domain key whose window reaches 100
distinct names, prints its deepest shared zone, then ``new_label_share`` when the window
first has 100 names and the lowest and highest value later (with the other clauses'
features at that first point). Interpreted only (``DNSGUARD_PURE=1``): it wraps the window
feature function to see every evaluation. Hashes are salted per process, so collisions in
the label map differ a little between runs.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

if os.environ.get("DNSGUARD_PURE") != "1":
    sys.exit("run with DNSGUARD_PURE=1 (the probe wraps an interpreted function)")

import dnsguard.features.window as win  # noqa: E402
from dnsguard.cli import main  # noqa: E402

_seen: dict[bytes, dict] = {}
_features = win.features


def _probe(st, scope):
    f = _features(st, scope)
    if scope == "domain" and f["distinct_names"] >= 100:
        r = _seen.setdefault(b".".join(st.suffix or ()), {"first": None, "lo": 9.0, "hi": 0.0})
        v = f["new_label_share"]
        if r["first"] is None:
            r["first"] = {k: round(f[k], 2) for k in (
                "new_label_share", "distinct_names", "mean_sub_len", "carrier_share",
                "encoded_share", "rare_qtype_share")}
        r["lo"], r["hi"] = min(r["lo"], v), max(r["hi"], v)
    return f


win.features = _probe
for path in sys.argv[1:]:
    _seen.clear()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(["replay", "-q", "--no-model", path])
    for zone, r in _seen.items():
        print(os.path.basename(path), zone.decode(errors="replace"), r["first"],
              f"lowest {r['lo']:.2f} highest {r['hi']:.2f}")
