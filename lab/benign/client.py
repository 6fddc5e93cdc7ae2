"""A simulated host: its address, role, stub resolver, clock, and the seeded world it lives in.

Workload activities are ``async def activity(c: Client)`` functions; they ask names with
``c.q`` (one query), ``c.addr_lookup`` (A and AAAA in parallel, as getaddrinfo does) or
``c.browse_host`` (plus HTTPS/SVCB, as current browsers ask), and wait with ``c.sleep`` in
*simulated* seconds (divided by the run's speed-up factor on the wall clock).
"""

from __future__ import annotations

import asyncio
import random
import string
import uuid
from dataclasses import dataclass, field

import dns.message

from lab.benign.stub import Stub, texts

HEX = "0123456789abcdef"
LOWER = string.ascii_lowercase
ALNUM = string.ascii_lowercase + string.digits
B32 = "abcdefghijklmnopqrstuvwxyz234567"
B32HEX = "0123456789abcdefghijklmnopqrstuv"


def rand(rng: random.Random, n: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def rev4(ip: str) -> str:
    """Reversed-octet form used by PTR and IP DNSBLs.

    >>> rev4("192.0.2.10")
    '10.2.0.192'
    """
    return ".".join(reversed(ip.split(".")))


def public_ip(rng: random.Random) -> str:
    while True:
        a = rng.choice((24, 31, 37, 45, 62, 66, 71, 77, 78, 80, 81, 82, 84, 85, 86, 87, 89, 90,
                        91, 92, 93, 94, 95, 98, 104, 107, 108, 109, 145, 151, 173, 176, 178,
                        185, 188, 190, 193, 194, 195, 200, 201, 203, 209, 212, 213, 217))
        return f"{a}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


@dataclass
class World:
    """Everything a seed decides once for all clients: the organisation and its neighbours."""
    seed: int
    rng: random.Random
    company: str
    ad_domain: str            # AD DNS domain (= forest root here)
    ad_guid: str              # the domain GUID (DC locator by GUID)
    sites: list[str]
    dsa_guids: list[str]      # DCs' DSA GUIDs (<guid>._msdcs CNAMEs)
    mail_domain: str
    tenant: str               # Microsoft 365 / SharePoint tenant label
    partners: list[str]       # companies mailing and being mailed
    k8s_namespaces: list[str]
    k8s_services: list[tuple[str, str]]
    consul_services: list[str]
    region: str
    buckets: list[str]
    api_ids: list[str]
    isp_ranges: list[str]     # /24s of customer address space (a.b.c)
    internal_ranges: list[str]
    dhcp_hosts: list[str]
    ses_tokens: list[str]     # this company's own SES Easy-DKIM selectors
    extra: dict = field(default_factory=dict)


COMPANIES = ("fabrikam", "northwind", "contoso", "adatum", "tailspin", "wingtip", "litware",
             "proseware", "woodgrove", "lucerne", "margie", "treyresearch", "fourthcoffee",
             "alpineski", "blueyonder", "cohowinery", "graphicdesign", "humongous", "wideworld",
             "southridge", "relecloud", "bellows", "munson", "vanarsdel", "nodpublishers")
PARTNER_TLDS = ("com", "net", "org", "io", "co.uk", "de", "fr", "com.au", "ca", "nl", "it",
                "es", "ch", "se", "co", "us", "eu", "biz", "info", "co.jp")


def make_world(seed: int) -> World:
    rng = random.Random(f"world-{seed}")
    company = rng.choice(COMPANIES) + rng.choice(("", "-corp", "-group", "-labs", "-inc", "tech"))
    tld = rng.choice(("com", "net", "co.uk", "de", "org", "io"))
    ad_style = rng.randrange(4)
    ad_domain = (f"corp.{company}.{tld}", f"{company}.local", f"ad.{company}.internal",
                 f"{company}.lan")[ad_style]
    sites = ["Default-First-Site-Name"] + rng.sample(
        ["HQ", "NYC-Office", "Branch-Lyon", "LON-DC1", "Berlin", "SEA-Campus", "DR-Site",
         "Plant-02", "AMS", "Singapore", "Remote-Users"], rng.randint(1, 4))
    ns = ["default", "kube-system", "monitoring", "ingress-nginx", "cert-manager"] + rng.sample(
        ["payments", "checkout", "catalog", "search", "auth", "orders", "billing", "api",
         "frontend", "data", "ml", "notifications", "inventory"], rng.randint(3, 6))
    svc_names = ["redis", "postgres", "api", "web", "worker", "grpc-gateway", "kafka",
                 "zookeeper", "elasticsearch", "prometheus", "grafana", "alertmanager", "vault",
                 "memcached", "rabbitmq", "mysql", "mongodb", "minio", "keycloak", "envoy",
                 "user-service", "cart-service", "pricing", "recommendations", "mailer"]
    services = [("kube-dns", "kube-system"), ("metrics-server", "kube-system"),
                ("kubernetes", "default")]
    for n in ns[4:]:
        services += [(s, n) for s in rng.sample(svc_names, rng.randint(3, 7))]
    services += [("prometheus-server", "monitoring"), ("grafana", "monitoring"),
                 ("ingress-nginx-controller", "ingress-nginx"), ("cert-manager", "cert-manager")]
    region = rng.choice(("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"))
    buckets = [f"{company}-{x}" for x in rng.sample(
        ["prod-logs", "assets", "backups", "data-lake", "artifacts", "static-web", "ml-models",
         "terraform-state", "uploads", "reports"], 5)] + \
        [f"{company}-{rand(rng, 6, HEX)}-{rng.choice(['tmp', 'cache', 'etl'])}"]
    api_ids = [rand(rng, 10, LOWER + "0123456789") for _ in range(4)]
    partners = []
    for _ in range(60):
        base = rng.choice(COMPANIES)
        suffix = rng.choice(["", "", "shop", "mail", "global", "hq", "solutions", "sys", "direct"])
        sep = rng.choice(["", "-"]) if suffix else ""
        partners.append(f"{base}{sep}{suffix}.{rng.choice(PARTNER_TLDS)}")
    internal = [f"10.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(4)]
    dhcp = []
    for _ in range(80):
        k = rng.randrange(6)
        dhcp.append(("desktop-" + rand(rng, 7, LOWER.upper() + "0123456789").lower(),
                     "laptop-" + rand(rng, 7, ALNUM),
                     f"{rng.choice(['jsmith', 'mgarcia', 'lchen', 'apatel', 'kmuller', 'tnguyen'])}"
                     f"-{rng.choice(['mbp', 'macbook-pro', 'iphone', 'ipad', 'pc'])}",
                     "android-" + rand(rng, 16, HEX),
                     f"npi{rand(rng, 6, HEX)}",          # HP printers' default host names
                     f"sep{rand(rng, 12, HEX)}")[k])     # Cisco IP phones: SEP<MAC>
    return World(
        seed=seed, rng=rng, company=company, ad_domain=ad_domain, ad_guid=str(uuid.UUID(
            int=rng.getrandbits(128), version=4)),
        sites=sites, dsa_guids=[str(uuid.UUID(int=rng.getrandbits(128), version=4))
                                for _ in range(3)],
        mail_domain=f"{company}.{tld}", tenant=company.replace("-", ""),
        partners=partners, k8s_namespaces=ns, k8s_services=services,
        consul_services=rng.sample(["web", "api", "db", "cache", "payments", "auth", "queue",
                                    "search", "billing", "vault", "nomad-client"], 6),
        region=region, buckets=buckets, api_ids=api_ids,
        isp_ranges=[f"{public_ip(rng).rsplit('.', 1)[0]}" for _ in range(6)],
        internal_ranges=internal, dhcp_hosts=dhcp,
        ses_tokens=[rand(rng, 32, B32) for _ in range(3)])


class Client:
    """One simulated host (see the module docstring)."""

    def __init__(self, addr: str, role: str, world: World, stub: Stub, speed: float,
                 rng: random.Random, profile: dict) -> None:
        self.addr, self.role, self.world = addr, role, world
        self.stub, self.speed, self.rng = stub, speed, rng
        self.profile = profile
        self.tasks: set[asyncio.Task] = set()

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds) / self.speed)

    async def q(self, name: str, qtype: str = "A", **kw) -> dns.message.Message | None:
        return await self.stub.query(name, qtype, **kw)

    async def addr_lookup(self, name: str, aaaa: bool = True) -> dns.message.Message | None:
        """getaddrinfo: A and AAAA sent together (glibc, Windows, macOS)."""
        if not aaaa:
            return await self.q(name, "A")
        a, _ = await asyncio.gather(self.q(name, "A"), self.q(name, "AAAA"))
        return a

    async def browse_host(self, name: str) -> dns.message.Message | None:
        """A browser's lookup: A, AAAA and (Chrome, Firefox, Safari since ~2023) HTTPS."""
        if self.profile.get("https_rr", True):
            a, _, _ = await asyncio.gather(self.q(name, "A"), self.q(name, "AAAA"),
                                           self.q(name, "HTTPS"))
            return a
        return await self.addr_lookup(name)

    async def search(self, name: str, suffixes: list[str], ndots: int,
                     aaaa: bool = True) -> dns.message.Message | None:
        """A stub's search list (resolv.conf ``search``/``ndots``): try suffixes, then as is."""
        tries = ([f"{name}.{s}" for s in suffixes] + [name]) if name.count(".") < ndots else \
            ([name] + [f"{name}.{s}" for s in suffixes])
        for t in tries:
            r = await self.addr_lookup(t, aaaa)
            if r is not None and r.rcode() == 0 and r.answer:
                return r
        return None

    def spawn(self, coro) -> None:
        """Run an activity concurrently (bounded per client: the oldest work is not waited)."""
        if len(self.tasks) > 64:
            coro.close()
            return
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)


__all__ = ["Client", "World", "make_world", "rand", "rev4", "public_ip", "texts",
           "HEX", "LOWER", "ALNUM", "B32", "B32HEX"]
