"""Statistical detectors over one fixed-step series (the classic set Etsy's Skyline made
popular), each a small function of a 1-D array whose last element is the newest point.

Every detector is *one-sided where it can be*: it looks for an increase (a tunnel or an
exfiltration adds traffic; a drop is an outage, not ours to report). Each returns a
:class:`Finding` (``fired``, the statistic, the threshold it was compared with, a p-value
where the test has one, and a one-line reason with the numbers), or ``None`` when the series
is too short for the test.

Scales have a floor: on a perfectly flat history the standard deviation (or the MAD) is 0
and any change would be infinitely many deviations away, so the scale used is never below
``min_scale`` (default 1 unit, i.e. one query per step) nor below ``rel_scale`` of the
baseline's level (default 5 %).

Example:
    >>> import numpy as np
    >>> x = np.array([10.0] * 30 + [80.0])
    >>> mad(x).fired, mad(np.array([10.0] * 31)).fired
    (True, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

# The minimum history (points before the tested ones) every detector here requires.
MIN_HISTORY = 10


@dataclass
class Finding:
    test: str
    fired: bool
    statistic: float
    threshold: float
    reason: str
    p_value: float | None = None

    def as_dict(self) -> dict:
        d = {"test": self.test, "statistic": _r(self.statistic),
             "threshold": _r(self.threshold)}
        if self.p_value is not None:
            d["p_value"] = float(f"{self.p_value:.4g}")
        return d


def _r(v: float) -> float:
    v = float(v)
    if not math.isfinite(v):
        return v
    return round(v, 4)


def _scale(sd: float, level: float, min_scale: float, rel_scale: float) -> float:
    return max(float(sd), abs(float(level)) * rel_scale, min_scale)


def _f(v: float) -> str:
    return f"{v:.4g}"


def mad(x: np.ndarray, k: float = 6.0, baseline: int = 60, min_scale: float = 1.0,
        rel_scale: float = 0.05) -> Finding | None:
    """Median absolute deviation of the latest point.

    ``h`` = the ``baseline`` points before the latest one ``x[-1]``; ``m`` = median(h);
    ``MAD`` = median(|h - m|), scaled by 1.4826 so it estimates σ for normal data.
    Fires when ``z = (x[-1] - m) / max(1.4826·MAD, floor) > k`` (default 6, Skyline's).
    """
    h = x[-1 - baseline:-1]
    if len(h) < MIN_HISTORY:
        return None
    m = float(np.median(h))
    s = _scale(1.4826 * float(np.median(np.abs(h - m))), m, min_scale, rel_scale)
    z = (float(x[-1]) - m) / s
    return Finding("mad", z > k, z, k,
                   f"latest {_f(x[-1])} is {_f(z)} MADs above the median {_f(m)} (> {_f(k)})")


def sigma3(x: np.ndarray, n: float = 3.0, baseline: int = 60, tail: int = 3,
           min_scale: float = 1.0, rel_scale: float = 0.05) -> Finding | None:
    """Mean of the last three points against the moving average (3σ).

    ``t`` = mean(x[-3:]); ``μ``, ``σ`` = mean and standard deviation of the ``baseline``
    points before those three. Fires when ``t > μ + n·σ`` (n = 3).
    """
    h = x[-tail - baseline:-tail]
    if len(h) < MIN_HISTORY:
        return None
    t = float(np.mean(x[-tail:]))
    mu = float(np.mean(h))
    sd = _scale(float(np.std(h)), mu, min_scale, rel_scale)
    z = (t - mu) / sd
    return Finding("sigma3", z > n, z, n,
                   f"mean of last {tail} {_f(t)} is {_f(z)} sd above the moving average "
                   f"{_f(mu)} (> {_f(n)})")


def cusum(x: np.ndarray, recent: int = 10, baseline: int = 60, k: float = 0.5,
          h: float = 8.0, min_scale: float = 1.0, rel_scale: float = 0.05) -> Finding | None:
    """Mean-subtraction cumulation (one-sided tabular CUSUM, Page 1954).

    ``μ``, ``σ`` from the ``baseline`` points before the last ``recent`` ones; over those
    recent points ``S_t = max(0, S_{t-1} + (x_t - μ)/σ - k)`` (``k`` = 0.5: slack of half a
    σ per step). Fires when ``S`` at the latest point exceeds ``h`` (8 σ) *and* the latest
    point is itself above ``μ + k·σ`` (so it fires while the shift lasts, not after).
    """
    ref = x[-recent - baseline:-recent]
    if len(ref) < MIN_HISTORY:
        return None
    mu = float(np.mean(ref))
    sd = _scale(float(np.std(ref)), mu, min_scale, rel_scale)
    s = 0.0
    for v in (x[-recent:] - mu) / sd:
        s = max(0.0, s + float(v) - k)
    last_up = (float(x[-1]) - mu) / sd > k
    return Finding("cusum", bool(s > h and last_up), s, h,
                   f"cumulated excess over the mean {_f(mu)} is {_f(s)} sd over the last "
                   f"{recent} steps (> {_f(h)})")


def least_squares(x: np.ndarray, n: float = 3.0, baseline: int = 60, tail: int = 3,
                  min_scale: float = 1.0, rel_scale: float = 0.05) -> Finding | None:
    """Least-squares projection of the last three points.

    A line ``a + b·i`` is fitted (ordinary least squares) to the ``baseline`` points before
    the last three and projected onto them; ``e`` = mean residual of the last three points
    against that projection, ``σ`` = standard deviation of the fit's residuals. Fires when
    ``e > n·σ`` (n = 3): the newest points leave the trend the history set.
    """
    h = x[-tail - baseline:-tail]
    if len(h) < MIN_HISTORY:
        return None
    i = np.arange(len(h), dtype=float)
    b, a = np.polyfit(i, h, 1)
    resid = h - (a + b * i)
    j = np.arange(len(h), len(h) + tail, dtype=float)
    e = float(np.mean(x[-tail:] - (a + b * j)))
    sd = _scale(float(np.std(resid)), float(np.mean(h)), min_scale, rel_scale)
    z = e / sd
    return Finding("lsq", z > n, z, n,
                   f"last {tail} points are {_f(e)} above the least-squares projection "
                   f"({_f(z)} sd > {_f(n)})")


def histogram_bins(x: np.ndarray, bins: int = 15, baseline: int = 60, tail: int = 3,
                   rare: int = 1) -> Finding | None:
    """Histogram-bin rarity.

    The ``baseline`` points before the last three are binned into ``bins`` equal-width bins;
    ``t`` = mean of the last three points. Fires when ``t`` lies above the histogram's range
    or in a bin holding at most ``rare`` history points (default 1), and above the median.
    Statistic: how many history points share ``t``'s bin.
    """
    h = x[-tail - baseline:-tail]
    if len(h) < MIN_HISTORY:
        return None
    t = float(np.mean(x[-tail:]))
    counts, edges = np.histogram(h, bins=bins)
    if t > edges[-1]:
        c = 0
    elif t < edges[0]:
        c = len(h)  # below everything seen: not an increase
    else:
        idx = min(int(np.searchsorted(edges, t, side="right")) - 1, bins - 1)
        c = int(counts[idx])
    fired = c <= rare and t > float(np.median(h))
    return Finding("histogram", fired, float(c), float(rare),
                   f"mean of last {tail} {_f(t)} falls in a bin with {c} of {len(h)} "
                   f"history points (<= {rare})")


def grubbs(x: np.ndarray, alpha: float = 0.05, baseline: int = 60, min_scale: float = 1.0,
           rel_scale: float = 0.05) -> Finding | None:
    """Grubbs' outlier test of the latest point (one-sided, for a maximum).

    Over the ``N`` = baseline + 1 points (the newest included), ``G = (x[-1] - mean) / sd``;
    critical value ``G_c = (N-1)/√N · √(t²/(N-2+t²))`` with ``t`` the Student-t quantile
    ``scipy.stats.t.isf(alpha/N, N-2)``. Fires when ``G > G_c``. The p-value is the
    Bonferroni bound ``N · P(T > t_G)``, ``t_G`` the t value that gives G.
    """
    s = x[-1 - baseline:]
    if len(s) - 1 < MIN_HISTORY:
        return None
    n = len(s)
    mu = float(np.mean(s))
    sd = _scale(float(np.std(s, ddof=1)), mu, min_scale, rel_scale)
    g = (float(x[-1]) - mu) / sd
    tq = float(stats.t.isf(alpha / n, n - 2))
    gc = (n - 1) / math.sqrt(n) * math.sqrt(tq * tq / (n - 2 + tq * tq))
    gmax = (n - 1) / math.sqrt(n)
    p = 1.0
    if 0 < g < gmax:
        g2 = g * g
        tg = math.sqrt(n * (n - 2) * g2 / ((n - 1) ** 2 - n * g2))
        p = min(1.0, n * float(stats.t.sf(tg, n - 2)))
    elif g >= gmax:
        p = 0.0
    return Finding("grubbs", g > gc, g, gc,
                   f"Grubbs G {_f(g)} of the latest {_f(x[-1])} "
                   f"{'>' if g > gc else '<='} critical {_f(gc)} (alpha {alpha}, N {n})", p)


def ks(x: np.ndarray, recent: int = 10, reference: int = 50, alpha: float = 0.001,
       min_d: float = 0.8) -> Finding | None:
    """Kolmogorov–Smirnov micro-batch test: the last 10 minutes against the last hour.

    ``scipy.stats.ks_2samp(reference, probe)`` with probe = the last ``recent`` points and
    reference = the ``reference`` points before them (10 + 50 = one hour at 60 s steps).
    Fires when ``p < alpha`` (0.001), ``D > min_d`` (0.8) and the probe's median is above
    the reference's (an increase).
    """
    probe = x[-recent:]
    ref = x[-recent - reference:-recent]
    if len(ref) < MIN_HISTORY or len(probe) < recent:
        return None
    res = stats.ks_2samp(ref, probe)
    d, p = float(res.statistic), float(res.pvalue)
    up = float(np.median(probe)) > float(np.median(ref))
    return Finding("ks", bool(p < alpha and d > min_d and up), d, min_d,
                   f"KS D {_f(d)} p {p:.3g}: last {recent} steps vs the {len(ref)} before "
                   f"(fires at p < {alpha} and D > {min_d})", p)


def carrier_shift(recent: np.ndarray, history: np.ndarray,
                  toward: np.ndarray | None = None) -> float:
    """How far the query-type mix moved *toward* the buckets flagged in ``toward``: the sum
    of the increases of their shares (``Σ max(0, p_recent − p_history)`` over them); with
    ``toward`` None, the total variation distance ``½·Σ|p_recent − p_history|``.

    >>> carrier_shift(np.array([0.0, 10.0]), np.array([10.0, 0.0]), np.array([False, True]))
    1.0
    >>> carrier_shift(np.array([10.0, 0.0]), np.array([0.0, 10.0]), np.array([False, True]))
    0.0
    """
    d = recent / recent.sum() - history / history.sum()
    if toward is None:
        return 0.5 * float(np.abs(d).sum())
    return float(np.clip(d[toward], 0.0, None).sum())


def chi2_qtypes(recent: np.ndarray, history: np.ndarray, alpha: float = 1e-6,
                min_count: int = 50, min_shift: float = 0.25,
                toward: np.ndarray | None = None) -> Finding | None:
    """Chi-square test of the query-type distribution against history.

    ``recent`` = counts per query-type bucket in the latest step; ``history`` = counts per
    bucket over the history steps. ``scipy.stats.chi2_contingency`` on the 2×k table (buckets
    with no count on either side dropped). Fires when ``p < alpha`` (1e-6) *and* the mix
    moved by at least ``min_shift`` (:func:`carrier_shift`): with thousands of queries a
    tiny mix change is "significant", so the effect size is required too. ``toward`` (a
    boolean mask of the buckets) counts only moves toward those types — the monitor passes
    the data-carrying types (TXT, NULL, CNAME, MX, …): a browser's A/AAAA→HTTPS or a
    monitoring host's PTR sweep changes the mix too, but carries no data down.
    Needs ``min_count`` queries on each side.
    """
    recent = np.asarray(recent, dtype=float)
    history = np.asarray(history, dtype=float)
    if recent.sum() < min_count or history.sum() < min_count:
        return None
    keep = (recent + history) > 0
    if keep.sum() < 2:
        return Finding("chi2", False, 0.0, alpha, "one query type only", 1.0)
    table = np.vstack([recent[keep], history[keep]])
    chi2, p, _, _ = stats.chi2_contingency(table)
    tv = carrier_shift(recent, history, toward)
    what = "total variation" if toward is None else "shift toward data-carrying types"
    fired = bool(p < alpha and tv >= min_shift)
    return Finding("chi2", fired, float(chi2), alpha,
                   f"query-type mix chi2 {_f(chi2)} p {float(p):.3g}, {what} "
                   f"{_f(tv)} (fires at p < {alpha} and shift >= {min_shift})", float(p))


# The volume detectors applied to every metric of a series, in report order.
VOLUME_DETECTORS = {
    "mad": mad,
    "sigma3": sigma3,
    "cusum": cusum,
    "lsq": least_squares,
    "histogram": histogram_bins,
    "grubbs": grubbs,
    "ks": ks,
}
