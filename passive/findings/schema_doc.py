"""The finding-kind part of ``docs/schema.md``, written from the kind declarations.

``python -m passive.findings.schema_doc docs/schema.md`` rewrites what lies between the markers; ``--check`` exits 1
when the file is not what the declarations say (the tests run it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from passive.findings.kinds import COMMON_FIELDS, KINDS, Field, Kind

BEGIN = "<!-- kinds: written by python -m passive.findings.schema_doc; do not edit by hand -->"
END = "<!-- kinds: end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(fields: tuple[Field, ...]) -> list[str]:
    lines = ["| field | meaning |", "| --- | --- |"]
    lines += [
        f"| `{f.name}` | {'list: ' if f.many else ''}{_cell(f.doc)}{' (probe only)' if f.active else ''} |"
        for f in fields
    ]
    return lines


def _kind(kind: Kind) -> list[str]:
    lines = [f"### `{kind.type}`: {kind.title}", "", kind.description, ""]
    lines += [f"One finding {kind.key_doc}." + (f" `details[]`: {kind.details_doc}." if kind.details_doc else ""), ""]
    fields = "".join(f", `{name}`" for name in kind.identity)
    lines += [f"Fingerprint (`id`) from: the kind, `server`{fields}.", ""]
    lines += _table(kind.fields)
    lines += ["", "Severity:", ""]
    lines += [f"- `{severity}`: {rule}" for severity, rule in kind.severity_rules]
    references = "; ".join(f"{value} ({protocol})" if protocol != "*" else value for protocol, value in
                           kind.references.items())  # fmt: skip
    lines += ["", f"Equivalent checks: {references}." if references else "", ""]
    return lines


def render() -> str:
    lines = [BEGIN, "", "## Fields every finding has", ""]
    lines += _table(COMMON_FIELDS)
    lines += ["", "## Finding kinds", ""]
    for kind in KINDS.values():
        lines += _kind(kind)
    lines.append(END)
    return "\n".join(line for line in lines) + "\n"


def splice(document: str) -> str:
    """``document`` with the part between the markers replaced by :func:`render`."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError("the markers of the generated part are missing")
    return document[:start] + render() + document[end + len(END) + 1 :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is not up to date")
    arguments = parser.parse_args(argv)
    current = arguments.path.read_text(encoding="utf-8")
    wanted = splice(current)
    if arguments.check:
        if wanted != current:
            print(f"{arguments.path} is out of date: run python -m passive.findings.schema_doc {arguments.path}")
            return 1
        return 0
    arguments.path.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
