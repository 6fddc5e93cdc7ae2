"""Community ID v1: the flow hash Zeek, Suricata and Arkime put in their records, so an alert
can be pivoted to their logs of the same flow.

Computed by ``communityid``, Corelight's implementation by the authors of the specification
(https://github.com/corelight/community-id-spec): pure Python, no dependencies, checked here
against the specification's published test vectors (tests/test_alert_fields.py). Hand-written,
the hash is twenty lines, but its ordering and padding rules are exactly what a reference
implementation is for.

Example:
    >>> community_id(bytes([192, 168, 1, 52]), bytes([8, 8, 8, 8]), 54585, 53)
    '1:d/FP5EW3wiY1vCndhwleRRKHowQ='
"""

from __future__ import annotations

from communityid import CommunityID, FlowTuple, FlowTupleError

PROTO_TCP, PROTO_UDP = 6, 17
_V1 = CommunityID(seed=0)  # seed 0: what the tools use unless configured otherwise


def community_id(client: bytes | str, server: bytes | str, client_port: int,
                 server_port: int, proto: int = PROTO_UDP) -> str | None:
    """The flow's Community ID (``1:`` + base64 of SHA-1), either direction giving the same
    value; None for a tuple the specification cannot hash (no ports, bad address)."""
    try:
        return _V1.calc(FlowTuple(proto, client, server, client_port, server_port))
    except (FlowTupleError, ValueError, TypeError):
        return None
