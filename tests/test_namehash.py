"""The keyed name hash (dnsguard/features/namehash.py) and what it is for: the same capture
replayed in two processes gives the same alerts, whatever Python's own hash seed.

Cost: the hash checks < 1 s; the replays ~4 runs of the bundled sample (a few seconds each
compiled) and 2 of one corpus capture under 3 MB (skipped when the corpus is absent).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from dnsguard.features import namehash as nh

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"  # beside the checkout, as tests/test_compiled.py


def _cpython_key(seed: int) -> bytes:
    """The SipHash key CPython derives from PYTHONHASHSEED=seed (Python/bootstrap_hash.c:
    0 disables randomization, a zero secret; else lcg_urandom, whose first 16 octets are
    k0, k1)."""
    if seed == 0:
        return bytes(16)
    x, out = seed, bytearray()
    for _ in range(16):
        x = (x * 214013 + 2531011) & 0xFFFFFFFF
        out.append((x >> 16) & 0xFF)
    return bytes(out)


@pytest.fixture
def restore_key():
    before = nh.current_key()
    yield
    nh.set_key(before)


def test_hash_is_cpython_siphash13_under_the_same_key(restore_key) -> None:
    """An independent implementation: CPython hashes bytes (and ASCII str) with SipHash-1-3
    (sys.hash_info.algorithm 'siphash13', Python >= 3.11). Under the key a hash seed gives,
    ours equals CPython's hash() for every length around the 8-octet word boundaries, names
    and non-ASCII octets; with the zero default key, PYTHONHASHSEED=0's."""
    if sys.hash_info.algorithm != "siphash13":
        pytest.skip(f"this Python hashes with {sys.hash_info.algorithm}, not siphash13")
    rng = random.Random(5)
    samples = [bytes(rng.randrange(256) for _ in range(n)) for n in range(1, 42)]
    samples += [b"www.example.com", "dnsguard.bücher.de".encode(), b"x" * 255]
    for seed in (0, 1, 4242):
        out = subprocess.run([sys.executable, "-c", f"for s in {samples!r}: print(hash(s))"],
                             env={"PYTHONHASHSEED": str(seed)}, capture_output=True, text=True,
                             check=True).stdout.split()
        nh.set_key(_cpython_key(seed))
        assert [nh.hash_bytes(s) for s in samples] == [int(x) for x in out], seed
    nh.set_key(nh.DEFAULT_KEY)
    assert nh.DEFAULT_KEY == _cpython_key(0) == bytes(16)
    assert nh.hash_str("www.example.com") == nh.hash_bytes(b"www.example.com")


def test_key_changes_every_hash_and_is_parsed_strictly(restore_key) -> None:
    names = [f"n{i}.example.com" for i in range(200)]
    nh.set_key(nh.DEFAULT_KEY)
    a = [nh.hash_str(x) for x in names]
    nh.set_key(nh.parse_key("000102030405060708090a0b0c0d0e0f"))
    b = [nh.hash_str(x) for x in names]
    assert len(set(a)) == len(set(b)) == 200 and not set(a) & set(b)
    for bad in ("", "00" * 15, "00" * 17, "zz" * 16):
        with pytest.raises(ValueError):
            nh.parse_key(bad)
    with pytest.raises(ValueError):
        nh.set_key(b"short")


def _replay(paths: list[Path], seed: int, tmp: Path) -> list[str]:
    env = dict(os.environ, PYTHONHASHSEED=str(seed))
    out = tmp / f"alerts-{seed}.jsonl"
    subprocess.run([sys.executable, "-m", "dnsguard", "replay", "-q", "--alerts", str(out),
                    *map(str, paths)], check=True, env=env, cwd=ROOT, capture_output=True,
                   timeout=600)
    return sorted(json.dumps(json.loads(x), sort_keys=True)
                  for x in out.read_text().splitlines())


def test_bundled_sample_gives_the_same_alerts_under_two_hash_seeds(tmp_path) -> None:
    """With Python's salted hash() behind the sketches, every seed gave other records on this
    stream: HyperLogLog estimates moved (one key's ``distinct_names`` 168 under seed 0, 186
    under seed 1) and with them the model's reasons; after one retrain 3 of 32 seeds lost a
    model record (38423c8: tests/test_alert_fields.py had to pin a seed). Now the records are
    the same whatever the seed."""
    paths = sorted((ROOT / "pcaps").glob("*.pcap"))
    a, b = _replay(paths, 1, tmp_path), _replay(paths, 2, tmp_path)
    assert a, "the bundled captures hold tunnels"
    assert a == b


@pytest.mark.corpus
def test_corpus_capture_gives_the_same_alerts_under_two_hash_seeds(tmp_path) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} not found (the shared corpus sits beside the checkout)")
    # the largest capture under 3 MB: most names, so most sketches past their exact cap
    picks = sorted((p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng")
                    and p.stat().st_size < 3_000_000), key=lambda p: p.stat().st_size)
    assert picks, f"no capture under 3 MB in {CORPUS}"
    a, b = _replay(picks[-1:], 1, tmp_path), _replay(picks[-1:], 2, tmp_path)
    assert a == b


def test_the_cli_and_the_pipeline_apply_the_key(restore_key, ruleset) -> None:
    """``--hash-key`` reaches Settings and a Pipeline hashes with it from its start (workers
    each build theirs from the one configuration); a bad key is refused by the parser."""
    from dnsguard import cli
    from dnsguard.pipeline import Pipeline

    ap = cli.build_parser()
    s = cli._settings(ap.parse_args(["replay", "--hash-key", "ff" * 16, "x.pcap"]))
    assert s.hash_key == b"\xff" * 16
    Pipeline(s, ruleset, [].append)
    assert nh.current_key() == b"\xff" * 16
    assert cli._settings(ap.parse_args(["replay", "x.pcap"])).hash_key == nh.DEFAULT_KEY
    with pytest.raises(SystemExit):
        ap.parse_args(["replay", "--hash-key", "not-hex", "x.pcap"])
