"""What to do about each finding, and how to check it is done."""

from __future__ import annotations

from dataclasses import dataclass

from passive.findings.model import FindingType


@dataclass(frozen=True)
class Guidance:
    references: dict[str, str]  # protocol -> equivalent check elsewhere; "*" for any protocol
    remediation: str
    verification: str

    def reference(self, protocol: str) -> str | None:
        return self.references.get(protocol) or self.references.get("*")


GUIDANCE: dict[FindingType, Guidance] = {
    FindingType.NTLM_INFO: Guidance(
        references={
            "smtp": "Nessus: SMTP Host Information in NTLM SSP; nmap smtp-ntlm-info",
            "pop3": "Nessus: POP3 Host Information in NTLM SSP; nmap pop3-ntlm-info",
            "imap": "nmap imap-ntlm-info",
        },
        remediation=(
            "Anyone who sends AUTH NTLM gets the server's internal host name, Active Directory domain and forest, "
            "Windows build and clock, before any password is checked; clients that use it also send user and "
            "workstation names, and a crackable NetNTLM response, in the clear. Remove NTLM from the mechanisms "
            "offered on SMTP, POP3 and IMAP (Exchange: remove 'Ntlm' / 'Integrated' from the receive connector's "
            "and the POP3/IMAP service's authentication methods) or restrict it to internal networks; prefer "
            "Kerberos for internal clients; require TLS (STARTTLS or implicit TLS) before any AUTH so the exchange "
            "is never readable on the wire."
        ),
        verification=(
            "Run 'leakscope probe --starttls never HOST' and nmap's smtp-ntlm-info / pop3-ntlm-info / "
            "imap-ntlm-info: no NTLM challenge may come back without TLS, and the mechanism list must not offer NTLM "
            "in clear text."
        ),
    ),
    FindingType.AUTH_METHODS: Guidance(
        references={
            "smtp": "Nessus 36804: SMTP Authentication Methods; nmap smtp-commands",
            "*": "nmap pop3-capabilities / imap-capabilities",
        },
        remediation=(
            "Offer authentication only after TLS: advertise no AUTH mechanisms (and no POP3 USER or IMAP LOGIN) on "
            "a clear-text connection, e.g. Postfix 'smtpd_tls_auth_only = yes', Dovecot "
            "'disable_plaintext_auth = yes' / 'auth_allow_cleartext = no', Exchange 'RequireTLS' on receive "
            "connectors. Drop mechanisms nobody needs (LOGIN, NTLM) from the list."
        ),
        verification=(
            "Re-run 'leakscope probe HOST' with '--starttls never': the capability list before STARTTLS must carry "
            "no PLAIN, LOGIN, NTLM or USER; after STARTTLS only the mechanisms you intend."
        ),
    ),
    FindingType.CLEARTEXT_CREDENTIALS: Guidance(
        references={"*": "Wireshark/tshark -z credentials; PCredz"},
        remediation=(
            "A user name and password crossed the network unencrypted and must be considered known to anyone on "
            "the path: change that password. Then stop it happening again: require TLS before authentication on "
            "the server (see auth-methods) and configure clients for STARTTLS or implicit TLS (ports 465, 993, 995)."
        ),
        verification=(
            "Capture a client login again and run 'leakscope analyze' on it: no cleartext-credentials finding may "
            "remain, and the mail-service finding must show TLS in use."
        ),
    ),
    FindingType.MAIL_SERVICE: Guidance(
        references={"smtp": "Nessus 34861: SMTP Server Connection Check; nmap smtp-commands", "*": "nmap -sV"},
        remediation=(
            "Know every mail service on the network: close ports that should not be reachable (firewall or bind to "
            "the right interface), keep the banner free of software versions and internal names, and offer "
            "STARTTLS or implicit TLS on each service that stays."
        ),
        verification="Re-run 'leakscope probe HOST' against the standard and observed ports and compare the inventory.",
    ),
    FindingType.OPEN_RELAY: Guidance(
        references={"smtp": "Nessus 10262: MTA Open Mail Relaying Allowed; Nessus 10874; nmap smtp-open-relay"},
        remediation=(
            "The server accepted, without authentication, mail for a domain that is not its own: it relays for "
            "anyone, so spammers and phishers can send through it. Allow relaying only for authenticated users and "
            "trusted internal networks (Postfix 'smtpd_relay_restrictions = permit_mynetworks, "
            "permit_sasl_authenticated, reject_unauth_destination' with a tight 'mynetworks'; Exchange: remove "
            "'Ms-Exch-SMTP-Accept-Any-Recipient' from anonymous connectors)."
        ),
        verification=(
            "Run 'leakscope probe --relay-test HOST' (or nmap smtp-open-relay) from outside the trusted networks: "
            "every RCPT to an external domain must be refused with a 5xx reply."
        ),
    ),
}
