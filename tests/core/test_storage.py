import socket

import pytest
import requests

from voicefinetune.settings import Settings
from voicefinetune.storage import (
    ObjectChanged,
    Storage,
    StorageError,
    StorageNotConfigured,
    UnsafeKey,
    audio_key,
    build_key,
)


def test_build_key_joins_safe_segments():
    assert build_key("audio", "job1", "a.wav") == "audio/job1/a.wav"
    assert build_key("checkpoints/job1", "speech_tokenizer/model.safetensors") == (
        "checkpoints/job1/speech_tokenizer/model.safetensors"
    )


@pytest.mark.parametrize(
    "segment", ["/etc/passwd", "..", "a/../b", "a//b", "", ".", "a\x00b", "a\nb", "a\\b"]
)
def test_build_key_refuses_escapes(segment):
    with pytest.raises(UnsafeKey):
        build_key("audio", segment)


def test_audio_key_layout():
    assert audio_key("job1", filename="x.wav") == "audio/job1/x.wav"
    assert (
        audio_key("job1", filename="x.wav", book_id="book_001", chapter_id="chapter_1")
        == "audio/segments/book_001/chapter_1/x.wav"
    )
    assert audio_key("job1", filename="x.wav", book_id="book_001") == "audio/segments/book_001/x.wav"


def test_unconfigured_storage_says_what_to_set():
    store = Storage(Settings.from_env({}))
    assert not store.configured
    with pytest.raises(StorageNotConfigured, match="E2E_ACCESS_KEY"):
        store.exists("x")


def test_roundtrip_on_a_real_s3_server(storage, tmp_path):
    storage.upload_bytes(b"RIFF....", "audio/j/a.wav")
    assert storage.exists("audio/j/a.wav") and not storage.exists("audio/j/missing.wav")
    assert [o.key for o in storage.list("audio/j/")] == ["audio/j/a.wav"]
    assert requests.get(storage.presigned_url("audio/j/a.wav"), timeout=10).content == b"RIFF...."
    assert storage.url("audio/j/a.wav").endswith(f"/{storage.bucket}/audio/j/a.wav")

    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"\0" * 4096)
    sent = storage.upload_dir(folder, "checkpoints/j")
    assert sent == 4098 and storage.holds_dir(folder, "checkpoints/j")
    restored = storage.download_dir("checkpoints/j", tmp_path / "restored")
    assert (restored / "sub" / "weights.bin").read_bytes() == b"\0" * 4096
    (folder / "extra.bin").write_bytes(b"1")
    assert not storage.holds_dir(folder, "checkpoints/j")
    with pytest.raises(FileNotFoundError, match="missing-key"):
        storage.download_file("missing-key", tmp_path / "x")
    assert storage.delete_prefix("checkpoints/j") == 2


def test_a_conditional_write_over_a_version_another_writer_replaced_is_refused(storage):
    storage.upload_bytes(b"first", "state/x.json", content_type="application/json")
    data, version = storage.read_versioned("state/x.json")
    _, same_version = storage.read_versioned("state/x.json")
    assert (data, same_version) == (b"first", version)
    storage.replace_if_unchanged(b"mine", "state/x.json", version, "application/json")
    with pytest.raises(ObjectChanged, match="state/x.json changed since it was read"):
        storage.replace_if_unchanged(b"theirs", "state/x.json", same_version, "application/json")
    assert storage.read_bytes("state/x.json") == b"mine"
    assert storage.read_versioned("missing.json") is None


def test_unreachable_server_fails_clearly(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    settings = Settings.from_env(
        {
            "E2E_ACCESS_KEY": "k",
            "E2E_SECRET_KEY": "s",
            "E2E_ENDPOINT_URL": f"http://127.0.0.1:{dead_port}",
            "VFT_S3_MAX_ATTEMPTS": "2",
            "VFT_S3_CONNECT_TIMEOUT": "0.5",
        }
    )
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"x")
    with pytest.raises(StorageError, match="after 2 attempts"):
        Storage(settings).upload_dir(folder, "checkpoints/j", attempts=2, backoff=0)


def test_uploads_create_a_missing_bucket(vft_environ):
    store = Storage(Settings.from_env(vft_environ))  # the fixture's bucket name, never created
    store.upload_bytes(b"RIFF", "audio/j/a.wav")
    assert store.exists("audio/j/a.wav")
