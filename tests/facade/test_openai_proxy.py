"""The facade on a cluster forwards /v1/audio/speech to the replica holding the voice and streams it through
unbuffered: real inference replicas and a real facade, each a uvicorn server on loopback."""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import replace

import httpx
import pytest
from voicefinetune_inference.app import create_app as create_inference_app

from tests.helpers.servers import ServerThread
from voicefinetune.cluster.routing import pick
from voicefinetune.devtools.sample_data import REF_TEXT, reference_clip
from voicefinetune.facade.app import ForwardedInference, create_app
from voicefinetune.facade.inference_proxy import speech_key
from voicefinetune.facade.kubernetes_backend import KubernetesBackend

TEN_SENTENCES = " ".join(f"This is sentence number {n} of the story." for n in range(1, 11))
VOICE = "hero1"


@pytest.fixture
def replicas(settings, tmp_path, tiny_models):
    """Two inference replicas; the voice is registered on the one that owns it (as the operator does)."""
    servers = []
    for index in range(2):
        replica_settings = replace(settings, data_dir=tmp_path / f"replica-{index}")
        servers.append(ServerThread(create_inference_app(replica_settings)).start())
        shutil.copytree(
            tiny_models.custom_voice, replica_settings.job_dir(VOICE) / "output" / "checkpoint-epoch-0"
        )
    owner = pick(VOICE, [server.url for server in servers])
    answer = httpx.post(
        f"{owner}/voices/{VOICE}", json={"speaker_name": "tiny_speaker", "preload": True}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
async def facade(settings, kubeconfig, replicas):
    facade_settings = replace(settings, inference_url=",".join(server.url for server in replicas))
    backend = KubernetesBackend(facade_settings, kubeconfig=str(kubeconfig))
    await backend.start()
    server = ServerThread(create_app(facade_settings, backend, ForwardedInference(facade_settings))).start()
    yield server
    server.stop()
    await backend.stop()


def bytes_streamed(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    name = "vft_inference_stream_bytes_total"
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_speech_goes_to_the_voices_replica_and_streams_through(facade, replicas):
    owner = pick(VOICE, [server.url for server in replicas])
    body = {"model": "qwen3-tts", "voice": VOICE, "input": TEN_SENTENCES, "response_format": "pcm"}
    before = bytes_streamed(owner)
    with httpx.stream("POST", f"{facade.url}/v1/audio/speech", json=body, timeout=120) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["x-vft-replica"] == owner
        assert response.headers["content-type"] == "audio/pcm"
        assert response.headers["transfer-encoding"] == "chunked"
        chunks = response.iter_raw()
        first = next(chunks)
        # Not buffered by the facade: the first bytes are here while the replica has sent a small part of the audio.
        sent_at_first = bytes_streamed(owner) - before
        rest = b"".join(chunks)
    total = len(first) + len(rest)
    assert total > 0 and total % 2 == 0
    assert sent_at_first < total / 3
    assert bytes_streamed(owner) - before == total


def test_a_clone_voice_goes_where_voice_clone_goes(facade, replicas):
    endpoints = [server.url for server in replicas]
    reference = base64.b64encode(reference_clip(use_espeak=False).wav_bytes()).decode()
    body = {"model": "qwen3-tts", "input": "Hello.", "response_format": "wav", "ref_audio_url": reference}
    spoken = httpx.post(
        f"{facade.url}/v1/audio/speech", timeout=120, json={**body, "voice": "Clone", "ref_text": REF_TEXT}
    )
    assert spoken.status_code == 200, spoken.text
    assert spoken.headers["x-vft-replica"] == pick("voice-clone", endpoints)
    assert spoken.content[:4] == b"RIFF"
    assert speech_key(json.dumps({**body, "voice": {"id": "clone"}}).encode()) == "voice-clone"


def test_designed_voices_go_where_voice_design_goes_and_errors_pass_through(facade, replicas):
    endpoints = [server.url for server in replicas]
    for voice in ("alloy", "Marin", "cedar"):  # an old preset and OpenAI's newest ones, in any case
        preset = httpx.post(
            f"{facade.url}/v1/audio/speech",
            timeout=120,
            json={"model": "qwen3-tts", "voice": voice, "input": "Hello.", "response_format": "wav"},
        )
        assert preset.status_code == 200, (voice, preset.text)
        assert preset.headers["x-vft-replica"] == pick("voice-design", endpoints)
        assert preset.content[:4] == b"RIFF"
    unknown = httpx.post(
        f"{facade.url}/v1/audio/speech",
        timeout=60,
        json={"model": "qwen3-tts", "voice": "nobody", "input": "Hello."},
    )
    assert unknown.status_code == 400
    assert (unknown.json()["error"]["param"], unknown.json()["error"]["code"]) == ("voice", "invalid_value")
    models = httpx.get(f"{facade.url}/v1/models", timeout=30)
    assert models.status_code == 200 and "qwen3-tts" in {m["id"] for m in models.json()["data"]}
    model = httpx.get(f"{facade.url}/v1/models/gpt-4o-mini-tts-2025-12-15", timeout=30)
    assert model.status_code == 200
    assert model.json() == {
        "id": "gpt-4o-mini-tts-2025-12-15",
        "object": "model",
        "created": 0,
        "owned_by": "voicefinetune",
    }
    wrong_method = httpx.get(f"{facade.url}/v1/audio/speech", timeout=30)
    assert (wrong_method.status_code, wrong_method.json()) == (
        405,
        {
            "error": {
                "message": "method GET is not allowed on /v1/audio/speech (see the Allow header)",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    )


def test_a_seed_request_for_the_voice_is_served_while_its_stream_runs(replicas):
    owner = pick(VOICE, [server.url for server in replicas])
    text = " ".join(f"Sentence {n} of a long reading, said slowly." for n in range(1, 21))
    body = {"model": "qwen3-tts", "voice": VOICE, "input": text, "response_format": "pcm"}
    before = bytes_streamed(owner)
    with httpx.stream("POST", f"{owner}/v1/audio/speech", json=body, timeout=120) as response:
        chunks = response.iter_raw()
        first = next(chunks)
        # The seed's endpoint for the same voice (the fusion batcher's path) is answered between the stream's
        # sentences, not after the whole stream: counted by what the stream had sent by then.
        infer = httpx.post(
            f"{owner}/infer/{VOICE}", json={"text": "Meanwhile.", "upload_to_s3": False}, timeout=120
        )
        sent_meanwhile = bytes_streamed(owner) - before
        rest = b"".join(chunks)
    assert infer.status_code == 200 and infer.content[:4] == b"RIFF"
    assert sent_meanwhile < len(first) + len(rest)
