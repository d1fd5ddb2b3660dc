"""TLS for the probe: a permissive client context (a probe must talk to old and self-signed servers alike) and the
facts a session shows: version, cipher, certificate subject, issuer, validity."""

from __future__ import annotations

import hashlib
import ssl
import warnings
from datetime import UTC, datetime
from typing import Any

from passive.findings.kinds import TLS_FACT_FIELDS

TLS_FIELDS = TLS_FACT_FIELDS  # declared with the mail-service kind


def client_context() -> ssl.SSLContext:
    """No verification (the probe reports the certificate, it does not trust it) and every protocol version the
    local OpenSSL still allows."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pass  # a build that refuses these keeps its defaults
    return context


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def certificate_facts(der: bytes | None) -> dict[str, Any]:
    facts: dict[str, Any] = {name: None for name in TLS_FIELDS if name.startswith("tls_cert")}
    if not der:
        return facts
    facts["tls_cert_sha256"] = hashlib.sha256(der).hexdigest()
    try:
        from cryptography import x509
    except ImportError:  # only the fingerprint without it
        return facts
    # The parser warns about what a server's certificate gets wrong (a serial number not positive, a name longer
    # than X.520 allows): the server's business, shown in the facts, not the user's on standard error; where
    # warnings are errors (python -W error), one such certificate would end the whole run.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cert = x509.load_der_x509_certificate(der)
            not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
            facts.update(
                tls_cert_subject=cert.subject.rfc4514_string(),
                tls_cert_issuer=cert.issuer.rfc4514_string(),
                tls_cert_not_before=_iso(not_before),
                tls_cert_not_after=_iso(not_after),
                tls_cert_expired=datetime.now(UTC) > not_after,
                tls_cert_self_issued=cert.subject == cert.issuer,
            )
        except ValueError:
            pass  # an unparsable certificate still has its fingerprint
    return facts


def session_facts(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> dict[str, Any]:
    """The TLS facts of an established session (all None when there is none)."""
    facts: dict[str, Any] = dict.fromkeys(TLS_FIELDS)
    if ssl_object is None:
        return facts
    cipher = ssl_object.cipher()
    facts["tls_version"] = ssl_object.version()
    facts["tls_cipher"] = cipher[0] if cipher else None
    facts.update(certificate_facts(ssl_object.getpeercert(binary_form=True)))
    return facts
