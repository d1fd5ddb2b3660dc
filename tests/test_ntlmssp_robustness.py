"""Hostile bytes: the decoder raises nothing but DecodeError, names what is wrong, and its builder round-trips."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dissectors import ntlmssp
from tests.corpus import load_vectors

SEEDS = [bytes.fromhex(case[1]["hex"]) for case in load_vectors()] or [
    ntlmssp.build_negotiate(domain="CORP", workstation="WS01")
]


def _decode_or_decode_error(data: bytes) -> ntlmssp.Message | None:
    try:
        message = ntlmssp.decode(data)
    except ntlmssp.DecodeError:
        return None
    # Whatever was decoded must also serialise: that is what every output path does next.
    decoded = message.to_dict()
    json.dumps(decoded)
    # What the detector reads instead of the whole JSON form is the same.
    if isinstance(message, ntlmssp.ChallengeMessage):
        assert message.server_fields() == {name: decoded[name] for name in ntlmssp.SERVER_FIELDS}
        # ... and read in one pass over the AV pairs, as the properties read them one by one.
        server_time = message.server_time
        assert decoded["server_time"] == (server_time.isoformat() if server_time else None)
        for name in ("netbios_computer", "netbios_domain", "dns_computer", "dns_domain", "dns_tree"):
            assert decoded[name] == getattr(message, name)
    elif isinstance(message, ntlmssp.NegotiateMessage | ntlmssp.AuthenticateMessage):
        assert message.client_fields() == {name: decoded[name] for name in ntlmssp.CLIENT_FIELDS if name in decoded}
    return message


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _decode_or_decode_error(data)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_behind_the_signature(tail: bytes) -> None:
    message = _decode_or_decode_error(ntlmssp.SIGNATURE + tail)
    assert message is not None


@settings(max_examples=2000, deadline=None)
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_truncations_of_real_messages(seed: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(seed)))
    message = _decode_or_decode_error(seed[:cut])
    if cut >= len(ntlmssp.SIGNATURE):
        assert message is not None


@settings(max_examples=3000, deadline=None)
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_bit_flips_of_real_messages(seed: bytes, data: st.DataObject) -> None:
    mutated = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] ^= 1 << data.draw(st.integers(0, 7))
    _decode_or_decode_error(bytes(mutated))


@settings(max_examples=1000, deadline=None)
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_hostile_field_headers(seed: bytes, data: st.DataObject) -> None:
    """Overwrite any 8-byte field header with arbitrary Len/MaxLen/Offset."""
    mutated = bytearray(seed)
    if len(mutated) < 20:
        return
    at = data.draw(st.integers(12, len(mutated) - 8))
    struct.pack_into(
        "<HHI",
        mutated,
        at,
        data.draw(st.integers(0, 0xFFFF)),
        data.draw(st.integers(0, 0xFFFF)),
        data.draw(st.integers(0, 0xFFFFFFFF)),
    )
    _decode_or_decode_error(bytes(mutated))


@pytest.mark.parametrize("value", ["TlRMTVNTUAAB", b"", b"NTLMSSP", b"ntlmssp\x00\x01\x00\x00\x00", None, 42, "text"])
def test_not_ntlmssp_raises_decode_error(value: object) -> None:
    with pytest.raises(ntlmssp.DecodeError):
        ntlmssp.decode(value)  # type: ignore[arg-type]


# ---- named anomalies ------------------------------------------------------------------------------------------


def _challenge(
    target_info: bytes,
    target_name: bytes = "SRV".encode("utf-16-le"),
    flags: int = 0xE2898215,
    field_headers: dict[str, ntlmssp.FieldHeader] | None = None,
) -> bytes:
    return ntlmssp.build_challenge(
        (0x1122334455667788).to_bytes(8, "little"),
        target_name,
        target_info,
        flags=flags,
        version=ntlmssp.Version(10, 0, 17763),
        field_headers=field_headers,
    )


def _pairs(*pairs: tuple[int, str | bytes | int], terminate: bool = True) -> bytes:
    return ntlmssp.pack_av_pairs(pairs, terminate=terminate)


EOL = _pairs()


def _codes(message: ntlmssp.Message) -> set[str]:
    return {anomaly.code for anomaly in message.anomalies}


def test_well_formed_challenge_has_no_anomaly() -> None:
    info = _pairs((1, "SRV"), (7, 133_000_000_000_000_000))
    message = ntlmssp.decode(_challenge(info))
    assert isinstance(message, ntlmssp.ChallengeMessage)
    assert message.anomalies == []
    assert message.netbios_computer == "SRV"
    assert message.server_time is not None and message.server_time.isoformat().startswith("2022-")
    assert message.version is not None and message.version.release == "Windows Server 2019 / Windows 10 1809"


def test_unterminated_av_list() -> None:
    message = ntlmssp.decode(_challenge(_pairs((1, "SRV"), terminate=False)))
    assert "unterminated_av_list" in _codes(message)
    assert isinstance(message, ntlmssp.ChallengeMessage) and message.netbios_computer == "SRV"


def test_av_pair_beyond_end() -> None:
    info = struct.pack("<HH", 3, 200) + "host".encode("utf-16-le")
    message = ntlmssp.decode(_challenge(info))
    assert {"av_pair_beyond_end", "unterminated_av_list"} <= _codes(message)
    assert isinstance(message, ntlmssp.ChallengeMessage) and message.dns_computer == "host"


def test_field_beyond_end() -> None:
    data = _challenge(EOL, field_headers={"TargetInfo": (500, 500, None)})  # TargetInfo length far past the end
    message = ntlmssp.decode(data)
    assert "field_beyond_end" in _codes(message)


def test_overlapping_fields() -> None:
    # TargetName now runs into TargetInfo
    data = _challenge(_pairs((2, "DOM")), field_headers={"TargetName": (10, 10, 56 + 6)})
    message = ntlmssp.decode(data)
    assert "overlapping_fields" in _codes(message)


def test_field_inside_header() -> None:
    data = _challenge(EOL, field_headers={"TargetName": (8, 8, 0)})
    message = ntlmssp.decode(data)
    assert "field_in_header" in _codes(message)


@pytest.mark.parametrize("raw", [b"S\x00R", "\ud800".encode("utf-16-le", "surrogatepass") + b"A\x00"])
def test_bad_utf16(raw: bytes) -> None:
    message = ntlmssp.decode(_challenge(_pairs((1, raw))))
    assert "bad_utf16" in _codes(message)
    assert isinstance(message, ntlmssp.ChallengeMessage) and message.netbios_computer


def test_bad_fixed_length_and_duplicate_pairs() -> None:
    info = _pairs((6, b"\x02\x00"), (1, "A"), (1, "B"), (7, b"\xff" * 8))
    message = ntlmssp.decode(_challenge(info))
    assert {"bad_av_length", "duplicate_av_pair", "timestamp_out_of_range"} <= _codes(message)


def test_thousands_of_av_pairs_are_bounded() -> None:
    info = _pairs(*[(0x7777, b"x")] * 5000)
    data = _challenge(info[: 0xFFFF - 2] if len(info) > 0xFFFF else info)
    message = ntlmssp.decode(data)
    assert isinstance(message, ntlmssp.ChallengeMessage)
    assert message.target_info is not None and len(message.target_info) == ntlmssp.MAX_AV_PAIRS
    assert "too_many_av_pairs" in _codes(message)


def test_unknown_av_ids_are_kept_raw() -> None:
    message = ntlmssp.decode(_challenge(_pairs((0x00AB, b"\x01\x02"))))
    assert isinstance(message, ntlmssp.ChallengeMessage) and message.target_info
    pair = message.target_info[0]
    assert (pair.av_id, pair.raw, pair.name) == (0xAB, b"\x01\x02", "unknown_0x00ab")
    assert message.anomalies == []


def test_unknown_message_type_and_short_header() -> None:
    assert "unknown_message_type" in _codes(ntlmssp.decode(ntlmssp.SIGNATURE + b"\x09\x00\x00\x00"))
    assert "truncated_header" in _codes(ntlmssp.decode(ntlmssp.SIGNATURE + b"\x02\x00"))
    assert "truncated_header" in _codes(ntlmssp.decode(ntlmssp.SIGNATURE + b"\x03\x00\x00\x00" + b"\x00" * 10))


def test_unknown_windows_build_says_so() -> None:
    assert ntlmssp.Version(10, 0, 99999).release == "unknown build 99999 (Windows 10 / 11 / Server 2016+ family)"
    assert "Samba" in ntlmssp.Version(6, 1, 0).release
    assert ntlmssp.Version(10, 0, 20348).release == "Windows Server 2022"


# ---- the NEGOTIATE builder ------------------------------------------------------------------------------------


def test_default_probe_negotiate_matches_nmap_flags() -> None:
    data = ntlmssp.build_negotiate()
    message = ntlmssp.decode(data)
    assert isinstance(message, ntlmssp.NegotiateMessage)
    assert int(message.flags) & 0xA2088207 == 0xA2088207
    assert message.flags & ntlmssp.NegotiateFlags.NTLMSSP_NEGOTIATE_TARGET_INFO
    assert message.version == ntlmssp.PROBE_VERSION
    assert message.anomalies == []


OEM_NAMES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@settings(max_examples=500, deadline=None)
@given(
    flags=st.integers(0, 0xFFFFFFFF),
    domain=st.one_of(st.none(), OEM_NAMES),
    workstation=st.one_of(st.none(), OEM_NAMES),
    version=st.one_of(
        st.none(),
        st.builds(ntlmssp.Version, st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF), st.just(15)),
    ),
)
def test_builder_round_trips(
    flags: int, domain: str | None, workstation: str | None, version: ntlmssp.Version | None
) -> None:
    message = ntlmssp.decode(ntlmssp.build_negotiate(flags, domain, workstation, version))
    assert isinstance(message, ntlmssp.NegotiateMessage)
    assert message.anomalies == []
    assert message.domain == (domain or None)
    assert message.workstation == (workstation or None)
    assert message.version == version
    derived = (
        ntlmssp.NegotiateFlags.NTLMSSP_NEGOTIATE_VERSION
        | ntlmssp.NegotiateFlags.NTLMSSP_NEGOTIATE_OEM_DOMAIN_SUPPLIED
        | ntlmssp.NegotiateFlags.NTLMSSP_NEGOTIATE_OEM_WORKSTATION_SUPPLIED
    )
    assert int(message.flags & ~derived) == flags & ~int(derived)
    assert bool(message.flags & ntlmssp.NegotiateFlags.NTLMSSP_NEGOTIATE_VERSION) == (version is not None)
    if domain:
        assert message.flags & ntlmssp.NegotiateFlags.NTLMSSP_NEGOTIATE_OEM_DOMAIN_SUPPLIED
    if workstation:
        assert message.flags & ntlmssp.NegotiateFlags.NTLMSSP_NEGOTIATE_OEM_WORKSTATION_SUPPLIED
