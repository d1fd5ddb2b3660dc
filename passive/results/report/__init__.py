"""Stakeholder reports: the findings as one self-contained HTML page or as Markdown."""

from passive.results.report.build import build_report
from passive.results.report.model import Report
from passive.results.report.render import render_html, render_markdown

__all__ = ["Report", "build_report", "render_html", "render_markdown"]
