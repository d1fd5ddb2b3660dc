"""A network namespace holding a veth pair, for the live benchmarks (bench/live.py, bench/soak.py): captures are
replayed with tcpreplay on one end while ``leakscope watch`` listens on the other."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def delete_namespace(namespace: str) -> None:
    """Kill what runs in the namespace and delete it (and its veth pair with it), if it exists."""
    if namespace in _run(["ip", "netns", "list"], check=False).stdout.split():
        for pid in _run(["ip", "netns", "pids", namespace], check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        _run(["ip", "netns", "delete", namespace], check=False)


def create_namespace(namespace: str, replay_if: str, watch_if: str, mtu: int | None = None) -> None:
    """A fresh namespace with the veth pair ``replay_if`` - ``watch_if`` up, IPv6 off (no router solicitations in
    the figures); ``mtu`` for frames longer than Ethernet's."""
    delete_namespace(namespace)
    _run(["ip", "netns", "add", namespace])
    _run(["ip", "-n", namespace, "link", "add", replay_if, "type", "veth", "peer", "name", watch_if])
    for interface in (replay_if, watch_if):
        _run(["ip", "netns", "exec", namespace, "sysctl", "-qw", f"net.ipv6.conf.{interface}.disable_ipv6=1"])
        mtu_args = ["mtu", str(mtu)] if mtu is not None else []
        _run(["ip", "-n", namespace, "link", "set", interface, *mtu_args, "up"])
