"""Addresses in names, sweeps, IoT, and applications that use port 53 for something else.

- Customer host names carry their address, forward and reverse (``24-48-150-22.<city>.<isp>``,
  ``ip68-5-20-1.oc.oc.cox.net``, ``ec2-3-91-20-4.compute-1.amazonaws.com``; RFC 8501 discusses
  such generated reverse names): a web or log server resolves each visitor's PTR and confirms
  it forward (Apache ``HostnameLookups Double``, https://httpd.apache.org/docs/2.4/mod/core.html#hostnamelookups;
  sshd ``UseDNS``), so the forward names of many customers appear in a short time.
- Monitoring and discovery sweep whole ranges by PTR (``nmap -sL`` reverse-resolves every
  address, https://nmap.org/book/host-discovery-dns.html; Zabbix/NetBox/IPAM discovery), then
  confirm names forward.
- DHCP-registered names (Windows DHCP/DDNS: ``DESKTOP-XXXXXXX``, Android ``android-<16 hex>``,
  HP printers ``NPIxxxxxx``, Cisco phones ``SEP<MAC>``) are looked up by helpdesk and
  management tools.
- IoT devices poll vendor clouds and NTP pools on timers, without EDNS, ignoring TTLs
  (AWS IoT Core endpoints ``<prefix>-ats.iot.<region>.amazonaws.com``,
  https://docs.aws.amazon.com/iot/latest/developerguide/iot-connect-devices.html).
- IPv6 visitors: their PTR is the 32-nibble ``ip6.arpa`` name (RFC 3596 section 2.5), one
  per address (SLAAC privacy addresses change daily, RFC 8981).
- ENUM: a SIP PBX asks NAPTR of the dialled E.164 number, digits reversed under
  ``e164.arpa`` (RFC 6116; OpenSIPS ``enum_query``: +35831234567 →
  ``7.6.5.4.3.2.1.3.8.5.3.e164.arpa``, https://opensips.org/html/docs/modules/3.1.x/enum.html;
  Asterisk ``ENUMLOOKUP``), per outbound call.
- Egress-address and resolver probes (VPN clients, dynamic-DNS updaters, monitoring):
  ``whoami.akamai.net`` A, ``whoami.ds.akahelp.net`` TXT, ``o-o.myaddr.l.google.com`` TXT,
  ``myip.opendns.com`` A, ``debug.opendns.com`` TXT (Cisco Umbrella diagnostics).
- Home routers' search domains on roaming laptops: FRITZ!Box hands out ``fritz.box``,
  OpenWrt ``lan``, many ISP boxes ``home``; single-label names are completed with it
  (``wpad``, ``nas``, ``printer``, Chrome's random probes) and peers are asked by their
  DHCP names (``DESKTOP-<7>``, ``iPhone-de-Marie``, ``ESP_<6 hex>``, ``amazon-<9 hex>``).
- Wide-area DNS-SD browsing domains, asked by macOS/iOS and Avahi on every network join
  (RFC 6763 section 11: ``b``/``db``/``lb._dns-sd._udp.<domain>`` and under the subnet's
  reverse zone).
- Non-DNS on port 53: WireGuard or OpenVPN servers listening on UDP/TCP 53 to pass captive
  portals and strict firewalls; a handshake and a few packets (lab.peer answers them).
"""

from __future__ import annotations

import asyncio
import os
import socket

from lab.benign.client import ALNUM, HEX, LOWER, Client, public_ip, rand, rev4, texts

IOT = {
    "camera": ("{p}-ats.iot.{r}.amazonaws.com", "time.google.com", "pool.ntp.org",
               "fw.ring.com", "api.ring.com", "es.ring.com"),
    "tv": ("scribe.logs.roku.com", "api.roku.com", "image.roku.com", "{n}.pool.ntp.org",
           "log-ingestion.samsungacr.com", "ocfconnect-shard-na04-euw1.samsungiotcloud.com",
           "clients3.google.com", "www.netflix.com", "ichnaea.netflix.com"),
    "thermostat": ("home.nest.com", "frontdoor.nest.com", "transport.home.nest.com",
                   "time.google.com", "clients3.google.com"),
    "plug": ("a1.tuyaus.com", "m1.tuyaus.com", "a3.tuyaus.com", "{n}.pool.ntp.org",
             "mq.gw.tuyaus.com"),
    "speaker": ("device-metrics-us.amazon.com", "api.amazonalexa.com", "avs-alexa-na.amazon.com",
                "msh.amazon.com", "dcape-na.amazon.com", "{n}.pool.ntp.org",
                "spectrum.s3.amazonaws.com", "d3p8zr0ffa9t17.cloudfront.net"),
    "printer": ("hpeprint.com", "xmpp.hpeprint.com", "h10141.www1.hp.com", "{n}.pool.ntp.org"),
    # vendor clouds an ISP sees most (https://www.planisys.net/dns/iot-telemetry-domains/)
    "vacuum": ("us.galleryapi.micloud.xiaomi.net", "api.io.mi.com", "a1.tuyaeu.com",
               "{n}.pool.ntp.org"),
    "nvr": ("dev.hik-connect.com", "api.hik-connect.com", "time.windows.com",
            "{n}.pool.ntp.org"),
    "smart_tv": ("config.samsungcloudsolution.com", "us.ad.lgsmartad.com", "logs.roku.com",
                 "{n}.pool.ntp.org", "clients3.google.com"),
}


def ip6_arpa(rng, prefix: str) -> str:
    """The ``ip6.arpa`` name of a random address in the /64 ``prefix`` (16 hex digits).

    >>> import random; n = ip6_arpa(random.Random(1), "20010db800000001")
    >>> n.endswith("1.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"), n.count(".")
    (True, 33)
    """
    return ".".join(reversed(prefix + f"{rng.getrandbits(64):016x}")) + ".ip6.arpa"


async def visitor_reverse(c: Client) -> None:
    """A web/SSH server's double reverse lookup of a connecting customer address."""
    rng, w = c.rng, c.world
    if rng.random() < 0.3:   # an IPv6 visitor
        nets = w.extra.setdefault("v6_nets", [f"2{rng.getrandbits(60):015x}" for _ in range(8)])
        r = await c.q(ip6_arpa(rng, rng.choice(nets)), "PTR")
        for name in texts(r, "PTR")[:1]:
            await c.q(name.rstrip("."), "AAAA")
        return
    ip = (f"{rng.choice(w.isp_ranges)}.{rng.randint(1, 254)}" if rng.random() < 0.6
          else public_ip(rng))
    r = await c.q(f"{rev4(ip)}.in-addr.arpa", "PTR")
    for name in texts(r, "PTR")[:1]:
        await c.addr_lookup(name.rstrip("."), aaaa=rng.random() < 0.3)


async def reverse_sweep(c: Client) -> None:
    """Monitoring: PTR of every address in a /24 (nmap -sL pace), then forward confirmations."""
    rng, w = c.rng, c.world
    net = rng.choice(w.internal_ranges + w.isp_ranges)
    names = []
    for host in range(1, 255):
        r = await c.q(f"{host}.{rev4(net)}.in-addr.arpa", "PTR")
        names += texts(r, "PTR")[:1]
        await c.sleep(rng.expovariate(1 / 0.05))
    for n in names[: rng.randint(5, 40)]:
        await c.q(n.rstrip("."), "A")
        await c.sleep(0.2)


async def forward_checks(c: Client) -> None:
    """Monitoring probes of known hosts: customer edge names (address-embedded), DCs, SOA/NS."""
    rng, w = c.rng, c.world
    for _ in range(rng.randint(3, 12)):
        a, b, cc = rng.choice(w.isp_ranges).split(".")
        d = rng.randint(1, 254)
        isp = rng.choice(("res.rr.com", "dyn.comcast.net", "static.cox.net", "cust.telia.net",
                          "dsl.att.net", "bb.sky.com"))
        city = rng.choice(("austin", "nyc", "chi", "sea", "den", "atl"))
        name = rng.choice((f"{a}-{b}-{cc}-{d}.{city}.{isp}", f"ip{a}-{b}-{cc}-{d}.{isp}",
                           f"static-{a}-{b}-{cc}-{d}.{isp}", f"{a}.{b}.{cc}.{d}.{isp}",
                           f"ec2-{a}-{b}-{cc}-{d}.compute-1.amazonaws.com"))
        await c.q(name, "A")
    await c.q(w.mail_domain, "SOA")
    await c.q(w.mail_domain, "NS")


async def dhcp_lookup(c: Client) -> None:
    rng, w = c.rng, c.world
    for _ in range(rng.randint(1, 5)):
        await c.addr_lookup(f"{rng.choice(w.dhcp_hosts)}.{w.ad_domain}", aaaa=False)


async def iot_poll(c: Client) -> None:
    rng = c.rng
    names = IOT[c.profile.get("device", "camera")]
    for n in rng.sample(names, rng.randint(1, min(3, len(names)))):
        n = n.replace("{n}", str(rng.randint(0, 3))).replace("{r}", c.world.region)
        prefix = c.profile.setdefault("iot_prefix", rand(rng, 14, ALNUM))
        n = n.replace("{p}", prefix)
        await c.q(n, "A", edns=False)


async def enum_call(c: Client) -> None:
    """A PBX placing a call: NAPTR of the number under e164.arpa (only hosts that are PBXs)."""
    if not c.profile.get("voip"):
        return
    rng = c.rng
    cc = rng.choice(("1", "44", "49", "33", "358", "61", "31"))
    digits = cc + "".join(rng.choice("0123456789") for _ in range(11 - len(cc)))
    await c.q(".".join(reversed(digits)) + ".e164.arpa", "NAPTR")


WHOAMI = (("whoami.akamai.net", "A"), ("whoami.ds.akahelp.net", "TXT"),
          ("o-o.myaddr.l.google.com", "TXT"), ("myip.opendns.com", "A"),
          ("debug.opendns.com", "TXT"))


async def whoami_probe(c: Client) -> None:
    await c.q(*c.rng.choice(WHOAMI))


def _dhcp_name(rng) -> str:
    return rng.choice((
        "DESKTOP-" + rand(rng, 7, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
        "LAPTOP-" + rand(rng, 8, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
        f"iPhone-de-{rng.choice(['Marie', 'Paul', 'Lea', 'Jonas'])}",
        f"Galaxy-S{rng.randint(9, 24)}", f"ESP_{rand(rng, 6, HEX.upper())}",
        f"esp32-{rand(rng, 6, HEX)}", f"amazon-{rand(rng, 9, HEX)}", "Chromecast",
        "HP-LaserJet-MFP", f"android-{rand(rng, 16, HEX)}"))


async def home_suffix(c: Client) -> None:
    """A roaming laptop's home-router search domain: single labels completed with it."""
    sfx = c.profile.get("home_suffix")
    if not sfx:
        return
    rng = c.rng
    peers = c.profile.setdefault("home_peers", [_dhcp_name(rng) for _ in range(8)])
    k = rng.random()
    if k < 0.4:
        await c.addr_lookup(f"{rng.choice(peers)}.{sfx}")
    elif k < 0.7:
        await c.q(f"{rng.choice(['wpad', 'nas', 'printer', 'fritz', 'router', 'isatap'])}.{sfx}",
                  "A")
    else:   # Chrome's random intranet probes, completed with the search suffix
        await asyncio.gather(*(c.q(f"{rand(rng, rng.randint(7, 15), LOWER)}.{sfx}", "A")
                               for _ in range(3)))


async def leak_test(c: Client) -> None:
    """A VPN user's DNS leak test: one-time random labels under the tester's delegated zone,
    6 (standard) or 36 (extended) at once (https://dnsdoh.art/guides/how-the-dns-leak-test-works.html:
    ``a4f9k2qz.leak.dnsdoh.art``)."""
    rng = c.rng
    zone = rng.choice(("leak.dnsdoh.art", "test.dnsleak-check.example",
                       "dnsleak.vpn-probe.example"))
    await asyncio.gather(*(c.q(f"{rand(rng, 8, LOWER + '0123456789')}.{zone}", "A")
                           for _ in range(rng.choice((6, 36)))))


async def dns_sd_browse(c: Client) -> None:
    """Browsing-domain discovery on network join (macOS/iOS, Avahi): RFC 6763 section 11."""
    if c.profile.get("os") not in ("macos", "ios", "ubuntu"):
        return
    a, b, cc, _ = c.addr.split(".") if "." in c.addr else ("10", "0", "0", "1")
    for dom in (c.world.ad_domain, f"{cc}.{b}.{a}.in-addr.arpa"):
        await asyncio.gather(*(c.q(f"{p}._dns-sd._udp.{dom}", "PTR")
                               for p in ("b", "db", "r", "dr", "lb")))


async def port53_app(c: Client) -> None:
    """A VPN client trying its server on port 53: a handshake and a few packets, UDP or TCP."""
    rng = c.rng
    peer = c.profile["peer"]
    loop = asyncio.get_running_loop()
    if rng.random() < 0.7:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setblocking(False)
            s.bind((c.addr, 0))
            if rng.random() < 0.6:   # WireGuard: initiation (148 bytes), then transport data
                first = bytes([1, 0, 0, 0]) + os.urandom(144)
                later = [bytes([4, 0, 0, 0]) + os.urandom(rng.choice((28, 60, 124, 300)))
                         for _ in range(rng.randint(1, 4))]
            else:                    # OpenVPN: P_CONTROL_HARD_RESET_CLIENT_V2, then control
                first = bytes([7 << 3]) + os.urandom(13)
                later = [bytes([4 << 3]) + os.urandom(rng.randint(60, 300))
                         for _ in range(rng.randint(1, 3))]
            for pkt in [first] + later:
                await loop.sock_sendto(s, pkt, (peer, 53))
                try:
                    await asyncio.wait_for(loop.sock_recv(s, 2048), 1.0)
                except TimeoutError:
                    pass
                await c.sleep(rng.uniform(0.05, 0.5))
        except OSError:
            pass
        finally:
            s.close()
        return
    try:                             # OpenVPN over TCP 53: 2-byte length framing
        r, wr = await asyncio.wait_for(asyncio.open_connection(peer, 53, local_addr=(c.addr, 0)), 3)
        for _ in range(rng.randint(1, 3)):
            body = bytes([7 << 3]) + os.urandom(rng.randint(13, 200))
            wr.write(len(body).to_bytes(2, "big") + body)
            await wr.drain()
            n = int.from_bytes(await asyncio.wait_for(r.readexactly(2), 3), "big")
            await asyncio.wait_for(r.readexactly(n), 3)
        wr.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        pass


__all__ = ["visitor_reverse", "reverse_sweep", "forward_checks", "dhcp_lookup", "iot_poll",
           "port53_app", "enum_call", "whoami_probe", "home_suffix", "dns_sd_browse",
           "leak_test", "HEX"]
