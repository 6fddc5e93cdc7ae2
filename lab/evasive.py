"""Evasive DNS tunnels, made to slip under dnsguard's rules (issue #12 part 3), run through the
lab's real resolver beside benign background traffic.

    sudo python -m lab.evasive --out lab/out/evasive --seeds 11,12,111 \\
        --minutes 20 --speed 10

Each seed makes one capture with five tunnels, each from its own client and (but ``spread``)
under its own registered domain, all moving random (compressed-looking) data upstream in A and
AAAA queries at moderate rates, plus the lab's benign workload on the other clients:

``short``   lowercase Base32 in labels of 10-14 characters, two per name: under the
            24-character bar of "encoded" labels and the 30-octet mean of
            ``unique-subdomain-volume``.
``words``   proquints (Wilbur, "Proquints: identifiers that are readable, spellable and
            pronounceable", https://arxiv.org/abs/0901.4016): 16 bits as consonant-vowel
            syllables (``lusab-babad``), low character entropy, two labels per name.
``spread``  Base32 labels of 20 characters over 40 registered domains, under 8 names per
            domain in any 5-minute window (the rules' distinct-name bar); no fixed domain, so
            the truth names it by its client address.
``prefix``  lowercase Base32 after a legitimate-looking prefix (``img-``, ``cdn-``…) in a
            20-character label under ``static.<domain>``.
``slow``    like ``short`` at a third of the rate (one query every ~3 s).

The client sends real queries (dnspython messages over UDP, one socket per tunnel, source
address its own) to the lab's Unbound, which resolves them at the stand-in authority; the
capture (client ↔ resolver link) is rescaled by ``--speed`` like the benign sets
(lab/README.md). Train seeds < 100, test seeds >= 100: never train on a test seed. Outputs
``evasive_lab_s<seed>.pcap.gz``, ``truth.yaml`` (corpus format, one tunnel per kind with its
``kind``), ``MANIFEST.md`` (a ``source repo`` column for bench/loso.py) and ``manifest.json``.
Costs ``minutes * 60 / speed`` s wall per seed plus ~10 s of lab set-up.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import socket
import sys
import threading
import time
from pathlib import Path

import yaml

KINDS = ("short", "words", "spread", "prefix", "slow")
RATE = {"short": 1.0, "words": 1.0, "spread": 1.0, "prefix": 1.0, "slow": 0.33}  # per second
SPREAD_DOMAINS = 40
TLDS = ("com", "net", "org", "io", "co", "info")
_WORDS = ("north", "river", "stone", "cloud", "maple", "pixel", "amber", "delta", "orbit",
          "cedar", "lumen", "quartz", "harbor", "summit", "vertex", "meadow", "signal", "atlas",
          "ember", "falcon", "granite", "helix", "indigo", "juniper", "kestrel", "lattice")
_PREFIXES = ("img-", "cdn-", "static-", "edge-", "assets-", "media-", "js-", "api-")
_CONS = "bdfghjklmnprstvz"
_VOWS = "aiou"


def proquint(word: int) -> str:
    """16 bits as a proquint (consonant vowel consonant vowel consonant).

    >>> proquint(0x7f00), proquint(0x0001)
    ('lusab', 'babad')
    """
    c, v = _CONS, _VOWS
    return (c[(word >> 12) & 15] + v[(word >> 10) & 3] + c[(word >> 6) & 15]
            + v[(word >> 4) & 3] + c[word & 15])


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def tunnel_domain(rng: random.Random) -> str:
    """A plausible registered domain, different per seed."""
    return f"{rng.choice(_WORDS)}{rng.choice(_WORDS)}{rng.randint(2, 99)}.{rng.choice(TLDS)}"


class Encoder:
    """Turns a byte stream into query names for one kind; ``names(data)`` yields them."""

    def __init__(self, kind: str, rng: random.Random) -> None:
        self.kind, self.rng = kind, rng
        self.domain = tunnel_domain(rng)
        self.domains = [tunnel_domain(rng) for _ in range(SPREAD_DOMAINS)]
        self.prefix = rng.choice(_PREFIXES)
        self.seq = 0

    def chunk_size(self) -> int:
        return {"short": 14, "slow": 14, "words": 7, "spread": 12, "prefix": 10}[self.kind]

    def name(self, chunk: bytes) -> str:
        """One query name carrying ``chunk`` (plus a 1-octet sequence number)."""
        self.seq = (self.seq + 1) & 0xFF
        data = bytes([self.seq]) + chunk
        k = self.kind
        if k in ("short", "slow"):
            s = _b32(data)  # 24 characters for 15 octets: two labels of 12
            half = len(s) // 2
            return f"{s[:half]}.{s[half:]}.{self.domain}"
        if k == "words":
            if len(data) % 2:
                data += b"\0"
            quints = [proquint(int.from_bytes(data[i:i + 2], "big"))
                      for i in range(0, len(data), 2)]
            labels = ["-".join(quints[i:i + 2]) for i in range(0, len(quints), 2)]
            return ".".join(labels) + f".{self.domain}"
        if k == "spread":
            return f"{_b32(data)}.{self.rng.choice(self.domains)}"
        if k == "prefix":
            return f"{self.prefix}{_b32(data)}"[:20] + f".static.{self.domain}"
        raise ValueError(f"unknown kind {k!r}")


def _query(name: str, qtype: str, qid: int) -> bytes:
    import dns.message

    q = dns.message.make_query(name, qtype, use_edns=0)
    q.id = qid
    return q.to_wire()


def run_tunnel(resolver: str, source: str, enc: Encoder, rate: float, sim_seconds: float,
               speed: float, deadline: float, rng: random.Random) -> dict:
    """Send ``enc``'s names for ``sim_seconds`` of simulated time at ``rate`` queries per
    simulated second (exponential gaps), waiting up to 1 s wall for each answer."""
    sent = answered = octets = 0
    end = min(time.time() + sim_seconds / speed, deadline)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((source, 0))
        sock.settimeout(1.0)
        while time.time() < end:
            chunk = rng.randbytes(enc.chunk_size())
            qtype = "AAAA" if rng.random() < 0.3 else "A"
            wire = _query(enc.name(chunk), qtype, rng.randrange(65536))
            try:
                sock.sendto(wire, (resolver, 53))
                sent += 1
                octets += len(chunk)
                sock.recvfrom(4096)
                answered += 1
            except OSError:  # timeouts, unreachable: the channel keeps going
                pass
            time.sleep(min(rng.expovariate(rate) / speed, 5.0))
    finally:
        sock.close()
    return {"sent": sent, "answered": answered, "payload_octets": octets}


def workload(ctx, seed: int, sim_seconds: float, speed: float, kinds: list[str],
             benign_roles: list[str]) -> dict:
    """In the client namespace (``Lab.call``): the tunnels in threads, the benign workload on
    the remaining clients in this thread."""
    from lab.benign.run import run_workload

    rng = random.Random(f"evasive-{seed}")
    tunnels = {}
    threads = []
    out: dict = {}
    for i, k in enumerate(kinds):
        enc = Encoder(k, random.Random(f"evasive-{seed}-{k}"))
        src = ctx.clients[len(ctx.clients) - 1 - i]
        tunnels[k] = {"client": src, "domain": enc.domain if k != "spread" else None,
                      "domains": enc.domains if k == "spread" else None,
                      "rate": RATE[k]}

        def go(k=k, enc=enc, src=src):
            out[k] = run_tunnel(ctx.resolver, src, enc, RATE[k], sim_seconds, speed,
                                ctx.deadline, random.Random(rng.random()))
        t = threading.Thread(target=go, daemon=True)
        t.start()
        threads.append(t)
    benign = {}
    if benign_roles:
        import dataclasses
        bctx = dataclasses.replace(ctx, clients=ctx.clients[:len(benign_roles)])
        benign = run_workload(bctx, seed, sim_seconds, speed, benign_roles)
    for t in threads:
        t.join(max(1.0, ctx.deadline - time.time()))
    for k, v in tunnels.items():
        v.update(out.get(k, {}))
    return {"tunnels": tunnels, "benign_queries": benign.get("queries_sent", 0)}


BENIGN_ROLES = ["laptop", "laptop", "laptop", "ad_workstation", "ad_workstation", "mail",
                "k8s_node", "iot", "web_server", "monitoring"]


def generate_one(out: Path, seed: int, minutes: float, speed: float, kinds=KINDS,
                 log=print) -> dict:
    from lab.capture import rescale
    from lab.topology import Lab, LabConfig

    sim = minutes * 60
    wall = sim / speed
    out.mkdir(parents=True, exist_ok=True)
    name = f"evasive_lab_s{seed}.pcap.gz"
    cfg = LabConfig(clients=len(BENIGN_ROLES) + len(kinds), seed=seed, seconds=wall + 180,
                    workdir=out / f".work-e{seed}")
    t0 = time.time()
    with Lab(cfg) as lab:
        raw = out / f".evasive_lab_s{seed}.raw.pcap"
        cap = lab.capture(raw)
        log(f"seed {seed}: {len(kinds)} tunnels, {sim:.0f} s simulated at {speed}x")
        res = lab.call(workload, lab.context(seconds=wall + 90), seed, sim, speed,
                       list(kinds), BENIGN_ROLES, timeout=wall + 120)
        time.sleep(1.0)
        cap.stop()
    n = rescale(raw, out / name, speed)
    raw.unlink()
    import shutil
    shutil.rmtree(cfg.workdir, ignore_errors=True)
    entry = {"file": name, "seed": seed, "split": "test" if seed >= 100 else "train",
             "simulated_seconds": sim, "time_factor": speed, "packets": n,
             "kernel_drops": cap.dropped, "wall_seconds": round(time.time() - t0, 1),
             "benign_roles": BENIGN_ROLES, "benign_queries": res["benign_queries"],
             "tunnels": res["tunnels"]}
    log(f"seed {seed}: {n} packets, " + ", ".join(
        f"{k} {v.get('sent', 0)} q" for k, v in res["tunnels"].items()))
    return entry


def write_index(out: Path, entries: list[dict]) -> None:
    man = out / "manifest.json"
    old = json.loads(man.read_text()) if man.exists() else {"captures": []}
    by = {e["file"]: e for e in old.get("captures", [])}
    by.update({e["file"]: e for e in entries})
    caps = [by[k] for k in sorted(by)]
    man.write_text(json.dumps({"generator": "python -m lab.evasive (lab/evasive.py)",
                               "captures": caps}, indent=1))
    truth = {"captures": []}
    for e in caps:
        tl = []
        for k, t in e["tunnels"].items():
            if t.get("domain"):
                tl.append({"domain": t["domain"], "client": t["client"], "kind": k})
            else:
                tl.append({"client": t["client"], "kind": k})
        truth["captures"].append({"file": e["file"], "class": "tunnel",
                                  "tool": "lab-evasive", "split": e["split"], "tunnels": tl})
    (out / "truth.yaml").write_text(
        "# Ground truth for lab-made evasive tunnels (python -m lab.evasive; lab/evasive.py).\n"
        "# Every other key in a capture is the lab's benign workload. split: train | test.\n"
        + yaml.safe_dump(truth, sort_keys=False))
    rows = ["| file | source repo | class | split | seed |", "|---|---|---|---|---|"]
    rows += [f"| {e['file']} | dnsguard-lab/evasive-s{e['seed']} | tunnel | {e['split']} | "
             f"{e['seed']} |" for e in caps]
    (out / "MANIFEST.md").write_text("# Lab-made evasive tunnels\n\n" + "\n".join(rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    from lab.netns import LabError, require_root

    ap = argparse.ArgumentParser(description="make lab evasive-tunnel captures (root)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "evasive")
    ap.add_argument("--seeds", default="11")
    ap.add_argument("--minutes", type=float, default=20.0, help="simulated minutes per seed")
    ap.add_argument("--speed", type=float, default=10.0)
    ap.add_argument("--kinds", default=",".join(KINDS))
    a = ap.parse_args(argv)
    why = require_root()
    if why:
        print(f"lab.evasive: {why}", file=sys.stderr)
        return 2
    kinds = [k for k in a.kinds.split(",") if k]
    if set(kinds) - set(KINDS):
        print(f"lab.evasive: --kinds: known kinds are {','.join(KINDS)}", file=sys.stderr)
        return 2
    entries = []
    for s in (int(x) for x in a.seeds.split(",") if x.strip()):
        try:
            entries.append(generate_one(a.out, s, a.minutes, a.speed, kinds))
        except LabError as e:
            print(f"lab.evasive: seed {s}: {e}", file=sys.stderr)
            write_index(a.out, entries)
            return 1
        write_index(a.out, entries)
    print(f"wrote {len(entries)} capture(s), truth file {a.out / 'truth.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
