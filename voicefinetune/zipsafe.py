"""Opening untrusted zip archives safely: every member stays inside the extraction folder.

The archive's central directory is checked before anything is written (names, file types, member count, declared
sizes, compression ratio), and extraction counts the bytes it actually writes, so a member whose real size
exceeds what it declared stops the extraction instead of filling the disk.
"""

from __future__ import annotations

import re
import shutil
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .diskfull import DiskFull, is_disk_full
from .schemas import InvalidInput

# Members smaller than this are never refused for their ratio: a short silent clip compresses ~1000:1.
RATIO_CHECK_MIN_BYTES = 1024 * 1024
DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
COPY_CHUNK = 1024 * 1024
# The end-of-central-directory record: signature, then (at 10) total entries (2 bytes), (12) directory size (4 bytes).
EOCD_SIGNATURE = b"PK\x05\x06"
EOCD_SIZE = 22
EOCD_SEARCH = EOCD_SIZE + 0xFFFF  # the record plus the longest archive comment
ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
# A dataset member's directory entry (46 bytes + name + extras) stays well under this on average.
DIRECTORY_BYTES_PER_MEMBER = 512


class UnsafeArchive(InvalidInput):
    """The archive is not a zip, or it could write outside its folder or exhaust the disk."""


@dataclass(frozen=True)
class ZipLimits:
    max_members: int = 20_000
    max_total_bytes: int = 4 * 1024**3
    max_ratio: float = 200.0


def _member_path(name: str) -> PurePosixPath:
    """The member's relative path, or UnsafeArchive when it could land outside the extraction folder."""
    if "\x00" in name or any(ord(ch) < 32 for ch in name):
        raise UnsafeArchive(f"zip member {name!r} has control characters in its name: rename it")
    # Some Windows zip tools (PowerShell's Compress-Archive) write '\\' as the separator: read it as '/'.
    posix = name.replace("\\", "/")
    if posix.startswith("/") or DRIVE_LETTER.match(posix):
        raise UnsafeArchive(
            f"unsafe path: zip member {name!r} is an absolute path: store paths relative to the dataset folder"
        )
    parts = [part for part in posix.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"unsafe path: zip member {name!r} points outside the archive ('..'): remove it")
    if not parts:
        raise UnsafeArchive(f"zip member {name!r} has an empty name")
    return PurePosixPath(*parts)


def _unix_mode(info: zipfile.ZipInfo) -> int:
    # Zips made on Unix keep st_mode in the high 16 bits of external_attr; other systems leave them 0.
    return (info.external_attr >> 16) & 0xFFFF


def _check_member_type(info: zipfile.ZipInfo) -> None:
    kind = stat.S_IFMT(_unix_mode(info))
    if kind == stat.S_IFLNK:
        raise UnsafeArchive(
            f"zip member {info.filename!r} is a symbolic link (symlink): replace it with the real file"
        )
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchive(f"zip member {info.filename!r} is not a regular file or folder: remove it")
    if info.flag_bits & 0x1:
        raise UnsafeArchive(f"zip member {info.filename!r} is encrypted: zip the dataset without a password")


def check_archive(archive: zipfile.ZipFile, limits: ZipLimits) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Check the central directory; return the file members (not folders) with their safe relative paths."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise UnsafeArchive(f"the zip has {len(infos)} members; the limit is {limits.max_members}")
    members: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    seen: set[PurePosixPath] = set()
    total = compressed = 0
    for info in infos:
        path = _member_path(info.filename)
        _check_member_type(info)
        if info.is_dir() or info.filename.endswith("\\") or stat.S_ISDIR(_unix_mode(info)):
            continue
        if path in seen:
            raise UnsafeArchive(f"zip member {info.filename!r} appears twice: keep one copy")
        seen.add(path)
        total += info.file_size
        compressed += info.compress_size
        if info.file_size >= RATIO_CHECK_MIN_BYTES and info.file_size > limits.max_ratio * max(
            info.compress_size, 1
        ):
            raise UnsafeArchive(
                f"zip member {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}x "
                f"({info.file_size} bytes from {info.compress_size}); the limit is {limits.max_ratio:.0f}x: "
                "this looks like a zip bomb"
            )
        members.append((info, path))
    if total > limits.max_total_bytes:
        raise UnsafeArchive(
            f"the zip expands to {total} bytes; the limit is {limits.max_total_bytes} (is it a zip bomb?): "
            "keep the dataset under the limit or split it"
        )
    if total >= RATIO_CHECK_MIN_BYTES and total > limits.max_ratio * max(compressed, 1):
        raise UnsafeArchive(
            f"the zip expands {total / max(compressed, 1):.0f}x; the limit is {limits.max_ratio:.0f}x: "
            "this looks like a zip bomb"
        )
    return members


def _copy_capped(source, target, cap: int, name: str) -> int:
    written = 0
    while chunk := source.read(COPY_CHUNK):
        written += len(chunk)
        if written > cap:
            raise UnsafeArchive(
                f"zip member {name!r} expands beyond its declared size or the size limit: zip bomb"
            )
        target.write(chunk)
    return written


def directory_totals(zip_path: Path) -> tuple[int, int] | None:
    """(member count, central directory bytes) from the end-of-central-directory record (zip64 too), read from the
    file's tail without parsing the directory; None when there is no such record (not a zip)."""
    with open(zip_path, "rb") as handle:
        size = handle.seek(0, 2)
        start = max(0, size - EOCD_SEARCH)
        handle.seek(start)
        tail = handle.read()
        at = tail.rfind(EOCD_SIGNATURE)
        if at < 0 or len(tail) - at < EOCD_SIZE:
            return None
        count, directory_bytes = struct.unpack("<HI", tail[at + 10 : at + 16])
        if count != 0xFFFF and directory_bytes != 0xFFFFFFFF:
            return count, directory_bytes
        locator = tail[at - 20 : at] if at >= 20 else b""
        if not locator.startswith(ZIP64_LOCATOR_SIGNATURE):
            return count, directory_bytes
        (record_offset,) = struct.unpack("<Q", locator[8:16])
        handle.seek(record_offset)
        record = handle.read(56)
        if len(record) < 56 or not record.startswith(ZIP64_EOCD_SIGNATURE):
            return count, directory_bytes
        count64, directory64 = struct.unpack("<QQ", record[32:48])
        return count64, directory64


def _check_directory_size(zip_path: Path, limits: ZipLimits) -> None:
    """Refuse too many members before ``zipfile`` reads the central directory (which holds every entry in memory)."""
    totals = directory_totals(zip_path)
    if totals is None:
        return  # not a zip: zipfile says so
    count, directory_bytes = totals
    if count > limits.max_members:
        raise UnsafeArchive(f"the zip has {count} members; the limit is {limits.max_members}")
    if directory_bytes > limits.max_members * DIRECTORY_BYTES_PER_MEMBER:
        raise UnsafeArchive(
            f"the zip's central directory is {directory_bytes} bytes, too large for {limits.max_members} members"
        )


def _open(zip_path: Path, limits: ZipLimits) -> zipfile.ZipFile:
    try:
        _check_directory_size(zip_path, limits)
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeArchive(f"the dataset is not a readable zip file ({exc}): upload a .zip archive") from exc


def inspect_zip(zip_path: Path, limits: ZipLimits | None = None) -> list[PurePosixPath]:
    """The archive's file members (safe relative paths), checked without extracting anything."""
    limits = limits or ZipLimits()
    with _open(zip_path, limits) as archive:
        return [relative for _, relative in check_archive(archive, limits)]


def extract_zip(zip_path: Path, dest: Path, limits: ZipLimits | None = None) -> list[PurePosixPath]:
    """Extract ``zip_path`` into ``dest`` (created) and return the files written, as relative paths.

    Raises UnsafeArchive before writing anything when the central directory is unsafe, and during extraction
    when actual sizes exceed the declared ones; ``dest`` is removed on any failure.
    """
    limits = limits or ZipLimits()
    archive = _open(zip_path, limits)
    written_total = 0
    try:
        with archive:
            members = check_archive(archive, limits)
            dest.mkdir(parents=True, exist_ok=True)
            root = dest.resolve()
            for info, relative in members:
                target = root.joinpath(*relative.parts)
                if not target.resolve().is_relative_to(root):  # belt and braces after _member_path
                    raise UnsafeArchive(f"zip member {info.filename!r} points outside the archive: remove it")
                target.parent.mkdir(parents=True, exist_ok=True)
                cap = min(info.file_size, limits.max_total_bytes - written_total)
                with archive.open(info) as source, open(target, "xb") as out:
                    written_total += _copy_capped(source, out, cap, info.filename)
    except UnsafeArchive:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if is_disk_full(exc):
            raise DiskFull("the extracted dataset") from exc
        raise UnsafeArchive(
            f"the dataset zip is damaged or uses an unsupported format ({exc}): zip it again"
        ) from exc
    return [relative for _, relative in members]
