"""Where the shared corpus of public captures and NTLM vectors lives, and how tests ask for it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(os.environ.get("LEAKSCOPE_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))


def require_corpus(*parts: str) -> Path:
    """The corpus path (or a file in it); skips the test when absent, but fails under CI where it must be present."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        reason = f"shared corpus not found at {path} (expected ../shared/corpus beside the repository)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def public_capture(*parts: str) -> Path:
    """A public capture the shared corpus does not hold (SOURCES.md lists what it does), read from ``$LEAKSCOPE_CORPUS``
    where someone fetched it; skips the test when absent, under CI too: the crafted captures beside such a test check
    the same behaviour, and this one the real file where it is at hand."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"public capture not in the shared corpus: put it at {path} to run this test")
    return path


def vector_files() -> list[Path]:
    directory = CORPUS / "vectors"
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def iter_vector_messages(document: Any, trail: str = "") -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every NTLM message in a vectors document as (id, message, the entry that holds its expectations)."""
    entries = document.get("vectors") or document.get("tests") or document.get("messages") or []
    for index, entry in enumerate(entries):
        label = entry.get("id") or entry.get("test") or entry.get("name") or str(index)
        if "hex" in entry:
            yield f"{trail}{label}", entry, entry
        for number, message in enumerate(entry.get("messages") or []):
            yield f"{trail}{label}#{number}", message, entry


def load_vectors() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    cases = []
    for path in vector_files():
        document = json.loads(path.read_text())
        cases.extend(iter_vector_messages(document, f"{path.stem}:"))
    return cases
