"""Shared fixtures: the mail lab (real servers in network namespaces), started once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.lab import MailLab, missing_tools


@pytest.fixture(scope="session")
def mail_lab() -> Iterator[MailLab]:
    """The lab of tests/lab.py. Skips when not root (or, outside CI, when a server package is missing)."""
    if os.geteuid() != 0:
        pytest.skip("the mail lab needs root: network namespaces, Samba provisioning, tcpdump")
    missing = missing_tools()
    if missing:
        reason = f"the mail lab needs {' '.join(missing)} (tests/setup-and-run.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with MailLab() as lab:
        yield lab
