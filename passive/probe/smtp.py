"""The SMTP conversation of a probe: EHLO (HELO fallback), STARTTLS, AUTH NTLM, and nmap's relay variants."""

from __future__ import annotations

import re
from typing import Any

from passive.core.errors import ProbeError
from passive.findings.kinds import FindingType
from passive.probe.conversation import Conversation
from passive.probe.options import MAX_REPLY_LINES

RELAY_FROM_LOCAL = "antispam"  # nmap smtp-open-relay's defaults
RELAY_TO_LOCAL = "relaytest"


def relay_variants(from_domain: str, to_domain: str, server_name: str, ip: str) -> list[tuple[str, str]]:
    """nmap smtp-open-relay's 16 MAIL FROM / RCPT TO combinations, the null sender first."""
    sender, rcpt = RELAY_FROM_LOCAL, RELAY_TO_LOCAL
    literal = f"[{ip}]"
    by_ip = f"{sender}@{literal}"
    return [
        ("", f"{rcpt}@{to_domain}"),
        (f"{sender}@{from_domain}", f"{rcpt}@{to_domain}"),
        (f"{sender}@{server_name}", f"{rcpt}@{to_domain}"),
        (by_ip, f"{rcpt}@{to_domain}"),
        (by_ip, f"{rcpt}%{to_domain}@{literal}"),
        (by_ip, f"{rcpt}%{to_domain}@{server_name}"),
        (by_ip, f'"{rcpt}@{to_domain}"'),
        (by_ip, f'"{rcpt}%{to_domain}"'),
        (by_ip, f"{rcpt}@{to_domain}@{literal}"),
        (by_ip, f'"{rcpt}@{to_domain}"@{literal}'),
        (by_ip, f"{rcpt}@{to_domain}@{server_name}"),
        (by_ip, f"@{literal}:{rcpt}@{to_domain}"),
        (by_ip, f"@{server_name}:{rcpt}@{to_domain}"),
        (by_ip, f"{to_domain}!{rcpt}"),
        (by_ip, f"{to_domain}!{rcpt}@{literal}"),
        (by_ip, f"{to_domain}!{rcpt}@{server_name}"),
    ]


_SERVER_NAME = re.compile(r"^\d{3}[ -]([A-Za-z0-9][A-Za-z0-9.-]*)")


class SmtpConversation(Conversation):
    async def _smtp_reply(self) -> tuple[int, list[str]]:
        conn = self.conn
        assert conn is not None
        lines: list[str] = []
        while True:
            line = await conn.line()
            if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
                raise ProbeError(f"not an SMTP reply: {line[:80]!r}", conn.stage)
            lines.append(line)
            if len(line) == 3 or line[3] == " ":
                return int(line[:3]), lines
            if len(lines) >= MAX_REPLY_LINES:
                raise ProbeError(f"an SMTP reply of more than {MAX_REPLY_LINES} lines", conn.stage)

    async def _smtp_command(self, line: str) -> tuple[int, list[str]]:
        assert self.conn is not None
        await self.conn.send_line(line)
        return await self._smtp_reply()

    async def _smtp_hello(self) -> None:
        assert self.conn is not None
        code, _ = await self._smtp_command(f"EHLO {self.options.ehlo_name}")
        if code != 250:
            code, lines = await self._smtp_command(f"HELO {self.options.ehlo_name}")
            if code != 250:
                raise ProbeError(f"EHLO and HELO refused: {lines[-1][:120]!r}", self.conn.stage)
        self.confirmed = True  # FTP, which also greets with 220, refuses both

    async def _smtp(self) -> None:
        conn, wire = self.conn, self.wire
        assert conn is not None and wire is not None
        code, lines = await self._smtp_reply()
        self.report.banner = wire.greeting.banner if wire.greeting else lines[0][4:]
        if code != 220:
            await self._quit("QUIT")
            raise ProbeError(f"the server refuses service: {lines[0][:120]!r}", "greeting")
        conn.stage = "capabilities"
        await self._smtp_hello()
        offered = bool(wire.capabilities and wire.capabilities.starttls)
        if self._want_starttls(offered):
            conn.stage = "starttls"
            code, _ = await self._smtp_command("STARTTLS")
            if code == 220:
                await self._upgrade()
                conn.stage = "capabilities"
                await self._smtp_hello()
            else:
                self.report.starttls = "refused"
        if self.options.ntlm:
            await self._smtp_ntlm()
        if self.options.relay_test and await self._relay_test():
            return  # inside a message the server took DATA for: closing without its end sends nothing
        await self._quit("QUIT")

    async def _smtp_ntlm(self) -> None:
        assert self.conn is not None
        self.conn.stage = "ntlm"
        self.report.ntlm_advertised = "NTLM" in self._mechanisms()
        self.report.ntlm = "unanswered"  # until an answer says more (probe.options.ProbeReport.ntlm)
        code, lines = await self._smtp_command("AUTH NTLM")
        if code != 334:
            self.report.ntlm, self.report.ntlm_reply = "refused", lines[-1][:200]
            return
        code, lines = await self._smtp_command(self._negotiate_b64())
        if code == 334:
            await self._smtp_command("*")  # cancel: a probe never authenticates
        self._ntlm_outcome(lines[-1])

    async def _relay_test(self) -> bool:
        """nmap's relay variants, each accepted one followed by DATA: a server that checks relaying there refuses
        it (5xx), which is no relaying. One that answers 354 would take a message: the test stops there, before any
        (the connection is closed without the end of the data, so nothing is sent). True when it stopped so."""
        conn, wire = self.conn, self.wire
        assert conn is not None and wire is not None
        conn.stage = "relay"
        banner_name = _SERVER_NAME.match(f"220 {self.report.banner or ''}")
        caps = wire.capabilities
        server_name = (
            banner_name.group(1)
            if banner_name
            else (caps.server_name if caps and caps.server_name else self.report.server.rsplit(":", 1)[0])
        )
        ip = self.report.server.rsplit(":", 1)[0].strip("[]")
        tried: list[dict[str, Any]] = []
        stopped: str | None = None
        in_message = False
        for number, (mail_from, rcpt_to) in enumerate(
            relay_variants(self.options.relay_from, self.options.relay_to, server_name, ip), 1
        ):
            code, lines = await self._smtp_command("RSET")
            if code == 530 or code >= 400:
                stopped = lines[-1][:200]
                break
            variant, stopped = await self._relay_variant(number, mail_from, rcpt_to)
            tried.append(variant)
            if stopped is not None:
                in_message = variant.get("data_reply", "").startswith("354")
                break
        if not in_message:
            await self._smtp_command("RSET")
        accepted = [v for v in tried if v["accepted"]]
        self.report.relay_variants_tried, self.report.relay_variants_accepted = len(tried), len(accepted)
        self.analyzer.service.relay_test(  # type: ignore[union-attr]
            {
                "variants_tried": len(tried),
                "variants_accepted": len(accepted),
                "stopped": stopped,
                "from_domain": self.options.relay_from,
                "to_domain": self.options.relay_to,
                "variants": tried,
            }
        )
        return in_message

    async def _relay_variant(self, number: int, mail_from: str, rcpt_to: str) -> tuple[dict[str, Any], str | None]:
        """One variant: MAIL FROM, RCPT TO if the sender was taken, DATA if the recipient was. The variant, and why
        the test stops after it (a 530, or DATA taken: a 354), else None."""
        code, lines = await self._smtp_command(f"MAIL FROM:<{mail_from}>")
        variant: dict[str, Any] = {
            "variant": number,
            "mail_from": mail_from or "<>",
            "rcpt_to": rcpt_to,
            "mail_reply": lines[-1][:200],
            "rcpt_reply": None,
            "accepted": False,
        }
        if code == 530 or not 200 <= code < 300:
            return variant, lines[-1][:200] if code == 530 else None
        code, lines = await self._smtp_command(f"RCPT TO:<{rcpt_to}>")
        variant["rcpt_reply"] = lines[-1][:200]
        if code == 530 or not 200 <= code < 300:
            return variant, lines[-1][:200] if code == 530 else None
        try:
            code, lines = await self._smtp_command("DATA")
        except ProbeError:  # whether the server takes the message or refuses it for relaying is never seen
            self.analyzer.detectors[FindingType.OPEN_RELAY].unanswered()  # type: ignore[union-attr,attr-defined]
            raise
        variant["data_reply"] = lines[-1][:200]
        variant["accepted"] = code == 354  # refused at DATA (4xx, 5xx): not relayed
        return variant, f"DATA taken for variant {number} (354): no message is sent" if code == 354 else None
