"""Ring buffers: a lab capture cut into pieces by ``editcap -c`` (as ``tcpdump -C`` cuts one) gives, read as a
directory, the findings of the whole capture; pieces written out of name order (a wrapped ``tcpdump -W`` ring) are
read in time order; captures that are not pieces of one (overlapping times, a long silence between them, other
names) stay apart; a piece that cannot be read is reported and counted, and the others are analyzed;
``--jobs 2`` gives byte for byte what one process gives on a directory of many captures and rings."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from passive.capture.pcapfile import PacketReader
from passive.capture.rings import JOIN_GAP, group_captures
from tests.corpus import CORPUS

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
# Lab captures whose sessions authenticate over several packets: NTLM (SMTP, IMAP, POP3) and a clear-text login.
SPLIT = ["smtp-ntlm-success-swaks.pcap", "imap-ntlm-success-curl.pcap", "pop3-user-pass-fetchmail.pcap"]


def run(*args: str) -> tuple[list[dict[str, Any]], dict[str, Any], subprocess.CompletedProcess[str]]:
    done = subprocess.run([*LEAKSCOPE, "analyze", "--format", "jsonl", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    summary = next(r for r in records if r.get("type") == "summary")
    return [r for r in records if r.get("type") != "summary"], summary, done


def without_files(records: list[dict[str, Any]]) -> list[str]:
    """The records, sorted, with every file name left out (a split capture's pieces have other names)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "file"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return sorted(json.dumps(strip(r), sort_keys=True) for r in records)


def split(capture: Path, directory: Path, pieces: int, *, pcapng: bool = False) -> list[Path]:
    """``capture`` cut into ``pieces`` files by editcap, as a capture tool's ring writes them."""
    packets = int(subprocess.run(["capinfos", "-Tmrc", str(capture)], capture_output=True, text=True,
                                 check=True).stdout.strip().split(",")[-1])  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    fmt = ["-F", "pcapng"] if pcapng else ["-F", "pcap"]
    per = -(-packets // pieces)
    subprocess.run(["editcap", *fmt, "-c", str(per), str(capture), str(directory / "ring.pcap")], check=True)
    files = sorted(directory.iterdir())
    assert len(files) == pieces
    return files


@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
@pytest.mark.parametrize("capture", SPLIT)
def test_a_session_split_across_three_files_gives_the_findings_of_the_whole(
    tmp_path: Path, capture: str, pcapng: bool
) -> None:
    pieces = split(PCAPS / capture, tmp_path / "ring", 3, pcapng=pcapng)
    whole, whole_summary, _ = run(str(PCAPS / capture))
    joined, summary, _ = run(str(tmp_path / "ring"))
    assert summary["captures"] == 3 and summary["captures_joined"] == 2
    assert in_whole_frames(joined, pieces) == in_whole_frames(whole, [PCAPS / capture])
    assert summary["flows"] == whole_summary["flows"]
    # Each evidence line names the piece that holds its frame, numbered from that piece's start, as Wireshark shows
    # it when that piece is opened; the session's evidence spans the pieces.
    located = {(e["file"], e["frame"]) for r in joined for e in r["evidence"]}
    counts = {str(p): packet_count(p) for p in pieces}
    assert all(1 <= frame <= counts[file] for file, frame in located)
    assert len({file for file, _frame in located}) >= 2
    details_frames_in_their_files(joined)
    apart, apart_summary, _ = run("--no-join", str(tmp_path / "ring"))
    assert "captures_joined" not in apart_summary
    assert without_files(apart) != without_files(whole)  # read apart, the cut sessions are two broken halves


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_session_events_name_the_piece_holding_each_frame(tmp_path: Path, jobs: str) -> None:
    """``--events``: a session's events are numbered in the piece that holds their frame, which is named where it is
    not the piece the session began in; counted on, the frames are those of the whole capture."""
    pieces = split(PCAPS / SPLIT[0], tmp_path / "ring", 3)
    counts = {str(p): packet_count(p) for p in pieces}
    before = {str(p): sum(packet_count(q) for q in pieces[:n]) for n, p in enumerate(pieces)}

    def events(*args: str) -> list[tuple[str, int, str]]:
        done = subprocess.run([*LEAKSCOPE, "analyze", "--format", "json", "--events", "--jobs", jobs, *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=300, check=True)  # fmt: skip
        found = []
        for session in json.loads(done.stdout)["sessions"]:
            for event in session["events"]:
                found.append((event.get("file", session["file"]), event["frame"], event["event"]))
        return found

    joined = events(str(tmp_path / "ring"))
    assert {file for file, _frame, _name in joined} == set(counts)  # the session's events span the three pieces
    assert all(1 <= frame <= counts[file] for file, frame, _name in joined)
    whole = events(str(PCAPS / SPLIT[0]))
    assert sorted((before[file] + frame, name) for file, frame, name in joined) == sorted(
        (frame, name) for _file, frame, name in whole
    )


def test_a_wrapped_ring_is_read_in_time_order(tmp_path: Path) -> None:
    """``tcpdump -W 3 -C`` overwrites its oldest file: the names no longer follow the time."""
    pieces = split(PCAPS / SPLIT[0], tmp_path / "cut", 3)
    ring = tmp_path / "ring"
    ring.mkdir()
    for piece, name in zip(pieces, ["mail2.pcap", "mail0.pcap", "mail1.pcap"], strict=True):
        shutil.copy(piece, ring / name)
    assert group_captures(sorted(str(p) for p in ring.iterdir())) == [
        [str(ring / "mail2.pcap"), str(ring / "mail0.pcap"), str(ring / "mail1.pcap")]
    ]
    whole, _, _ = run(str(PCAPS / SPLIT[0]))
    joined, summary, _ = run(str(ring))
    ring_pieces = [ring / "mail2.pcap", ring / "mail0.pcap", ring / "mail1.pcap"]  # the copies, in time order
    assert summary["captures_joined"] == 2
    assert in_whole_frames(joined, ring_pieces) == in_whole_frames(whole, [PCAPS / SPLIT[0]])


def test_captures_that_are_not_one_ring_stay_apart(tmp_path: Path) -> None:
    capture = PCAPS / SPLIT[0]
    same_time = tmp_path / "copies"
    same_time.mkdir()
    shutil.copy(capture, same_time / "mail1.pcap")
    shutil.copy(capture, same_time / "mail2.pcap")  # the same packets: times overlap
    pieces = split(capture, tmp_path / "late", 3)
    late = pieces[2].with_name("shifted.pcap")
    subprocess.run(["editcap", "-t", str(JOIN_GAP + 60), str(pieces[2]), str(late)], check=True)
    pieces[2].unlink()
    late.rename(pieces[2])  # a silence longer than the idle timeout before the last piece
    other = tmp_path / "late" / "other.pcap"
    shutil.copy(pieces[1], other)  # a name of another pattern

    assert group_captures([str(same_time / "mail1.pcap"), str(same_time / "mail2.pcap")]) == [
        [str(same_time / "mail1.pcap")],
        [str(same_time / "mail2.pcap")],
    ]
    assert group_captures([str(p) for p in pieces]) == [[str(pieces[0]), str(pieces[1])], [str(pieces[2])]]
    assert [str(other)] in group_captures([str(pieces[0]), str(other)])

    copies, summary, _ = run(str(same_time))
    single, single_summary, _ = run(str(capture))
    assert "captures_joined" not in summary and summary["flows"] == 2 * single_summary["flows"]
    assert {r["id"]: r["count"] for r in copies} == {r["id"]: 2 * r["count"] for r in single}  # each seen twice


def test_a_piece_that_cannot_be_read_is_reported_and_the_others_are_analyzed(tmp_path: Path) -> None:
    pieces = split(PCAPS / SPLIT[0], tmp_path / "ring", 3)
    pieces[1].write_bytes(b"not a capture at all, though named like one\n")
    records, summary, done = run(*(str(p) for p in pieces))
    assert done.returncode == 1  # an input could not be read
    assert summary["captures"] == 2 and summary["captures_failed"] == 1
    assert f"{pieces[1]}: not a pcap or pcapng file" in done.stderr
    assert records  # the first piece's session is analyzed


def test_jobs_give_what_one_process_gives_on_a_directory_of_many_captures(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(PCAPS, archive / "lab", ignore=shutil.ignore_patterns("*.json", "*.py", "*.md"))
    for capture in SPLIT:
        split(PCAPS / capture, archive / "rings" / capture.split(".")[0], 3)
    corpus = CORPUS / "pcaps"
    if corpus.is_dir():
        for path in sorted(corpus.glob("*/*.pcap*")):
            target = archive / "corpus" / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    outputs = []
    for jobs in ("1", "2"):
        _records, summary, done = run("--jobs", jobs, str(archive))
        outputs.append(sorted(done.stdout.splitlines()))
        assert summary["captures"] >= 40 and summary["captures_joined"] >= 6
    assert outputs[0] == outputs[1]


# -- archives as capture tools and SOC storage leave them ------------------------------------------------------------


def generated(path: Path, size: str, seed: int, stretch: float) -> Path:
    """A capture of many interleaved mail sessions (bench/gen_capture.py), its packets' offsets from the first
    multiplied by ``stretch``: the sessions then span minutes, as on a real link, so time-based splits cut them."""
    raw = path.with_name(path.name + ".raw")
    command = [sys.executable, str(ROOT / "bench" / "gen_capture.py"), "--size", size, "--seed", str(seed),
               "--mail-fraction", "0.6", "--servers", "5", "--out", str(raw)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    data, out, pos, start = raw.read_bytes(), [], 24, None
    out.append(data[:24])
    while pos + 16 <= len(data):
        sec, usec, caplen, length = struct.unpack_from("<IIII", data, pos)
        start = sec + usec / 1e6 if start is None else start
        moved = round((start + (sec + usec / 1e6 - start) * stretch) * 1e6)
        out.append(struct.pack("<IIII", moved // 1_000_000, moved % 1_000_000, caplen, length))
        out.append(data[pos + 16 : pos + 16 + caplen])
        pos += 16 + caplen
    path.write_bytes(b"".join(out))
    raw.unlink()
    raw.with_name(raw.name + ".json").unlink(missing_ok=True)
    return path


def packet_count(path: Path) -> int:
    return sum(1 for _ in PacketReader(path))


def in_whole_frames(records: list[dict[str, Any]], pieces: list[Path]) -> list[str]:
    """``without_files``, each evidence frame first counted as in the capture the ``pieces`` (in time order) were cut
    from: evidence names the piece that holds its frame, counted from that piece's start. An NTLM exchange's
    ``frames`` are left out: they are those of its first step's piece only (checked by
    :func:`details_frames_in_their_files`)."""
    before, total = {}, 0
    for piece in pieces:
        before[str(piece)], total = total, total + packet_count(piece)

    def renumber(value: Any) -> Any:
        if isinstance(value, dict):
            if "file" in value and "frame" in value:
                value = {**value, "frame": value["frame"] + before[value["file"]]}
            if "frames" in value:
                value = {k: v for k, v in value.items() if k != "frames"}
            return {k: renumber(v) for k, v in value.items()}
        if isinstance(value, list):
            return [renumber(v) for v in value]
        return value

    return without_files([renumber(r) for r in records])


def details_frames_in_their_files(records: list[dict[str, Any]]) -> int:
    """How many details name frames; asserts each of those frames is in its details' file."""
    counts: dict[str, int] = {}
    named = 0
    for record in records:
        for detail in record.get("details", []):
            if detail.get("frames"):
                named += 1
                file = detail["file"]
                counts.setdefault(file, packet_count(Path(file)))
                assert all(1 <= frame <= counts[file] for frame in detail["frames"]), detail
    return named


def same_with_jobs(*args: str) -> dict[str, Any]:
    """The run's summary, once ``--jobs 2`` was found to give the very lines of ``--jobs 1``."""
    outputs, summaries = [], []
    for jobs in ("1", "2"):
        _records, summary, done = run("--jobs", jobs, *args)
        outputs.append(sorted(done.stdout.splitlines()))
        summaries.append(summary)
    assert outputs[0] == outputs[1]
    return summaries[0]


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
def test_a_tcpdump_ring_with_a_compressed_piece_is_one_stream(tmp_path: Path) -> None:
    """``tcpdump -C 1 -w ring.pcap`` writes ring.pcap, ring.pcap1, ring.pcap2: the first name has no counter. An
    archive compresses the pieces it keeps (ring.pcap1.gz) beside the one still written."""
    whole = generated(tmp_path / "whole.pcap", "2M", 1, 200)
    ring = tmp_path / "ring"
    ring.mkdir()
    user = ["-Z", "root"] if os.geteuid() == 0 else []
    subprocess.run(["tcpdump", "-r", str(whole), "-w", str(ring / "ring.pcap"), "-C", "1", *user], check=True,
                   capture_output=True)  # fmt: skip
    pieces = [ring / "ring.pcap", ring / "ring.pcap1", ring / "ring.pcap2"]
    assert sorted(ring.iterdir()) == pieces
    reference, _, _ = run(str(whole))
    records, summary, _ = run(str(ring))
    assert summary["captures_joined"] == 2
    assert in_whole_frames(records, pieces) == in_whole_frames(reference, [whole])
    assert details_frames_in_their_files(records) > 0
    packed = ring / "ring.pcap1.gz"
    packed.write_bytes(gzip.compress(pieces[1].read_bytes()))
    pieces[1].unlink()
    pieces[1] = packed
    records, summary, _ = run(str(ring))
    assert summary["captures_joined"] == 2
    assert in_whole_frames(records, pieces) == in_whole_frames(reference, [whole])
    assert same_with_jobs(str(ring))["captures_joined"] == 2


def test_two_sensors_rings_in_one_directory_stay_apart(tmp_path: Path) -> None:
    """Two sensors cut their captures every 20 s (``editcap -i 20``, as ``tcpdump -G 20`` does) into one directory,
    their names differing in a digit: a busy link and a quiet one, whose last packet before a switch comes well before
    the busy one's. Each sensor's pieces are one stream; a piece is never joined to the other sensor's."""
    busy = generated(tmp_path / "busy.pcap", "2M", 1, 200)
    quiet = generated(tmp_path / "quiet.pcap", "1M", 7, 1000)
    archive = tmp_path / "archive"
    archive.mkdir()
    for number, capture in enumerate([busy, quiet], 1):
        subprocess.run(["editcap", "-i", "20", str(capture), str(archive / f"sensor{number}.pcap")], check=True)
    sensors = [sorted(archive.glob("sensor1_*")), sorted(archive.glob("sensor2_*"))]
    assert len(sensors[0]) >= 4 and len(sensors[1]) >= 4
    assert sorted(group_captures(sorted(str(p) for p in archive.iterdir()))) == [
        [str(p) for p in sensors[0]],
        [str(p) for p in sensors[1]],
    ]
    reference, _, _ = run(str(busy), str(quiet))
    records, summary, _ = run(str(archive))
    assert summary["captures_joined"] == len(sensors[0]) + len(sensors[1]) - 2
    whole = {str(busy): sensors[0], str(quiet): sensors[1]}
    expected = sorted(line for capture, pieces in whole.items() for line in in_whole_frames(
        [r for r in reference if r["evidence"][0]["file"] == capture], [Path(capture)]))  # fmt: skip
    got = sorted(line for pieces in whole.values() for line in in_whole_frames(
        [r for r in records if Path(r["evidence"][0]["file"]) in pieces], pieces))  # fmt: skip
    assert got == expected
    same_with_jobs(str(archive))


def test_links_in_a_walked_ring_are_read_once_and_a_dangling_one_is_noted(tmp_path: Path) -> None:
    """Capture hosts keep a ``latest`` link to the piece being written, and links the rotation left dangling."""
    pieces = split(PCAPS / SPLIT[0], tmp_path / "ring", 3)
    whole, _, _ = run(str(PCAPS / SPLIT[0]))
    (tmp_path / "ring" / "latest.pcap").symlink_to(pieces[2].name)
    (tmp_path / "ring" / "gone.pcap").symlink_to("mail_99999_20250101000000.pcap")
    records, summary, done = run(str(tmp_path / "ring"))
    assert done.returncode == 0, done.stderr
    assert summary["captures"] == 3 and summary["captures_joined"] == 2 and summary["inputs_skipped"] == 2
    assert in_whole_frames(records, pieces) == in_whole_frames(whole, [PCAPS / SPLIT[0]])
    assert f"{tmp_path / 'ring' / 'latest.pcap'} is {pieces[2]}, read once; skipped" in done.stderr
    assert f"{tmp_path / 'ring' / 'gone.pcap'} is a dangling link; skipped" in done.stderr
    same_with_jobs(str(tmp_path / "ring"))


def test_a_live_rings_last_piece_cut_mid_record_is_named_in_its_warning(tmp_path: Path) -> None:
    """The file a capture tool is still writing ends in the middle of a record; in an archive of many files the
    warning must say which file it is, and the pieces before it are one stream as ever."""
    pieces = split(PCAPS / SPLIT[0], tmp_path / "ring", 3)
    data = pieces[2].read_bytes()
    pieces[2].write_bytes(data[: len(data) - 7])
    _records, summary, done = run(str(tmp_path / "ring"))
    assert done.returncode == 0, done.stderr
    assert summary["captures"] == 3 and summary["captures_joined"] == 2
    assert f"leakscope: warning: {pieces[2]}: truncated capture: frame " in done.stderr
    assert same_with_jobs(str(tmp_path / "ring"))["captures_joined"] == 2


def test_a_piece_read_apart_says_nothing_of_relaying_for_sessions_it_joined_mid_way(tmp_path: Path) -> None:
    """The oldest file of a wrapped ring, a piece after a clock step, ``--no-join``: a session that authenticated in
    an earlier piece (or before the capture began) is picked up mid-stream, its ``MAIL FROM``/``RCPT TO`` without
    its ``AUTH``. Whether the client authenticated is unknown, so no relaying verdict: the whole capture has none."""
    whole = generated(tmp_path / "whole.pcap", "2M", 1, 200)
    pieces = split(whole, tmp_path / "ring", 3)
    reference, _, _ = run(str(whole))
    assert not [r for r in reference if r["type"] == "open-relay"]
    for args in ([str(pieces[2])], ["--no-join", str(tmp_path / "ring")]):
        records, summary, _ = run(*args)
        assert summary["flows_partial"] > 0 and summary["sessions"]["smtp"] > 0
        assert not [r for r in records if r["type"] == "open-relay"], args
    relayed, _, _ = run(str(PCAPS / "smtp-open-relay-swaks.pcap"))  # an unauthenticated relay seen from its start
    assert [r["verdict"] for r in relayed if r["type"] == "open-relay"] == ["relays-for-internal-clients"]


def test_a_thousand_captures_of_one_day_named_alike_stay_apart(tmp_path: Path) -> None:
    """An auditor's directory of one capture per host (``host-1.pcap`` … ``host-1000.pcap``) over the same hour:
    names that differ only in their digits, times that overlap, so no file goes on another. Each host's session is
    counted once, with one process and two."""
    capture = PCAPS / "smtp-auth-plain-swaks.pcap"
    data = capture.read_bytes()
    archive = tmp_path / "hosts"
    archive.mkdir()
    for host in range(1, 1001):
        records, pos = [data[:24]], 24
        while pos + 16 <= len(data):
            sec, usec, caplen, length = struct.unpack_from("<IIII", data, pos)
            moved = sec * 1_000_000 + usec + host  # a microsecond apart: each file's 4.5 ms overlap the others'
            header = struct.pack("<IIII", moved // 1_000_000, moved % 1_000_000, caplen, length)
            records.append(header + data[pos + 16 : pos + 16 + caplen])
            pos += 16 + caplen
        (archive / f"host-{host}.pcap").write_bytes(b"".join(records))
    single, _, _ = run(str(capture))
    summary = same_with_jobs(str(archive))
    assert summary["captures"] == 1000 and "captures_joined" not in summary
    records, _, _ = run(str(archive))
    assert {r["id"]: r["count"] for r in records} == {r["id"]: 1000 * r["count"] for r in single}


def test_copies_of_a_one_packet_capture_stay_apart_and_a_one_packet_piece_joins(tmp_path: Path) -> None:
    """Two copies of a one-packet capture have a first packet at the last one's time: they were joined, the copy's
    packet read as a retransmission. A ring's tool never writes a file whose times lie within its predecessor's;
    a last piece of one later packet still goes on its ring."""
    capture = PCAPS / SPLIT[0]
    copies = tmp_path / "copies"
    copies.mkdir()
    subprocess.run(["editcap", "-r", str(capture), str(copies / "banner1.pcap"), "4"], check=True)  # the greeting
    shutil.copy(copies / "banner1.pcap", copies / "banner2.pcap")
    assert group_captures([str(copies / "banner1.pcap"), str(copies / "banner2.pcap")]) == [
        [str(copies / "banner1.pcap")],
        [str(copies / "banner2.pcap")],
    ]
    records, summary, _ = run(str(copies))
    single, single_summary, _ = run(str(copies / "banner1.pcap"))
    assert "captures_joined" not in summary and summary["retransmissions"] == 0
    assert summary["flows"] == 2 * single_summary["flows"] == 2
    assert {r["id"]: r["count"] for r in records} == {r["id"]: 2 * r["count"] for r in single}

    packets = sum(1 for _ in PacketReader(capture))
    ring = tmp_path / "ring"
    ring.mkdir()
    subprocess.run(["editcap", "-F", "pcap", "-c", str(packets - 1), str(capture), str(ring / "ring.pcap")], check=True)
    pieces = sorted(str(p) for p in ring.iterdir())
    assert sum(1 for _ in PacketReader(pieces[1])) == 1 and group_captures(pieces) == [pieces]
    whole, _, _ = run(str(capture))
    joined, joined_summary, _ = run(str(ring))
    assert joined_summary["captures_joined"] == 1 and without_files(joined) == without_files(whole)


def test_a_clock_stepped_back_a_little_at_a_file_switch_keeps_the_ring_whole(tmp_path: Path) -> None:
    """A leap second or an NTP step at a file switch gives the next piece a first packet before the last one's:
    within STEP_BACK, with the piece's name after the last one's, it goes on the ring (the findings are those of
    the pieces concatenated, the step inside one file); a larger step, or a name before, keeps it apart."""
    from passive.capture.rings import STEP_BACK
    from tests.helpers_capture import pcap_bytes

    capture = PCAPS / SPLIT[0]
    packets = [packet.data for packet in PacketReader(capture)]
    per = -(-len(packets) // 3)
    timed = [(2_000_000_000 + n * 0.2, data) for n, data in enumerate(packets)]  # the pieces last 1.6 s or more
    pieces = [timed[:per], timed[per : 2 * per], timed[2 * per :]]

    def ring(name: str, step: float, names: tuple[str, str, str] = ("ring.pcap", "ring.pcap1", "ring.pcap2")) -> Path:
        """The three pieces, the third's times ``step`` seconds earlier, and their concatenation
        (``NAME-whole.pcap``: the step inside one file)."""
        directory = tmp_path / name
        directory.mkdir()
        third = [(ts - step, data) for ts, data in pieces[2]]
        for piece, frames in zip(names, (pieces[0], pieces[1], third), strict=True):
            (directory / piece).write_bytes(pcap_bytes(frames))
        (tmp_path / f"{name}-whole.pcap").write_bytes(pcap_bytes([*pieces[0], *pieces[1], *third]))
        return directory

    step = STEP_BACK / 2
    assert pieces[2][0][0] - step < pieces[1][-1][0]  # the third piece begins before the second ends
    small = ring("small", step)
    files = [str(small / name) for name in ("ring.pcap", "ring.pcap1", "ring.pcap2")]
    assert group_captures(files) == [files]
    joined, summary, _ = run(str(small))
    whole, _, _ = run(str(tmp_path / "small-whole.pcap"))
    assert summary["captures_joined"] == 2
    assert in_whole_frames(joined, [Path(f) for f in files]) == in_whole_frames(whole, [tmp_path / "small-whole.pcap"])
    assert any(r["type"] == "ntlm-info" for r in joined)

    large = ring("large", STEP_BACK + 0.4)  # more than STEP_BACK before the second piece's last packet
    files = [str(large / name) for name in ("ring.pcap", "ring.pcap1", "ring.pcap2")]
    assert group_captures(files) == [files[:2], files[2:]]
    backwards = ring("backwards", step, ("ring.pcap1", "ring.pcap2", "ring.pcap"))  # the third piece named first
    files = [str(backwards / name) for name in ("ring.pcap", "ring.pcap1", "ring.pcap2")]
    assert group_captures(files) == [files[:1], files[1:]]


@pytest.mark.parametrize("tool", ["zstd", "gzip"])
def test_a_compressed_pcapng_piece_cut_in_its_trailer_stays_in_its_ring(tmp_path: Path, tool: str) -> None:
    """Grouping reads a pcapng piece's first 64 KiB for its interfaces: a compressed piece shorter than that and
    cut short (still being written) raised at the cut, lost what it had decoded and was read apart from its ring.
    Here the cut takes only the stream's last bytes (checksum, trailer): every packet is there, and the ring gives
    the whole capture's findings, with a warning naming the piece."""
    pieces = split(PCAPS / SPLIT[0], tmp_path / "ring", 3, pcapng=True)
    for piece in pieces:
        subprocess.run([tool, "-q", *(["--rm"] if tool == "zstd" else []), piece], check=True)  # replaced
    last = Path(f"{pieces[2]}.{'zst' if tool == 'zstd' else 'gz'}")
    last.write_bytes(last.read_bytes()[:-3])
    whole, _, _ = run(str(PCAPS / SPLIT[0]))
    records, summary, done = run(str(tmp_path / "ring"))
    assert summary["captures"] == 3 and summary["captures_joined"] == 2, done.stderr
    assert f"leakscope: warning: {last}: truncated capture: {tool} stream ends after frame " in done.stderr
    packed = [Path(f"{piece}.{'zst' if tool == 'zstd' else 'gz'}") for piece in pieces]
    assert in_whole_frames(records, packed) == in_whole_frames(whole, [PCAPS / SPLIT[0]])
