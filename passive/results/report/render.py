"""Render a report model as one self-contained HTML page or as Markdown, with jinja2 templates shipped in the
package (``passive/results/report/templates``)."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import jinja2
import markupsafe

from passive.results.report.model import Report

_TEMPLATES = resources.files("passive.results.report") / "templates"
# What GFM turns into a link by itself: URLs, www. names and e-mail addresses. Such a run of text is written as a
# code span, where nothing is a link, emphasis or tag, and which reads as itself in a plain-text ticket.
_AUTOLINK = re.compile(
    r"(?:(?:https?|ftp)://|www\.)(?:[^\s<>`|]*[^\s<>`|.,:;!?)\"'])?"
    r"|[^\s<>`|\"'()\[\],;:]+@[^\s<>`|\"'()\[\],;:]+\.[^\s<>`|\"'()\[\],;:]+",
    re.IGNORECASE,
)
# Characters with a meaning wherever they stand: code spans, emphasis, links and images, table cells,
# strikethrough, GitHub's $math$.
_ALWAYS = frozenset("`*[]|~$")
# At the start of a value (which may start a line or a list item): headings, list items, thematic breaks.
_ORDERED = re.compile(r"\d{1,9}(?=[.)](?:\s|$))")
_BLOCK_START = re.compile(r"[#+=-](?=[\s#+=-]|$)")
_ENTITY = re.compile(r"&(?=#?[0-9A-Za-z]+;)")
_ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _load(name: str) -> str:
    """Templates are read from the package's data, so they travel with any installed copy of it."""
    return (_TEMPLATES / name).read_text(encoding="utf-8")


def _escaped(text: str) -> str:
    """Plain text with a backslash only where Markdown would read a character as syntax, and ``<``/``>`` (and
    ``&`` before what would be an entity) as entities, so no raw HTML can come out."""
    shown = []
    for index, char in enumerate(text):
        after = text[index + 1 : index + 2]
        before = text[index - 1 : index] if index else ""
        if char in _ALWAYS:
            shown.append("\\" + char)
        elif char == "\\" and (not after or after in _ASCII_PUNCTUATION):
            shown.append("\\\\")
        elif char == "_" and not (before.isalnum() and after.isalnum()):
            shown.append("\\_")  # an underscore inside a word is never emphasis
        elif char in "<>":
            shown.append("&lt;" if char == "<" else "&gt;")
        elif char == "&" and _ENTITY.match(text, index):
            shown.append("&amp;")
        else:
            shown.append(char)
    return "".join(shown)


def markdown_text(value: Any) -> str:
    """Text that Markdown (and HTML inside Markdown) shows literally: no emphasis, link, autolink, image, table
    cell break or tag can come out of it, with as few backslashes as that takes."""
    if value is None:
        return ""
    text = str(value)
    shown, position = [], 0
    for match in _AUTOLINK.finditer(text):
        shown.append(_escaped(text[position : match.start()]))
        shown.append(f"`{match.group(0)}`")
        position = match.end()
    shown.append(_escaped(text[position:]))
    result = "".join(shown)
    # A value may start a line or a list item: "# x" would be a heading, "- x" an item, "---" a rule, "1. x" a list.
    number = _ORDERED.match(result)
    if number:
        return result[: number.end()] + "\\" + result[number.end() :]
    return "\\" + result if _BLOCK_START.match(result) else result


def markdown_code(value: Any) -> str:
    """Text of the report's own (a setting, a command) as a code span: shown as typed, nothing in it is syntax.
    Table cells split at ``|`` even inside code spans, so a pipe is escaped (GFM shows it without the backslash)."""
    text = str(value).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def css_string(value: Any) -> markupsafe.Markup:
    """A CSS string literal for ``content:`` in the page's own style sheet: letters, digits and spaces as they are,
    every other character as a CSS escape, so nothing in it can end the string, the rule or the style element."""
    kept = (char if char.isascii() and (char.isalnum() or char == " ") else f"\\{ord(char):x} " for char in str(value))
    shown = "".join(kept)
    return markupsafe.Markup(f'"{shown}"')


def _environment(html: bool) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load),
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["md"] = markdown_text
    environment.filters["code"] = markdown_code
    environment.filters["css_string"] = css_string
    return environment


_HTML = _environment(html=True)
_MARKDOWN = _environment(html=False)


def render_html(report: Report) -> str:
    return _HTML.get_template("report.html.j2").render(report=report)


def render_markdown(report: Report) -> str:
    return _MARKDOWN.get_template("report.md.j2").render(report=report)
