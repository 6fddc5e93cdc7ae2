"""grafana/dnsguard-dashboard.json: importable as is (a datasource variable, no ``__inputs``
to fill in), and every PromQL expression uses only metrics the exporter really serves — found
by starting the exporter of :mod:`dnsguard.metrics` on 127.0.0.1 and scraping it over HTTP —
with suffixes that fit each family's type (``_total`` for counters, ``_bucket``/``_sum``/
``_count`` for histograms), and groups only by labels those metrics carry."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "grafana" / "dnsguard-dashboard.json"
# Labels Prometheus adds to every scraped series (target labels), and histograms' ``le``.
TARGET_LABELS = {"instance", "job"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                              "_created"),
            "summary": ("_sum", "_count", "_created", ""), "gauge": ("",), "info": ("_info",),
            "unknown": ("",), "gaugehistogram": ("_bucket", "_gsum", "_gcount")}


def metric_names(expr: str) -> list[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (inside ``{}`` or ``by (...)``), strings or ranges."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    out = []
    for m in re.finditer(r"(?<![\w$.])[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        tok = m.group(0)
        if e[m.end():].lstrip().startswith("(") or tok.lower() in KEYWORDS:
            continue
        out.append(tok)
    return out


def grouping_labels(expr: str) -> set[str]:
    labels: set[str] = set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    return labels


def test_metric_names_parser():
    e = ('histogram_quantile(0.99, sum by (le) (rate(dnsguard_x_bucket{a="b(c)", d=~"e"}'
         '[$__rate_interval]))) / time() - max(up) * 60 and on(job) foo_total')
    assert metric_names(e) == ["dnsguard_x_bucket", "up", "foo_total"]
    assert grouping_labels(e) == {"le", "job"}


@pytest.fixture(scope="module")
def served():
    """{family name: (type, sample names, label names)} scraped from a running exporter."""
    from dnsguard import __version__
    from dnsguard.detect.rules import load_dir
    from dnsguard.metrics import Metrics
    from dnsguard.pipeline import Pipeline
    from dnsguard.settings import Settings

    class Iface:
        name, kind, frames, kernel_packets, kernel_drops, kernel_freezes = (
            "eth0", "ring", 3, 4, 1, 0)

    s = Settings(rules=ROOT / "rules")
    s.use_model = False
    m = Metrics(version=__version__)
    pipe = Pipeline(s, load_dir(s.rules), m.count_alert)
    m.pipeline = pipe
    m.interfaces = [Iface()]
    # One of each kind of observation, so labelled families have samples to show labels.
    m.count_alert({"severity": "low", "detectors": ["series:mad", "series:ks"]})
    m.processing.observe(0.001)
    m.model_score.observe(0.5)
    pipe.malformed["truncated"] += 1
    host, port = m.serve("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        m.close()
    out = {}
    for f in text_string_to_metric_families(text):
        names = {smp.name for smp in f.samples}
        names |= {f.name + suf for suf in SUFFIXES.get(f.type, ("",))}
        labels = {k for smp in f.samples for k in smp.labels}
        out[f.name] = (f.type, names, labels)
    assert "dnsguard_packets" in out and "dnsguard_alerts" in out
    return out


def _exprs(dash: dict) -> list[tuple[str, str]]:
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
        for sub in p.get("panels", []):
            for t in sub.get("targets", []):
                out.append((sub["title"], t["expr"]))
    return out


def test_dashboard_is_importable_as_is():
    dash = json.loads(DASHBOARD.read_text())
    assert "__inputs" not in dash  # nothing to fill in at import
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip()
    assert len(_exprs(dash)) >= 20


def test_every_expression_uses_only_served_metrics(served):
    dash = json.loads(DASHBOARD.read_text())
    sample_names = {n: fam for fam, (_, names, _) in served.items() for n in names}
    exprs = _exprs(dash)
    for v in dash["templating"]["list"]:
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query", "")
        if isinstance(q, str) and q.startswith("label_values("):
            exprs.append((v["name"], q[len("label_values("):].split(",")[0]))
    used = set()
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, (title, expr)
        for n in names:
            assert n in sample_names, f"{title}: {n} is not served (expr {expr})"
            fam = sample_names[n]
            used.add(fam)
            typ = served[fam][0]
            assert any(n == fam + suf for suf in SUFFIXES[typ]), (n, typ)
        labels = set().union(*(served[sample_names[n]][2] for n in names))
        extra = grouping_labels(expr) - labels - TARGET_LABELS
        assert not extra, f"{title}: grouped by labels the metrics lack: {extra} ({expr})"
    # The dashboard shows the volume anomalies of the series detectors and the exporter's
    # main families.
    assert {"dnsguard_alerts", "dnsguard_packets", "dnsguard_dns_messages",
            "dnsguard_kernel_drops", "dnsguard_processing_seconds"} <= used
    assert any('detector=~"series:.*"' in e for _, e in exprs)
