"""Name the server software a banner announces, with its version when it says one."""

from __future__ import annotations

import re

# (pattern, product); a "version" group is reported when present. First match wins.
_SIGNATURES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"Microsoft ESMTP MAIL Service(?:, Version: (?P<version>[\d.]+))?", re.I),
        "Microsoft Exchange/IIS SMTP",
    ),
    (re.compile(r"Microsoft Exchange (?:Server )?(?:(?P<version>\d{4}) )?(?:POP3|IMAP4)", re.I), "Microsoft Exchange"),
    (re.compile(r"\bESMTP Postfix\b", re.I), "Postfix"),
    (re.compile(r"\bExim (?P<version>[\d.]+)", re.I), "Exim"),
    (re.compile(r"\bSendmail (?P<version>[\w.+/-]+)", re.I), "Sendmail"),
    (re.compile(r"\bOpenSMTPD\b", re.I), "OpenSMTPD"),
    (re.compile(r"\bHaraka(?:/(?P<version>[\d.]+))?", re.I), "Haraka"),
    (re.compile(r"\bqmail\b", re.I), "qmail"),
    (re.compile(r"\bhMailServer\b", re.I), "hMailServer"),
    (re.compile(r"\bMDaemon(?: (?:ESMTP|POP3|IMAP))? (?:v)?(?P<version>[\d.]+)?", re.I), "MDaemon"),
    (re.compile(r"\bIceWarp(?: (?P<version>[\d.]+))?", re.I), "IceWarp"),
    (re.compile(r"\bKerio Connect(?: (?P<version>[\d.]+))?", re.I), "Kerio Connect"),
    (re.compile(r"\bZimbra\b", re.I), "Zimbra"),
    (re.compile(r"\bLotus Domino\b|\bIBM Domino\b|\bHCL Domino\b", re.I), "Domino"),
    (re.compile(r"\bDovecot\b", re.I), "Dovecot"),
    (re.compile(r"\bCourier-(?:IMAP|POP3)\b|\bCourier Mail Server\b", re.I), "Courier"),
    (re.compile(r"\bCyrus (?:IMAP|POP3)(?:4)?(?: v?(?P<version>[\d.]+))?", re.I), "Cyrus"),
    (re.compile(r"\bUW IMAP\b|\bIMAP4rev1 (?P<version>20\d\d\.\S+)", re.I), "UW IMAP"),
    (re.compile(r"\bgsmtp\b|\bgpop\b|\bGimap\b", re.I), "Google"),
    (re.compile(r"\bSMTP Server SLmail(?: (?P<version>[\d.]+))?", re.I), "SLmail"),
    (re.compile(r"\bNTMail\b(?: \(v?(?P<version>[\d.]+)\))?", re.I), "NTMail"),
]


def guess_software(banner: str | None) -> str | None:
    if not banner:
        return None
    for pattern, product in _SIGNATURES:
        match = pattern.search(banner)
        if match:
            version = match.groupdict().get("version")
            return f"{product} {version}" if version else product
    return None
