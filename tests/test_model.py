"""Model files (save, safe load, refusals), explanations, checkpoint/resume, the shipped model."""

from __future__ import annotations

import grp
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from test_train import make_captures, train_model

from dnsguard.detect import model as M
from dnsguard.detect.base import reasons_of
from dnsguard.settings import Settings

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    caps = make_captures(d, seed=2)
    return caps, train_model(d, caps)


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    M.meta_path(dst).write_bytes(M.meta_path(src).read_bytes())
    os.chmod(dst, 0o644)
    os.chmod(M.meta_path(dst), 0o644)
    return dst


def test_roundtrip(trained, tmp_path):
    _, path = trained
    bundle, meta = M.load(path)
    p2 = tmp_path / "again.pkl"
    M.save(bundle, meta, p2)
    b2, m2 = M.load(p2)
    x = M.vectorize("domain", {"queries": 20, "encoded_share": 1.0, "mean_sub_len": 60})
    assert b2["tree"].predict_proba_one(x) == bundle["tree"].predict_proba_one(x)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_tampered_file_is_refused(trained, tmp_path):
    p = _copy(trained[1], tmp_path / "t.pkl")
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(M.ModelError, match=r"t\.pkl: SHA-256 .* does not match"):
        M.load(p)


def test_group_writable_file_is_refused(trained, tmp_path):
    p = _copy(trained[1], tmp_path / "g.pkl")
    shared = next((g for g in grp.getgrall() if g.gr_gid != os.getegid() and g.gr_mem), None)
    if shared is None:
        pytest.skip("no group with members on this machine to share the file with")
    os.chown(p, -1, shared.gr_gid)  # a group others belong to
    os.chmod(p, 0o664)
    with pytest.raises(M.ModelError, match=r"g\.pkl: refusing to load: .*writable by group"):
        M.load(p)
    os.chmod(p, 0o644)
    os.chmod(M.meta_path(p), 0o646)
    with pytest.raises(M.ModelError, match=r"g\.pkl\.json: refusing to load"):
        M.load(p)


def test_group_writable_in_the_owners_private_group_is_loaded(trained, tmp_path):
    # umask 002 with user-private groups (Ubuntu, Fedora) makes every file mode 664: the group
    # is the owner alone, so the shipped model must still load.
    p = _copy(trained[1], tmp_path / "u.pkl")
    os.chown(p, -1, os.getegid())
    os.chmod(p, 0o664)
    if not M._private_group(os.stat(p)):
        pytest.skip("this user's primary group is shared with others here")
    M.load(p)


def test_model_for_other_features_is_refused(trained, tmp_path):
    p = _copy(trained[1], tmp_path / "f.pkl")
    mp = M.meta_path(p)
    meta = json.loads(mp.read_text())
    meta["features"] = meta["features"][:-1] + ["some_future_feature"]
    mp.write_text(json.dumps(meta))
    with pytest.raises(M.ModelError, match=r"built for other features .*some_future_feature.*"
                       r"retrain"):
        M.load(p)


def test_missing_metadata_is_refused(trained, tmp_path):
    p = tmp_path / "n.pkl"
    p.write_bytes(trained[1].read_bytes())
    with pytest.raises(M.ModelError, match=r"n\.pkl\.json: cannot read"):
        M.load(p)


def test_cli_reports_refusal(trained, tmp_path, capsys):
    from dnsguard.cli import main

    caps, path = trained
    p = _copy(path, tmp_path / "bad.pkl")
    os.chmod(p, 0o666)
    rc = main(["replay", "-q", "--model", str(p), str(caps["tunnel"])])
    assert rc == 2
    assert "bad.pkl: refusing to load" in capsys.readouterr().err


def test_explain_walks_the_decision_path(trained):
    bundle, meta = M.load(trained[1])
    det = M.ModelDetector(bundle, meta)
    det.support_max_outside = None  # a hand-made vector: the support check is tested below
    f = {"queries": 40, "responses": 40, "encoded_share": 1.0, "encoded_queries": 40,
         "mean_sub_len": 65, "mean_sub_entropy": 4.5, "max_label": 32, "distinct_names": 40,
         "distinct_ratio": 1.0, "txt_share": 1.0, "carrier_share": 1.0, "clients": 1,
         "down_per_response": 200, "duration": 10, "rate": 4, "bytes_up": 2600,
         "bytes_down": 8000, "new_data": 1300, "new_data_rate": 130}
    hit = det.score("domain", dict(f), ("d", "x.test"))
    assert hit is not None
    did, sev, score, _ = hit
    assert did == M.DETECTOR_ID and 0.9 <= score <= 1.0
    reasons = reasons_of(hit)  # built when an alert is raised (deferred until then)
    path = [r for r in reasons if r.startswith("model: ") and "P(tunnel)" not in r
            and "anomaly" not in r and "leaf" not in r]
    assert path, reasons
    # The few features that mattered, in words (not every split, no feature names).
    assert 1 <= len(path) <= 3 and all(r.endswith(", learned)") for r in path), reasons
    walked = [f for f, *_ in det._path(M.vectorize("domain", f))]
    assert len(set(walked) & (set(M.WINDOW_FEATURES) | set(M.DERIVED))) >= len(path)
    # minimum evidence: too few queries → no verdict
    assert det.score("domain", dict(f, queries=2), ("d", "x.test")) is None


def test_abstains_on_windows_unlike_its_leafs_tunnel_windows(trained):
    """A leaf that learnt only tunnel windows must not call a window of another kind a tunnel
    (issue #12): outside the box of its training windows the model abstains."""
    from dnsguard.detect.rules import load_dir
    from dnsguard.evaluate import load_truth
    from dnsguard.settings import Settings
    from dnsguard.train import collect

    caps, path = trained
    bundle, meta = M.load(path)
    cap = collect(caps["tunnel"], load_truth(caps["truth"])["tunnel.pcap"], Settings(),
                  load_dir(Settings().rules))
    det = M.ModelDetector(bundle, meta)
    x = next(x for _g, scope, x, y, q in cap.samples
             if y and scope == "domain" and q >= 20 and det.proba(x) >= det.threshold)
    assert M.outside_box(bundle["support"], M.leaf_path(det.tree, x)[0], x) == []
    # The same window with every name carrying an address: a kind no tunnel window showed.
    f = {n: M._natural(n, v) for n, v in x.items() if not n.startswith("scope_")}
    f["addr_share"] = 1.0
    odd = M.vectorize("domain", f)
    assert det.proba(odd) >= det.threshold  # the tree alone would call it a tunnel …
    assert "addr_share" in M.outside_box(bundle["support"], M.leaf_path(det.tree, odd)[0], odd)
    assert det.score("domain", dict(f), ("d", "x.test")) is None  # … the model abstains
    assert det.abstained == 1
    det.support_max_outside = None
    assert det.score("domain", dict(f), ("d", "x.test")) is not None


def test_checkpoint_and_resume(trained, tmp_path):
    caps, path = trained
    state = tmp_path / "state" / "model.pkl"
    s = replace(Settings(), model=path, model_state=state)
    det = M.detector_for(s)
    x = M.vectorize("domain", {"queries": 50, "encoded_share": 1.0, "mean_sub_len": 60,
                               "txt_share": 1.0, "distinct_names": 50, "new_data": 1800,
                               "new_data_rate": 36})
    before = det.proba(x)
    for _ in range(300):
        det.learn_one(x, False)
    after = det.proba(x)
    assert after < before
    det.close()
    assert state.exists() and M.meta_path(state).exists()
    assert state.stat().st_mode & 0o022 == 0
    assert not [f for f in os.listdir(state.parent) if f.endswith(".tmp")]
    det2 = M.detector_for(s)  # resumes from the checkpoint, not the base model
    assert det2.learned == 300
    assert det2.proba(x) == pytest.approx(after)
    meta = json.loads(M.meta_path(state).read_text())
    assert meta["base_sha256"] == json.loads(M.meta_path(path).read_text())["sha256"]


def test_checkpoint_on_schedule(trained, tmp_path):
    _, path = trained
    state = tmp_path / "s.pkl"
    s = replace(Settings(), model=path, model_state=state, checkpoint_every=0.0)
    det = M.detector_for(s)
    fb = tmp_path / "fb.jsonl"
    from dnsguard.feedback import append_label
    append_label(fb, "x.test", "benign")
    det.feedback = M.Feedback(fb)
    det.observe("domain", {"queries": 5}, ("d", "x.test"))
    assert state.exists()  # checkpointed from observe(), no close() needed


def test_shipped_model_loads():
    if not M.DEFAULT_MODEL.exists():
        pytest.skip(f"{M.DEFAULT_MODEL} not built yet (docs/model.md gives the command)")
    bundle, meta = M.load(M.DEFAULT_MODEL)
    assert meta["features"] == M.INPUTS
    assert M.detector_for(Settings()) is not None


@pytest.mark.corpus
def test_shipped_model_on_corpus_adds_no_false_positive():
    if not (CORPUS / "truth.yaml").exists():
        pytest.skip(f"{CORPUS} absent: the evaluation corpus is not part of the repository")
    if not M.DEFAULT_MODEL.exists():
        pytest.skip(f"{M.DEFAULT_MODEL} not built yet")
    from dnsguard.detect.rules import load_dir
    from dnsguard.evaluate import evaluate_capture, load_truth

    truth = load_truth(CORPUS / "truth.yaml")
    s = Settings()
    rs = load_dir(s.rules)
    # the benign captures where a false positive would be likeliest, fast to replay
    for name in ("slips_benign_dnsbl_spamhaus_lookups.pcap",
                 "ggy_benign_top1m_resolution_00067.pcap"):
        r = evaluate_capture(CORPUS / name, truth[name], s, rs)
        assert r["alerts"] == 0, r["false_positive_keys"]
