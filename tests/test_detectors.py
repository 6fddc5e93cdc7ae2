"""Every series detector on constructed series with known answers: a flat (or noisy but
stationary) history with a spike or a level shift fires; the same history without it does
not; too little history gives no verdict; decreases never fire (the detectors look for
added traffic)."""

from __future__ import annotations

import numpy as np
import pytest

from dnsguard.series import detectors as det

RNG = np.random.default_rng(7)
FLAT = np.full(60, 100.0)
NOISY = 100.0 + RNG.normal(0, 5, 70)  # stationary: mean 100, sd 5


def spike(base: np.ndarray, value: float, n: int = 1) -> np.ndarray:
    return np.concatenate([base, np.full(n, value)])


VOLUME = [det.mad, det.sigma3, det.cusum, det.least_squares, det.histogram_bins, det.grubbs]


@pytest.mark.parametrize("fn", VOLUME, ids=lambda f: f.__name__)
def test_flat_series_does_not_fire(fn):
    f = fn(spike(FLAT, 100.0, 10))
    assert f is not None and not f.fired, f


@pytest.mark.parametrize("fn", VOLUME, ids=lambda f: f.__name__)
def test_noisy_stationary_series_does_not_fire(fn):
    f = fn(NOISY)
    assert f is not None and not f.fired, f


def test_single_spike_fires_the_point_test():
    f = det.mad(spike(NOISY, 300.0))
    assert f is not None and f.fired, f
    assert f.statistic > f.threshold
    assert det.grubbs(spike(NOISY, 300.0)).fired


@pytest.mark.parametrize("fn", VOLUME, ids=lambda f: f.__name__)
def test_level_shift_fires(fn):
    # Three (cusum: ten) steps at three times the level.
    f = fn(spike(NOISY, 300.0, 10 if fn is det.cusum else 3))
    assert f is not None and f.fired, f


@pytest.mark.parametrize("fn", VOLUME, ids=lambda f: f.__name__)
def test_drop_does_not_fire(fn):
    f = fn(spike(NOISY, 0.0, 10))
    assert f is not None and not f.fired, f


@pytest.mark.parametrize("fn", VOLUME + [det.ks], ids=lambda f: f.__name__)
def test_too_short_gives_no_verdict(fn):
    assert fn(np.full(8, 5.0)) is None


def test_mad_numbers():
    # history 10 × 10 and the MAD 0 → scale floor max(1, 5 % of 10) = 1; z = (40-10)/1
    f = det.mad(np.array([10.0] * 10 + [40.0]))
    assert f.fired and f.statistic == pytest.approx(30.0)
    # MAD of [1..11] around median 6 is 3 → scale 1.4826·3; 6 + 6·4.4478 = 32.7 is the edge
    h = np.arange(1.0, 12.0)
    assert not det.mad(np.append(h, 32.0)).fired
    assert det.mad(np.append(h, 33.0)).fired


def test_sigma3_uses_mean_of_last_three():
    h = np.array([10.0, 12.0] * 10)  # mean 11, sd 1
    assert det.sigma3(np.append(h, [11.0, 11.0, 15.0])).statistic == pytest.approx(1.3333, 1e-3)
    assert not det.sigma3(np.append(h, [11.0, 11.0, 15.0])).fired
    assert det.sigma3(np.append(h, [14.0, 15.0, 16.0])).fired  # mean 15 = μ + 4σ


def test_cusum_accumulates_a_small_persistent_shift():
    # +1.5σ for ten steps: no single point is 3σ out, but the cumulation reaches 10 σ.
    h = 100.0 + RNG.normal(0, 5, 60)
    sd = float(np.std(h))
    shifted = np.concatenate([h, float(np.mean(h)) + 1.5 * sd + np.zeros(10)])
    assert det.cusum(shifted).fired
    assert not det.mad(shifted).fired  # the point test misses what CUSUM sees
    assert not det.cusum(np.concatenate([h, np.full(10, float(np.mean(h)))])).fired


def test_least_squares_follows_a_trend():
    trend = np.arange(60, dtype=float) * 2.0 + 50.0  # steady growth: the projection expects it
    on_trend = np.append(trend, [170.0, 172.0, 174.0])
    assert not det.least_squares(on_trend).fired
    assert det.least_squares(np.append(trend, [250.0, 260.0, 270.0])).fired
    assert abs(det.least_squares(on_trend).statistic) < 1.0


def test_histogram_bins_rarity():
    h = np.tile([10.0, 11.0, 12.0, 13.0], 15)
    assert not det.histogram_bins(np.append(h, [11.0, 12.0, 11.0])).fired  # a crowded bin
    f = det.histogram_bins(np.append(h, [40.0, 40.0, 40.0]))
    assert f.fired and f.statistic == 0  # beyond the range


def test_grubbs_critical_value_and_p_value():
    from scipy import stats

    x = np.append(NOISY[:60], 200.0)
    f = det.grubbs(x)
    n = 61
    t = stats.t.isf(0.05 / n, n - 2)
    assert f.threshold == pytest.approx((n - 1) / np.sqrt(n) * np.sqrt(t * t / (n - 2 + t * t)))
    assert f.fired and f.p_value is not None and f.p_value < 0.05
    g = det.grubbs(NOISY[:61])
    assert not g.fired and g.p_value > 0.05


def test_ks_last_ten_minutes_against_the_hour():
    ref = 100.0 + RNG.normal(0, 5, 50)
    same = np.concatenate([ref, 100.0 + RNG.normal(0, 5, 10)])
    f = det.ks(same)
    assert f is not None and not f.fired and f.p_value > 0.001
    up = np.concatenate([ref, 200.0 + RNG.normal(0, 5, 10)])
    f = det.ks(up)
    assert f.fired and f.statistic == pytest.approx(1.0) and f.p_value < 1e-6
    down = np.concatenate([ref, 10.0 + RNG.normal(0, 1, 10)])
    assert not det.ks(down).fired  # D = 1 too, but a decrease


def test_chi2_qtype_mix():
    hist = np.array([6000.0, 3000, 500, 0, 100, 0])  # A, AAAA, CNAME, MX, TXT, NULL
    same = np.array([600.0, 290, 55, 0, 12, 0])
    f = det.chi2_qtypes(same, hist)
    assert f is not None and not f.fired and f.p_value > 0.01
    txt = np.array([100.0, 50, 5, 0, 700, 0])  # a TXT channel opens
    f = det.chi2_qtypes(txt, hist)
    assert f.fired and f.p_value < 1e-6
    # significant but tiny shift (a few percent with many queries): effect size too small
    slight = np.array([5700.0, 3000, 500, 0, 400, 0])
    g = det.chi2_qtypes(slight, hist)
    assert g.p_value < 1e-6 and not g.fired
    assert det.chi2_qtypes(np.array([5.0, 1, 0, 0, 0, 0]), hist) is None  # too few queries


def test_finding_as_dict_is_json_ready():
    import json

    f = det.grubbs(np.append(NOISY, 200.0))
    d = f.as_dict()
    assert set(d) == {"test", "statistic", "threshold", "p_value"}
    json.dumps(d)


def test_every_detector_has_its_definition_in_the_docstring():
    for fn in [*det.VOLUME_DETECTORS.values(), det.chi2_qtypes]:
        assert fn.__doc__ and "Fires when" in fn.__doc__, fn.__name__
