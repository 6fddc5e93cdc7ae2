"""``dnsguard replay --report report.html``: one self-contained HTML file.

Inline CSS and inline SVG drawn here (no plotting library, no script, nothing fetched: the
file opens offline and is small). Sections:

- the alerts (tunnel alerts and volume anomalies);
- a timeline per alerted domain and client: its series (queries, distinct names, bytes up)
  per step against its baseline — the rolling median of the hour before each point, with a
  band of ±3 robust standard deviations (1.4826·MAD) — and the alert times marked;
- the distributions of window features (``mean_sub_len``, ``distinct_names``,
  ``encoded_share``, …) for the alerted keys against all the other keys, from the window
  tables as the replay left them;
- the top talkers (clients and domains by queries over the series).

Every string that came from a packet is HTML-escaped.

Example:
    >>> svg = line_chart("q", 0.0, 60.0, [("queries", [1, 2, 3], "#1f77b4", False)])
    >>> svg.startswith("<svg") and "polyline" in svg
    True
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from dnsguard.decode.packet import ip_text
from dnsguard.features import window as win

BLUE, ORANGE, GREY, RED, GREEN = "#1f6fb4", "#e8730c", "#8c8c8c", "#c0392b", "#2a9d4b"
BASELINE_STEPS = 60
TIMELINE_METRICS = (("queries", "queries / step"), ("names", "distinct names / step"),
                    ("bytes_up", "bytes up / step"))
FEATURES = ("mean_sub_len", "distinct_names", "encoded_share", "mean_sub_entropy", "queries",
            "distinct_ratio")
MAX_TIMELINES = 12
MAX_ALERT_ROWS = 200

CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;
color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
#ddd;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
.meta{color:#555}.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:8px}
table{border-collapse:collapse;background:#fff;font-size:13px}
td,th{border:1px solid #e2e2e2;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.sev-high{color:#c0392b;font-weight:600}.sev-medium{color:#e8730c;font-weight:600}
.note{color:#777;font-size:12px}code{font-size:12px}
.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:12px;
height:12px;vertical-align:-1px;margin-right:4px;border-radius:2px}
"""


def esc(v) -> str:
    return html.escape(str(v), quote=True)


def _utc(ts: float, fmt: str = "%H:%M") -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime(fmt)
    except (OverflowError, OSError, ValueError):
        return "?"



def _svg_head(width: int, height: int, ml: float, title: str) -> list[str]:
    """Opening of a chart: the svg element, a white background and the title."""
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
            f'<text x="{ml}" y="13" font-size="12" font-weight="600" fill="#333">'
            f'{esc(title)}</text>']


def _grid_line(ml: float, pw: float, y: float, label: str) -> list[str]:
    """A horizontal grid line at ``y`` with its label left of the plot area."""
    return [f'<line x1="{ml}" x2="{ml + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>',
            f'<text x="{ml - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" '
            f'fill="#666">{esc(label)}</text>']

def _num(v: float) -> str:
    v = float(v)
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.3g}G"
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.3g}"


def _iso_ts(s: str) -> float | None:
    try:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None


# --- SVG ---------------------------------------------------------------------------------------
def _path(xs, ys) -> list[str]:
    """Polyline point lists, split where a value is missing (NaN)."""
    out, cur = [], []
    for x, y in zip(xs, ys, strict=True):
        if y is None or not math.isfinite(y):
            if len(cur) > 1:
                out.append(" ".join(cur))
            cur = []
        else:
            cur.append(f"{x:.1f},{y:.1f}")
    if len(cur) > 1:
        out.append(" ".join(cur))
    elif len(cur) == 1:
        out.append(cur[0] + " " + cur[0])
    return out


def line_chart(title: str, t0: float, step: float, lines: list[tuple], band=None,
               markers: list[float] = (), width: int = 370, height: int = 170) -> str:
    """An SVG line chart of per-step values starting at capture time ``t0``.

    ``lines``: ``(label, values, colour, dashed)``; ``band``: ``(low, high)`` arrays shaded
    behind; ``markers``: capture times drawn as red vertical lines.
    """
    ml, mr, mt, mb = 46, 8, 20, 24
    pw, ph = width - ml - mr, height - mt - mb
    n = max((len(v) for _, v, _, _ in lines), default=0)
    vals = [float(x) for _, v, _, _ in lines for x in v if math.isfinite(float(x))]
    if band is not None:
        vals += [float(x) for x in band[1] if math.isfinite(float(x))]
    ymax = max(vals, default=1.0)
    ymax = ymax * 1.08 if ymax > 0 else 1.0

    def X(i: float) -> float:
        return ml + (pw * i / max(n - 1, 1))

    def Y(v: float) -> float:
        return mt + ph - ph * max(v, 0.0) / ymax

    o = _svg_head(width, height, ml, title)
    for k in range(5):
        v = ymax * k / 4
        o += _grid_line(ml, pw, Y(v), _num(v))
    ticks = min(n, 5)
    for k in range(ticks):
        i = round((n - 1) * k / max(ticks - 1, 1))
        anchor = "start" if k == 0 else "end" if k == ticks - 1 else "middle"
        o.append(f'<text x="{X(i):.1f}" y="{height - 6}" font-size="10" '
                 f'text-anchor="{anchor}" fill="#666">{_utc(t0 + i * step)}</text>')
    if band is not None:
        lo, hi = band
        pts = [(X(i), Y(hi[i])) for i in range(len(hi)) if math.isfinite(float(hi[i]))]
        pts_lo = [(X(i), Y(lo[i])) for i in range(len(lo)) if math.isfinite(float(lo[i]))]
        if len(pts) > 1:
            poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts + pts_lo[::-1])
            o.append(f'<polygon points="{poly}" fill="{GREY}" fill-opacity="0.18" '
                     f'stroke="none"/>')
    for ts in markers:
        i = (ts - t0) / step
        if -0.5 <= i <= n - 0.5:
            o.append(f'<line x1="{X(i):.1f}" x2="{X(i):.1f}" y1="{mt}" y2="{mt + ph}" '
                     f'stroke="{RED}" stroke-width="1.5" stroke-dasharray="3,2"/>')
    for _label, v, colour, dashed in lines:
        xs = [X(i) for i in range(len(v))]
        ys = [Y(float(x)) if math.isfinite(float(x)) else None for x in v]
        dash = ' stroke-dasharray="5,3"' if dashed else ""
        for pts in _path(xs, ys):
            o.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                     f'stroke-width="1.6"{dash}/>')
        if not dashed and len(v) <= 60:  # few points: show each one
            o.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>'
                     for x, y in zip(xs, ys, strict=True) if y is not None)
    o.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" '
             f'stroke="#ccc"/>')
    o.append("</svg>")
    return "".join(o)


def histogram_chart(title: str, groups: list[tuple[str, list[float], str]], bins: int = 20,
                    width: int = 370, height: int = 170) -> str:
    """Overlaid histograms (share of each group's keys per bin), one colour per group."""
    ml, mr, mt, mb = 40, 8, 20, 24
    pw, ph = width - ml - mr, height - mt - mb
    allv = [float(v) for _, vs, _ in groups for v in vs if math.isfinite(float(v))]
    lo, hi = (min(allv), max(allv)) if allv else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    shares = []
    for _, vs, _ in groups:
        c, _ = np.histogram(np.asarray(vs, dtype=float), bins=edges)
        shares.append(c / max(c.sum(), 1))
    ymax = max((float(s.max()) for s in shares if len(s)), default=1.0) or 1.0
    o = _svg_head(width, height, ml, title)
    for k in range(3):
        v = ymax * k / 2
        o += _grid_line(ml, pw, mt + ph - ph * v / ymax, f"{v * 100:.0f}%")
    bw = pw / bins
    for (_, _, colour), s in zip(groups, shares, strict=True):
        for i, share in enumerate(s):
            if share <= 0:
                continue
            h = ph * share / ymax
            o.append(f'<rect x="{ml + i * bw + 0.5:.1f}" y="{mt + ph - h:.1f}" '
                     f'width="{max(bw - 1, 0.5):.1f}" height="{h:.1f}" fill="{colour}" '
                     f'fill-opacity="0.55"/>')
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        x = ml + pw * k / 4
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        o.append(f'<text x="{x:.1f}" y="{height - 6}" font-size="10" '
                 f'text-anchor="{anchor}" fill="#666">{_num(v)}</text>')
    o.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" '
             f'stroke="#ccc"/></svg>')
    return "".join(o)


def bar_chart(title: str, rows: list[tuple[str, float]], width: int = 560,
              colour: str = BLUE) -> str:
    """Horizontal bars (label, value), largest first."""
    bh, ml, mt = 16, 190, 20
    height = mt + bh * len(rows) + 6
    vmax = max((v for _, v in rows), default=1.0) or 1.0
    pw = width - ml - 60
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
         f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
         f'<text x="4" y="13" font-size="12" font-weight="600" fill="#333">{esc(title)}</text>']
    for i, (label, v) in enumerate(rows):
        y = mt + i * bh
        w = pw * v / vmax
        short = label if len(label) <= 30 else label[:29] + "…"
        o.append(f'<text x="{ml - 6}" y="{y + 12}" font-size="11" text-anchor="end" '
                 f'fill="#333">{esc(short)}</text>')
        o.append(f'<rect x="{ml}" y="{y + 2}" width="{max(w, 1):.1f}" height="{bh - 4}" '
                 f'fill="{colour}"/>')
        o.append(f'<text x="{ml + w + 4:.1f}" y="{y + 12}" font-size="10" fill="#555">'
                 f'{_num(v)}</text>')
    o.append("</svg>")
    return "".join(o)


# --- data ----------------------------------------------------------------------------------------
def baseline(x: np.ndarray, steps: int = BASELINE_STEPS, min_points: int = 10):
    """Rolling median of the ``steps`` points before each point, and a ±3·1.4826·MAD band
    (NaN until ``min_points`` points of history exist)."""
    n = len(x)
    med = np.full(n, np.nan)
    lo = np.full(n, np.nan)
    hi = np.full(n, np.nan)
    for i in range(min_points, n):
        h = x[max(0, i - steps):i]
        m = float(np.median(h))
        s = max(1.4826 * float(np.median(np.abs(h - m))), 0.05 * abs(m), 1.0)
        med[i], lo[i], hi[i] = m, max(m - 3 * s, 0.0), m + 3 * s
    return med, lo, hi


def _key_label(kind: str, key) -> str:
    if isinstance(key, tuple):
        return f"{kind}:other"
    return ip_text(key) if kind == "client" else str(key)


def _related(a: str, b: str) -> bool:
    a, b = a.rstrip(".").lower(), b.rstrip(".").lower()
    return a == b or a.endswith("." + b) or b.endswith("." + a)


# What a timeline shows around its key's alerts (steps): the history before the first alert
# (the baseline needs BASELINE_STEPS of it) and the traffic after the last.
BEFORE_STEPS = 2 * BASELINE_STEPS
AFTER_STEPS = BASELINE_STEPS
MAX_EPISODE_STEPS = 4 * BASELINE_STEPS  # a longer stretch of alerts is split
WATCH_KEYS = 4 * MAX_TIMELINES  # alerted keys recorded (the first ones alerted)
TOTAL_KEYS = 4096  # keys with running totals (the smallest is dropped past it)


class Recorder:
    """What the report needs from a replay of any length, kept while it runs, bounded.

    The series keep 24 hours (``series_span``): for input spanning days, a key's traffic is
    gone from them by the end, and a report drawn from them at the end alone showed flat
    timelines and the wrong top talkers. So, after each series step closes, the recorder
    keeps (1) the closed step of each alerted key, up to ``AFTER_STEPS`` after its last alert,
    plus the ``BEFORE_STEPS`` before its first alert, taken from the series when it alerts;
    (2) each tracked key's running totals over the whole input. Bounded: ``WATCH_KEYS`` keys
    of at most ``BEFORE_STEPS + AFTER_STEPS`` steps per stretch of alerts, ``TOTAL_KEYS``
    totals per kind.

    Totals count the steps a key spent among the tracked series (the busiest keys of each
    kind, ``series_keys``): a key's traffic before it became tracked is in ``other``.
    """

    def __init__(self, pipe) -> None:
        self.store = pipe.series.store if pipe.series is not None else None
        # (kind, key) → {"alerts": [step, ...], "points": {step: 5 floats}}
        self.watch: dict[tuple[str, object], dict] = {}
        self.pending: list[tuple[str, str, int]] = []  # alerted, not yet tracked
        self.totals: dict[str, dict[object, np.ndarray]] = {"client": {}, "domain": {}}
        self.seen_step = -1  # the last closed step taken into account
        if self.store is not None:
            prev = self.store.on_close

            def on_close(step: int, ts: float, _prev=prev) -> None:
                if _prev is not None:
                    _prev(step, ts)
                self._closed(step)

            self.store.on_close = on_close

    # -- while the replay runs --
    def on_alert(self, alert: dict) -> None:
        """An alert was raised: watch its domain and client."""
        if self.store is None:
            return
        ts = _iso_ts(alert.get("timestamp", ""))
        if ts is None:
            return
        step = int(ts // self.store.step)
        for kind, label in (("domain", alert.get("domain")), ("client", alert.get("src_ip"))):
            if label and not self._note(kind, label, step):
                self.pending.append((kind, label, step))

    def _find(self, kind: str, label: str):
        t = self.store.tables[kind]
        if kind == "client":
            return next(((k, s) for k, s in t.slot_of.items() if ip_text(k) == label),
                        (None, None))
        return next(((k, s) for k, s in t.slot_of.items() if _related(label, k)),
                    (None, None))

    def _note(self, kind: str, label: str, step: int) -> bool:
        key, slot = self._find(kind, label)
        if key is None:
            return False
        w = self.watch.get((kind, key))
        if w is None:
            if len(self.watch) >= WATCH_KEYS:
                return True  # bounded: the first alerted keys are drawn, the rest counted
            w = self.watch[(kind, key)] = {"alerts": [], "points": {}}
        if step not in w["alerts"]:
            w["alerts"].append(step)
        # The history before the alert, while the series still hold it.
        t = self.store.tables[kind]
        n = min(t.history_len(slot), BEFORE_STEPS)
        if n > 0:
            block = np.stack([t.values(slot, m, n) for m in range(5)], axis=1)
            first = t.last_step - n + 1
            for i in range(n):
                w["points"].setdefault(first + i, block[i])
        return True

    def _closed(self, step: int) -> None:
        """After a step closed: it, and the empty steps before it (closed without a callback;
        still in the series, as zeros)."""
        first = max(self.seen_step + 1, step - self.store.capacity + 1)
        for s in range(first, step + 1):
            self._take(s)

    def _take(self, step: int) -> None:
        for kind, t in self.store.tables.items():
            col = t.data[:, :, step % t.capacity].astype(np.float64)
            tot = self.totals[kind]
            for key, slot in t.slot_of.items():
                v = col[slot]
                if v[0] or v[3]:
                    self._add(tot, key, v)
                w = self.watch.get((kind, key))
                if w is not None and step <= max(w["alerts"]) + AFTER_STEPS:
                    w["points"][step] = v
        self.seen_step = step
        if self.pending:
            pending, self.pending = self.pending, []
            for kind, label, s in pending:
                # Not tracked yet (its traffic goes to "other"): retried while recent.
                if not self._note(kind, label, s) and step - s <= AFTER_STEPS:
                    self.pending.append((kind, label, s))

    @staticmethod
    def _add(tot: dict, key, v: np.ndarray) -> None:
        cur = tot.get(key)
        if cur is not None:
            cur += v
            return
        if len(tot) >= TOTAL_KEYS:  # drop the smallest (rare: keys churning through tracking)
            del tot[min(tot, key=lambda k: tot[k][0])]
        tot[key] = v.copy()

    # -- at the end --
    def finish(self, alerts: list[dict]) -> None:
        """Take in the steps closed without a callback (the last one, at the end of input)
        and alerts the recorder did not see while they were raised (``render`` called on a
        finished pipeline)."""
        if self.store is None:
            return
        if not self.watch and not self.pending:
            for a in alerts:
                self.on_alert(a)
        last = max(t.last_step for t in self.store.tables.values())
        if last > self.seen_step:
            self._closed(last)
        self.pending = []

    def episodes(self):
        """(kind, key, first step, values[steps × 5] with NaN where unknown, alert steps)
        per stretch of a watched key's alerts, in the order keys alerted."""
        for (kind, key), w in self.watch.items():
            alerts = sorted(w["alerts"])
            groups: list[list[int]] = []
            for s in alerts:
                if groups and s - groups[-1][-1] <= BEFORE_STEPS + AFTER_STEPS and \
                        s - groups[-1][0] <= MAX_EPISODE_STEPS:
                    groups[-1].append(s)
                else:
                    groups.append([s])
            for g in groups:
                lo, hi = g[0] - BEFORE_STEPS, g[-1] + AFTER_STEPS
                pts = {s: v for s, v in w["points"].items() if lo <= s <= hi}
                if not pts:
                    continue
                a, b = min(pts), max(pts)
                vals = np.full((b - a + 1, 5), np.nan)
                for s, v in pts.items():
                    vals[s - a] = v
                yield kind, key, a, vals, g


def _alerted_keys(alerts: list[dict]) -> tuple[list[str], list[str]]:
    doms: list[str] = []
    clients: list[str] = []
    for a in alerts:
        d, c = a.get("domain"), a.get("src_ip")
        if d and d not in doms:
            doms.append(d)
        if c and c not in clients:
            clients.append(c)
    return doms, clients


def _span(a: float, b: float) -> str:
    """A time range in UTC, the date written once when both ends share it."""
    same = _utc(a, "%Y-%m-%d") == _utc(b, "%Y-%m-%d")
    return (f"{_utc(a, '%Y-%m-%d %H:%M')} – "
            f"{_utc(b, '%H:%M' if same else '%Y-%m-%d %H:%M')} UTC")


def _timeline_html(kind: str, label: str, first: int, vals: np.ndarray, alert_steps,
                   step: float) -> str:
    """Charts of one stretch of a key's series: steps ``first`` … ``first + len(vals) - 1``
    (NaN where the key was not tracked yet), alerts marked at their steps."""
    n = len(vals)
    t0 = first * step
    times = [s * step for s in alert_steps]
    charts = []
    for m, (metric, title) in enumerate(TIMELINE_METRICS):
        x = vals[:, m]
        med, lo, hi = baseline(np.nan_to_num(x))
        charts.append(line_chart(f"{title}", t0, step,
                                 [("baseline", med, GREY, True), (metric, x, BLUE, False)],
                                 band=(lo, hi), markers=times))
    peak = float(np.nanmax(vals[:, 0])) if np.isfinite(vals[:, 0]).any() else 0.0
    short = (" (a short capture: a smaller --series-step draws more points)"
             if n < 5 else "")
    return (f'<h3>{esc(kind)} {esc(label)} <span class="note">{n} steps of {step:g} s, '
            f'{esc(_span(t0, (first + n) * step))}; peak {_num(peak)} queries/step; '
            f'{len(times)} alert(s){short}</span></h3><div class="grid">'
            + "".join(f'<div class="card">{c}</div>' for c in charts) + "</div>")


def _features(pipe, alerts) -> str:
    doms, clients = _alerted_keys(alerts)
    parts = []
    for scope in ("domain", "client"):
        table = pipe.tables.get(scope)
        if table is None or not len(table):
            continue
        alerted: dict[str, list[float]] = {f: [] for f in FEATURES}
        rest: dict[str, list[float]] = {f: [] for f in FEATURES}
        na = nr = 0
        for key, st in list(table.keys.items()):
            if not st.queries:
                continue
            f = win.features(st, scope)
            if scope == "domain":
                hit = any(_related(d, key) for d in doms)
            else:
                hit = ip_text(key) in clients
            dst = alerted if hit else rest
            if hit:
                na += 1
            else:
                nr += 1
            for name in FEATURES:
                if name in f:
                    dst[name].append(float(f[name]))
        charts = []
        for name in FEATURES:
            if not alerted[name] and not rest[name]:
                continue
            charts.append(histogram_chart(f"{scope}: {name}",
                                          [("other", rest[name], BLUE),
                                           ("alerted", alerted[name], ORANGE)]))
        parts.append(f"<h3>{scope} keys: {na} alerted, {nr} other</h3>"
                     '<div class="grid">' + "".join(f'<div class="card">{c}</div>'
                                                    for c in charts) + "</div>")
    if not parts:
        return '<p class="note">No window state left at the end of the replay.</p>'
    legend = (f'<p class="legend"><span><i class="sw" style="background:{BLUE}"></i>other '
              f'keys</span><span><i class="sw" style="background:{ORANGE}"></i>alerted keys'
              '</span> (share of each group\'s keys per bin; each key\'s last traffic window)'
              '</p>')
    return legend + "".join(parts)


def _top_talkers(rec: Recorder, span: str, n: int = 15) -> str:
    if rec.store is None:
        return '<p class="note">Series were off.</p>'
    out = []
    for kind, tot in rec.totals.items():
        rows = sorted(((_key_label(kind, k), v) for k, v in tot.items() if v[0] > 0),
                      key=lambda r: -r[1][0])[:n]
        if not rows:
            continue
        chart = bar_chart(f"top {kind}s by queries", [(lbl, v[0]) for lbl, v in rows],
                          colour=BLUE if kind == "client" else GREEN)
        trs = "".join(f"<tr><td>{esc(lbl)}</td>" + "".join(f'<td class="n">{_num(x)}</td>'
                                                           for x in v) + "</tr>"
                      for lbl, v in rows)
        out.append(f'<div class="card">{chart}<table><tr><th>{kind}</th><th>queries</th>'
                   '<th>names (sum per step)</th><th>bytes up</th><th>bytes down</th>'
                   f'<th>NXDOMAIN</th></tr>{trs}</table></div>')
    return (f'<p class="note">Over the whole input ({esc(span)}), while each key was among '
            f'the tracked series (the busiest {rec.store.tables["client"].max_keys} of each '
            'kind at a time).</p><div class="grid">' + "".join(out) + "</div>")


def _alerts_table(alerts: list[dict]) -> str:
    if not alerts:
        return '<p>No alerts.</p>'
    rows = []
    for a in alerts[:MAX_ALERT_ROWS]:
        sev = str(a.get("severity", ""))
        reasons = "; ".join(str(r) for r in (a.get("reasons") or [])[:3])
        rows.append(
            f"<tr><td>{esc(a.get('timestamp', ''))}</td><td>{esc(a.get('event_type', ''))}</td>"
            f'<td class="sev-{esc(sev)}">{esc(sev)}</td><td class="n">{esc(a.get("score"))}</td>'
            f"<td>{esc(a.get('domain') or '')}</td><td>{esc(a.get('src_ip') or '')}</td>"
            f"<td>{esc(', '.join(map(str, a.get('detectors') or [])))}</td>"
            f"<td>{esc(reasons)}</td></tr>")
    more = (f'<p class="note">{len(alerts) - MAX_ALERT_ROWS} more not shown.</p>'
            if len(alerts) > MAX_ALERT_ROWS else "")
    return ("<table><tr><th>time (UTC)</th><th>event</th><th>severity</th><th>score</th>"
            "<th>domain</th><th>client</th><th>detectors</th><th>reasons</th></tr>"
            + "".join(rows) + "</table>" + more)


def render(pipe, alerts: list[dict], summary: dict | None = None,
           sources: list[str] | None = None, recorder: Recorder | None = None) -> str:
    """The report as one HTML string. ``recorder``: what was kept while the replay ran
    (:class:`Recorder`); without it, what the series still hold at the end."""
    summary = summary or pipe.summary()
    step = pipe.series.store.step if pipe.series is not None else 60.0
    rec = recorder if recorder is not None else Recorder(pipe)
    rec.finish(alerts)
    first, last = summary.get("first_ts"), summary.get("last_ts")
    span = _span(first, last) if first is not None else "no packets"
    days = (last - first) / 86400 if first is not None else 0.0
    by_type: dict[str, int] = {}
    for a in alerts:
        by_type[a.get("event_type", "?")] = by_type.get(a.get("event_type", "?"), 0) + 1
    counts = ", ".join(f"{n} {esc(t)}" for t, n in sorted(by_type.items())) or "none"
    episodes = list(rec.episodes())
    timelines = "".join(_timeline_html(k, _key_label(k, key), a, vals, g, step)
                        for k, key, a, vals, g in episodes[:MAX_TIMELINES])
    if not episodes and pipe.series is not None:
        # No alerted key to show: the busiest series, so the report still has its pictures.
        busiest = []
        for kind, t in pipe.series.store.tables.items():
            for slot, key in t.rows():
                h = min(t.history_len(slot), BEFORE_STEPS + AFTER_STEPS)
                if h > 0:
                    vals = np.stack([t.values(slot, m, h) for m in range(5)], axis=1)
                    busiest.append((float(vals[:, 0].sum()), kind, key, t.last_step - h + 1,
                                    vals))
        busiest.sort(key=lambda r: -r[0])
        timelines = ('<p class="note">No alerted key has a series: the busiest series '
                     'instead (their last hours).</p>' + "".join(
                         _timeline_html(k, _key_label(k, key), a, vals, [], step)
                         for v, k, key, a, vals in busiest[:3] if v > 0))
    doms, clients = _alerted_keys(alerts)
    drawn = {_key_label(k, key) for k, key, *_ in episodes}
    untracked = [x for x in (*doms, *clients)
                 if x not in drawn and not any(_related(x, d) for d in drawn)]
    if untracked:
        timelines += ('<p class="note">Alerted but not among the tracked series (their '
                      'traffic is in the "other" aggregate), or past the first '
                      f'{WATCH_KEYS} alerted keys: ' + esc(", ".join(untracked[:50])) + "</p>")
    if episodes[MAX_TIMELINES:]:
        timelines += (f'<p class="note">{len(episodes) - MAX_TIMELINES} more stretches of '
                      'alerts not drawn.</p>')
    if days > 1:
        timelines = (f'<p class="note">The input spans {days:.0f} days: each timeline shows '
                     'its key around its alerts, with its own time range.</p>' + timelines)
    src = ", ".join(sources or [])
    series_note = ""
    if pipe.series is not None:
        s = pipe.series.summary()
        series_note = (f"series: step {s['step_seconds']:g} s, {s['steps_closed']} steps, "
                       f"tracked {s['tracked']}, series tests {s['series_tested']}, volume "
                       f"anomalies {s['volume_anomalies']}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dnsguard report</title><style>{CSS}</style></head><body>
<h1>dnsguard report</h1>
<p class="meta">{esc(src)}<br>{esc(span)}; {summary.get('packets', 0)} packets,
{summary.get('queries', 0)} queries, {summary.get('responses', 0)} responses,
{summary.get('registered_domains', 0)} registered domains; alerts: {counts}<br>
<span class="note">{esc(series_note)}</span></p>
<h2>Alerts</h2>
{_alerts_table(alerts)}
<h2>Timelines of alerted keys</h2>
<p class="legend"><span><i class="sw" style="background:{BLUE}"></i>series</span>
<span><i class="sw" style="background:{GREY}"></i>baseline: median of the previous hour,
band ±3 robust sd</span><span><i class="sw" style="background:{RED}"></i>alert</span></p>
{timelines or '<p class="note">No series.</p>'}
<h2>Feature distributions: alerted keys against the rest</h2>
{_features(pipe, alerts)}
<h2>Top talkers</h2>
{_top_talkers(rec, span)}
<p class="note">Generated by dnsguard; self-contained (inline SVG and CSS, no scripts).</p>
</body></html>
"""


def write_report(path: str | Path, pipe, alerts: list[dict], summary: dict | None = None,
                 sources: list[str] | None = None, recorder: Recorder | None = None) -> None:
    Path(path).write_text(render(pipe, alerts, summary, sources, recorder), encoding="utf-8")
