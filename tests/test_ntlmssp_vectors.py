"""Every NTLM message in ../shared/corpus/vectors decodes, and matches what its source and pyspnego say of it."""

from __future__ import annotations

import ast
import base64
import json
import re
import struct
from typing import Any

import pytest
import spnego._ntlm_raw.messages as spnego_messages

from dissectors import ntlmssp
from tests.corpus import CORPUS, load_vectors, require_corpus

VECTORS = load_vectors()
IDS = [case[0] for case in VECTORS]


@pytest.fixture(autouse=True)
def _corpus_present() -> None:
    require_corpus("vectors")


def test_vectors_are_present() -> None:
    assert len(VECTORS) >= 90, f"only {len(VECTORS)} vectors found"


@pytest.mark.parametrize(("case_id", "vector", "entry"), VECTORS, ids=IDS)
def test_vector_decodes(case_id: str, vector: dict[str, Any], entry: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    assert base64.b64decode(vector["base64"]) == data
    message = ntlmssp.decode(data)
    assert message.message_type == vector["ntlm_message_type"]
    recorded = vector.get("pyspnego_decode") or {}
    if "error" in recorded:
        # pyspnego gave up on it; we must still decode, naming what is wrong.
        assert message.anomalies, f"pyspnego failed ({recorded['error']}) but no anomaly was named"


# ---- agreement with pyspnego's recorded decoding --------------------------------------------------------------


def _hex_or_none(value: bytes | None) -> str | None:
    return value.hex().upper() if value else None


def _version_view(version: ntlmssp.Version | None) -> dict[str, int] | None:
    if version is None:
        return None
    return {"Major": version.major, "Minor": version.minor, "Build": version.build, "NTLMRevision": version.revision}


def _av_view(pairs: list[ntlmssp.AvPair] | None, terminated: bool) -> list[dict[str, Any]] | None:
    if pairs is None:
        return None
    view = []
    for pair in pairs:
        value = pair.value
        if isinstance(value, ntlmssp.FileTime):
            value = value.isoformat()
        elif isinstance(value, ntlmssp.AvFlags):
            value = int(value)
        elif isinstance(value, bytes):
            value = value.hex().upper()
        view.append({"AvId": pair.av_id, "Value": value})
    if terminated:
        view.append({"AvId": 0, "Value": None})
    return view


def _recorded_av(pairs: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if pairs is None:
        return None
    view = []
    for pair in pairs:
        av_id = int(re.search(r"\((\d+)\)", pair["AvId"]).group(1))  # type: ignore[union-attr]
        value = pair["Value"]
        if isinstance(value, dict) and "raw" in value:
            value = value["raw"]
        view.append({"AvId": av_id, "Value": value})
    return view


def _terminated(message: ntlmssp.NtlmMessage) -> bool:
    return not any(a.code == "unterminated_av_list" for a in message.anomalies)


def _our_view(message: ntlmssp.Message) -> dict[str, Any]:
    view: dict[str, Any] = {"flags": int(message.flags), "Version": _version_view(message.version)}
    if isinstance(message, ntlmssp.NegotiateMessage):
        view.update(DomainName=message.domain, Workstation=message.workstation)
    elif isinstance(message, ntlmssp.ChallengeMessage):
        view.update(
            ServerChallenge=message.server_challenge.hex().upper(),
            TargetName=message.target_name,
            TargetInfo=_av_view(message.target_info, _terminated(message)),
        )
    elif isinstance(message, ntlmssp.AuthenticateMessage):
        nt: dict[str, Any] | None = None
        if message.ntlm_version in (ntlmssp.NtlmVersion.NTLMV1, ntlmssp.NtlmVersion.NTLMV1_ESS):
            nt = {"ResponseType": "NTLMv1", "NTProofStr": message.nt_response.hex().upper()}
        elif message.ntlmv2 is not None:
            v2 = message.ntlmv2
            nt = {
                "ResponseType": "NTLMv2",
                "NTProofStr": v2.nt_proof_str.hex().upper(),
                "TimeStamp": v2.timestamp.isoformat() if v2.timestamp else None,
                "ChallengeFromClient": v2.client_challenge.hex().upper(),
                "AvPairs": _av_view(v2.av_pairs, _terminated(message)),
            }
        view.update(
            MIC=_hex_or_none(message.mic),
            DomainName=message.domain,
            UserName=message.user,
            Workstation=message.workstation,
            EncryptedRandomSessionKey=_hex_or_none(message.session_key),
            NtChallengeResponse=nt,
        )
    return view


def _as_utf8_oem(value: Any) -> Any:
    """pyspnego's record read OEM strings as cp1252; the senders (pyspnego's own tests) wrote UTF-8, as we read it."""
    if not isinstance(value, str):
        return value
    try:
        return value.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _recorded_view(record: dict[str, Any], our: dict[str, Any]) -> dict[str, Any]:
    data = record["Data"]
    payload = data.get("Payload", {})
    view: dict[str, Any] = {"flags": data["NegotiateFlags"]["raw"]}
    version = data.get("Version")
    view["Version"] = {k: version[k] for k in ("Major", "Minor", "Build", "NTLMRevision")} if version else None
    for key in ("DomainName", "Workstation", "TargetName", "UserName", "EncryptedRandomSessionKey"):
        if key in our:
            view[key] = _as_utf8_oem(payload.get(key))
    if "ServerChallenge" in our:
        view["ServerChallenge"] = data["ServerChallenge"]
        view["TargetInfo"] = _recorded_av(payload.get("TargetInfo"))
    if "MIC" in our:
        view["MIC"] = data.get("MIC")
        nt = payload.get("NtChallengeResponse")
        if nt and nt.get("ResponseType") == "NTLMv2":
            challenge = nt["ClientChallenge"]
            nt = {
                "ResponseType": "NTLMv2",
                "NTProofStr": nt["NTProofStr"],
                "TimeStamp": challenge["TimeStamp"],
                "ChallengeFromClient": challenge["ChallengeFromClient"],
                "AvPairs": _recorded_av(challenge["AvPairs"]),
            }
        elif nt:
            nt = {"ResponseType": nt["ResponseType"], "NTProofStr": nt["NTProofStr"]}
        view["NtChallengeResponse"] = nt
    return view


@pytest.mark.parametrize(
    ("case_id", "vector", "entry"),
    [c for c in VECTORS if "MessageType" in (c[1].get("pyspnego_decode") or {})],
    ids=[c[0] for c in VECTORS if "MessageType" in (c[1].get("pyspnego_decode") or {})],
)
def test_vector_matches_pyspnego_record(case_id: str, vector: dict[str, Any], entry: dict[str, Any]) -> None:
    message = ntlmssp.decode(bytes.fromhex(vector["hex"]))
    ours = _our_view(message)
    recorded = _recorded_view(vector["pyspnego_decode"], ours)
    assert ours == recorded


# ---- expectations written down by each source -------------------------------------------------------------------


def _version_text(version: ntlmssp.Version | None) -> str | None:
    return f"{version} rev {version.revision}" if version else None


# The vectors file records 16 here, but the message's EncryptedRandomSessionKeyFields.Len is 0: MS-NLMP 4.2.3 does
# not negotiate KEY_EXCH, so no key is sent (pyspnego's recorded decoding agrees with the bytes).
WRONG_SPEC_EXPECTATIONS = {
    (
        "ms-nlmp_4.2:MS-NLMP 4.2.3 NTLM v1 with Client Challenge AUTHENTICATE_MESSAGE",
        "encrypted_random_session_key_len",
    ),
}

_SPEC_CASES = [c for c in VECTORS if "expected_from_spec" in c[2] and "hex" in c[1]]


@pytest.mark.parametrize(("case_id", "vector", "entry"), _SPEC_CASES, ids=[c[0] for c in _SPEC_CASES])
def test_ms_nlmp_expected_values(case_id: str, vector: dict[str, Any], entry: dict[str, Any]) -> None:
    expected = entry["expected_from_spec"]
    data = bytes.fromhex(vector["hex"])
    message = ntlmssp.decode(data)
    assert not message.anomalies
    checked = 0
    for key, value in expected.items():
        checked += 1
        if (case_id, key) in WRONG_SPEC_EXPECTATIONS:
            # The bytes themselves say otherwise: check that we read what the bytes say.
            length_in_header = struct.unpack_from("<H", data, 52)[0]
            assert length_in_header != value
            assert len(message.session_key) == length_in_header
        elif key == "version":
            assert _version_text(message.version) == value
        elif key == "target_name":
            assert message.target_name == value
        elif key == "server_challenge":
            assert message.server_challenge.hex() == value
        elif key == "av_pairs":
            assert {p.name: p.value for p in message.target_info or []} == value
        elif key in ("domain", "user", "workstation"):
            assert getattr(message, key) == value
        elif key == "encrypted_random_session_key_len":
            assert len(message.session_key) == value
        elif key == "ntlmv2_client_challenge":
            assert message.ntlmv2.client_challenge.hex() == value
        elif key == "ntlmv2_timestamp":
            assert message.ntlmv2.timestamp.ticks == int.from_bytes(bytes.fromhex(value), "little")
        elif key == "ntlmv2_av_pairs":
            assert {p.name: p.value for p in message.ntlmv2.av_pairs} == value
        else:
            pytest.fail(f"unhandled expectation {key!r}")
    assert checked == len(expected)


_CURL_NOTE = re.compile(
    r"NetBIOS domain (?P<netbios_domain>\S+), NetBIOS computer (?P<netbios_computer>\S+), "
    r"DNS domain (?P<dns_domain>\S+), DNS computer (?P<dns_computer>\S+)"
)
_SOURCE_CASES = [c for c in VECTORS if "expected_from_source" in c[2]]


@pytest.mark.parametrize(("case_id", "vector", "entry"), _SOURCE_CASES, ids=[c[0] for c in _SOURCE_CASES])
def test_curl_expected_values(case_id: str, vector: dict[str, Any], entry: dict[str, Any]) -> None:
    expected = entry["expected_from_source"]
    message = ntlmssp.decode(bytes.fromhex(vector["hex"]))
    assert not message.anomalies
    if isinstance(message, ntlmssp.AuthenticateMessage):
        assert message.user == expected["user"]
        assert message.workstation == expected["workstation"]
    elif isinstance(message, ntlmssp.ChallengeMessage):
        names = _CURL_NOTE.search(expected["type2_av_pairs_note"])
        assert names is not None
        for key, value in names.groupdict().items():
            assert getattr(message, key) == value
    else:
        assert isinstance(message, ntlmssp.NegotiateMessage)


# ---- the sources' own assertion lines (ntlm-auth, pyspnego), evaluated against our decoding ---------------------


class _Like:
    """Our decoded message under the attribute names pyspnego's and ntlm-auth's tests use."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.message = ntlmssp.decode(raw)

    def __eq__(self, other: object) -> bool:  # "assert actual == expected" compares packed bytes
        return isinstance(other, bytes) and other == self.raw

    __hash__ = None  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        m = self.message
        text = {"domain_name": "domain", "user_name": "user", "workstation": "workstation"}
        if name in text:
            return getattr(m, text[name], None)
        if name == "flags":
            return int(m.flags)
        if name == "version":
            return m.version
        if name == "mic":
            return getattr(m, "mic", None)
        if name == "server_challenge":
            return m.server_challenge
        if name == "target_name":
            return m.target_name
        if name == "target_info":
            if m.target_info is None:
                return None
            info = {pair.av_id: pair.value for pair in m.target_info}
            if _terminated(m):
                info[0] = b""
            return info
        if name in ("lm_challenge_response", "nt_challenge_response", "encrypted_random_session_key"):
            attribute = {"lm_challenge_response": "lm_response", "nt_challenge_response": "nt_response"}
            return getattr(m, attribute.get(name, "session_key")) or None
        raise AttributeError(name)


class _Messages:
    """Stands in for pyspnego's ``messages`` module: its flag and AV id constants, our Version."""

    NegotiateFlags = spnego_messages.NegotiateFlags
    AvId = spnego_messages.AvId

    @staticmethod
    def Version(major: int, minor: int, build: int, revision: int = 15) -> ntlmssp.Version:
        return ntlmssp.Version(major, minor, build, revision)


def _spec_challenge_flags(section: str) -> int:
    """Flags of an MS-NLMP 4.2.x CHALLENGE example, as pyspnego's tests name them (TEST_NTLMV1_FLAGS, ...)."""
    for case_id, vector, _entry in VECTORS:
        if case_id.startswith(f"ms-nlmp_4.2:MS-NLMP {section} ") and vector["ntlm_message_type"] == 2:
            return int.from_bytes(bytes.fromhex(vector["hex"])[20:24], "little")
    return -1


def _spec_common_values() -> dict[str, Any]:
    """MS-NLMP 4.2.1 common values under the names pyspnego's tests give them."""
    path = CORPUS / "vectors" / "ms-nlmp_4.2.json"
    if not path.exists():
        return {}
    common = json.loads(path.read_text())["common_values_4.2.1"]
    return {
        "TEST_USER": common["User"],
        "TEST_USER_DOM": common["UserDom"],
        "TEST_PASSWD": common["Passwd"],
        "TEST_SERVER_NAME": common["ServerName"],
        "TEST_WORKSTATION_NAME": common["WorkstationName"],
        "TEST_RANDOM_SESSION_KEY": bytes.fromhex(common["RandomSessionKey"]),
        "TEST_TIME": bytes.fromhex(common["Time"]),
        "TEST_CLIENT_CHALLENGE": bytes.fromhex(common["ClientChallenge"]),
        "TEST_SERVER_CHALLENGE": bytes.fromhex(common["ServerChallenge"]),
    }


_CONSTANTS = {
    **_spec_common_values(),
    "TEST_NTLMV1_FLAGS": _spec_challenge_flags("4.2.2"),
    "TEST_NTLMV1_CLIENT_CHALLENGE_FLAGS": _spec_challenge_flags("4.2.3"),
    "TEST_NTLMV2_FLAGS": _spec_challenge_flags("4.2.4"),
    "NTLM_SIGNATURE": ntlmssp.SIGNATURE,
}


def _ntlm_auth_actuals(like: _Like) -> dict[str, Any]:
    """ntlm-auth's tests read raw fields: name them the way those tests do."""
    m = like.message
    raw = like.raw
    values: dict[str, Any] = {"actual_signature": raw[:8], "actual_message_type": m.message_type}
    values["actual_negotiate_flags"] = int(m.flags)
    if isinstance(m, ntlmssp.ChallengeMessage):
        values["actual_server_challenge"] = m.server_challenge
        values["actual_target_name"] = m.target_name.encode("utf-16-le") if m.target_name else None
        values["actual_version"] = int.from_bytes(m.version.pack(), "little") if m.version else None
        values["actual_target_info"] = _raw_target_info(raw) if m.target_info is not None else None
    return values


def _raw_target_info(raw: bytes) -> bytes:
    length, _max, offset = struct.unpack_from("<HHI", raw, 40)
    return raw[offset : offset + length]


# Source assertions we knowingly do not share, each with the reason; the test checks the divergence is real.
DIVERGENCES = {
    ("ntlm-auth_test_messages:test_challenge#0", "assert actual_target_name == expected_target_name"): (
        "ntlm-auth ignores TargetName unless REQUEST_TARGET is set; the field is on the wire (MS-NLMP 4.2.2 itself "
        "sends one without the flag) and is exactly what leaks, so we decode it, as pyspnego does"
    ),
    ("pyspnego_test_messages:test_negotiate_unpack_invalid_encoding#0", 'assert actual.domain_name == "caf\ufffd"'): (
        "pyspnego decodes OEM strings as UTF-8 with replacement; bytes that are not UTF-8 we read as Latin-1, "
        "keeping the character instead of losing it"
    ),
    ("pyspnego_test_messages:test_negotiate_unpack_invalid_encoding#0", 'assert actual.workstation == "caf\ufffd"'): (
        "as above"
    ),
}
# "actual == b'...'" lines check what a builder packed, i.e. the vector bytes themselves, not a decoding.
_BUILDER_ASSERTION = re.compile(r"^assert\s*\(?\s*actual\s*==\s*(?:b[\"']|expected\b)")

# One case per source test: its assertions may speak of any of its messages.
_LINE_CASES = [c for c in VECTORS if c[2].get("expected_source_lines") and c[1] is c[2]["messages"][0]]


@pytest.mark.parametrize(("case_id", "vector", "entry"), _LINE_CASES, ids=[c[0] for c in _LINE_CASES])
def test_source_assertions_hold(case_id: str, vector: dict[str, Any], entry: dict[str, Any]) -> None:
    """Run the source's own assertion lines with our decoding bound to the names they use."""
    messages = [_Like(bytes.fromhex(m["hex"])) for m in entry["messages"]]
    by_type = {like.message.message_type: like for like in reversed(messages)}
    namespace: dict[str, Any] = {
        **_CONSTANTS,
        "messages": _Messages,
        "MessageTypes": type("MessageTypes", (), {"NTLM_NEGOTIATE": 1, "NTLM_CHALLENGE": 2, "NTLM_AUTHENTICATE": 3}),
        "actual": messages[0],
        "negotiate": by_type.get(1),
        "challenge": by_type.get(2),
        "authenticate": by_type.get(3),
        **_ntlm_auth_actuals(messages[0]),
    }
    evaluated = 0
    unavailable: set[str] = set()
    for line in entry["expected_source_lines"]:
        statement = line.strip()
        names = set(re.findall(r"[A-Za-z_]\w*", statement))
        if names & unavailable:
            continue  # compares with a value built from the source test's own objects
        if _BUILDER_ASSERTION.match(statement):
            comparison = ast.parse(statement).body[0].test  # type: ignore[attr-defined]
            packed = eval(compile(ast.Expression(comparison.comparators[0]), case_id, "eval"), namespace)
            assert packed in {like.raw for like in messages}, f"packed bytes are not among the vectors: {statement}"
            evaluated += 1
            continue
        try:
            exec(compile(statement, case_id, "exec"), namespace)
        except AssertionError:
            if (case_id, statement) in DIVERGENCES:
                continue
            pytest.fail(f"source assertion does not hold: {statement}")
        except NameError as error:
            # e.g. ntlm-auth's "test_target_info.pack()": an object of that test file, not a decoded value
            if statement.startswith("assert"):
                pytest.fail(f"assertion refers to an unknown name ({error}): {line!r}")
            unavailable.add(statement.split("=", 1)[0].strip())
            continue
        evaluated += statement.startswith("assert")
    assert evaluated > 0


@pytest.mark.parametrize(("case_id", "vector", "entry"), VECTORS, ids=IDS)
def test_server_and_client_fields_are_those_of_to_dict(
    case_id: str, vector: dict[str, Any], entry: dict[str, Any]
) -> None:
    """The detector reads a message's server or client fields without its whole JSON form: the same values, in the
    order of SERVER_FIELDS / CLIENT_FIELDS (a client's detail keeps it), also for every truncation of the message."""
    data = bytes.fromhex(vector["hex"])
    for end in sorted({len(data), *range(8, len(data), 7)}):
        try:
            message = ntlmssp.decode(data[:end])
        except ntlmssp.DecodeError:
            continue
        decoded = message.to_dict()
        if isinstance(message, ntlmssp.ChallengeMessage):
            assert message.server_fields() == {name: decoded.get(name) for name in ntlmssp.SERVER_FIELDS}
            assert tuple(message.server_fields()) == ntlmssp.SERVER_FIELDS
            for name in ("netbios_computer", "netbios_domain", "dns_computer", "dns_domain", "dns_tree"):
                assert decoded[name] == getattr(message, name)
            assert decoded["server_time"] == (message.server_time.isoformat() if message.server_time else None)
            assert decoded["flags"] == [flag.name for flag in ntlmssp.NegotiateFlags if flag & message.flags][::-1]
        if isinstance(message, ntlmssp.NegotiateMessage | ntlmssp.AuthenticateMessage):
            fields = message.client_fields()
            assert fields == {name: decoded[name] for name in ntlmssp.CLIENT_FIELDS if name in decoded}
            assert list(fields) == [name for name in ntlmssp.CLIENT_FIELDS if name in fields]
