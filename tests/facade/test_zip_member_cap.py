"""A zip with a huge central directory is refused from its end-of-central-directory record, before `zipfile`
parses it: the server's peak memory stays flat."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

MEMBERS = 250_000


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def many_members_zip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "members.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for index in range(MEMBERS):
            archive.writestr(f"d/{index:07d}", b"")
    return path


def test_a_zip_of_250000_empty_members_is_400_with_flat_memory(served, many_members_zip):
    size = many_members_zip.stat().st_size
    assert 20e6 < size < 30e6
    before = peak_rss_bytes(served.process.pid)
    with served.client() as client, open(many_members_zip, "rb") as handle:
        answer = client.post("/finetune", data={"speaker_name": "Hero"}, files={"dataset": ("d.zip", handle)})
    grown = peak_rss_bytes(served.process.pid) - before
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"] == f"the zip has {MEMBERS} members; the limit is 20000"
    assert grown < 50 * 1024**2, f"peak RSS grew by {grown / 1024**2:.0f} MiB"
