"""Every feature a rule or model can read, in one place: name → scopes, meaning, kind.

``volume`` features grow with traffic; an allowlist entry with ``action: raise`` multiplies
the thresholds rules set on them (see ``dnsguard.detect.allowlist``).
"""

from __future__ import annotations

from dataclasses import dataclass

W = ("domain", "client_domain", "client")  # windowed DNS scopes
ALL = W + ("flow",)
L = ("long_domain", "long_client_domain")  # long-horizon scopes (dnsguard.features.horizon)


@dataclass(frozen=True)
class Feature:
    name: str
    scopes: tuple[str, ...]
    description: str
    volume: bool = False


FEATURES: dict[str, Feature] = {f.name: f for f in [
    # --- per message (scope "message": one query) ---------------------------------------
    Feature("qname_len", ("message",), "query name length in octets (presentation, no dot)"),
    Feature("label_count", ("message",), "labels in the query name"),
    Feature("sub_len", ("message",), "length of the part left of the registered domain"),
    Feature("sub_labels", ("message",), "labels left of the registered domain"),
    Feature("max_label", ("message",) + W, "longest label left of the registered domain"),
    Feature("sub_entropy", ("message",), "Shannon entropy (bits/char) of the subdomain part"),
    Feature("digit_share", ("message",), "share of digits in the subdomain part"),
    Feature("upper_share", ("message",), "share of upper-case letters in the subdomain part"),
    Feature("b32_fit", ("message",), "share of subdomain chars in the Base32 alphabet"),
    Feature("b64_fit", ("message",), "share of subdomain chars in the Base64 alphabet"),
    Feature("b64url_fit", ("message",), "share of subdomain chars in the Base64url alphabet"),
    Feature("hex_fit", ("message",), "share of subdomain chars that are hex digits"),
    Feature("nonprint", ("message",), "non-printable octets in the subdomain part"),
    Feature("non_ldh", ("message",), "octets other than letters, digits, '-' and '_'"),
    Feature("encoded", ("message",), "1 if the longest label looks like encoded data "
            "(≥24 chars and ≥3.6 bits/char, or ≥4 non-LDH octets), not an identifier "
            "(id_shape) or a service-label name (service)"),
    Feature("reg_label_len", ("message",), "length of the registered domain's own label"),
    Feature("reg_label_entropy", ("message",), "entropy of the registered domain's own label"),
    Feature("reg_encoded", ("message",), "1 if the registered domain's own label looks encoded"),
    Feature("tld_known", ("message",), "1 if the TLD is in the Public Suffix List"),
    Feature("id_shape", ("message",), "1 if the subdomain's one long label is a UUID/GUID, "
            "2 if it is a hex digest of a hash length (MD5, SHA-1, SHA-2) or a hex device id "
            "after a short word (android-<16 hex>, sep<MAC>), 3 if it is a cloud resource id "
            "of words and short id fields (vpce-<17 hex>-<8>, <deployment>-<hash>-<5>), else 0"),
    Feature("service", ("message",), "1 if the subdomain holds a registered underscored "
            "label (_domainkey, _dmarc, _tcp, _udp, _msdcs, _sites, …: RFC 8552)"),
    Feature("addr", ("message",), "1 if the subdomain holds an IPv4 address as four decimal "
            "octets (24-48-150-22, ip-10-1-2-3, 22.150.48.24.static)"),
    Feature("info_bytes", ("message",), "octets of information the subdomain can hold "
            "(length × entropy / 8)"),
    Feature("qtype", ("message",), "query type number"),
    Feature("qtype_rare", ("message",), "1 if the query type is not one clients ordinarily ask"),
    # --- per key and window -------------------------------------------------------------
    Feature("queries", ALL, "queries in the window (flow: non-DNS packets)", volume=True),
    Feature("responses", ALL, "responses in the window", volume=True),
    Feature("duration", ALL, "seconds from the window's first to its last packet"),
    Feature("rate", ALL, "queries per second over the window (at least 1 s)", volume=True),
    Feature("bytes_up", ALL, "bytes moved up: subdomain octets of queries (flow: payload "
            "bytes from the client)", volume=True),
    Feature("bytes_down", ALL, "bytes moved down: answer rdata octets (flow: payload bytes "
            "from the server)", volume=True),
    Feature("nxdomain_share", ALL, "share of responses with NXDOMAIN"),
    Feature("packets", ("flow",), "non-DNS packets on a DNS port between the pair",
            volume=True),
    Feature("distinct_names", W, "distinct query names (HyperLogLog past the exact cap)",
            volume=True),
    Feature("distinct_ratio", W, "distinct names / queries"),
    Feature("clients", W, "distinct clients (counted up to 32)"),
    Feature("mean_sub_len", W, "mean subdomain length per query"),
    Feature("mean_sub_entropy", W, "mean subdomain entropy per query"),
    Feature("encoded_share", W, "share of queries whose name looks encoded"),
    Feature("encoded_queries", W, "queries whose name looks encoded", volume=True),
    Feature("non_ldh_share", W, "share of queries with octets outside letters/digits/-/_"),
    Feature("rare_qtype_share", W, "share of queries of a rare type (NULL, KEY, PRIVATE, …)"),
    Feature("carrier_share", W, "share of queries of a data-carrying type "
            "(TXT, NULL, KEY, PRIVATE, CNAME, MX, SRV, …)"),
    Feature("txt_share", W, "share of TXT queries"),
    Feature("down_per_response", W, "answer rdata bytes per response"),
    Feature("new_data", W, "octets of information in names new to the window (sum of their "
            "info_bytes): the data a channel moved up", volume=True),
    Feature("new_data_rate", W, "new_data per second over the window (at least 1 s)",
            volume=True),
    Feature("uuid_share", W, "share of queries whose subdomain is one UUID/GUID"),
    Feature("digest_share", W, "share of queries whose subdomain is one hex digest or "
            "hex device id"),
    Feature("ident_share", W, "share of queries whose subdomain is one generated identifier: "
            "a UUID/GUID, a hex digest or device id, or a cloud resource id (id_shape 1-3)"),
    Feature("service_share", W, "share of queries naming a registered underscored label"),
    Feature("addr_share", W, "share of queries with an IPv4 address in the subdomain"),
    Feature("new_label_share", ("domain",), "share of the names new to the window that hold "
            "a label (left of the registered domain) no earlier name of the window held: "
            "near 1 for a channel, whose names each carry fresh data; low for search-list "
            "expansions and service discovery, which recombine a few labels"),
    Feature("distinct_domains", ("client",), "distinct registered domains queried",
            volume=True),
    Feature("encoded_domains", ("client",), "distinct registered domains whose own label "
            "looks encoded", volume=True),
    Feature("encoded_domain_share", ("client",), "encoded_domains / distinct_domains"),
    Feature("unknown_tld_domains", ("client",), "distinct registered domains under a TLD "
            "not in the Public Suffix List", volume=True),
    Feature("unknown_tld_share", ("client",), "unknown_tld_domains / distinct_domains"),
    # --- per key over the long horizon (hours; decayed with time constant tau) ------------
    Feature("span", L, "seconds from the key's first_seen to its last query"),
    Feature("long_queries", L, "queries (time-decayed count)", volume=True),
    Feature("new_names", L, "names not seen before under the domain (time-decayed)",
            volume=True),
    Feature("new_name_share", L, "new_names / long_queries"),
    Feature("new_bytes_up", L, "estimated data carried up by new names: subdomain length × "
            "its entropy / 8, in bytes (time-decayed)", volume=True),
    Feature("long_bytes_down", L, "answer rdata bytes (time-decayed)", volume=True),
    Feature("new_encoded_share", L, "share of new names whose longest label looks encoded"),
    Feature("new_mean_sub_len", L, "mean subdomain length of the new names"),
    Feature("new_mean_sub_entropy", L, "mean subdomain entropy (bits/char) of the new names"),
    Feature("long_carrier_share", L, "share of queries of a type other than A, AAAA, HTTPS, "
            "PTR"),
    Feature("long_clients", ("long_domain",), "distinct clients (counted up to 16)"),
    Feature("checkins", ("long_client_domain",), "queries from the client to the domain "
            "since first_seen", volume=True),
    Feature("beacon_score", ("long_client_domain",), "RITA's beacon score (0..1) of the "
            "intervals and sizes: see dnsguard.features.horizon.beacon_score"),
    Feature("timing_score", ("long_client_domain",), "RITA's timing score alone (0..1): "
            "symmetry and dispersion of the intervals, and their count"),
    Feature("interval_median", ("long_client_domain",), "median seconds between queries"),
    Feature("interval_madm", ("long_client_domain",), "median absolute deviation of the "
            "intervals about their median, seconds"),
    Feature("interval_jitter", ("long_client_domain",), "interval_madm / interval_median "
            "(1 when the median is 0): about 0.69 for memoryless (Poisson) arrivals, about "
            "0.17 for a sleeping beacon with 50% jitter"),
    Feature("interval_skew", ("long_client_domain",), "Bowley skewness of the intervals"),
    Feature("size_madm", ("long_client_domain",), "median absolute deviation of the query "
            "sizes, bytes"),
    Feature("size_skew", ("long_client_domain",), "Bowley skewness of the query sizes"),
    Feature("count_score", ("long_client_domain",), "queries / (span / median interval), "
            "at most 1"),
]}


def for_scope(scope: str) -> list[str]:
    return [n for n, f in FEATURES.items() if scope in f.scopes]


# --- in words, for the alert's reasons ---------------------------------------------------
# Each feature as an analyst reads it: ``{v}`` is the value, already rounded (shares as
# percentages). tests/test_alert_fields.py checks every feature has one.
PHRASES: dict[str, str] = {
    "qname_len": "query name of {v} characters",
    "label_count": "{v} labels in the query name",
    "sub_len": "{v} characters left of the registered domain",
    "sub_labels": "{v} labels left of the registered domain",
    "max_label": "longest label {v} characters",
    "sub_entropy": "subdomain entropy {v} bits per character",
    "digit_share": "{v} of the subdomain's characters are digits",
    "upper_share": "{v} of the subdomain's characters are upper-case",
    "b32_fit": "{v} of the subdomain's characters fit Base32",
    "b64_fit": "{v} of the subdomain's characters fit Base64",
    "b64url_fit": "{v} of the subdomain's characters fit Base64url",
    "hex_fit": "{v} of the subdomain's characters are hex digits",
    "nonprint": "{v} non-printable octets in the subdomain",
    "non_ldh": "{v} octets outside letters, digits, '-' and '_'",
    "encoded": "longest label looks like encoded data ({v})",
    "reg_label_len": "registered domain's label {v} characters",
    "reg_label_entropy": "registered domain's label entropy {v} bits per character",
    "reg_encoded": "registered domain's label looks encoded ({v})",
    "tld_known": "top-level domain in the Public Suffix List ({v})",
    "qtype": "query type {v}",
    "qtype_rare": "rare query type ({v})",
    "queries": "{v} queries in the window",
    "responses": "{v} responses in the window",
    "duration": "window of {v} seconds",
    "rate": "{v} queries per second",
    "bytes_up": "{v} bytes up (query subdomains)",
    "bytes_down": "{v} bytes down (answer data)",
    "nxdomain_share": "{v} of responses are NXDOMAIN",
    "packets": "{v} non-DNS packets on a DNS port",
    "distinct_names": "{v} distinct query names",
    "distinct_ratio": "{v} of queries ask a new name",
    "clients": "{v} clients",
    "mean_sub_len": "subdomains {v} characters long on average",
    "mean_sub_entropy": "subdomain entropy {v} bits per character on average",
    "encoded_share": "{v} of queries carry encoded-looking names",
    "encoded_queries": "{v} queries carry encoded-looking names",
    "non_ldh_share": "{v} of queries have octets outside letters, digits, '-' and '_'",
    "rare_qtype_share": "{v} of queries use rare record types (NULL, KEY, PRIVATE, …)",
    "carrier_share": "{v} of queries use data-carrying record types (TXT, NULL, CNAME, …)",
    "txt_share": "{v} of queries are TXT",
    "down_per_response": "{v} bytes of answer data per response",
    "distinct_domains": "{v} registered domains queried",
    "encoded_domains": "{v} registered domains whose own label looks encoded",
    "encoded_domain_share": "{v} of the registered domains queried look encoded",
    "unknown_tld_domains": "{v} registered domains under unknown top-level domains",
    "unknown_tld_share": "{v} of the registered domains are under unknown top-level domains",
    "info_bytes": "subdomain holds {v} bytes of information",
    "id_shape": "subdomain shaped as an identifier (UUID 1, hex digest or device id 2, "
                "resource id 3: {v})",
    "service": "subdomain holds a registered underscored service label ({v})",
    "addr": "subdomain holds an IPv4 address ({v})",
    "uuid_share": "{v} of queries name one UUID/GUID",
    "digest_share": "{v} of queries name one hex digest or device id",
    "ident_share": "{v} of queries name one generated identifier (UUID, digest, resource id)",
    "service_share": "{v} of queries name a registered underscored service label",
    "addr_share": "{v} of queries hold an IPv4 address in the name",
    "new_label_share": "{v} of the new names bring a label not seen before in the window",
    "new_data": "{v} bytes of information in names new to the window",
    "new_data_rate": "{v} bytes of new information per second",
    "span": "seen for {v} seconds",
    "long_queries": "{v} queries (decayed over hours)",
    "new_names": "{v} names never seen before (decayed over hours)",
    "new_name_share": "{v} of queries ask a name never seen before",
    "new_bytes_up": "about {v} bytes of data carried up by new names (decayed over hours)",
    "long_bytes_down": "{v} bytes of answer data (decayed over hours)",
    "new_encoded_share": "{v} of the new names look encoded",
    "new_mean_sub_len": "new names' subdomains {v} characters long on average",
    "new_mean_sub_entropy": "new names' subdomain entropy {v} bits per character on average",
    "long_carrier_share": "{v} of queries ask a type other than A, AAAA, HTTPS or PTR",
    "long_clients": "new names from {v} clients",
    "checkins": "{v} check-ins from the client",
    "beacon_score": "beacon score {v} (RITA's: timing and size regularity)",
    "timing_score": "timing score {v} (RITA's: interval regularity and count)",
    "interval_median": "one check-in every {v} seconds (median)",
    "interval_madm": "intervals vary by {v} seconds (median absolute deviation)",
    "interval_jitter": "intervals vary by {v} of their median",
    "interval_skew": "interval skew {v}",
    "size_madm": "query sizes vary by {v} bytes (median absolute deviation)",
    "size_skew": "query size skew {v}",
    "count_score": "check-in count score {v}",
}
_OPS = {">=": "≥", ">": ">", "<=": "≤", "<": "<", "==": "=", "!=": "≠"}


def rounded(name: str, v: float) -> str:
    """A feature's value as a reason shows it: shares as percentages, other numbers to
    three significant digits.

    >>> rounded("encoded_share", 0.4512), rounded("sub_entropy", 4.7612), rounded("queries", 208)
    ('45%', '4.76', '208')
    """
    if _is_share(name):
        return f"{v * 100:.0f}%"
    if isinstance(v, float) and v != int(v):
        return f"{v:.3g}"
    return f"{int(v)}"


def _is_share(name: str) -> bool:
    return name.endswith(("_share", "_fit")) or name == "distinct_ratio"


def in_words(name: str, v: float, op: str | None = None, threshold: float | None = None) -> str:
    """A feature's value (and the bar it passed) in words.

    >>> in_words("distinct_names", 153, ">=", 8)
    '153 distinct query names (rule: ≥ 8)'
    >>> in_words("encoded_share", 0.45, ">=", 0.2)
    '45% of queries carry encoded-looking names (rule: ≥ 20%)'
    """
    text = PHRASES.get(name, name + " {v}").format(v=rounded(name, v))
    if op is None or threshold is None:
        return text
    return f"{text} (rule: {_OPS.get(op, op)} {rounded(name, threshold)})"
