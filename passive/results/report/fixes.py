"""The exact settings that remove each leak, per mail software, with the documentation page that describes each.

``passive/findings/kinds.py`` says what to do for a kind of finding in general (the report shows it once per kind);
this module says which setting does it on the software a server runs, so that a server's card can name it and the
first page can name who owns it. Only settings the cited page documents are listed; for software not listed here the
card says so and points to the kind's remediation.
"""

from __future__ import annotations

from dataclasses import dataclass

# Issues a setting removes. A finding maps to one issue (see ``issues_of`` in cards.py).
NTLM = "ntlm"  # NTLM offered or used without TLS: host names, AD domain, build; crackable responses
CLEARTEXT = "cleartext"  # PLAIN/LOGIN/USER/LOGIN-command offered or used without TLS
RELAY = "relay"  # relays for anyone
PASSWORDS = "passwords"  # passwords already sent in clear: they are known
EXPOSURE = "exposure"  # the service is reachable by whoever can reach it
# How a card and the first page name each issue.
ISSUE_TITLES = {
    NTLM: "NTLM",
    CLEARTEXT: "Clear-text authentication",
    RELAY: "Open relay",
    PASSWORDS: "Clear-text credentials",
    EXPOSURE: "Reachable mail service",
}
# Owners of the settings that do not depend on the software.
GENERAL_OWNERS = ("Identity", "Network")

POSTFIX_DOC = "https://www.postfix.org/postconf.5.html"
DOVECOT_23 = "https://doc.dovecot.org/2.3/settings/core/"
DOVECOT_24 = "https://doc.dovecot.org/3.0/settings/core/"
EXCHANGE_DOC = "https://learn.microsoft.com/powershell/module/exchange/"
EXIM_DOC = "https://www.exim.org/exim-html-current/doc/html/spec_html/ch-smtp_authentication.html"


@dataclass(frozen=True)
class Setting:
    """One change: who makes it, what it is (as typed in the software's configuration), and where it is documented."""

    owner: str  # "Exchange", "Postfix", "Dovecot", "Exim", "Network", "Identity"
    issue: str
    setting: str
    reference: str
    note: str = ""


_POSTFIX = (
    Setting(
        "Postfix",
        CLEARTEXT,
        "main.cf: smtpd_tls_auth_only = yes",
        POSTFIX_DOC + "#smtpd_tls_auth_only",
        "AUTH is announced and accepted only after STARTTLS.",
    ),
    Setting(
        "Postfix",
        NTLM,
        "main.cf: smtpd_tls_auth_only = yes",
        POSTFIX_DOC + "#smtpd_tls_auth_only, https://www.postfix.org/SASL_README.html",
        "Postfix offers the mechanisms of its SASL back end: also drop NTLM from them (Dovecot SASL: "
        "auth_mechanisms; Cyrus SASL: mech_list in smtpd.conf).",
    ),
    Setting(
        "Postfix",
        RELAY,
        "main.cf: smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, "
        "reject_unauth_destination",
        POSTFIX_DOC + "#smtpd_relay_restrictions",
        "With mynetworks listing only the networks allowed to relay (" + POSTFIX_DOC + "#mynetworks).",
    ),
)

_DOVECOT = (
    Setting(
        "Dovecot",
        CLEARTEXT,
        "auth_allow_cleartext = no",
        DOVECOT_24,
        "Dovecot 2.4; on 2.3 the setting is disable_plaintext_auth = yes (" + DOVECOT_23 + "). LOGIN, USER/PASS "
        "and PLAIN are refused (LOGINDISABLED) until TLS is up; ssl = required refuses any session without TLS.",
    ),
    Setting(
        "Dovecot",
        NTLM,
        "auth_mechanisms = plain login",
        DOVECOT_23 + "#core_setting-auth_mechanisms",
        "The list without ntlm (and gss-spnego), together with auth_allow_cleartext = no.",
    ),
)

_EXCHANGE_SMTP = (
    Setting(
        "Exchange",
        NTLM,
        'Set-ReceiveConnector -Identity "<server>\\<connector>" -AuthMechanism Tls,BasicAuth,BasicAuthRequireTLS',
        EXCHANGE_DOC + "set-receiveconnector",
        "On each receive connector reachable from untrusted networks: the list without Integrated (NTLM and "
        "Kerberos), so AUTH NTLM is not offered there.",
    ),
    Setting(
        "Exchange",
        CLEARTEXT,
        'Set-ReceiveConnector -Identity "<server>\\<connector>" -AuthMechanism Tls,BasicAuth,BasicAuthRequireTLS',
        EXCHANGE_DOC + "set-receiveconnector",
        "BasicAuthRequireTLS: PLAIN and LOGIN only after STARTTLS.",
    ),
    Setting(
        "Exchange",
        RELAY,
        'Get-ReceiveConnector "<server>\\<connector>" | Remove-ADPermission -User "NT AUTHORITY\\ANONYMOUS LOGON" '
        '-ExtendedRights "Ms-Exch-SMTP-Accept-Any-Recipient"',
        EXCHANGE_DOC + "remove-adpermission",
        "And narrow the connector's -RemoteIPRanges to the hosts allowed to relay.",
    ),
)

_EXCHANGE_POP_IMAP = (
    Setting(
        "Exchange",
        NTLM,
        "Set-PopSettings -EnableGSSAPIAndNTLMAuth $false; Set-ImapSettings -EnableGSSAPIAndNTLMAuth $false",
        EXCHANGE_DOC + "set-popsettings, " + EXCHANGE_DOC + "set-imapsettings",
        "Then restart the POP3 and IMAP4 services.",
    ),
    Setting(
        "Exchange",
        CLEARTEXT,
        "Set-PopSettings -LoginType SecureLogin; Set-ImapSettings -LoginType SecureLogin",
        EXCHANGE_DOC + "set-popsettings, " + EXCHANGE_DOC + "set-imapsettings",
        "SecureLogin: clear-text logins only inside TLS.",
    ),
)

_EXIM = (
    Setting(
        "Exim",
        CLEARTEXT,
        "auth_advertise_hosts = ${if eq{$tls_in_cipher}{}{}{*}}",
        EXIM_DOC,
        "AUTH is advertised only on TLS connections.",
    ),
)

# Settings that do not depend on the software.
GENERAL = (
    Setting(
        "Identity",
        PASSWORDS,
        "reset the passwords of the accounts seen in clear text (listed per server)",
        "",
        "They are known to anyone who could read this traffic.",
    ),
    Setting(
        "Network",
        EXPOSURE,
        "firewall: allow the mail ports of this server only from the networks that need them",
        "",
        "Every leak here is given to whoever can connect.",
    ),
)

# Families of software the catalogue knows, as guessed from the banner (passive/analysis/software.py names them).
_FAMILIES = (
    ("Microsoft Exchange", "Exchange"),
    ("Postfix", "Postfix"),
    ("Dovecot", "Dovecot"),
    ("Exim", "Exim"),
)


def family(software: str | None) -> str | None:
    """The catalogue's name for a server's software ("Microsoft Exchange/IIS SMTP 10.0" is Exchange), or None."""
    for prefix, name in _FAMILIES:
        if software and software.startswith(prefix):
            return name
    return None


def settings_for(software: str | None, protocols: list[str]) -> tuple[Setting, ...]:
    """The settings that apply to a server running ``software`` (a family name) over these protocols."""
    found: list[Setting] = []
    if software == "Postfix":
        found += _POSTFIX
    elif software == "Dovecot":
        found += _DOVECOT
    elif software == "Exim":
        found += _EXIM
    elif software == "Exchange":
        if "smtp" in protocols:
            found += _EXCHANGE_SMTP
        if {"pop3", "imap"} & set(protocols):
            found += _EXCHANGE_POP_IMAP
    return tuple(found)


def guesses_for(protocols: list[str]) -> tuple[str, ...]:
    """The software whose settings a card lists when the banner names none: what usually serves these protocols."""
    if "smtp" in protocols:
        return ("Postfix", "Exchange")
    return ("Dovecot", "Exchange")
