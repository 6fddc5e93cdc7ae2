"""Run the benign workload: every client's activities, in simulated time, inside the lab.

``run_workload(ctx, seed, sim_seconds, speed, ...)`` is meant for ``Lab.call`` (it runs inside
the client namespace). Simulated time runs ``speed`` times faster than the wall clock; the
capture is rescaled by the same factor afterwards (``lab.capture.rescale``), so the rates a
sensor sees are the simulated, realistic ones. Bounded by ``ctx.deadline``, by
``max_queries``, and by the activities' own counts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

from lab.benign.client import Client, make_world
from lab.benign.roles import ROLES, assign, profile
from lab.benign.stub import Budget, Stub

V6_ROLES = ("ad_workstation", "laptop", "k8s_node", "web_server", "monitoring")
V6_SHARE = 0.4


async def _periodic(c: Client, activity, mean: float, end_wall: float) -> None:
    mean = mean / c.profile["activity"]
    loop = asyncio.get_running_loop()
    first = c.rng.expovariate(1 / mean)     # a Poisson process: no burst of rare work at start
    if loop.time() + first / c.speed >= end_wall:
        return
    await c.sleep(first)
    while loop.time() < end_wall:
        c.spawn(activity(c))
        gap = c.rng.expovariate(1 / mean)
        if loop.time() + gap / c.speed >= end_wall:
            break
        await c.sleep(gap)


async def _boot(c: Client, activity, end_wall: float) -> None:
    delay = c.rng.uniform(0, 60)
    if asyncio.get_running_loop().time() + delay / c.speed < end_wall:
        await c.sleep(delay)
        await activity(c)


async def _main(ctx, seed: int, sim_seconds: float, speed: float, roles: list[str] | None,
                max_queries: int) -> dict:
    world = make_world(seed)
    rng = random.Random(f"clients-{seed}")
    names = roles or assign(len(ctx.clients), rng)
    budget = Budget(deadline=ctx.deadline, max_queries=max_queries)
    loop = asyncio.get_running_loop()
    end_wall = loop.time() + sim_seconds / speed
    clients: list[Client] = []
    for addr, role in zip(ctx.clients, names, strict=False):
        crng = random.Random(f"{seed}-{addr}")
        prof = profile(role, crng, world)
        prof["peer"] = ctx.peer
        resolver, source = ctx.resolver, addr
        if ctx.resolver6 and role in V6_ROLES and crng.random() < V6_SHARE:
            # a dual-stack host whose stub talks to the resolver over IPv6
            resolver, source = ctx.resolver6, ctx.clients6[ctx.clients.index(addr)]
            prof["transport"] = "ipv6"
        stub = Stub(resolver, source, budget, crng, edns=prof["edns"], cache=prof["cache"],
                    speed=speed, timeout=1.5)
        clients.append(Client(addr, role, world, stub, speed, crng, prof))
    runners = []
    for c in clients:
        r = ROLES[c.role]
        runners += [asyncio.ensure_future(_boot(c, a, end_wall)) for a in r.boot]
        runners += [asyncio.ensure_future(_periodic(c, a, m, end_wall)) for a, m in r.periodic]
    hard_end = min(ctx.deadline - time.time(), sim_seconds / speed + 30)
    try:
        await asyncio.wait_for(asyncio.gather(*runners, return_exceptions=True),
                               max(1.0, hard_end))
    except TimeoutError:
        pass
    # let in-flight activities finish briefly, then stop everything
    pending = [t for c in clients for t in c.tasks]
    if pending:
        await asyncio.wait(pending, timeout=min(3.0, max(0.5, ctx.deadline - time.time())))
    for c in clients:
        for t in list(c.tasks):
            t.cancel()
    for t in runners:
        t.cancel()
    await asyncio.sleep(0.2)
    return {"queries_sent": budget.sent, "counts": dict(budget.counts),
            "roles": dict(Counter(names[: len(clients)])),
            "clients": {c.addr: {"role": c.role, **{k: v for k, v in c.profile.items()
                                                    if k not in ("peer",)}}
                        for c in clients},
            "world": {"company": world.company, "ad_domain": world.ad_domain,
                      "ad_guid": world.ad_guid, "sites": world.sites,
                      "mail_domain": world.mail_domain, "region": world.region}}


def run_workload(ctx, seed: int, sim_seconds: float, speed: float,
                 roles: list[str] | None = None, max_queries: int = 5_000_000) -> dict:
    """The benign workload for ``sim_seconds`` of simulated time (see the module docstring)."""
    if sim_seconds <= 0 or speed <= 0:
        raise ValueError("sim_seconds and speed must be positive")
    unknown = set(roles or ()) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; known: {sorted(ROLES)}")
    Stub._slots = None
    return asyncio.run(_main(ctx, seed, sim_seconds, speed, roles, max_queries))
