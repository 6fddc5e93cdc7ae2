"""More benign classes of real networks, each in its real name format (issue #12): data or
identifiers in names by design, from mail filters, VoIP, validating resolvers, cloud
clients, home routers and media servers. None may alert with the defaults; each workload
is replayed through the whole pipeline as ``tests/test_generalisation.py`` does (one run,
seed 5; the file costs about 60 s of CPU compiled, 3-4 minutes interpreted). Sources of
every name format are in the docstrings; the lab's benign generator (``lab/benign/``) makes
the same classes through a real resolver."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRRDNSKEY
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from test_generalisation import _pair, _uuid, alerts_for

B32 = "abcdefghijklmnopqrstuvwxyz234567"
T0 = 1_700_000_000.0


def _ip(rnd, first=None) -> str:
    a = first if first is not None else rnd.choice((24, 45, 66, 77, 82, 91, 104, 185, 203))
    return f"{a}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"


def _rev(ip: str) -> str:
    return ".".join(reversed(ip.split(".")))


def spf_macro_exists(rnd) -> list:
    """A mail relay evaluating SPF records that use macros, one name per connecting address:
    Salesforce publishes ``v=spf1 exists:%{i}._spf.mta.salesforce.com -all`` (its
    ``_spf.salesforce.com`` TXT, https://help.salesforce.com/s/articleView?id=000315520), so
    every message from a Salesforce MTA asks ``<ip>._spf.mta.salesforce.com``; RFC 7208
    section 7.4's example ``%{ir}.%{v}._spf.%{d2}`` gives ``<reversed ip>.in-addr._spf.<d>``.
    Beside them the relay's IP DNSBL lookups of the same address. ~1 message a second."""
    esps = [("13.110", "{i}._spf.mta.salesforce.com"), ("136.147", "{i}._spf.mta.salesforce.com"),
            ("198.2", "{ir}.in-addr._spf.mailer-cloud.example"),
            ("158.247", "{ir}.in-addr._spf.espmail.example")]
    out, t = [], T0
    for _ in range(700):
        pfx, fmt = rnd.choice(esps)
        ip = f"{pfx}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        t += rnd.expovariate(1.0)
        out += _pair("10.9.0.25", fmt.format(i=ip, ir=_rev(ip)), "A",
                     "127.0.0.2" if rnd.random() < 0.9 else None, t, rnd)
        out += _pair("10.9.0.25", f"{_rev(ip)}.zen.spamhaus.org", "A", None, t + 0.01, rnd)
    return out


def rspamd_email_hashes(rnd) -> list:
    """rspamd's email blocklist, on in its default configuration: every address in From,
    Reply-To and the body is looked up as a 32-character Base32 BLAKE2 hash,
    ``<hash>.email.rspamd.com`` (rspamd docs, modules/rbl: ``RSPAMD_EMAILBL { rbl =
    "email.rspamd.com"; hash = "blake2"; hash_format = "base32"; hash_len = 32 }``); and
    SpamAssassin's HashBL plugin, ``<sha1 hex>.ebl.msbl.org`` (Mail::SpamAssassin::Plugin::HashBL,
    ``check_hashbl_emails('ebl.msbl.org')``); URL domains the same way at
    ``<hash>.uribl.rspamd.com`` (``RSPAMD_URIBL``). Senders repeat (newsletters, colleagues)."""
    people = [f"user{i}@sender{i % 90}.example" for i in range(900)]
    out, t = [], T0
    for _ in range(900):
        t += rnd.expovariate(1 / 1.5)
        addrs = {people[min(int(rnd.paretovariate(0.7)) - 1, len(people) - 1)]
                 for _ in range(rnd.randint(1, 3))}
        for a in addrs:
            h = base64.b32encode(hashlib.blake2b(a.encode(), digest_size=20).digest())
            out += _pair("10.9.0.25", f"{h.decode().lower()}.email.rspamd.com", "A", None, t, rnd)
            if rnd.random() < 0.5:
                out += _pair("10.9.0.25", f"{hashlib.sha1(a.encode()).hexdigest()}.ebl.msbl.org",
                             "A", None, t + 0.002, rnd)
            t += 0.003
        for d in {f"link{min(int(rnd.paretovariate(0.8)), 500)}.example"
                  for _ in range(rnd.randint(0, 4))}:  # RSPAMD_URIBL: URL domains, hashed
            h = base64.b32encode(hashlib.blake2b(d.encode(), digest_size=20).digest())
            out += _pair("10.9.0.25", f"{h.decode().lower()}.uribl.rspamd.com", "A", None, t, rnd)
            t += 0.002
    return out


def hashbl_quiet_relay(rnd) -> list:
    """A small relay running SpamAssassin's HashBL plugin: the sender address of each
    message as ``<sha1 hex>.ebl.msbl.org`` (``check_hashbl_emails('ebl.msbl.org')``,
    Mail::SpamAssassin::Plugin::HashBL), a message every ~20 s for 20 minutes, every sender
    new: a slow trickle of new 43-character hex names from one client, the shape of
    slow-high-entropy-names. SHA-1 hex plus ``ebl`` averages ~3.79 bits per character against
    the rule's 3.8, so whether it alerted was chance: 12 of 40 seeds of this workload did
    (seed 5 among them), and lab seed 9103 did (3.802 over 56 names)."""
    out, t = [], T0
    for i in range(60):
        t += rnd.expovariate(1 / 20)
        local = rnd.choice(["info", "news", "sales", "noreply"])
        a = f"{local}{i}@sender{rnd.randrange(10**6)}.example"
        out += _pair("10.9.0.26", f"{hashlib.sha1(a.encode()).hexdigest()}.ebl.msbl.org", "A",
                     None, t, rnd)
    return out


def spamhaus_hbl(rnd) -> list:
    """Spamhaus DQS Hash Blocklist from a mail filter: email addresses as Base32 SHA-1
    (``<hash>._email.<key>.hbl.dq.spamhaus.net``), attachments as SHA-256 hex
    (``<sha256>._file.<key>.hbl.dq.spamhaus.net``), crypto wallets (``_cw``); and the same
    key's ZEN lookups (https://docs.spamhaus.com/datasets/docs/source/70-access-methods/data-query-service/,
    spamhaus/spamassassin-dqs ``sh.cf``)."""
    key = "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=26))
    out, t = [], T0
    for i in range(800):
        t += rnd.expovariate(1.0)
        k = rnd.random()
        if k < 0.5:
            h = base64.b32encode(hashlib.sha1(f"x{i}@s{i % 50}.example".encode()).digest())
            name = f"{h.decode().lower().rstrip('=')}._email.{key}.hbl.dq.spamhaus.net"
        elif k < 0.7:
            name = f"{rnd.getrandbits(256):064x}._file.{key}.hbl.dq.spamhaus.net"
        else:
            name = f"{_rev(_ip(rnd))}.{key}.zen.dq.spamhaus.net"
        out += _pair("10.9.0.25", name, "A", None, t, rnd)
    return out


def _nibbles(rnd, prefix: str) -> str:
    """The ip6.arpa name of an address in a /64 (RFC 3596 section 2.5): 32 nibble labels."""
    host = f"{rnd.getrandbits(64):016x}"
    return ".".join(reversed(prefix + host)) + ".ip6.arpa"


def ipv6_reverse(rnd) -> list:
    """IPv6 reverse lookups: a web server resolving its visitors' PTR (Apache
    ``HostnameLookups``, sshd ``UseDNS``) and a monitoring host resolving the neighbour table
    of a /64 (SLAAC/privacy addresses, RFC 8981: one new name per address), 32-nibble
    ``ip6.arpa`` names (RFC 3596 section 2.5), most with no PTR."""
    nets = [f"{rnd.getrandbits(64):016x}" for _ in range(12)]
    out, t = [], T0
    for _ in range(900):
        t += rnd.expovariate(1 / 0.6)
        c = "10.9.0.80" if rnd.random() < 0.6 else "10.9.0.90"
        out += _pair(c, _nibbles(rnd, rnd.choice(nets)), "PTR",
                     "host.example.net" if rnd.random() < 0.2 else None, t, rnd)
    return out


def enum_naptr(rnd) -> list:
    """A SIP proxy's ENUM lookups per call (RFC 6116: the E.164 number's digits reversed
    under ``e164.arpa``, NAPTR; OpenSIPS ``enum_query``: +35831234567 →
    ``7.6.5.4.3.2.1.3.8.5.3.e164.arpa``; Asterisk ``ENUMLOOKUP``), a call every ~2 s."""
    out, t = [], T0
    for _ in range(700):
        t += rnd.expovariate(1 / 2)
        cc = rnd.choice(("1", "44", "49", "33", "358", "61"))
        digits = cc + "".join(rnd.choices("0123456789", k=12 - len(cc)))
        out += _pair("10.9.0.60", ".".join(reversed(digits)) + ".e164.arpa", "NAPTR", None,
                     t, rnd)
    return out


def dnssec_validator_egress(rnd) -> list:
    """A validating resolver's upstream side (what a sensor on its egress sees): for each
    zone a cache miss walks, DS at the parent and DNSKEY at the zone with DO set (RFC 4035
    section 4.1, 5), big DNSKEY answers (a KSK and a ZSK, 260-byte RSA keys), besides the
    A/AAAA/NS it resolves."""
    zones = [f"site{i}.{rnd.choice(('com', 'net', 'org', 'de', 'io'))}" for i in range(400)]
    out, t = [], T0
    for z in zones:
        t += rnd.expovariate(1 / 0.5)
        for name, qt in ((z, "DS"), (z, "DNSKEY"), (f"www.{z}", "A"), (f"www.{z}", "AAAA")):
            qid, sport = rnd.randint(0, 65535), rnd.randint(1024, 65000)
            q = Ether() / IP(src="10.9.0.53", dst="192.0.2.1") / UDP(sport=sport, dport=53) / \
                DNS(id=qid, rd=0, qd=DNSQR(qname=name, qtype=qt))
            an = []
            if qt == "DNSKEY":
                an = DNSRRDNSKEY(rrname=name, flags=257, algorithm=8,
                                 publickey=rnd.randbytes(260)) / \
                    DNSRRDNSKEY(rrname=name, flags=256, algorithm=8,
                                publickey=rnd.randbytes(132))
            elif qt == "A":
                an = DNSRR(rrname=name, type="A", rdata=_ip(rnd))
            r = Ether() / IP(src="192.0.2.1", dst="10.9.0.53") / UDP(sport=53, dport=sport) / \
                DNS(id=qid, qr=1, aa=1, qd=DNSQR(qname=name, qtype=qt), an=an)
            out += [(t, bytes(q)), (t + 0.02, bytes(r))]
            t += 0.03
    return out


def acme_dns01(rnd) -> list:
    """cert-manager (or certbot's DNS plugins) renewing certificates for many hosts of one
    zone: it publishes ``_acme-challenge.<host>`` TXT (RFC 8555 section 8.4: the token's
    SHA-256, 43 Base64url characters) and polls it through the resolver until it shows,
    every few seconds per host (cert-manager's propagation self-check)."""
    hosts = [f"app{i}.prod.example.com" for i in range(60)]
    out, t = [], T0
    for h in hosts:
        tok = base64.urlsafe_b64encode(rnd.randbytes(32)).decode().rstrip("=")
        t0 = t
        for k in range(rnd.randint(3, 12)):
            out += _pair("10.9.8.3", f"_acme-challenge.{h}", "TXT", tok if k > 1 else None,
                         t0 + k * 5, rnd)
        t += rnd.uniform(0.5, 3)
    return sorted(out)


def home_network(rnd) -> list:
    """A home network behind a FRITZ!Box (local domain ``fritz.box``) and a router handing
    out ``.home``/``.lan`` (OpenWrt's default domain is ``lan``): devices registered by their
    DHCP names (Windows ``DESKTOP-<7>``/``LAPTOP-<8>``, ``iPhone-de-Marie``, Android
    ``android-<16 hex>``, ESP8266/ESP32 ``ESP_<6 hex>``/``esp32-<6 hex>``, Echo
    ``amazon-<9 hex>``), looked up by peers; single-label names completed with the search
    suffix (``wpad``, ``nas``, ``printer``), Chrome's random intranet probes completed with it
    too, and PTR of the 192.168.178.0/24 peers."""
    def dev():
        return rnd.choice([
            "DESKTOP-" + "".join(rnd.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=7)),
            "LAPTOP-" + "".join(rnd.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=8)),
            f"iPhone-de-{rnd.choice(['Marie', 'Paul', 'Lea'])}",
            f"Galaxy-S{rnd.randint(9, 24)}", f"android-{rnd.getrandbits(64):016x}",
            f"ESP_{rnd.getrandbits(24):06X}", f"esp32-{rnd.getrandbits(24):06x}",
            f"amazon-{rnd.getrandbits(36):09x}", "Chromecast", "HP-LaserJet-MFP"])
    devices = [dev() for _ in range(30)]
    suffixes = ["fritz.box", "home", "lan"]
    out, t = [], T0
    for _ in range(1500):
        t += rnd.expovariate(1 / 0.8)
        c = f"192.168.178.{rnd.randint(20, 60)}"
        sfx = rnd.choice(suffixes)
        k = rnd.random()
        if k < 0.35:
            name, qt = f"{rnd.choice(devices)}.{sfx}", rnd.choice(("A", "AAAA"))
        elif k < 0.55:
            name, qt = f"{rnd.choice(['wpad', 'nas', 'printer', 'fritz', 'router'])}.{sfx}", "A"
        elif k < 0.7:
            name = "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz", k=rnd.randint(7, 15)))
            name, qt = f"{name}.{sfx}", "A"
        elif k < 0.85:
            name, qt = f"{rnd.randint(2, 254)}.178.168.192.in-addr.arpa", "PTR"
        else:
            name, qt = rnd.choice(("www.google.com", "connectivitycheck.gstatic.com",
                                   "time.apple.com", "api.spotify.com")), "A"
        ans = "192.168.178.30" if qt == "A" and not name.endswith(".arpa") and \
            rnd.random() < 0.5 else None
        out += _pair(c, name, qt, ans, t, rnd)
    return out


def plex_direct(rnd) -> list:
    """Plex clients reaching media servers through ``<address with dashes>.<32 hex>.plex.direct``
    (one wildcard certificate per server, the 32-hex label its hash; the name resolves to the
    address in it: https://words.filippo.io/how-plex-is-doing-https-for-all-its-users/,
    e.g. ``192-168-1-14.<hash>.plex.direct``), for each of a server's local, public and IPv6
    connection addresses, tried in parallel by every client at start and on resume."""
    servers = [(f"{rnd.getrandbits(128):032x}",
                [f"192-168-{rnd.randint(0, 5)}-{rnd.randint(2, 250)}",
                 _ip(rnd).replace(".", "-"),
                 "-".join(f"{rnd.getrandbits(16):x}" for _ in range(8))])
               for _ in range(25)]
    out, t = [], T0
    for _ in range(500):
        t += rnd.expovariate(1 / 2)
        c = f"10.9.9.{rnd.randint(2, 30)}"
        for h, addrs in rnd.sample(servers, rnd.randint(1, 4)):
            for a in addrs:
                out += _pair(c, f"{a}.{h}.plex.direct", "A" if ":" not in a else "AAAA",
                             None, t, rnd)
                t += 0.002
    return out


def cloud_endpoints(rnd) -> list:
    """Build runners and nodes of a large cloud estate resolving their endpoints, most with
    generated labels: EKS API servers ``<32 hex, upper case>.gr7.<region>.eks.amazonaws.com``
    (https://docs.aws.amazon.com/eks/latest/userguide/cluster-endpoint.html), RDS
    ``<db>.<12 chars>.<region>.rds.amazonaws.com``, load balancers
    ``internal-<name>-<10 digits>.<region>.elb.amazonaws.com`` and
    ``<name>-<16 hex>.elb.<region>.amazonaws.com``, interface endpoints
    ``vpce-<17 hex>-<8 chars>.<service>.<region>.vpce.amazonaws.com``, ElastiCache
    ``<name>.<6 chars>.ng.0001.<region-code>.cache.amazonaws.com``; 300 endpoints asked
    again and again from 80 hosts. The Public Suffix List's private section makes most of
    them registered domains of their own (``*.elb.amazonaws.com``, RDS, ``<region>.amazonaws.com``);
    EKS and interface-endpoint names stay under ``amazonaws.com``: 40 clusters and 20
    endpoint names here (thousands of them: :func:`aws_estate_at_scale`)."""
    al = "abcdefghijklmnopqrstuvwxyz0123456789"
    eps = []
    for i in range(300):
        reg = rnd.choice(("us-east-1", "eu-west-1", "us-west-2"))
        k = i % 5 if i < 100 else rnd.choice((1, 2, 3))
        if k == 0:
            eps.append(f"{rnd.getrandbits(128):032X}.gr7.{reg}.eks.amazonaws.com")
        elif k == 1:
            eps.append(f"db-{i}.{''.join(rnd.choices(al, k=12))}.{reg}.rds.amazonaws.com")
        elif k == 2:
            eps.append(f"internal-svc{i}-{rnd.randint(10**9, 10**10 - 1)}.{reg}.elb.amazonaws.com")
        elif k == 3:
            eps.append(f"nlb{i}-{rnd.getrandbits(64):016x}.elb.{reg}.amazonaws.com")
        else:
            eps.append(f"vpce-{rnd.getrandbits(68):017x}-{''.join(rnd.choices(al, k=8))}"
                       f".{rnd.choice(('s3', 'sts', 'ecr.api', 'logs'))}.{reg}.vpce.amazonaws.com")
    out, t = [], T0
    for _ in range(2500):
        t += rnd.expovariate(1 / 0.25)
        c = f"10.9.10.{rnd.randint(2, 80)}"
        out += _pair(c, rnd.choice(eps), "A", "10.20.1.5", t, rnd)
    return out


def aws_estate_at_scale(rnd) -> list:
    """A large AWS tenant's resolver egress: 2,000 distinct generated names under
    ``amazonaws.com`` in 5 minutes from 5 clients, each asked A and AAAA; the Public Suffix
    List does not split these zones off, so one domain key holds them all (raised ×5 in the
    allowlist, so 500 names meet unique-subdomain-volume's 100). Interface endpoints, regional
    and zonal (``vpce-<17 hex>-<8>[-<region><az>].<service>.<region>.vpce.amazonaws.com``:
    https://docs.aws.amazon.com/vpc/latest/privatelink/privatelink-access-aws-services.html),
    EKS API servers (``<32 HEX>.<gr7|yl4|sk1>.<region>.eks.amazonaws.com``:
    https://docs.aws.amazon.com/eks/latest/userguide/cluster-endpoint.html), ElastiCache
    node groups (``<name>.<6>.ng.0001.<use1>.cache.amazonaws.com``,
    ``<name>-00<n>.<6>.0001.<use1>.cache.amazonaws.com``:
    https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/Endpoints.html) and OpenSearch
    VPC domains (``vpc-<name>-<26 chars>.<region>.es.amazonaws.com``)."""
    al = "abcdefghijklmnopqrstuvwxyz0123456789"
    regions = {"us-east-1": "use1", "eu-west-1": "euw1", "us-west-2": "usw2",
               "ap-southeast-2": "apse2"}
    names: list[str] = []
    while len(names) < 2000:
        k = rnd.random()
        reg = rnd.choice(tuple(regions))
        if k < 0.55:
            eid = f"vpce-{rnd.getrandbits(68):017x}-{''.join(rnd.choices(al, k=8))}"
            svc = rnd.choice(("s3", "sts", "ecr.api", "ecr.dkr", "logs", "ssm", "kms",
                              "secretsmanager", "execute-api", "monitoring"))
            names.append(f"{eid}.{svc}.{reg}.vpce.amazonaws.com")
            names += [f"{eid}-{reg}{az}.{svc}.{reg}.vpce.amazonaws.com"
                      for az in "abc"[:rnd.randint(2, 3)]]
        elif k < 0.75:
            names.append(f"{rnd.getrandbits(128):032X}.{rnd.choice(('gr7', 'yl4', 'sk1'))}"
                         f".{reg}.eks.amazonaws.com")
        elif k < 0.95:
            nm = rnd.choice(("sessions", "cache", "rate", "queue")) + str(rnd.randint(1, 99))
            code = "".join(rnd.choices(al, k=6))
            names.append(f"{nm}.{code}.ng.0001.{regions[reg]}.cache.amazonaws.com")
            names += [f"{nm}-00{i}.{code}.0001.{regions[reg]}.cache.amazonaws.com"
                      for i in range(1, rnd.randint(2, 4))]
        else:
            names.append(f"vpc-{rnd.choice(('logs', 'search', 'audit'))}{rnd.randint(1, 99)}-"
                         f"{''.join(rnd.choices(B32, k=26))}.{reg}.es.amazonaws.com")
    out = []
    for i, name in enumerate(names[:2000]):
        t = T0 + 300.0 * i / 2000 + rnd.uniform(0, 0.1)
        c = f"10.9.20.{rnd.randint(2, 6)}"
        out += _pair(c, name, "A", "10.20.1.5", t, rnd)
        out += _pair(c, name, "AAAA", "fd00:20::5", t + 0.003, rnd)
    out.sort(key=lambda x: x[0])
    return out


def azure_monitor_agents(rnd) -> list:
    """Azure Monitor / Log Analytics agents: every host talks to its workspace by id,
    ``<workspace GUID>.ods.opinsights.azure.com``, ``<GUID>.oms.opinsights.azure.com``,
    ``<GUID>.agentsvc.azure-automation.net`` (Microsoft's firewall requirements for the Log
    Analytics agent), a few dozen workspaces across an estate, polled every minute."""
    ws = [_uuid(rnd) for _ in range(40)]
    out, t = [], T0
    for _ in range(2000):
        t += rnd.expovariate(1 / 0.3)
        g = rnd.choice(ws)
        name = rnd.choice((f"{g}.ods.opinsights.azure.com", f"{g}.oms.opinsights.azure.com",
                           f"{g}.agentsvc.azure-automation.net"))
        out += _pair(f"10.9.11.{rnd.randint(2, 200)}", name, "A", "20.1.2.3", t, rnd)
    return out


def dns_sd_unicast(rnd) -> list:
    """Apple and Avahi hosts asking for wide-area DNS-SD browsing domains on every network
    join (RFC 6763 section 11: ``b``/``db``/``lb._dns-sd._udp.<domain>`` and under the
    reverse zone of the subnet), then ``_services._dns-sd._udp`` and service PTRs."""
    out, t = [], T0
    for _ in range(600):
        t += rnd.expovariate(1 / 1.2)
        c = f"10.9.12.{rnd.randint(2, 120)}"
        sub = f"{rnd.randint(0, 30)}.12.9.10.in-addr.arpa"
        for p in ("b", "db", "lb", "r", "dr"):
            out += _pair(c, f"{p}._dns-sd._udp.{rnd.choice(['corp.example', sub])}", "PTR",
                         None, t, rnd)
            t += 0.001
        if rnd.random() < 0.3:
            out += _pair(c, rnd.choice(["_services._dns-sd._udp.corp.example",
                                        "_ipp._tcp.corp.example", "_airplay._tcp.corp.example",
                                        "_smb._tcp.corp.example"]), "PTR", None, t, rnd)
    return out


def whoami_probes(rnd) -> list:
    """Resolver diagnostics and egress-address probes: Akamai ``whoami.akamai.net`` A and
    ``whoami.ds.akahelp.net`` TXT, Google ``o-o.myaddr.l.google.com`` TXT, OpenDNS
    ``myip.opendns.com`` and ``debug.opendns.com`` TXT (Cisco Umbrella's diagnostics), run by
    VPN clients, dynamic-DNS updaters and monitoring every minute from many hosts."""
    names = [("whoami.akamai.net", "A"), ("whoami.ds.akahelp.net", "TXT"),
             ("o-o.myaddr.l.google.com", "TXT"), ("myip.opendns.com", "A"),
             ("debug.opendns.com", "TXT")]
    out, t = [], T0
    for _ in range(1200):
        t += rnd.expovariate(1 / 0.5)
        name, qt = rnd.choice(names)
        out += _pair(f"10.9.13.{rnd.randint(2, 60)}", name, qt,
                     f"ns {_ip(rnd)} edns0-client-subnet 10.9.13.0/24" if qt == "TXT"
                     else _ip(rnd), t, rnd)
    return out


def dns_leak_tests(rnd) -> list:
    """VPN users running DNS leak tests: a one-time random label per query under the tester's
    delegated zone, 6 at once (standard) or 36 (extended), so that the resolver must ask the
    tester's server (https://dnsdoh.art/guides/how-the-dns-leak-test-works.html:
    ``a4f9k2qz.leak.dnsdoh.art``); ten users an hour."""
    out, t = [], T0
    for _ in range(10):
        t += rnd.uniform(60, 600)
        c = f"10.9.14.{rnd.randint(2, 40)}"
        for _ in range(rnd.choice((6, 36))):
            out += _pair(c, "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=8))
                         + ".leak.dnsdoh.art", "A", "192.0.2.7", t, rnd)
            t += 0.01
    return out


WORKLOADS = [spf_macro_exists, rspamd_email_hashes, hashbl_quiet_relay, spamhaus_hbl,
             ipv6_reverse, enum_naptr,
             dnssec_validator_egress, acme_dns01, home_network, plex_direct, cloud_endpoints,
             aws_estate_at_scale, azure_monitor_agents, dns_sd_unicast, whoami_probes,
             dns_leak_tests]


@pytest.mark.parametrize("workload", WORKLOADS)
def test_more_benign_classes_do_not_alert(workload):
    bad = alerts_for(workload(random.Random(5)))
    assert not bad, [(a["domain"], a["src_ip"], a["detectors"], a["reasons"][:3]) for a in bad]


def hyphen_cut_channel(rnd, field: int = 8, length: int = 40, names: int = 2000) -> list:
    """A channel in the cloud names' skeleton: one label of Base32 data per name, cut into
    hyphen-joined fields of ``field`` characters (the shape of a resource id), under a fixed
    ``<service>.<region>`` pair of labels; 2,000 names in 5 minutes from one client."""
    out = []
    for i in range(names):
        data = base64.b32encode(rnd.randbytes(40)).decode().lower()[:length]
        label = "-".join(data[j:j + field] for j in range(0, len(data), field))
        out += _pair("10.9.21.7", f"{label}.api.eu-west-1.c2cloud.example", "A", "192.0.2.9",
                     T0 + 300.0 * i / names, rnd)
    return out


def test_cloud_shaped_channel_is_not_an_identifier():
    """Fields of data joined by hyphens are not a resource id (``ident_share`` stays low), so
    unique-subdomain-volume still finds such a channel under the cloud names' skeleton."""
    hits = alerts_for(hyphen_cut_channel(random.Random(5)), use_model=False)
    assert any("unique-subdomain-volume" in a["detectors"] for a in hits
               if (a["domain"] or "").endswith("c2cloud.example")), hits


def test_data_cut_into_short_hyphen_fields_counts_as_encoded():
    """The evasion the id test left open: Base32 cut into hyphen-joined fields of 17 (63-octet
    labels) read as an AWS-style id and escaped "encoded". It no longer does (three long id
    fields are not one resource id), so encoded-subdomains finds it; real ids stay quiet
    (aws_estate_at_scale, cloud_endpoints, tests/test_features.py)."""
    hits = alerts_for(hyphen_cut_channel(random.Random(6), field=17, length=60, names=300),
                      use_model=False)
    assert any("encoded-subdomains" in a["detectors"] for a in hits
               if (a["domain"] or "").endswith("c2cloud.example")), hits
