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


def may_begin_tls_record(data: bytes) -> bool:
    """:func:`is_tls_record`, or a record's first byte alone (a header cut after it: no clear text begins with it)."""
    return is_tls_record(data) or data in RECORD_TYPES


# Bytes of a stream read mid-way (after a gap) that tell its clear text from a TLS record's middle: this many, or all
# if fewer, text (UTF-8 without controls but a tab and a line's end; a character cut at the end allowed). A handshake
# record's middle holds printable runs (a server name, ALPN's "http/1.1") but also lengths and cipher suite numbers,
# control bytes within any 256 of its bytes; 256 bytes of ciphertext are never all text. A client that carried on in
# clear text after STARTTLS sends command lines, which are.
CLEAR_TEXT_PROBE = 256
_CONTROLS = bytes(set(range(0x20)) - {0x09, 0x0A, 0x0D}) + b"\x7f"


def looks_like_clear_text(data: bytes) -> bool:
    """Whether bytes picked up mid-stream begin as clear text (command lines), not as a TLS record's middle."""
    probe = data[:CLEAR_TEXT_PROBE]
    if any(byte in _CONTROLS for byte in probe):
        return False
    try:
        probe.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character the probe's end cut is still text
        return exc.reason == "unexpected end of data" and exc.start >= len(probe) - 3
    return True


def implicit_tls_evidence(record: bytes) -> str:
    """The evidence line for a stream that starts with a TLS handshake record: what it was, never its bytes."""
    hello = _HELLO_NAMES.get(record[5], "handshake message") if len(record) > 5 else "handshake record"
    return f"[TLS {hello} from the first byte: implicit TLS]"
