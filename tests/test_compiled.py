"""The compiled hot path (setup.py, dnsguard/_compiled.py) against the interpreted one.

The same source runs both ways; these tests check that a build compiles where it can, that
both ways give the same alerts and summaries on real captures, that the compiled modules'
doctests pass interpreted, and that an edited source is never run from a stale build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from dnsguard import _compiled

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"


def _loaded_compiled() -> dict[str, bool]:
    out = subprocess.run(
        [sys.executable, "-c", "import json, importlib; from dnsguard import _compiled as c\n"
         "for m in c.MODULES: importlib.import_module(m)\n"
         "print(json.dumps(c.status()))"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


def _can_compile() -> bool:
    inc = sysconfig.get_paths().get("include", "")
    return bool(shutil.which("cc") or shutil.which("gcc")) and (Path(inc) / "Python.h").exists()


def test_hot_path_is_compiled_where_a_compiler_exists() -> None:
    if not _can_compile():
        pytest.skip("no C compiler or Python headers here: dnsguard runs interpreted")
    st = _loaded_compiled()
    missing = [m for m, c in st.items() if not c]
    assert not missing, (f"not compiled: {missing}; reinstall with `pip install -e .` and "
                         "read the build output for Cython or compiler errors")
    assert set(st) == set(_compiled.MODULES)


def test_build_record_matches_the_sources() -> None:
    """The compiled modules were built from the sources in this tree (else install() routes
    them to source, and this test says which)."""
    built = _compiled._built()
    stale = [m for m in _compiled.MODULES
             if _compiled._has_extension(m) and built.get(m) != _compiled._digest(m)]
    assert not stale, f"rebuild with `pip install -e .`: {stale} changed since compiled"


def test_a_changed_source_is_loaded_from_source(monkeypatch) -> None:
    name = "dnsguard.features.window"
    if not _compiled._has_extension(name):
        pytest.skip("not compiled here")
    monkeypatch.delenv("DNSGUARD_PURE", raising=False)
    monkeypatch.setattr(_compiled, "_built", lambda: {m: _compiled._digest(m)
                                                      for m in _compiled.MODULES if m != name})
    before = list(sys.meta_path)
    routed = set(_compiled.ROUTED)
    try:
        # and the modules that cimport it (directly or not): compiled, they would refuse
        # its Python class at import ("Window size changed")
        users = {"dnsguard.features.measure", "dnsguard.detect.judge", "dnsguard.pipeline"}
        assert _compiled.install() == {name} | users
        finder = sys.meta_path[0]
        spec = finder.find_spec(name)
        assert spec.origin.endswith("features/window.py")
        assert finder.find_spec("dnsguard.pipeline").origin.endswith("dnsguard/pipeline.py")
        assert finder.find_spec("dnsguard.decode.fastpath") is None
    finally:
        sys.meta_path[:] = before
        _compiled.ROUTED.clear()
        _compiled.ROUTED.update(routed)


def test_a_stale_module_takes_its_cimporters_to_source_with_it() -> None:
    """Every cimport is seen (a stale dnstapwire.py made the compiled pipeline fail to
    import: "DnstapScanner size changed")."""
    assert _compiled._cimporters({"dnsguard.capture.dnstapwire"}) <= {"dnsguard.pipeline"}
    assert "dnsguard.capture.dnstapwire" in _compiled._cimports("dnsguard.pipeline")
    assert _compiled._cimports("dnsguard.features.measure") >= {
        "dnsguard.features.window", "dnsguard.features.horizon"}


def test_a_module_left_uncompiled_takes_its_cimporters_to_source(monkeypatch) -> None:
    """An optional extension whose build failed (dnstapwire) while the pipeline compiled:
    the pipeline runs from source too, instead of failing at import."""
    if not _compiled._has_extension("dnsguard.pipeline"):
        pytest.skip("not compiled here")
    monkeypatch.delenv("DNSGUARD_PURE", raising=False)
    has = _compiled._has_extension
    monkeypatch.setattr(_compiled, "_has_extension",
                        lambda m: m != "dnsguard.capture.dnstapwire" and has(m))
    monkeypatch.setattr(_compiled, "_built", lambda: {m: _compiled._digest(m)
                                                      for m in _compiled.MODULES})
    before = list(sys.meta_path)
    routed = set(_compiled.ROUTED)
    try:
        assert _compiled.install() == {"dnsguard.pipeline"}
    finally:
        sys.meta_path[:] = before
        _compiled.ROUTED.clear()
        _compiled.ROUTED.update(routed)


def _replay(paths: list[Path], tmp: Path, tag: str, pure: bool) -> tuple[list[dict], dict]:
    env = dict(os.environ)  # no hash seed pinned: sketches use the keyed features.namehash
    env.pop("DNSGUARD_PURE", None)
    if pure:
        env["DNSGUARD_PURE"] = "1"
    alerts, summary = tmp / f"{tag}.jsonl", tmp / f"{tag}.json"
    subprocess.run([sys.executable, "-m", "dnsguard", "replay", "-q", "--alerts", str(alerts),
                    "--summary-json", str(summary), *map(str, paths)],
                   check=True, env=env, cwd=ROOT, capture_output=True)
    s = json.loads(summary.read_text())
    for k in ("seconds", "packets_per_second"):
        s.pop(k)
    return [json.loads(x) for x in alerts.read_text().splitlines()], s


def _equivalent(paths: list[Path], tmp: Path) -> tuple[list[dict], dict]:
    if not any(_loaded_compiled().values()):
        pytest.skip("the hot path is not compiled here: nothing to compare")
    a_c, s_c = _replay(paths, tmp, "compiled", pure=False)
    a_p, s_p = _replay(paths, tmp, "pure", pure=True)
    assert s_c.pop("hot_path") == "compiled"
    assert s_p.pop("hot_path") == "interpreted"
    assert s_c == s_p
    assert a_c == a_p
    return a_c, s_c


def test_compiled_and_interpreted_agree_on_our_captures(tmp_path) -> None:
    alerts, s = _equivalent(sorted((ROOT / "pcaps").glob("*.pcap")), tmp_path)
    assert alerts and s["queries"] > 500  # the comparison saw real work


def test_compiled_and_interpreted_agree_over_hours(tmp_path) -> None:
    """The long-horizon state (decay, new names, beacon scores) on the lab's slow captures."""
    alerts, s = _equivalent(sorted((ROOT / "pcaps" / "slow").glob("*.pcap")), tmp_path)
    assert any(a["scope"].startswith("long_") for a in alerts)


def test_compiled_and_interpreted_agree_on_a_dnstap_file(tmp_path) -> None:
    """Compiled, a dnstap file is read in place (dnstapwire + Pipeline.feed_dnstap);
    interpreted, by the protobuf runtime and feed_message."""
    from test_dnstap import dnstap_file, exfil_payloads
    from test_dnstapwire import resolver_log

    tap = tmp_path / "resolver.dnstap"
    tap.write_bytes(dnstap_file(resolver_log() + exfil_payloads(80, upstream=False)))
    alerts, s = _equivalent([tap], tmp_path)
    assert alerts and s["dnstap"]["messages"]["client_query"] > 100


@pytest.mark.corpus
def test_compiled_and_interpreted_agree_on_the_corpus(tmp_path) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} not found (the shared corpus sits beside the checkout)")
    # Varied tools and link types: dnscat2, iodine, dns2tcp, DNSExfiltrator, benign lookups.
    picks = sorted(p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng")
                   and p.stat().st_size < 3_000_000)[::3]
    alerts, s = _equivalent(picks, tmp_path)
    assert alerts and s["packets"] > 10_000


def test_compiled_modules_doctests_pass_interpreted() -> None:
    env = dict(os.environ, DNSGUARD_PURE="1")
    files = [str(_compiled._source(m)) for m in _compiled.MODULES]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--doctest-modules", *files], env=env, cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout


def test_entropy_is_bit_identical_both_ways() -> None:
    """The compiled entropy counts in C; it must return the interpreted float exactly
    (thresholds compare against it)."""
    import math
    import random
    from collections import Counter

    from dnsguard.features.payload import entropy

    def reference(data: bytes) -> float:  # the interpreted algorithm, spelled out
        n = len(data)
        if n < 2:
            return 0.0
        s = 0.0
        for c in Counter(data).values():
            s += c * math.log2(c)
        return math.log2(n) - s / n

    rng = random.Random(5)
    samples = [b"", b"a", b"aa", b"ab", b"x" * 300, bytes(range(256)) * 2]
    for _ in range(3000):
        n = rng.choice((2, 5, 16, 40, 63, 255, 256, 700))
        alpha = rng.choice((b"ab", b"0123456789abcdef", bytes(range(256))))
        samples.append(bytes(rng.choice(alpha) for _ in range(n)))
    for b in samples:
        assert entropy(b) == reference(b), b


def _payload_interpreted():
    """features.payload run by the interpreter from its .py (beside the compiled one)."""
    import importlib.machinery
    import importlib.util

    src = _compiled._source("dnsguard.features.payload")
    loader = importlib.machinery.SourceFileLoader("_payload_interpreted", str(src))
    spec = importlib.util.spec_from_file_location("_payload_interpreted", src, loader=loader)
    pure = importlib.util.module_from_spec(spec)
    loader.exec_module(pure)
    return pure


def test_name_hash_identical_to_the_interpreted_source() -> None:
    """features.namehash compiled (C SipHash-1-3) against its source run by the interpreter:
    the same hashes of every length under the default and other keys, so a sensor's sketches
    and a DNSGUARD_PURE=1 replay agree."""
    import importlib.machinery
    import importlib.util
    import random

    from dnsguard.features import namehash

    if namehash.__file__.endswith(".py"):
        pytest.skip("namehash is not compiled here")
    src = _compiled._source("dnsguard.features.namehash")
    loader = importlib.machinery.SourceFileLoader("_namehash_interpreted", str(src))
    spec = importlib.util.spec_from_file_location("_namehash_interpreted", src, loader=loader)
    pure = importlib.util.module_from_spec(spec)
    loader.exec_module(pure)
    rng = random.Random(3)
    samples = [b"", b"a", b"www.example.com"] + [bytes(rng.randrange(256) for _ in range(n))
                                                 for n in range(1, 300)]
    before = namehash.current_key()
    try:
        for key in (namehash.DEFAULT_KEY, bytes(range(16)), bytes([255] * 16),
                    bytes(rng.randrange(256) for _ in range(16))):
            namehash.set_key(key)
            pure.set_key(key)
            for s in samples:
                assert namehash.hash_bytes(s) == pure.hash_bytes(s), (key, s)
                t = s.decode("latin-1")
                assert namehash.hash_str(t) == pure.hash_str(t), (key, s)
    finally:
        namehash.set_key(before)


def test_name_features_identical_to_the_interpreted_source() -> None:
    """NameAnalyzer compiled (C entropy and alphabet counts) against the same source run by
    the interpreter, feature by feature, on names of every shape a tunnel or a user sends."""
    import random

    from dnsguard.domain import RegisteredDomains
    from dnsguard.features import payload

    pure = _payload_interpreted()
    rd = RegisteredDomains()
    a, b = payload.NameAnalyzer(rd), pure.NameAnalyzer(rd)
    rng = random.Random(7)
    alphabets = (b"abcdefghijklmnopqrstuvwxyz234567", b"0123456789abcdef",
                 b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
                 bytes(range(256)), b"www-mail.")
    names = [(), (b"com",), (b"www", b"example", b"com"), (b"a\\.b", b"co", b"uk"),
             (b"x" * 63, b"t", b"lan")]
    for _ in range(3000):
        alpha = rng.choice(alphabets)
        labels = tuple(bytes(rng.choice(alpha) for _ in range(rng.randrange(1, 64)))
                       for _ in range(rng.randrange(1, 5)))
        names.append(labels + rng.choice(((b"example", b"com"), (b"co", b"uk"), (b"local",),
                                          ())))
    for labels in names:
        fa, fb = a._compute(labels), b._compute(labels)
        assert fa.as_dict() == fb.as_dict(), labels


def test_one_pass_tld_slots_answer_as_the_psl() -> None:
    """The C pass reads what the PSL says of a name's TLD (known; a wildcard or exception
    rule) from a slot chosen by a hash of its octets (RegisteredDomains._tld_slots): with
    thousands of TLDs through 256 slots (collisions, overwrites, wildcard TLDs, TLDs
    differing in one octet or in length), each name's features equal ``_compute``'s, and a
    TLD with a wildcard rule is refused to ``_compute``. ~0.3 s."""
    import random

    from dnsguard.domain import RegisteredDomains
    from dnsguard.features import payload

    if not payload.__file__.endswith(".so"):
        pytest.skip("payload is not compiled here (the one pass is compiled-only)")
    pure = _payload_interpreted()
    rd = RegisteredDomains()
    ref = pure.NameAnalyzer(rd)
    rng = random.Random(5)
    tlds = ["com", "net", "org", "de", "uk", "jp", "io", "co", "lan", "local", "attack",
            "comm", "cm", "om", "moc", "xn--p1ai", "COM", "De"] + sorted(rd._wild1)[:20]
    tlds += ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-")
                     for _ in range(rng.randrange(1, 8))) for _ in range(3000)]
    took = wild = 0
    for i in range(6000):
        tld = tlds[i % len(tlds)] if i < 2 * len(tlds) else rng.choice(tlds)
        labels = (b"x%d" % i, b"dom", tld.encode())
        f = payload._compute_key(rd, payload.wire_key(labels))
        if f is None:
            wild += tld.lower() in rd._wild1
            continue
        took += 1
        g = ref._compute(labels)
        assert f.as_dict() == g.as_dict(), labels
    assert took > 5000 and wild > 0


def test_one_pass_name_analysis_equals_the_reference() -> None:
    """The compiled one-pass analysis of a wire name (``payload._compute_key``, what a cache
    miss on the fast path runs) against ``_compute`` run by the interpreter, on the shapes the
    special cases look for (identifiers, digests, words joined by hyphens, addresses,
    service labels, upper case, 63-octet labels, 255-octet names, suffixes the PSL walks),
    random flood names and hostile octets; malformed wire names are refused (None), never
    read past their end."""
    import random

    from dnsguard.domain import RegisteredDomains
    from dnsguard.features import payload

    if not payload.__file__.endswith(".so"):
        pytest.skip("payload is not compiled here (the one pass is compiled-only)")
    pure = _payload_interpreted()
    rd = RegisteredDomains()
    ref = pure.NameAnalyzer(rd)
    rng = random.Random(11)
    fixed = [
        "www.example.com", "WWW.Example.COM", "f81d4fae-7dec-11d0-a765-00a0c91e6bf6.ex.com",
        "d41d8cd98f00b204e9800998ecf8427e.safeframe.googlesyndication.com",
        "d41d8cd98f00b204e9800998ecf8427e.t.ex.com", "android-5165a91db7f92d52.lan.ex.org",
        "sep001122aabbcc.x.net", "ANDROID-5165A91DB7F92D52.ex.com",
        "kube-prometheus-stack-prometheus.monitoring.ex.io",
        "ingress-nginx-controller-admission-a.svc.ex.net", "ec2-54-1-2-3.compute.ex.com",
        "24.48.150.22.res.isp.net", "1_2_3_4.x.net", "a-1-2-3-4-5.x.net",
        "s1._domainkey.ex.com", "_netblocks2.google.com", "_x7Gq.a.ex.com",
        "_ldap._tcp.dc._msdcs.corp.ex.com", "mfrggzdfmztwq2lknnwg23tpobyxe43u.t1.ex.com",
        "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U.t1.ex.com", "a.b.example.co.uk", "x.user.blogspot.com",
        "host.lan", "dnscat.4142434445464748494a4b4c4d4e4f50", "a.b.c.d.e.f.g.h.ex.com",
        "3q2+7w==.ab/c.ex.com", "x" * 63 + ".ex.com", "ab.cd", "1.10.in-addr.arpa",
        "0123456789abcdef0123456789abcdef01234567.ex.com", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.x.io",
        "0123456789012345678901234567890123456789.ex.com", "a--b-cc-ddddd-eeeeeeeeeeeee.ex.com",
        "abcdefghijklm-abc-defghijklmnop.ex.com", "-abcdefghij-klmnopqrstuvwxyz.ex.com",
    ]
    names = [tuple(x.encode().split(b".")) for x in fixed]
    names.append(tuple([b"a" * 63] * 3 + [b"b" * 61]))  # 255 octets on the wire
    names.append(tuple([b"a"] * 127))  # 255 octets, 127 labels
    alpha36 = b"abcdefghijklmnopqrstuvwxyz0123456789"
    alphabets = (alpha36, b"abcdefghijklmnopqrstuvwxyz234567", b"0123456789abcdef",
                 b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
                 b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                 bytes(range(256)), b"www-mail.", b"abc-", b"0123456789-._",
                 bytes(range(0x21, 0x7F)))
    for _ in range(4000):
        alpha = rng.choice(alphabets)
        labels = tuple(bytes(rng.choice(alpha) for _ in range(rng.randrange(1, 64)))
                       for _ in range(rng.randrange(0, 4)))
        names.append(labels + rng.choice(((b"example", b"com"), (b"co", b"uk"), (b"local",),
                                          (b"Ex", b"DE"), (b"blogspot", b"com"), ())))
    for _ in range(2000):  # the bench's random flood
        names.append((bytes(rng.choices(alpha36, k=rng.randint(8, 40))),
                      bytes(rng.choices(alpha36, k=rng.randint(5, 12))),
                      rng.choice((b"com", b"net", b"org", b"io", b"de"))))
    fast = 0
    for labels in names:
        if not labels or any(not 0 < len(x) < 64 for x in labels):
            continue
        key = payload.wire_key(labels)
        if len(key) > 255:
            continue
        fa = payload._compute_key(rd, key)
        if fa is None:
            continue
        fast += 1
        fb = ref._compute(labels)
        assert fa.as_dict() == fb.as_dict(), labels
        assert fa.lower is None and fa.lowered() == fb.lower == fb.lowered(), labels
        assert fa.name_hash == fb.name_hash, labels
        assert fa.reg_hash == fb.reg_hash, labels
    assert fast > 3000  # the one pass took most names (others fall back to _compute)
    good = payload.wire_key((b"abc", b"example", b"com"))
    bad = [b"", b"\x00", good[:-1], good[:-2], good + b"\x00", b"\x03ab", b"\x40" + b"a" * 64
           + b"\x00", b"\x03abc\xc0\x0c", b"\x03abc\x07example\x03com\x01", b"\x01a" * 128
           + b"\x00", b"\x05a.b.c\x03com\x00", b"\x03a\\b\x03com\x00"]
    for key in bad:
        assert payload._compute_key(rd, key) is None, key
