"""Browsing and the web's machinery: sites, their subresources, CDNs, ads, telemetry, probes.

Name formats with random or hashed labels, each as the service uses them:
- CloudFront distributions ``d<13 chars>.cloudfront.net``
  (https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/LinkFormat.html); Akamai
  ``<host>.edgekey.net``/``e<digits>.<x>.akamaiedge.net`` and ``<name>.akamaized.net``;
  Azure Front Door/CDN ``<name>-<hash>.z01.azurefd.net``; Google ad frames
  ``<32 hex>.safeframe.googlesyndication.com``, a random subdomain per ad since January 2022
  (https://support.google.com/admanager/answer/6023110); YouTube video
  hosts ``rr<n>---sn-<8 chars>.googlevideo.com``; Facebook ``scontent-<pop>-1.xx.fbcdn.net``;
  Netflix Open Connect ``ipv4-c<nnn>-<pop>-ix.1.oca.nflxvideo.net``;
- RUM / DNS measurement beacons: Microsoft ``<32 hex>.clo.footprintdns.com``, Citrix ITM
  (Cedexis) Radar ``i1-js-14-3-01-<zone>-<customer>-<random>-i.init.cedexis-radar.net``
  (the sampler's init name, see cedexis radar samplers' source), Cloudflare's resolver check
  ``<uuid>.is-cf.cloudflareresolve.com`` (https://1.1.1.1/help); UUID-per-request telemetry
  ``<uuid>.<collector>`` (e.g. Sentry's ``o<org>.ingest.sentry.io`` with per-event names,
  vendors' ``<uuid>.events.<vendor>``);
- the DoH canary ``use-application-dns.net`` (Firefox,
  https://support.mozilla.org/en-US/kb/canary-domain-use-application-dnsnet), the DDR
  designated-resolver query ``_dns.resolver.arpa`` SVCB (RFC 9462), HTTPS RRs for every web
  host (RFC 9460), Chrome's intranet-redirect probes (three random 7-15 letter single labels
  at start-up and on network change, https://bugs.chromium.org/p/chromium/issues/detail?id=1226690);
- Plex media servers reached as ``<address with dashes>.<32 hex>.plex.direct`` (one wildcard
  certificate per server, the name resolves to the address it holds;
  https://words.filippo.io/how-plex-is-doing-https-for-all-its-users/): a client tries every
  connection address (local, public, IPv6) of every server it knows at once;
- background names of push, update and media services: Windows Update / Delivery
  Optimization (``*.dl.delivery.mp.microsoft.com``, ``*.do.dsp.mp.microsoft.com``), WNS
  (``client.wns.windows.com``), Teams, Steam content servers, Spotify, Xbox Live.
"""

from __future__ import annotations

import asyncio
import uuid

from lab.benign.client import ALNUM, HEX, LOWER, Client, rand
from lab.benign.mail import random_for

# A top-sites mix (Tranco-style popular domains) and their typical first-party hosts.
SITES = {
    "google.com": ["www", "apis", "accounts", "ogs", "play"], "youtube.com": ["www", "m"],
    "facebook.com": ["www", "m", "graph", "static"], "wikipedia.org": ["en", "upload", "www"],
    "amazon.com": ["www", "images-na", "fls-na", "completion"], "instagram.com": ["www", "i"],
    "reddit.com": ["www", "old", "gql"], "linkedin.com": ["www", "static", "media"],
    "twitter.com": ["api", "abs"], "x.com": ["api", "abs"], "netflix.com": ["www", "assets"],
    "microsoft.com": ["www", "login", "c.s-microsoft"], "apple.com": ["www", "gateway.icloud"],
    "bing.com": ["www", "th", "r"], "yahoo.com": ["www", "news", "s.yimg"],
    "github.com": ["api", "avatars", "github.githubassets", "collector", "raw"],
    "stackoverflow.com": ["cdn.sstatic", "i.stack.imgur"], "nytimes.com": ["www", "static01"],
    "bbc.co.uk": ["www", "static.files", "ichef"], "cnn.com": ["www", "edition", "media"],
    "espn.com": ["www", "a.espncdn"], "zoom.us": ["us02web", "us04web", "st1"],
    "salesforce.com": ["login", "c.la1-c2-ia5"], "dropbox.com": ["www", "bolt", "cfl"],
    "spotify.com": ["open", "api", "apresolve", "spclient.wg"], "twitch.tv": ["www", "gql"],
    "ebay.com": ["www", "ir", "pulsar"], "paypal.com": ["www", "c"],
    "office.com": ["www", "outlook"], "live.com": ["outlook", "login"],
    "adobe.com": ["www", "auth", "use.typekit"], "booking.com": ["www", "cf.bstatic"],
    "imdb.com": ["www", "m.media-amazon"], "weather.com": ["weather", "s.w-x"],
    "theguardian.com": ["www", "assets.guim", "i.guim"], "cloudflare.com": ["www", "dash"],
    "slack.com": ["app", "edgeapi", "wss-primary"], "notion.so": ["www", "msgstore"],
    "atlassian.net": ["id", "api"], "medium.com": ["cdn-images-1", "miro"],
    "duckduckgo.com": ["links", "improving"], "openai.com": ["chat", "cdn"],
    "whatsapp.com": ["web", "static"], "tiktok.com": ["www", "sf16-website-login.neutral"],
    "pinterest.com": ["www", "i.pinimg", "s.pinimg"], "walmart.com": ["www", "i5.walmartimages"],
    "etsy.com": ["www", "i.etsystatic"], "indeed.com": ["www", "secure"],
    "craigslist.org": ["www", "images"], "quora.com": ["www", "qsf.fs.quoracdn"],
    "discord.com": ["discord", "gateway", "cdn"],
    "steamcommunity.com": ["www", "community.akamai.steamstatic"],
}
THIRD_PARTY = ("www.googletagmanager.com", "www.google-analytics.com",
               "region1.google-analytics.com",
               "fonts.googleapis.com", "fonts.gstatic.com", "ajax.googleapis.com",
               "www.gstatic.com", "cdnjs.cloudflare.com", "cdn.jsdelivr.net", "unpkg.com",
               "connect.facebook.net", "static.xx.fbcdn.net", "platform.twitter.com",
               "bat.bing.com", "sb.scorecardresearch.com", "cdn.cookielaw.org",
               "geolocation.onetrust.com", "js.hs-scripts.com", "js.hs-analytics.net",
               "static.hotjar.com", "script.hotjar.com", "cdn.segment.com", "api.segment.io",
               "js-agent.newrelic.com", "bam.nr-data.net", "browser-intake-datadoghq.com",
               "static.cloudflareinsights.com", "challenges.cloudflare.com", "use.typekit.net",
               "p.typekit.net", "www.youtube.com", "i.ytimg.com", "yt3.ggpht.com",
               "cdn.optimizely.com", "logx.optimizely.com", "c.clarity.ms", "www.clarity.ms",
               "js.stripe.com", "m.stripe.network", "www.recaptcha.net", "assets.adobedtm.com",
               "dpm.demdex.net", "tags.tiqcdn.com", "s.go-mpulse.net", "c.go-mpulse.net",
               "o{n}.ingest.sentry.io", "browser.sentry-cdn.com", "cdn.amplitude.com",
               "api2.amplitude.com", "widget.intercom.io", "nexus-websocket-a.intercom.io")
ADTECH = ("securepubads.g.doubleclick.net", "pagead2.googlesyndication.com",
          "tpc.googlesyndication.com", "googleads.g.doubleclick.net", "stats.g.doubleclick.net",
          "cm.g.doubleclick.net", "ad.doubleclick.net", "ib.adnxs.com", "acdn.adnxs.com",
          "c.amazon-adsystem.com", "aax.amazon-adsystem.com", "fastlane.rubiconproject.com",
          "eus.rubiconproject.com", "pixel.rubiconproject.com", "hbopenbid.pubmatic.com",
          "ads.pubmatic.com", "image6.pubmatic.com", "htlb.casalemedia.com",
          "ssum-sec.casalemedia.com", "bidder.criteo.com", "static.criteo.net",
          "match.adsrvr.org", "js.adsrvr.org", "tlx.3lift.com", "sync.1rx.io",
          "ads.yieldmo.com", "s.amazon-adsystem.com", "prebid.media.net",
          "contextual.media.net", "pixel.quantserve.com", "secure.quantserve.com",
          "cdn.taboola.com", "trc.taboola.com", "widgets.outbrain.com", "odb.outbrain.com")
CONNECTIVITY = ("connectivitycheck.gstatic.com", "www.gstatic.com", "captive.apple.com",
                "clients3.google.com", "detectportal.firefox.com", "www.msftconnecttest.com",
                "nmcheck.gnome.org", "connectivity-check.ubuntu.com")
APPS = ("{n}-courier.push.apple.com", "gateway.icloud.com", "mtalk.google.com",
        "android.clients.google.com", "play.googleapis.com", "update.googleapis.com",
        "clientservices.googleapis.com", "safebrowsing.googleapis.com", "api.spotify.com",
        "apresolve.spotify.com", "edge-chat.facebook.com", "graph.instagram.com",
        "zoom.us", "us05web.zoom.us", "slack.com", "wss-primary.slack.com",
        "teams.microsoft.com", "outlook.office.com", "bolt.dropbox.com", "www.icloud.com",
        "p{n}-contacts.icloud.com", "weather-data.apple.com", "api.github.com",
        "copilot-proxy.githubusercontent.com", "marketplace.visualstudio.com",
        "update.code.visualstudio.com", "incoming.telemetry.mozilla.org",
        "firefox.settings.services.mozilla.com", "push.services.mozilla.com",
        "tlu.dl.delivery.mp.microsoft.com", "{n}.tlu.dl.delivery.mp.microsoft.com",
        "geo.prod.do.dsp.mp.microsoft.com", "kv{n}.prod.do.dsp.mp.microsoft.com",
        "client.wns.windows.com", "settings-win.data.microsoft.com",
        "v10.events.data.microsoft.com", "presence.teams.microsoft.com",
        "statics.teams.cdn.office.net", "api.steampowered.com",
        "cache{n}-fra1.steamcontent.com", "audio-ak-spotify-com.akamaized.net",
        "spclient.wg.spotify.com", "xsts.auth.xboxlive.com", "assets1.xboxlive.com")


def cdn_random_host(c: Client) -> str:
    rng = c.rng
    k = rng.randrange(9)
    if k == 0:
        return f"d{rand(rng, 13, LOWER + '0123456789')}.cloudfront.net"
    if k == 1:
        return f"{rand(rng, 32, HEX)}.safeframe.googlesyndication.com"
    if k == 2:
        return f"rr{rng.randint(1, 8)}---sn-{rand(rng, 8, LOWER + '0123456789')}.googlevideo.com"
    if k == 3:
        pop = rng.choice(["iad3", "lhr8", "fra3", "ams2", "sjc3", "cdg4"])
        return f"scontent-{pop}-{rng.randint(1, 2)}.xx.fbcdn.net"
    if k == 4:
        pop = rng.choice(["ord001", "lhr005", "fra002", "sea001"])
        return f"ipv4-c{rng.randint(1, 250):03d}-{pop}-ix.1.oca.nflxvideo.net"
    if k == 5:
        name = rng.choice(["img-prod-cms-rt-microsoft-com", "video-prod", "static-assets"])
        return f"{name}.akamaized.net"
    if k == 6:
        name = rng.choice(["web", "app", "cdn"])
        return f"{name}-{rand(rng, 12, LOWER + '0123456789')}.z01.azurefd.net"
    if k == 7:
        return f"e{rng.randint(1000, 99999)}.{rng.choice('abcdefg')}.akamaiedge.net"
    return f"a{rng.randint(100, 9999)}.dscb.akamai.net"


def telemetry_host(c: Client) -> str:
    rng = c.rng
    # weights: Microsoft's footprint beacons are everywhere Office runs; Cloudflare's check
    # only when someone opens 1.1.1.1/help
    k = rng.choices(range(5), weights=(40, 15, 2, 25, 18))[0]
    if k == 0:
        return f"{rand(rng, 32, HEX)}.clo.footprintdns.com"
    if k == 1:
        return (f"i1-js-14-3-01-{rng.randint(10000, 99999)}-{rng.randint(10**8, 10**9)}"
                f"-i.init.cedexis-radar.net")
    if k == 2:
        return f"{uuid.UUID(int=rng.getrandbits(128), version=4)}.is-cf.cloudflareresolve.com"
    if k == 3:
        vendor = rng.choice(("events.launchdarkly.com", "t.appsflyer.com",
                             "collector.newrelic-eu.com", "events.statsigapi.net",
                             "rum.hlx.page"))
        return f"{uuid.UUID(int=rng.getrandbits(128), version=4)}.{vendor}"
    return f"o{rng.randint(10**5, 10**6)}.ingest.sentry.io"


async def page_view(c: Client) -> None:
    """One page: the site, its first-party hosts, third parties, ads, CDN objects, in parallel."""
    rng = c.rng
    site = rng.choice(list(SITES))
    await c.browse_host(f"www.{site}" if rng.random() < 0.7 else site)
    first = SITES[site]
    hosts = [f"{h}.{site}" for h in rng.sample(first, min(len(first), rng.randint(1, 3)))]
    hosts += [h.replace("{n}", str(rng.randint(10**5, 10**6))) for h in
              rng.sample(THIRD_PARTY, rng.randint(3, 12))]
    if rng.random() < 0.5:
        hosts += rng.sample(ADTECH, rng.randint(2, 10))
    hosts += [cdn_random_host(c) for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.3:
        hosts.append(telemetry_host(c))
    await asyncio.gather(*(c.browse_host(h) for h in hosts))


async def browsing_session(c: Client) -> None:
    for _ in range(c.rng.randint(1, 12)):
        await page_view(c)
        await c.sleep(c.rng.expovariate(1 / 40))
    if c.rng.random() < 0.05:   # a mistyped address: two letters of the first label swapped
        site = c.rng.choice(list(SITES))
        label, rest = site.split(".", 1)
        if len(label) >= 3:
            i = c.rng.randrange(len(label) - 1)
            label = label[:i] + label[i + 1] + label[i] + label[i + 2:]
        await c.browse_host(f"www.{label}.{rest}")


async def network_change(c: Client) -> None:
    """Start-up / network change: connectivity checks, DoH canary, DDR, Chrome's probes."""
    rng = c.rng
    for h in rng.sample(CONNECTIVITY, 2):
        await c.addr_lookup(h)
    if c.profile.get("browser") == "firefox" or rng.random() < 0.3:
        await c.q("use-application-dns.net", "A")
        await c.q("use-application-dns.net", "AAAA")
    if c.profile.get("os") in ("windows11", "macos", "ios") or rng.random() < 0.2:
        await c.q("_dns.resolver.arpa", "SVCB")
    if c.profile.get("browser", "chrome") in ("chrome", "edge"):
        await asyncio.gather(*(c.q(rand(rng, rng.randint(7, 15), LOWER), "A") for _ in range(3)))


async def app_background(c: Client) -> None:
    rng = c.rng
    for _ in range(rng.randint(1, 3)):
        h = rng.choice(APPS).replace("{n}", str(rng.randint(1, 50)))
        await c.addr_lookup(h)
    if rng.random() < 0.2:
        await c.addr_lookup(telemetry_host(c))
    if rng.random() < 0.1:
        await c.addr_lookup(cdn_random_host(c))


async def plex_connect(c: Client) -> None:
    """A Plex client resolving every connection of every server it knows (hosts with Plex)."""
    if not c.profile.get("plex"):
        return
    w = c.world
    servers = w.extra.get("plex")
    if servers is None:
        r = random_for(str(w.seed), "plex")
        servers = w.extra["plex"] = [
            (f"{r.getrandbits(128):032x}",
             [f"192-168-{r.randint(0, 5)}-{r.randint(2, 250)}",
              f"{r.choice((24, 71, 82, 91, 176))}-{r.randrange(256)}-{r.randrange(256)}-"
              f"{r.randint(1, 254)}"] + (["-".join(f"{r.getrandbits(16):x}" for _ in range(8))]
                                         if r.random() < 0.4 else []))
            for _ in range(r.randint(2, 12))]
    rng = c.rng
    known = c.profile.setdefault("plex_servers", rng.sample(servers, rng.randint(1, len(servers))))
    await asyncio.gather(*(c.q(f"{a}.{h}.plex.direct", "AAAA" if len(a) > 20 else "A")
                           for h, addrs in known for a in addrs))


async def rum_probe(c: Client) -> None:
    """A measurement beacon: a fresh random name under the vendor's zone, every time."""
    await c.q(telemetry_host(c), "A")


__all__ = ["page_view", "browsing_session", "network_change", "app_background", "rum_probe",
           "plex_connect",
           "cdn_random_host", "telemetry_host", "ALNUM"]
