"""PublicText: what a failure message may show a client."""

from __future__ import annotations

from pathlib import Path

from voicefinetune.public_text import PublicText


def test_server_paths_and_the_endpoint_are_replaced_and_the_rest_is_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    public = PublicText(data, "http://127.0.0.1:9000/")
    assert (
        public(f"dataset file {data}/uploads/a.zip does not exist.")
        == "dataset file uploads/a.zip does not exist."
    )
    assert public(f"{data} is full") == "the data folder is full"
    assert (
        public(f"{data}2/x is elsewhere") == f"{data}2/x is elsewhere"
    )  # a sibling folder is not the data folder
    assert public('could not reach "http://127.0.0.1:9000/bucket/key" (host 127.0.0.1:9000)') == (
        'could not reach "s3://bucket/key" (host the S3 endpoint)'
    )
    assert public("S3 at http://127.0.0.1:9000 failed") == "S3 at the S3 endpoint failed"
    assert public(f'File "{__file__}", line 3') == f'File "{Path(__file__).name}", line 3'  # a server file
    kept = (
        "GET /v1/audio/voices lists them; see jobs/a/b, 1/2, s3://b/k and https://example.com/a/b; "
        "zip member '/etc/passwd' is an absolute path"
    )
    assert public(kept) == kept  # routes, relative paths, ratios, objects, other URLs and quoted input stay


def test_a_path_is_shown_relative_to_the_data_folder_or_by_its_name(tmp_path: Path) -> None:
    public = PublicText(tmp_path / "data", "")
    assert public.path(tmp_path / "data" / "jobs" / "a") == "jobs/a"
    assert public.path(tmp_path / "data") == "the data folder"
    assert public.path("/opt/models/base") == "base"
    assert public.path("jobs/a") == "jobs/a"
