"""A mail server's DNS: what an MTA with a spam filter asks per message, in and out.

Inbound (Postfix + rspamd/SpamAssassin style), per connection and message:
- PTR of the connecting address, then A of the name it gives (forward-confirmed rDNS);
- IP DNSBLs by reversed octets, ``<d>.<c>.<b>.<a>.zen.spamhaus.org`` etc.
  (https://www.spamhaus.org/faqs/dnsbl-usage/, https://www.spamcop.net/fom-serve/cache/291.html,
  https://www.barracudacentral.org/rbl/how-to-use), and ``list.dnswl.org``
  (https://www.dnswl.org/?page_id=15);
- SPF: TXT of the envelope domain, then every ``include:`` it names, recursively, at most 10
  lookups (RFC 7208 section 4.6.4);
- DKIM: TXT at ``<selector>._domainkey.<d>`` per signature (RFC 6376 section 3.6.2.1), with
  ordinary selectors (``selector1``/``selector2`` Microsoft 365,
  https://learn.microsoft.com/en-us/defender-office-365/email-authentication-dkim-configure;
  ``google`` and ``<date>`` at ``<domain-dashed>.<date>.gappssmtp.com`` Google Workspace
  default signing; ``s1``/``s2`` SendGrid; ``k1`` Mailchimp; ``scph<MMYY>`` SparkPost;
  ``<timestamp>pm`` Postmark; ``hs1-<id>``/``hs2-<id>`` HubSpot) and random-token selectors
  (Amazon SES Easy DKIM: three 32-character tokens per domain and a second signature
  ``d=amazonses.com; s=<32 chars>``, i.e. ``<32 chars>._domainkey.amazonses.com``,
  https://docs.aws.amazon.com/ses/latest/dg/send-email-authentication-dkim-easy.html);
- DMARC: TXT at ``_dmarc.<d>``, then at the organisational domain (RFC 7489 section 6.6.3);
- URI DNSBLs for each domain in the body: ``<domain>.dbl.spamhaus.org``
  (https://www.spamhaus.org/faqs/domain-blocklist/), ``<domain>.multi.uribl.com``
  (https://uribl.com/about.shtml), ``<domain>.multi.surbl.org`` (https://www.surbl.org/lists);
- attachment hashes at Team Cymru's MHR, ``<md5>.hash.cymru.com`` A/TXT
  (https://hash.cymru.com/docs_dns).
- the filter's hashed and per-address lists: rspamd (on in its default configuration) asks
  every address in From/Reply-To and every URL domain as a 32-character Base32 BLAKE2 hash,
  ``<hash>.email.rspamd.com`` and ``<hash>.uribl.rspamd.com`` (RSPAMD_EMAILBL, RSPAMD_URIBL,
  https://rspamd.com/doc/modules/rbl.html); SpamAssassin's HashBL plugin ``<sha1 hex>.ebl.msbl.org``
  (Mail::SpamAssassin::Plugin::HashBL, ``check_hashbl_emails('ebl.msbl.org')``); Spamhaus
  DQS with the customer's key, ``<rev ip>.<key>.zen.dq.spamhaus.net``, and its Hash Blocklist,
  ``<Base32 SHA-1 of the address>._email.<key>.hbl.dq.spamhaus.net`` and
  ``<SHA-256 hex>._file.<key>.hbl.dq.spamhaus.net``
  (https://docs.spamhaus.com/datasets/docs/source/70-access-methods/data-query-service/,
  spamhaus/spamassassin-dqs);
- SPF macros, one name per connecting address: Salesforce's ``_spf.salesforce.com`` is
  ``v=spf1 exists:%{i}._spf.mta.salesforce.com -all``, so each message from its MTAs asks
  ``<ip>._spf.mta.salesforce.com`` (https://help.salesforce.com/s/articleView?id=000315520);
  RFC 7208 section 7.4's ``%{ir}.%{v}._spf.%{d2}`` gives ``<reversed ip>.in-addr._spf.<d>``.
Outbound: MX of the recipient domain, A/AAAA of the exchangers, MTA-STS TXT ``_mta-sts.<d>``
(RFC 8461 section 3.1), DANE TLSA ``_25._tcp.<mx>`` (RFC 7672), and now and then TLS-RPT
``_smtp._tls.<d>`` (RFC 8460 section 3) when a daily report is due.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random

from lab.benign.client import B32, HEX, Client, public_ip, rand, rev4, texts

IP_BLS = ("zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org", "dnsbl.sorbs.net",
          "bl.mailspike.net", "psbl.surriel.com")
URI_BLS = ("dbl.spamhaus.org", "multi.uribl.com", "multi.surbl.org")
SES_REGIONS = ("us-east-1", "us-east-1", "us-west-2", "eu-west-1", "eu-central-1",
               "ap-southeast-2", "ap-northeast-1", "ca-central-1", "sa-east-1", "eu-west-2")
ESPS = ("amazonses", "google", "microsoft", "sendgrid", "mailchimp", "sparkpost", "postmark",
        "hubspot", "salesforce", "own", "own", "own")
SALESFORCE_NETS = ("13.110", "13.111", "136.146", "136.147", "160.8", "161.71")
BODY_DOMAINS = ("google.com", "linkedin.com", "microsoft.com", "facebook.com", "twitter.com",
                "youtube.com", "bit.ly", "list-manage.com", "sendgrid.net", "mailchi.mp",
                "zoom.us", "docusign.net", "salesforce.com", "hubspot.com", "apple.com",
                "amazon.com", "dropbox.com", "sharepoint.com", "github.com", "medium.com",
                "eventbrite.com", "calendly.com", "typeform.com", "instagram.com", "t.co",
                "lnkd.in", "office.com", "wetransfer.com", "surveymonkey.com", "mcusercontent.com")


def _dkim_signatures(c: Client, domain: str, esp: str) -> list[tuple[str, str]]:
    rng = c.rng
    if esp == "amazonses":
        # one of the customer's three Easy-DKIM tokens, and SES's own signature whose
        # random-token selector is one per sending region (rotated rarely), not per message
        tok = rand(random_for(domain, "ses", str(rng.randrange(3))), 32, B32)
        region = rng.choice(SES_REGIONS)
        return [(tok, domain), (rand(random_for("ses-region", region), 32, B32), "amazonses.com")]
    if esp == "google":
        if rng.random() < 0.5:
            return [("google", domain)]
        date = rng.choice(("20161025", "20210112", "20230601", "20221208"))
        return [(date, f"{domain.replace('.', '-')}.{date}.gappssmtp.com")]
    if esp == "microsoft":
        tenant = domain.split(".")[0].replace("-", "")
        return [(rng.choice(("selector1", "selector2")), domain),
                (f"selector1-{domain.replace('.', '-')}", f"{tenant}.onmicrosoft.com")]
    if esp == "sendgrid":
        return [(rng.choice(("s1", "s2")), domain), ("smtpapi", "sendgrid.net")]
    if esp == "mailchimp":
        return [("k1", domain), ("k2", "mcsv.net")]
    if esp == "sparkpost":
        return [(f"scph{rng.randint(1, 12):02d}{rng.randint(17, 25)}", domain)]
    if esp == "postmark":
        return [(f"{rng.randint(2019, 2025)}{rng.randint(10**9, 10**10 - 1)}pm", domain),
                ("pm-bounces", "pm.mtasv.net")]
    if esp == "hubspot":
        hid = rng.randint(10**6, 10**8)
        return [(f"hs1-{hid}", domain), (f"hs2-{hid}", domain)]
    return [(rng.choice(("default", "dkim", "mail", "s1", "selector1", "k1", "key1",
                         "20240115", "smtp", "mx")), domain)]


def random_for(*parts: str) -> random.Random:
    """A generator fixed by the parts (a domain's own DKIM token stays the same)."""
    return random.Random(hashlib.sha256("|".join(parts).encode()).hexdigest())


def _org(domain: str) -> str:
    parts = domain.split(".")
    return ".".join(parts[-3:]) if parts[-2] in ("co", "com") and len(parts) > 2 else \
        ".".join(parts[-2:])


async def spf(c: Client, domain: str, budget: list[int]) -> None:
    """SPF evaluation: TXT of the domain, then its includes/redirect, at most 10 lookups."""
    if budget[0] <= 0:
        return
    budget[0] -= 1
    r = await c.q(domain, "TXT")
    for txt in texts(r, "TXT"):
        if not txt.startswith("v=spf1"):
            continue
        for term in txt.split():
            if term.startswith(("include:", "redirect=")):
                await spf(c, term.split(":", 1)[-1].split("=", 1)[-1], budget)
            elif term in ("mx", "a") or term.startswith(("mx:", "a:")):
                budget[0] -= 1
                await c.q(domain if ":" not in term else term.split(":", 1)[1],
                          "MX" if term.startswith("mx") else "A")


def _b32_hash(s: str) -> str:
    """rspamd's hashed-list label: BLAKE2, Base32, 32 characters."""
    return base64.b32encode(hashlib.blake2b(s.encode(), digest_size=20).digest()).decode().lower()


async def filter_lookups(c: Client, ip: str, addrs: list[str], uris: list[str],
                         files: int) -> None:
    """The spam filter's hashed and keyed list lookups for one message (module docstring)."""
    rng, kind = c.rng, c.profile.get("filter", "spamassassin")
    qs = []
    if kind == "rspamd":
        qs += [(f"{_b32_hash(a)}.email.rspamd.com", "A") for a in addrs]
        qs += [(f"{_b32_hash(d)}.uribl.rspamd.com", "A") for d in uris]
    elif kind == "dqs":
        key = c.profile.setdefault("dqs_key", rand(random_for(c.addr, "dqs"), 26,
                                                   "abcdefghijklmnopqrstuvwxyz0123456789"))
        qs.append((f"{rev4(ip)}.{key}.zen.dq.spamhaus.net", "A"))
        for a in addrs:
            h = base64.b32encode(hashlib.sha1(a.encode()).digest()).decode().lower().rstrip("=")
            qs.append((f"{h}._email.{key}.hbl.dq.spamhaus.net", "A"))
        qs += [(f"{rand(rng, 64, HEX)}._file.{key}.hbl.dq.spamhaus.net", "A")
               for _ in range(files)]
    elif rng.random() < 0.5:
        qs += [(f"{hashlib.sha1(a.encode()).hexdigest()}.ebl.msbl.org", "A") for a in addrs]
    await asyncio.gather(*(c.q(n, t) for n, t in qs))


async def inbound_message(c: Client) -> None:
    w, rng = c.world, c.rng
    esp = rng.choice(ESPS)
    ip = public_ip(rng) if esp != "salesforce" else \
        f"{rng.choice(SALESFORCE_NETS)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    # connection: FCrDNS, then the IP blocklists in parallel
    r = await c.q(f"{rev4(ip)}.in-addr.arpa", "PTR")
    for name in texts(r, "PTR")[:1]:
        await c.addr_lookup(name.rstrip("."), aaaa=rng.random() < 0.5)
    await asyncio.gather(*(c.q(f"{rev4(ip)}.{bl}", "A") for bl in
                           IP_BLS[: rng.randint(2, len(IP_BLS))]))
    if rng.random() < 0.3:
        await c.q(f"{rev4(ip)}.list.dnswl.org", "A")
    # envelope: sender domain (an ESP customer, a partner, or a bulk sender)
    if rng.random() < 0.6:
        domain = rng.choice(w.partners)
    else:
        word = rand(rng, rng.randint(4, 9), "abcdefghijklmnopqrstuvwxyz")
        domain = f"{word}{rng.choice(['mail', 'news', 'shop', 'info', ''])}." \
                 f"{rng.choice(['com', 'net', 'io', 'co'])}"
    if rng.random() < 0.25:
        domain = f"{rng.choice(['mail', 'email', 'news', 'bounce', 'em', 'mg'])}.{domain}"
    await c.q(domain, "MX")
    await spf(c, domain, [10])
    if esp == "salesforce":   # include:_spf.salesforce.com -> exists:%{i}._spf.mta.salesforce.com
        await c.q("_spf.salesforce.com", "TXT")
        await c.q(f"{ip}._spf.mta.salesforce.com", "A")
    elif esp == "own" and rng.random() < 0.1:   # RFC 7208 7.4: exists:%{ir}.%{v}._spf.%{d2}
        await c.q(f"{rev4(ip)}.in-addr._spf.{_org(domain)}", "A")
    sigs = _dkim_signatures(c, domain, esp)
    await asyncio.gather(*(c.q(f"{sel}._domainkey.{d}", "TXT") for sel, d in sigs))
    r = await c.q(f"_dmarc.{domain}", "TXT")
    if (r is None or r.rcode() == 3) and _org(domain) != domain:
        await c.q(f"_dmarc.{_org(domain)}", "TXT")
    # body URIs and attachments
    uris = rng.sample(BODY_DOMAINS, rng.randint(0, 4)) + ([domain] if rng.random() < 0.7 else [])
    await asyncio.gather(*(c.q(f"{d}.{bl}", "A") for d in uris for bl in URI_BLS))
    files = rng.choice((0, 0, 0, 1, 1, 2))
    local = rng.choice(("info", "news", "noreply", "billing", "j.smith", "sales", "support"))
    addrs = [f"{local}@{domain}"] + ([f"reply@{rng.choice(w.partners)}"]
                                     if rng.random() < 0.3 else [])
    await filter_lookups(c, ip, addrs, uris, files)
    for _ in range(files):
        await c.q(f"{rand(rng, 32, HEX)}.hash.cymru.com", rng.choice(("A", "TXT")))


async def outbound_message(c: Client) -> None:
    rng, w = c.rng, c.world
    rcpt = rng.choice(w.partners + ["gmail.com", "outlook.com", "yahoo.com", "icloud.com",
                                    "hotmail.com", "gmx.de", "orange.fr", "web.de"])
    r = await c.q(rcpt, "MX")
    mxs = [t.split()[-1].rstrip(".") for t in texts(r, "MX")][:2] or [rcpt]
    await c.q(f"_mta-sts.{rcpt}", "TXT")
    for mx in mxs:
        await c.addr_lookup(mx)
        if rng.random() < 0.5:
            await c.q(f"_25._tcp.{mx}", "TLSA")
    if rng.random() < 0.05:
        await c.q(f"_smtp._tls.{rcpt}", "TXT")


async def own_domain_checks(c: Client) -> None:
    """The MTA checking its own records (SPF/DKIM/DMARC/MTA-STS monitors, SES tokens)."""
    w = c.world
    d = w.mail_domain
    for name, t in ((d, "TXT"), (d, "MX"), (f"_dmarc.{d}", "TXT"), (f"_mta-sts.{d}", "TXT"),
                    (f"_smtp._tls.{d}", "TXT"), (f"mta-sts.{d}", "A")):
        await c.q(name, t)
    for tok in w.ses_tokens:
        await c.q(f"{tok}._domainkey.{d}", "CNAME")
