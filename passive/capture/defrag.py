"""IP packets fragmented on their way, put back together: a bounded reassembly of the outermost IP packet.

A TCP segment larger than a link's MTU on its path is cut into IPv4 or IPv6 fragments; so is the outer packet of a
tunnel endpoint whose path MTU is smaller than what it encapsulates (GRE, VXLAN, Geneve, IP in IP, MPLS in IP:
:data:`JOINED_PROTOCOLS`). The segment, and the mail in it, only exists once the pieces are joined: the receiver
reads it whole. A reader that leaves them unread misses bytes the receiver took, and a sender who fragments the real
bytes and sends a decoy whole (with a wrong checksum, say: :mod:`passive.capture.doubtful`) has the decoy read in
their place. :class:`Defragmenter` joins them as a receiver does, within fixed bounds, and hands the whole frame back
to be decoded like any other (the link header and the outer IP header of the first piece, lengths set, fragment
fields cleared). What it cannot join stays counted as fragments, and so does a piece of an IPv4 packet inside a
tunnel (only the outermost packet is joined).

Rules (the Linux receiver's since 5.1, RFC 5722 and its erratum 3089 for IPv6):

- only the outermost IP header, right after the link header (and its VLAN tags); for IPv6, a Fragment header
  after any Hop-by-Hop, Routing and Destination Options headers the receiver takes (:mod:`passive.capture.ipoptions`;
  they stay in the joined packet), whose next header is TCP, a tunnel or one of :data:`FRAGMENTED` (the
  joined packet is judged as any other), and not an atomic fragment (RFC 6946: a whole packet). Pieces are keyed
  by addresses, identification, protocol and, for IPv4, whether the piece's header checksum is right, zero or
  wrong (a receiver drops a piece whose checksum is wrong: it must not stand in for the right piece, nor spoil its
  datagram);
- a piece overlapping another of its datagram drops the whole datagram and every piece of it held (an evasion
  would otherwise choose which bytes count), unless it lies within a run of adjacent pieces held (a duplicate,
  ignored: Linux's ``inet_frag_queue_insert``); an exact duplicate is no fragment left unread, and neither is a copy
  of a piece of a datagram joined already (kept until it times out or makes room);
- an IPv4 piece that is not the last and whose length is not a multiple of 8 is cut to one (an IPv6 one is
  ignored); an empty piece drops its datagram; an IPv4 piece that would end past 65 535 bytes is taken, and its
  datagram is never whole (an IPv6 one is ignored); so is an IPv6 first piece without its TCP or UDP header whole;
  a datagram whose last pieces disagree on its length is dropped;
- at most :data:`MAX_DATAGRAMS` datagrams are held, each of at most :data:`MAX_PIECES` pieces (a further datagram
  drops the oldest; a further piece its datagram); a datagram not whole :data:`FRAGMENT_TIMEOUT` seconds (IPv6:
  :data:`FRAGMENT_TIMEOUT_V6`) of capture time after its first piece is dropped. Linux bounds its datagrams by
  memory (4 MiB), not by count: more begun at once lets one go unjoined here that the receiver joins. Linux also
  resets an IPv4 datagram once 64 pieces of its sender's other datagrams came between two of its pieces
  (``ipfrag_max_dist``); that is not followed.

The compiled scanner (``_scan.c``) holds the same rules; tests compare the two.
"""

from __future__ import annotations

from passive.capture.ipoptions import (
    AH,
    DESTINATION,
    FRAGMENT,
    FRAGMENTED,
    HOP_BY_HOP,
    MAX_EXTENSION_HEADERS,
    ROUTING,
    ipv6_header_refused,
)
from passive.capture.linklayer import ETHERTYPE_IPV4, ETHERTYPE_IPV6, TUNNEL_PROTOCOLS, link_header

JOINED_PROTOCOLS = TUNNEL_PROTOCOLS | {6}
"""The packets whose pieces are joined: TCP segments, and tunnels' packets (whose mail is inside)."""
MAX_DATAGRAMS = 64
"""Datagrams being reassembled at once (64 KiB at most each: 4 MiB). A tunnel endpoint fragments only what exceeds
its MTU, and its pieces follow each other: a handful are open at a time on a busy link."""
MAX_PIECES = 64
"""Pieces held per datagram: a 64 KiB datagram cut at IPv6's minimum MTU (1 280 bytes) is 52 pieces."""
FRAGMENT_TIMEOUT = 30.0
"""Seconds of capture time an IPv4 datagram may take to be whole: Linux's ``ipfrag_time``."""
FRAGMENT_TIMEOUT_V6 = 60.0
"""The same for IPv6: Linux's ``ip6frag_time`` (RFC 8200 section 4.5)."""
_TIMEOUTS = {4: FRAGMENT_TIMEOUT, 6: FRAGMENT_TIMEOUT_V6}
_FIRST_HEADER = {6: 20, 17: 8, 58: 8}  # an IPv6 first piece holds its TCP, UDP or ICMPv6 header, any other a byte
RIGHT, LEFT, WRONG = 0, 1, 2
"""A piece's IPv4 header checksum: right, zero and wrong (left to a card: passive.capture.checksums), or wrong. A
receiver drops a piece whose header checksum is wrong. Pieces are joined only with pieces whose checksum has the same
verdict (part of the datagram's key), so that one the receiver drops never stands in for, or spoils, the right one
it keeps; a joined packet's header says the verdict, for its segment to be judged as one with a wrong checksum is
(passive.capture.doubtful; read as any with ``--ignore-checksums``)."""
MAX_DATAGRAM = 65535  # an IP datagram's payload ends by then (the 16-bit length and offset fields)
_UNFRAGMENTABLE = frozenset({HOP_BY_HOP, ROUTING, DESTINATION})
_CHAINED = frozenset({HOP_BY_HOP, ROUTING, DESTINATION, FRAGMENT, AH, 59})  # ipv6_ext_hdr: walked to the upper layer

_MAX_LINK_HEADER = 64  # a link header and its tags are shorter; a longer one is not a frame to rebuild

# A datagram being reassembled: [first piece's time, header of the piece at offset 0 (or None; see _piece),
# pieces [(offset, bytes)], payload length (known from the last piece, else -1), bytes held, joined already,
# runs of adjacent pieces [[start, end]] (_place), a piece ending past 65 535 bytes taken (never whole)]
Datagram = list


class Defragmenter:
    """Joins the pieces of fragmented IP packets (see the module docstring)."""

    def __init__(self) -> None:
        self._datagrams: dict[tuple[int, bytes, bytes, int, int], Datagram] = {}
        # The pieces before the last of the datagram :meth:`add` last completed: readers counted each as a fragment
        # when it came, and take them back once it is joined (only pieces never joined are left counted).
        self.joined = 0
        # Whether the piece :meth:`add` last took was a copy of one it holds, or held: a port mirrored twice, a SPAN
        # of both directions, hands every frame over twice; a copy is no fragment left unread.
        self.copy = False
        # Whether the piece :meth:`add` last looked at was a TCP packet's (a fragment of a segment, counted as one
        # whatever the mode when it is left unjoined).
        self.tcp = False

    def add(self, linktype: int, data: bytes, ts: float) -> bytes | None:
        """One fragment: the whole frame when it completes its datagram, else None."""
        self.copy = self.tcp = False
        piece = _piece(linktype, data)
        if piece is None:
            return None
        key, offset, more, header, payload = piece
        self.tcp = key[4] == 6
        shaped = _shaped(key, offset, more, payload)
        if shaped is None:
            return None
        payload = shaped
        size = len(payload)
        end = offset + size
        datagrams = self._datagrams
        for stale in [k for k, d in datagrams.items() if d[0] + _TIMEOUTS[k[0]] < ts]:
            del datagrams[stale]
        datagram = self._open(key, offset, payload)
        if self.copy:
            return None
        if not size:  # an empty piece ends its datagram (Linux)
            datagrams.pop(key, None)
            return None
        if datagram is None:
            if len(datagrams) >= MAX_DATAGRAMS:  # the oldest joined one makes room, else the oldest
                del datagrams[next((k for k, d in datagrams.items() if d[5]), next(iter(datagrams)))]
            datagram = datagrams[key] = [ts, None, [], -1, 0, False, [], False]
        total = datagram[3]
        if (not more and total >= 0 and total != end) or (total >= 0 and end > total):
            del datagrams[key]
            return None
        if not more and any(start + len(held) > end for start, held in datagram[2]):
            del datagrams[key]
            return None
        placed = _place(datagram[6], offset, end)
        if placed is not True:
            if placed is None:
                del datagrams[key]  # overlap: the whole datagram goes
            else:  # within what it holds: ignored, and no fragment left unread when it is an exact copy
                self.copy = any(start == offset and len(held) == size for start, held in datagram[2])
            return None
        if len(datagram[2]) >= MAX_PIECES:
            del datagrams[key]
            return None
        datagram[2].append((offset, payload))
        datagram[4] += size
        datagram[7] = datagram[7] or end > MAX_DATAGRAM
        if not more:
            datagram[3] = end
        if offset == 0:
            datagram[1] = header
        if datagram[1] is None or datagram[3] < 0 or datagram[4] != datagram[3]:
            return None
        if datagram[7]:  # longer than an IP packet can be: never whole (Linux's ip_frag_reasm drops it)
            del datagrams[key]
            return None
        datagram[5] = True  # kept until it times out or makes room, to know copies of its pieces
        self.joined = len(datagram[2]) - 1
        return _rebuild(datagram[1], key[0], key[4], datagram[2], datagram[3], key[5])

    def _open(self, key: tuple, offset: int, payload: bytes) -> Datagram | None:
        """The datagram being joined under ``key``, if any. One joined already keeps the key while it lasts, to know
        copies of its pieces (``copy`` set); any other piece under it begins a new datagram."""
        datagram = self._datagrams.get(key)
        if datagram is None or not datagram[5]:
            return datagram
        if (offset, payload) in datagram[2]:
            self.copy = True
            return datagram
        del self._datagrams[key]
        return None


def _shaped(key: tuple, offset: int, more: bool, payload: bytes) -> bytes | None:
    """A piece's payload as the receiver takes it: an IPv4 one that is not the last cut to a multiple of 8 (one
    ending past 65 535 bytes is taken too: its datagram is never whole); None for an IPv6 one it ignores, not the
    last and not a multiple of 8, ending past 65 535 bytes, or a first piece without its upper-layer header whole
    (RFC 8200 section 4.5; Linux's ``ipv6frag_thdr_truncated``)."""
    size = len(payload)
    if key[0] == 6:
        truncated = offset == 0 and _truncated(key[4], payload)
        return None if (more and size % 8) or offset + size > MAX_DATAGRAM or truncated else payload
    return payload[: size & ~7] if more and size % 8 else payload


def _truncated(kind: int, payload: bytes) -> bool:
    """Whether an IPv6 first piece (its fragmentable part ``payload``, ``kind`` the header it begins with) ends before
    its upper-layer header does: the extension headers in it walked as Linux's ``ipv6_skip_exthdr`` walks them (a
    walk that cannot finish, or reaches a later piece's Fragment header, tells nothing: the piece is taken)."""
    at, size = 0, len(payload)
    for _ in range(MAX_EXTENSION_HEADERS):
        if kind not in _CHAINED:
            return at + _FIRST_HEADER.get(kind, 1) > size
        if kind == 59 or at + 8 > size:
            return False  # no next header, or one cut short: ipv6_skip_exthdr fails
        if kind == FRAGMENT:
            if payload[at + 2] << 8 | payload[at + 3] & 0xF8:
                return False  # a later piece's: the walk stops there
            step = 8
        else:
            step = (payload[at + 1] + 2) * 4 if kind == 51 else (payload[at + 1] + 1) * 8
        kind, at = payload[at], at + step
    return False


def _place(runs: list[list[int]], offset: int, end: int) -> bool | None:
    """Where a piece goes among the runs of adjacent pieces a datagram holds (Linux's ``inet_frag_queue_insert``):
    True when it is taken (``runs`` updated), False when it lies within one run (a duplicate, ignored), None when it
    overlaps (the datagram is dropped). A piece that ends past every other one overlaps when it starts before their
    end and extends the last run when it starts there; any other piece is a duplicate only inside one run."""
    tail = max((run[1] for run in runs), default=-1)
    if tail < end:
        if offset < tail:
            return None
        for run in runs:
            if run[1] == offset == tail:
                run[1] = end
                return True
        runs.append([offset, end])
        return True
    for run in runs:
        if end <= run[0] or offset >= run[1]:
            continue
        return False if run[0] <= offset and end <= run[1] else None
    runs.append([offset, end])
    return True


def is_piece(linktype: int, data: bytes) -> bool:
    """Whether ``data`` is a piece of a fragmented TCP or tunnel packet that :meth:`Defragmenter.add` would take
    up."""
    return _piece(linktype, data) is not None


def _piece(
    linktype: int, data: bytes
) -> tuple[tuple[int, bytes, bytes, int, int, int], int, bool, bytes, bytes] | None:
    """(key, offset, more pieces follow, header, payload) of a fragment of a TCP or tunnel packet, or None; the key
    ends with the IPv4 header checksum's verdict (RIGHT, LEFT, WRONG), the header is one byte giving where the IP
    header starts, then the link and IP headers."""
    link = link_header(linktype, data)
    if link.__class__ is int:
        return None
    ethertype, at = link  # type: ignore[misc]
    n = len(data)
    if at > _MAX_LINK_HEADER:
        return None
    if ethertype == ETHERTYPE_IPV4:
        if at + 20 > n or data[at] >> 4 != 4:
            return None
        ihl = (data[at] & 0x0F) * 4
        total = data[at + 2] << 8 | data[at + 3]
        frag = data[at + 6] << 8 | data[at + 7]
        proto = data[at + 9]
        if ihl < 20 or total < ihl or at + total > n or not frag & 0x3FFF or proto not in JOINED_PROTOCOLS:
            return None
        verdict = (
            RIGHT
            if int.from_bytes(data[at : at + ihl], "big") % 0xFFFF == 0
            else LEFT
            if not data[at + 10] | data[at + 11]
            else WRONG
        )
        key = (4, data[at + 12 : at + 16], data[at + 16 : at + 20], data[at + 4] << 8 | data[at + 5], proto, verdict)
        payload = data[at + ihl : at + total]
        return key, (frag & 0x1FFF) * 8, bool(frag & 0x2000), bytes([at]) + data[: at + ihl], payload
    if ethertype == ETHERTYPE_IPV6:
        if at + 40 > n or data[at] >> 4 != 6:
            return None
        end = at + 40 + (data[at + 4] << 8 | data[at + 5])
        found = _fragment_header(data, at, min(end, n))
        if found is None:
            return None
        pos = found[0]
        if pos + 8 > end or end > n or (data[pos] not in JOINED_PROTOCOLS and data[pos] not in FRAGMENTED):
            return None
        field = data[pos + 2] << 8 | data[pos + 3]
        if not field & 0xFFF9:  # an atomic fragment (RFC 6946): a whole packet, never joined with others
            return None
        ident = int.from_bytes(data[pos + 4 : pos + 8], "big")
        key = (6, data[at + 8 : at + 24], data[at + 24 : at + 40], ident, data[pos], RIGHT)
        return key, field & 0xFFF8, bool(field & 1), bytes([at]) + data[:pos], data[pos + 8 : end]
    return None


def _fragment_header(data: bytes, at: int, limit: int) -> tuple[int, int] | None:
    """Where the Fragment header of the IPv6 packet at ``at`` (its bytes up to ``limit``) starts, and where the
    byte naming it is (the IPv6 header's next header field, or the header before it); None when the headers before
    it are not Hop-by-Hop, Routing and Destination Options headers a receiver takes (passive.capture.ipoptions)."""
    kind, before, pos = data[at + 6], at + 6, at + 40
    for _ in range(MAX_EXTENSION_HEADERS):
        if kind == FRAGMENT:
            return pos, before
        if kind not in _UNFRAGMENTABLE or ipv6_header_refused(kind, data, at, limit, pos):
            return None
        kind, before, pos = data[pos], pos, pos + (data[pos + 1] + 1) * 8
    return None


def _rebuild(
    header: bytes, version: int, proto: int, pieces: list[tuple[int, bytes]], total: int, verdict: int
) -> bytes | None:
    """The frame: the first piece's link and IP headers, lengths set and fragment fields cleared, then the payload;
    None when it would be longer than an IP packet can be. An IPv4 header's checksum tells what the pieces' told
    (``verdict``, the same for all of them): right, zero or wrong."""
    frame = bytearray(header[1:])
    at = header[0]  # where the IP header starts
    if version == 4:
        length = len(frame) - at + total
        if length > MAX_DATAGRAM:
            return None
        frame[at + 2], frame[at + 3] = length >> 8, length & 0xFF
        frame[at + 6], frame[at + 7] = 0, 0
        frame[at + 10 : at + 12] = _header_checksum(frame[at : at + (frame[at] & 0x0F) * 4], verdict)
    else:
        fragment_at, before = _fragment_header(frame, at, len(frame)) or (len(frame), at + 6)
        length = fragment_at - at - 40 + total  # the headers before the Fragment header stay (RFC 8200 4.5)
        if length > MAX_DATAGRAM:
            return None
        frame[at + 4], frame[at + 5] = length >> 8, length & 0xFF
        frame[before] = proto
    payload = bytearray(total)
    for offset, held in pieces:
        payload[offset : offset + len(held)] = held
    return bytes(frame + payload)


def _header_checksum(header: bytearray, verdict: int) -> bytes:
    """The checksum field of IPv4 ``header`` (its field ignored) that is right, zero or wrong as ``verdict`` says."""
    header[10:12] = b"\x00\x00"
    right = 0xFFFF - int.from_bytes(header, "big") % 0xFFFF  # 0xFFFF and 0 are the same sum
    value = right if verdict == RIGHT else 0 if verdict == LEFT else 2 if right % 0xFFFF == 1 else 1
    return value.to_bytes(2, "big")
