"""Audiobook chapters through a real `vft serve` (tiny models, moto S3): POST /synthesis, the joined file, its
manifest and subtitles in S3, the signed webhook, cancel and delete, one segment regenerated, bad input."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import shutil
import time
from collections.abc import Iterator

import av
import httpx
import pytest
import soundfile as sf

from tests.chapters.chapter_helpers import (
    SECRET,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Receiver,
    chapter_server,
    receiver,  # noqa: F401 - a fixture
    sentences,
    wait_synthesis,
)
from tests.helpers.servers import Server
from tests.inference.openai_api.openai_helpers import add_voice
from voicefinetune.storage import Storage

NARRATOR = "narrator1"


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3_endpoint, tiny_models, receiver: Receiver) -> Iterator[Server]:  # noqa: F811
    served = chapter_server(tmp_path_factory.mktemp("chapters"), s3_endpoint, tiny_models.root, receiver)
    add_voice(served, tiny_models, NARRATOR)
    yield served
    served.stop()


def storage_of(server: Server) -> Storage:
    return Storage(server.settings)


def object_json(server: Server, key: str) -> dict:
    data = storage_of(server).read_bytes(key)
    assert data is not None, f"no object {key}"
    return json.loads(data)


def test_a_forty_sentence_chapter_becomes_one_file_with_its_manifest_subtitles_and_signed_webhook(
    server: Server,
    receiver: Receiver,  # noqa: F811
):
    lines = sentences(40)
    text = " ".join(lines)
    assert len(text) > 2000
    response = httpx.post(
        f"{server.url}/synthesis",
        json={
            "text": text,
            "voice": NARRATOR,
            "book_id": "book-1",
            "chapter_id": "ch-01",
            "webhook_url": receiver.url,
        },
        timeout=60,
    )
    assert response.status_code == 202, response.text
    queued = response.json()
    synthesis_id = queued["synthesis_id"]
    assert queued["status"] == "queued"
    assert queued["progress"] == {"done_segments": 0, "total_segments": 40}

    done = wait_synthesis(server, synthesis_id)
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"done_segments": 40, "total_segments": 40}
    output = done["output"]
    assert output["s3_key"] == "audio/segments/book-1/ch-01/ch-01.wav"
    assert output["manifest_s3_key"] == "audio/segments/book-1/ch-01/ch-01.manifest.json"
    assert output["subtitles_s3_key"] == "audio/segments/book-1/ch-01/ch-01.vtt"
    assert httpx.get(output["presigned_url"], timeout=30).status_code == 200

    wav = storage_of(server).read_bytes(output["s3_key"])
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    assert rate == 24000
    duration = len(audio) / rate
    assert output["duration_s"] == pytest.approx(duration, abs=0.001)

    manifest = object_json(server, output["manifest_s3_key"])
    segments = manifest["segments"]
    assert [s["text"] for s in segments] == lines  # in order, one sentence each, none split at "Dr." or "3.5"
    assert [s["index"] for s in segments] == list(range(40))
    assert all(s["voice"] == NARRATOR and s["item"] == 0 and 1 <= s["attempts"] <= 3 for s in segments)
    for before, after in zip(segments, segments[1:], strict=False):
        assert before["start"] < before["end"] < after["start"] < after["end"]
        # the sentence pause (250 ms) between them
        assert after["start"] - before["end"] == pytest.approx(0.25, abs=1 / rate)
    assert segments[0]["start"] == 0
    assert abs(segments[-1]["end"] - duration) <= 0.5

    vtt = storage_of(server).read_bytes(output["subtitles_s3_key"]).decode()
    assert vtt.startswith("WEBVTT")
    assert vtt.count(" --> ") == 40 and lines[7] in vtt
    srt = storage_of(server).read_bytes(output["srt_s3_key"]).decode()
    assert srt.count(" --> ") == 40 and "00:00:00,000 --> " in srt

    body, headers = receiver.wait_for(synthesis_id)
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER.lower()] == expected
    event = json.loads(body)
    assert (event["type"], event["id"], event["status"]) == ("synthesis", synthesis_id, "succeeded")
    assert headers[TIMESTAMP_HEADER.lower()] == str(event["timestamp"])
    assert event["output"]["s3_key"] == output["s3_key"]


def test_an_items_chapter_alternates_voices_and_marks_each_item_in_m4b(server: Server):
    voices = [NARRATOR, "design:a calm woman with a low voice"]
    items = [{"text": line, "voice": voices[n % 2]} for n, line in enumerate(sentences(6))]
    response = httpx.post(
        f"{server.url}/synthesis", json={"items": items, "format": "m4b", "item_pause_ms": 400}, timeout=60
    )
    assert response.status_code == 202, response.text
    synthesis_id = response.json()["synthesis_id"]
    done = wait_synthesis(server, synthesis_id)
    assert done["status"] == "succeeded", done
    assert done["output"]["s3_key"] == f"audio/synthesis/{synthesis_id}/chapter.m4b"

    manifest = object_json(server, done["output"]["manifest_s3_key"])
    assert [(s["item"], s["voice"], s["text"]) for s in manifest["segments"]] == [
        (n, item["voice"], item["text"]) for n, item in enumerate(items)
    ]
    for before, after in zip(manifest["segments"], manifest["segments"][1:], strict=False):
        assert after["start"] - before["end"] == pytest.approx(0.4, abs=1 / 24000)
    with av.open(io.BytesIO(storage_of(server).read_bytes(done["output"]["s3_key"]))) as container:
        marks = container.chapters()
        assert container.streams.audio[0].codec_context.sample_rate == 24000
    assert len(marks) == len(items)
    for mark, segment in zip(marks, manifest["segments"], strict=True):
        assert float(mark["start"] * mark["time_base"]) == pytest.approx(segment["start"], abs=0.002)


def metric(server: Server, name: str, labels: str = "") -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=30).text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.split()[-1])
    return 0.0


def test_segments_are_counted_in_metrics_and_each_chapter_run_in_the_ops_history(server: Server):
    ok = 'vft_inference_synthesis_segments_total{outcome="ok"}'
    before = metric(server, ok)
    response = httpx.post(
        f"{server.url}/synthesis", json={"text": " ".join(sentences(3)), "voice": NARRATOR}, timeout=60
    )
    synthesis_id = response.json()["synthesis_id"]
    assert wait_synthesis(server, synthesis_id)["status"] == "succeeded"
    assert metric(server, ok) - before == 3
    assert metric(server, "vft_inference_synthesis_pending_segments") == 0
    history = httpx.get(
        f"{server.url}/ops/history",
        params={"op_name": "synthesis_chapter", "job_id": synthesis_id},
        timeout=30,
    ).json()
    assert [(record["job_id"], record["segments"], record["ok"]) for record in history] == [
        (synthesis_id, 3, True)
    ]


def test_the_same_synthesis_id_is_one_chapter_and_another_request_under_it_is_a_conflict(server: Server):
    body = {
        "text": "One short sentence for the idempotent chapter.",
        "voice": NARRATOR,
        "synthesis_id": "same-1",
    }
    first = httpx.post(f"{server.url}/synthesis", json=body, timeout=60)
    again = httpx.post(f"{server.url}/synthesis", json=body, timeout=60)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["synthesis_id"] == "same-1" == first.json()["synthesis_id"]
    other = httpx.post(f"{server.url}/synthesis", json={**body, "text": "Another text."}, timeout=60)
    assert other.status_code == 409
    assert other.json() == {
        "detail": "synthesis 'same-1' already exists with another request; choose another synthesis_id"
    }
    assert wait_synthesis(server, "same-1")["status"] == "succeeded"
    listed = httpx.get(f"{server.url}/synthesis", timeout=30).json()
    assert "same-1" in [entry["synthesis_id"] for entry in listed]


def test_regenerating_one_segment_renders_only_it_and_joins_the_chapter_again(server: Server):
    lines = sentences(5)
    response = httpx.post(
        f"{server.url}/synthesis", json={"text": " ".join(lines), "voice": NARRATOR}, timeout=60
    )
    synthesis_id = response.json()["synthesis_id"]
    first = wait_synthesis(server, synthesis_id)
    assert first["status"] == "succeeded", first
    storage = storage_of(server)

    def segment_objects() -> dict[str, str]:
        listed = storage.client.list_objects_v2(
            Bucket=storage.bucket, Prefix=f"synthesis/{synthesis_id}/segments/"
        )
        return {o["Key"]: o["ETag"] for o in listed["Contents"] if o["Key"].endswith(".wav")}

    before = segment_objects()
    response = httpx.post(
        f"{server.url}/synthesis/{synthesis_id}/segments/2/regenerate",
        json={"instruct": "slower"},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    again = wait_synthesis(server, synthesis_id)
    assert again["status"] == "succeeded"
    after = segment_objects()
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {f"synthesis/{synthesis_id}/segments/00002.wav"}  # sampled anew: other audio
    manifest = object_json(server, again["output"]["manifest_s3_key"])
    assert [s["text"] for s in manifest["segments"]] == lines

    missing = httpx.post(f"{server.url}/synthesis/{synthesis_id}/segments/9/regenerate", json={}, timeout=30)
    assert missing.status_code == 404
    assert missing.json() == {"detail": f"synthesis {synthesis_id!r} has segments 0 to 4, not 9"}


def segment_wavs(server: Server, synthesis_id: str, count: int) -> list[bytes]:
    wavs = []
    for n in range(count):
        wav = storage_of(server).read_bytes(f"synthesis/{synthesis_id}/segments/{n:05d}.wav")
        assert wav, f"segment {n} of {synthesis_id} has no audio"
        wavs.append(wav)
    return wavs


def seeded_chapter(server: Server, lines: list[str], seed: int, book_id: str) -> str:
    body = {"text": " ".join(lines), "voice": NARRATOR, "seed": seed, "book_id": book_id}
    response = httpx.post(f"{server.url}/synthesis", json=body, timeout=60)
    assert response.status_code == 202, response.text
    synthesis_id = response.json()["synthesis_id"]
    done = wait_synthesis(server, synthesis_id)
    assert done["status"] == "succeeded", done
    return synthesis_id


def regenerate(server: Server, synthesis_id: str, index: int, body: dict) -> dict:
    response = httpx.post(
        f"{server.url}/synthesis/{synthesis_id}/segments/{index}/regenerate", json=body, timeout=60
    )
    assert response.status_code == 202, response.text
    done = wait_synthesis(server, synthesis_id)
    assert done["status"] == "succeeded", done
    return done


def test_a_seeded_segment_regenerated_with_its_seed_is_the_same_audio_and_another_seed_is_not(server: Server):
    lines = sentences(4)
    seeded = seeded_chapter(server, lines, seed=7, book_id="seeds-7")
    other = seeded_chapter(server, lines, seed=8, book_id="seeds-8")
    first = segment_wavs(server, seeded, 4)
    # every segment of another seed samples other audio
    assert all(a != b for a, b in zip(first, segment_wavs(server, other, 4), strict=True))

    # rendered alone now, beside three other segments before: the same bytes
    done = regenerate(server, seeded, 2, {"seed": 7})
    assert segment_wavs(server, seeded, 4) == first
    manifest = object_json(server, done["output"]["manifest_s3_key"])
    assert [s["seed"] for s in manifest["segments"]] == [7, 7, 7, 7]

    done = regenerate(server, seeded, 1, {})  # no seed: a new sample, recorded as unseeded
    again = segment_wavs(server, seeded, 4)
    assert again[1] != first[1] and again[:1] + again[2:] == first[:1] + first[2:]
    manifest = object_json(server, done["output"]["manifest_s3_key"])
    assert [s["seed"] for s in manifest["segments"]] == [7, None, 7, 7]


def test_a_cast_of_a_lora_voice_and_a_full_voice_renders_each_item_in_its_voice(server: Server, lora_voices):
    hero = lora_voices[1]
    folder = server.settings.job_dir("hero-lora") / "output" / "checkpoint-epoch-1"
    shutil.copytree(hero.folder, folder)
    registered = httpx.post(
        f"{server.url}/voices/hero-lora", json={"speaker_name": hero.speaker, "preload": True}, timeout=120
    )
    assert registered.status_code == 200, registered.text
    voices = [NARRATOR, "hero-lora"]
    items = [{"text": line, "voice": voices[n % 2]} for n, line in enumerate(sentences(4))]
    response = httpx.post(f"{server.url}/synthesis", json={"items": items}, timeout=60)
    assert response.status_code == 202, response.text
    done = wait_synthesis(server, response.json()["synthesis_id"])
    assert done["status"] == "succeeded", done
    manifest = object_json(server, done["output"]["manifest_s3_key"])
    assert [(s["voice"], s["text"]) for s in manifest["segments"]] == [(i["voice"], i["text"]) for i in items]
    assert all(s["end"] > s["start"] for s in manifest["segments"])


def test_a_200000_character_chapter_is_accepted_and_split_into_its_sentences(server: Server):
    lines = sentences(3300)
    text = " ".join(lines)
    assert len(text) >= 200_000
    response = httpx.post(f"{server.url}/synthesis", json={"text": text, "voice": NARRATOR}, timeout=120)
    assert response.status_code == 202, response.text
    synthesis_id = response.json()["synthesis_id"]
    assert response.json()["progress"] == {"done_segments": 0, "total_segments": len(lines)}
    plan = object_json(server, f"synthesis/{synthesis_id}/plan.json")
    assert [segment["text"] for segment in plan["segments"]] == lines
    assert httpx.delete(f"{server.url}/synthesis/{synthesis_id}", timeout=60).json()["status"] == "cancelled"
    assert httpx.delete(f"{server.url}/synthesis/{synthesis_id}", timeout=60).json()["deleted"] is True


def test_delete_cancels_a_running_chapter_then_deletes_its_files(server: Server):
    response = httpx.post(
        f"{server.url}/synthesis", json={"text": " ".join(sentences(40)), "voice": NARRATOR}, timeout=60
    )
    synthesis_id = response.json()["synthesis_id"]
    cancelled = httpx.delete(f"{server.url}/synthesis/{synthesis_id}", timeout=60)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"] == "cancelled by DELETE /synthesis"
    assert httpx.get(f"{server.url}/synthesis/{synthesis_id}", timeout=10).json()["status"] == "cancelled"

    deleted = httpx.delete(f"{server.url}/synthesis/{synthesis_id}", timeout=60)
    assert deleted.json() == {"synthesis_id": synthesis_id, "deleted": True}
    assert list(storage_of(server).list(f"synthesis/{synthesis_id}/")) == []
    gone = httpx.get(f"{server.url}/synthesis/{synthesis_id}", timeout=10)
    assert gone.status_code == 404
    assert gone.json() == {"detail": f"synthesis {synthesis_id!r} not found"}


def test_a_cancel_written_by_another_process_stops_the_chapter_before_its_outputs(server: Server):
    response = httpx.post(
        f"{server.url}/synthesis", json={"text": " ".join(sentences(40)), "voice": NARRATOR}, timeout=60
    )
    synthesis_id = response.json()["synthesis_id"]
    storage = storage_of(server)
    state_key = f"synthesis/{synthesis_id}/state.json"
    deadline = time.monotonic() + 60
    while not any(o.key.endswith(".json") for o in storage.list(f"synthesis/{synthesis_id}/segments/")):
        assert time.monotonic() < deadline, "no segment was done in 60 s"
        time.sleep(0.02)
    # what another replica's DELETE writes: the state says cancelled
    state = object_json(server, state_key)
    storage.upload_bytes(json.dumps({**state, "status": "cancelled"}).encode(), state_key, "application/json")

    ended = wait_synthesis(server, synthesis_id, statuses=("succeeded", "failed", "cancelled"))
    assert ended["status"] == "cancelled"
    assert ended["output"] is None
    assert list(storage.list(f"audio/synthesis/{synthesis_id}/")) == []


BAD_REQUESTS = [
    (
        {"text": "Hello there, reader.", "voice": "nobody-here"},
        400,
        "unknown voice: Invalid value: voice 'nobody-here' is neither a ready fine-tuned voice (job id or speaker "
        "name), 'design', nor a preset; GET /v1/audio/voices lists them",
    ),
    ({"text": "   ", "voice": NARRATOR}, 400, "text must not be empty"),
    ({"items": [{"text": "", "voice": NARRATOR}]}, 400, "items[0].text must not be empty"),
    ({"items": []}, 400, "items must not be empty"),
    (
        {"text": "a. " * 90_000, "voice": NARRATOR},
        400,
        "the chapter is 270000 characters long; the limit is 250000",
    ),
    (
        {"text": "Hello there, reader.", "voice": NARRATOR, "book_id": "../etc"},
        400,
        "unsafe book_id '../etc': use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, and no '..'",
    ),
    (
        {"text": "Hello there, reader.", "voice": NARRATOR, "synthesis_id": "Bad/Id"},
        400,
        "synthesis_id must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit; "
        "got 'Bad/Id'",
    ),
    (
        {"text": "Hello there, reader.", "voice": NARRATOR, "format": "wma"},
        400,
        "unknown format 'wma'; use one of: wav, flac, mp3, opus, m4b",
    ),
    (
        {"text": "Hello there, reader.", "voice": NARRATOR, "webhook_url": "http://10.0.0.7/hook"},
        400,
        "webhook_url host '10.0.0.7' resolves to 10.0.0.7, a private address: refused (give a public URL; to allow "
        "private hosts set VFT_ALLOW_PRIVATE_URLS=1 or list the origin in VFT_TRUSTED_URL_ORIGINS)",
    ),
    (
        {"text": "Hello there, reader.", "voice": NARRATOR, "webhook_url": "file:///etc/passwd"},
        400,
        "webhook_url must be an http(s) URL with a host, got 'file:///etc/passwd'",
    ),
]


@pytest.mark.parametrize(("body", "status", "detail"), BAD_REQUESTS)
def test_bad_input_is_refused_with_a_clear_message_and_nothing_is_written(
    server: Server, body, status, detail
):
    storage = storage_of(server)
    before = {o.key for o in storage.list("")}
    response = httpx.post(f"{server.url}/synthesis", json=body, timeout=60)
    assert response.status_code == status, response.text
    assert response.json() == {"detail": detail}
    assert {o.key for o in storage.list("")} == before
