"""Score alerts against ground truth (``truth.yaml``, the corpus format).

Matching (as written at the top of the corpus' truth.yaml): an alert *hits* a tunnel when its
``domain`` equals the tunnel's domain or one is a parent of the other, label-wise; for a tunnel
named by addresses, when the alert's ``src_ip`` is the tunnel's client or its ``dest_ip`` the
tunnel's server. Every alert that hits no tunnel of its capture is a false positive, counted
once per key (its domain, else its addresses).

Time to detect runs from the tunnel's first query to the first alert that hits it, and so does
the count of the tunnel's queries.

Volume anomalies (``dns_volume_anomaly``, docs/timeseries.md) name no tunnel, so they never
*detect* one, but a user sees them: each one that is not about a tunnel of its capture (a
domain series related to the tunnel's domain, or a client series of a client that queried
it) is a **volume false positive**, counted once per series key (``client:<ip>``,
``domain:<d>``, ``client:other``) in ``volume_false_positive_keys``, apart from the tunnel
alerts' ``false_positive_keys`` so each detector family's bar stays readable.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from dnsguard.capture.pcapfile import expand
from dnsguard.detect.rules import RuleSet
from dnsguard.detect.yamlsrc import SourceError
from dnsguard.detect.yamlsrc import load as load_yaml
from dnsguard.output.files import check_writable, write_json
from dnsguard.replay import replay
from dnsguard.settings import Settings


@dataclass
class Tunnel:
    domain: str | None = None
    client: str | None = None
    server: str | None = None

    def label(self) -> str:
        return self.domain or f"client={self.client} server={self.server}"

    def name_matches(self, qname: str) -> bool:
        return self.domain is not None and _related(qname, self.domain)

    def hit_by(self, alert: dict) -> bool:
        d = alert.get("domain")
        if self.domain is not None:
            return bool(d) and _related(d.lower(), self.domain)
        return ((self.client is not None and alert.get("src_ip") == self.client)
                or (self.server is not None and alert.get("dest_ip") == self.server))


@dataclass
class Truth:
    file: str
    cls: str
    tool: str = ""
    tunnels: list[Tunnel] = field(default_factory=list)


def _related(a: str, b: str) -> bool:
    a, b = a.rstrip(".").lower(), b.rstrip(".").lower()
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def load_truth(path: str | Path) -> dict[str, Truth]:
    doc = load_yaml(path)
    caps = doc.get("captures") if isinstance(doc, dict) else None
    if not isinstance(caps, list):
        raise SourceError(path, getattr(doc, "line", 1), "captures",
                          "missing: a truth file is a mapping with a 'captures' list")
    out = {}
    for i, c in enumerate(caps):
        line = getattr(c, "line", 0)
        if not isinstance(c, dict) or "file" not in c or c.get("class") not in ("tunnel",
                                                                                "benign"):
            raise SourceError(path, line, f"captures[{i}]",
                              "needs 'file' and 'class' (tunnel or benign)")
        tunnels = []
        for t in c.get("tunnels") or []:
            tunnels.append(Tunnel(domain=(t.get("domain") or None),
                                  client=t.get("client"), server=t.get("server")))
        if c["class"] == "tunnel" and not tunnels:
            raise SourceError(path, line, f"captures[{i}].tunnels",
                              "a tunnel capture lists its tunnels")
        out[c["file"]] = Truth(c["file"], c["class"], c.get("tool", ""), tunnels)
    return out


EVENT_TUNNEL = "dns_tunnel"
EVENT_VOLUME = "dns_volume_anomaly"  # dnsguard.series.monitor.EVENT_VOLUME (no scipy import here)
MAX_TUNNEL_CLIENTS = 256  # clients remembered per tunnel (a volume alert on one is not false)


class _Watcher:
    """Counts each tunnel's queries and notes the first one, as the pipeline sees them, and
    which clients asked for it (bounded)."""

    def __init__(self, tunnels: list[Tunnel]) -> None:
        self.tunnels = tunnels
        self.first: list[float | None] = [None] * len(tunnels)
        self.count = [0] * len(tunnels)
        self.clients: list[set[str]] = [set() for _ in tunnels]

    def __call__(self, ts: float, client: str, server: str, qname: str) -> None:
        for i, t in enumerate(self.tunnels):
            if t.domain is not None:
                hit = t.name_matches(qname)
            else:
                hit = client == t.client or server == t.server
            if hit:
                self.count[i] += 1
                if len(self.clients[i]) < MAX_TUNNEL_CLIENTS:
                    self.clients[i].add(client)
                if self.first[i] is None:
                    self.first[i] = ts


def evaluate_capture(path: Path, truth: Truth, settings: Settings,
                     ruleset: RuleSet) -> dict:
    from dnsguard.pipeline import Pipeline

    alerts: list[dict] = []
    watcher = _Watcher(truth.tunnels)
    found: list[dict | None] = [None] * len(truth.tunnels)

    volume: list[dict] = []

    def emit(alert: dict) -> None:
        ev = alert.get("event_type", EVENT_TUNNEL)
        if ev == EVENT_VOLUME:
            volume.append(alert)  # claims no tunnel: scored as false or not below
            return
        if ev != EVENT_TUNNEL:
            return
        alerts.append(alert)
        for i, t in enumerate(truth.tunnels):
            if found[i] is None and t.hit_by(alert):
                found[i] = {"alert_time": alert["timestamp"], "ts": pipe.last_ts,
                            "queries": watcher.count[i], "detectors": alert["detectors"]}

    pipe = Pipeline(settings, ruleset, emit)
    pipe.on_query = watcher
    res = replay([path], settings, ruleset, emit, pipeline=pipe)
    tunnels = []
    for i, t in enumerate(truth.tunnels):
        f = found[i]
        first = watcher.first[i]
        ttd = None
        if f is not None and first is not None:
            ttd = round(max(f["ts"] - first, 0.0), 3)
        tunnels.append({"tunnel": t.label(), "hit": f is not None,
                        "time_to_detect": ttd,
                        "queries_to_detect": f["queries"] if f else None,
                        "tunnel_queries": watcher.count[i],
                        "detectors": f["detectors"] if f else []})
    fp_keys: dict[str, list[str]] = {}
    for a in alerts:
        if not any(t.hit_by(a) for t in truth.tunnels):
            key = a.get("domain") or f"{a.get('src_ip')}->{a.get('dest_ip')}"
            fp_keys.setdefault(key, [])
            for d in a["detectors"]:
                if d not in fp_keys[key]:
                    fp_keys[key].append(d)
    vfp_keys: dict[str, list[str]] = {}
    for a in volume:
        if any(t.hit_by(a) or (a.get("src_ip") is not None
                               and a["src_ip"] in watcher.clients[i])
               for i, t in enumerate(truth.tunnels)):
            continue
        key = (a.get("stats") or {}).get("series") or (
            f"domain:{a['domain']}" if a.get("domain") else f"client:{a.get('src_ip')}")
        seen = vfp_keys.setdefault(key, [])
        for d in a["detectors"]:
            if d not in seen:
                seen.append(d)
    return {"file": path.name, "class": truth.cls, "tool": truth.tool, "tunnels": tunnels,
            "alerts": len(alerts), "false_positive_keys": fp_keys,
            "volume_alerts": len(volume), "volume_false_positive_keys": vfp_keys,
            "packets": res.summary["packets"], "errors": res.errors}


def evaluate(paths: list[Path], truth: dict[str, Truth], settings: Settings,
             ruleset: RuleSet) -> dict:
    results, skipped = [], []
    for p in paths:
        t = truth.get(p.name)
        if t is None:
            skipped.append(p.name)
            continue
        results.append(evaluate_capture(p, t, settings, ruleset))
    tun = [t for r in results for t in r["tunnels"]]
    hits = [t for t in tun if t["hit"]]
    ttds = sorted(t["time_to_detect"] for t in hits if t["time_to_detect"] is not None)
    benign = [r for r in results if r["class"] == "benign"]
    return {
        "captures": results,
        "skipped_not_in_truth": skipped,
        "totals": {
            "tunnels": len(tun),
            "detected": len(hits),
            "benign_captures": len(benign),
            "benign_captures_alerting": sum(1 for r in benign if r["alerts"]),
            "false_positive_keys": sum(len(r["false_positive_keys"]) for r in results),
            "benign_captures_volume_alerting": sum(1 for r in benign if r["volume_alerts"]),
            "volume_false_positive_keys": sum(len(r["volume_false_positive_keys"])
                                              for r in results),
            "median_time_to_detect": ttds[len(ttds) // 2] if ttds else None,
        },
    }


def format_table(result: dict) -> str:
    rows = [("capture", "class", "tunnel", "result", "ttd s", "queries", "volume FP",
             "detectors / FP keys")]
    for r in result["captures"]:
        fps = "; ".join([f"FP {k} ({','.join(v)})" for k, v in r["false_positive_keys"].items()]
                        + [f"FP volume {k} ({','.join(v)})"
                           for k, v in r["volume_false_positive_keys"].items()])
        nv = str(len(r["volume_false_positive_keys"]))
        if r["class"] == "benign" or not r["tunnels"]:
            rows.append((r["file"], r["class"], "-", "clean" if not r["alerts"] else "ALERTS",
                         "", "", nv, fps))
            continue
        for i, t in enumerate(r["tunnels"]):
            rows.append((r["file"] if i == 0 else "", r["class"] if i == 0 else "",
                         t["tunnel"], "hit" if t["hit"] else "MISS",
                         "" if t["time_to_detect"] is None else f"{t['time_to_detect']:.1f}",
                         "" if t["queries_to_detect"] is None else
                         f"{t['queries_to_detect']}/{t['tunnel_queries']}",
                         nv if i == 0 else "",
                         ",".join(t["detectors"]) + ("; " + fps if fps and i == 0 else "")))
    widths = [max(len(str(row[i])) for row in rows) for i in range(7)]
    lines = []
    for j, row in enumerate(rows):
        lines.append("  ".join(str(c).ljust(widths[i]) for i, c in enumerate(row[:7]))
                     + "  " + row[7])
        if j == 0:
            lines.append("-" * (sum(widths) + 14 + len(rows[0][7])))
    t = result["totals"]
    lines.append("")
    lines.append(f"tunnels detected: {t['detected']}/{t['tunnels']}; benign captures with "
                 f"alerts: {t['benign_captures_alerting']}/{t['benign_captures']}; "
                 f"false-positive keys: {t['false_positive_keys']}; median time to detect: "
                 f"{t['median_time_to_detect']} s")
    lines.append(f"volume anomalies (dns_volume_anomaly, not in the counts above): benign "
                 f"captures with them: {t['benign_captures_volume_alerting']}/"
                 f"{t['benign_captures']}; false-positive volume keys: "
                 f"{t['volume_false_positive_keys']}")
    return "\n".join(lines)


def evaluate_cli(args, settings: Settings, ruleset: RuleSet) -> int:
    try:
        truth = load_truth(args.truth)
    except SourceError as e:
        print(f"dnsguard: {e}", file=sys.stderr)
        return 2
    if not check_writable(args.json, "evaluation result"):
        return 2
    paths = expand(args.captures)
    result = evaluate(paths, truth, settings, ruleset)
    for name in result["skipped_not_in_truth"]:
        print(f"dnsguard: {name}: not in {args.truth}, skipped", file=sys.stderr)
    print(format_table(result))
    if args.json and not write_json(args.json, result, "evaluation result"):
        return 1
    return 0
