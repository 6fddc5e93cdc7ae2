"""Synthetic tunnels for TRAINING ONLY: domain randomisation of how a channel writes data into
names (issue #12 point 3).

    python -m lab.synth --out /work/scratch/synth --seeds 1-24

The model learnt the tunnel *kinds* it was shown (held out as a generator, the lab's evasive
tunnels were 0/25 for the model alone: docs/model.md). So this module draws, per tunnel, a
random channel from a wide parametric family and writes its queries and answers straight to a
pcap file, so the tree sees many ways of moving data (alphabets, label lengths, rates, record
types) and has to split on what they share: new data per name and per second, new labels,
name-length variance, distinct names that keep growing. It is written without reference to
``lab/evasive.py``'s kinds, so the evasive generator and the corpus' real tools stay held-out
tests of generalisation.

**What is synthetic** (say so wherever a number depends on it): no resolver, no authority, no
network. Packets are made here (Ethernet/IPv4/UDP, dnspython messages) with fabricated
answers; timing is drawn, not measured; there is no benign background in these files (every
key is a tunnel's, so the benign side of training stays the corpus and the lab's benign
generator). Use these files for training only, never to report detection.

Per tunnel, drawn independently (``Channel.draw``):

* alphabet: one of Base16/32/36/62/64url-like character sets in either case, digits only,
  random consonant-vowel syllable grammars, or a random pseudo-word dictionary (words joined
  by ``-``, nothing, or dots) — data is random (compressed or encrypted), so symbols are
  uniform;
* data per name (4-140 octets), longest label (6-63), an optional counter or session label,
  an optional word prefix (``<word>-`` or ``<word>.``);
* one registered domain (optionally a sub-zone) or data spread over 2-60 domains;
* rate (0.03-20 queries/s, Poisson or a jittered sleep), record types (A, AAAA, TXT, CNAME,
  MX, NULL mixes), answer sizes, NXDOMAIN share, retransmissions;
* 3-30 simulated minutes, at most ``MAX_QUERIES`` queries;
* with ``--slow`` (the long-horizon model's training: detect/longmodel.py), the same
  channels drawn the same way, then slowed: one query every 20-150 s (as a careful
  exfiltration or a sleeping beacon), for 60-150 simulated minutes
  (``synth_slow_s<seed>.pcap``, another random stream than the fast files' seeds); 3 in 10
  single-domain channels spread over 2-6 hosts (a multi-host trickle).

Outputs ``synth_s<seed>.pcap``, ``truth.yaml`` (corpus format: a single-domain tunnel by its
zone, a spread one by its client), ``MANIFEST.md`` (``source repo`` ``dnsguard-lab/synth``)
and ``manifest.json`` with every drawn parameter. Deterministic by seed; ~2 s per seed
(60 seeds: 105 s wall on the shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import string
import struct
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

MAX_QUERIES = 4000
RESOLVER = "10.66.0.53"
TLDS = ("com", "net", "org", "io", "info", "biz", "co", "xyz", "site", "online", "us", "de")
_CONS = "bcdfghjklmnpqrstvwxz"
_VOWS = "aeiouy"


def _pseudo_word(rng: random.Random, lo: int = 2, hi: int = 4) -> str:
    """A pronounceable made-up word of lo..hi syllables (no dictionary on purpose)."""
    out = []
    for _ in range(rng.randint(lo, hi)):
        out.append(rng.choice(_CONS) + rng.choice(_VOWS) + (rng.choice(_CONS)
                                                            if rng.random() < 0.4 else ""))
    return "".join(out)


def _domain(rng: random.Random) -> str:
    w = _pseudo_word(rng, 1, 3)
    if rng.random() < 0.3:
        w += str(rng.randint(1, 999))
    if rng.random() < 0.2:
        w += "-" + _pseudo_word(rng, 1, 2)
    return f"{w}.{rng.choice(TLDS)}"


@dataclass
class Channel:
    """One synthetic tunnel's parameters (all drawn by :meth:`draw`)."""

    alphabet: str  # kind of symbols: "charset", "syllables", "words"
    symbols: list[str]  # the symbol inventory
    joiner: str  # between words ("" for characters and syllables)
    octets: int  # data octets per name
    max_label: int
    counter: str  # "", "hex", "dec": a sequence label first
    prefix: str  # "" or a word with its separator
    domains: list[str]
    zone: str  # sub-zone label under each domain ("" = the registered domain)
    rate: float
    regular: bool  # jittered sleep instead of Poisson arrivals
    qtypes: dict[str, float]
    answer_octets: int  # TXT/NULL answer size
    nx_share: float
    retransmit: float
    minutes: float
    client: str = ""
    hosts: int = 1  # clients sharing the channel (--slow only: a multi-host trickle)
    stats: dict = field(default_factory=dict)

    @classmethod
    def draw(cls, rng: random.Random, client: str, slow: bool = False) -> Channel:
        a = rng.random()
        joiner = ""
        if a < 0.55:
            alphabet = "charset"
            base = rng.choice([string.hexdigits[:16], "abcdefghijklmnopqrstuvwxyz234567",
                               string.ascii_lowercase + string.digits,
                               string.ascii_letters + string.digits,
                               string.ascii_letters + string.digits + "-_", string.digits,
                               string.ascii_lowercase])
            if rng.random() < 0.3 and base.islower():
                base = base.upper()
            symbols = sorted(set(base))
        elif a < 0.8:
            alphabet = "syllables"
            cons = rng.sample(_CONS, rng.randint(6, len(_CONS)))
            vows = rng.sample(_VOWS, rng.randint(2, len(_VOWS)))
            shape = rng.choice(["cv", "cvc", "vc", "cvv"])
            syl = set()
            while len(syl) < min(256, len(cons) * len(vows) * (len(cons) if shape == "cvc"
                                                               else 1)):
                s = "".join(rng.choice(cons) if ch == "c" else rng.choice(vows)
                            for ch in shape)
                syl.add(s)
            symbols = sorted(syl)
        else:
            alphabet = "words"
            n = rng.choice([64, 256, 1024, 4096])
            words: set[str] = set()
            while len(words) < n:
                words.add(_pseudo_word(rng, 1, 3))
            symbols = sorted(words)
            joiner = rng.choice(["-", "", "-", "."])
        spread = rng.random() < 0.2
        doms = [_domain(rng) for _ in range(rng.randint(2, 60) if spread else 1)]
        types = rng.choice([{"A": 1.0}, {"A": 0.7, "AAAA": 0.3}, {"TXT": 1.0},
                            {"CNAME": 0.5, "TXT": 0.5}, {"MX": 0.6, "A": 0.4},
                            {"NULL": 1.0}, {"A": 0.5, "TXT": 0.5}, {"AAAA": 1.0}])
        return cls(alphabet=alphabet, symbols=symbols, joiner=joiner,
                   octets=int(math.exp(rng.uniform(math.log(4), math.log(140)))),
                   max_label=rng.choice([8, 10, 12, 16, 20, 24, 32, 40, 52, 63]),
                   counter=rng.choice(["", "", "", "hex", "dec"]),
                   prefix=(_pseudo_word(rng, 1, 2) + rng.choice(["-", "."])
                           if rng.random() < 0.25 else ""),
                   domains=doms, zone=_pseudo_word(rng, 1, 1) if rng.random() < 0.3 else "",
                   rate=math.exp(rng.uniform(math.log(0.03), math.log(20))),
                   regular=rng.random() < 0.3, qtypes=types,
                   answer_octets=rng.choice([0, 16, 64, 160, 220]),
                   nx_share=rng.choice([0.0, 0.0, 0.0, 0.5, 1.0]),
                   retransmit=rng.choice([0.0, 0.0, 0.02, 0.1]),
                   minutes=rng.uniform(3, 30), client=client)._slowed(rng, slow)

    def _slowed(self, rng: random.Random, slow: bool) -> Channel:
        """Low and slow: one query every 20-150 s for 60-150 minutes (``--slow``)."""
        if slow:
            self.rate = 1.0 / math.exp(rng.uniform(math.log(20), math.log(150)))
            self.minutes = rng.uniform(60, 150)
            self.retransmit = 0.0
            if len(self.domains) == 1 and rng.random() < 0.3:
                self.hosts = rng.randint(2, 6)  # the data spread over hosts, each quieter
        return self

    def host(self, rng: random.Random) -> str:
        """The client sending the next query: one of ``hosts`` addresses."""
        if self.hosts == 1:
            return self.client
        a, b, c, d = self.client.split(".")
        return f"{a}.{b}.{c}.{int(d) + 20 * rng.randrange(self.hosts)}"

    def encode(self, rng: random.Random) -> str:
        """The data part of one name: ``octets`` random octets written in the symbols."""
        bits = self.octets * 8
        per = math.log2(len(self.symbols))
        n = max(1, math.ceil(bits / per))
        seq = [rng.choice(self.symbols) for _ in range(n)]
        if self.alphabet == "words" and self.joiner:
            text = self.joiner.join(seq)
        else:
            text = "".join(seq)
        return text

    def name(self, rng: random.Random, seq: int) -> str:
        data = self.encode(rng)
        # Cut into labels of at most max_label (a joiner "." already made labels).
        labels: list[str] = []
        for part in data.split("."):
            while part:
                labels.append(part[:self.max_label].strip("-") or "x")
                part = part[self.max_label:]
        if self.counter == "hex":
            labels.insert(0, f"{seq & 0xFFFF:x}")
        elif self.counter == "dec":
            labels.insert(0, str(seq))
        if self.prefix:
            if self.prefix.endswith("."):
                labels.insert(0, self.prefix[:-1])
            else:
                labels[0] = (self.prefix + labels[0])[:63]
        dom = rng.choice(self.domains)
        tail = f"{self.zone}.{dom}" if self.zone else dom
        # Stay inside 253 octets: drop data labels from the end.
        while labels and len(".".join(labels)) + 1 + len(tail) > 250:
            labels.pop()
        return ".".join(labels + [tail])


# --- packets ----------------------------------------------------------------------------
def _ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                      _ip4(src), _ip4(dst))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + hdr + udp


_QTYPE = {"A": 1, "NS": 2, "CNAME": 5, "MX": 15, "NULL": 10, "TXT": 16, "AAAA": 28}


def _wire_name(name: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".") if x) + b"\0"


def _messages(name: str, qtype: str, qid: int, ch: Channel, rng: random.Random):
    """A query and its answer in wire format (RFC 1035 4.1; written here: dnspython's
    renderer took ~10 ms per message with these long names). The answer's owner is a
    compression pointer to the question (0xC00C)."""
    t = _QTYPE[qtype]
    edns = rng.random() < 0.7
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0) if edns else b""
    question = _wire_name(name) + struct.pack("!HH", t, 1)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0) + question + opt
    if rng.random() < ch.nx_share:
        return q, struct.pack("!HHHHHH", qid, 0x8183, 1, 0, 0, 1 if edns else 0) + question + opt
    if qtype == "A":
        rdata = rng.randbytes(4)
    elif qtype == "AAAA":
        rdata = rng.randbytes(16)
    elif qtype == "TXT":
        n = min(max(1, ch.answer_octets), 255)
        rdata = bytes([n]) + "".join(rng.choice(string.ascii_letters + string.digits)
                                     for _ in range(n)).encode()
    elif qtype in ("CNAME", "MX"):
        target = _wire_name(f"{ch.encode(rng)[:60].strip('-.') or 'x'}.{ch.domains[0]}")
        rdata = (struct.pack("!H", 10) if qtype == "MX" else b"") + target
    else:  # NULL: opaque octets
        rdata = rng.randbytes(max(1, ch.answer_octets))
    rr = struct.pack("!HHHIH", 0xC00C, t, 1, 0, len(rdata)) + rdata
    r = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 1 if edns else 0) + question + rr + opt
    return q, r


def tunnel_frames(ch: Channel, rng: random.Random, t0: float) -> list[tuple[float, bytes]]:
    """Query and answer frames of one channel, with their times."""
    out: list[tuple[float, bytes]] = []
    t = t0
    end = t0 + ch.minutes * 60
    seq = rng.randrange(1 << 16)
    sent = 0
    types, weights = zip(*ch.qtypes.items(), strict=True)
    while t < end and sent < MAX_QUERIES:
        seq += 1
        name = ch.name(rng, seq)
        qtype = rng.choices(types, weights)[0]
        qw, rw = _messages(name, qtype, rng.randrange(65536), ch, rng)
        sport = rng.randrange(20000, 65000)
        src = ch.host(rng)
        for _ in range(2 if rng.random() < ch.retransmit else 1):
            out.append((t, frame(src, RESOLVER, sport, 53, qw)))
            sent += 1
        out.append((t + rng.uniform(0.002, 0.08), frame(RESOLVER, src, 53, sport, rw)))
        gap = 1.0 / ch.rate
        t += gap * rng.uniform(0.5, 1.5) if ch.regular else rng.expovariate(ch.rate)
    ch.stats = {"queries": sent}
    return out


def write_pcap(path: Path, frames: list[tuple[float, bytes]]) -> None:
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for t, b in sorted(frames, key=lambda f: f[0]):
            s = int(t)
            fh.write(struct.pack("<IIII", s, int((t - s) * 1e6), len(b), len(b)) + b)


def generate_one(out: Path, seed: int, tunnels: int = 4, slow: bool = False) -> dict:
    rng = random.Random(f"synth-slow-{seed}" if slow else f"synth-{seed}")
    t0 = 1_780_000_000.0 + seed * 7200
    chans = []
    frames: list[tuple[float, bytes]] = []
    for i in range(tunnels):
        ch = Channel.draw(rng, f"10.66.{seed % 250 + 1}.{i + 10}", slow=slow)
        frames += tunnel_frames(ch, rng, t0 + rng.uniform(0, 60))
        chans.append(ch)
    name = f"synth_slow_s{seed}.pcap" if slow else f"synth_s{seed}.pcap"
    write_pcap(out / name, frames)
    tl = []
    for ch in chans:
        d = asdict(ch)
        d["symbols"] = len(ch.symbols)
        d["domains"] = ch.domains if len(ch.domains) <= 3 else f"{len(ch.domains)} domains"
        tl.append(d)
    return {"file": name, "seed": seed, "packets": len(frames), "channels": tl,
            "truth": [({"domain": (f"{c.zone}.{c.domains[0]}" if c.zone else c.domains[0]),
                        "kind": c.alphabet} if len(c.domains) == 1
                       else {"client": c.client, "kind": c.alphabet}) for c in chans]}


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += range(int(a), int(b) + 1)
        elif part.strip():
            out.append(int(part))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="synthetic tunnels for training only")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", default="1-24", help="e.g. 1-24 or 1,2,5")
    ap.add_argument("--tunnels", type=int, default=4, help="tunnels per capture")
    ap.add_argument("--slow", action="store_true",
                    help="low-and-slow channels: a query every 20-150 s for 1-2.5 h")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    entries = [generate_one(a.out, s, a.tunnels, a.slow) for s in _seeds(a.seeds)]
    (a.out / "manifest.json").write_text(json.dumps(
        {"generator": "python -m lab.synth (lab/synth.py): synthetic, training only",
         "captures": [{k: v for k, v in e.items() if k != "truth"} for e in entries]},
        indent=1, default=str))
    truth = {"captures": [{"file": e["file"], "class": "tunnel", "tool": "lab-synth",
                           "split": "train", "tunnels": e["truth"]} for e in entries]}
    (a.out / "truth.yaml").write_text(
        "# Synthetic training-only tunnels (python -m lab.synth; lab/synth.py). Every key in\n"
        "# these files is a tunnel's; never report detection on them.\n"
        + yaml.safe_dump(truth, sort_keys=False))
    rows = ["| file | source repo | class | split | seed |", "|---|---|---|---|---|"]
    rows += [f"| {e['file']} | dnsguard-lab/synth | tunnel | train | {e['seed']} |"
             for e in entries]
    (a.out / "MANIFEST.md").write_text("# Synthetic training-only tunnels\n\n"
                                       + "\n".join(rows) + "\n")
    print(f"wrote {len(entries)} capture(s) to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
