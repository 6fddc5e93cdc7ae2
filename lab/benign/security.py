"""Endpoint security and reputation lookups: data in names by design, from ordinary hosts.

Name formats (each as seen on real networks):
- Sophos Live Protection / SXL: TXT ``3.<hex digest, rot13-shifted, in 63-character labels>
  .i.00.mac.sophosxl.net`` (a captured query is in elastic/beats
  packetbeat/protos/dns/dns_tcp_test.go, ``sophosTxtTcp``); about the service:
  https://support.sophos.com/support/s/article/KB-000036343;
- McAfee GTI (Artemis) file reputation: A ``<n>-0.19-<8 hex>.<hex>.<4 digits>.<hex>.<hex>.<hex>
  .0.<26 base32>.avqs.mcafee.com`` (and ``avts``), per mttaggart/wtfbins
  (wtfbins/mcafee-antivirus), https://kcm.trellix.com/corporate/index?page=content&id=KB53735;
- ESET LiveGrid/antispam: TXT ``<36 base32>.a.e.e5.sk`` (wtfbins/eset-protection-suite,
  https://support.eset.com/en/kb332);
- Team Cymru MHR: ``<md5|sha1>.hash.cymru.com``, SHA-256 as two 32-character labels
  (https://hash.cymru.com/docs_dns);
- certificate status and URL reputation: OCSP/CRL hosts (``ocsp.digicert.com``,
  ``r10.o.lencr.org``, ``ocsp.pki.goog``, ``crl3.digicert.com``), Microsoft SmartScreen and
  Defender cloud (``nav.smartscreen.microsoft.com``, ``wdcp.microsoft.com``), Google Safe
  Browsing (``safebrowsing.googleapis.com``): plain host names, asked often.
"""

from __future__ import annotations

import codecs

from lab.benign.client import B32, B32HEX, HEX, Client, rand

CERT_HOSTS = ("ocsp.digicert.com", "ocsp.pki.goog", "r10.o.lencr.org", "r11.o.lencr.org",
              "ocsp.sectigo.com", "ocsp.usertrust.com", "crl3.digicert.com", "crl4.digicert.com",
              "crl.microsoft.com", "oneocsp.microsoft.com", "ocsp.globalsign.com",
              "status.rapidssl.com", "ocsp.entrust.net", "c.pki.goog", "x1.c.lencr.org")
REPUTATION_HOSTS = ("nav.smartscreen.microsoft.com", "wdcp.microsoft.com",
                    "wdcpalt.microsoft.com", "checkappexec.microsoft.com",
                    "safebrowsing.googleapis.com", "sb.l.google.com",
                    "smartscreen-prod.microsoft.com",
                    "unitedstates.smartscreen-prod.microsoft.com")


def _labels(s: str, n: int = 63) -> str:
    return ".".join(s[i:i + n] for i in range(0, len(s), n))


def sophos_name(c: Client) -> str:
    digest = rand(c.rng, c.rng.choice((128, 160, 190, 224)), HEX)
    return f"3.{_labels(codecs.encode(digest, 'rot13'))}.i.00.mac.sophosxl.net"


def mcafee_name(c: Client) -> str:
    rng = c.rng
    zone = rng.choice(("avqs", "avqs", "avts"))
    head = f"{rng.choice(('a', '13', '14', 'c'))}-0.19-{rand(rng, 8, HEX)}"
    mid = (f"{rand(rng, rng.randint(1, 7), HEX)}.{rng.choice(('1518', '1838', '1644'))}"
           f".{rand(rng, 4, HEX)}.{rand(rng, 4, HEX)}.{rng.choice(('210', '400', '410', '10'))}")
    return f"{head}.{mid}.0.{rand(rng, 26, B32HEX)}.{zone}.mcafee.com"


def eset_name(c: Client) -> str:
    return f"{rand(c.rng, 26, B32)}{'bqeaqbaeaq'}.a.e.e5.sk"


def cymru_name(c: Client) -> str:
    k = c.rng.choice((32, 40, 64))
    h = rand(c.rng, k, HEX)
    return f"{h[:32]}.{h[32:]}.hash.cymru.com" if k == 64 else f"{h}.hash.cymru.com"


async def av_lookup(c: Client) -> None:
    """One file or URL reputation check by the host's endpoint product."""
    vendor = c.profile.get("av", "defender")
    if vendor == "sophos":
        await c.q(sophos_name(c), "TXT", tcp=c.rng.random() < 0.05)
    elif vendor == "mcafee":
        await c.q(mcafee_name(c), "A")
    elif vendor == "eset":
        await c.q(eset_name(c), "TXT")
    else:
        await c.addr_lookup(c.rng.choice(REPUTATION_HOSTS))
    if c.rng.random() < 0.1:
        await c.q(cymru_name(c), c.rng.choice(("A", "TXT")))


async def cert_check(c: Client) -> None:
    await c.addr_lookup(c.rng.choice(CERT_HOSTS))
