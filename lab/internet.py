"""What the stand-in "internet" says about a name: a deterministic, plausible answer to anything.

``Internet.answer(qname, qtype)`` returns the rcode and the answer/authority records a real
authoritative server for that name would most likely give, so that a real recursive resolver
in front of it (Unbound) sees the sizes, CNAME chains, NXDOMAIN and NODATA shapes of the real
DNS. Every decision is a hash of the name (and a seed), so one name always gets one answer
and a capture is reproducible. Nothing here knows about any workload or any tunnel: it is a
model of the internet's answers by name *shape* (reverse names, DNSBL zones, service labels,
CDN and cloud host names, the public suffix list).

    >>> from dns.rdatatype import A, TXT, PTR
    >>> net = Internet(seed=1)
    >>> r = net.answer("24-48-150-22.res.example-isp.net.", A)
    >>> int(r.rcode), [str(x) for x in r.answer[0]]
    (0, ['24.48.150.22'])
    >>> net.answer("2.0.0.127.zen.spamhaus.org.", A).answer[0][0].address
    '127.0.0.2'
    >>> net.answer("no-such-host.invalid.", A).rcode == 3
    True
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype as T
import dns.rrset
from publicsuffixlist import PublicSuffixList

_PSL = PublicSuffixList()
_PSL_KNOWN = PublicSuffixList(accept_unknown=False)   # unknown TLD: None
# Registered domains the stand-in never reports as unregistered (the popular sites, CDNs and
# mail/security providers whose names the workloads use; see lab/names.py).
WELL_KNOWN: set[str] = set()

# DNSBLs keyed by reversed IPv4 octets, e.g. 2.0.0.127.zen.spamhaus.org (the test entry that is
# always listed): https://www.spamhaus.org/faqs/dnsbl-usage/ ; return codes 127.0.0.2-11 are
# SBL/CSS/XBL/PBL: https://www.spamhaus.org/zen/
IP_DNSBLS = ("zen.spamhaus.org", "sbl-xbl.spamhaus.org", "bl.spamcop.net",
             "b.barracudacentral.org", "dnsbl.sorbs.net", "bl.mailspike.net",
             "psbl.surriel.com", "cbl.abuseat.org", "dnsbl-1.uceprotect.net",
             "ix.dnsbl.manitu.net", "bl.score.senderscore.com", "list.dnswl.org",
             "origin.asn.cymru.com")
# URI/domain blocklists keyed by a domain name, e.g. example.com.dbl.spamhaus.org
# (https://www.spamhaus.org/faqs/domain-blocklist/), example.com.multi.uribl.com
# (https://uribl.com/about.shtml), example.com.multi.surbl.org (https://www.surbl.org/lists).
NAME_DNSBLS = ("dbl.spamhaus.org", "multi.uribl.com", "black.uribl.com", "multi.surbl.org",
               "uribl.spameatingmonkey.net", "dbl.nordspam.com")
# Reputation services whose query names carry a hash or an encoded object, answered with a
# code in 127/8 or NXDOMAIN (see workload/security.py for the name formats and sources).
REPUTATION = {"hash.cymru.com": 0.02, "sophosxl.net": 1.0, "avqs.mcafee.com": 1.0,
              "avts.mcafee.com": 1.0, "gti.mcafee.com": 1.0, "e5.sk": 1.0,
              "senderbase.org": 1.0, "rep.mailspike.net": 1.0}

INTERNAL_SUFFIXES = ("local", "internal", "lan", "corp", "home.arpa", "consul", "intranet")
CDN_SUFFIXES = ("cloudfront.net", "akamaiedge.net", "akamai.net", "edgekey.net",
                "edgesuite.net", "azureedge.net", "azurefd.net", "fastly.net",
                "cloudflare.net", "trafficmanager.net", "execute-api.us-east-1.amazonaws.com",
                "s3.amazonaws.com", "blob.core.windows.net", "googleusercontent.com",
                "cdn.cloudflare.net", "akadns.net", "elb.amazonaws.com", "r.cloudfront.net")

_EMBEDDED_V4 = re.compile(
    r"(?:^|[^0-9])((?:25[0-5]|2[0-4]\d|1?\d?\d)[-.](?:25[0-5]|2[0-4]\d|1?\d?\d)[-.]"
    r"(?:25[0-5]|2[0-4]\d|1?\d?\d)[-.](?:25[0-5]|2[0-4]\d|1?\d?\d))(?:$|[^0-9])")

ISP_NAMES = ("res.rr.com", "dyn.comcast.net", "static.cox.net", "dsl.att.net",
             "cust.telia.net", "pool.telefonica.de", "dynamic.kabel-deutschland.de",
             "ip.tele2.se", "fibertel.com.ar", "static.vodafone.it", "bb.sky.com",
             "cable.virginm.net", "dhcp.embarqhsd.net", "business.telecomitalia.it",
             "ptr.centurylink.net", "cpe.netcologne.de")
CITIES = ("austin", "nyc", "chi", "sea", "lax", "bos", "den", "atl", "dfw", "phx")


def h(*parts: object) -> int:
    """A stable 64-bit hash of the parts (the lab's only source of per-name variety)."""
    d = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(d, "big")


def public_v4(*parts: object) -> str:
    """A public-looking (global unicast) IPv4 address for the parts."""
    n = h("v4", *parts)
    while True:
        a = ipaddress.IPv4Address(0x0B000000 + n % 0xC0000000)
        if a.is_global and not a.is_multicast:
            return str(a)
        n = h("v4", n)


def private_v4(*parts: object, net: str = "10.0.0.0/8") -> str:
    nw = ipaddress.IPv4Network(net)
    return str(nw[1 + h("p4", *parts) % (nw.num_addresses - 2)])


def public_v6(*parts: object) -> str:
    n = h("v6", *parts)
    return str(ipaddress.IPv6Address((0x2600 << 112) | (n << 40) | (h("v6b", *parts) & 0xFFFF)))


def token(parts: tuple, n: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz0123456789") -> str:
    out, x = [], h("tok", *parts)
    for i in range(n):
        if i % 8 == 7:
            x = h("tok", x, i)
        out.append(alphabet[x % len(alphabet)])
        x //= len(alphabet)
    return "".join(out)


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@dataclass
class Reply:
    rcode: int = dns.rcode.NOERROR
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)


def _rr(name: dns.name.Name, ttl: int, rdtype: int, *texts: str) -> dns.rrset.RRset:
    rs = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
    rs.update_ttl(ttl)
    for t in texts:
        rs.add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, t))
    return rs


def _txt(*strings: str) -> str:
    """TXT rdata text: each string split at 255 octets, as publishers of long keys do."""
    out = []
    for s in strings:
        for i in range(0, max(len(s), 1), 255):
            out.append('"' + s[i:i + 255].replace('"', '\\"') + '"')
    return " ".join(out)


class Internet:
    """The stand-in internet's answers (see the module docstring)."""

    def __init__(self, seed: int = 0, nx_share: float = 0.03, address: str = "10.78.0.53") -> None:
        self.seed = seed
        self.nx_share = nx_share
        self.address = address    # the stand-in's own address: the root's glue (stub mode)

    # ------------------------------------------------------------------ helpers
    def _frac(self, *parts: object) -> float:
        return (h(self.seed, *parts) % 10_000) / 10_000

    def _soa(self, zone: str) -> dns.rrset.RRset:
        z = dns.name.from_text(zone)
        serial = 2026010100 + h(zone) % 9999
        if zone == ".":
            return _rr(z, 86400, T.SOA, "a.root-servers.net. nstld.verisign-grs.com. "
                       f"{serial} 1800 900 604800 86400")
        return _rr(z, 900, T.SOA, f"ns1.{zone.rstrip('.')}. hostmaster.{zone.rstrip('.')}. "
                   f"{serial} 7200 900 1209600 300")

    def _zone_of(self, name: str) -> str:
        """The zone that holds ``name``: its registered domain, or an internal/special zone."""
        n = name.rstrip(".").lower()
        for s in IP_DNSBLS + NAME_DNSBLS + tuple(REPUTATION):
            if n == s or n.endswith("." + s):
                return s + "."
        if n.endswith(".in-addr.arpa") or n.endswith(".ip6.arpa"):
            labels = n.split(".")
            return ".".join(labels[-4:]) + "."
        for s in ("svc.cluster.local", "cluster.local", "consul") + INTERNAL_SUFFIXES:
            if n == s or n.endswith("." + s):
                parts = n.split(".")
                k = len(s.split(".")) + (1 if s not in ("svc.cluster.local", "cluster.local",
                                                        "consul") else 0)
                return ".".join(parts[-k:]) + "."
        reg = _PSL.privatesuffix(n)
        return (reg or n) + "."

    def _nx(self, zone: str) -> Reply:
        return Reply(dns.rcode.NXDOMAIN, authority=[self._soa(zone)])

    def _nodata(self, zone: str) -> Reply:
        return Reply(authority=[self._soa(zone)])

    def _addr(self, name: dns.name.Name, qtype: int, text: str, internal: bool,
              ttl: int | None = None, n: int | None = None) -> Reply:
        zone = self._zone_of(text)
        k = n or (1 + h(self.seed, text, "n") % 4 if not internal else 1)
        ttl = ttl or (60, 300, 300, 3600, 20, 600)[h(text, "ttl") % 6]
        if qtype == T.A:
            addrs = [private_v4(text, i) if internal else public_v4(self.seed, text, i)
                     for i in range(k)]
            return Reply(answer=[_rr(name, ttl, T.A, *addrs)])
        if qtype == T.AAAA:
            if internal or self._frac(text, "v6") < 0.3:
                return self._nodata(zone)
            return Reply(answer=[_rr(name, ttl, T.AAAA,
                                     *(public_v6(self.seed, text, i) for i in range(min(k, 2))))])
        return self._nodata(zone)

    # ---------------------------------------------------------------- the answer
    def answer(self, qname: str | dns.name.Name, qtype: int) -> Reply:
        name = dns.name.from_text(qname) if isinstance(qname, str) else qname
        text = name.to_text().lower()
        n = text.rstrip(".")
        labels = n.split(".") if n else []
        zone = self._zone_of(text)
        if not labels:
            if qtype == T.NS:   # a resolver primes its root stub: ". NS" with glue
                root = dns.name.from_text("a.root-servers.net.")
                r = Reply(answer=[_rr(name, 518400, T.NS, "a.root-servers.net.")])
                r.additional.append(_rr(root, 518400, T.A, self.address))
                return r
            return Reply(answer=[self._soa(".")]) if qtype == T.SOA else self._nodata(".")
        if n == "a.root-servers.net" and qtype == T.A:
            return Reply(answer=[_rr(name, 518400, T.A, self.address)])
        if n.endswith("in-addr.arpa") or n.endswith("ip6.arpa"):
            return self._reverse(name, qtype, n, labels, zone)
        for bl in IP_DNSBLS:
            if n.endswith("." + bl):
                return self._dnsbl_ip(name, qtype, n[: -len(bl) - 1], bl)
        for bl in NAME_DNSBLS:
            if n.endswith("." + bl):
                return self._dnsbl_name(name, qtype, n, bl)
        for rz, listed in REPUTATION.items():
            if n.endswith("." + rz):
                return self._reputation(name, qtype, n, rz, listed)
        if n.endswith("cluster.local"):
            return self._kubernetes(name, qtype, n, labels)
        if n.endswith(".consul"):
            return self._consul(name, qtype, n, labels)
        internal = any(n == s or n.endswith("." + s) for s in INTERNAL_SUFFIXES)
        if not internal and not _PSL_KNOWN.publicsuffix(n) or \
                (len(labels) == 1 and not internal):
            # a single label (a search-list miss, Chrome's random intranet probes) or an
            # unknown TLD: the root says NXDOMAIN
            return self._nx(".")
        if not internal and _PSL.is_public(n):
            return self._nodata(n + ".")
        if any(lab.startswith("_") for lab in labels):
            return self._service(name, qtype, n, labels, zone, internal)
        reg = zone.rstrip(".")
        # an unregistered domain (typos, expired names, DGA-ish junk) and a few missing hosts
        if not internal and reg not in WELL_KNOWN and self._frac(reg, "registered") < 0.03:
            return self._nx(reg.rsplit(".", 1)[-1] + ".")
        if n != reg and self._frac(n, "host") < self.nx_share and \
                not any(n.endswith(s) for s in CDN_SUFFIXES):
            return self._nx(zone)
        return self._host(name, qtype, n, labels, zone, internal)

    # ------------------------------------------------------------------ classes
    def _reverse(self, name, qtype, n, labels, zone) -> Reply:
        if qtype != T.PTR:
            return self._nodata(zone)
        if n.endswith("ip6.arpa"):
            if len(labels) < 34 or self._frac(n) < 0.7:
                return self._nx(zone)
            host = f"host-{token((n,), 8)}.ip6.example-isp.net."
            return Reply(answer=[_rr(name, 3600, T.PTR, host)])
        octets = labels[:-2][::-1]
        if len(octets) != 4 or not all(o.isdigit() and int(o) < 256 for o in octets):
            return self._nx(zone)
        ip = ipaddress.IPv4Address(".".join(octets))
        f = self._frac(n, "ptr")
        if ip.is_private:
            # DHCP-registered and static internal names (Windows DHCP/DDNS registers
            # DESKTOP-XXXXXXX style host names); many leases have no PTR
            if f < 0.35:
                return self._nx(zone)
            kind = ("desktop-" + token((n, "w"), 7), "laptop-" + token((n, "l"), 7),
                    "srv" + str(h(n) % 90 + 10), "printer-" + str(h(n) % 40),
                    "iphone", "android-" + token((n, "a"), 16, "0123456789abcdef"))
            host = kind[h(n, "k") % len(kind)]
            return Reply(answer=[_rr(name, 1200, T.PTR, f"{host}.corp.example-lan.internal.")])
        if f < 0.15:
            return self._nx(zone)
        a, b, c, d = octets
        style = h(n, "style") % 6
        isp = ISP_NAMES[h(a, b) % len(ISP_NAMES)]
        city = CITIES[h(a, b, c) % len(CITIES)]
        ptr = (f"{a}-{b}-{c}-{d}.{city}.{isp}", f"ip{a}-{b}-{c}-{d}.{isp}",
               f"ec2-{a}-{b}-{c}-{d}.compute-1.amazonaws.com",
               f"{d}.{c}.{b}.{a}.bc.googleusercontent.com",
               f"mail{h(n) % 9 + 1}.{token((a, b), 6, 'abcdefghijklmnopqrstuvwxyz')}.com",
               f"static.{d}.{c}.{b}.{a}.clients.your-server.de")[style]
        return Reply(answer=[_rr(name, 3600 * (1 + h(n) % 24), T.PTR, ptr + ".")])

    def _dnsbl_ip(self, name, qtype, key, bl) -> Reply:
        zone = bl + "."
        octs = key.split(".")
        if len(octs) != 4 or not all(o.isdigit() for o in octs):
            return self._nx(zone)
        listed = key == "2.0.0.127" or self._frac(key, bl) < 0.05
        if bl == "origin.asn.cymru.com":   # IP to ASN: always an answer, TXT only
            if qtype != T.TXT:
                return self._nodata(zone)
            asn = 1000 + h(key) % 60000
            pfx = ".".join(octs[::-1][:2]) + ".0.0/16"
            txt = _txt(f"{asn} | {pfx} | US | arin | 2009-01-01")
            return Reply(answer=[_rr(name, 14400, T.TXT, txt)])
        if not listed:
            return self._nx(zone)
        code = "127.0.0." + str((2, 3, 4, 9, 10, 11)[h(key, bl) % 6])
        if qtype == T.A:
            return Reply(answer=[_rr(name, 300, T.A, code)])
        if qtype == T.TXT:
            return Reply(answer=[_rr(name, 300, T.TXT, _txt(f"Listed; see https://check.{bl}/query/ip/{'.'.join(octs[::-1])}"))])
        return self._nodata(zone)

    def _dnsbl_name(self, name, qtype, n, bl) -> Reply:
        zone = bl + "."
        if self._frac(n, bl) >= 0.02:
            return self._nx(zone)
        if qtype == T.A:
            code = "127.0.1.2" if "spamhaus" in bl else "127.0.0.2"
            return Reply(answer=[_rr(name, 300, T.A, code)])
        if qtype == T.TXT:
            return Reply(answer=[_rr(name, 300, T.TXT, _txt(f"listed in {bl}"))])
        return self._nodata(zone)

    def _reputation(self, name, qtype, n, rz, listed) -> Reply:
        zone = rz + "."
        if self._frac(n, rz) >= listed:
            return self._nx(zone)
        if qtype == T.A:
            # reputation codes are addresses in 127/8 (Cymru MHR: 127.0.0.2 for a known-bad hash)
            code = "127.0.0.2" if rz == "hash.cymru.com" else \
                f"127.{h(n, 1) % 4}.{h(n, 2) % 32}.{h(n, 3) % 64 * 4}"
            return Reply(answer=[_rr(name, (60, 300, 3600)[h(n) % 3], T.A, code)])
        if qtype == T.TXT:
            txt = _txt(f"{1600000000 + h(n) % 10**8} {h(n) % 60 + 5}")
            return Reply(answer=[_rr(name, 3600, T.TXT, txt)])
        return self._nodata(zone)

    def _kubernetes(self, name, qtype, n, labels) -> Reply:
        # CoreDNS's records: <svc>.<ns>.svc.cluster.local A (ClusterIP),
        # _<port>._<proto>.<svc>.<ns>.svc.cluster.local SRV, <pod-ip-dashed>.<ns>.pod...
        # https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/
        zone = "cluster.local."
        if n.endswith(".svc.cluster.local"):
            rest = labels[:-3]
            if len(rest) == 4 and rest[0].startswith("_") and rest[1] in ("_tcp", "_udp"):
                if qtype != T.SRV:
                    return self._nodata(zone)
                tgt = f"{rest[2]}.{rest[3]}.svc.cluster.local."
                return Reply(answer=[_rr(name, 30, T.SRV, f"0 100 {1024 + h(n) % 9000} {tgt}")])
            if len(rest) == 2 and not rest[0].startswith("_"):
                if qtype == T.A:
                    return Reply(answer=[_rr(name, 30, T.A, private_v4(n, net="10.96.0.0/12"))])
                return self._nodata(zone)
        if n.endswith(".pod.cluster.local") and len(labels) == 5:
            if qtype == T.A:
                return Reply(answer=[_rr(name, 30, T.A, labels[0].replace("-", "."))])
            return self._nodata(zone)
        return self._nx(zone)

    def _consul(self, name, qtype, n, labels) -> Reply:
        # <service>.service[.<dc>].consul, [<tag>.]<service>.service.consul, <node>.node.consul,
        # SRV at the same names: https://developer.hashicorp.com/consul/docs/services/discovery/dns-static-lookups
        zone = "consul."
        if "service" in labels or "node" in labels:
            if qtype == T.A:
                k = 1 + h(n) % 3
                addrs = (private_v4(n, i, net="10.20.0.0/16") for i in range(k))
                return Reply(answer=[_rr(name, 0, T.A, *addrs)])
            if qtype == T.SRV:
                tgt = f"{token((n,), 12, '0123456789abcdef')}.addr.dc1.consul."
                return Reply(answer=[_rr(name, 0, T.SRV, f"1 1 {20000 + h(n) % 10000} {tgt}")])
            return self._nodata(zone)
        return self._nx(zone)

    def _service(self, name, qtype, n, labels, zone, internal) -> Reply:
        reg = zone.rstrip(".")
        if "_domainkey" in labels:
            return self._dkim(name, qtype, n, labels, zone)
        if labels[0] == "_dmarc":
            if qtype != T.TXT or self._frac(reg, "dmarc") < 0.15:
                return self._nx(zone) if qtype == T.TXT else self._nodata(zone)
            p = ("none", "quarantine", "reject")[h(reg) % 3]
            return Reply(answer=[_rr(name, 3600, T.TXT, _txt(
                f"v=DMARC1; p={p}; rua=mailto:dmarc-reports@{reg}; ruf=mailto:dmarc@{reg}; fo=1"))])
        if labels[0] == "_mta-sts":
            if qtype != T.TXT or self._frac(reg, "sts") < 0.6:
                return self._nx(zone)
            txt = _txt(f"v=STSv1; id=2025{h(reg) % 10**10:010d};")
            return Reply(answer=[_rr(name, 3600, T.TXT, txt)])
        if labels[:2] == ["_smtp", "_tls"]:
            if qtype != T.TXT or self._frac(reg, "tlsrpt") < 0.6:
                return self._nx(zone)
            txt = _txt(f"v=TLSRPTv1; rua=mailto:tlsrpt@{reg}")
            return Reply(answer=[_rr(name, 3600, T.TXT, txt)])
        if labels[:2] == ["_dns", "resolver"]:
            return self._nodata(zone)
        if labels[0] in ("_spf", "_netblocks", "_netblocks2", "_netblocks3"):
            return self._host(name, qtype, n, labels, zone, internal)
        ad = self._active_directory(name, qtype, n, labels, zone)
        if ad is not None:
            return ad
        if qtype in (T.SRV, T.ANY) and len(labels) >= 3 and labels[1] in ("_tcp", "_udp"):
            svc = labels[0]
            known = {"_sip": 5060, "_sips": 5061, "_xmpp-client": 5222, "_xmpp-server": 5269,
                     "_imaps": 993, "_submission": 587, "_autodiscover": 443, "_caldavs": 443,
                     "_carddavs": 443, "_minecraft": 25565, "_matrix": 8448, "_ts3": 9987,
                     "_vlmcs": 1688, "_http": 80, "_https": 443, "_ntp": 123, "_stun": 3478,
                     "_turn": 3478, "_sipfederationtls": 5061, "_h323cs": 1720}
            if svc in known and self._frac(n, "srv") < 0.5:
                host = ("sip", "xmpp", "mail", "autodiscover", "dav", "srv")[h(n) % 6]
                return Reply(answer=[_rr(name, 3600, T.SRV, f"10 60 {known[svc]} {host}.{reg}.")])
            return self._nx(zone)
        return self._nx(zone) if self._frac(n, "svc") < 0.8 else self._nodata(zone)

    def _active_directory(self, name, qtype, n, labels, zone) -> Reply | None:
        # DC locator names (MS-ADTS 6.3.2.3, "SRV Records Registered by an AD DC"):
        # _ldap._tcp.<DnsDomainName>, _ldap._tcp.<SiteName>._sites.<DnsDomainName>,
        # _ldap._tcp.dc._msdcs.<DnsDomainName>, _ldap._tcp.<SiteName>._sites.dc._msdcs.<...>,
        # _ldap._tcp.<DomainGuid>.domains._msdcs.<DnsForestName>, _kerberos._tcp/_udp,
        # _kpasswd, _gc._tcp.<DnsForestName>, <DsaGuid>._msdcs.<DnsForestName> CNAME.
        # https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-adts/c1987d42-1847-4cc9-acf7-aab2136d6952
        ports = {"_ldap": 389, "_kerberos": 88, "_kpasswd": 464, "_gc": 3268,
                 "_kerberos-master": 88}
        if "_msdcs" in labels:
            dom = ".".join(labels[labels.index("_msdcs") + 1:])
        elif labels[0] in ports and len(labels) > 2 and labels[1] in ("_tcp", "_udp"):
            rest = labels[2:]
            dom = ".".join(rest[rest.index("_sites") + 1:] if "_sites" in rest else rest)
        else:
            return None
        if not dom:
            return self._nx(zone)
        if labels[0] in ports and qtype in (T.SRV, T.ANY):
            k = 2 + h(dom) % 3
            recs = [f"0 100 {ports[labels[0]]} dc{i + 1:02d}.{dom}." for i in range(k)]
            return Reply(answer=[_rr(name, 600, T.SRV, *recs)])
        if labels[0] in ports:
            return self._nodata(zone)
        if len(labels[0]) == 36 and labels[1] == "_msdcs":   # <DsaGuid>._msdcs CNAME
            tgt = f"dc{h(labels[0]) % 3 + 1:02d}.{dom}."
            rs = [_rr(name, 600, T.CNAME, tgt)]
            if qtype == T.A:
                rs.append(_rr(dns.name.from_text(tgt), 1200, T.A, private_v4(tgt)))
            return Reply(answer=rs)
        if labels[0] in ("gc", "pdc", "dc") or labels[1:2] == ["_msdcs"]:
            return self._addr(name, qtype, n, True, 600, 2) if qtype == T.A else self._nodata(zone)
        return self._nx(zone)

    def _dkim(self, name, qtype, n, labels, zone) -> Reply:
        # <selector>._domainkey.<domain> TXT "v=DKIM1; k=rsa; p=<base64 key>" (RFC 6376 3.6.2);
        # 2048-bit keys are ~392 base64 characters, split into 255-octet strings.
        reg = zone.rstrip(".")
        sel = labels[0]
        if qtype != T.TXT and qtype != T.CNAME:
            return self._nodata(zone)
        if self._frac(n, "dkim") < 0.03:
            return self._nx(zone)
        bits = 2048 if h(n, "bits") % 3 else 1024
        key = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" if bits == 2048 else \
            "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ"
        key += token((n, "key"), 392 - len(key) if bits == 2048 else 216 - len(key), B64) + "IDAQAB"
        txt = _rr(name, 3600, T.TXT, _txt(f"v=DKIM1; k=rsa; p={key}"))
        if reg not in ("amazonses.com", "google.com", "sendgrid.net", "mcsv.net") and \
                len(sel) == 32 and h(n, "ses") % 2:
            # Amazon SES Easy DKIM: <token>._domainkey.<domain> CNAME <token>.dkim.amazonses.com
            # https://docs.aws.amazon.com/ses/latest/dg/send-email-authentication-dkim-easy.html
            tgt = dns.name.from_text(f"{sel}.dkim.amazonses.com.")
            return Reply(answer=[_rr(name, 1800, T.CNAME, tgt.to_text()),
                                 _rr(tgt, 3600, T.TXT, _txt(f"p={key}"))])
        return Reply(answer=[txt])

    def _apex_txt(self, name, reg) -> Reply:
        # SPF (RFC 7208) with provider include chains, plus site-verification tokens, as
        # real apex TXT sets hold them (Google Workspace: "include:_spf.google.com";
        # Microsoft 365: "include:spf.protection.outlook.com"; Amazon SES: "include:amazonses.com").
        incs = ("include:_spf.google.com", "include:spf.protection.outlook.com",
                "include:amazonses.com", "include:_spf.salesforce.com",
                "include:servers.mcsv.net", "include:sendgrid.net", "include:mail.zendesk.com",
                "include:spf.mandrillapp.com", "include:_spf.atlassian.net")
        k = 1 + h(reg, "k") % 3
        chosen = [incs[(h(reg, "i") + i * 3) % len(incs)] for i in range(k)]
        ip = public_v4(reg, "mx")
        recs = [_txt(f"v=spf1 ip4:{ip} {' '.join(chosen)} {('~all', '-all')[h(reg) % 2]}")]
        if h(reg, "g") % 2:
            recs.append(_txt("google-site-verification=" + token((reg, "g"), 43, B64[:-2] + "-_")))
        if h(reg, "m") % 3 == 0:
            recs.append(_txt(f"MS=ms{h(reg, 'ms') % 10**8:08d}"))
        if h(reg, "f") % 4 == 0:
            recs.append(_txt("facebook-domain-verification=" + token((reg, "f"), 30)))
        if h(reg, "a") % 5 == 0:
            recs.append(_txt("apple-domain-verification=" + token((reg, "a"), 16, B64[:-2])))
        return Reply(answer=[_rr(name, 3600, T.TXT, *recs)])

    def _spf_include(self, name, n) -> Reply:
        chains = {
            "_spf.google.com": "v=spf1 include:_netblocks.google.com "
                               "include:_netblocks2.google.com include:_netblocks3.google.com ~all",
            "spf.protection.outlook.com": "v=spf1 ip4:40.92.0.0/15 ip4:40.107.0.0/16 "
                                          "ip4:52.100.0.0/15 ip4:52.102.0.0/16 ip4:104.47.0.0/17 "
                                          "include:spfd.protection.outlook.com -all",
        }
        if n in chains:
            txt = chains[n]
        else:
            nets = " ".join(f"ip4:{public_v4(n, i)}/{(20, 22, 24)[h(n, i) % 3]}"
                            for i in range(3 + h(n) % 10))
            txt = f"v=spf1 {nets} ~all"
        return Reply(answer=[_rr(name, 300 if "google" in n else 3600, T.TXT, _txt(txt))])

    def _host(self, name, qtype, n, labels, zone, internal) -> Reply:
        reg = zone.rstrip(".")
        if qtype == T.TXT and (n.startswith("_spf.") or labels[0].startswith("_netblocks") or n in (
                "spf.protection.outlook.com", "spfd.protection.outlook.com", "amazonses.com",
                "servers.mcsv.net", "sendgrid.net", "mail.zendesk.com", "spf.mandrillapp.com")):
            return self._spf_include(name, n)
        if qtype == T.TXT:
            if n == reg:
                return self._apex_txt(name, reg)
            return self._nodata(zone)
        if qtype == T.MX:
            if n != reg and h(n, "mxsub") % 4:
                return self._nodata(zone)
            style = h(reg, "mx") % 4
            if style == 0:
                recs = ["1 aspmx.l.google.com.", "5 alt1.aspmx.l.google.com.",
                        "5 alt2.aspmx.l.google.com.", "10 alt3.aspmx.l.google.com.",
                        "10 alt4.aspmx.l.google.com."]
            elif style == 1:
                recs = [f"0 {reg.replace('.', '-')}.mail.protection.outlook.com."]
            else:
                recs = [f"10 mx1.{reg}.", f"20 mx2.{reg}."]
            return Reply(answer=[_rr(name, 3600, T.MX, *recs)])
        if qtype == T.NS:
            if n != reg:
                return self._nodata(zone)
            prov = (f"ns-{h(reg) % 2000}.awsdns-{h(reg, 1) % 64:02d}.org.",
                    f"{token((reg,), 5, 'abcdefghijklmnopqrstuvwxyz')}.ns.cloudflare.com.",
                    f"ns1.{reg}.", f"dns1.p0{h(reg) % 9}.nsone.net.")
            return Reply(answer=[_rr(name, 86400, T.NS, prov[h(reg) % 4], prov[(h(reg) + 2) % 4])])
        if qtype == T.SOA:
            return Reply(answer=[self._soa(zone)]) if n == reg else self._nodata(zone)
        if qtype in (T.HTTPS, T.SVCB):
            # HTTPS RR (RFC 9460): sites behind Cloudflare and Google publish alpn and hints
            if internal or self._frac(reg, "https") < 0.55 or labels[0] not in (
                    reg.split(".")[0], "www", "api", "static", "cdn", "m"):
                return self._nodata(zone)
            v4 = public_v4(self.seed, n, 0)
            return Reply(answer=[_rr(name, 300, qtype,
                                     f'1 . alpn="h3,h2" ipv4hint={v4} ipv6hint={public_v6(n)}')])
        if qtype in (T.A, T.AAAA):
            m = _EMBEDDED_V4.search(labels[0])
            if m and not internal and len(labels) >= 3:
                # customer and cloud host names carry their address: 24-48-150-22.<city>.<isp>,
                # ec2-3-91-20-4.compute-1.amazonaws.com, ip-10-0-1-5.ec2.internal
                if qtype == T.AAAA:
                    return self._nodata(zone)
                return Reply(answer=[_rr(name, 3600, T.A, m.group(1).replace("-", "."))])
            cdn = self._cdn_chain(name, qtype, n, labels, reg, internal)
            if cdn is not None:
                return cdn
            return self._addr(name, qtype, n, internal)
        if qtype == T.CAA and n == reg:
            return Reply(answer=[_rr(name, 3600, T.CAA, '0 issue "letsencrypt.org"')])
        if qtype == T.ANY:   # RFC 8482 minimal ANY answer
            return Reply(answer=[_rr(name, 3789, T.HINFO, '"RFC8482" ""')])
        return self._nodata(zone)   # NULL, PTR of a forward name, DS, DNSKEY, CAA, ...

    def _cdn_chain(self, name, qtype, n, labels, reg, internal) -> Reply | None:
        """A CNAME to a CDN/cloud host for web-ish host names (as real sites do), else None."""
        if internal or any(n.endswith(s) for s in CDN_SUFFIXES):
            if any(n.endswith(s) for s in CDN_SUFFIXES):
                return self._addr(name, qtype, n, False, 20 + h(n) % 60, 2 + h(n) % 3)
            return None
        if labels[0] not in ("www", "static", "cdn", "assets", "img", "images", "media",
                             "video", "files", "download", "m", "app", "api", "s") or \
                self._frac(n, "cdn") < 0.35:
            return None
        k = h(n, "which") % 6
        t = (f"{token((n,), 14, 'abcdefghijklmnopqrstuvwxyz0123456789')}.cloudfront.net.",
             f"{n}.edgekey.net.",
             f"{reg.split('.')[0]}-{token((n,), 6)}.azureedge.net.",
             f"{reg.split('.')[0]}.map.fastly.net.",
             f"{n}.cdn.cloudflare.net.",
             f"{reg.split('.')[0]}-prod-{token((n,), 8)}.trafficmanager.net.")[k]
        chain = [_rr(name, 300, T.CNAME, t)]
        tgt = dns.name.from_text(t)
        if k == 1:   # Akamai: <host>.edgekey.net CNAME e<digits>.<x>.akamaiedge.net
            t2 = dns.name.from_text(f"e{h(n) % 99999}.{'abcdefg'[h(n) % 7]}.akamaiedge.net.")
            chain.append(_rr(tgt, 21600, T.CNAME, t2.to_text()))
            tgt = t2
        sub = self.answer(tgt, qtype)    # the same answer a direct query for the target gets
        return Reply(sub.rcode, chain + sub.answer, sub.authority)
