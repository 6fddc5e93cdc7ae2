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


class RegisteredDomains:
    """Cached registered-domain lookups (bounded: the cache is cleared when full)."""

    def __init__(self, cache_size: int = 100_000) -> None:
        self._psl = PublicSuffixList(accept_unknown=True)
        self._cache: dict[str, str] = {}
        self._tlds: dict[str, bool] = {}
        self._cache_size = cache_size

    def lookup(self, name: str) -> str:
        """Registered domain of a lower-case presentation name; the name itself when it is a
        public suffix (``com``) or the root (``.``)."""
        r = self._cache.get(name)
        if r is None:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            r = self._psl.privatesuffix(name) or name
            self._cache[name] = r
        return r

    def is_known_tld(self, tld: str) -> bool:
        """Whether ``tld`` is a top-level domain in the PSL."""
        r = self._tlds.get(tld)
        if r is None:
            if len(self._tlds) >= 10_000:
                self._tlds.clear()
            r = self._tlds[tld] = self._psl.publicsuffix(tld, accept_unknown=False) is not None
        return r
