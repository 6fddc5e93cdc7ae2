"""Every feature a rule or model can read, in one place: name → scopes, meaning, kind.

``volume`` features grow with traffic; an allowlist entry with ``action: raise`` multiplies
the thresholds rules set on them (see ``dnsguard.detect.allowlist``).
"""

from __future__ import annotations

from dataclasses import dataclass

W = ("domain", "client_domain", "client")  # windowed DNS scopes
ALL = W + ("flow",)


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
            "(≥24 chars and ≥3.6 bits/char, or ≥4 non-LDH octets)"),
    Feature("reg_label_len", ("message",), "length of the registered domain's own label"),
    Feature("reg_label_entropy", ("message",), "entropy of the registered domain's own label"),
    Feature("reg_encoded", ("message",), "1 if the registered domain's own label looks encoded"),
    Feature("tld_known", ("message",), "1 if the TLD is in the Public Suffix List"),
    Feature("id_shape", ("message",), "1 if the subdomain's one long label is a UUID/GUID, "
            "2 if it is a hex digest of a hash length (MD5, SHA-1, SHA-2), else 0"),
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
    Feature("digest_share", W, "share of queries whose subdomain is one hex digest"),
    Feature("service_share", W, "share of queries naming a registered underscored label"),
    Feature("addr_share", W, "share of queries with an IPv4 address in the subdomain"),
    Feature("distinct_domains", ("client",), "distinct registered domains queried",
            volume=True),
    Feature("encoded_domains", ("client",), "distinct registered domains whose own label "
            "looks encoded", volume=True),
    Feature("encoded_domain_share", ("client",), "encoded_domains / distinct_domains"),
    Feature("unknown_tld_domains", ("client",), "distinct registered domains under a TLD "
            "not in the Public Suffix List", volume=True),
    Feature("unknown_tld_share", ("client",), "unknown_tld_domains / distinct_domains"),
]}


def for_scope(scope: str) -> list[str]:
    return [n for n, f in FEATURES.items() if scope in f.scopes]
