"""Which refusals of a login judged the credentials, read from the server's reply alone, sans-I/O.

A server refuses a login for one of two kinds of reason. Either it checked the credentials and found them wrong
(SMTP 535, RFC 4954 section 6; IMAP ``NO [AUTHENTICATIONFAILED]`` or a plain ``NO``, RFC 5530; POP3 ``-ERR [AUTH]``
or a plain ``-ERR``, RFC 3206), or it never looked at them: the command came out of sequence (SMTP 503 after a
successful AUTH), the mechanism is unknown or too weak (504, 534), encryption is required first (538, 530, IMAP
``[PRIVACYREQUIRED]``), the response could not be decoded (501, IMAP ``BAD``), or the server could not check them now
(any SMTP 4xx such as 454 or 421, IMAP ``[UNAVAILABLE]``, POP3 ``[SYS/TEMP]``). Calling the second kind a failed
password would tell an analyst that a leaked password is wrong when the server never tried it. A refusal these
functions do not recognise is read as a judged one, as before they existed.

Some servers give the second kind the first kind's code and say why only in words: Postfix answers every refusal of
its SASL back-end with ``535 5.7.8 Error: authentication failed: <reason>``, an unknown mechanism and a response that
is no base64 included; Dovecot refuses a mechanism it does not offer with ``NO [ALERT]`` (IMAP) or ``-ERR [AUTH]``
(POP3), and a POP3 password before TLS, where it wants TLS first, with ``-ERR [AUTH]`` too. Those reasons
(:data:`UNCHECKED_REASONS`) are recognised by their whole text, so that a refusal of a wrong password (``535 5.7.8
Error: authentication failed: authentication failure``) stays judged. Postfix 2.3 to 3.0 gave the same 535 to a
back-end it could not reach or that could not check now (:data:`POSTFIX_BACKEND_REASONS`, recognised only after
Postfix's words), which Postfix 3.1 and later answer with 454; Postfix 3.10 and later name the mechanism they do not
offer ("Invalid authentication mechanism: 'XOAUTH2'"). Cyrus IMAP gives the same texts of its SASL library under a
plain ``NO`` (imapd) or after ``-ERR [AUTH] authenticating:`` (pop3d), and refuses clear text before TLS "only
available under a layer" without reading the password.

Exchange Online refuses SMTP AUTH for a policy of the organisation's under ``535 5.7.139``, the code it gives a wrong
password too, and says which in words: "Authentication unsuccessful, <reason>.", then another sentence or none and a
bracketed tail that names its server and the time, different in every reply. Its reason, up to the first full stop,
is compared whole (:data:`EXCHANGE_POLICY_REASONS`); "the user credentials were incorrect" stays judged. Once it
takes no basic authentication for SMTP AUTH at all, it answers ``550 5.7.30`` (:data:`EXCHANGE_BASIC_AUTH_RETIRED`).

POP3 ``-ERR [IN-USE]`` is no refusal of the credentials at all: they were right and the maildrop is locked
(:func:`pop3_in_use`).
"""

from __future__ import annotations

import re

# SMTP permanent replies to AUTH that say the server did not try the credentials: 500 (a response line too long,
# RFC 4954 section 4), 501 (syntax, a response that is no base64, a cancelled exchange), 502 (AUTH not implemented),
# 503 (bad sequence: already authenticated, or AUTH inside a mail transaction), 504 (mechanism not supported), 530
# (STARTTLS first, as Exchange answers), 534 (mechanism too weak) and 538 (encryption required for the mechanism).
# Every 4xx is transient (RFC 5321 section 4.2.1: the action did not occur), so none judged the credentials either.
SMTP_UNJUDGED_CODES = frozenset({500, 501, 502, 503, 504, 530, 534, 538})

# An enhanced status code (RFC 3463) at the start of an SMTP reply's text; x.7.8 says "authentication credentials
# invalid" (RFC 4954 section 6) whatever the basic code beside it.
_ENHANCED = re.compile(r"[245]\.(\d{1,3})\.(\d{1,3})(?!\S)")
CREDENTIALS_INVALID = ("7", "8")

# IMAP response codes of a tagged NO that say the server did not judge the credentials (RFC 5530): it could not check
# them now (UNAVAILABLE), wants TLS first (PRIVACYREQUIRED), cannot do what was asked (CANNOT), hit a limit of its
# own (LIMIT) or a bug (SERVERBUG), or found the passphrase expired without telling whether it was right (EXPIRED);
# or it took the credentials and refused the authorization identity asked for (AUTHORIZATIONFAILED: no failed
# password). AUTHENTICATIONFAILED, a plain NO and any other code are judged.
IMAP_UNJUDGED_CODES = frozenset(
    {"UNAVAILABLE", "PRIVACYREQUIRED", "CANNOT", "LIMIT", "SERVERBUG", "EXPIRED", "AUTHORIZATIONFAILED"}
)

# POP3 extended response codes of an -ERR that say the same: the system failed, for now or for good (SYS/TEMP,
# SYS/PERM, RFC 3206 section 4), or the user logged in too recently to be let in again (LOGIN-DELAY, RFC 2449
# section 8.1.1), which a server may say before looking at the password. AUTH and a plain -ERR are judged, unless
# their words say otherwise (UNCHECKED_REASONS).
POP3_UNJUDGED_CODES = frozenset({"SYS", "LOGIN-DELAY"})

# How much of a reply is read for its response code: the longest code named above is 20 characters; a hostile line
# of any length costs no more than this.
MAX_CODE_TEXT = 64
# A POP3 response code as RFC 2449 section 8 writes it: "[", levels of printable characters other than "/" and "]"
# (no blank, no control) split by "/", then "]". Only IN-USE, which turns a refusal into a right password, is held
# to it.
_POP3_CODE = re.compile(r"\[([\x21-\x2e\x30-\x5c\x5e-\x7e]+(?:/[\x21-\x2e\x30-\x5c\x5e-\x7e]+)*)\]")

# Reasons a server gives for refusing an exchange it never checked the credentials in, under a code that says they
# were (SMTP 535 5.7.8, a plain IMAP NO, a POP3 -ERR plain or [AUTH]): the mechanism is not one it offers, a response
# was no base64, or a password may not be sent before TLS. Postfix's own (xsasl_dovecot_server.c: "Invalid
# authentication mechanism", "Invalid base64 data in initial response" and "... continued response", the last also
# Dovecot's auth server's), and Dovecot's login processes' ("Unsupported authentication mechanism.": IMAP ``NO
# [ALERT] ...``, POP3 ``-ERR [AUTH] ...``; "Plaintext authentication disallowed on non-secure (SSL/TLS)
# connections.", which its IMAP says with [PRIVACYREQUIRED] but its POP3 with [AUTH]). Compared in lower case,
# without a final full stop.
# Cyrus IMAP's imapd and pop3d (imapd.c, pop3d.c), where clear text or SASL is refused before TLS (allowplaintext
# off, or TLS required): the password is not even read ("NO Login only available under a layer", "-ERR [AUTH] USER
# command only available under a layer").
UNCHECKED_REASONS = frozenset(
    {
        "invalid authentication mechanism",
        "unsupported authentication mechanism",
        "invalid base64 data in initial response",
        "invalid base64 data in continued response",
        "plaintext authentication disallowed on non-secure (ssl/tls) connections",
        "login only available under a layer",
        "authenticate only available under a layer",
        "user command only available under a layer",
        "auth command only available under a layer",
    }
)
# Reasons Postfix 2.3 to 3.0 relayed under 535 (3.1 and later: 454 4.7.0 Temporary authentication failure) from a
# back-end that did not check the credentials, recognised only after Postfix's words (POSTFIX_REASON_PREFIX), where
# no other server's own words can stand. Its Dovecot client's (xsasl_dovecot_server.c): the auth server went away,
# could not be reached, or answered without a field Postfix needs. Its Cyrus client's, the texts of Cyrus SASL's
# sasl_errstring: those of the codes Postfix 3.1 and later call temporary (SASL_FAIL, SASL_NOMEM, SASL_TRYAGAIN,
# SASL_UNAVAIL: saslauthd down, for one), and those that refuse the exchange rather than the password: no such
# mechanism (SASL_NOMECH), a response that is no base64 or a cancel (SASL_BADPROT), TLS or a stronger mechanism
# wanted (SASL_ENCRYPT, SASL_TOOWEAK), no verifier for the mechanism (SASL_NOVERIFY, SASL_TRANS: RFC 4954's 432, a
# password transition needed), an expired passphrase or a refused authorization identity (SASL_EXPIRED,
# SASL_NOAUTHZ: RFC 5530's EXPIRED and AUTHORIZATIONFAILED). Cyrus's "authentication failure" (SASL_BADAUTH, and
# SASL_NOUSER, which Postfix words so) and "account disabled" stay judged. Lower case, without a final full stop.
POSTFIX_BACKEND_REASONS = frozenset(
    {
        "connection lost to authentication server",
        "can't connect to authentication server",
        "authentication backend error",
        "generic failure",
        "no memory available",
        "transient failure (e.g., weak key)",
        "remote authentication server unavailable",
        "no mechanism available",
        "bad protocol / cancel",
        "encryption needed to use mechanism",
        "mechanism too weak for this user",
        "one time use of a plaintext password will enable requested mechanism for user",
        "user exists, but no verifier for user",
        "passphrase expired, has to be reset",
        "authorization failure",
    }
)
# The longest SASL mechanism name a client's AUTH is read with (dissectors.sasl): RFC 4422 section 3.1 allows 1 to 20
# characters, but some servers list longer private names and a client may ask for one. Postfix 3.10 and later quote
# the one the client asked for in "Invalid authentication mechanism: 'XOAUTH2'", as the client spelt it: any name the
# AUTH was read with may come back there, so one limit serves both (a shorter one here took Postfix's refusal of a
# 21-character name for a wrong password).
MAX_MECHANISM_NAME = 40
_NAMED_MECHANISM = re.compile(rf"invalid authentication mechanism: '[^\s']{{1,{MAX_MECHANISM_NAME}}}'")
# Reasons Exchange Online gives, after its enhanced code 5.7.139 (EXCHANGE_POLICY_CODE) and "Authentication
# unsuccessful," (EXCHANGE_REASON_PREFIX), for refusing SMTP AUTH by a policy that says nothing of whether the password
# was right: SMTP AUTH is turned off for the tenant or the mailbox (SmtpClientAuthenticationDisabled), basic
# authentication is turned off, Entra ID's security defaults or a Conditional Access policy refuse the sign-in ("the
# request did not meet the criteria ..."), or the customer's own federation server could not be reached or speaks no
# HTTPS, so that the user could not be authenticated (Microsoft's "Fix issues with printers, scanners, and LOB apps
# that send email using Microsoft 365"). Its wrong password ("the user credentials were incorrect"), any reason not
# listed here and on-premises Exchange's "535 5.7.3 Authentication unsuccessful" stay judged. Lower case, without the
# full stop that ends them.
EXCHANGE_POLICY_REASONS = frozenset(
    {
        "smtpclientauthentication is disabled for the tenant",
        "smtpclientauthentication is disabled for the mailbox",
        "basic authentication is disabled",
        "user is locked by your organization's security defaults policy",
        "the request did not meet the criteria to be authenticated successfully",
        "federated sts service was unreachable",
        "the federated sts url does not support https",
    }
)
# Exchange Online's enhanced code for every refusal of SMTP AUTH, a wrong password's included: the reason tells them
# apart, and under no other code is it read as one of these (x.7.8 says the credentials were invalid).
EXCHANGE_POLICY_CODE = "5.7.139"
# Exchange's words before the reason, lower case.
EXCHANGE_REASON_PREFIX = "authentication unsuccessful,"
# Exchange Online's refusal of SMTP AUTH with basic authentication once it no longer takes it for client submission
# at all (announced for 2026: "550 5.7.30 Basic authentication is not supported for Client Submission."): the
# password was never tried. Its sentence, lower case, without its full stop, under that enhanced code only.
EXCHANGE_BASIC_AUTH_CODE = "5.7.30"
EXCHANGE_BASIC_AUTH_RETIRED = "basic authentication is not supported for client submission"
# What ends Exchange Online's reason: the full stop after it, or, were that missing, the bracketed tail (its server's
# name and the time) that ends every one of its replies.
EXCHANGE_REASON_ENDS = (".", "[")
# Response codes passed over before such a reason: IMAP's ALERT, and POP3's AUTH (RFC 3206), which Dovecot puts
# before every refusal of a login, of a mechanism or of clear text included.
REASON_CODES = ("[ALERT]", "[AUTH]")
# Postfix's words before the reason its SASL back-end gave (smtpd_sasl_glue.c), lower case.
POSTFIX_REASON_PREFIX = "error: authentication failed:"
# Cyrus pop3d's words before the reason Cyrus SASL gave (pop3d.c: "-ERR [AUTH] authenticating: <reason>"), lower
# case; its imapd gives the reason alone after NO (imapd.c: "a1 NO generic failure", read by imap_judged). The
# reasons are sasl_errstring's, those of POSTFIX_BACKEND_REASONS among them.
CYRUS_REASON_PREFIX = "authenticating:"
# POP3 refusals of a PASS for want of a USER (RFC 1939 takes PASS only right after a successful USER), lower case,
# without a final full stop, after any response code: Dovecot "-ERR No username given.", Cyrus "-ERR [AUTH] Must
# give USER command", hMailServer "-ERR Send USER first.", XMail "-ERR Command not valid here" (it goes back to
# wanting a USER after a refused PASS). hMailServer's older releases keep the user a refused PASS named and check
# the next PASS against it ("-ERR Invalid user name or password."): only these words say a PASS was not read.
POP3_NO_USER_REASONS = frozenset(
    {"no username given", "must give user command", "send user first", "command not valid here"}
)
# How much of a reply is read for one of those reasons: the longest reply text that holds one, Postfix's "5.7.8
# Error: authentication failed: " before Cyrus SASL's "One time use of a plaintext password will enable requested
# mechanism for user", is 113 characters; a longer text (its blanks counted) holds none, so a hostile line of any
# length costs no more than this. Exchange Online's reasons are followed by a tail of any length, so only this much of
# its reply is read: its longest sentence, "5.7.139 Authentication unsuccessful, the request did not meet the criteria
# to be authenticated successfully.", is 109 characters; a reason that has not ended within the bound is none.
MAX_REASON_TEXT = 128


def smtp_judged(code: int, text: str) -> bool:
    """Did an SMTP refusal of AUTH (``code`` 4xx or 5xx, ``text`` what follows it) judge the credentials?"""
    if unchecked_reason(text) or exchange_policy_refusal(text):
        return False
    enhanced = _ENHANCED.match(text[:MAX_CODE_TEXT].lstrip())
    if enhanced is not None and enhanced.groups() == CREDENTIALS_INVALID:
        return True
    return code >= 500 and code not in SMTP_UNJUDGED_CODES


def imap_judged(status: str, text: str) -> bool:
    """Did an IMAP tagged refusal (``status`` ``NO`` or ``BAD``, ``text`` what follows it) judge the credentials? A
    ``BAD`` never did: the command or its response was invalid (RFC 9051 section 7.1.3)."""
    if status.upper() == "BAD" or unchecked_reason(text) or unchecked_reason(f"{CYRUS_REASON_PREFIX} {text}"):
        return False
    return response_code(text) not in IMAP_UNJUDGED_CODES


def pop3_judged(text: str) -> bool:
    """Did a POP3 refusal (``text`` what follows ``-ERR``) judge the credentials? Only the code's first part counts:
    ``SYS/TEMP`` and ``SYS/PERM`` are both ``SYS`` (RFC 3206 codes are hierarchical)."""
    return response_code(text).partition("/")[0] not in POP3_UNJUDGED_CODES and not unchecked_reason(text)


def unchecked_reason(text: str) -> bool:
    """Is a refusal's text (what follows its SMTP code, IMAP ``NO`` or POP3 ``-ERR``) one of
    :data:`UNCHECKED_REASONS`, whole, or after Postfix's "Error: authentication failed:" one of
    :data:`POSTFIX_BACKEND_REASONS` or its naming of a mechanism it does not offer, or after Cyrus's
    "authenticating:" one of :data:`POSTFIX_BACKEND_REASONS`? An SMTP enhanced code and one of :data:`REASON_CODES`
    before it are passed over; a text longer than :data:`MAX_REASON_TEXT` is none."""
    if len(text) > MAX_REASON_TEXT:
        return False
    head = text.strip()
    enhanced = _ENHANCED.match(head)
    if enhanced is not None:
        head = head[enhanced.end() :].lstrip()
    for code in REASON_CODES:
        if head[: len(code)].upper() == code:
            head = head[len(code) :].lstrip()
            break
    head = head.lower()
    reason = head.removeprefix(POSTFIX_REASON_PREFIX).strip().removesuffix(".").rstrip()
    if reason in UNCHECKED_REASONS:
        return True
    if head.startswith(CYRUS_REASON_PREFIX):
        return head.removeprefix(CYRUS_REASON_PREFIX).strip() in POSTFIX_BACKEND_REASONS
    relayed = head.startswith(POSTFIX_REASON_PREFIX)
    return relayed and (reason in POSTFIX_BACKEND_REASONS or _NAMED_MECHANISM.fullmatch(reason) is not None)


def exchange_policy_refusal(text: str) -> bool:
    """Is an SMTP refusal's text Exchange Online's refusal for a policy: its enhanced code 5.7.139, "Authentication
    unsuccessful," and one of :data:`EXCHANGE_POLICY_REASONS`, whole, or 5.7.30 and
    :data:`EXCHANGE_BASIC_AUTH_RETIRED`, up to the first of :data:`EXCHANGE_REASON_ENDS` (in any case, blanks around
    it dropped)? What follows is not read. Only the first :data:`MAX_REASON_TEXT` characters are: a sentence not ended
    within them is none, so that the bound cannot cut a longer one down to one of these."""
    head = text[:MAX_REASON_TEXT].lstrip()
    enhanced = _ENHANCED.match(head)
    if enhanced is None:
        return False
    sentence = _first_sentence(head[enhanced.end() :], whole=len(text) <= MAX_REASON_TEXT)
    if sentence is None:
        return False
    if enhanced.group() == EXCHANGE_POLICY_CODE and sentence.startswith(EXCHANGE_REASON_PREFIX):
        return sentence[len(EXCHANGE_REASON_PREFIX) :].strip() in EXCHANGE_POLICY_REASONS
    return enhanced.group() == EXCHANGE_BASIC_AUTH_CODE and sentence == EXCHANGE_BASIC_AUTH_RETIRED


def _first_sentence(text: str, whole: bool) -> str | None:
    """``text`` up to the first of :data:`EXCHANGE_REASON_ENDS`, lower case, without blanks around it; all of it when
    it has none and is ``whole`` (not cut by a bound), else None."""
    ends = [at for at in map(text.find, EXCHANGE_REASON_ENDS) if at >= 0]
    if not ends and not whole:
        return None
    return text[: min(ends, default=len(text))].strip().lower()


def pop3_no_user(text: str) -> bool:
    """Does a POP3 ``-ERR`` to a ``PASS`` (``text`` what follows it) refuse it for want of a ``USER``, one of
    :data:`POP3_NO_USER_REASONS` after any response code? A text longer than :data:`MAX_REASON_TEXT` is none."""
    if len(text) > MAX_REASON_TEXT:
        return False
    head = text.strip()
    if (code := _POP3_CODE.match(head)) is not None:
        head = head[code.end() :]
    return head.strip().lower().removesuffix(".").rstrip() in POP3_NO_USER_REASONS


def pop3_in_use(text: str) -> bool:
    """Does a POP3 ``-ERR`` (``text`` what follows it) say ``[IN-USE]``: the credentials were right, the maildrop
    locked by another session (RFC 2449 section 8.1.2)? However many blanks stand before the code, or none; only the
    code's first part counts, as in :func:`pop3_judged`. The code must be written as RFC 2449 section 8 writes codes
    (:data:`_POP3_CODE`): an unclosed ``[IN-USE`` or a ``[ IN-USE]`` is no code, and says nothing of the password."""
    code = _POP3_CODE.match(text[:MAX_CODE_TEXT].lstrip())
    return code is not None and code.group(1).partition("/")[0].upper() == "IN-USE"


def response_code(text: str) -> str:
    """The response code a reply's text opens with (``[UNAVAILABLE] ...``, ``[SYS/TEMP] ...``), upper-cased, without
    its arguments; empty when it opens with none."""
    head = text[:MAX_CODE_TEXT].lstrip()
    if not head.startswith("["):
        return ""
    name = head[1:].split("]", 1)[0].split(None, 1)
    return name[0].upper() if name else ""
