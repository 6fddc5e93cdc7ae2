"""Settings shared by replay and the daemon, with the defaults both use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_RULES = Path(__file__).parent / "data" / "rules"


@dataclass
class Settings:
    ports: frozenset[int] = frozenset({53})
    window: float = 300.0  # seconds per traffic window
    suppress: float = 3600.0  # one alert per key per this many seconds
    max_domains: int = 20_000  # LRU caps on tracked keys per scope
    max_client_domains: int = 20_000
    max_clients: int = 10_000
    max_flows: int = 4_096
    exact_cap: int = 64  # distinct counts are exact up to this, HyperLogLog past it
    tcp_max_flows: int = 4_096
    tcp_max_bytes: int = 16 << 20
    rules: Path = field(default_factory=lambda: DEFAULT_RULES)
    sensor: str = ""
