"""``leakscope decode``: one NTLMSSP message, pasted as base64 or hex, as a tree or as the schema's JSON."""

from __future__ import annotations

import binascii
import json
import re
import sys
from typing import Any

import click
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from dissectors import ntlmssp
from dissectors.sasl import decode_base64
from passive.core.errors import InputError
from passive.core.text import printable
from passive.results.jsonio import dumps

# Standard input is read up to this much: an NTLMSSP message is a few hundred bytes, base64 a third more.
MAX_STDIN = 1024 * 1024

# Carrier prefixes a user may paste along with the blob: "334 ", "+ ", "AUTH NTLM ", "A1 AUTHENTICATE NTLM ".
_CARRIER_PREFIX = re.compile(r"^(?:334[ -]|\+\s|(?:\S+\s+)?AUTH(?:ENTICATE)?\s+NTLM\s+)", re.IGNORECASE)
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2}[\s:]*)+$")


def _blob_bytes(blob: str) -> bytes:
    text = _CARRIER_PREFIX.sub("", blob.strip()).strip()
    if not text:
        raise InputError("empty input: give a base64 or hex NTLMSSP message")
    if _HEX.match(text):
        try:
            data = binascii.unhexlify(re.sub(r"[\s:]", "", text))
        except binascii.Error:
            data = b""
        if data.startswith(ntlmssp.SIGNATURE):
            return data
    result = decode_base64(text)
    if result.data is None:
        raise InputError("input is neither base64 nor hex")
    return result.data


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="leakscope")
def main() -> None:
    """leakscope: what your mail servers give away on the wire."""


@click.command()
@click.argument("blob")
@click.option("--json", "as_json", is_flag=True, help="Print the decoded fields as JSON (the stable schema).")
def decode(blob: str, as_json: bool) -> None:
    """Decode one NTLMSSP message given as base64, hex, or - for standard input.

    SASL carrier prefixes such as "334 ", "+ " or "AUTH NTLM " are accepted and ignored. To try it, paste the
    challenge a Samba AD DC sent after "334 " in pcaps/smtp-ntlm-success-curl.pcap:

    \b
    leakscope decode 'TlRMTVNTUAACAAAACQAJADgAAAAGgokCc8Ct1sXt+vIAAAAAAAAAAHgAeABBAAAABgEAAAAAAA9MRUFLU0NPUEUCAB'\\
    'IATABFAEEASwBTAEMATwBQAEUAAQAGAEQAQwAxAAQAHABsAGUAYQBrAHMAYwBvAHAAZQAuAHQAZQBzAHQAAwAkAGQAYwAxAC4AbA'\\
    'BlAGEAawBzAGMAbwBwAGUALgB0AGUAcwB0AAcACAAK+CS+83ndAQAAAAA='
    """
    if blob == "-":
        blob = sys.stdin.read(MAX_STDIN)
    data = _blob_bytes(blob)
    try:
        message = ntlmssp.decode(data)
    except ntlmssp.DecodeError as error:
        raise InputError(str(error)) from None
    fields = message.to_dict()
    if as_json:
        click.echo(dumps(fields))  # control characters escaped, C1 and separators included
        return
    Console(highlight=False).print(_message_tree(fields))


_HEADLINE_FIELDS = {
    "negotiate": ["domain", "workstation", "client_os_version", "client_os_release"],
    "challenge": [name for name in ntlmssp.SERVER_FIELDS if name != "flags"] + ["server_challenge"],
    "authenticate": [
        "user",
        "domain",
        "workstation",
        "ntlm_version",
        "client_os_version",
        "client_os_release",
        "spn",
        "client_time",
        "client_challenge",
        "mic_present",
        "mic_flagged",
        "session_key_present",
        "channel_bindings_present",
        "av_flags",
    ],
}


def _message_tree(fields: dict[str, Any]) -> Tree:
    kind = fields["message_type"]
    tree = Tree(Text(f"NTLMSSP {kind.upper()}", style="bold"))
    for name in _HEADLINE_FIELDS.get(kind, []):
        value = fields.get(name)
        if value is None:
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        tree.add(Text.assemble((f"{name}: ", "cyan"), printable(value)))
    flags = tree.add(Text(f"flags: 0x{fields['flags_raw']:08x}", style="cyan"))
    for name in fields["flags"]:
        flags.add(Text(name))
    if fields.get("av_pairs"):
        pairs = tree.add(Text("av_pairs", style="cyan"))
        for pair in fields["av_pairs"]:
            value = pair["value"]
            if isinstance(value, list | dict):
                value = json.dumps(value, ensure_ascii=False)
            pairs.add(Text.assemble((f"{pair['name']}: ", "cyan"), printable(value)))
    if fields["anomalies"]:
        anomalies = tree.add(Text("anomalies", style="bold yellow"))
        for anomaly in fields["anomalies"]:
            anomalies.add(Text.assemble((anomaly["code"], "yellow"), ": ", printable(anomaly["detail"])))
    return tree
