"""What a dissector keeps between lines, bounded by count and by bytes, and measured so that the caller can bound
all sessions together (``MailSession.buffered_bytes``).

Sizes are the memory the kept objects take (``sys.getsizeof``, constant time): a line of 64 KiB of ASCII takes
64 KiB and 49 bytes, the same line with one character beyond U+FFFF four times that.
"""

from __future__ import annotations

import sys


def size_of(value: str | bytes | None) -> int:
    """Bytes of memory a kept string takes (0 for None)."""
    return 0 if value is None else sys.getsizeof(value)


def sizes_of(*values: str | bytes) -> int:
    """Bytes of memory kept strings take together."""
    return sum(map(sys.getsizeof, values))


class HeldParts:
    """Lines (and literal values) kept in order, at most ``max_items`` of them and ``max_bytes`` in all; what does
    not fit is not kept, only counted in ``refused``."""

    __slots__ = ("bytes", "items", "max_bytes", "max_items", "refused")

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.items: list[str | bytes] = []
        self.bytes = 0
        self.refused = 0
        self.max_items = max_items
        self.max_bytes = max_bytes

    def add(self, value: str | bytes) -> bool:
        """Keep ``value`` if it fits; False (and one more refused) when it does not."""
        size = size_of(value)
        if len(self.items) >= self.max_items or self.bytes + size > self.max_bytes:
            self.refused += 1
            return False
        self.items.append(value)
        self.bytes += size
        return True

    def texts(self) -> list[str]:
        return [item for item in self.items if isinstance(item, str)]

    def __len__(self) -> int:
        return len(self.items)
