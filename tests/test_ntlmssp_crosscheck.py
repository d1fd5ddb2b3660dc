"""Our decoding equals pyspnego's and impacket's on messages made by pyspnego's real NTLM client and acceptor, and
by our own builders, which pack as pyspnego does and whose AUTHENTICATE pyspnego's acceptor takes."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import spnego
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from impacket import ntlm as impacket_ntlm
from spnego._ntlm_raw import crypto as spnego_crypto
from spnego._ntlm_raw import messages as spnego_messages

from dissectors import ntlmssp
from tests.corpus import load_vectors

# Names as an administrator or an attacker may set them: letters, digits, dots, dashes, and any Unicode letter.
NAMES = st.text(
    alphabet=st.characters(categories=("Lu", "Ll", "Nd"), include_characters=".-_$"),
    min_size=1,
    max_size=30,
)


def _spnego_view(data: bytes) -> dict[str, Any]:
    """The fields pyspnego's parser reads, under our schema names.

    OEM strings: we read UTF-8 when the bytes are UTF-8 and Latin-1 otherwise; pyspnego is asked the same way.
    """
    try:
        view = _spnego_view_with(data, "utf-8")
    except UnicodeDecodeError:
        return _spnego_view_with(data, "latin-1")
    if any(isinstance(value, str) and "\ufffd" in value for value in view.values()):
        return _spnego_view_with(data, "latin-1")
    return view


def _spnego_view_with(data: bytes, encoding: str) -> dict[str, Any]:
    message = spnego_messages.NTLMMessage.unpack(data, encoding=encoding)
    view: dict[str, Any] = {"flags": int(message.flags)}
    version = message.version
    view["version"] = (version.major, version.minor, version.build) if version else None
    if isinstance(message, spnego_messages.Negotiate):
        view.update(domain=message.domain_name, workstation=message.workstation)
    elif isinstance(message, spnego_messages.Challenge):
        info = message.target_info or {}
        stamp = info.get(spnego_messages.AvId.timestamp)
        view.update(
            target_name=message.target_name,
            server_challenge=message.server_challenge,
            netbios_computer=info.get(spnego_messages.AvId.nb_computer_name),
            netbios_domain=info.get(spnego_messages.AvId.nb_domain_name),
            dns_computer=info.get(spnego_messages.AvId.dns_computer_name),
            dns_domain=info.get(spnego_messages.AvId.dns_domain_name),
            dns_tree=info.get(spnego_messages.AvId.dns_tree_name),
            server_time=stamp.pack() if stamp is not None else None,
        )
    else:
        view.update(
            user=message.user_name,
            domain=message.domain_name,
            workstation=message.workstation,
            mic=message.mic,
            session_key=message.encrypted_random_session_key,
            lm=message.lm_challenge_response,
            nt=message.nt_challenge_response,
        )
    return view


def _our_view(data: bytes) -> dict[str, Any]:
    message = ntlmssp.decode(data)
    assert not message.anomalies, message.anomalies
    version = message.version
    view: dict[str, Any] = {
        "flags": int(message.flags),
        "version": (version.major, version.minor, version.build) if version else None,
    }
    if isinstance(message, ntlmssp.NegotiateMessage):
        view.update(domain=message.domain, workstation=message.workstation)
    elif isinstance(message, ntlmssp.ChallengeMessage):
        stamp = message.server_time
        view.update(
            target_name=message.target_name,
            server_challenge=message.server_challenge,
            netbios_computer=message.netbios_computer,
            netbios_domain=message.netbios_domain,
            dns_computer=message.dns_computer,
            dns_domain=message.dns_domain,
            dns_tree=message.dns_tree,
            server_time=struct.pack("<Q", stamp.ticks) if stamp else None,
        )
    else:
        assert isinstance(message, ntlmssp.AuthenticateMessage)
        view.update(
            user=message.user,
            domain=message.domain,
            workstation=message.workstation,
            mic=message.mic,
            session_key=message.session_key or None,
            lm=message.lm_response or None,
            nt=message.nt_response or None,
        )
    return view


def _impacket_view(data: bytes) -> dict[str, Any]:
    """The same fields as impacket's structures read them (strings are raw bytes there; decode per flags)."""
    kind = struct.unpack_from("<I", data, 8)[0]
    if kind == 1:
        negotiate = impacket_ntlm.NTLMAuthNegotiate()
        negotiate.fromString(data)
        return {"flags": negotiate["flags"]}
    if kind == 2:
        challenge = impacket_ntlm.NTLMAuthChallenge()
        challenge.fromString(data)
        unicode = challenge["flags"] & impacket_ntlm.NTLMSSP_NEGOTIATE_UNICODE
        # impacket's AV_PAIRS cannot parse an empty list
        pairs = impacket_ntlm.AV_PAIRS(challenge["TargetInfoFields"]) if challenge["TargetInfoFields"] else None

        def text(av_id: int) -> str | None:
            value = pairs[av_id] if pairs else None
            return value[1].decode("utf-16-le") if value is not None else None

        time_pair = pairs[impacket_ntlm.NTLMSSP_AV_TIME] if pairs else None
        return {
            "flags": challenge["flags"],
            "server_challenge": challenge["challenge"],
            "target_name": challenge["domain_name"].decode("utf-16-le" if unicode else "latin-1") or None,
            "netbios_computer": text(impacket_ntlm.NTLMSSP_AV_HOSTNAME),
            "netbios_domain": text(impacket_ntlm.NTLMSSP_AV_DOMAINNAME),
            "dns_computer": text(impacket_ntlm.NTLMSSP_AV_DNS_HOSTNAME),
            "dns_domain": text(impacket_ntlm.NTLMSSP_AV_DNS_DOMAINNAME),
            "dns_tree": text(impacket_ntlm.NTLMSSP_AV_DNS_TREENAME),
            "server_time": time_pair[1] if time_pair else None,
        }
    response = impacket_ntlm.NTLMAuthChallengeResponse()
    response.fromString(data)
    unicode = response["flags"] & impacket_ntlm.NTLMSSP_NEGOTIATE_UNICODE
    encoding = "utf-16-le" if unicode else "latin-1"
    return {
        "flags": response["flags"],
        "user": response["user_name"].decode(encoding) or None,
        "domain": response["domain_name"].decode(encoding) or None,
        "workstation": response["host_name"].decode(encoding) or None,
        "lm": response["lanman"] or None,
        "nt": response["ntlm"] or None,
    }


def _assert_agree(data: bytes) -> None:
    ours = _our_view(data)
    assert ours == _spnego_view(data)
    theirs = _impacket_view(data)
    assert {key: ours[key] for key in theirs} == theirs


def _windows_like_challenge(rng: random.Random, names: dict[str, str], build: int) -> bytes:
    """A CHALLENGE as a Windows server builds it, made with pyspnego's message classes."""
    info = spnego_messages.TargetInfo()
    info[spnego_messages.AvId.nb_domain_name] = names["netbios_domain"]
    info[spnego_messages.AvId.nb_computer_name] = names["netbios_computer"]
    info[spnego_messages.AvId.dns_domain_name] = names["dns_domain"]
    info[spnego_messages.AvId.dns_computer_name] = names["dns_computer"]
    info[spnego_messages.AvId.dns_tree_name] = names["dns_tree"]
    info[spnego_messages.AvId.timestamp] = spnego_messages.FileTime.now()
    flags = (
        spnego_messages.NegotiateFlags.unicode
        | spnego_messages.NegotiateFlags.request_target
        | spnego_messages.NegotiateFlags.ntlm
        | spnego_messages.NegotiateFlags.always_sign
        | spnego_messages.NegotiateFlags.target_type_domain
        | spnego_messages.NegotiateFlags.extended_session_security
        | spnego_messages.NegotiateFlags.target_info
        | spnego_messages.NegotiateFlags.version
        | spnego_messages.NegotiateFlags.key_128
        | spnego_messages.NegotiateFlags.key_exch
        | spnego_messages.NegotiateFlags.key_56
        | spnego_messages.NegotiateFlags.sign
        | spnego_messages.NegotiateFlags.seal
    )
    challenge = spnego_messages.Challenge(
        flags=flags,
        server_challenge=rng.randbytes(8),
        target_name=names["netbios_domain"],
        target_info=info,
        version=spnego_messages.Version(10, 0, build),
    )
    return challenge.pack()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    user=NAMES,
    domain=NAMES,
    workstation=NAMES,
    netbios_computer=NAMES,
    netbios_domain=NAMES,
    dns_computer=NAMES,
    dns_domain=NAMES,
    dns_tree=NAMES,
    build=st.sampled_from([14393, 17763, 20348, 26100, 12345]),
    seed=st.integers(0, 2**32),
)
def test_pyspnego_client_against_windows_like_challenge(
    monkeypatch: pytest.MonkeyPatch,
    user: str,
    domain: str,
    workstation: str,
    build: int,
    seed: int,
    **server_names: str,
) -> None:
    monkeypatch.setenv("NETBIOS_COMPUTER_NAME", workstation)
    rng = random.Random(seed)
    client = spnego.client(user, "Secret-1", protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    negotiate = client.step()
    challenge = _windows_like_challenge(rng, server_names, build)
    authenticate = client.step(challenge)
    assert negotiate and authenticate
    for data in (negotiate, challenge, authenticate):
        _assert_agree(data)
    decoded = ntlmssp.decode(challenge)
    assert isinstance(decoded, ntlmssp.ChallengeMessage)
    assert decoded.dns_tree == server_names["dns_tree"]
    assert str(decoded.version) == f"10.0.{build}"
    final = ntlmssp.decode(authenticate)
    assert isinstance(final, ntlmssp.AuthenticateMessage)
    assert final.ntlm_version == ntlmssp.NtlmVersion.NTLMV2
    assert final.workstation == workstation
    assert final.ntlmv2 is not None and final.ntlmv2.av_pairs
    # The client echoes the server's names in its blob and adds its own AV pairs (flags, SPN, channel bindings).
    assert final.ntlmv2.av_flags is not None and final.ntlmv2.av_flags & ntlmssp.AvFlags.MIC_PROVIDED
    assert final.mic is not None


@pytest.fixture
def credential_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, str]]:
    domain, user, password = "CORP", "alice", "Pa55word!"
    path = tmp_path / "ntlm-users"
    path.write_text(f"{domain}:{user}:{password}\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(path))
    yield domain, user, password


def test_pyspnego_client_and_acceptor_round_trip(credential_file: tuple[str, str, str]) -> None:
    domain, user, password = credential_file
    client = spnego.client(f"{domain}\\{user}", password, protocol="ntlm")
    server = spnego.server(protocol="ntlm")
    negotiate = client.step()
    challenge = server.step(negotiate)
    authenticate = client.step(challenge)
    server.step(authenticate)
    assert server.complete
    for data in (negotiate, challenge, authenticate):
        _assert_agree(data)
    final = ntlmssp.decode(authenticate)
    assert isinstance(final, ntlmssp.AuthenticateMessage)
    assert (final.domain, final.user) == (domain, user)


@pytest.mark.parametrize("lm_compat", [0, 1])
def test_pyspnego_ntlmv1_client(
    credential_file: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch, lm_compat: int
) -> None:
    """pyspnego's LM_COMPAT_LEVEL 0/1 sends NTLMv1 (with extended session security when negotiated)."""
    monkeypatch.setenv("LM_COMPAT_LEVEL", str(lm_compat))
    domain, user, password = credential_file
    client = spnego.client(f"{domain}\\{user}", password, protocol="ntlm")
    server = spnego.server(protocol="ntlm")
    challenge = server.step(client.step())
    authenticate = client.step(challenge)
    _assert_agree(authenticate)
    final = ntlmssp.decode(authenticate)
    assert isinstance(final, ntlmssp.AuthenticateMessage)
    assert final.ntlm_version in (ntlmssp.NtlmVersion.NTLMV1, ntlmssp.NtlmVersion.NTLMV1_ESS)
    ess = final.flags & ntlmssp.NegotiateFlags.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY
    assert (final.ntlm_version == ntlmssp.NtlmVersion.NTLMV1_ESS) == bool(ess)


# ---- our builders, read by pyspnego and impacket and accepted by pyspnego's acceptor ----------------------------


@settings(max_examples=60, deadline=None)
@given(
    user=NAMES,
    domain=NAMES,
    workstation=NAMES,
    netbios_computer=NAMES,
    dns_computer=NAMES,
    build=st.sampled_from([14393, 17763, 20348, 26100]),
    seed=st.integers(0, 2**32),
)
def test_built_messages_agree_with_pyspnego_and_impacket(
    user: str, domain: str, workstation: str, netbios_computer: str, dns_computer: str, build: int, seed: int
) -> None:
    rng = random.Random(seed)
    server_challenge, ticks = rng.randbytes(8), rng.randrange(130_000_000_000_000_000, 140_000_000_000_000_000)
    names = {
        spnego_messages.AvId.nb_domain_name: domain,
        spnego_messages.AvId.nb_computer_name: netbios_computer,
        spnego_messages.AvId.dns_computer_name: dns_computer,
    }
    pairs = [*((int(av_id), name) for av_id, name in names.items()), ("timestamp", ticks)]
    info = spnego_messages.TargetInfo(names)
    info[spnego_messages.AvId.timestamp] = spnego_messages.FileTime.unpack(ticks.to_bytes(8, "little"))
    version, spnego_version = ntlmssp.Version(10, 0, build), spnego_messages.Version(10, 0, build)
    challenge = ntlmssp.build_challenge(server_challenge, domain, pairs, version=version)
    flags = int(ntlmssp.CHALLENGE_FLAGS)
    assert challenge == spnego_messages.Challenge(flags, server_challenge, domain, info, spnego_version).pack()

    blob = ntlmssp.ntlmv2_client_blob(ticks, rng.randbytes(8), [*pairs, ("av_flags", 2)])
    lm, nt, key, mic = rng.randbytes(24), rng.randbytes(16) + blob, rng.randbytes(16), rng.randbytes(16)
    authenticate = ntlmssp.build_authenticate(
        user, domain, workstation, lm_response=lm, nt_response=nt, session_key=key, mic=mic, version=version
    )
    flags = int(ntlmssp.AUTHENTICATE_FLAGS)
    theirs = spnego_messages.Authenticate(flags, lm, nt, domain, user, workstation, key, spnego_version, mic)
    assert authenticate == theirs.pack()
    for data in (challenge, authenticate):
        _assert_agree(data)
    decoded = ntlmssp.decode(authenticate)
    assert isinstance(decoded, ntlmssp.AuthenticateMessage) and decoded.ntlmv2 is not None
    assert [pair.value for pair in decoded.ntlmv2.av_pairs[:3]] == [domain, netbios_computer, dns_computer]


def _built_authenticate(challenge: bytes, user: str, domain: str, password: str) -> bytes:
    """An NTLMv2 AUTHENTICATE answering ``challenge``: pyspnego computes the proof, our builders pack it."""
    decoded = ntlmssp.decode(challenge)
    assert isinstance(decoded, ntlmssp.ChallengeMessage) and decoded.target_info is not None
    key = spnego_crypto.ntowfv2(user, spnego_crypto.ntowfv1(password), domain)
    client_challenge = random.Random(7).randbytes(8)
    pairs = [(pair.av_id, pair.raw) for pair in decoded.target_info]
    blob = ntlmssp.ntlmv2_client_blob(datetime.now(UTC), client_challenge, pairs)
    proof = spnego_crypto.hmac_md5(key, decoded.server_challenge + blob)
    lm = spnego_crypto.hmac_md5(key, decoded.server_challenge + client_challenge) + client_challenge
    return ntlmssp.build_authenticate(
        user,
        domain,
        "WS01",
        lm_response=lm,
        nt_response=proof + blob,
        flags=decoded.flags & ~ntlmssp.NegotiateFlags.NTLMSSP_NEGOTIATE_KEY_EXCH,
        version=ntlmssp.Version(10, 0, 19045),
        mic=bytes(16),
    )


def test_pyspnego_acceptor_accepts_a_built_authenticate(credential_file: tuple[str, str, str]) -> None:
    domain, user, password = credential_file
    server = spnego.server(protocol="ntlm")
    challenge = server.step(ntlmssp.build_negotiate())
    assert challenge is not None
    server.step(_built_authenticate(challenge, user, domain, password))
    assert server.complete


def test_pyspnego_acceptor_refuses_a_built_authenticate_with_the_wrong_password(
    credential_file: tuple[str, str, str],
) -> None:
    domain, user, _password = credential_file
    server = spnego.server(protocol="ntlm")
    challenge = server.step(ntlmssp.build_negotiate())
    assert challenge is not None
    with pytest.raises(spnego.exceptions.SpnegoError):
        server.step(_built_authenticate(challenge, user, domain, "not-the-password"))
    assert not server.complete


_WELL_FORMED = [
    case
    for case in load_vectors()
    if "MessageType" in (case[1].get("pyspnego_decode") or {})
    and not ntlmssp.decode(bytes.fromhex(case[1]["hex"])).anomalies
]


@pytest.mark.parametrize(("case_id", "vector", "entry"), _WELL_FORMED, ids=[c[0] for c in _WELL_FORMED])
def test_vectors_agree_with_live_parsers(case_id: str, vector: dict[str, Any], entry: dict[str, Any]) -> None:
    """The corpus messages through today's pyspnego and impacket parsers, not only the recorded decoding."""
    _assert_agree(bytes.fromhex(vector["hex"]))
