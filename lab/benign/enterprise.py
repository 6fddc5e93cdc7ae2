"""Enterprise discovery: Active Directory, Kubernetes, gRPC, Consul, cloud APIs.

- AD DC locator (MS-ADTS 6.3.2.3 "SRV Records Registered by an AD DC",
  https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-adts/c1987d42-1847-4cc9-acf7-aab2136d6952,
  and "How DNS support for Active Directory works",
  https://learn.microsoft.com/en-us/previous-versions/windows/it-pro/windows-server-2003/cc759550(v=ws.10)):
  ``_ldap._tcp.<site>._sites.dc._msdcs.<domain>``, ``_ldap._tcp.dc._msdcs.<domain>``,
  ``_ldap._tcp.<DomainGuid>.domains._msdcs.<forest>``, ``_ldap._tcp.pdc._msdcs.<domain>``,
  ``_kerberos._tcp[.<site>._sites].dc._msdcs.<domain>``, ``_kerberos._udp.<domain>``,
  ``_kpasswd._tcp.<domain>``, ``_gc._tcp.<forest>``, ``<DsaGuid>._msdcs.<forest>`` (CNAME,
  replication partners), SOA of the host's own name before its dynamic update; Windows NCSI
  probes ``www.msftconnecttest.com``/``dns.msftncsi.com``
  (https://learn.microsoft.com/en-us/troubleshoot/windows-client/networking/internet-explorer-edge-open-connect-corporate-public-network).
- Kubernetes (https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/): pods'
  ``resolv.conf`` has ``search <ns>.svc.cluster.local svc.cluster.local cluster.local
  <node domain>`` and ``ndots:5``, so every outside name is first tried under each suffix
  (NXDOMAIN, A and AAAA) before the real one; ``<svc>.<ns>.svc.cluster.local``,
  ``_<port>._<proto>.<svc>.<ns>.svc.cluster.local`` SRV.
- gRPC name resolution (https://github.com/grpc/grpc/blob/master/doc/naming.md and
  https://github.com/grpc/proposal/blob/master/A2-service-configs-in-dns.md):
  ``_grpclb._tcp.<host>`` SRV and ``_grpc_config.<host>`` TXT, usually NXDOMAIN.
- Consul DNS (https://developer.hashicorp.com/consul/docs/services/discovery/dns-static-lookups):
  ``<svc>.service[.<dc>].consul`` A/SRV, ``<tag>.<svc>.service.consul``.
- Cloud endpoints: S3 virtual-hosted buckets ``<bucket>.s3.<region>.amazonaws.com``
  (https://docs.aws.amazon.com/AmazonS3/latest/userguide/VirtualHosting.html), API Gateway
  ``<10-char id>.execute-api.<region>.amazonaws.com``
  (https://docs.aws.amazon.com/apigateway/latest/developerguide/how-to-call-api.html), ECR
  ``<account>.dkr.ecr.<region>.amazonaws.com``, STS/regional APIs, EC2 node names
  ``ip-10-0-1-23.<region>.compute.internal``, Azure ``<account>.blob.core.windows.net``,
  ``<vault>.vault.azure.net``; names with generated ids, a fixed set per organisation asked
  again and again: EKS API servers ``<32 hex, upper case>.gr7.<region>.eks.amazonaws.com``
  (https://docs.aws.amazon.com/eks/latest/userguide/cluster-endpoint.html), Network Load
  Balancers ``<name>-<16 hex>.elb.<region>.amazonaws.com``
  (https://docs.aws.amazon.com/elasticloadbalancing/latest/network/network-load-balancers.html),
  interface endpoints ``vpce-<17 hex>-<8 chars>.<service>.<region>.vpce.amazonaws.com``
  (https://docs.aws.amazon.com/vpc/latest/privatelink/privatelink-access-aws-services.html),
  Log Analytics workspaces ``<workspace GUID>.ods.opinsights.azure.com`` /
  ``.oms.opinsights.azure.com`` (Azure Monitor agent network requirements).
- ACME DNS-01 (RFC 8555 section 8.4): cert-manager publishes ``_acme-challenge.<host>`` TXT
  and polls it through the cluster's resolver every few seconds until it shows (its
  propagation self-check), for every host of a certificate being renewed.
"""

from __future__ import annotations

import asyncio
import uuid

from lab.benign.client import ALNUM, HEX, LOWER, Client, rand
from lab.benign.mail import random_for

INTRANET = ("intranet", "wiki", "jira", "confluence", "fs01", "fs02", "print01", "erp", "crm",
            "gitlab", "vpn", "mail", "helpdesk")
WINDOWS_CLOUD = ("login.microsoftonline.com", "outlook.office365.com", "teams.microsoft.com",
                 "config.teams.microsoft.com", "substrate.office.com", "ecs.office.com",
                 "self.events.data.microsoft.com", "v10.events.data.microsoft.com",
                 "settings-win.data.microsoft.com", "ctldl.windowsupdate.com",
                 "edge.microsoft.com", "www.office.com", "graph.microsoft.com",
                 "login.live.com", "officeclient.microsoft.com", "nexus.officeapps.live.com",
                 "fe3cr.delivery.mp.microsoft.com", "slscr.update.microsoft.com",
                 "client.wns.windows.com", "arc.msn.com", "img-s-msn-com.akamaized.net",
                 "api.msn.com", "licensing.mp.microsoft.com", "go.microsoft.com",
                 "activity.windows.com", "enterpriseregistration.windows.net")


def _dom(c: Client) -> str:
    return c.world.ad_domain


async def dc_locate(c: Client) -> None:
    """Netlogon's DC discovery at boot, logon and cache refresh."""
    d, w = _dom(c), c.world
    site = c.profile.get("site", w.sites[0])
    await c.q(f"_ldap._tcp.{site}._sites.dc._msdcs.{d}", "SRV")
    await c.q(f"_ldap._tcp.dc._msdcs.{d}", "SRV")
    if c.rng.random() < 0.4:
        await c.q(f"_ldap._tcp.{w.ad_guid}.domains._msdcs.{d}", "SRV")
    if c.rng.random() < 0.5:
        await c.q(f"_kerberos._tcp.{site}._sites.dc._msdcs.{d}", "SRV")
        await c.q(f"_kerberos._tcp.dc._msdcs.{d}", "SRV")
    if c.rng.random() < 0.2:
        await c.q(f"_ldap._tcp.pdc._msdcs.{d}", "SRV")
    if c.rng.random() < 0.3:
        await c.q(f"_gc._tcp.{site}._sites.{d}", "SRV")
        await c.q(f"_ldap._tcp.gc._msdcs.{d}", "SRV")
    for i in range(1, c.rng.randint(2, 3)):
        await c.addr_lookup(f"dc{i:02d}.{d}")


async def logon(c: Client) -> None:
    """Logon/GPO refresh: DC locator, SYSVOL via the domain name, Kerberos, own SOA."""
    d = _dom(c)
    await dc_locate(c)
    await c.addr_lookup(d)
    await c.q(f"_kerberos._udp.{d}", "SRV")
    await c.q(f"_kpasswd._tcp.{d}", "SRV")
    await c.q(f"{c.profile['hostname']}.{d}", "SOA")
    await c.addr_lookup(f"wpad.{d}")
    await c.addr_lookup("www.msftconnecttest.com", aaaa=False)
    await c.q("dns.msftncsi.com", "A")
    await c.q("ipv6.msftconnecttest.com", "AAAA")


async def office_work(c: Client) -> None:
    """An AD desktop's background and interactive names: Microsoft cloud, intranet, peers."""
    rng, w, d = c.rng, c.world, _dom(c)
    for _ in range(rng.randint(1, 4)):
        await c.addr_lookup(rng.choice(WINDOWS_CLOUD))
    if rng.random() < 0.5:
        await c.addr_lookup(f"{w.tenant}.sharepoint.com")
        await c.addr_lookup(f"{w.tenant}-my.sharepoint.com")
    if rng.random() < 0.5:
        await c.addr_lookup(f"{rng.choice(INTRANET)}.{d}")
    if rng.random() < 0.2:
        peer = rng.choice(w.dhcp_hosts)
        await c.addr_lookup(f"{peer}.{d}", aaaa=False)
    if rng.random() < 0.15:
        a, b, cc = rng.choice(w.internal_ranges).split(".")
        await c.q(f"{rng.randint(2, 250)}.{cc}.{b}.{a}.in-addr.arpa", "PTR")
    if rng.random() < 0.03:
        # a domain controller's replication partner lookup (<DsaGuid>._msdcs CNAME)
        await c.q(f"{rng.choice(w.dsa_guids)}._msdcs.{d}", "A")


async def linux_sssd(c: Client) -> None:
    """A Linux server joined to AD (SSSD/realmd): SRV at the domain, Kerberos KDC over UDP."""
    d = _dom(c)
    await c.q(f"_ldap._tcp.{d}", "SRV")
    await c.q(f"_kerberos._udp.{d}", "SRV")
    await c.q(f"_kerberos._tcp.{d}", "SRV")
    await c.q(f"_kpasswd._udp.{d}", "SRV")


# ------------------------------------------------------------------- kubernetes ---
K8S_EXTERNAL = ("api.github.com", "registry-1.docker.io", "auth.docker.io", "pypi.org",
                "files.pythonhosted.org", "registry.npmjs.org", "hooks.slack.com",
                "api.stripe.com", "oauth2.googleapis.com", "www.googleapis.com",
                "api.twilio.com", "api.sendgrid.com", "sentry.io", "api.datadoghq.com",
                "http-intake.logs.datadoghq.com", "quay.io", "ghcr.io", "gcr.io",
                "storage.googleapis.com", "api.openai.com", "login.microsoftonline.com")


def _pod_search(c: Client, ns: str) -> list[str]:
    return [f"{ns}.svc.cluster.local", "svc.cluster.local", "cluster.local",
            c.profile.get("node_domain", f"{c.world.region}.compute.internal")]


async def k8s_pod_work(c: Client) -> None:
    rng, w = c.rng, c.world
    ns = rng.choice(w.k8s_namespaces[4:] or w.k8s_namespaces)
    search = _pod_search(c, ns)
    r = rng.random()
    if r < 0.45:
        svc, sns = rng.choice(w.k8s_services)
        short = svc if sns == ns else f"{svc}.{sns}"
        await c.search(short, search, ndots=5, aaaa=rng.random() < 0.7)
    elif r < 0.65:
        await c.search(rng.choice(K8S_EXTERNAL), search, ndots=5, aaaa=rng.random() < 0.7)
    elif r < 0.75:
        svc, sns = rng.choice(w.k8s_services)
        host = f"{svc}.{sns}.svc.cluster.local"
        await c.q(f"_grpclb._tcp.{host}", "SRV")
        await c.q(f"_grpc_config.{host}", "TXT")
        await c.addr_lookup(host)
    elif r < 0.85:
        svc, sns = rng.choice(w.k8s_services)
        port = rng.choice(["http", "grpc", "metrics", "https"])
        await c.q(f"_{port}._tcp.{svc}.{sns}.svc.cluster.local", "SRV")
    else:
        await cloud_api(c)


async def cloud_api(c: Client) -> None:
    rng, w = c.rng, c.world
    reg = w.region
    k = rng.randrange(11)
    if k == 0:
        await c.addr_lookup(f"{rng.choice(w.buckets)}.s3.{reg}.amazonaws.com")
    elif k == 1:
        await c.addr_lookup(f"{rng.choice(w.buckets)}.s3.amazonaws.com")
    elif k == 2:
        await c.addr_lookup(f"{rng.choice(w.api_ids)}.execute-api.{reg}.amazonaws.com")
    elif k == 3:
        acct = c.world.extra.setdefault("account", str(rng.randint(10**11, 10**12 - 1)))
        await c.addr_lookup(f"{acct}.dkr.ecr.{reg}.amazonaws.com")
        await c.addr_lookup(f"prod-{reg}-starport-layer-bucket.s3.{reg}.amazonaws.com")
    elif k == 4:
        api = rng.choice(("sts", "sqs", "dynamodb", "logs", "monitoring", "ec2",
                          "secretsmanager", "kms"))
        await c.addr_lookup(f"{api}.{reg}.amazonaws.com")
    elif k == 5:
        account = f"{w.company.replace('-', '')}{rand(rng, 4, HEX)}"
        await c.addr_lookup(f"{account}.blob.core.windows.net")
    elif k == 6:
        await c.addr_lookup(f"kv-{w.company}-{rng.choice(['prod', 'dev'])}.vault.azure.net")
    elif k == 7:
        a, b = rng.randrange(256), rng.randrange(256)
        await c.addr_lookup(f"ip-10-0-{a}-{b}.{reg}.compute.internal", aaaa=False)
    elif k == 8:
        await c.addr_lookup(f"{rand(rng, 14, LOWER + '0123456789')}-ats.iot.{reg}.amazonaws.com")
    else:
        await c.addr_lookup(rng.choice(cloud_ids(c)))


def cloud_ids(c: Client) -> list[str]:
    """The organisation's endpoints with generated ids (fixed by the seed): EKS clusters,
    NLBs, interface endpoints, Log Analytics workspaces."""
    w = c.world
    got = w.extra.get("cloud_ids")
    if got is None:
        r = random_for(str(w.seed), "cloud-ids")
        regs = (w.region, w.region, "us-east-1", "eu-west-1")
        got = [f"{r.getrandbits(128):032X}.{r.choice(('gr7', 'yl4', 'sk1'))}."
               f"{r.choice(regs)}.eks.amazonaws.com" for _ in range(r.randint(2, 8))]
        got += [f"{r.choice(['api', 'ingest', 'grpc', 'mqtt', 'edge'])}-{r.choice(['prod', 'stg'])}"
                f"-{r.getrandbits(64):016x}.elb.{r.choice(regs)}.amazonaws.com"
                for _ in range(r.randint(3, 12))]
        got += [f"vpce-{r.getrandbits(68):017x}-{rand(r, 8, ALNUM)}.{svc}.{w.region}"
                f".vpce.amazonaws.com" for svc in r.sample(["s3", "sts", "ecr.api", "logs",
                                                            "secretsmanager", "kms"], 3)]
        for _ in range(r.randint(1, 3)):
            g = uuid.UUID(int=r.getrandbits(128), version=4)
            got += [f"{g}.ods.opinsights.azure.com", f"{g}.oms.opinsights.azure.com"]
        w.extra["cloud_ids"] = got
    return got


async def acme_renewal(c: Client) -> None:
    """cert-manager renewing a certificate by DNS-01: each host's ``_acme-challenge`` TXT
    polled until the token shows (answers are the stand-in's, the polling is what counts)."""
    rng, w = c.rng, c.world
    hosts = [f"{h}.{w.mail_domain}" for h in rng.sample(
        ["www", "api", "app", "portal", "grafana", "auth", "status", "shop", "docs", "cdn",
         "vpn", "git", "ci", "registry", "s3", "mqtt"], rng.randint(1, 8))]
    for _ in range(rng.randint(3, 12)):
        await asyncio.gather(*(c.q(f"_acme-challenge.{h}", "TXT") for h in hosts))
        await c.sleep(rng.uniform(5, 10))


async def consul_lookup(c: Client) -> None:
    rng, w = c.rng, c.world
    svc = rng.choice(w.consul_services)
    name = rng.choice((f"{svc}.service.consul", f"{svc}.service.dc1.consul",
                       f"{rng.choice(['primary', 'v2', 'canary', 'blue'])}.{svc}.service.consul"))
    if rng.random() < 0.5:
        await asyncio.gather(c.q(name, "A"), c.q(name, "SRV"))
    else:
        await c.q(name, "A")
