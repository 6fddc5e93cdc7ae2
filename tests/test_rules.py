"""Rules and allowlists: the format, its errors (file, line, field), and its semantics."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from dnsguard.detect.allowlist import Allowlist, parse_entries
from dnsguard.detect.rules import Rule, load_dir
from dnsguard.detect.yamlsrc import SourceError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return tmp_path


def test_shipped_rules_load_and_cover_every_scope():
    rs = load_dir(REPO / "rules")
    scopes = {r.scope for r in rs.rules}
    assert {"message", "domain", "client_domain", "client", "flow"} <= scopes
    assert all(e.source for e in rs.allowlist.entries)


def test_packaged_rules_are_the_repository_rules():
    from dnsguard.settings import DEFAULT_RULES

    for p in (REPO / "rules").glob("*.yaml"):
        assert (DEFAULT_RULES / p.name).read_text() == p.read_text()


@pytest.mark.parametrize("body, line, field, words", [
    ("""\
     rules:
       - id: a
         description: d
         severity: high
         scope: domain
         when:
           - distinct_names >= 8
           - nonsense_feature >= 3
     """, 8, "rules[0].when[1]", "unknown feature 'nonsense_feature'"),
    ("""\
     rules:
       - id: a
         description: d
         severity: urgent
         scope: domain
         when: [queries >= 1]
     """, 4, "rules[0].severity", "not one of low, medium, high"),
    ("""\
     rules:
       - id: a
         description: d
         severity: low
         scope: domain
         when: ["queries >>= 1"]
     """, 6, "rules[0].when[0]", "is not 'feature op number'"),
    ("""\
     rules:
       - id: a
         description: d
         severity: low
         scope: domain
         when: [encoded_domains >= 1]
     """, 6, "rules[0].when[0]", "for scope domain"),
    ("""\
     rules:
       - id: a
         description: d
         severity: low
         scope: domain
         when: [queries >= 1]
         colour: red
     """, 7, "rules[0].colour", "unknown key"),
    ("""\
     rules:
       - id: a
         description: d
         severity: low
         scope: domain
         when: [queries >= 1]
       - id: a
         description: d
         severity: low
         scope: domain
         when: [queries >= 2]
     """, 7, "rules[1].id", "duplicate rule id"),
    ("""\
     allowlist:
       - suffix: example.com
     """, 2, "allowlist[0].source", "needs a 'source'"),
    ("""\
     allowlist:
       - client: 10.0.0.999
         source: s
     """, 2, "allowlist[0].client", "not an IP address"),
    ("""\
     rules:
       - id: a
        description: bad indent
     """, 3, "", "YAML syntax"),
])
def test_errors_name_file_line_and_field(tmp_path, body, line, field, words):
    d = write(tmp_path, body)
    with pytest.raises(SourceError) as ei:
        load_dir(d)
    e = ei.value
    assert e.path.endswith("r.yaml")
    assert e.line == line
    assert e.field == field
    assert words in str(e)
    assert str(e).startswith(f"{e.path}:{line}: ")
    # it survives pickling with every field (a process pool re-raises a worker's error in the
    # parent: bench/loso.py's folds load the rules)
    back = pickle.loads(pickle.dumps(e))
    assert (back.path, back.line, back.field, back.message, str(back)) == \
        (e.path, e.line, e.field, e.message, str(e))


def test_rule_match_reports_the_conditions_that_held():
    r = Rule.parse({"id": "x", "description": "d", "severity": "high", "scope": "domain",
                    "when": ["distinct_names >= 8"],
                    "any": ["carrier_share >= 0.5", "mean_sub_len >= 30"]}, "f")
    assert r.match({"distinct_names": 9, "carrier_share": 0.1, "mean_sub_len": 10}) is None
    reasons = r.match({"distinct_names": 9, "carrier_share": 0.1, "mean_sub_len": 40})
    assert reasons == ["9 distinct query names (rule: ≥ 8)",
                       "subdomains 40 characters long on average (rule: ≥ 30)"]


def test_raise_factor_scales_only_volume_thresholds():
    r = Rule.parse({"id": "x", "description": "d", "severity": "high", "scope": "domain",
                    "when": ["distinct_names >= 10", "encoded_share >= 0.5"]}, "f")
    f = {"distinct_names": 30, "encoded_share": 0.6}
    assert r.match(f, 1.0) is not None
    assert r.match(f, 5.0) is None  # needs 50 distinct names now
    assert r.match({"distinct_names": 50, "encoded_share": 0.6}, 5.0) is not None
    assert r.match({"distinct_names": 50, "encoded_share": 0.4}, 5.0) is None


def test_allowlist_matches_label_wise_suffixes_and_networks():
    a = Allowlist(parse_entries([
        {"suffix": "spamhaus.org", "source": "s"},
        {"suffix": "cdn.example", "action": "raise", "factor": 4, "source": "s"},
        {"client": "10.1.0.0/16", "source": "s"},
        {"resolver": "2001:db8::53", "source": "s"},
        {"port": 5353, "source": "s"},
    ], "x"))
    assert a.for_domain("spamhaus.org").action == "exempt"
    assert a.for_domain("4.3.2.1.zen.spamhaus.org").action == "exempt"
    assert a.for_domain("evilspamhaus.org") is None
    assert a.for_domain("a.cdn.example").factor == 4
    assert a.for_address("client", "10.1.2.3") is not None
    assert a.for_address("client", "10.2.0.1") is None
    assert a.for_address("resolver", "2001:db8::53") is not None
    assert a.for_address("client", "2001:db8::53") is None
    assert a.ports == {5353}


def test_allowlist_walk_finds_the_most_specific_entry_as_a_full_walk_does():
    """for_domain tries suffixes from the last label leftwards and stops at the first that
    no entry ends with: the same entry as trying every suffix (the reference below), on
    nested entries, names with empty and escaped labels, the root and the shipped list."""
    import random

    from dnsguard.detect.rules import load_dir
    from dnsguard.settings import Settings

    def reference(suffixes: dict, name: str):
        cands = [name] + [name[i + 1:] for i, c in enumerate(name) if c == "."]
        for c in cands:  # longest first
            if c in suffixes:
                return suffixes[c]
        return None

    vals = ["example.com", "a.b.example.com", "com", "co.uk", "x.co.uk", "deep.a.b.c.d",
            "c.d", "in-addr.arpa", "1.10.in-addr.arpa"]
    lists = [Allowlist(parse_entries([{"suffix": v, "source": "s"} for v in vals], "x")),
             load_dir(Settings().rules).allowlist]
    rng = random.Random(3)
    words = ["example", "com", "a", "b", "c", "d", "deep", "co", "uk", "x", "", "in-addr",
             "arpa", "10", "1", "akamaiedge", "net", "www", "a\\.b"]
    names = [".", "", "com", "example.com", "a.b.example.com", "zz.a.b.example.com",
             "b.example.com", "deep.a.b.c.d", "a.b.c.d", "x.co.uk", "y.co.uk", "..com",
             "com.", "1.1.10.in-addr.arpa"]
    names += [".".join(rng.choice(words) for _ in range(rng.randrange(1, 7)))
              for _ in range(5000)]
    # for_name (the judge's call, with the registered domain): the same entry, with the
    # PSL's registered domain and with every dot-suffix of the name given as one; the first
    # list has a single-label entry ("com"), which turns its shortcut off.
    from dnsguard.domain import RegisteredDomains
    rd = RegisteredDomains()
    lists.append(Allowlist(parse_entries([{"suffix": v, "source": "s"} for v in vals
                                          if v != "com"], "x")))
    for a in lists:
        assert a._suffix
        for name in names:
            want = reference(a._suffix, name)
            assert a.for_domain(name) is want, name
            rds = [name[i + 1:] for i, c in enumerate(name) if c == "."] + [name]
            if name and ".." not in name and name[0] != "." and name[-1] != ".":
                rds.append(rd.lookup(name))
            for r in rds:
                assert a.for_name(name, r) is want, (name, r)


def test_rules_check_cli(tmp_path, capsys):
    from dnsguard.cli import main

    assert main(["rules", "check", str(REPO / "rules")]) == 0
    assert "OK" in capsys.readouterr().out
    d = write(tmp_path, "rules:\n  - id: Bad Id\n")
    assert main(["rules", "check", str(d)]) == 1
    err = capsys.readouterr().err
    assert "r.yaml:2" in err and "rules[0]" in err


def test_message_gate_never_hides_a_rule_that_fires():
    """The judge's gate (one integer condition of each message rule read as a C field)
    decides a name fires nothing only when the rules' own test agrees: on names of every
    shape (words, Base32/Base64 runs, binary labels, long and short), at factor 1 and 5,
    and for rules that have no gating condition it stands aside."""
    import random

    from dnsguard.detect.judge import _gate, _gate_open
    from dnsguard.detect.rules import name_test
    from dnsguard.domain import RegisteredDomains
    from dnsguard.features.payload import NameAnalyzer

    rules = load_dir(REPO / "rules").for_scope("message")
    assert rules
    rnd = random.Random(5)
    alpha = [b"abcdefghijklmnopqrstuvwxyz", b"abcdefghijklmnopqrstuvwxyz234567",
             b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
             bytes(range(0x21, 0x7F)), bytes(range(256))]
    names = NameAnalyzer(RegisteredDomains(64), 100_000)
    tests = {f: (_gate(rules, f), name_test(rules, f)) for f in (1.0, 5.0)}
    assert None not in [g for g, _t in tests.values()]  # the shipped rules each have one
    fired = gated = 0
    for _ in range(2500):
        a = rnd.choice(alpha)
        sub = tuple(bytes(rnd.choices(a, k=rnd.randint(1, 63))).replace(b".", b"x")
                    for _ in range(rnd.randint(1, 3)))
        nf = names.analyze(sub + (b"example", b"com"))
        for factor, (gate, test) in tests.items():
            for qtype, rare in ((1, 0), (10, 1)):
                fires = test(nf, qtype, rare)
                fired += bool(fires)
                if not _gate_open(nf, gate):
                    gated += 1
                    assert not fires, (sub, factor, qtype)
    assert fired > 100 and gated > 1000  # both outcomes, often
    ungated = Rule.parse({"id": "x", "description": "d", "severity": "low", "scope": "message",
                          "when": ["sub_entropy >= 4.0"]}, "f.yaml")
    assert _gate(rules + [ungated], 1.0) is None
