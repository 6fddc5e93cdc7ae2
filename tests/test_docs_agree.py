"""Docs and code agree on every default and option (issue #14, item 5). Each check reads the
value from the one place the code keeps it (``Settings``, ``DaemonConfig``, the argument
parser, ``conftest.LIVE_TOOLS``) and finds it in the document a user reads. Cost: < 1 s."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import LIVE_TOOLS, ROOT
from dnsguard import cli
from dnsguard import config as dconf
from dnsguard.settings import Settings

DAEMON_MD = (ROOT / "docs" / "daemon.md").read_text()
README = (ROOT / "README.md").read_text()


def table_rows(md: str, header: str) -> dict[str, list[str]]:
    """The rows of the Markdown table whose header line starts with ``header``: first
    cell's backticked key → the other cells."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header))
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip("|").split("|")]
        m = re.fullmatch(r"`([a-z_]+)`", cells[0])
        if m:
            rows[m.group(1)] = cells[1:]
    return rows


def doc_value(cell: str):
    """The first backticked value of a cell, or the cell, read as YAML."""
    m = re.search(r"`([^`]*)`", cell)
    return yaml.safe_load(m.group(1) if m else cell)


TOP = table_rows(DAEMON_MD, "| key | default | meaning | option |")
CAPS = table_rows(DAEMON_MD, "| key | default | Settings field |")


def test_every_config_key_has_a_row():
    assert set(TOP) == set(dconf.TOP_KEYS)
    assert set(CAPS) == set(dconf.CAPS)


@pytest.mark.parametrize("key", ["promiscuous", "socket_buffer", "window", "suppress",
                                 "alert_rate", "alert_burst", "state_dir", "log_level",
                                 "metrics_address", "alerts", "sensor"])
def test_config_defaults_in_docs_are_the_code_defaults(key):
    want = getattr(dconf.DaemonConfig(), key)
    if isinstance(want, str | Path):  # strings as written, not as YAML reads them ("-")
        assert re.search(r"`([^`]*)`", TOP[key][0]).group(1).strip('"') == str(want), key
    else:
        assert doc_value(TOP[key][0]) == want, key


@pytest.mark.parametrize("key", list(dconf.CAPS))
def test_state_cap_defaults_in_docs_are_the_settings_defaults(key):
    assert doc_value(CAPS[key][0]) == getattr(Settings(), dconf.CAPS[key]), key


def test_every_documented_key_is_settable(tmp_path):
    """alert_rate and alert_burst (documented, once not settable) reach the pipeline's
    Settings; every other key is set by test_config.test_full_mapping."""
    p = tmp_path / "c.yaml"
    p.write_text("alert_rate: 2.5\nalert_burst: 7\n")
    s = dconf.load(p).to_settings()
    assert (s.alert_rate, s.alert_burst) == (2.5, 7)


def test_shipped_example_uses_the_defaults():
    example = yaml.safe_load((ROOT / "systemd" / "dnsguard.yaml").read_text())
    c, s = dconf.DaemonConfig(), Settings()
    for key in ("promiscuous", "socket_buffer", "window", "suppress", "alert_rate",
                "alert_burst", "log_level"):
        assert example[key] == getattr(c, key), key
    for key, attr in dconf.CAPS.items():
        assert example["state_caps"][key] == getattr(s, attr), key
    assert example["model"]["checkpoint_every"] == c.checkpoint_every


def _parser(cmd: str):
    ap = cli.build_parser()
    sub = next(a for a in ap._actions if a.dest == "cmd")
    return sub.choices[cmd]


def _options(cmd: str) -> set[str]:
    return {o for a in _parser(cmd)._actions for o in a.option_strings}


def test_cli_defaults_are_the_settings_defaults():
    s = Settings()
    for cmd in ("replay", "eval", "train"):
        args = _parser(cmd).parse_args(["x"] if cmd == "replay" else
                                       ["--truth", "t", "x"] + (["-o", "m"] if cmd == "train"
                                                                else []))
        for attr in ("ports", "window", "suppress", "exact_cap", "series_step"):
            assert getattr(args, attr) == getattr(s, attr), (cmd, attr)
    text = _parser("replay").format_help()
    for frag in (f"(default: {s.window:g})", f"(default: {s.suppress:g})",
                 f"(default: {s.exact_cap})"):
        assert frag in " ".join(text.split()), frag


def test_daemon_doc_options_exist_on_run():
    run = _options("run")
    for key, cells in TOP.items():
        for opt in re.findall(r"`(--?[a-z][a-z-]*)", cells[-1]):
            assert opt in run, (key, opt)


def test_readme_common_options_exist_where_it_says():
    para = README[README.index("Common options of"):]
    para = para[:para.index("\n\n")]
    common, rest = para.split("`replay` also takes", 1)
    replay_only, run_part = rest.split("`run` reads", 1)
    opts = lambda t: re.findall(r"`(--?[a-z][a-z-]*)", t)  # noqa: E731
    assert len(opts(common)) >= 8 and "-v" in opts(run_part)
    for cmd in ("replay", "eval", "train"):
        for o in opts(common):
            assert o in _options(cmd), (cmd, o)
    for o in opts(replay_only):
        assert o in _options("replay"), o
    for o in opts(run_part):
        assert o in _options("run"), o


def test_readme_common_option_defaults_are_the_code_defaults():
    """Each default the README's "common options" states is the parser's (or, for
    ``--max-keys``, which sets four caps, each Settings cap): the paragraph once read
    "``--max-keys N`` and ``--exact-cap N`` (state caps, default 128)"."""
    para = README[README.index("Common options of"):]
    common = para[:para.index("`replay` also takes")]
    s, replay_parser = Settings(), _parser("replay")
    defaults = {a.option_strings[-1]: a.default for a in replay_parser._actions
                if a.option_strings}
    chunks = re.split(r"(?=`--[a-z-]+)", common)
    checked = set()
    for chunk in chunks:
        m = re.match(r"`(--[a-z-]+)[^`]*`\s*(\(([^()]*(\([^()]*\))?)*\))?", chunk)
        if not m or not m.group(2):
            continue
        opt, said = m.group(1), m.group(2)
        if opt == "--max-keys":
            for cap in (s.max_domains, s.max_client_domains, s.max_clients, s.max_flows):
                assert f"{cap:,}" in said or str(cap) in said, (opt, cap, said)
            checked.add(opt)
            continue
        d = re.search(r"default:? (\d[\d,.]*)", said)
        if d is None:
            continue
        want = defaults[opt]
        if isinstance(want, list | tuple | set | frozenset):  # ports
            assert d.group(1) == ",".join(map(str, sorted(want))), (opt, said, want)
        else:
            assert float(d.group(1)) == float(want), (opt, said, want)
        checked.add(opt)
    assert checked >= {"--ports", "--window", "--suppress", "--settle", "--max-keys",
                       "--exact-cap"}, checked


def test_readme_names_the_live_test_tools_and_ci_installs_them():
    sentence = README[README.index("the live-capture tests need"):][:300]
    ci = (ROOT / ".ci" / "run").read_text()
    apt = ci[ci.index("apt-get install"):]
    apt = apt[:apt.index(">/dev/null")]
    for tool, package in LIVE_TOOLS.items():
        assert f"`{tool}" in sentence, tool
        assert package in apt.split(), package
