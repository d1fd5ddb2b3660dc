"""The CHALLENGE and AUTHENTICATE builders: what they pack decodes back to every field given, without anomaly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dissectors import ntlmssp

F = ntlmssp.NegotiateFlags
EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
# The last FILETIME a datetime can show: later ones decode with a timestamp_out_of_range anomaly.
MAX_TICKS = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1) * 10 + 9

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
VERSIONS = st.builds(
    ntlmssp.Version, st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF), st.sampled_from([10, 15])
)
MOMENTS = st.datetimes(min_value=datetime(1601, 1, 1), timezones=st.just(UTC))
STRING_IDS = sorted(ntlmssp.AvId(i) for i in (1, 2, 3, 4, 5, 9))


def _key_spellings(av_id: ntlmssp.AvId) -> st.SearchStrategy[ntlmssp.AvKey]:
    """The four ways to name an AV pair: AvId, number, AvId name, schema name."""
    schema = [name for name, member in ntlmssp.AV_NAMES.items() if member == av_id]
    return st.sampled_from([av_id, int(av_id), av_id.name, *schema])


# (key, value given, value expected back from the decoder)
AV_PAIR = st.one_of(
    st.sampled_from(STRING_IDS).flatmap(lambda i: st.tuples(_key_spellings(i), TEXT)).map(lambda kv: (*kv, kv[1])),
    st.tuples(_key_spellings(ntlmssp.AvId.MsvAvFlags), st.integers(0, 0xFFFFFFFF)).map(
        lambda kv: (*kv, ntlmssp.AvFlags(kv[1]))
    ),
    st.tuples(_key_spellings(ntlmssp.AvId.MsvAvTimestamp), st.integers(0, MAX_TICKS)).map(
        lambda kv: (*kv, ntlmssp.FileTime(kv[1]))
    ),
    st.tuples(_key_spellings(ntlmssp.AvId.MsvAvTimestamp), MOMENTS).map(
        lambda kv: (*kv, ntlmssp.FileTime.from_datetime(kv[1]))
    ),
    st.tuples(_key_spellings(ntlmssp.AvId.MsvAvChannelBindings), st.binary(min_size=16, max_size=16)).map(
        lambda kv: (*kv, kv[1])
    ),
    st.tuples(st.integers(0x000B, 0xFFFF), st.binary(max_size=40)).map(lambda kv: (*kv, kv[1])),
)
AV_PAIRS = st.lists(AV_PAIR, max_size=8, unique_by=lambda pair: ntlmssp.av_id_of(pair[0]))


def _assert_pairs(decoded: list[ntlmssp.AvPair] | None, given: list[tuple[Any, Any, Any]]) -> None:
    assert decoded is not None
    assert [pair.av_id for pair in decoded] == [ntlmssp.av_id_of(key) for key, _, _ in given]
    for pair, (key, value, expected) in zip(decoded, given, strict=True):
        assert pair.value == expected
        assert pair.raw == ntlmssp.encode_av_value(ntlmssp.av_id_of(key), value)


def _expected_flags(flags: int, unicode: bool | None, version: ntlmssp.Version | None, present: int) -> int:
    if unicode is not None:
        flags = flags | F.NTLMSSP_NEGOTIATE_UNICODE if unicode else flags & ~F.NTLMSSP_NEGOTIATE_UNICODE
    flags = flags | F.NTLMSSP_NEGOTIATE_VERSION if version else flags & ~F.NTLMSSP_NEGOTIATE_VERSION
    return int(flags | present)


@settings(max_examples=400, deadline=None)
@given(
    server_challenge=st.binary(min_size=8, max_size=8),
    reserved=st.binary(min_size=8, max_size=8),
    target_name=st.one_of(st.none(), TEXT),
    pairs=st.one_of(st.none(), AV_PAIRS),
    flags=st.integers(0, 0xFFFFFFFF),
    version=st.one_of(st.none(), VERSIONS),
    unicode=st.sampled_from([None, True, False]),
)
def test_challenge_round_trips(
    server_challenge: bytes,
    reserved: bytes,
    target_name: str | None,
    pairs: list[tuple[Any, Any, Any]] | None,
    flags: int,
    version: ntlmssp.Version | None,
    unicode: bool | None,
) -> None:
    data = ntlmssp.build_challenge(
        server_challenge,
        target_name,
        None if pairs is None else [(key, value) for key, value, _ in pairs],
        flags=flags,
        version=version,
        unicode=unicode,
        reserved=reserved,
    )
    message = ntlmssp.decode(data)
    assert isinstance(message, ntlmssp.ChallengeMessage)
    assert message.anomalies == []
    present = F.NTLMSSP_REQUEST_TARGET if target_name else 0
    present |= F.NTLMSSP_NEGOTIATE_TARGET_INFO if pairs is not None else 0
    assert int(message.flags) == _expected_flags(flags, unicode, version, present)
    assert (message.server_challenge, message.reserved) == (server_challenge, reserved)
    assert message.target_name == (target_name or None)
    assert message.version == version
    if pairs is None:
        assert message.target_info == ([] if message.flags & F.NTLMSSP_NEGOTIATE_TARGET_INFO else None)
    else:
        _assert_pairs(message.target_info, pairs)


RESPONSE_KINDS = st.sampled_from(["anonymous", "ntlmv1", "ntlmv2"])


@settings(max_examples=400, deadline=None)
@given(
    names=st.tuples(st.one_of(st.none(), TEXT), st.one_of(st.none(), TEXT), st.one_of(st.none(), TEXT)),
    kind=RESPONSE_KINDS,
    proof=st.binary(min_size=16, max_size=16),
    timestamp=st.integers(0, MAX_TICKS),
    client_challenge=st.binary(min_size=8, max_size=8),
    pairs=AV_PAIRS,
    session_key=st.sampled_from([b"", bytes(range(16))]),
    mic=st.one_of(st.none(), st.binary(min_size=16, max_size=16)),
    flags=st.integers(0, 0xFFFFFFFF),
    version=st.one_of(st.none(), VERSIONS),
    unicode=st.sampled_from([None, True, False]),
)
def test_authenticate_round_trips(
    names: tuple[str | None, str | None, str | None],
    kind: str,
    proof: bytes,
    timestamp: int,
    client_challenge: bytes,
    pairs: list[tuple[Any, Any, Any]],
    session_key: bytes,
    mic: bytes | None,
    flags: int,
    version: ntlmssp.Version | None,
    unicode: bool | None,
) -> None:
    user, domain, workstation = names
    lm, nt = {
        "anonymous": (b"", b""),
        "ntlmv1": (bytes(range(24)), bytes(range(100, 124))),
        "ntlmv2": (
            bytes(24),
            proof + ntlmssp.ntlmv2_client_blob(timestamp, client_challenge, [(k, v) for k, v, _ in pairs]),
        ),
    }[kind]
    data = ntlmssp.build_authenticate(
        user,
        domain,
        workstation,
        lm_response=lm,
        nt_response=nt,
        session_key=session_key,
        mic=mic,
        version=version,
        flags=flags,
        unicode=unicode,
    )
    message = ntlmssp.decode(data)
    assert isinstance(message, ntlmssp.AuthenticateMessage)
    assert message.anomalies == []
    present = F.NTLMSSP_NEGOTIATE_KEY_EXCH if session_key else 0
    assert int(message.flags) == _expected_flags(flags, unicode, version, present)
    assert (message.user, message.domain, message.workstation) == (user or None, domain or None, workstation or None)
    assert (message.lm_response, message.nt_response, message.session_key) == (lm, nt, session_key)
    assert (message.mic, message.version) == (mic, version)
    if kind == "anonymous":
        assert message.ntlm_version == ntlmssp.NtlmVersion.ANONYMOUS
    elif kind == "ntlmv1":
        assert message.ntlm_version in (ntlmssp.NtlmVersion.NTLMV1, ntlmssp.NtlmVersion.NTLMV1_ESS)
    else:
        v2 = message.ntlmv2
        assert message.ntlm_version == ntlmssp.NtlmVersion.NTLMV2 and v2 is not None
        assert (v2.nt_proof_str, v2.resp_type, v2.hi_resp_type) == (proof, 1, 1)
        assert (v2.timestamp, v2.client_challenge) == (ntlmssp.FileTime(timestamp), client_challenge)
        _assert_pairs(v2.av_pairs, pairs)


# ---- layout -----------------------------------------------------------------------------------------------------


def _field(data: bytes, offset: int) -> tuple[int, int, int]:
    return (
        int.from_bytes(data[offset : offset + 2], "little"),
        int.from_bytes(data[offset + 2 : offset + 4], "little"),
        int.from_bytes(data[offset + 4 : offset + 8], "little"),
    )


def test_authenticate_layout() -> None:
    """Header, then Version and MIC, then the payload in field order; an empty field points where it would be."""
    data = ntlmssp.build_authenticate(
        "user",
        None,
        "WS",
        lm_response=b"L" * 24,
        nt_response=b"N" * 24,
        mic=b"M" * 16,
        version=ntlmssp.Version(10, 0, 19045),
        flags=F.NTLMSSP_NEGOTIATE_UNICODE,
    )
    assert data[:12] == ntlmssp.SIGNATURE + b"\x03\x00\x00\x00"
    assert [_field(data, offset) for offset in (12, 20, 28, 36, 44, 52)] == [
        (24, 24, 88),
        (24, 24, 112),
        (0, 0, 136),
        (8, 8, 136),
        (4, 4, 144),
        (0, 0, 148),
    ]
    assert int.from_bytes(data[60:64], "little") == F.NTLMSSP_NEGOTIATE_UNICODE | F.NTLMSSP_NEGOTIATE_VERSION
    assert data[64:72] == ntlmssp.Version(10, 0, 19045).pack() and data[72:88] == b"M" * 16
    assert data[88:] == b"L" * 24 + b"N" * 24 + "user".encode("utf-16-le") + "WS".encode("utf-16-le")


def test_challenge_layout() -> None:
    data = ntlmssp.build_challenge(b"\x01" * 8, "DOM", {"netbios_computer": "SRV"}, version=ntlmssp.Version(6, 1, 0))
    assert data[:12] == ntlmssp.SIGNATURE + b"\x02\x00\x00\x00"
    info = b"\x01\x00\x06\x00" + "SRV".encode("utf-16-le") + b"\x00\x00\x00\x00"
    assert _field(data, 12) == (6, 6, 56) and _field(data, 40) == (len(info), len(info), 62)
    assert data[24:40] == b"\x01" * 8 + bytes(8) and data[48:56] == ntlmssp.Version(6, 1, 0).pack()
    assert data[56:] == "DOM".encode("utf-16-le") + info


def test_ntlmv2_client_blob_layout() -> None:
    """2.2.2.7: RespType, HiRespType, six reserved bytes, TimeStamp, ChallengeFromClient, four reserved, AvPairs."""
    moment = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    blob = ntlmssp.ntlmv2_client_blob(moment, b"abcdefgh", [("spn", "smtp/mx"), ("av_flags", 2)])
    ticks = ntlmssp.FileTime.from_datetime(moment).ticks
    assert ntlmssp.FileTime(ticks).isoformat() == "2024-05-06T07:08:09.123456Z"
    spn = "smtp/mx".encode("utf-16-le")
    pairs = b"\x09\x00" + len(spn).to_bytes(2, "little") + spn + b"\x06\x00\x04\x00\x02\x00\x00\x00" + bytes(4)
    assert blob == b"\x01\x01" + bytes(6) + ticks.to_bytes(8, "little") + b"abcdefgh" + bytes(4) + pairs + bytes(4)


def test_flags_follow_the_fields_present() -> None:
    challenge = ntlmssp.decode(ntlmssp.build_challenge(target_name="X", target_info=[], flags=0))
    assert int(challenge.flags) == F.NTLMSSP_REQUEST_TARGET | F.NTLMSSP_NEGOTIATE_TARGET_INFO
    assert isinstance(challenge, ntlmssp.ChallengeMessage) and challenge.target_name == "X"  # OEM without UNICODE
    authenticate = ntlmssp.decode(ntlmssp.build_authenticate("u", session_key=b"k" * 16, unicode=False))
    assert not authenticate.flags & (F.NTLMSSP_NEGOTIATE_UNICODE | F.NTLMSSP_NEGOTIATE_VERSION)
    assert authenticate.flags & F.NTLMSSP_NEGOTIATE_KEY_EXCH
    assert ntlmssp.build_authenticate("u", unicode=False).endswith(b"u")


def test_av_pair_spellings_pack_alike() -> None:
    packed = {
        ntlmssp.pack_av_pairs([(key, "host.example")])
        for key in (ntlmssp.AvId.MsvAvDnsComputerName, 3, "MsvAvDnsComputerName", "dns_computer")
    }
    assert len(packed) == 1
    assert ntlmssp.pack_av_pairs({"timestamp": 1}, terminate=False) == b"\x07\x00\x08\x00\x01" + bytes(7)


# ---- hostile shapes and refusals --------------------------------------------------------------------------------


def test_field_header_overrides_make_named_anomalies() -> None:
    def codes(data: bytes) -> set[str]:
        return {anomaly.code for anomaly in ntlmssp.decode(data).anomalies}

    assert codes(ntlmssp.build_authenticate("user", field_headers={"UserName": (None, 9, None)})) == {"length_mismatch"}
    assert "field_in_header" in codes(ntlmssp.build_authenticate("user", field_headers={"UserName": (8, 8, 12)}))
    beyond = ntlmssp.build_authenticate("user", field_headers={"EncryptedRandomSessionKey": (16, 16, None)})
    assert codes(beyond) == {"field_beyond_end"}
    overlap = ntlmssp.build_challenge(target_name="DOM", target_info=[], field_headers={"TargetInfo": (4, 4, 48)})
    assert "overlapping_fields" in codes(overlap)


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: ntlmssp.build_challenge(b"short"), ValueError),
        (lambda: ntlmssp.build_challenge(reserved=b"\x00"), ValueError),
        (lambda: ntlmssp.build_challenge(target_name="x" * 40_000), ValueError),
        (lambda: ntlmssp.build_challenge(target_info=[("MsvAvNoSuchThing", b"")]), ValueError),
        (lambda: ntlmssp.build_challenge(target_info=[(0x10000, b"")]), ValueError),
        (lambda: ntlmssp.build_challenge(target_info=[("av_flags", "text")]), TypeError),
        (lambda: ntlmssp.build_challenge(target_info=[("timestamp", datetime(2024, 1, 1))]), ValueError),
        (lambda: ntlmssp.build_challenge(target_info=[("timestamp", -1)]), ValueError),
        (lambda: ntlmssp.build_challenge(field_headers={"UserName": (0, 0, 0)}), ValueError),
        (lambda: ntlmssp.build_authenticate(mic=b"\x00" * 15), ValueError),
        (lambda: ntlmssp.build_authenticate(nt_response=bytes(0x10000)), ValueError),
        (lambda: ntlmssp.ntlmv2_client_blob(0, b"nine bytes"), ValueError),
    ],
)
def test_builders_refuse_what_the_wire_cannot_carry(build: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build()
