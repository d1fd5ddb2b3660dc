"""Builder of the NEGOTIATE_MESSAGE (2.2.1.1) an active probe sends."""

from __future__ import annotations

import struct

from dissectors.ntlmssp.spec import SIGNATURE, MessageType, NegotiateFlags
from dissectors.ntlmssp.values import Version

F = NegotiateFlags

# nmap's *-ntlm-info scripts send 0xa2088207: UNICODE, OEM, REQUEST_TARGET, NTLM, ALWAYS_SIGN, ESS, VERSION, 128, 56.
PROBE_FLAGS = (
    F.NTLMSSP_NEGOTIATE_UNICODE
    | F.NTLMSSP_NEGOTIATE_OEM
    | F.NTLMSSP_REQUEST_TARGET
    | F.NTLMSSP_NEGOTIATE_NTLM
    | F.NTLMSSP_NEGOTIATE_ALWAYS_SIGN
    | F.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY
    | F.NTLMSSP_NEGOTIATE_TARGET_INFO
    | F.NTLMSSP_NEGOTIATE_VERSION
    | F.NTLMSSP_NEGOTIATE_128
    | F.NTLMSSP_NEGOTIATE_56
)
PROBE_VERSION = Version(10, 0, 17763, 15)


def build_negotiate(
    flags: int = PROBE_FLAGS,
    domain: str | None = None,
    workstation: str | None = None,
    version: Version | None = PROBE_VERSION,
) -> bytes:
    """Build a NEGOTIATE_MESSAGE (2.2.1.1) such as an active probe sends to elicit a CHALLENGE.

    Domain and workstation are OEM strings (the spec's only encoding for Type 1); supplying them sets the
    matching *_SUPPLIED flag, and a version sets NEGOTIATE_VERSION.
    """
    flags = NegotiateFlags(flags)
    domain_bytes = domain.encode("utf-8") if domain else b""
    workstation_bytes = workstation.encode("utf-8") if workstation else b""
    if domain_bytes:
        flags |= F.NTLMSSP_NEGOTIATE_OEM_DOMAIN_SUPPLIED
    if workstation_bytes:
        flags |= F.NTLMSSP_NEGOTIATE_OEM_WORKSTATION_SUPPLIED
    if version is not None:
        flags |= F.NTLMSSP_NEGOTIATE_VERSION
    else:
        flags &= ~F.NTLMSSP_NEGOTIATE_VERSION
    header_size = 40 if version is not None else 32
    domain_offset = header_size
    workstation_offset = domain_offset + len(domain_bytes)
    if len(domain_bytes) > 0xFFFF or len(workstation_bytes) > 0xFFFF:
        raise ValueError("domain and workstation must each fit in 65535 bytes")
    header = SIGNATURE + struct.pack(
        "<II" + "HHI" * 2,
        MessageType.NEGOTIATE,
        int(flags),
        len(domain_bytes),
        len(domain_bytes),
        domain_offset if domain_bytes else 0,
        len(workstation_bytes),
        len(workstation_bytes),
        workstation_offset if workstation_bytes else 0,
    )
    if version is not None:
        header += version.pack()
    return header + domain_bytes + workstation_bytes
