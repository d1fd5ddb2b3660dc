"""Read an XML document (an nmap or Nessus export) as a stream of elements through defusedxml (no entity
expansion, no external reference; no DTD when asked), holding no tree.

Built whole, the tree costs about 23 times the document: a 40 MB Nessus file of empty elements took 918 MB, and the
readers accept 64 MiB (nmap) and 512 MiB (Nessus). Here the parser calls a handler as each element the reader
names starts and ends, with its attributes and its text (cut at ``max_text``): the cost is the document's bytes,
the open elements (at most :data:`MAX_DEPTH`) and what the handler keeps.
"""

from __future__ import annotations

from typing import Protocol

from defusedxml.ElementTree import DefusedXMLParser

MAX_DEPTH = 64
"""Elements open at once: nmap and Nessus exports nest 6 deep. Each open element is held, and expat sets no limit of
its own: 20 million nested elements fit in 60 MB."""


class TooDeep(ValueError):
    """The document nests elements deeper than :data:`MAX_DEPTH`."""


class ElementHandler(Protocol):
    """What a reader does with the elements it named."""

    def start(self, tag: str, attributes: dict[str, str], parent: str | None) -> None:
        """An element starts (``parent``: the tag of the element around it, None for the root)."""

    def end(self, tag: str, attributes: dict[str, str], text: str, parent: str | None) -> None:
        """It ends; ``text`` is what it holds before its first child, as ``Element.text`` reads."""


class _Open:
    """One open element the reader named: its tag and attributes, and its text while it is gathered (up to its first
    child, and to the text limit)."""

    __slots__ = ("attributes", "gathering", "size", "tag", "text")

    def __init__(self, tag: str, attributes: dict[str, str]) -> None:
        self.tag, self.attributes = tag, attributes
        self.text: list[str] = []
        self.gathering, self.size = True, 0


class _Target:
    """The parser's target: follows the open elements (an :class:`_Open` for a named one, its tag for another) and
    calls the handler for those named in ``tags``."""

    def __init__(self, handler: ElementHandler, tags: frozenset[str], max_text: int) -> None:
        self.handler, self.tags, self.max_text = handler, tags, max_text
        self.open: list[_Open | str] = []

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        stack = self.open
        if len(stack) >= MAX_DEPTH:
            raise TooDeep(f"elements nested deeper than {MAX_DEPTH}")
        parent = stack[-1] if stack else None
        if isinstance(parent, _Open):
            parent.gathering = False  # its text is what came before its first child
        if tag not in self.tags and parent is not None:
            stack.append(tag)
            return
        self.handler.start(tag, attributes, _tag(parent))
        stack.append(_Open(tag, attributes))

    def data(self, text: str) -> None:
        element = self.open[-1] if self.open else None
        if isinstance(element, _Open) and element.gathering:
            element.text.append(text[: self.max_text - element.size])
            element.size += len(text)
            element.gathering = element.size < self.max_text

    def end(self, tag: str) -> None:
        element = self.open.pop()
        if isinstance(element, _Open):
            self.handler.end(tag, element.attributes, "".join(element.text), _tag(self.open[-1] if self.open else None))

    def close(self) -> None:
        return None


def _tag(element: _Open | str | None) -> str | None:
    return element.tag if isinstance(element, _Open) else element


def read_elements(
    data: bytes, handler: ElementHandler, tags: frozenset[str], *, max_text: int, forbid_dtd: bool
) -> None:
    """Parse ``data``, calling ``handler`` for the root and each element named in ``tags``, in document order (the
    others pass unseen). Raises :class:`TooDeep`, the handler's errors, and defusedxml's and ElementTree's."""
    parser = DefusedXMLParser(target=_Target(handler, tags, max_text), forbid_dtd=forbid_dtd)
    parser.feed(data)
    parser.close()
