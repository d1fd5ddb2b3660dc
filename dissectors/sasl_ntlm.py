"""Where the NTLM message of a SASL step is: the step itself (NTLMSSP), or, under the GSS-API mechanisms, inside
its token.

Exchange's and Windows' SASL ``GSSAPI`` is Negotiate, and ``GSS-SPNEGO`` is SPNEGO by name: without Kerberos,
their tokens carry NTLMSSP wrapped in SPNEGO (or under the NTLMSSP mechanism OID), which :mod:`dissectors.gssapi`
unwraps. Kerberos tokens, and the security-layer tokens that follow a context, hold none and are left as they are.
"""

from __future__ import annotations

from dissectors import gssapi, ntlmssp

# Mechanisms whose steps are GSS-API tokens (RFC 4752 GSSAPI, RFC 4178 SPNEGO as GSS-SPNEGO).
GSS_MECHANISMS = frozenset({"GSSAPI", "GSS-SPNEGO"})


def ntlm_message(data: bytes | None, mechanism: str) -> tuple[ntlmssp.Message | None, str | None]:
    """The NTLM message a decoded step carries, if any, and the anomaly of an NTLM step that carries none
    (``not_ntlmssp``)."""
    if not data:
        return None, None
    if data.startswith(ntlmssp.SIGNATURE):
        return ntlmssp.decode(data), None
    if mechanism in GSS_MECHANISMS:
        wrapped = gssapi.unwrap(data)
        return (ntlmssp.decode(wrapped.ntlm) if wrapped.ntlm is not None else None), None
    return None, "not_ntlmssp" if mechanism == "NTLM" else None
