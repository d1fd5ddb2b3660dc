"""Windows releases by NTLM VERSION (MS-NLMP 2.2.2.10: ProductMajorVersion.ProductMinorVersion.ProductBuild).

Client and server releases share one NT build number, so a build maps to every release that carries it.
"""

from __future__ import annotations

KNOWN_BUILDS: dict[tuple[int, int, int], str] = {
    (5, 0, 2195): "Windows 2000",
    (5, 1, 2600): "Windows XP",
    (5, 2, 3790): "Windows Server 2003 / Windows XP x64",
    (6, 0, 6000): "Windows Vista",
    (6, 0, 6001): "Windows Server 2008 / Windows Vista SP1",
    (6, 0, 6002): "Windows Server 2008 SP2 / Windows Vista SP2",
    (6, 0, 6003): "Windows Server 2008 SP2 / Windows Vista SP2",
    (6, 1, 7600): "Windows Server 2008 R2 / Windows 7",
    (6, 1, 7601): "Windows Server 2008 R2 SP1 / Windows 7 SP1",
    (6, 2, 9200): "Windows Server 2012 / Windows 8",
    (6, 3, 9600): "Windows Server 2012 R2 / Windows 8.1",
    (10, 0, 10240): "Windows 10 1507",
    (10, 0, 10586): "Windows 10 1511",
    (10, 0, 14393): "Windows Server 2016 / Windows 10 1607",
    (10, 0, 15063): "Windows 10 1703",
    (10, 0, 16299): "Windows Server 1709 / Windows 10 1709",
    (10, 0, 17134): "Windows Server 1803 / Windows 10 1803",
    (10, 0, 17763): "Windows Server 2019 / Windows 10 1809",
    (10, 0, 18362): "Windows Server 1903 / Windows 10 1903",
    (10, 0, 18363): "Windows Server 1909 / Windows 10 1909",
    (10, 0, 19041): "Windows Server 2004 / Windows 10 2004",
    (10, 0, 19042): "Windows Server 20H2 / Windows 10 20H2",
    (10, 0, 19043): "Windows 10 21H1",
    (10, 0, 19044): "Windows 10 21H2",
    (10, 0, 19045): "Windows 10 22H2",
    (10, 0, 20348): "Windows Server 2022",
    (10, 0, 22000): "Windows 11 21H2",
    (10, 0, 22621): "Windows 11 22H2",
    (10, 0, 22631): "Windows 11 23H2",
    (10, 0, 25398): "Windows Server 23H2",
    (10, 0, 26100): "Windows Server 2025 / Windows 11 24H2",
    (10, 0, 26200): "Windows 11 25H2",
}

# Values that non-Windows implementations hard-code instead of a real build.
KNOWN_IMPOSTORS: dict[tuple[int, int, int], str] = {
    (6, 1, 0): "not a Windows build: Samba and other non-Windows NTLM servers report 6.1.0",
}

_FAMILIES: dict[tuple[int, int], str] = {
    (5, 0): "Windows 2000 family",
    (5, 1): "Windows XP family",
    (5, 2): "Windows Server 2003 family",
    (6, 0): "Windows Vista / Server 2008 family",
    (6, 1): "Windows 7 / Server 2008 R2 family",
    (6, 2): "Windows 8 / Server 2012 family",
    (6, 3): "Windows 8.1 / Server 2012 R2 family",
    (10, 0): "Windows 10 / 11 / Server 2016+ family",
}


def windows_release(major: int, minor: int, build: int) -> str:
    """Name the release a VERSION denotes; unknown builds say so and name the family when it is known."""
    key = (major, minor, build)
    if key in KNOWN_BUILDS:
        return KNOWN_BUILDS[key]
    if key in KNOWN_IMPOSTORS:
        return KNOWN_IMPOSTORS[key]
    family = _FAMILIES.get((major, minor))
    if family:
        return f"unknown build {build} ({family})"
    return f"unknown version {major}.{minor}.{build}"
