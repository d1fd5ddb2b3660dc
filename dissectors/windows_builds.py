"""Windows releases by NTLM VERSION; the table lives in :mod:`dissectors.ntlmssp.windows_builds`."""

from dissectors.ntlmssp.windows_builds import KNOWN_BUILDS, KNOWN_IMPOSTORS, windows_release

__all__ = ["KNOWN_BUILDS", "KNOWN_IMPOSTORS", "windows_release"]
