"""``auth-methods``: the mechanisms (and password commands) a server offers where the wire can be read."""

from __future__ import annotations

from typing import ClassVar

from dissectors import events as ev
from passive.analysis.detectors.base import Detector, Handlers, Shared
from passive.findings.model import Finding, FindingType, Severity

# Mechanisms that put a password on the wire, and the password commands outside SASL (POP3 USER, IMAP LOGIN).
PASSWORD_MECHANISMS = frozenset({"PLAIN", "LOGIN", "USER", "LOGIN-COMMAND"})
# Mechanisms whose exchange tells host information and a crackable response.
HOST_INFO_MECHANISMS = frozenset({"NTLM"})
# Either: what a listing exposes where the wire can be read.
EXPOSING_MECHANISMS = PASSWORD_MECHANISMS | HOST_INFO_MECHANISMS
# A server may advertise any number of mechanisms; past this many distinct names per finding the rest are counted
# (dissector anomaly ``too_many_mechanisms``).
MAX_MECHANISMS = 64
# Nor names longer than this (RFC 4422: at most 20 characters), counted as ``mechanism_name_too_long``: 64 names of
# 64 KiB per finding, for 20 000 servers, would be 80 GiB.
MAX_MECHANISM_NAME = 64


def login_command(protocol: str) -> str:
    """The name a password command outside SASL is listed under."""
    return "USER" if protocol == "pop3" else "LOGIN-COMMAND"


class AuthMethodsDetector(Detector):
    KIND = FindingType.AUTH_METHODS
    HANDLERS: ClassVar[Handlers] = {ev.Capabilities: "capabilities"}

    def _methods(self) -> Finding:
        return self.finding(FindingType.AUTH_METHODS, Severity.INFO)

    def capabilities(self, event: ev.Capabilities) -> None:
        methods = self._methods()
        self.touch(methods, event)
        listed = list(event.mechanisms)
        if event.cleartext_login:
            listed.append(login_command(self.context.protocol))
        self.session.apply(_offered, methods, listed, bool(event.cleartext_login), event.starttls, self.session.tls)

    def after_tls(self, event: ev.Capabilities) -> None:
        """A listing read inside TLS (only a probe can): it becomes ``mechanisms_after_tls``. With implicit TLS
        nothing was offered in the clear; the finding still says what is offered, and how. (A probe's session
        applies its effects at once: what it reads of the run's findings is up to date.)"""
        if self.session.shared.findings.find(FindingType.AUTH_METHODS, self.context.server) is None:  # type: ignore[attr-defined]
            self.capabilities(ev.Capabilities(event.side, event.evidence, event.source, [], [], False, None))
        after = list(event.mechanisms)
        if event.cleartext_login:
            after.append(login_command(self.context.protocol))
        self.session.apply(_after_tls, self._methods(), after)


# -- effects (passive.analysis.detectors.base) ------------------------------------------------------------------


def _offered(
    methods: Finding, shared: Shared, listed: list[str], cleartext_login: bool, starttls: bool, tls: bool
) -> None:
    """A listing of mechanisms: new names join the finding's (bounded), and what they expose sets its severity."""
    fields = methods.fields
    offered = fields.setdefault("mechanisms", [])
    known = set(offered)
    anomalies = shared.stats.anomalies
    for mechanism in listed:
        if mechanism in known:
            continue
        if len(mechanism) > MAX_MECHANISM_NAME:
            anomalies["mechanism_name_too_long"] += 1
            continue
        if len(offered) >= MAX_MECHANISMS:
            anomalies["too_many_mechanisms"] += 1
            continue
        offered.append(mechanism)
        known.add(mechanism)
    if cleartext_login:
        fields["cleartext_login"] = True
    fields.setdefault("cleartext_login", cleartext_login)
    fields["starttls_offered"] = fields.get("starttls_offered", False) or starttls
    fields.setdefault("mechanisms_after_tls", None)  # not visible on the wire once TLS starts
    fields["tls"] = tls
    exposed = sorted(m for m in offered if m in EXPOSING_MECHANISMS)
    fields["cleartext_exposed"] = exposed
    if any(m in PASSWORD_MECHANISMS for m in exposed):
        methods.raise_severity(Severity.MEDIUM)
    elif exposed:
        methods.raise_severity(Severity.LOW)


def _after_tls(methods: Finding, shared: Shared, after: list[str]) -> None:
    methods.fields["mechanisms_after_tls"] = after
    methods.fields["tls"] = True
