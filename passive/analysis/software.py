"""Name the server software a banner announces, with its version when it says one, and the host name Exchange
hides in its IMAP and POP3 greetings."""

from __future__ import annotations

import binascii
import functools
import re

# (pattern, product), matched ignoring case; a "version" group is reported when present. First match wins.
_SIGNATURES: tuple[tuple[str, str], ...] = (
    (
        r"Microsoft ESMTP MAIL Service(?:, Version: (?P<version>[\d.]+))?",
        "Microsoft Exchange/IIS SMTP",
    ),
    (r"Microsoft Exchange (?:Server )?(?:(?P<version>\d{4}) )?(?:POP3|IMAP4)", "Microsoft Exchange"),
    (r"\bESMTP Postfix\b", "Postfix"),
    (r"\bExim (?P<version>[\d.]+)", "Exim"),
    (r"\bSendmail (?P<version>[\w.+/-]+)", "Sendmail"),
    (r"\bOpenSMTPD\b", "OpenSMTPD"),
    (r"\bHaraka(?:/(?P<version>[\d.]+))?", "Haraka"),
    (r"\bqmail\b", "qmail"),
    (r"\bhMailServer\b", "hMailServer"),
    (r"\bMDaemon(?: (?:ESMTP|POP3|IMAP))? (?:v)?(?P<version>[\d.]+)?", "MDaemon"),
    (r"\bIceWarp(?: (?P<version>[\d.]+))?", "IceWarp"),
    (r"\bKerio Connect(?: (?P<version>[\d.]+))?", "Kerio Connect"),
    (r"\bZimbra\b", "Zimbra"),
    (r"\bLotus Domino\b|\bIBM Domino\b|\bHCL Domino\b", "Domino"),
    (r"\bDovecot\b", "Dovecot"),
    (r"\bCourier-(?:IMAP|POP3)\b|\bCourier Mail Server\b", "Courier"),
    (r"\bCyrus (?:IMAP|POP3)(?:4)?(?: v?(?P<version>[\d.]+))?", "Cyrus"),
    (r"\bUW IMAP\b|\bIMAP4rev1 (?P<version>20\d\d\.\S+)", "UW IMAP"),
    (r"\bgsmtp\b|\bgpop\b|\bGimap\b", "Google"),
    (r"\bSMTP Server SLmail(?: (?P<version>[\d.]+))?", "SLmail"),
    (r"\bNTMail\b(?: \(v?(?P<version>[\d.]+)\))?", "NTMail"),
)


# Greetings that name their software by being a product's default, whole (nmap-service-probes): only where the
# greeting is no SMTP one (``host_first``), whose words after the host name may be anything.
_DEFAULT_GREETINGS = {"hello there.": "Courier"}  # Courier's pop3d: "+OK Hello there."


@functools.cache
def _compiled() -> tuple[tuple[re.Pattern[str], str], ...]:
    """The signatures, compiled for the first banner: a run (or a worker process) that sees none never compiles
    them (21 patterns, 1.5 ms of every start-up)."""
    return tuple((re.compile(pattern, re.I), product) for pattern, product in _SIGNATURES)


# Banners whose software is remembered: servers of one product greet alike, and a capture of thousands of servers
# holds few distinct banners (each new one is searched with up to 21 patterns). Banners are cut at 512 characters
# (passive.analysis.detectors.service.MAX_BANNER) and only ASCII ones (real banners) are remembered: 1024 of them
# hold 0.7 MB at most. Banners of any characters would hold 2.3 MB: a character beyond U+FFFF takes four bytes.
BANNERS_REMEMBERED = 1024


def guess_software(banner: str | None, host_first: bool = False) -> str | None:
    """The software ``banner`` names (with its version when it says one), or None. ``host_first``: the banner begins
    with the server's name (an SMTP greeting, RFC 5321 4.3.1), which names no software even when it holds a product's
    word (``haraka.example.com``, ``qmail.corp.example``): a first word with a dot, or an address literal, is not
    searched."""
    if host_first and banner:
        first, _, rest = banner.partition(" ")
        if "." in first or first.startswith("["):
            banner = rest
    if not banner:
        return None
    if not host_first and banner.lower() in _DEFAULT_GREETINGS:
        return _DEFAULT_GREETINGS[banner.lower()]
    return remembered_software(banner) if banner.isascii() else search_software(banner)


def search_software(banner: str) -> str | None:
    """:func:`guess_software` without the cache of banners: the search itself."""
    for pattern, product in _compiled():
        match = pattern.search(banner)
        if match:
            version = match.groupdict().get("version")
            return f"{product} {version}" if version else product
    return None


# The search, for the last BANNERS_REMEMBERED distinct ASCII banners it was asked about.
remembered_software = functools.lru_cache(maxsize=BANNERS_REMEMBERED)(search_software)


# Exchange 2013 and later end their IMAP4 and POP3 greetings with the server's own name, base64 of UTF-16LE, in
# brackets: "* OK The Microsoft Exchange IMAP4 service is ready. [UwBSAFYAMAAxAC4AYwBvAHIAcAAuAGwAbwBjAGEAbAA=]".
# A DNS name is at most 253 characters: 506 bytes in UTF-16LE, 676 in base64.
_BRACKETED_BASE64 = re.compile(r"\[([A-Za-z0-9+/]{4,676}={0,2})\]\s*$")
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})")


def banner_host(banner: str | None) -> str | None:
    """The host name an Exchange IMAP or POP3 greeting encodes at its end (base64 of UTF-16LE in brackets), or None
    when the banner ends otherwise or the brackets hold no host name."""
    match = _BRACKETED_BASE64.search(banner) if banner and banner.rstrip().endswith("]") else None
    if match is None:
        return None
    try:
        raw = binascii.a2b_base64(match.group(1))
    except binascii.Error:
        return None
    if len(raw) % 2:
        return None
    host = raw.decode("utf-16-le", errors="replace")
    return host if _HOST_NAME.fullmatch(host) else None
