"""What the mail analysis asks of the capture layer: the mail ports, and how to tell a mail flow elsewhere."""

from __future__ import annotations

from typing import Any

from dissectors.registry import MAIL_PORTS, NOT_MAIL, identify
from passive.capture.options import CaptureOptions


def default_mail_classifier(server: bytes, client: bytes) -> bool | None:
    """Mail or not by the first bytes of each side (:func:`dissectors.registry.identify`); None while undecided."""
    protocol = identify(server, client)
    return None if protocol is None else protocol != NOT_MAIL


def mail_capture_options(**settings: Any) -> CaptureOptions:
    """:class:`CaptureOptions` for mail: the mail ports, and the greeting classifier for ``all_ports``.

    ``settings`` are further :class:`CaptureOptions` fields (``all_ports``, ``bpf``, ``backend``...).
    """
    return CaptureOptions(ports=MAIL_PORTS, classifier=default_mail_classifier, **settings)
