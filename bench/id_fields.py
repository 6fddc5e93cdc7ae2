"""Which hyphen-joined labels read as generated resource ids, and which count as encoded
(docs/detection.md, "Cloud resource names"): ``payload._resource_id`` and
``payload._looks_encoded`` on 10,000 labels of each shape, real ids and data cut into
hyphen-joined fields.

    DNSGUARD_PURE=1 python bench/id_fields.py [N]

Real shapes, each format from its documentation (the sources are in payload.py): AWS
interface endpoints ``vpce-<17 hex>-<8>`` and their zonal form ``…-<region><az>``, EC2
``i-``/``eni-<17 hex>``, load balancers ``<name>-<16 hex>`` and ``k8s-<ns>-<name>-<10 hex>``,
Kubernetes pods ``<deployment>-<hash 10>-<5>`` (alphabet bcdfghjklmnpqrstvwxz2456789), AKS
``<prefix>-<8 hex>``, Cloud Run ``<svc>-<10>-<region code>``, IPv6 with dashes. Channels:
Base32, hex and Base64url (lower-cased, as a 0x20 resolver may leave them) in labels of 24-63
octets cut every 4-17 characters. Seeded: the same numbers every run. Takes a few seconds.
"""

from __future__ import annotations

import base64
import random
import sys

from dnsguard.features.payload import _looks_encoded, _resource_id

K8S = "bcdfghjklmnpqrstvwxz2456789"
AL = "abcdefghijklmnopqrstuvwxyz0123456789"
WORDS = ("api", "web", "gateway", "billing", "ingress", "nginx", "controller", "kube",
         "prometheus", "stack", "operator", "coredns", "metrics", "server", "redis", "worker")
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2", "us-west-2", "eu-central-1")


def _r(rnd, al, k):
    return "".join(rnd.choices(al, k=k))


def real(rnd) -> dict:
    hx = "0123456789abcdef"
    return {
        "vpce": lambda: f"vpce-{_r(rnd, hx, 17)}-{_r(rnd, AL, 8)}",
        "vpce zonal": lambda: f"vpce-{_r(rnd, hx, 17)}-{_r(rnd, AL, 8)}-{rnd.choice(REGIONS)}"
                              f"{rnd.choice('abc')}",
        "i-/eni-": lambda: f"{rnd.choice(('i', 'eni'))}-{_r(rnd, hx, 17)}",
        "nlb": lambda: f"{'-'.join(rnd.sample(WORDS, rnd.randint(1, 2)))}-{_r(rnd, hx, 16)}",
        "alb controller": lambda: f"k8s-{rnd.choice(WORDS)}-{rnd.choice(WORDS)[:8]}-"
                                  f"{_r(rnd, hx, 10)}",
        "k8s pod": lambda: f"{'-'.join(rnd.sample(WORDS, rnd.randint(1, 3)))}-"
                           f"{_r(rnd, K8S, rnd.choice((9, 10)))}-{_r(rnd, K8S, 5)}",
        "aks": lambda: f"{rnd.choice(WORDS)}-{rnd.choice(WORDS)}-dns-{_r(rnd, hx, 8)}",
        "cloud run": lambda: f"{'-'.join(rnd.sample(WORDS, rnd.randint(1, 2)))}-"
                             f"{_r(rnd, AL, 10)}-{rnd.choice(('uc', 'ew', 'an'))}",
        "ipv6 dashed": lambda: "-".join(f"{rnd.getrandbits(16):x}" for _ in range(8)),
    }


def channel(rnd, enc: str, length: int, field: int) -> str:
    raw = rnd.randbytes(64)
    if enc == "base32":
        s = base64.b32encode(raw).decode().rstrip("=").lower()
    elif enc == "hex":
        s = raw.hex()
    else:
        s = base64.urlsafe_b64encode(raw).decode().rstrip("=").lower()
    s = s.replace("-", "").replace("_", "")
    out, i = [], 0
    while sum(len(x) + 1 for x in out) < length:
        out.append(s[i:i + field])
        i += field
    return "-".join(out)[:length].strip("-")


def main(n: int) -> None:
    rnd = random.Random(7)
    print(f"{'shape':32} {'resource id':>11} {'encoded':>8}")
    for name, make in real(rnd).items():
        labels = [make().encode() for _ in range(n)]
        rid = sum(_resource_id(x) for x in labels) / n
        enc = sum(_looks_encoded(x, len(x), 0) for x in labels) / n
        print(f"{name:32} {rid:11.4f} {enc:8.4f}")
    for enc_name in ("base32", "hex", "base64url"):
        for length in (24, 32, 40, 63):
            for field in (4, 6, 8, 12, 17):
                labels = [channel(rnd, enc_name, length, field).encode() for _ in range(n)]
                rid = sum(_resource_id(x) for x in labels) / n
                enc = sum(_looks_encoded(x, len(x), 0) for x in labels) / n
                print(f"{enc_name + f' {length} octets, fields of {field}':32} "
                      f"{rid:11.4f} {enc:8.4f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
