"""What one client message of a SASL mechanism reveals, read on its own: PLAIN's user and password (RFC 4616),
CRAM-MD5's user and digest (RFC 2195), the user and bearer token of XOAUTH2 and OAUTHBEARER (RFC 7628). LOGIN, whose
user name and password come in two messages, is read by the exchange (:mod:`dissectors.sasl`)."""

from __future__ import annotations

from dissectors.linebuffer import wire_text
from dissectors.sasl_events import SaslAnomaly, SaslCredentials, SaslEvent


def message_credentials(mechanism: str, data: bytes) -> list[SaslEvent]:
    """The credentials (and anomalies) in a decoded client message of ``mechanism``; none for other mechanisms."""
    if mechanism == "PLAIN":
        return plain_credentials(data)
    if mechanism == "CRAM-MD5":
        user, _, digest = wire_text(data).rpartition(" ")
        return [SaslCredentials("CRAM-MD5", user or None, digest or None, secret_kind="cram-md5-digest")]
    if mechanism == "XOAUTH2":
        fields = dict(part.split("=", 1) for part in wire_text(data).split("\x01") if "=" in part)
        token = fields.get("auth", "").removeprefix("Bearer ").strip() or None
        return [SaslCredentials("XOAUTH2", fields.get("user"), token, secret_kind="oauth-bearer-token")]
    if mechanism == "OAUTHBEARER":
        text = wire_text(data)
        gs2, _, rest = text.partition("\x01")
        user = next((p[2:] for p in gs2.split(",") if p.startswith("a=")), None)
        fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
        token = fields.get("auth", "").removeprefix("Bearer ").strip() or None
        return [SaslCredentials("OAUTHBEARER", user, token, secret_kind="oauth-bearer-token")]
    return []


def plain_credentials(data: bytes) -> list[SaslEvent]:
    """RFC 4616: [authzid] NUL authcid NUL passwd. With more NULs, the password is all after the second (what a
    server reading to the message's end takes), so that it is the client's secret wherever it shows."""
    parts = data.split(b"\x00", 2)
    anomaly = SaslAnomaly("bad_plain_message", f"PLAIN message has {data.count(0)} NUL separators, expected 2")
    if len(parts) == 1:
        return [anomaly]
    authzid, user, password = parts if len(parts) == 3 else [b"", *parts]
    credentials = SaslCredentials("PLAIN", wire_text(user), wire_text(password), wire_text(authzid) or None)
    return [credentials] if len(parts) == 3 and b"\x00" not in password else [anomaly, credentials]
