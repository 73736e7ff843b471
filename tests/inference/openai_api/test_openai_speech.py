"""The OpenAI-compatible audio API on a real `vft serve` (tiny models), driven by the official `openai` client."""

from __future__ import annotations

import base64
import json
import time
import typing

import httpx
import openai
import pytest
from openai.types.audio import speech_create_params
from openai.types.audio.speech_model import SpeechModel

from .openai_helpers import (
    FORMATS,
    SPEAKER,
    add_voice,
    decode,
    last_stream_record,
    metric_value,
)

STREAMED_BYTES = "vft_inference_stream_bytes_total"
TEN_SENTENCES = " ".join(f"This is sentence number {n} of the story." for n in range(1, 11))


@pytest.fixture(scope="module")
def voice(served, tiny_models) -> str:
    return add_voice(served, tiny_models, "hero1")


@pytest.fixture
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.mark.parametrize("response_format", FORMATS)
def test_every_format_decodes_to_24_khz(client, voice, response_format, tmp_path):
    response = client.audio.speech.create(
        model="qwen3-tts",
        voice=voice,
        input="Hello there. How are you today?",
        response_format=response_format,
    )
    audio, rate = decode(response.content, response_format)
    assert rate == 24000
    assert audio.size > 0

    target = tmp_path / f"speech.{response_format}"
    with client.audio.speech.with_streaming_response.create(
        model="qwen3-tts",
        voice=voice,
        input="A second request, streamed to a file.",
        response_format=response_format,
    ) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["transfer-encoding"] == "chunked"
        streamed.stream_to_file(target)
    audio, rate = decode(target.read_bytes(), response_format)
    assert rate == 24000
    assert audio.size > 0


def test_the_speaker_name_and_the_id_object_address_the_voice(client, voice):
    by_name = client.audio.speech.create(
        model="tts-1", voice="tiny_speaker", input="Hello.", response_format="wav"
    )
    by_object = client.audio.speech.create(
        model="qwen3-tts", voice={"id": voice}, input="Hi.", response_format="wav"
    )
    assert decode(by_name.content, "wav")[1] == decode(by_object.content, "wav")[1] == 24000


def test_speed_two_halves_the_duration_and_keeps_what_was_said(client, served, voice):
    outcomes = {}
    for speed in (1.0, 2.0):
        before = time.time()
        response = client.audio.speech.create(
            model="qwen3-tts", voice=voice, input=TEN_SENTENCES, response_format="pcm", speed=speed
        )
        audio, _ = decode(response.content, "pcm")
        record = last_stream_record(served, before)
        assert record["result"] == "completed"
        assert record["sentences_done"] == record["sentences"] == 10
        # What was sent is exactly what left the time stretch; the stretch gave 1/speed of what was generated.
        assert audio.size / 24000 == pytest.approx(record["output_seconds"], abs=1e-3)
        outcomes[speed] = audio.size / 24000 / record["audio_seconds"]
    assert outcomes[1.0] == pytest.approx(1.0, abs=1e-3)
    assert outcomes[2.0] == pytest.approx(0.5, abs=0.03)


def test_the_same_request_speaks_the_same_so_speed_two_is_half_as_long(client, voice):
    def speak(speed: float) -> bytes:
        return client.audio.speech.create(
            model="qwen3-tts",
            voice=voice,
            input="One line. And another one.",
            response_format="pcm",
            speed=speed,
        ).content

    normal = speak(1.0)
    assert speak(1.0) == normal  # each sentence's sampling seed comes from what is said and by whom
    assert len(speak(2.0)) / len(normal) == pytest.approx(0.5, abs=0.03)


def test_ten_sentences_start_playing_long_before_the_response_ends(client, served, voice):
    client.audio.speech.create(model="qwen3-tts", voice=voice, input="Warm up.", response_format="pcm")
    sent_before = metric_value(served, STREAMED_BYTES)
    started = time.monotonic()
    with client.audio.speech.with_streaming_response.create(
        model="qwen3-tts", voice=voice, input=TEN_SENTENCES, response_format="pcm"
    ) as streamed:
        chunks = streamed.iter_bytes()
        first = next(chunks)
        first_at = time.monotonic() - started
        # Counted, not timed: when the first bytes are here, the server has produced a small part of the audio.
        sent_at_first = metric_value(served, STREAMED_BYTES) - sent_before
        rest = b"".join(chunks)
        total = time.monotonic() - started
    assert first and rest
    assert sent_at_first < (len(first) + len(rest)) / 3
    assert first_at < total / 3, (first_at, total)


def test_sse_events_carry_the_audio(served, voice):
    body = {
        "model": "qwen3-tts",
        "voice": voice,
        "input": "Hello there. Events now.",
        "response_format": "wav",
        "stream_format": "sse",
    }
    with httpx.stream("POST", f"{served.url}/v1/audio/speech", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [
            json.loads(line[len("data: ") :]) for line in response.iter_lines() if line.startswith("data: ")
        ]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "speech.audio.done"
    assert set(events[-1]["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
    audio, rate = decode(b"".join(base64.b64decode(e["audio"]) for e in events[:-1]), "wav")
    assert rate == 24000 and audio.size > 0


def test_a_disconnected_client_stops_its_generation(served, voice):
    body = {
        "model": "qwen3-tts",
        "voice": voice,
        "input": f"{TEN_SENTENCES} {TEN_SENTENCES}",
        "response_format": "pcm",
    }
    before = time.time()
    with httpx.stream("POST", f"{served.url}/v1/audio/speech", json=body, timeout=120) as response:
        assert response.status_code == 200
        next(response.iter_raw())
    record = last_stream_record(served, before)
    assert record["result"] == "disconnected"
    assert record["sentences"] == 20
    assert record["sentences_started"] < 20


def test_designed_and_preset_voices(client, served):
    preset = client.audio.speech.create(
        model="qwen3-tts", voice="alloy", input="Hello.", response_format="flac"
    )
    designed = client.audio.speech.create(
        model="qwen3-tts",
        voice="design",
        input="Hello.",
        response_format="mp3",
        instructions="A deep, calm narrator",
    )
    assert decode(preset.content, "flac")[1] == decode(designed.content, "mp3")[1] == 24000


def test_models_and_voices_are_listed(client, served, voice):
    assert {"qwen3-tts", "tts-1"} <= {model.id for model in client.models.list()}
    voices = httpx.get(f"{served.url}/v1/audio/voices", timeout=10).json()
    assert voices["object"] == "list"
    kinds = {entry["id"]: entry["type"] for entry in voices["data"]}
    assert kinds[voice] == "fine-tuned"
    assert kinds["design"] == "designed"
    assert kinds["alloy"] == "preset"


def test_unknown_voice_is_400_invalid_value_in_openai_shape(client, voice):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="qwen3-tts", voice="nobody-here", input="Hello.")
    assert caught.value.status_code == 400
    assert caught.value.response.json() == {
        "error": {
            "message": "Invalid value: voice 'nobody-here' is neither a ready fine-tuned voice (job id or speaker name), "
            "'design', nor a preset; GET /v1/audio/voices lists them",
            "type": "invalid_request_error",
            "param": "voice",
            "code": "invalid_value",
        }
    }


def test_a_speaker_name_of_two_voices_is_400_naming_their_job_ids(client, served, tiny_models, voice):
    twin = add_voice(served, tiny_models, "hero1-twin")  # the same speaker name as `voice`
    try:
        listed = httpx.get(f"{served.url}/v1/audio/voices", timeout=10).json()["data"]
        assert sorted(entry["id"] for entry in listed if entry["speaker_name"] == SPEAKER) == [voice, twin]
        with pytest.raises(openai.BadRequestError) as caught:
            client.audio.speech.create(
                model="qwen3-tts", voice=SPEAKER, input="Hello.", response_format="pcm"
            )
        assert caught.value.response.json() == {
            "error": {
                "message": f"voice {SPEAKER!r} is the speaker name of 2 voices: pass one of their job ids instead "
                f"({voice!r}, {twin!r})",
                "type": "invalid_request_error",
                "param": "voice",
                "code": "invalid_value",
            }
        }
        for job_id in (voice, twin):
            spoken = client.audio.speech.create(
                model="qwen3-tts", voice=job_id, input="Hi.", response_format="pcm"
            )
            assert len(spoken.content) > 0
    finally:
        assert httpx.delete(f"{served.url}/voices/{twin}", timeout=60).status_code == 200


def test_every_voice_and_model_of_openais_speech_api_is_accepted(client, served):
    """The ids the official client declares (its `voice` and `model` literals) all speak."""
    [voices] = [
        typing.get_args(arg) for arg in typing.get_args(speech_create_params.Voice) if typing.get_args(arg)
    ]
    models = typing.get_args(SpeechModel)
    assert {"marin", "cedar", "ballad", "verse"} <= set(voices) and "gpt-4o-mini-tts-2025-12-15" in models
    listed = {
        entry["id"]: entry["type"]
        for entry in httpx.get(f"{served.url}/v1/audio/voices", timeout=10).json()["data"]
    }
    assert {name: listed.get(name) for name in voices} == dict.fromkeys(voices, "preset")
    assert set(models) <= {model.id for model in client.models.list()}
    for index, name in enumerate(voices):
        model = models[index % len(models)]
        spoken = client.audio.speech.create(model=model, voice=name, input="Hi.", response_format="pcm")
        assert len(spoken.content) > 0, (model, name)


def test_a_model_is_retrieved_by_its_id(client, served):
    for model_id in ("qwen3-tts", "tts-1", "gpt-4o-mini-tts-2025-12-15"):
        model = client.models.retrieve(model_id)
        assert (model.id, model.object, model.owned_by) == (model_id, "model", "voicefinetune")
    assert httpx.get(f"{served.url}/v1/models/tts-1-hd", timeout=10).json() == {
        "id": "tts-1-hd",
        "object": "model",
        "created": 0,
        "owned_by": "voicefinetune",
    }
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.response.json() == {
        "error": {
            "message": "The model 'no-such-model' does not exist; GET /v1/models lists the ids",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_405_404_and_413_on_v1_are_openai_shaped(served):
    def openai_error(message: str) -> dict:
        return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}

    wrong_method = httpx.get(f"{served.url}/v1/audio/speech", timeout=10)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json() == openai_error(
        "method GET is not allowed on /v1/audio/speech (see the Allow header)"
    )
    unknown_path = httpx.get(f"{served.url}/v1/audio/nothing", timeout=10)
    assert (unknown_path.status_code, unknown_path.json()) == (404, openai_error("Not Found"))
    limit = served.settings.max_json_bytes
    too_big = httpx.post(
        f"{served.url}/v1/audio/speech",
        content=b" " * (limit + 1),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert too_big.status_code == 413
    assert too_big.json() == openai_error(f"the request body (JSON) exceeds the limit of {limit} bytes")
    # Outside /v1 the service's own shape stays.
    elsewhere = httpx.get(f"{served.url}/voice-design", timeout=10)
    assert (elsewhere.status_code, elsewhere.json()) == (405, {"detail": "Method Not Allowed"})


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_input_is_400(client, voice, text):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="qwen3-tts", voice=voice, input=text)
    assert caught.value.status_code == 400
    assert caught.value.response.json() == {
        "error": {
            "message": "input must not be empty",
            "type": "invalid_request_error",
            "param": "input",
            "code": None,
        }
    }


def test_bad_values_are_400_with_openais_codes(client, voice):
    for extra, param, code in (
        ({"speed": 5.0}, "speed", "decimal_above_max_value"),
        ({"response_format": "ogg"}, "response_format", "invalid_value"),
        ({"input": "x" * 4097}, "input", "string_above_max_length"),
    ):
        arguments = {"model": "qwen3-tts", "voice": voice, "input": "Hello.", **extra}
        with pytest.raises(openai.BadRequestError) as caught:
            client.audio.speech.create(**arguments)
        error = caught.value.response.json()["error"]
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    with pytest.raises(openai.NotFoundError) as caught:
        client.audio.speech.create(model="no-such-model", voice=voice, input="Hello.")
    assert caught.value.response.json()["error"]["code"] == "model_not_found"


def test_a_voice_fine_tuned_by_this_server_speaks_through_the_client(client, served, dataset_zip):
    with served.client() as http:
        created = http.post(
            "/finetune",
            files={"dataset": dataset_zip.read_bytes()},
            data={"speaker_name": "Narrator", "num_epochs": "1"},
        )
    assert created.status_code == 202, created.text
    job = served.wait_for(created.json()["job_id"], timeout=300)
    assert job["status"] == "ready", job
    listed = {
        entry["id"]: entry for entry in httpx.get(f"{served.url}/v1/audio/voices", timeout=10).json()["data"]
    }
    assert listed[job["job_id"]]["type"] == "fine-tuned"
    assert listed[job["job_id"]]["speaker_name"] == "Narrator"
    for voice in (job["job_id"], "Narrator"):
        with client.audio.speech.with_streaming_response.create(
            model="qwen3-tts", voice=voice, input="My own voice. Streamed.", response_format="opus"
        ) as streamed:
            data = streamed.read()
        audio, rate = decode(data, "opus")
        assert rate == 24000 and audio.size > 0


def test_a_voice_still_training_is_409(client, served, dataset_zip):
    with served.client() as http:
        created = http.post(
            "/finetune",
            files={"dataset": dataset_zip.read_bytes()},
            data={"speaker_name": "Later", "num_epochs": "200"},
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        try:
            with pytest.raises(openai.ConflictError) as caught:
                client.audio.speech.create(model="qwen3-tts", voice=job_id, input="Not yet.")
            error = caught.value.response.json()["error"]
            assert (error["param"], error["code"]) == ("voice", "voice_not_ready")
            assert job_id in error["message"]
        finally:
            assert http.delete(f"/jobs/{job_id}").status_code == 200
