"""Looking at every port never finds less: the default (every port, through the packet scanner) finds every finding
of --ports-only (the mail and HTTP ports), on every corpus capture and every capture the project ships; so do the
pure-Python scanner and several worker processes. (--all-ports is the default's old name.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from tests.corpus import CORPUS, require_corpus

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = sorted((CORPUS / "pcaps").glob("*/*.pcap*")) + sorted((ROOT / "pcaps").glob("*.pcap"))


def _found(path: Path, options: AnalysisOptions) -> set[tuple[str, str, tuple]]:
    results = analyze_captures([str(path)], options)
    return {(str(f.type), f.server, f.key) for f in results.findings}


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_all_ports_finds_everything_the_default_mode_finds(path: Path) -> None:
    require_corpus("pcaps")
    default = _found(path, AnalysisOptions(all_ports=False))
    everywhere = _found(path, AnalysisOptions(all_ports=True))
    assert default <= everywhere, sorted(default - everywhere)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_default_finds_everything_ports_only_finds(path: Path) -> None:
    require_corpus("pcaps")
    ports_only = _found(path, AnalysisOptions(all_ports=False))
    assert AnalysisOptions().all_ports
    for options in (AnalysisOptions(), AnalysisOptions(backend="python"), AnalysisOptions(jobs=2)):
        found = _found(path, options)
        assert ports_only <= found, (options, sorted(ports_only - found))
