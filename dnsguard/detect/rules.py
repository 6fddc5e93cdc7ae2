"""YAML detection rules: which features of which key, past which thresholds, mean a tunnel.

A rules directory holds ``*.yaml`` files; each may have a ``rules:`` list and an
``allowlist:`` list (see :mod:`dnsguard.detect.allowlist`). The format is documented in
``rules/README.md``. A rule::

    - id: encoded-subdomains           # unique, [a-z0-9-]
      description: Names under one domain carry encoded data.
      severity: high                   # low | medium | high
      score: 0.9                       # optional, 0..1; default by severity
      scope: domain                    # message | domain | client_domain | client | flow
      when:                            # all must hold
        - distinct_names >= 8
        - encoded_share >= 0.5
      any:                             # optional: at least one must hold as well
        - mean_sub_len >= 30
        - carrier_share >= 0.5

Conditions are ``FEATURE OP NUMBER`` with OP one of ``>= > <= < == !=``; features are listed
in :mod:`dnsguard.features.catalog`. Conditions compile once to a Python expression over
validated names and numbers (nothing from the file is evaluated as code).

Example:
    >>> r = Rule.parse({"id": "x", "description": "d", "severity": "low", "scope": "domain",
    ...                 "when": ["distinct_names >= 8"]}, "f.yaml")
    >>> r.match({"distinct_names": 9}), r.match({"distinct_names": 3})
    (['9 distinct query names (rule: ≥ 8)'], None)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from dnsguard.detect import yamlsrc
from dnsguard.detect.yamlsrc import LineDict, SourceError
from dnsguard.features.catalog import FEATURES, in_words
from dnsguard.features.window import SCOPES

SEVERITIES = {"low": 0.4, "medium": 0.6, "high": 0.85}
# Features that can only reach N after at least N queries (or packets) of the key.
COUNT_FEATURES = frozenset({"queries", "distinct_names", "encoded_queries", "distinct_domains",
                            "encoded_domains", "unknown_tld_domains", "packets"})
_COND = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
RULE_KEYS = {"id", "description", "severity", "score", "scope", "when", "any", "enabled",
             "mitre"}
# MITRE ATT&CK techniques a rule may name (``mitre:``), with their names for the docs.
MITRE = {
    "T1071.004": "Application Layer Protocol: DNS (command and control over DNS)",
    "T1048.003": "Exfiltration Over Alternative Protocol: Exfiltration Over Unencrypted "
                 "Non-C2 Protocol",
    "T1572": "Protocol Tunneling",
}


@dataclass(frozen=True)
class Condition:
    feature: str
    op: str
    value: float

    def scaled(self, factor: float) -> Condition:
        """Raise the bar by ``factor`` on volume features compared from below."""
        if factor != 1 and FEATURES[self.feature].volume and self.op in (">=", ">"):
            return Condition(self.feature, self.op, self.value * factor)
        return self

    def expr(self) -> str:
        return f"f[{self.feature!r}] {self.op} {self.value!r}"

    def text(self, f: dict) -> str:
        """The condition as it held, in words (features/catalog.py), rounded."""
        return in_words(self.feature, f.get(self.feature, 0), self.op, self.value)


@dataclass
class Rule:
    id: str
    description: str
    severity: str
    score: float
    scope: str
    when: list[Condition]
    any: list[Condition] = field(default_factory=list)
    source: str = ""
    mitre: tuple[str, ...] = ()  # ATT&CK technique ids (MITRE)
    _compiled: dict = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, d: object, path: str, where: str = "rules[0]") -> Rule:
        line = d.line if isinstance(d, LineDict) else 0
        if not isinstance(d, dict):
            raise SourceError(path, line, where, "a rule must be a mapping with id, "
                              "description, severity, scope and when")

        def at(key: str) -> int:
            return d.line_of(key) if isinstance(d, LineDict) else 0

        for k in d:
            if k not in RULE_KEYS:
                raise SourceError(path, at(k), f"{where}.{k}",
                                  f"unknown key (allowed: {', '.join(sorted(RULE_KEYS))})")
        for k in ("id", "description", "severity", "scope", "when"):
            if k not in d:
                raise SourceError(path, line, where, f"missing required key '{k}'")
        rid = d["id"]
        if not isinstance(rid, str) or not _ID.match(rid):
            raise SourceError(path, at("id"), f"{where}.id",
                              f"{rid!r} is not a valid id (lower-case letters, digits, '-')")
        if not isinstance(d["description"], str) or not d["description"].strip():
            raise SourceError(path, at("description"), f"{where}.description",
                              "must be a non-empty string")
        sev = d["severity"]
        if sev not in SEVERITIES:
            raise SourceError(path, at("severity"), f"{where}.severity",
                              f"{sev!r} is not one of {', '.join(SEVERITIES)}")
        score = d.get("score", SEVERITIES[sev])
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise SourceError(path, at("score"), f"{where}.score",
                              f"{score!r} must be a number from 0 to 1")
        scope = d["scope"]
        if scope not in SCOPES:
            raise SourceError(path, at("scope"), f"{where}.scope",
                              f"{scope!r} is not one of {', '.join(SCOPES)}")
        when = _conditions(d, "when", scope, path, where, required=True)
        anyc = _conditions(d, "any", scope, path, where, required=False)
        mitre = d.get("mitre", [])
        if not isinstance(mitre, list) or any(m not in MITRE for m in mitre):
            raise SourceError(path, at("mitre"), f"{where}.mitre",
                              f"{mitre!r} must be a list of ATT&CK technique ids among "
                              f"{', '.join(MITRE)}")
        return cls(rid, d["description"].strip(), sev, float(score), scope, when, anyc,
                   source=f"{path}:{line}", mitre=tuple(mitre))

    def min_queries(self) -> int:
        """Fewest updates of a key before this rule can possibly fire (its count thresholds):
        the pipeline does not evaluate keys below the smallest such bound of their scope."""
        n = 1
        for c in self.when:
            if c.feature in COUNT_FEATURES and c.op in (">=", ">"):
                v = math.floor(c.value) + 1 if c.op == ">" else math.ceil(c.value)
                n = max(n, v)
        return n

    def min_of(self, feature: str) -> float:
        """The least value of ``feature`` the rule can fire at (its ``when`` conditions on it
        from below; 0 when it has none).

        >>> Rule.parse({"id": "b", "description": "d", "severity": "low",
        ...             "scope": "long_client_domain", "when": ["checkins >= 30"]},
        ...            "f.yaml").min_of("checkins")
        30.0
        """
        n = 0.0
        for c in self.when:
            if c.feature == feature and c.op in (">=", ">"):
                n = max(n, c.value)
        return n

    def _fn(self, factor: float):
        fn = self._compiled.get(factor)
        if fn is None:
            when = [c.scaled(factor) for c in self.when]
            anyc = [c.scaled(factor) for c in self.any]
            expr = " and ".join(c.expr() for c in when) or "True"
            if anyc:
                expr += " and (" + " or ".join(c.expr() for c in anyc) + ")"
            fn = eval(f"lambda f: {expr}", {"__builtins__": {}})  # noqa: S307 - validated
            self._compiled[factor] = fn = (fn, when, anyc)
        return fn

    def test(self, factor: float = 1.0):
        """The rule at allowlist factor ``factor`` as a function of a feature dict, true
        when it fires (compiled once per factor; the judge keeps it to call per
        evaluation)."""
        return self._fn(factor)[0]

    def fires(self, f: dict, factor: float = 1.0) -> bool:
        """Whether the rule fires on features ``f`` (the reasons are built only for an
        alert the policy raises: :meth:`reasons`)."""
        return bool(self._fn(factor)[0](f))

    def reasons(self, f: dict, factor: float = 1.0) -> list[str]:
        """One reason per condition that held, in words (features/catalog.py)."""
        _fn, when, anyc = self._fn(factor)
        reasons = [c.text(f) for c in when]
        reasons += [c.text(f) for c in anyc if _holds(c, f)]
        return reasons

    def match(self, f: dict, factor: float = 1.0) -> list[str] | None:
        """Reasons (one per condition that held) if the rule fires on features ``f``."""
        return self.reasons(f, factor) if self.fires(f, factor) else None


#: The message features that are not attributes of a name's features: the query's own.
_QUERY_FEATURES = ("qtype", "qtype_rare")


def name_test(rules: list[Rule], factor: float = 1.0):
    """Whether any of the message ``rules`` fires, as one function of a name's features
    read as attributes (``features.payload.NameFeatures``) and the query's type:
    ``test(nf, qtype, qtype_rare)``. The same verdict as :meth:`Rule.fires` on the name's
    feature dict (booleans compare as 0/1) without building the dict: the judge asks it of
    every new name, and most names fire nothing. Names only from the catalog (validated).

    >>> r = Rule.parse({"id": "x", "description": "d", "severity": "low", "scope": "message",
    ...                 "when": ["non_ldh >= 8", "qtype_rare == 1"]}, "f.yaml")
    >>> class N:
    ...     non_ldh = 9
    >>> test = name_test([r])
    >>> test(N(), 10, 1), test(N(), 1, 0), name_test([])(N(), 1, 0)
    (True, False, False)
    """
    def term(c: Condition) -> str:
        ref = c.feature if c.feature in _QUERY_FEATURES else f"n.{c.feature}"
        return f"{ref} {c.op} {c.value!r}"

    alts = []
    for r in rules:
        _fn, when, anyc = r._fn(factor)
        expr = " and ".join(term(c) for c in when) or "True"
        if anyc:
            expr += " and (" + " or ".join(term(c) for c in anyc) + ")"
        alts.append(f"({expr})")
    body = " or ".join(alts) or "False"
    return eval(f"lambda n, qtype, qtype_rare: {body}",  # noqa: S307 - validated
                {"__builtins__": {}})


def _holds(c: Condition, f: dict) -> bool:
    v = f.get(c.feature, 0)
    return {">=": v >= c.value, ">": v > c.value, "<=": v <= c.value, "<": v < c.value,
            "==": v == c.value, "!=": v != c.value}[c.op]


def _conditions(d: dict, key: str, scope: str, path: str, where: str,
                required: bool) -> list[Condition]:
    if key not in d:
        return []
    items = d[key]
    line = d.line_of(key) if isinstance(d, LineDict) else 0
    if not isinstance(items, list) or (required and not items):
        raise SourceError(path, line, f"{where}.{key}",
                          "must be a non-empty list of 'feature op number' strings")
    lines = getattr(items, "item_lines", [line] * len(items))
    out = []
    for i, c in enumerate(items):
        fld = f"{where}.{key}[{i}]"
        m = _COND.match(c) if isinstance(c, str) else None
        if not m:
            raise SourceError(path, lines[i], fld, f"{c!r} is not 'feature op number' "
                              "(e.g. 'distinct_names >= 20')")
        name, op, val = m.group(1), m.group(2), float(m.group(3))
        feat = FEATURES.get(name)
        if feat is None or scope not in feat.scopes:
            known = ", ".join(n for n, f in FEATURES.items() if scope in f.scopes)
            raise SourceError(path, lines[i], fld,
                              f"unknown feature {name!r} for scope {scope} (known: {known})")
        out.append(Condition(name, op, val))
    return out


@dataclass
class RuleSet:
    """All rules and allowlist entries of a rules directory."""

    rules: list[Rule]
    allowlist: object  # dnsguard.detect.allowlist.Allowlist
    files: list[str] = field(default_factory=list)

    def for_scope(self, scope: str) -> list[Rule]:
        return [r for r in self.rules if r.scope == scope]


def load_dir(path: str | Path) -> RuleSet:
    """Load every ``*.yaml``/``*.yml`` file of a rules directory (or one file)."""
    from dnsguard.detect.allowlist import Allowlist, parse_entries

    p = Path(path)
    if p.is_dir():
        files = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
        if not files:
            raise SourceError(p, 0, "", "no *.yaml rule files in this directory")
    elif p.is_file():
        files = [p]
    else:
        raise SourceError(p, 0, "", "no such rules file or directory")
    rules: list[Rule] = []
    entries = []
    seen: dict[str, str] = {}
    for fp in files:
        doc = yamlsrc.load(fp)
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise SourceError(fp, getattr(doc, "line", 1), "",
                              "top level must be a mapping with 'rules' and/or 'allowlist'")
        for k in doc:
            if k not in ("rules", "allowlist"):
                raise SourceError(fp, doc.line_of(k), str(k),
                                  "unknown top-level key (allowed: rules, allowlist)")
        rl = doc.get("rules") or []
        if not isinstance(rl, list):
            raise SourceError(fp, doc.line_of("rules"), "rules", "must be a list of rules")
        for i, rd in enumerate(rl):
            r = Rule.parse(rd, str(fp), f"rules[{i}]")
            if r.id in seen:
                raise SourceError(fp, getattr(rd, "line", 0), f"rules[{i}].id",
                                  f"duplicate rule id {r.id!r} (first at {seen[r.id]})")
            seen[r.id] = r.source
            if rd.get("enabled", True) is not False:
                rules.append(r)
        al = doc.get("allowlist") or []
        if not isinstance(al, list):
            raise SourceError(fp, doc.line_of("allowlist"), "allowlist",
                              "must be a list of entries")
        entries += parse_entries(al, str(fp))
    return RuleSet(rules, Allowlist(entries), [str(f) for f in files])
