"""The synthetic training-only tunnel source (lab/synth.py, issue #12 point 3): deterministic
by seed, varied across seeds, and its truth names every key it makes, so no synthetic window
is learnt as benign. ~10 s (most of it one replay), no root, no network."""

from __future__ import annotations

import math
import random
from pathlib import Path

import yaml

from dnsguard.detect.rules import load_dir
from dnsguard.evaluate import load_truth
from dnsguard.settings import Settings
from dnsguard.train import collect
from lab import synth


def _write(out: Path, seeds: str, tunnels: int = 2) -> None:
    assert synth.main(["--out", str(out), "--seeds", seeds, "--tunnels", str(tunnels)]) == 0


def test_same_seed_same_bytes(tmp_path: Path):
    _write(tmp_path / "a", "5")
    _write(tmp_path / "b", "5")
    a = (tmp_path / "a" / "synth_s5.pcap").read_bytes()
    assert a == (tmp_path / "b" / "synth_s5.pcap").read_bytes()
    _write(tmp_path / "c", "6")
    assert a != (tmp_path / "c" / "synth_s6.pcap").read_bytes()


def test_channels_vary_across_seeds():
    chans = [synth.Channel.draw(random.Random(f"t-{i}"), "10.66.1.1") for i in range(200)]
    assert {c.alphabet for c in chans} == {"charset", "syllables", "words"}
    assert min(c.max_label for c in chans) <= 10 and max(c.max_label for c in chans) >= 52
    assert min(c.rate for c in chans) < 0.1 and max(c.rate for c in chans) > 5
    assert any(len(c.domains) > 1 for c in chans) and any(len(c.domains) == 1 for c in chans)
    assert len({tuple(sorted(c.qtypes)) for c in chans}) >= 5
    # Each name carries its octets of data: symbols × log2(alphabet) ≥ 8 × octets.
    rng = random.Random(1)
    for c in chans[:40]:
        name = c.name(rng, 1)
        assert len(name) <= 253 and all(0 < len(x) <= 63 for x in name.split("."))
        data = c.encode(rng)
        n = len(data.split(c.joiner)) if c.joiner else len(data)
        if c.alphabet == "syllables":
            n = len(data) / len(c.symbols[0])
        assert n * math.log2(len(c.symbols)) >= 8 * c.octets - 1e-9


def test_truth_names_every_key(tmp_path: Path):
    """Replayed through the real pipeline, every snapshot of a synthetic capture is labelled
    tunnel (none benign): a channel the truth did not name would teach the model that a
    tunnel is benign traffic."""
    _write(tmp_path, "11", tunnels=3)
    doc = yaml.safe_load((tmp_path / "truth.yaml").read_text())
    assert {c["split"] for c in doc["captures"]} == {"train"}
    truth = load_truth(tmp_path / "truth.yaml")
    s = Settings()
    rules = load_dir(s.rules)  # the allowlist as training keeps it
    for name, t in truth.items():
        caps = collect(tmp_path / name, t, s, rules)
        labels = {y for _g, _s, _x, y, _q in caps.samples}
        assert caps.samples and labels == {1}, (name, labels)
