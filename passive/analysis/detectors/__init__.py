"""Detectors: one per kind of finding, each in a module of its own, reading a session's events (see
:mod:`.session` for the dispatch table). A detector module added here is found without being listed anywhere."""

from __future__ import annotations

from passive.analysis.detectors.base import Detector, SessionContext
from passive.analysis.detectors.ntlm import hashcat_line
from passive.analysis.detectors.session import SessionAnalyzer, detector_classes

__all__ = ["Detector", "SessionAnalyzer", "SessionContext", "detector_classes", "hashcat_line"]
