"""Opening the interface a ``watch`` captures on: one libpcap handle, or capture processes in one fanout group; a
capture error as one line that says what to do (privileges, the interfaces there are)."""

from __future__ import annotations

import contextlib

from passive.analysis.classify import mail_capture_options
from passive.capture import LiveCapture
from passive.core.errors import CaptureError
from passive.live.fanout import FanoutCapture
from passive.live.options import WatchError, WatchOptions


def open_capture(options: WatchOptions) -> LiveCapture | FanoutCapture:
    """Open the interface with the mail filter (with ``jobs`` > 1: start the capture processes, each with its own
    handle in one fanout group), or raise :class:`WatchError` with a one-line reason."""
    capture_options = mail_capture_options(
        all_ports=options.all_ports,
        bpf=options.bpf,
        idle_timeout=options.idle_timeout,
        max_flows=options.max_flows,
        reassembly_policy=options.reassembly_policy,
        check_checksums=options.check_checksums,
    )

    def open_one(fanout: int | None = None) -> LiveCapture:
        return LiveCapture(
            options.interface,
            capture_options,
            snaplen=options.snaplen,
            promisc=options.promisc,
            buffer_size=options.buffer_size << 20,
            fanout=fanout,
        )

    try:
        if options.jobs > 1:
            file = f"live:{options.interface}"
            return FanoutCapture(options.jobs, open_one, options.analysis_options(), file, options.tick_interval)
        return open_one()
    except CaptureError as error:
        raise WatchError(explain_capture_error(options.interface, str(error))) from None


def explain_capture_error(interface: str, message: str) -> str:
    lowered = message.lower()
    if "permission" in lowered or "not permitted" in lowered:
        return f"cannot capture on {interface}: permission denied (run as root or with the CAP_NET_RAW capability)"
    if "no such device" in lowered or "doesn't exist" in lowered:
        names = available_interfaces()
        listed = ", ".join(names) if names else "none found"
        return f"no interface named {interface!r}; available: {listed}"
    return message


def available_interfaces() -> list[str]:
    try:
        import pcapy  # type: ignore[import-untyped]

        return [name for name in pcapy.findalldevs() if name]
    except Exception:  # no binding, or libpcap failed: fall back to the kernel's list
        from pathlib import Path

        with contextlib.suppress(OSError):
            return sorted(p.name for p in Path("/sys/class/net").iterdir())
        return []
