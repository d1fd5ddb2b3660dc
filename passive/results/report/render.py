"""Render a report model as one self-contained HTML page or as Markdown, with jinja2 templates shipped in the
package (``passive/report/templates``)."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import jinja2

from passive.results.report.model import Report

_TEMPLATES = resources.files("passive.results.report") / "templates"
# Characters with a meaning in CommonMark/GFM (and GitHub's $math$): each shows literally after a backslash. A colon
# before "//" and the dot of "www." are what GFM autolinks start from; a leading "-" or "." could start a list.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~$=@])|:(?=//)|(?<=www)\.|^[-.]", re.IGNORECASE)
_HTML_SPECIAL = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _load(name: str) -> str:
    """Templates are read from the package's data, so they travel with any installed copy of it."""
    return (_TEMPLATES / name).read_text(encoding="utf-8")


def markdown_text(value: Any) -> str:
    """Text that Markdown (and HTML inside Markdown) shows literally: no emphasis, link, autolink, table cell
    break or tag can come out of it."""
    if value is None:
        return ""
    escaped = _MARKDOWN_SPECIAL.sub(lambda match: "\\" + match.group(0), str(value))
    return "".join(_HTML_SPECIAL.get(char, char) for char in escaped)


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
    return environment


_HTML = _environment(html=True)
_MARKDOWN = _environment(html=False)


def render_html(report: Report) -> str:
    return _HTML.get_template("report.html.j2").render(report=report)


def render_markdown(report: Report) -> str:
    return _MARKDOWN.get_template("report.md.j2").render(report=report)
