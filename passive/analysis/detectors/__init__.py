"""Detectors: one per kind of finding, reading a session's events (see :mod:`.session` for the dispatch table)."""

from passive.analysis.detectors.base import Detector, SessionContext
from passive.analysis.detectors.ntlm import hashcat_line
from passive.analysis.detectors.session import SessionAnalyzer

__all__ = ["Detector", "SessionAnalyzer", "SessionContext", "hashcat_line"]
