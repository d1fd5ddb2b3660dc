"""The TCP header's flags and options, as a receiver reads them: what leakscope's decoders put in a segment's flags
and last field (:data:`passive.capture.linklayer.Segment`), and its compiled twin ``tcp_options`` in ``_scan.c``."""

from __future__ import annotations

# TCP flags
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

# Bits of Segment.syn_options (0 on segments without SYN)
OPT_WSCALE = 0x100  # the window scale option is present; its shift (capped at 14, RFC 7323) is in the low 4 bits
OPT_SACK_OK = 0x200  # SACK permitted
OPT_SHIFT_MASK = 0x0F
MAX_WSCALE = 14  # RFC 7323 2.3: a larger shift is taken as 14
# Bits of Segment.syn_options on any segment (passive.capture.tcpoptions): what a receiver judges a segment by
OPT_TIMESTAMP = 0x400  # a Timestamps option (RFC 7323); its TSval above OPT_TSVAL_SHIFT
OPT_SIGNED = 0x800  # a TCP MD5 signature option (RFC 2385)
OPT_BAD_SIGNATURE = 0x1000  # an option list a receiver refuses while looking for a signature (see _signature)
MD5_OPTION = 18  # an MD5 signature option's length; Linux looks for one only while this many option bytes remain
OPT_ALIGNED_TS = 0x2000  # the options are NOP, NOP, Timestamps and nothing else (Linux's header prediction)
OPT_URGENT_SHIFT = 16  # with the URG flag: the urgent pointer (16 bits)
OPT_TSVAL_SHIFT = 32
_BELOW_TSVAL = (1 << OPT_TSVAL_SHIFT) - 1


def tcp_options(data: bytes, pos: int, end: int, flags: int) -> int:
    """OPT_* bits of the TCP options in ``data[pos:end]``: a SYN's window scale and SACK permitted, any segment's
    timestamp (of two window scales or timestamps the last one, as Linux's ``tcp_parse_options`` keeps it; a damaged
    list ends the walk, keeping what was read before it) and signature (:func:`_signature`), and the urgent pointer
    of a segment with the URG flag (``data[pos - 2 : pos]``)."""
    found = (data[pos - 2] << 8 | data[pos - 1]) << OPT_URGENT_SHIFT if flags & URG else 0
    syn = flags & SYN
    signature = _signature(data, pos, end) if end - pos >= MD5_OPTION else 0
    if end - pos == 12 and data[pos : pos + 4] == b"\x01\x01\x08\x0a":
        signature |= OPT_ALIGNED_TS
    while pos < end:
        kind = data[pos]
        if kind == 0:  # end of option list
            break
        if kind == 1:  # no-operation
            pos += 1
            continue
        if pos + 1 >= end:
            break
        length = data[pos + 1]
        if length < 2 or pos + length > end:
            break
        if kind == 8 and length == 10:
            tsval = int.from_bytes(data[pos + 2 : pos + 6], "big")
            found = (found & _BELOW_TSVAL) | OPT_TIMESTAMP | tsval << OPT_TSVAL_SHIFT
        elif kind == 3 and length == 3 and syn:
            found = (found & ~OPT_SHIFT_MASK) | OPT_WSCALE | min(data[pos + 2], MAX_WSCALE)  # the last one counts
        elif kind == 4 and length == 2 and syn:
            found |= OPT_SACK_OK
        pos += length
    return found | signature


def _signature(data: bytes, pos: int, end: int) -> int:
    """OPT_SIGNED for an MD5 signature option, OPT_BAD_SIGNATURE for a list a receiver refuses, as Linux's
    ``tcp_do_parse_auth_options`` walks it: only while :data:`MD5_OPTION` bytes remain, where an option shorter than
    2 bytes or running past the list, an MD5 option not 18 bytes long, or a second one, make the segment dropped."""
    found = 0
    while end - pos >= MD5_OPTION:
        kind = data[pos]
        if kind == 0:
            return found
        if kind == 1:
            pos += 1
            continue
        size = data[pos + 1]
        if size < 2 or size > end - pos or (kind == 19 and (size != MD5_OPTION or found)):
            return OPT_BAD_SIGNATURE
        if kind == 19:
            found = OPT_SIGNED
        pos += size
    return found
