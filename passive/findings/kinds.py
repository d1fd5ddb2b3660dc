"""Every kind of finding, declared once: title, severity rules, fields with a line of documentation each, table
columns, report section, one-line summary, remediation, verification and references.

Everything that shows or stores a finding reads this table: the terminal tables, the JSON records, the report, the
dashboard, ``compare``, the store's merge rules and ``docs/schema.md`` (written from it by
``python -m passive.findings.schema_doc``). A kind missing here is a kind that exists nowhere.
"""

from __future__ import annotations

import enum

from passive.findings.schema import COMMON_FIELDS, SEVERITY_ORDER, Field, Kind, Severity, rank
from passive.findings.summaries import (
    credentials_summary,
    methods_summary,
    methods_title,
    ntlm_summary,
    relay_summary,
    relay_title,
    service_summary,
)

__all__ = [
    "AUTH_METHODS",
    "CLEARTEXT_CREDENTIALS",
    "COMMON_FIELDS",
    "KINDS",
    "MAIL_SERVICE",
    "NTLM_INFO",
    "OPEN_RELAY",
    "PROXY",
    "SEVERITY_ORDER",
    "TLS_FACT_FIELDS",
    "Field",
    "FindingType",
    "Kind",
    "Severity",
    "display_order",
    "kind_of",
    "rank",
]


class FindingType(enum.StrEnum):
    NTLM_INFO = "ntlm-info"
    AUTH_METHODS = "auth-methods"
    CLEARTEXT_CREDENTIALS = "cleartext-credentials"
    MAIL_SERVICE = "mail-service"
    OPEN_RELAY = "open-relay"


PROXY = Field(
    "proxy",
    "only for a server reached through a proxy's tunnel (an accepted HTTP `CONNECT`, a SOCKS 4, 4a or 5 handshake): "
    "how, as the handshake and the proxy's `ip:port` (`socks5 10.0.0.1:1080`, `http-connect 10.0.0.1:3128`; nested "
    "tunnels joined by ` > `), first 8; `server` is then the server the client asked the proxy for, `host:port` when "
    "it was named so",
    union=True,
    many=True,
)

NTLM_INFO = Kind(
    type=FindingType.NTLM_INFO,
    title="NTLM host information",
    description=(
        "What a server's NTLM CHALLENGE (Type 2) revealed, and what clients' NEGOTIATE/AUTHENTICATE (Type 1/3) "
        "revealed: over SMTP, POP3 and IMAP (SASL), and over HTTP (`WWW-Authenticate` / `Authorization` with `NTLM` "
        "or `Negotiate`, SPNEGO unwrapped: Exchange's OWA, EWS, Autodiscover, RPC and MAPI over HTTP, ActiveSync, "
        "OAB), where the finding's `protocol` is `http` and it names the endpoint."
    ),
    severity_rules=(
        (Severity.LOW, "the server's names, clock and build alone (a CHALLENGE, or an anonymous AUTHENTICATE)"),
        (Severity.MEDIUM, "a NetNTLMv2 response crossed the wire with user and workstation: crackable offline"),
        (
            Severity.HIGH,
            "an NTLMv1 (or LM-only) response crossed the wire: DES-based, as good as the password (hashcat 5500), "
            "rated with clear-text credentials",
        ),
    ),
    fields=(
        Field("target_name", "TargetName", compared=True),
        Field("netbios_computer", "MsvAvNbComputerName", column=True, compared=True),
        Field("netbios_domain", "MsvAvNbDomainName", column=True, compared=True),
        Field("dns_computer", "MsvAvDnsComputerName", column=True, compared=True),
        Field("dns_domain", "MsvAvDnsDomainName", column=True, compared=True),
        Field("dns_tree", "MsvAvDnsTreeName (the forest)", column=True, compared=True),
        Field("server_time", "MsvAvTimestamp, ISO 8601 UTC with 100 ns precision", column=True),
        Field(
            "os_version",
            "Version as `10.0.17763` (Samba and other non-Windows servers claim 6.1.0)",
            column=True,
            compared=True,
        ),
        Field(
            "os_release",
            "the release the version denotes (`Windows Server 2019 / Windows 10 1809`); unknown builds say so",
            column=True,
            compared=True,
        ),
        Field("flags", "NegotiateFlags names of the CHALLENGE", many=True),
        Field("clock_skew_seconds", "`server_time` minus the capture time of the packet that carried it"),
        Field("anomalies", "decoding anomalies of the CHALLENGE, `{code, detail}` (first 20)", many=True),
        Field("user", "UserName of the latest AUTHENTICATE of this server"),
        Field("domain", "the client's domain (latest AUTHENTICATE or NEGOTIATE)"),
        Field("workstation", "the client's workstation (latest AUTHENTICATE or NEGOTIATE)"),
        Field("ntlm_version", "`NTLMv1`, `NTLMv1-ESS`, `NTLMv2`, `anonymous`", column=True),
        Field("client_os_version", "the client's Version"),
        Field("spn", "MsvAvTargetName of the client's NTLMv2 response"),
        Field("outcome", "`success`, `failure`, or null when no verdict judged it (see Verdicts below)", column=True),
        Field("users", "every `DOMAIN\\user` seen (first 50)", column=True, union=True, many=True),
        Field("workstations", "every workstation seen (first 50)", column=True, union=True, many=True),
        Field(
            "ntlm_advertised",
            "NTLM was in the mechanism list the probe had when it sent `AUTH NTLM` (it tries regardless)",
            active=True,
        ),
        Field("ntlm_over_tls", "the probe's NTLM exchange ran inside TLS (STARTTLS or implicit TLS)", active=True),
        Field(
            "http_path",
            "HTTP only: the request path (without its query) whose response carried the latest CHALLENGE, e.g. "
            "`/EWS/Exchange.asmx`",
            column=True,
        ),
        Field("http_host", "HTTP only: that request's `Host` header (or its absolute URI's authority)", column=True),
        Field(
            "http_endpoints",
            "HTTP only: every `host/path` that answered with a CHALLENGE (first 50)",
            union=True,
            many=True,
        ),
        PROXY,
    ),
    details_doc=(
        "per exchange: `client`, `user`, `domain`, `workstation`, `ntlm_version`, `client_os_version`, `spn`, "
        "`outcome`, `outcome_line`, `time`, `file`, `frames` (distinct, in order, in that file); HTTP: `http_path`"
    ),
    summary=ntlm_summary,
    remediation=(
        "Anyone who sends AUTH NTLM gets the server's internal host name, Active Directory domain and forest, "
        "Windows build and clock, before any password is checked; clients that use it also send user and "
        "workstation names, and a crackable NetNTLM response, in the clear. Remove NTLM from the mechanisms "
        "offered on SMTP, POP3 and IMAP (Exchange: remove 'Ntlm' / 'Integrated' from the receive connector's "
        "and the POP3/IMAP service's authentication methods) or restrict it to internal networks; prefer "
        "Kerberos for internal clients; require TLS (STARTTLS or implicit TLS) before any AUTH so the exchange "
        "is never readable on the wire. Over HTTP (Exchange's OWA, EWS, Autodiscover, RPC/MAPI over HTTP, "
        "ActiveSync, OAB): serve those endpoints over HTTPS only (redirect or close port 80), and offer Negotiate "
        "with Kerberos rather than NTLM where clients allow it."
    ),
    verification=(
        "Run 'leakscope probe --starttls never HOST' and nmap's smtp-ntlm-info / pop3-ntlm-info / imap-ntlm-info: no "
        "NTLM challenge may come back without TLS, and the mechanism list must not offer NTLM in clear text. HTTP: "
        "'leakscope probe http://HOST/' (and nmap http-ntlm-info) must draw no challenge in clear text."
    ),
    references={
        "smtp": "Nessus 13926: SMTP Host Information in NTLM SSP; nmap smtp-ntlm-info",
        "pop3": "Nessus: POP3 Host Information in NTLM SSP; nmap pop3-ntlm-info",
        "imap": "nmap imap-ntlm-info",
        "http": "Nessus: HTTP NTLM information disclosure (host information in NTLM SSP); nmap http-ntlm-info",
    },
)

CLEARTEXT_CREDENTIALS = Kind(
    type=FindingType.CLEARTEXT_CREDENTIALS,
    title="Clear-text credentials",
    description="A user name and a secret sent where anyone on the path can read them.",
    severity_rules=(
        (Severity.HIGH, "a password or bearer token: the secret is known to anyone on the path"),
        (Severity.MEDIUM, "a CRAM-MD5 or APOP digest: the password did not cross, but is crackable offline"),
    ),
    fields=(
        Field(
            "mechanism",
            "`PLAIN`, `LOGIN`, `CRAM-MD5`, `XOAUTH2`, `OAUTHBEARER`, `USER-PASS` (POP3), `APOP`, `IMAP-LOGIN`, "
            "`HTTP-BASIC` (an HTTP `Authorization` or `Proxy-Authorization: Basic` header), `SOCKS5-USERPASS` (a "
            "SOCKS5 proxy's username/password sub-negotiation, RFC 1929: protocol `socks`)",
            column=True,
        ),
        Field("user", "as sent", column=True),
        Field(
            "password",
            "the secret that succeeded, else the latest one tried; masked as `********` unless `--show-secrets`",
            column=True,
            secret=True,
        ),
        Field("authzid", "the authorization identity, as sent"),
        Field(
            "secret_kind",
            "what `password` holds: `password`, `cram-md5-digest`, `apop-digest`, `oauth-bearer-token`",
        ),
        Field(
            "outcome",
            "`success` when an attempt succeeded, else `failure` when one failed, else null (see Verdicts below)",
            column=True,
        ),
        Field(
            "attempts",
            "each secret with each verdict it drew: `password_no` (1 for the first secret this user sent, 2 for "
            "the next different one...), `password` (masked unless `--show-secrets`), `outcome`, `count`; a failed "
            "attempt and a successful one with another password are two entries",
            column=True,
            many=True,
        ),
        Field("tls", "always false: nothing is read inside TLS"),
        PROXY,
    ),
    key_doc="per server, mechanism and user",
    identity=("mechanism", "user"),
    details_doc="per occurrence: `client`, `outcome`, `password_no` (which of `attempts`' secrets), `time`, `file`",
    common_columns=("clients",),
    summary=credentials_summary,
    remediation=(
        "A user name and password crossed the network unencrypted and must be considered known to anyone on "
        "the path: change that password. Then stop it happening again: require TLS before authentication on "
        "the server (see auth-methods) and configure clients for STARTTLS or implicit TLS (ports 465, 993, 995)."
    ),
    verification=(
        "Capture a client login again and run 'leakscope analyze' on it: no cleartext-credentials finding may "
        "remain, and the mail-service finding must show TLS in use."
    ),
    references={"*": "Wireshark/tshark -z credentials; PCredz"},
)

OPEN_RELAY = Kind(
    type=FindingType.OPEN_RELAY,
    title="Open relay",
    description=(
        "Unauthenticated SMTP transactions (the null sender `<>` included) whose `RCPT TO` named a domain that is not "
        "the server's own, and what the server answered. Local domains: `--local-domain`, `localhost`, the server's and"
        " loopback address literals, the names the server gives itself and their registered domains (Public Suffix "
        "List), and, without `--local-domain`, domains many unrelated clients deliver to it (with it, those are "
        "`possible-relay`: spam bots abusing an open relay send from as many). Trusted networks: `--trusted-net`; "
        "without it, clients in private ranges are assumed trusted (passive analysis only). A session picked up "
        "mid-stream (its handshake not in the capture: a capture begun during it, a ring buffer's piece read apart: the"
        " oldest file of a wrapped ring, `--no-join`) may have authenticated before the capture saw it: its "
        "transactions are not judged; one that lost client bytes before the transaction (a gap) or whose AUTH verdict "
        "was not seen is at most `possible-relay`. A client a proxy vouched for with Postfix's `XCLIENT` is judged by "
        "the address it gave (`ADDR`), and not at all when it gave a login (`LOGIN`); one without a login ends an "
        "authentication before it (Postfix resets it), even an AUTH's. A recipient accepted in a transaction whose "
        "message the server then refused (at `DATA` or at the end of the data) was not relayed: `refused` if the "
        "refusal names relaying or recipients, else (a content filter's) at most `possible-relay`, as is a recipient "
        "such a server took in a transaction that ended before that stage (RSET, QUIT, the capture's end). So is a "
        "foreign domain in the local part of an address at a local domain (`user%example.net@server`): the server may "
        "deliver it to a local mailbox. LMTP (`LHLO`) is not judged."
    ),
    severity_rules=(
        (
            Severity.HIGH,
            "`open-relay`: a client outside the trusted networks had a recipient accepted in a domain known not to be "
            "the server's: passively, outside the `--local-domain` domains of a server that names itself in one of "
            "them (or gives no name); in a probe's relay test, the domain it chose",
        ),
        (
            Severity.MEDIUM,
            "`possible-relay`: accepted, but whether the server receives mail for that domain (an MX takes mail for "
            "every domain it is MX for, not only its names') or whether the client logged in is unknown",
        ),
        (Severity.LOW, "`relays-for-internal-clients`: accepted for a client in a private range (assumed trusted)"),
        (Severity.INFO, "`relays-for-trusted-network`: accepted for a client in a `--trusted-net` network"),
        (Severity.INFO, "`refused`: the server refused the foreign recipient (5xx), or the message after it"),
    ),
    fields=(
        Field(
            "verdict",
            "`open-relay`, `possible-relay`, `relays-for-internal-clients`, `relays-for-trusted-network`, `refused`",
            column=True,
        ),
        Field(
            "accepted",
            "true when the server answered 2xx (relays), false for a 5xx to the RCPT or to its message naming relaying",
            column=True,
            compared=True,
        ),
        Field("mail_from", "the sender of the latest attempt (`<>` for the null sender)", column=True),
        Field("rcpt_to", "the recipient of the latest attempt", column=True),
        Field("reply", "the server's reply to that RCPT", column=True),
        Field(
            "message_refused", "how the server refused the message after that RCPT (`at DATA: 554 ...`)", column=True
        ),
        Field("rule", "which rule decided the verdict, in a sentence", column=True),
        Field("assumed", "what was assumed to reach the verdict", many=True),
        Field("local_domains", "the domains considered local (first 20)", many=True),
        Field("trusted_networks", "the `--trusted-net` networks (empty: private ranges assumed)", many=True),
        PROXY,
    ),
    key_doc="per server and verdict",
    identity=("verdict",),
    details_doc="every attempt: `client`, `mail_from`, `rcpt_to`, `accepted`, `reply`, `message_refused`, `time`, "
    "`file`",
    common_columns=("clients",),
    summary=relay_summary,
    variant_title=relay_title,
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
    references={"smtp": "Nessus 10262: MTA Open Mail Relaying Allowed; Nessus 10874; nmap smtp-open-relay"},
)

AUTH_METHODS = Kind(
    type=FindingType.AUTH_METHODS,
    title="Mechanisms offered without TLS",
    description="The SASL mechanisms (and password commands) a server offers on a connection that is not encrypted.",
    severity_rules=(
        (Severity.MEDIUM, "PLAIN, LOGIN, USER or LOGIN-COMMAND offered without TLS"),
        (Severity.LOW, "NTLM alone offered without TLS"),
        (Severity.INFO, "nothing that exposes a secret or host information is offered in the clear"),
    ),
    fields=(
        Field(
            "mechanisms",
            "SASL mechanisms advertised before TLS (EHLO `AUTH`, POP3 `CAPA` `SASL` and `AUTH` list, IMAP `AUTH=`), "
            "plus `USER` (POP3 USER/PASS available) and `LOGIN-COMMAND` (IMAP LOGIN without LOGINDISABLED)",
            column=True,
            compared=True,
            many=True,
        ),
        Field(
            "mechanisms_after_tls",
            "what was advertised inside TLS: null in passive results (encrypted), filled by the probe; with implicit "
            "TLS `mechanisms` is empty",
            compared=True,
            many=True,
        ),
        Field(
            "cleartext_exposed",
            "the mechanisms among PLAIN, LOGIN, USER, LOGIN-COMMAND, NTLM offered without TLS",
            column=True,
            many=True,
        ),
        Field("cleartext_login", "a password command outside SASL is offered", compared=True),
        Field("starttls_offered", "STARTTLS/STLS advertised", column=True),
        Field("tls", "TLS actually started in a session", column=True),
        PROXY,
    ),
    summary=methods_summary,
    variant_title=methods_title,
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
    references={
        "smtp": "Nessus 36804: SMTP Authentication Methods; nmap smtp-commands",
        "*": "nmap pop3-capabilities / imap-capabilities",
    },
)

_TLS_FACTS = (
    ("tls_version", "the TLS version of the probe's session (STARTTLS or implicit), e.g. `TLSv1.3`; null without"),
    ("tls_cipher", "the cipher suite of that session, e.g. `TLS_AES_256_GCM_SHA384`"),
    ("tls_cert_subject", "the server certificate's subject (RFC 4514)"),
    ("tls_cert_issuer", "the server certificate's issuer (RFC 4514)"),
    ("tls_cert_not_before", "start of the certificate's validity (ISO 8601 UTC)"),
    ("tls_cert_not_after", "end of the certificate's validity (ISO 8601 UTC)"),
    ("tls_cert_expired", "the certificate has expired"),
    ("tls_cert_self_issued", "subject equals issuer"),
    ("tls_cert_sha256", "SHA-256 of the DER certificate (hex)"),
)

MAIL_SERVICE = Kind(
    type=FindingType.MAIL_SERVICE,
    title="Mail service",
    description="Every mail server seen: what it says about itself, whether it offers and uses TLS, who talks to it.",
    severity_rules=(
        (Severity.LOW, "the greeting names an internal host (`banner_host`)"),
        (Severity.LOW, "the SMTP server ended a message at a bare-LF or bare-CR end line (`message_end` `lax`)"),
        (Severity.INFO, "otherwise"),
    ),
    fields=(
        Field(
            "banner", "the greeting (SMTP 220, POP3 +OK, IMAP * OK) without its status code", column=True, compared=True
        ),
        Field("banner_host", "the host an Exchange IMAP/POP3 greeting encodes (base64, in brackets)", column=True),
        Field(
            "software", "product and version the banner (else the IMAP ID) names, or null", column=True, compared=True
        ),
        Field("client_software", "what clients say they run in IMAP ID (first 50)", column=True, union=True, many=True),
        Field(
            "starttls_offered",
            "STARTTLS/STLS advertised or accepted (a go-ahead to STARTTLS or STLS); null when neither was seen (a "
            "client-side capture, a client that asked for no listing and sent no STARTTLS): offer then unknown",
            column=True,
            compared=True,
        ),
        Field(
            "message_end",
            "SMTP, from a message with an end line other than CR LF . CR LF (`\\n.\\n`, `\\n.\\r\\n`, `\\r.\\r`...): "
            "`lax` when the server ended the message there (open to SMTP smuggling, CVE-2023-51764), `exact` when it "
            "read on past it; null when no such message was seen",
            column=True,
        ),
        Field("tls", "TLS used (STARTTLS accepted, or TLS from the first byte)", column=True),
        *(Field(name, doc, active=True) for name, doc in _TLS_FACTS),
        Field(
            "starttls_result",
            "`accepted`, `refused`, `failed` (handshake), `not-offered`, `not-tried` (`--starttls never`), `implicit`",
            active=True,
        ),
        Field(
            "relay_test",
            "with `--relay-test` (SMTP): `{variants_tried, variants_accepted, stopped, from_domain, to_domain, "
            "variants[]}`; each `{variant, mail_from, rcpt_to, mail_reply, rcpt_reply, data_reply, accepted}` "
            "(`accepted`: RCPT and DATA taken); `stopped`: the 530, failing RSET or DATA taken that ended it, or null",
            active=True,
        ),
        PROXY,
    ),
    common_columns=("clients", "first_seen", "last_seen"),
    summary=service_summary,
    remediation=(
        "Know every mail service on the network: close ports that should not be reachable (firewall or bind to "
        "the right interface), keep the banner free of software versions and internal names, and offer "
        "STARTTLS or implicit TLS on each service that stays."
    ),
    verification="Re-run 'leakscope probe HOST' against the standard and observed ports and compare the inventory.",
    references={"smtp": "Nessus 34861: SMTP Server Connection Check; nmap smtp-commands", "*": "nmap -sV"},
)

# In display order: what hurts most first (tables, report sections, remediation items).
KINDS: dict[FindingType, Kind] = {
    kind.type: kind for kind in (CLEARTEXT_CREDENTIALS, OPEN_RELAY, NTLM_INFO, AUTH_METHODS, MAIL_SERVICE)
}
TLS_FACT_FIELDS: tuple[str, ...] = tuple(name for name, _doc in _TLS_FACTS)


def kind_of(name: object) -> Kind | None:
    """The declaration for a record's ``type``; None for anything that is not a kind (a summary, garbage)."""
    try:
        return KINDS[FindingType(name)]  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return None


def display_order(name: object) -> int:
    """Position of a kind in :data:`KINDS`; unknown kinds last."""
    kind = kind_of(name)
    return list(KINDS).index(kind.type) if kind is not None else len(KINDS)
