"""The vantage: resolvers and outsiders feed the domain scope only; tunnels are still found."""

from __future__ import annotations

import random

from test_generalisation import _pair

from dnsguard.config import load as load_config
from dnsguard.detect.rules import load_dir
from dnsguard.pipeline import Pipeline
from dnsguard.settings import DEFAULT_RULES, Settings


def tunnel_frames(client: str, rnd) -> list:
    out, t = [], 1_700_000_000.0
    for i in range(40):
        label = "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz234567", k=40))
        out += _pair(client, f"{label}{i}.t.tunnel.example", "TXT", "x" * 120, t + i, rnd)
    return out


def run(settings: Settings, frames: list) -> tuple[Pipeline, list[dict]]:
    alerts: list[dict] = []
    settings.use_model = False
    pipe = Pipeline(settings, load_dir(DEFAULT_RULES), alerts.append)
    for ts, data in frames:
        pipe.feed(ts, 1, data, len(data))
    pipe.finish()
    return pipe, alerts


def test_resolver_gets_no_client_keys_but_its_tunnel_domain_is_found():
    frames = tunnel_frames("10.9.0.2", random.Random(1))
    pipe, alerts = run(Settings(resolvers=("10.9.0.2",)), frames)
    assert len(pipe.tables["client"]) == 0 and len(pipe.tables["client_domain"]) == 0
    assert len(pipe.tables["domain"]) == 1
    assert any(a["domain"] and a["domain"].endswith("tunnel.example")
               and a["src_ip"] == "10.9.0.2" for a in alerts)


def test_home_networks_keep_outsiders_out_of_client_keys():
    rnd = random.Random(2)
    frames = tunnel_frames("10.9.0.7", rnd) + tunnel_frames("203.0.113.9", rnd)
    pipe, _ = run(Settings(home_networks=("10.9.0.0/16",)), sorted(frames))
    clients = {k for k in pipe.tables["client"].keys}
    assert clients == {bytes([10, 9, 0, 7])}


def test_without_a_vantage_every_client_is_tracked():
    pipe, _ = run(Settings(), tunnel_frames("10.9.0.2", random.Random(3)))
    assert len(pipe.tables["client"]) == 1


def test_config_file_maps_the_vantage(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("interfaces: [eth0]\nvantage:\n  mode: resolver\n  resolvers: [192.0.2.53]\n"
                 "  home_networks: [10.0.0.0/8]\n")
    s = load_config(p).to_settings()
    assert s.resolvers == ("192.0.2.53",) and s.home_networks == ("10.0.0.0/8",)
