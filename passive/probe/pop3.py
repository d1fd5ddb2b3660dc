"""The POP3 conversation of a probe: CAPA (AUTH fallback), STLS, AUTH NTLM."""

from __future__ import annotations

from passive.core.errors import ProbeError
from passive.probe.conversation import Conversation
from passive.probe.options import MAX_REPLY_LINES


class Pop3Conversation(Conversation):
    async def _pop3_line(self) -> str:
        assert self.conn is not None
        line = await self.conn.line()
        if not (line.startswith(("+OK", "-ERR", "+ ")) or line == "+"):
            raise ProbeError(f"not a POP3 reply: {line[:80]!r}", self.conn.stage)
        return line

    async def _pop3_list(self) -> None:
        """The lines of a multi-line answer up to the lone dot (the dissector reads them)."""
        assert self.conn is not None
        for _ in range(MAX_REPLY_LINES):
            if await self.conn.line() == ".":
                return
        raise ProbeError(f"a multi-line answer of more than {MAX_REPLY_LINES} lines", self.conn.stage)

    async def _pop3_capabilities(self) -> None:
        assert self.conn is not None
        self.conn.stage = "capabilities"
        await self.conn.send_line("CAPA")
        reply = await self._pop3_line()
        self.confirmed = True  # a POP3 reply to a POP3 command
        if reply.startswith("+OK"):
            await self._pop3_list()
            return
        await self.conn.send_line("AUTH")  # the mechanism list servers without CAPA may give
        if (await self._pop3_line()).startswith("+OK"):
            await self._pop3_list()

    async def _pop3(self) -> None:
        conn, wire = self.conn, self.wire
        assert conn is not None and wire is not None
        greeting = await self._pop3_line()
        self.report.banner = wire.greeting.banner if wire.greeting else greeting
        if not greeting.startswith("+OK"):
            raise ProbeError(f"the server refuses service: {greeting[:120]!r}", "greeting")
        await self._pop3_capabilities()
        offered = bool(wire.capabilities and wire.capabilities.starttls)
        if self._want_starttls(offered):
            conn.stage = "starttls"
            await conn.send_line("STLS")
            if (await self._pop3_line()).startswith("+OK"):
                await self._upgrade()
                await self._pop3_capabilities()
            else:
                self.report.starttls = "refused"
        if self.options.ntlm:
            await self._pop3_ntlm()
        await self._quit("QUIT")

    async def _pop3_ntlm(self) -> None:
        assert self.conn is not None
        self.conn.stage = "ntlm"
        self.report.ntlm_advertised = "NTLM" in self._mechanisms()
        self.report.ntlm = "unanswered"  # until an answer says more (probe.options.ProbeReport.ntlm)
        await self.conn.send_line("AUTH NTLM")
        reply = await self._pop3_line()
        if reply.startswith("-ERR"):
            self.report.ntlm, self.report.ntlm_reply = "refused", reply[:200]
            return
        await self.conn.send_line(self._negotiate_b64())  # after "+ " or [MS-POP3]'s "+OK"
        reply = await self._pop3_line()
        if reply.startswith("+ ") or reply == "+":
            await self.conn.send_line("*")
            await self._pop3_line()
        self._ntlm_outcome(reply)
