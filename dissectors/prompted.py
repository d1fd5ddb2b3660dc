"""A command pipelined behind an AUTH the server then prompted: the server reads it as the exchange's response
(RFC 4954 section 4, RFC 5034 section 4: the client's next line answers a continuation), so the dissector does too."""

from __future__ import annotations

from typing import Any

from dissectors import events as ev
from dissectors.linebuffer import Line


def read_as_response(session: Any, begins_exchange: bool) -> None:
    """The command after the prompted AUTH in ``session``'s pending queue (its second) is the exchange's response,
    with an anomaly, and awaits no reply of its own; ``begins_exchange``: that command was itself an AUTH, whose
    exchange then ends without a verdict."""
    pending = session.pending
    command = pending[1]
    del pending[1]
    session._pending_bytes -= command.held
    line, session._line = session._line, Line(command.line, command.frame, command.timestamp)
    detail = f"{command.verb} pipelined after an AUTH the server then prompted: the server reads it as the response"
    session._anomaly(ev.Side.CLIENT, "command_read_as_response", detail)
    session._sasl(ev.Side.CLIENT, session.auth.pipelined_response(command.line, begins_exchange))
    session._line = line
