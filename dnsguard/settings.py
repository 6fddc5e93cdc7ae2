"""Settings shared by replay and the daemon, with the defaults both use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dnsguard.features.namehash import DEFAULT_KEY

DEFAULT_RULES = Path(__file__).parent / "data" / "rules"
DEFAULT_FEEDBACK = Path("/var/lib/dnsguard/feedback.jsonl")  # ``dnsguard label`` writes here


@dataclass
class Settings:
    ports: frozenset[int] = frozenset({53})
    window: float = 300.0  # seconds per traffic window
    suppress: float = 3600.0  # one alert per key per this many seconds
    alert_rate: float = 10.0  # overall alerts per second (token bucket) …
    alert_burst: int = 100  # … with this burst; refused alerts are counted, never silent
    # Alerts on one key within this many seconds (capture time) of its first are one record
    # (detect.policy: the detectors a tunnel's burst makes cross their bars together); the
    # first record of an incident is written up to this much later.
    settle: float = 1.0
    max_domains: int = 20_000  # LRU caps on tracked keys per scope
    max_client_domains: int = 20_000
    max_clients: int = 10_000
    max_flows: int = 4_096
    exact_cap: int = 128  # distinct counts are exact up to this, HyperLogLog past it
    # Caches of the hot path (entries; see bench/README.md for what each costs in memory).
    name_cache: int = 100_000  # query names with their features (~0.7 KB each)
    domain_cache: int = 20_000  # registered domains that needed a Public Suffix List walk
    allow_cache: int = 10_000  # allowlist verdicts by name (names also keep theirs)
    policy_keys: int = 100_000  # keys remembered by alert suppression
    tcp_max_flows: int = 4_096
    tcp_max_bytes: int = 16 << 20
    # Vantage: addresses of our recursive resolvers, and our clients' networks (CIDR). Queries
    # from a resolver, or from outside the home networks when they are set, feed the domain
    # scope only (no client/domain or client keys): see Measurements._per_client.
    resolvers: tuple[str, ...] = ()
    home_networks: tuple[str, ...] = ()
    rules: Path = field(default_factory=lambda: DEFAULT_RULES)
    sensor: str = ""
    # Key of the hash behind every distinct count and sketch (dnsguard.features.namehash):
    # fixed and public by default so replays reproduce; set a secret one per sensor.
    hash_key: bytes = DEFAULT_KEY
    # The model detector (dnsguard.detect.model, docs/model.md): None = the shipped default.
    use_model: bool = True
    model: Path | None = None
    model_state: Path | None = None  # checkpoint of what it learned online; resumed at start
    feedback: Path | None = None  # analyst verdicts (``dnsguard label``), JSON lines
    learn_from_rules: bool = False  # also learn from high-severity rule verdicts
    checkpoint_every: float = 300.0  # seconds between checkpoints (when model_state is set)
    # The long-horizon model (dnsguard.detect.longmodel): judged on due long-horizon keys.
    # None = the shipped file when present; off with use_model (rules only) too.
    use_long_model: bool = True
    long_model: Path | None = None
    # Time series per client and registered domain (dnsguard.series, docs/timeseries.md).
    series: bool = True  # keep the series (needed by the volume detectors and --report)
    volume_alerts: bool = True  # run the detectors when a step closes: dns_volume_anomaly
    series_step: float = 60.0  # seconds per step (capture time)
    series_span: float = 86400.0  # history kept per series (ring buffer), seconds
    series_keys: int = 64  # tracked clients and tracked domains (each), plus "other"
    # Long-horizon state (dnsguard.features.horizon, docs/detection.md): per registered domain
    # and per client → domain over hours, for low-and-slow exfiltration and beacons.
    long_horizon: bool = True
    long_tau: float = 6 * 3600.0  # time constant of the decayed counters, seconds
    long_max_domains: int = 100_000  # keys kept; the least informative leave first
    long_max_pairs: int = 50_000
    long_state: Path | None = None  # checkpoint of the long-horizon state; resumed at start
