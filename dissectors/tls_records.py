"""What the first bytes of a TLS stream say, without reading it: whether bytes begin a TLS record (RFC 8446 5.1),
and how a connection's first handshake record is cited as evidence (what it was, never its bytes)."""

from __future__ import annotations

# The content types a TLS record begins with (RFC 8446 5.1): change_cipher_spec, alert, handshake, application_data.
RECORD_TYPES = (b"\x14", b"\x15", b"\x16", b"\x17")
# TLS handshake message types (RFC 8446 section 4) a connection can start with.
_HELLO_NAMES = {1: "ClientHello", 2: "ServerHello"}


def is_tls_record(data: bytes) -> bool:
    """Whether ``data`` begins with a TLS record of any content type (a hello lost in a gap: what follows it)."""
    return data[:1] in RECORD_TYPES and data[1:2] == b"\x03"


def implicit_tls_evidence(record: bytes) -> str:
    """The evidence line for a stream that starts with a TLS handshake record: what it was, never its bytes."""
    hello = _HELLO_NAMES.get(record[5], "handshake message") if len(record) > 5 else "handshake record"
    return f"[TLS {hello} from the first byte: implicit TLS]"
