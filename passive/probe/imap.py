"""The IMAP conversation of a probe: CAPABILITY, STARTTLS, AUTHENTICATE NTLM."""

from __future__ import annotations

from passive.core.errors import ProbeError
from passive.probe.conversation import Conversation
from passive.probe.options import MAX_REPLY_LINES


class ImapConversation(Conversation):

    def _tag(self) -> str:
        self.tag_number += 1
        return f"ls{self.tag_number}"

    async def _imap_until(self, tag: str, continuation: bool = False) -> str:
        """Lines up to the tagged completion of ``tag`` (or a ``+`` continuation when one is expected)."""
        assert self.conn is not None
        for _ in range(MAX_REPLY_LINES):
            line = await self.conn.line()
            if continuation and (line == "+" or line.startswith("+ ")):
                return line
            if line.startswith(tag + " "):
                return line
            if not line.startswith(("*", "+")):
                raise ProbeError(f"not an IMAP response: {line[:80]!r}", self.conn.stage)
        raise ProbeError(f"more than {MAX_REPLY_LINES} lines without the tagged answer", self.conn.stage)

    async def _imap_command(self, command: str, continuation: bool = False) -> str:
        assert self.conn is not None
        tag = self._tag()
        await self.conn.send_line(f"{tag} {command}")
        return await self._imap_until(tag, continuation)

    @staticmethod
    def _imap_ok(line: str) -> bool:
        parts = line.split(None, 2)
        return len(parts) > 1 and parts[1].upper() == "OK"

    async def _imap(self) -> None:
        conn, wire = self.conn, self.wire
        assert conn is not None and wire is not None
        greeting = await conn.line()
        if not greeting.startswith(("* OK", "* PREAUTH", "* BYE")):
            raise ProbeError(f"not an IMAP greeting: {greeting[:80]!r}", "greeting")
        self.report.banner = wire.greeting.banner if wire.greeting else greeting
        if greeting.startswith("* BYE"):
            raise ProbeError(f"the server refuses service: {greeting[:120]!r}", "greeting")
        conn.stage = "capabilities"
        await self._imap_command("CAPABILITY")
        offered = bool(wire.capabilities and wire.capabilities.starttls)
        if self._want_starttls(offered):
            conn.stage = "starttls"
            if self._imap_ok(await self._imap_command("STARTTLS")):
                await self._upgrade()
                conn.stage = "capabilities"
                await self._imap_command("CAPABILITY")
            else:
                self.report.starttls = "refused"
        if self.options.ntlm:
            await self._imap_ntlm()
        await self._quit("LOGOUT")

    async def _imap_ntlm(self) -> None:
        assert self.conn is not None
        self.conn.stage = "ntlm"
        self.report.ntlm_advertised = "NTLM" in self._mechanisms()
        self.report.ntlm = "unanswered"  # until an answer says more (probe.options.ProbeReport.ntlm)
        tag = self._tag()
        await self.conn.send_line(f"{tag} AUTHENTICATE NTLM")
        reply = await self._imap_until(tag, continuation=True)
        if not reply.startswith("+"):
            self.report.ntlm, self.report.ntlm_reply = "refused", reply[:200]
            return
        await self.conn.send_line(self._negotiate_b64())
        reply = await self._imap_until(tag, continuation=True)
        if reply.startswith("+"):
            await self.conn.send_line("*")
            await self._imap_until(tag)
        self._ntlm_outcome(reply)
