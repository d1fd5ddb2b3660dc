"""Looking at every port never finds less: with --all-ports, every finding of the default (mail ports) mode is still
found, on every corpus capture and every capture the project ships."""

from __future__ import annotations

from pathlib import Path

import pytest

from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from tests.corpus import CORPUS, require_corpus

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = sorted((CORPUS / "pcaps").glob("*/*.pcap*")) + sorted((ROOT / "pcaps").glob("*.pcap"))


def _found(path: Path, all_ports: bool) -> set[tuple[str, str, tuple]]:
    results = analyze_captures([str(path)], AnalysisOptions(all_ports=all_ports))
    return {(str(f.type), f.server, f.key) for f in results.findings}


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_all_ports_finds_everything_the_default_mode_finds(path: Path) -> None:
    require_corpus("pcaps")
    default = _found(path, all_ports=False)
    everywhere = _found(path, all_ports=True)
    assert default <= everywhere, sorted(default - everywhere)
