"""Client roles: what each kind of host does, and how often (in simulated seconds).

Each role is a host profile (operating system, stub behaviour: EDNS, host cache, browser,
endpoint product) and a list of ``(activity, mean interval in seconds)``; activities start
as Poisson processes, each host's rates scaled by a per-host activity level (log-normal), so
a set has busy and quiet hosts of every kind. ``boot`` activities run once near the start.

The default mix for N clients follows ``MIX`` (an office with a mail relay, AD desktops,
laptops, Kubernetes nodes, IoT, a monitoring host and web servers).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lab.benign import enterprise as E
from lab.benign import mail as M
from lab.benign import network as N
from lab.benign import security as S
from lab.benign import web as W
from lab.benign.client import HEX, rand


@dataclass(frozen=True)
class Role:
    name: str
    boot: tuple
    periodic: tuple     # (activity, mean interval seconds)


ROLES = {
    "mail": Role("mail", (M.own_domain_checks, E.linux_sssd), (
        (M.inbound_message, 8), (M.outbound_message, 25), (M.own_domain_checks, 1800),
        (S.av_lookup, 60), (S.cert_check, 300), (E.linux_sssd, 3600))),
    "ad_workstation": Role("ad_workstation", (W.network_change, E.logon), (
        (E.office_work, 60), (E.dc_locate, 1800), (W.browsing_session, 700),
        (W.app_background, 150), (S.av_lookup, 120), (S.cert_check, 180),
        (N.dhcp_lookup, 7200), (W.rum_probe, 900), (N.port53_app, 28800), (E.logon, 5400),
        (W.plex_connect, 3600))),
    "laptop": Role("laptop", (W.network_change, N.dns_sd_browse), (
        (W.browsing_session, 400), (W.app_background, 90), (S.av_lookup, 300),
        (S.cert_check, 180), (W.rum_probe, 400), (N.port53_app, 7200),
        (W.network_change, 3600), (N.dns_sd_browse, 3600), (W.plex_connect, 1800),
        (N.home_suffix, 300), (N.whoami_probe, 1800), (N.leak_test, 7200))),
    "k8s_node": Role("k8s_node", (E.linux_sssd,), (
        (E.k8s_pod_work, 2.5), (E.consul_lookup, 12), (E.cloud_api, 20), (S.cert_check, 600),
        (E.acme_renewal, 5400))),
    "iot": Role("iot", (N.iot_poll,), ((N.iot_poll, 60),)),
    "monitoring": Role("monitoring", (N.forward_checks,), (
        (N.reverse_sweep, 1800), (N.forward_checks, 120), (N.dhcp_lookup, 300),
        (E.dc_locate, 600), (E.linux_sssd, 3600), (N.whoami_probe, 300))),
    "web_server": Role("web_server", (E.linux_sssd,), (
        (N.visitor_reverse, 12), (S.cert_check, 600), (E.linux_sssd, 3600),
        (W.app_background, 900), (N.enum_call, 15))),
}

# share of clients per role in the default mix (at least one mail server, one monitoring host)
MIX = (("ad_workstation", 0.34), ("laptop", 0.2), ("iot", 0.18), ("k8s_node", 0.08),
       ("mail", 0.06), ("web_server", 0.08), ("monitoring", 0.06))


def assign(n: int, rng: random.Random) -> list[str]:
    """Roles for n clients by MIX (largest remainder), shuffled; every role once when n >= 7.

    >>> r = assign(40, random.Random(1)); len(r), r.count("mail") >= 2, "monitoring" in r
    (40, True, True)
    """
    counts = {name: int(n * share) for name, share in MIX}
    if n >= len(MIX):
        for name, _ in MIX:
            counts[name] = max(1, counts[name])
    while sum(counts.values()) < n:
        counts[max(MIX, key=lambda x: n * x[1] - counts[x[0]])[0]] += 1
    while sum(counts.values()) > n:
        counts[max(counts, key=counts.get)] -= 1
    out = [name for name, k in counts.items() for _ in range(k)]
    rng.shuffle(out)
    return out


def profile(role: str, rng: random.Random, world) -> dict:
    """A host's OS and stub behaviour for its role."""
    if role == "ad_workstation":
        os_ = rng.choice(("windows10", "windows11", "windows11"))
        p = {"os": os_, "edns": False, "cache": True,
             "browser": rng.choice(("edge", "chrome", "chrome", "firefox")),
             "av": rng.choice(("defender", "sophos", "mcafee", "eset")),
             "hostname": "desktop-" + rand(rng, 7, "abcdefghijklmnopqrstuvwxyz0123456789"),
             "plex": rng.random() < 0.05}
    elif role == "laptop":
        os_ = rng.choice(("macos", "windows11", "ubuntu", "ios", "android"))
        p = {"os": os_, "edns": os_ in ("macos", "ubuntu", "ios"), "cache": os_ != "android",
             "browser": rng.choice(("chrome", "safari", "firefox", "edge")),
             "av": rng.choice(("defender", "sophos", "eset", "none")),
             "hostname": f"{rng.choice(['jdoe', 'asmith', 'mlee', 'kpatel'])}-mbp",
             "plex": rng.random() < 0.15,
             # the search domain a home router left (FRITZ!Box, ISP boxes, OpenWrt)
             "home_suffix": rng.choice((None, None, "fritz.box", "home", "lan"))}
    elif role == "iot":
        p = {"os": "embedded", "edns": False, "cache": False, "https_rr": False,
             "device": rng.choice(("camera", "tv", "thermostat", "plug", "speaker", "printer",
                                    "vacuum", "nvr", "smart_tv"))}
    elif role == "k8s_node":
        p = {"os": "linux", "edns": rng.random() < 0.5, "cache": False, "https_rr": False,
             "node_domain": rng.choice((f"{world.region}.compute.internal", "ec2.internal",
                                        "c.project-prod.internal"))}
    else:   # mail, monitoring, web_server: Linux servers (glibc, some systemd-resolved)
        resolved = rng.random() < 0.4
        p = {"os": "linux", "edns": resolved, "cache": resolved, "https_rr": False,
             "av": "sophos" if role == "mail" and rng.random() < 0.5 else "none",
             "filter": rng.choice(("rspamd", "spamassassin", "dqs")) if role == "mail" else "",
             "voip": role == "web_server" and rng.random() < 0.4}
    p.setdefault("hostname", f"{role.replace('_', '-')}-{rand(rng, 4, HEX)}")
    p["site"] = rng.choice(world.sites)
    p["activity"] = min(3.0, max(0.3, rng.lognormvariate(0, 0.5)))
    return p
