"""Registered domain ("eTLD+1") from the Public Suffix List, ICANN and private sections.

The list comes with the ``publicsuffixlist`` package, which ships the current PSL inside the
wheel and is re-released whenever the list changes: updating the package updates the list, and
nothing is ever fetched at run time. It was chosen over ``tldextract`` (which downloads and caches
the list by default) and ``publicsuffix2`` (last released 2019). Unknown TLDs (``.local``,
``.attack``, a dnscat2 hex label) count as one-label public suffixes, as browsers do.

Example:
    >>> rd = RegisteredDomains()
    >>> rd.lookup("a.b.example.co.uk"), rd.lookup("x.user.blogspot.com"), rd.lookup("host.lan")
    ('example.co.uk', 'user.blogspot.com', 'host.lan')
    >>> rd.is_known_tld("com"), rd.is_known_tld("lan")
    (True, False)
"""

from __future__ import annotations

from publicsuffixlist import PublicSuffixList

TLD_KNOWN = 1  # RegisteredDomains._tld_slots: the TLD is in the PSL
TLD_WILD = 2  # RegisteredDomains._tld_slots: the TLD has a wildcard or exception rule


class RegisteredDomains:
    """Cached registered-domain lookups (bounded: the cache is cleared when full).

    Most names end in ``<label>.<tld>`` where no PSL rule has more than one label under that
    TLD's last two labels: their registered domain is those two labels, read without the PSL
    walk (``_tails2`` holds the last two labels of every rule, ``_wild1`` the TLDs with a
    wildcard or exception rule). Every other name goes through ``publicsuffixlist``; both
    give the same answer (tests/test_fastpath.py checks it against publicsuffixlist).
    """

    def __init__(self, cache_size: int = 20_000) -> None:
        self._psl = PublicSuffixList(accept_unknown=True)
        self._cache: dict[str, str] = {}
        self._tlds: dict[str, bool] = {}
        # features.payload's C pass (compiled only): per slot chosen by a hash of a TLD's
        # octets, those octets and one more saying what is_known_tld and _wild1 say of it
        # (TLD_KNOWN, TLD_WILD bits), so a name's TLD needs no string of its own.
        self._tld_slots: list[bytes | None] = [None] * 256
        self._cache_size = cache_size
        tails2: set[str] = set()
        wild1: set[str] = set()
        for rule in getattr(self._psl, "_publicsuffix", ()):
            r = rule.lstrip("!")
            bare = r[2:] if r.startswith("*.") else r
            parts = bare.split(".")
            if len(parts) >= 2:
                tails2.add(".".join(parts[-2:]))
            if len(parts) == 1 and (rule.startswith("!") or r.startswith("*.")):
                wild1.add(bare)  # a TLD with a wildcard or an exception rule
        self._tails2 = frozenset(tails2)
        self._wild1 = frozenset(wild1)
        self._fast = bool(tails2)

    def lookup(self, name: str) -> str:
        """Registered domain of a lower-case presentation name; the name itself when it is a
        public suffix (``com``) or the root (``.``)."""
        if self._fast:
            r = self._two_labels(name)
            if r is not None:
                return r  # cheaper than a cache entry: only PSL walks are cached
        r = self._cache.get(name)
        if r is None:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            r = self._psl.privatesuffix(name) or name
            self._cache[name] = r
        return r

    def _two_labels(self, name: str) -> str | None:
        """The last two labels when the PSL cannot say otherwise, else None."""
        parts = name.rsplit(".", 2)
        if len(parts) < 2 or ".." in name or name[0] == "." or name[-1] == ".":
            return None  # one label, or empty labels: the PSL's own rules decide
        tld = parts[-1]
        tail = parts[-2] + "." + tld
        if tail in self._tails2 or tld in self._wild1:
            return None
        return tail

    def is_known_tld(self, tld: str) -> bool:
        """Whether ``tld`` is a top-level domain in the PSL."""
        r = self._tlds.get(tld)
        if r is None:
            if len(self._tlds) >= 10_000:
                self._tlds.clear()
            r = self._tlds[tld] = self._psl.publicsuffix(tld, accept_unknown=False) is not None
        return r


#: Distinct names that must share a suffix below the registered domain before an alert
#: names that deeper zone (the rules' own bar for "many names": distinct_names >= 8).
ZONE_MIN_NAMES = 8


def _hostname_label(label: str) -> bool:
    """An LDH label (RFC 952/1123: letters, digits, inner hyphens; at most 63): what a zone
    an administrator delegates and blocks is named with."""
    if not 0 < len(label) <= 63 or label[0] == "-" or label[-1] == "-":
        return False
    return all(c.isascii() and (c.isalnum() or c == "-") for c in label)


def block_zone(shared: str, regdomain: str, names: int) -> str:
    """The zone a DNS administrator would block for a tunnel: the deepest zone its names
    share, at least the registered domain. A deeper zone is taken only when ``names``
    distinct names share it (``ZONE_MIN_NAMES``: a few names can share a label by chance,
    or by the tunnel's own syntax), and only through hostname labels: a tunnel's control
    syntax (dns2tcp's ``=auth``, a label of raw octets) is not a zone anyone delegated.

    ``shared`` is the presentation form of the suffix all the key's names share.

    >>> block_zone("=auth.tunnel.example", "tunnel.example", 40)
    'tunnel.example'
    >>> block_zone("t1.tunnel.example", "tunnel.example", 40)
    't1.tunnel.example'
    >>> block_zone("t1.tunnel.example", "tunnel.example", 3)  # too few names to say
    'tunnel.example'
    >>> block_zone("a.=x.b.example.com", "example.com", 40)  # stops at the first non-zone label
    'b.example.com'
    """
    if names < ZONE_MIN_NAMES or len(shared) <= len(regdomain) or \
            not shared.endswith("." + regdomain):
        return regdomain
    zone = regdomain
    for label in reversed(shared[:-len(regdomain) - 1].split(".")):
        if not _hostname_label(label):
            break
        zone = f"{label}.{zone}"
    return zone
