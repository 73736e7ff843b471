"""The zip checks on their own: size and ratio caps at their boundaries, encrypted members, zip64 directories.

Archives are built here with ``zipfile`` and ``struct``; expected numbers come from the archives themselves.
Equivalent mutants: ``extract_zip``'s running total (``written_total``) only ever lowers a member's cap below its
declared size, and ``check_archive`` has already refused any archive whose declared sizes add up past the limit,
while ``zipfile`` never yields more than a member declares (it raises "Bad CRC-32" instead): a wrong running total
cannot change what is written. The cap itself is what ``_copy_capped`` enforces, tested below on a stream that
yields more than it may.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path

import pytest

from voicefinetune.zipsafe import (
    UnsafeArchive,
    ZipLimits,
    _copy_capped,
    directory_totals,
    extract_zip,
    inspect_zip,
)

MIB = 1024 * 1024  # the documented size below which a member is never refused for its ratio


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _sizes(path: Path) -> tuple[int, int]:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    return sum(i.file_size for i in infos), sum(i.compress_size for i in infos)


# --- extraction caps -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [0, 1, 3 * MIB])
def test_a_stream_longer_than_its_cap_stops_before_writing_past_it(extra):
    cap = 2 * MIB + 5
    source, target = io.BytesIO(os.urandom(cap + extra)), io.BytesIO()
    if extra == 0:
        assert _copy_capped(source, target, cap, "a.wav") == cap
        assert target.getvalue() == source.getvalue()
        return
    with pytest.raises(UnsafeArchive) as caught:
        _copy_capped(source, target, cap, "a.wav")
    assert (
        str(caught.value) == "zip member 'a.wav' expands beyond its declared size or the size limit: zip bomb"
    )
    assert len(target.getvalue()) <= cap


def test_extraction_writes_every_member_whole(tmp_path):
    members = {"train.jsonl": b"{}\n", "data/a.wav": os.urandom(3 * MIB + 7), "data/b.wav": os.urandom(10)}
    archive = _zip(tmp_path / "ds.zip", members)
    written = extract_zip(archive, tmp_path / "out", ZipLimits(max_total_bytes=3 * MIB + 20))
    assert [str(p) for p in written] == list(members)
    assert {name: (tmp_path / "out" / name).read_bytes() for name in members} == members


def test_total_size_cap_at_its_boundary(tmp_path):
    archive = _zip(tmp_path / "ds.zip", {"a": os.urandom(600), "b": os.urandom(400)})
    assert [str(p) for p in inspect_zip(archive, ZipLimits(max_total_bytes=1000))] == ["a", "b"]
    with pytest.raises(UnsafeArchive) as caught:
        inspect_zip(archive, ZipLimits(max_total_bytes=999))
    assert str(caught.value) == (
        "the zip expands to 1000 bytes; the limit is 999 (is it a zip bomb?): keep the dataset under the limit or split it"
    )


def test_member_count_at_its_boundary(tmp_path):
    archive = _zip(tmp_path / "ds.zip", {f"{i}.wav": b"x" for i in range(3)})
    assert len(inspect_zip(archive, ZipLimits(max_members=3))) == 3
    with pytest.raises(UnsafeArchive) as caught:
        inspect_zip(archive, ZipLimits(max_members=2))
    assert str(caught.value) == "the zip has 3 members; the limit is 2"


# --- compression ratio -----------------------------------------------------------------------------------------------


def test_a_dense_member_of_exactly_1_mib_is_refused_and_one_byte_less_is_not(tmp_path):
    below = _zip(tmp_path / "below.zip", {"data/a.wav": bytes(MIB - 1)})
    assert [str(p) for p in inspect_zip(below)] == ["data/a.wav"]
    at = _zip(tmp_path / "at.zip", {"data/a.wav": bytes(MIB)})
    size, compressed = _sizes(at)
    with pytest.raises(UnsafeArchive) as caught:
        inspect_zip(at)
    assert str(caught.value) == (
        f"zip member 'data/a.wav' expands {size / compressed:.0f}x ({size} bytes from {compressed}); "
        "the limit is 200x: this looks like a zip bomb"
    )


def test_many_small_dense_members_are_refused_as_a_whole(tmp_path):
    """Each member stays under 1 MiB (never refused alone); together they expand past the ratio."""
    refused = _zip(tmp_path / "bomb.zip", {f"data/{i}.wav": bytes(MIB // 2) for i in range(2)})
    size, compressed = _sizes(refused)
    assert size == MIB and size > 200 * compressed
    with pytest.raises(UnsafeArchive) as caught:
        inspect_zip(refused)
    assert (
        str(caught.value)
        == f"the zip expands {size / compressed:.0f}x; the limit is 200x: this looks like a zip bomb"
    )
    under = _zip(tmp_path / "under.zip", {"data/0.wav": bytes(MIB // 2), "data/1.wav": bytes(MIB // 2 - 1)})
    assert len(inspect_zip(under)) == 2
    with pytest.raises(UnsafeArchive):
        extract_zip(refused, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_ratio_exactly_at_the_limit_is_accepted(tmp_path):
    stored = _zip(tmp_path / "stored.zip", {"data/a.wav": os.urandom(MIB)}, compression=zipfile.ZIP_STORED)
    assert _sizes(stored) == (MIB, MIB)  # ratio 1.0, for the member and for the whole archive
    assert [str(p) for p in inspect_zip(stored, ZipLimits(max_ratio=1.0))] == ["data/a.wav"]
    with pytest.raises(UnsafeArchive, match="expands 1x"):
        inspect_zip(stored, ZipLimits(max_ratio=0.99))


# --- member kinds ------------------------------------------------------------------------------------------------


def _set_encrypted(path: Path, member: str) -> None:
    """Set bit 0 ("encrypted") of a member's general purpose flags, in its local header and its directory entry,
    as a password-protecting zip tool does."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        local = archive.getinfo(member).header_offset
    data[local + 6] |= 0x1  # local file header: flags at 6
    central = data.find(b"PK\x01\x02")
    while central >= 0:
        name_length = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46 : central + 46 + name_length] == member.encode():
            data[central + 8] |= 0x1  # central directory entry: flags at 8
        central = data.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(data))


def test_an_encrypted_member_is_refused_before_anything_is_written(tmp_path):
    path = _zip(tmp_path / "locked.zip", {"train.jsonl": b"{}\n", "data/a.wav": b"ciphertext"})
    _set_encrypted(path, "data/a.wav")
    with zipfile.ZipFile(path) as check:
        assert check.getinfo("data/a.wav").flag_bits & 0x1
    expected = "zip member 'data/a.wav' is encrypted: zip the dataset without a password"
    for attempt in (lambda: inspect_zip(path), lambda: extract_zip(path, tmp_path / "out")):
        with pytest.raises(UnsafeArchive) as caught:
            attempt()
        assert str(caught.value) == expected
    assert not (tmp_path / "out").exists()


# --- zip64 -------------------------------------------------------------------------------------------------------------


def _as_zip64(path: Path, *, count_marker: bool, size_marker: bool) -> tuple[int, int]:
    """Rewrite ``path``'s end of central directory the zip64 way (record + locator + a classic record whose count
    and/or directory size say "see zip64"); returns the true (member count, directory bytes)."""
    data = path.read_bytes()
    end = data.rfind(b"PK\x05\x06")
    _, _, _, count, directory_bytes, directory_offset, _ = struct.unpack("<4HIIH", data[end + 4 : end + 22])
    record = struct.pack(
        "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, directory_bytes, directory_offset
    )
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, end, 1)
    classic = struct.pack(
        "<4s4HIIH",
        b"PK\x05\x06",
        0,
        0,
        0xFFFF if count_marker else count,
        0xFFFF if count_marker else count,
        0xFFFFFFFF if size_marker else directory_bytes,
        directory_offset,
        0,
    )
    path.write_bytes(data[:end] + record + locator + classic)
    return count, directory_bytes


@pytest.mark.parametrize(("count_marker", "size_marker"), [(True, True), (True, False), (False, True)])
def test_a_zip64_end_of_directory_gives_the_true_member_count(tmp_path, count_marker, size_marker):
    members = {"train.jsonl": b"{}\n", "data/a.wav": b"a" * 100, "data/b.wav": b"b" * 50}
    path = _zip(tmp_path / "ds.zip", members)
    count, directory_bytes = _as_zip64(path, count_marker=count_marker, size_marker=size_marker)
    assert count == 3
    with zipfile.ZipFile(path) as check:  # the standard library reads it as a valid archive
        assert check.namelist() == list(members)
    assert directory_totals(path) == (3, directory_bytes)
    assert [str(p) for p in inspect_zip(path)] == list(members)
    with pytest.raises(UnsafeArchive) as caught:
        inspect_zip(path, ZipLimits(max_members=2))
    assert str(caught.value) == "the zip has 3 members; the limit is 2"


def test_a_zip64_marker_without_its_locator_is_taken_at_its_word(tmp_path):
    path = _zip(tmp_path / "ds.zip", {"a": b"1"})
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 0xFFFF, 0xFFFF)
    path.write_bytes(bytes(data))
    _, directory_bytes = _sizes_of_directory(path)
    assert directory_totals(path) == (0xFFFF, directory_bytes)
    with pytest.raises(UnsafeArchive) as caught:
        inspect_zip(path)
    assert str(caught.value) == "the zip has 65535 members; the limit is 20000"


def _sizes_of_directory(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    end = data.rfind(b"PK\x05\x06")
    return struct.unpack("<HI", data[end + 10 : end + 16])


def test_a_central_directory_too_large_for_the_member_limit_is_refused(tmp_path):
    """One member's directory entry is 46 bytes plus its name: a 466-byte name makes exactly 512 bytes."""
    fits = _zip(tmp_path / "fits.zip", {"d" * 466: b""})
    assert _sizes_of_directory(fits) == (1, 512)
    assert len(inspect_zip(fits, ZipLimits(max_members=1))) == 1
    over = _zip(tmp_path / "over.zip", {"d" * 467: b""})
    assert _sizes_of_directory(over) == (1, 513)
    with pytest.raises(UnsafeArchive) as caught:
        inspect_zip(over, ZipLimits(max_members=1))
    assert str(caught.value) == "the zip's central directory is 513 bytes, too large for 1 members"


def test_not_a_zip_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "ds.zip"
    path.write_bytes(b"PK\x05\x06 too short")
    assert directory_totals(path) is None
    with pytest.raises(
        UnsafeArchive, match=r"^the dataset is not a readable zip file \(.*\): upload a \.zip archive$"
    ):
        inspect_zip(path)


# --- names, kinds and the end-of-directory record -------------------------------------------------------------------


def test_a_space_is_a_name_character_and_a_lone_dot_is_no_name(tmp_path):
    spaced = _zip(tmp_path / "spaced.zip", {"data/my clip.wav": b"x", "./data//b.wav": b"y"})
    assert [str(p) for p in inspect_zip(spaced)] == ["data/my clip.wav", "data/b.wav"]
    for name, message in [
        (".", "zip member '.' has an empty name"),
        ("a\x1fb", "zip member 'a\\x1fb' has control characters in its name: rename it"),
    ]:
        with pytest.raises(UnsafeArchive) as caught:
            inspect_zip(_zip(tmp_path / "bad.zip", {name: b"x"}))
        assert str(caught.value) == message


def test_a_fifo_member_is_refused(tmp_path):
    path = tmp_path / "fifo.zip"
    with zipfile.ZipFile(path, "w") as archive:
        fifo = zipfile.ZipInfo("data/pipe")
        fifo.external_attr = (0o010644) << 16  # S_IFIFO | rw-r--r--
        archive.writestr(fifo, b"")
    with pytest.raises(UnsafeArchive) as caught:
        inspect_zip(path)
    assert str(caught.value) == "zip member 'data/pipe' is not a regular file or folder: remove it"


def test_a_directory_that_understates_its_member_count_is_counted_entry_by_entry(tmp_path):
    path = _zip(tmp_path / "ds.zip", {f"{i}.wav": b"x" for i in range(3)})
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 1, 1)  # the record claims 1 member; the directory holds 3
    path.write_bytes(bytes(data))
    assert directory_totals(path)[0] == 1
    with pytest.raises(UnsafeArchive) as caught:
        inspect_zip(path, ZipLimits(max_members=2))
    assert str(caught.value) == "the zip has 3 members; the limit is 2"


def test_the_record_is_found_at_the_very_start_of_an_empty_zip_and_at_the_end_of_a_decoy(tmp_path):
    empty = _zip(tmp_path / "empty.zip", {})
    assert empty.stat().st_size == 22 and directory_totals(empty) == (0, 0)
    decoy = struct.pack("<4s4HIIH", b"PK\x05\x06", 0, 0, 60_000, 60_000, 30_000_000, 0, 0)
    path = _zip(
        tmp_path / "decoy.zip", {"data/a.wav": decoy + os.urandom(64)}, compression=zipfile.ZIP_STORED
    )
    count, directory_bytes = _sizes_of_directory(path)
    assert directory_totals(path) == (count, directory_bytes) == (1, 46 + len("data/a.wav"))
    assert [str(p) for p in inspect_zip(path)] == ["data/a.wav"]


def test_a_truncated_record_is_not_a_zip(tmp_path):
    path = tmp_path / "cut.zip"
    path.write_bytes(os.urandom(100).replace(b"PK", b"pk") + b"PK\x05\x06\x00\x00")
    assert directory_totals(path) is None


def test_extraction_into_an_existing_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()
    archive = _zip(tmp_path / "ds.zip", {"data/a.wav": b"abc"})
    assert [str(p) for p in extract_zip(archive, tmp_path / "out")] == ["data/a.wav"]
    assert (tmp_path / "out" / "data" / "a.wav").read_bytes() == b"abc"
