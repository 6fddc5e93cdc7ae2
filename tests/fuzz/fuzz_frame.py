"""atheris harness: decode_frame, then Pipeline.feed, on arbitrary frames.

The first input byte picks the link type (LINKTYPES), the rest is the frame. One pipeline
lives for the whole run (small state caps, so eviction paths run too, and the TCP reassembler
and windows see sequences of inputs); every 5,000 inputs it is finished (Pipeline.finish:
every key evaluated) and replaced. Nothing may raise. See README.md.
"""

from __future__ import annotations

import sys

try:
    import atheris
except ImportError:  # pytest --doctest-modules imports this file too; running it needs atheris
    atheris = None

#: The link types the first input byte chooses from (seeds.py writes seeds the same way).
LINKTYPES = (1, 101, 12, 14, 228, 229, 113, 276, 0, 108)
PORTS = frozenset({53})
state: dict = {"pipe": None, "n": 0}


def new_pipe():
    from dnsguard.detect.rules import load_dir
    from dnsguard.pipeline import Pipeline
    from dnsguard.settings import DEFAULT_RULES, Settings

    if "rules" not in state:
        state["rules"] = load_dir(DEFAULT_RULES)
    s = Settings(max_domains=256, max_client_domains=256, max_clients=128, max_flows=64,
                 exact_cap=16, tcp_max_flows=32, tcp_max_bytes=1 << 16, series_keys=8,
                 series_step=1.0, series_span=30.0, window=5.0, suppress=10.0)
    return Pipeline(s, state["rules"], lambda alert: None)


def one(data: bytes) -> None:
    from dnsguard.decode import packet as pk

    if not data:
        return
    lt = LINKTYPES[data[0] % len(LINKTYPES)]
    frame = data[1:]
    pk.decode_frame(lt, frame, len(frame), PORTS)
    pipe = state["pipe"]
    if pipe is None or state["n"] >= 5000:
        if pipe is not None:
            pipe.finish()
        pipe = state["pipe"] = new_pipe()
        state["n"] = 0
    state["n"] += 1
    ts = 1_700_000_000.0 + state["n"] * 0.01
    outcome = pipe.feed(ts, lt, frame, len(frame))
    assert outcome in pk.OUTCOMES, outcome


if __name__ == "__main__":
    with atheris.instrument_imports():  # every dnsguard module, before anything imports it
        import dnsguard.decode.packet  # noqa: F401
        import dnsguard.pipeline  # noqa: F401
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
