"""Masking, in one place: every record, event and report line that leaves the process passes through a
:class:`Redactor` unless the user asked for secrets.

Three rules, applied together:

* **Fields that hold a secret** (declared ``secret`` in :mod:`passive.findings.kinds`, and the secret parts of
  events) are replaced by :data:`MASK`.
* **Client lines are masked by what they are, not by where they came from.** A line a client sent is kept only when
  its command is known to carry nothing secret (``EHLO``, ``MAIL``, ``RCPT``, ``USER``, ``CAPA``, ...); the
  argument of a password command (``PASS``, ``APOP``, IMAP ``LOGIN``) and the initial response of ``AUTH`` /
  ``AUTHENTICATE`` are masked; any other client line (a base64 SASL step, an unknown command, garbage) is masked
  whole. So a secret is masked even when it is the first thing a capture shows of a session. HTTP: a request line
  keeps its method, path and version (its query and any user:password in an absolute URI are masked); an
  ``Authorization`` / ``Proxy-Authorization`` header keeps its scheme (``NTLM``, ``Negotiate``, ``Basic``) and
  masks the rest: it is an NTLM AUTHENTICATE (a crackable response) or a Basic password.
* **Known secrets are scrubbed from every string**: the passwords, tokens and responses the run saw, and the base64
  text that carried each (a server may echo a client's SASL response in its reply), are collected
  (:meth:`Redactor.learn`) and replaced wherever they appear, whatever the field.
* **Known names are masked partly in every string**: the user names and mailboxes the run saw (credentials, NTLM
  AUTHENTICATE users, ``USER``/``LOGIN`` lines, mailbox replies, relay addresses) are collected
  (:meth:`Redactor.learn_name`, :meth:`Redactor.learn_record`) and shown through ``name_mask`` wherever they appear,
  as whole words, whatever the case: a server reply that names the mailbox is masked like the credential's user.

User names are not secrets in machine output (``name_mask`` keeps them); the report masks them partly
(:func:`mask_name`).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable
from typing import Any

from dissectors.events import MAX_EVIDENCE_TEXT

MASK = "********"
# Secrets shorter than this are not scrubbed from free text: "a" or "12" would mask half the report. They are still
# masked in the fields and lines that hold them.
MIN_SCRUBBED = 4
# Secrets remembered per run for scrubbing; a hostile capture chooses how many distinct passwords it sends.
MAX_KNOWN_SECRETS = 4096
# A pattern of the known secrets' first SCRUB_PREFIX characters tells whether any may be in a string before it is
# searched for each (most strings hold none; 4096 searches each were slow), at the cost of one regular expression
# search: a record's strings are tested by that search alone, without a call per string (a run's records: 0.22 s of
# the 0.5 s its main process took after its workers ended on a 2 GB archive). Longer prefixes only lengthen it.
SCRUB_PREFIX = 32
# Evidence and event lines are cut at MAX_EVIDENCE_TEXT characters, before any secret is known to be in them: a
# cut line shows the start of a secret it carried (a server echoing a long SASL response showed 460 characters of
# its base64), which no search for the whole secret finds. A start this long at the end of such a line is masked.
PARTIAL_SECRET = 8
# Names shorter than this are not masked in free text ("al" would mask "al" wherever it stands as a word); they are
# still masked in the fields and lines that hold them.
MIN_NAME = 3
# Longest name remembered (longer ones are cut to it, which masks their start): the schema keeps names far shorter.
MAX_NAME = 256
# Names remembered per run: one per user, mailbox and relay address, which a large network has by the thousand.
MAX_KNOWN_NAMES = 50_000
# And their characters in all: the pattern that finds them costs about 280 bytes and 2.7 µs to compile per character
# (a hostile capture's 20 000 users of 250 characters made a report take 1.6 GB and 21 s). 512 Ki characters, 26 000
# names of 20, compile in 1.4 s to 150 MB; names past it are masked in the fields that hold them, not in free text.
MAX_NAME_CHARACTERS = 512 * 1024

# Client commands that carry no secret (SMTP, POP3, IMAP); anything else a client sent is masked.
HARMLESS_COMMANDS = frozenset(
    {
        "EHLO", "HELO", "LHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "BDAT",
        "STARTTLS", "STLS", "CAPA", "CAPABILITY", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "LOGOUT",
        "SELECT", "EXAMINE", "FETCH", "UID", "ID", "ENABLE", "NAMESPACE", "IDLE", "CLOSE", "EXPUNGE", "SEARCH",
    }
)  # fmt: skip
_SASL_COMMAND = re.compile(r"^((?:\S+\s+)?(?:AUTH|AUTHENTICATE)\s+\S+)(\s+\S.*)?$", re.IGNORECASE | re.DOTALL)
_USER_COMMAND = re.compile(r"^(USER)\s+(\S.*)$", re.IGNORECASE | re.DOTALL)
_PASS_COMMAND = re.compile(r"^(PASS)(?:\s.*)?$", re.IGNORECASE | re.DOTALL)
_APOP_COMMAND = re.compile(r"^(APOP)\s+(\S+)(?:\s.*)?$", re.IGNORECASE | re.DOTALL)
_HTTP_REQUEST = re.compile(r"^([A-Z][A-Z0-9_-]{0,31}) (\S+) (HTTP/\d\.\d)$")
# The scheme is kept only as a short word followed by its credentials; a lone word may be a bare token.
_HTTP_AUTHORIZATION = re.compile(r"^((?:Proxy-)?Authorization:[ \t]*[A-Za-z][A-Za-z0-9_.-]{0,19})[ \t]+\S", re.I)
_URI_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@?#]*@")
_IMAP_LOGIN = re.compile(r"^(\S+\s+LOGIN)\s+(\"(?:[^\"\\]|\\.)*\"|\S+)(?:\s.*)?$", re.IGNORECASE | re.DOTALL)

# Server replies that name the mailbox or user just logged in (POP3 and IMAP servers say it in many ways).
_MAILBOX_REPLIES = (
    re.compile(r'mailbox\s+"([^"]+)"', re.IGNORECASE),
    re.compile(r"mailbox\s+(?:for\s+)?<?([^\s\"<>]+@[^\s\"<>]+)", re.IGNORECASE),
    re.compile(r"password required for\s+<?([^\s\"<>]+?)>?\.?(?:\s|$)", re.IGNORECASE),
    re.compile(r"^\+OK\s+([^\s\"<>]+)\s+has\s+\d+\s+(?:visible\s+)?messages?", re.IGNORECASE),
    re.compile(r"\buser\s+\"?([^\s\"<>]+?)\"?\s+(?:authenticated|logged in)", re.IGNORECASE),
    re.compile(r"logged in as\s+\"?([^\s\"<>]+?)\"?\.?(?:\s|$)", re.IGNORECASE),
    re.compile(r"(?:welcome|hello),?\s+\"?([^\s\"<>,!]+@[^\s\"<>,!]+)", re.IGNORECASE),
)
# Fields of finding records that hold a user name or mail address, wherever they appear (details included).
_NAME_FIELDS = ("user", "users", "authzid", "mail_from", "rcpt_to")
# Keys that hold a secret wherever they appear in a record, nested ones included (each of a credential's
# ``attempts``): masked by :meth:`Redactor.value` like the declared secret fields.
SECRET_KEYS = frozenset({"password"})

# Keys of a finding record that its kind, the detectors and the record writer fill, never with text from the
# network: the kind, severity, server and times, the counts, the kind's remediation; and the fields that hold
# protocol words or verdicts (mechanism names as the server listed them, outcomes, the software a signature named).
# Redactor.record leaves them as they are, so that no user name or password can change what a report counts and
# decides: clients logging in as "high" and "cleartext-credentials" made them "h***h" and "c***s", and the report
# said "Nothing leaked" of ten clear-text passwords; one named "NTLM" hid the NTLM issue, "Postfix" the software.
RECORD_STRUCTURE = frozenset(
    {
        "type", "schema_version", "source", "protocol", "server", "network", "severity", "reference", "client",
        "clients", "count", "first_seen", "last_seen", "details_dropped", "evidence_dropped", "remediation",
        "verification", "id", "mechanism", "mechanisms", "cleartext_exposed", "mechanisms_after_tls", "outcome",
        "verdict", "secret_kind", "ntlm_version", "flags", "software", "os_version", "os_release",
    }
)  # fmt: skip
# The same of an evidence item: who sent the line, when, in which frame.
EVIDENCE_STRUCTURE = frozenset({"side", "time", "frame"})

NameMask = Callable[[str], str]
# Values that hold no text: passed through as they are.
_PLAIN = frozenset({int, bool, float, type(None)})
# Values passed through as they are when no string can change (:meth:`Redactor.value` without a probe).
_LEAVES = _PLAIN | {str}


def keep_name(name: str) -> str:
    return name


def mask_name(name: str) -> str:
    """``jdoe`` -> ``j***e``: enough to recognise a known account, not enough to learn one. Qualifiers stay."""
    if "\\" in name:  # DOMAIN\user
        domain, _, user = name.rpartition("\\")
        return f"{domain}\\{mask_name(user)}"
    if "@" in name.strip("@"):  # user@domain
        user, _, domain = name.rpartition("@")
        return f"{mask_name(user)}@{domain}"
    if len(name) <= 1:
        return "*" if name else name
    if len(name) == 2:
        return name[0] + "*"
    return f"{name[0]}***{name[-1]}"


def _name_forms(name: str) -> list[str]:
    """A name and the parts that name the same account alone: ``CORP\\jdoe`` -> also ``jdoe``; ``jdoe@corp.com``
    (or ``<jdoe@corp.com>``) -> also ``jdoe``."""
    name = name.strip().strip("<>").strip()[:MAX_NAME]
    forms = [name]
    if "\\" in name:
        forms.append(name.rpartition("\\")[2])
    if "@" in name.strip("@"):
        forms.append(name.rpartition("@")[0])
    return [form for form in forms if len(form) >= MIN_NAME and any(char.isalnum() for char in form)]


def _trie(words: Iterable[str]) -> dict[str, Any]:
    """The words as a trie of characters, ``""`` marking where one ends."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return trie


def _trie_pattern(node: dict[str, Any]) -> str:
    """A regular expression matching every word of a trie, longest first, without trying each word in turn."""
    branches = [re.escape(char) + _trie_pattern(child) for char, child in sorted(node.items()) if char]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body


def _names_pattern(names: set[str]) -> re.Pattern[str]:
    # Whole words only: "bob" is masked in "+OK bob has 2 messages", not in "bobcat".
    return re.compile(r"(?<!\w)" + _trie_pattern(_trie(names)) + r"(?!\w)", re.IGNORECASE)


def mask_client_line(line: str, name_mask: NameMask = keep_name) -> str:
    """A client's protocol line with every secret replaced by the mask (user names through ``name_mask``)."""
    text = line.strip()
    match = _HTTP_REQUEST.match(text)
    if match:
        return f"{match.group(1)} {_http_target(match.group(2))} {match.group(3)}"
    match = _HTTP_AUTHORIZATION.match(text)
    if match:
        return f"{match.group(1)} {MASK}"
    match = _SASL_COMMAND.match(text)
    if match:
        return match.group(1) + (f" {MASK}" if match.group(2) else "")
    match = _USER_COMMAND.match(text)
    if match:
        return f"{match.group(1)} {name_mask(match.group(2).strip())}"
    match = _PASS_COMMAND.match(text)
    if match:
        return f"{match.group(1)} {MASK}"
    match = _APOP_COMMAND.match(text)
    if match:
        return f"{match.group(1)} {name_mask(match.group(2))} {MASK}"
    match = _IMAP_LOGIN.match(text)
    if match:
        user = match.group(2)
        quoted = len(user) >= 2 and user.startswith('"') and user.endswith('"')
        shown = f'"{name_mask(user[1:-1])}"' if quoted else name_mask(user)
        return f"{match.group(1)} {shown} {MASK}"
    # SMTP/POP3 commands come first; IMAP commands follow a tag.
    for word in text.split(None, 2)[:2]:
        if word.split(":", 1)[0].upper() in HARMLESS_COMMANDS:
            return line
    return MASK


def _http_target(target: str) -> str:
    """A request target with its query and any ``user:password@`` masked: tokens and passwords travel there."""
    target = _URI_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", target)
    path, question, _query = target.partition("?")
    return path + (f"?{MASK}" if question else "")


class Redactor:
    """Masks what one run's outputs must not show. ``Redactor(show_secrets=True)`` passes everything through.

    ``secrets`` is held by reference: a long-running monitor passes its run's set, which grows as traffic comes.
    """

    def __init__(
        self, show_secrets: bool = False, secrets: set[str] | None = None, name_mask: NameMask = keep_name
    ) -> None:
        self.show_secrets = show_secrets
        self.name_mask = name_mask
        self._secrets: set[str] = secrets if secrets is not None else set()
        self._names: set[str] = set()
        self._name_characters = 0
        self._pattern: re.Pattern[str] | None = None
        # The secrets long enough to scrub, in the set's order, and a pattern that finds where any of them may
        # start, worked out again when the set has grown (it only grows).
        self._scrubbed: tuple[str, ...] = ()
        self._scrubbed_of = 0
        self._prefixes: re.Pattern[str] | None = None
        self._starts: dict[str, list[str]] = {}  # the secrets by their first PARTIAL_SECRET characters, sorted
        self._start_pattern: re.Pattern[str] | None = None

    def learn(self, secret: str | None) -> None:
        """Remember a secret, so that it is scrubbed wherever it appears."""
        if secret and secret != MASK and len(self._secrets) < MAX_KNOWN_SECRETS:
            self._secrets.add(secret)

    def learn_name(self, name: str | None) -> None:
        """Remember a user name or mailbox, so that it is shown through ``name_mask`` wherever it appears."""
        if not isinstance(name, str) or name == MASK:
            return
        for form in _name_forms(name):
            if (
                form.lower() not in self._names
                and len(self._names) < MAX_KNOWN_NAMES
                and self._name_characters + len(form) <= MAX_NAME_CHARACTERS
            ):
                self._names.add(form.lower())
                self._name_characters += len(form)
                self._pattern = None

    def learn_record(self, record: dict[str, Any], secret_fields: tuple[str, ...] = ()) -> None:
        """Remember the names and secrets a finding record holds: its user, users and relay addresses (details
        included), the user of each ``USER``/``LOGIN``/``APOP`` line, the mailbox a server reply names, and the value
        of each field in ``secret_fields`` (unless already masked)."""
        details, evidence = record.get("details"), record.get("evidence")
        details = details if isinstance(details, list) else []
        for holder in [record, *(d for d in details if isinstance(d, dict))]:
            for field in _NAME_FIELDS:
                values = holder.get(field)
                for value in values if isinstance(values, list) else [values]:
                    self.learn_name(value if isinstance(value, str) else None)
        for field in secret_fields:
            value = record.get(field)
            self.learn(value if isinstance(value, str) else None)
        for value in record.values():  # secrets nested in lists of objects (a credential's attempts)
            for item in value if isinstance(value, list) else []:
                for key in SECRET_KEYS & (item.keys() if isinstance(item, dict) else set()):
                    self.learn(item[key] if isinstance(item[key], str) else None)
        for item in evidence if isinstance(evidence, list) else []:
            line = item.get("line") if isinstance(item, dict) else None
            if isinstance(line, str):
                self._learn_line(line.strip(), item.get("side"))

    def _learn_line(self, line: str, side: object) -> None:
        if side == "client":
            for pattern, group in ((_USER_COMMAND, 2), (_APOP_COMMAND, 2), (_IMAP_LOGIN, 2)):
                match = pattern.match(line)
                if match:
                    self.learn_name(match.group(group).strip('"'))
            return
        for pattern in _MAILBOX_REPLIES:
            for match in pattern.finditer(line):
                self.learn_name(match.group(1))

    def _names_masked(self, value: str) -> str:
        if not self._names or self.name_mask is keep_name:
            return value
        if self._pattern is None:
            self._pattern = _names_pattern(self._names)
        return self._pattern.sub(lambda match: self.name_mask(match.group(0)), value)

    def text(self, value: str) -> str:
        """Any string: known secrets replaced by the mask, known names shown through ``name_mask``."""
        if self.show_secrets:
            return value
        if len(self._secrets) != self._scrubbed_of:
            self._learn_secrets()
        if self._prefixes is not None and self._prefixes.search(value):
            for secret in self._scrubbed:
                if secret in value:
                    value = value.replace(secret, MASK)
        if not self._names or self.name_mask is keep_name:
            return value
        return self._names_masked(value)

    def _learn_secrets(self) -> None:
        secrets = self._secrets
        self._scrubbed = tuple(secret for secret in secrets if len(secret) >= MIN_SCRUBBED)
        self._scrubbed_of = len(secrets)
        self._starts = {}
        for secret in sorted(secret for secret in self._scrubbed if len(secret) > PARTIAL_SECRET):
            self._starts.setdefault(secret[:PARTIAL_SECRET], []).append(secret)
        self._start_pattern = re.compile(f"(?=({_trie_pattern(_trie(self._starts))}))") if self._starts else None
        prefixes = _trie(secret[:SCRUB_PREFIX] for secret in self._scrubbed)
        self._prefixes = re.compile(_trie_pattern(prefixes)) if self._scrubbed else None

    def line(self, line: str, side: str) -> str:
        """An evidence or event line: client lines by what they carry, every line scrubbed of known secrets."""
        if self.show_secrets:
            return line
        if side == "client":
            line = mask_client_line(line, self.name_mask)
        return self._cut_secret(self.text(line)) if len(line) >= MAX_EVIDENCE_TEXT else self.text(line)

    def _cut_secret(self, line: str) -> str:
        """A line that may have been cut (:data:`PARTIAL_SECRET`), with a known secret's start at its end masked: of
        the sorted secrets sharing a tail's start, the first not before it begins with it if any does (one search)."""
        for match in self._start_pattern.finditer(line) if self._start_pattern else ():
            tail, group = line[match.start() :], self._starts[match.group(1)]
            if group[min(bisect.bisect_left(group, tail), len(group) - 1)].startswith(tail):
                return line[: match.start()] + MASK
        return line

    def record(self, record: dict[str, Any], secret_fields: tuple[str, ...] = ()) -> dict[str, Any]:
        """A finding record as it may be shown: every string scrubbed but those of :data:`RECORD_STRUCTURE` (and
        :data:`EVIDENCE_STRUCTURE`), evidence lines masked by what they carry (:meth:`line`), and the fields in
        ``secret_fields`` masked whole."""
        if self.show_secrets:
            return record
        shown = {
            key: item if key in RECORD_STRUCTURE else self.value(item)
            for key, item in record.items()
            if key != "evidence"
        }
        evidence = record.get("evidence")
        if isinstance(evidence, list):
            shown["evidence"] = [self._evidence(item) for item in evidence]
        for name in secret_fields:
            if shown.get(name):
                shown[name] = MASK
        return shown

    def _evidence(self, item: Any) -> Any:
        if not isinstance(item, dict):
            return self.value(item)
        kept = EVIDENCE_STRUCTURE
        shown = {key: value if key in kept else self.value(value) for key, value in item.items() if key != "line"}
        line = item.get("line")
        if isinstance(line, str):
            shown["line"] = self.line(line, "server" if item.get("side") == "server" else "client")
        return shown

    def value(self, value: Any) -> Any:
        """Scrub every string inside a JSON-ready value (lists and objects walked); a non-empty value under a key
        of :data:`SECRET_KEYS` is masked whole."""
        if self.show_secrets:
            return value
        probe = self._probe()
        return _copied(value) if probe is None else self._value(value, probe)

    def _probe(self) -> Callable[[str], object] | None:
        """A test that is false for every string :meth:`text` leaves as it is (it may be true for others, which
        :meth:`text` then looks at), or None when :meth:`text` leaves every string as it is."""
        if len(self._secrets) != self._scrubbed_of:
            self._learn_secrets()
        secrets = self._prefixes.search if self._prefixes is not None else None
        if not self._names or self.name_mask is keep_name:
            return secrets
        if self._pattern is None:
            self._pattern = _names_pattern(self._names)
        names = self._pattern.search
        if secrets is None:
            return names
        return lambda value: secrets(value) or names(value)

    def _value(self, value: Any, probe: Callable[[str], object]) -> Any:
        kind = type(value)
        if kind is str:
            return self.text(value) if probe(value) else value
        text = self.text

        def walk(item: Any) -> Any:
            return self._value(item, probe)

        if kind is dict:  # strings and plain values inline: a record holds hundreds
            return {
                key: MASK
                if key in SECRET_KEYS and item
                else (text(item) if probe(item) else item)
                if item.__class__ is str
                else item
                if item.__class__ in _PLAIN
                else walk(item)
                for key, item in value.items()
            }
        if kind is list:
            return [
                (text(item) if probe(item) else item)
                if item.__class__ is str
                else item
                if item.__class__ in _PLAIN
                else walk(item)
                for item in value
            ]
        if kind in _PLAIN:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, dict):
            return {key: MASK if key in SECRET_KEYS and item else walk(item) for key, item in value.items()}
        return value


def _copied(value: Any) -> Any:
    """:meth:`Redactor.value` when no string can change: lists and objects copied, secret keys masked."""
    kind = type(value)
    if kind is dict:
        return {
            key: MASK if key in SECRET_KEYS and item else item if item.__class__ in _LEAVES else _copied(item)
            for key, item in value.items()
        }
    if kind is list:
        return [item if item.__class__ in _LEAVES else _copied(item) for item in value]
    if isinstance(value, list):
        return [_copied(item) for item in value]
    if isinstance(value, dict):
        return {key: MASK if key in SECRET_KEYS and item else _copied(item) for key, item in value.items()}
    return value
