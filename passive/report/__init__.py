"""Stakeholder reports: the findings as one self-contained HTML page or as Markdown."""

from passive.report.model import Report, build_report
from passive.report.render import render_html, render_markdown

__all__ = ["Report", "build_report", "render_html", "render_markdown"]
