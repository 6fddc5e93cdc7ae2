"""``dnsguard replay`` starts with the cyclic collector off and runs its feed loop with it on
(pipeline.hot_loop_gc); whatever happens, the caller gets the collector back as it was."""

from __future__ import annotations

import gc

import pytest

from conftest import ROOT
from dnsguard import replay
from dnsguard.cli import main
from dnsguard.pipeline import GC_THRESHOLD, hot_loop_gc, restore_gc

PCAP = ROOT / "pcaps" / "iodine_null.pcap"


def test_hot_loop_gc_turns_a_disabled_collector_on_and_back_off():
    before = gc.get_threshold()
    gc.disable()
    try:
        saved = hot_loop_gc()
        assert gc.isenabled() and gc.get_threshold() == GC_THRESHOLD
        assert gc.get_freeze_count() > 0
        restore_gc(saved)
        assert not gc.isenabled()
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_replay_defers_the_collector_to_its_loop(monkeypatch, tmp_path):
    seen = {}
    real = replay.hot_loop_gc

    def spy():
        seen["at_start"] = gc.isenabled()  # start-up (model, rules) ran without it
        saved = real()
        seen["in_loop"] = gc.isenabled()
        return saved

    monkeypatch.setattr(replay, "hot_loop_gc", spy)
    assert gc.isenabled()
    assert main(["replay", "-q", "--alerts", str(tmp_path / "a.jsonl"), str(PCAP)]) == 0
    assert seen == {"at_start": False, "in_loop": True}
    assert gc.isenabled()


@pytest.mark.parametrize("args", [["replay", "-q", "/nonexistent.pcap"],
                                  ["rules", "check", str(ROOT / "rules")]])
def test_the_collector_is_back_on_after_any_command(args):
    main(args)
    assert gc.isenabled()
