"""GSS-API and SPNEGO tokens (RFC 2743 3.1, RFC 4178 4.2) as HTTP ``Negotiate`` carries them: a bounded DER reader
that finds the NTLMSSP message inside, and names Kerberos (and NegoEx) tokens without decoding them.

What a ``Negotiate`` token can be, and what :func:`unwrap` makes of it:

* ``NTLMSSP\\0...``: a raw NTLMSSP message (Windows sends these under ``Negotiate`` when it skips SPNEGO);
* ``[APPLICATION 0] { thisMech OID, innerToken }`` (tag 0x60): the initial context token; its mechanism is SPNEGO
  (then a NegTokenInit follows), Kerberos (an AP-REQ follows) or NTLMSSP;
* ``[0] NegTokenInit`` / ``[1] NegTokenResp`` (tags 0xa0 / 0xa1): the SPNEGO messages after the first, whose
  ``mechToken`` / ``responseToken`` OCTET STRING holds the real mechanism's token;
* Kerberos messages on their own: AP-REQ ``[APPLICATION 14]`` (0x6e), AP-REP ``[APPLICATION 15]`` (0x6f),
  KRB-ERROR ``[APPLICATION 30]`` (0x7e).

The input is attacker-controlled: every length is checked against what is left, lengths of more than four octets,
indefinite lengths and nesting deeper than :data:`MAX_DEPTH` are refused, and an element count is bounded. A token
that does not parse is named ``unknown`` with an anomaly; nothing here raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dissectors.ntlmssp.spec import SIGNATURE as NTLMSSP_SIGNATURE

# Nesting followed at most: SPNEGO needs four levels (APPLICATION 0, NegTokenInit, SEQUENCE, [2]) plus slack.
MAX_DEPTH = 8
# Elements read in one SEQUENCE (NegTokenInit has four fields; a mechTypes list rarely more than five OIDs).
MAX_ELEMENTS = 32
# An OBJECT IDENTIFIER longer than this is not one GSS-API uses (the longest, NegoEx's, is 10 octets).
MAX_OID = 32
# Length octets of a long-form DER length: four cover any token an HTTP header can carry.
MAX_LENGTH_OCTETS = 4

OID_NAMES = {
    "1.3.6.1.5.5.2": "spnego",
    "1.2.840.113554.1.2.2": "kerberos",
    "1.2.840.48018.1.2.2": "kerberos",  # Microsoft's (buggy) Kerberos OID, sent by Windows first
    "1.2.840.113554.1.2.2.3": "kerberos",  # Kerberos user-to-user
    "1.3.6.1.4.1.311.2.2.10": "ntlmssp",
    "1.3.6.1.4.1.311.2.2.30": "negoex",
}
_KERBEROS_TAGS = {0x6E: "AP-REQ", 0x6F: "AP-REP", 0x7E: "KRB-ERROR"}
_NEG_STATES = {0: "accept-completed", 1: "accept-incomplete", 2: "reject", 3: "request-mic"}


class DerError(ValueError):
    """The bytes are not the DER the caller expected (a bound was hit, a length runs past the end)."""


@dataclass(frozen=True)
class Tlv:
    """One DER element: its tag and where its content lies in the buffer."""

    tag: int
    start: int  # first content octet
    end: int  # one past the last content octet


def read_tlv(data: bytes, offset: int, limit: int | None = None) -> Tlv:
    """The element at ``offset``, which must end by ``limit`` (default: the end of ``data``).

    Only single-octet tags (every tag SPNEGO and Kerberos use at the levels read here) and definite lengths."""
    limit = len(data) if limit is None else limit
    if offset + 2 > limit:
        raise DerError("element header runs past the end")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-octet tag")
    first = data[offset + 1]
    position = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0:
            raise DerError("indefinite length")
        if count > MAX_LENGTH_OCTETS:
            raise DerError(f"length of {count} octets")
        if position + count > limit:
            raise DerError("length octets run past the end")
        length = int.from_bytes(data[position : position + count], "big")
        position += count
    if length > limit - position:
        raise DerError(f"length {length} runs past the end ({limit - position} octets left)")
    return Tlv(tag, position, position + length)


def children(data: bytes, parent: Tlv) -> list[Tlv]:
    """The elements inside a constructed element, at most :data:`MAX_ELEMENTS`."""
    out: list[Tlv] = []
    position = parent.start
    while position < parent.end:
        if len(out) >= MAX_ELEMENTS:
            raise DerError(f"more than {MAX_ELEMENTS} elements")
        element = read_tlv(data, position, parent.end)
        out.append(element)
        position = element.end
    return out


def decode_oid(raw: bytes) -> str:
    """Dotted form of an OBJECT IDENTIFIER's content octets."""
    if not raw or len(raw) > MAX_OID or raw[-1] & 0x80:
        raise DerError("bad OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for octet in raw:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))


@dataclass(frozen=True)
class GssToken:
    """What a ``Negotiate`` token is. ``mechanism``: ``ntlmssp``, ``kerberos``, ``negoex``, ``spnego`` (SPNEGO with no
    inner token, e.g. the server's final accept-completed) or ``unknown``; ``ntlm`` the NTLMSSP message bytes when
    there is one; ``mech_types`` the mechanisms a NegTokenInit offered (names, or dotted OIDs); ``neg_state`` a
    NegTokenResp's state; ``kerberos`` the Kerberos message named (``AP-REQ``...)."""

    mechanism: str
    ntlm: bytes | None = None
    spnego: bool = False
    mech_types: tuple[str, ...] = ()
    neg_state: str | None = None
    kerberos: str | None = None
    anomalies: tuple[str, ...] = field(default=())


def unwrap(token: bytes, depth: int = 0) -> GssToken:
    """Name a ``Negotiate`` token and pull out its NTLMSSP message; never raises."""
    if depth > MAX_DEPTH:
        return GssToken("unknown", anomalies=(f"bad_gss_token: nested more than {MAX_DEPTH} deep",))
    if token.startswith(NTLMSSP_SIGNATURE):
        return GssToken("ntlmssp", ntlm=token)
    if token[:1] in (b"\x6e", b"\x6f", b"\x7e"):
        return GssToken("kerberos", kerberos=_KERBEROS_TAGS[token[0]])
    try:
        return _unwrap(token, depth)
    except DerError as error:
        return GssToken("unknown", anomalies=(f"bad_gss_token: {error}",))


def _unwrap(token: bytes, depth: int) -> GssToken:
    outer = read_tlv(token, 0)
    if outer.end != len(token):
        raise DerError(f"{len(token) - outer.end} octets after the token")
    if outer.tag == 0x60:  # [APPLICATION 0] InitialContextToken
        oid_element = read_tlv(token, outer.start, outer.end)
        if oid_element.tag != 0x06:
            raise DerError("no mechanism OID in the initial context token")
        mech = OID_NAMES.get(decode_oid(token[oid_element.start : oid_element.end]), "unknown")
        inner = token[oid_element.end : outer.end]
        if mech == "spnego":
            return _negotiation_token(inner, depth)
        if mech == "ntlmssp" and inner.startswith(NTLMSSP_SIGNATURE):
            return GssToken("ntlmssp", ntlm=inner)
        if mech == "kerberos":
            # RFC 4121 4.1: a two-octet TOK_ID (01 00 AP-REQ, 02 00 AP-REP, 03 00 KRB-ERROR) then the message.
            return GssToken("kerberos", kerberos=_KERBEROS_TAGS.get(inner[2] if len(inner) > 2 else -1, "token"))
        return GssToken(mech)
    if outer.tag in (0xA0, 0xA1):
        return _negotiation_token(token, depth)
    raise DerError(f"unexpected tag 0x{outer.tag:02x}")


def _negotiation_token(data: bytes, depth: int) -> GssToken:
    """A NegotiationToken: ``[0] NegTokenInit`` or ``[1] NegTokenResp``, each a SEQUENCE of tagged fields."""
    choice = read_tlv(data, 0)
    if choice.tag not in (0xA0, 0xA1):
        raise DerError(f"not a NegotiationToken (tag 0x{choice.tag:02x})")
    sequence = read_tlv(data, choice.start, choice.end)
    if sequence.tag != 0x30:
        raise DerError("NegotiationToken without its SEQUENCE")
    fields = {element.tag: element for element in children(data, sequence)}
    mech_types: tuple[str, ...] = ()
    neg_state = None
    token_field = 0xA2  # mechToken of NegTokenInit, responseToken of NegTokenResp: both [2]
    if choice.tag == 0xA0 and 0xA0 in fields:
        mech_types = _mech_types(data, fields[0xA0])
    if choice.tag == 0xA1:
        if 0xA0 in fields:
            state = read_tlv(data, fields[0xA0].start, fields[0xA0].end)
            value = int.from_bytes(data[state.start : state.end], "big") if state.end - state.start == 1 else -1
            neg_state = _NEG_STATES.get(value, f"unknown({value})")
        if 0xA1 in fields:
            supported = read_tlv(data, fields[0xA1].start, fields[0xA1].end)
            mech_types = (_oid_name(data[supported.start : supported.end]),)
    inner = b""
    if token_field in fields:
        octets = read_tlv(data, fields[token_field].start, fields[token_field].end)
        if octets.tag != 0x04:
            raise DerError("mechanism token is not an OCTET STRING")
        inner = data[octets.start : octets.end]
    return _inner(inner, mech_types, neg_state, depth)


def _inner(inner: bytes, mech_types: tuple[str, ...], neg_state: str | None, depth: int) -> GssToken:
    if inner.startswith(NTLMSSP_SIGNATURE):
        return GssToken("ntlmssp", ntlm=inner, spnego=True, mech_types=mech_types, neg_state=neg_state)
    if not inner:
        return GssToken("spnego", spnego=True, mech_types=mech_types, neg_state=neg_state)
    named = unwrap(inner, depth + 1)
    return GssToken(
        named.mechanism if named.mechanism != "unknown" else (mech_types[0] if mech_types else "unknown"),
        ntlm=named.ntlm,
        spnego=True,
        mech_types=mech_types,
        neg_state=neg_state,
        kerberos=named.kerberos,
        anomalies=named.anomalies,
    )


def _mech_types(data: bytes, element: Tlv) -> tuple[str, ...]:
    sequence = read_tlv(data, element.start, element.end)
    if sequence.tag != 0x30:
        raise DerError("mechTypes is not a SEQUENCE")
    return tuple(_oid_name(data[oid.start : oid.end]) for oid in children(data, sequence) if oid.tag == 0x06)


def _oid_name(raw: bytes) -> str:
    dotted = decode_oid(raw)
    return OID_NAMES.get(dotted, dotted)


# -- building (the probe's Negotiate token, and test servers' answers) --------------------------------------------


def _encode(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes((tag, length)) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(octets))) + octets + content


def _encode_oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    out = bytearray()
    for arc in (40 * arcs[0] + arcs[1], *arcs[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _encode(0x06, bytes(out))


SPNEGO_OID = "1.3.6.1.5.5.2"
NTLMSSP_OID = "1.3.6.1.4.1.311.2.2.10"


def build_neg_token_init(mech_token: bytes, mechs: tuple[str, ...] = (NTLMSSP_OID,)) -> bytes:
    """An initial context token: SPNEGO's OID and a NegTokenInit offering ``mechs`` with ``mech_token``."""
    mech_list = _encode(0xA0, _encode(0x30, b"".join(_encode_oid(oid) for oid in mechs)))
    body = _encode(0x30, mech_list + _encode(0xA2, _encode(0x04, mech_token)))
    return _encode(0x60, _encode_oid(SPNEGO_OID) + _encode(0xA0, body))


def build_neg_token_resp(response_token: bytes, state: int = 1, mech: str = NTLMSSP_OID) -> bytes:
    """A NegTokenResp with ``state`` (1: accept-incomplete), the supported mechanism and ``response_token``."""
    fields = _encode(0xA0, _encode(0x0A, bytes((state,)))) + _encode(0xA1, _encode_oid(mech))
    if response_token:
        fields += _encode(0xA2, _encode(0x04, response_token))
    return _encode(0xA1, _encode(0x30, fields))
