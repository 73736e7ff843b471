"""Extension of /v1/audio/speech: voice 'clone' streams the Base model in the voice of a reference recording, with
/voice-clone's fields (ref_audio_url, ref_text, use_xvec) checked as /voice-clone checks them; bad or missing ones are
400s in OpenAI's shape naming the field."""

from __future__ import annotations

import asyncio
import base64

MISSING_REF_TEXT = "ref_text (the transcript of the reference audio) is required unless use_xvec is true"


def speech(reference: str | None = None, **extra) -> dict:
    body = {
        "model": "qwen3-tts",
        "voice": "clone",
        "input": "Hello there.",
        "response_format": "pcm",
        **extra,
    }
    if reference is not None:
        body.update(ref_audio_url=reference, ref_text="This is the reference spoken text.")
    return body


def error(message: str, param: str, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


async def test_a_clone_voice_streams_in_the_voice_of_its_reference(make_service, kit):
    service = await make_service()
    low = base64.b64encode(kit.reference_wav()).decode()
    other = base64.b64encode(kit.reference_wav(seconds=1.5)).decode()
    async with kit.http_client(service) as client:
        first = await client.post("/v1/audio/speech", json=speech(low))
        different = await client.post("/v1/audio/speech", json=speech(other))
        again = await client.post("/v1/audio/speech", json=speech(f"data:audio/wav;base64,{low}"))
        xvec = await client.post(
            "/v1/audio/speech", json={**speech(), "ref_audio_url": low, "use_xvec": True}
        )
    for answer in (first, again, different, xvec):
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "audio/pcm"
        assert len(answer.content) > 0 and len(answer.content) % 2 == 0
    # the same reference (another encoding of its bytes) after another one: its own kept prompt, the same audio
    assert again.content == first.content
    assert different.content != first.content  # another reference: another voice
    # computed: the first reference, the other one, the first in x-vector mode; found: the first again
    assert (service.cloner.clone_prompts, service.cloner.clone_prompt_hits) == (3, 1)


HITS_METRIC = "vft_inference_clone_prompt_cache_hits_total "


def hits_in(metrics_text: str) -> float:
    (line,) = [line for line in metrics_text.splitlines() if line.startswith(HITS_METRIC)]
    return float(line.split()[-1])


async def test_one_reference_is_encoded_once_for_concurrent_requests_until_its_model_is_unloaded(
    make_service, kit
):
    service = await make_service()
    reference = base64.b64encode(kit.reference_wav()).decode()
    fields = {"ref_audio_url": reference, "ref_text": "This is the reference spoken text."}
    async with kit.http_client(service) as client:
        before = hits_in((await client.get("/metrics")).text)
        together = await asyncio.gather(
            *(client.post("/v1/audio/speech", json=speech(reference)) for _ in range(4))
        )
        cloned = await client.post("/voice-clone", json={**fields, "text": "Hi.", "upload_to_s3": False})
        after = hits_in((await client.get("/metrics")).text)
        computed_before_unload = service.cloner.clone_prompts
        unloaded = await client.post("/gpu/unload")
        reloaded = await client.post("/v1/audio/speech", json=speech(reference))
    assert [answer.status_code for answer in together] == [200] * 4
    assert {answer.content for answer in together} == {together[0].content}
    assert cloned.status_code == 200 and cloned.headers["content-type"] == "audio/wav"
    # four streams and /voice-clone asked at once or later: one computation, four hits (metric and service alike)
    assert (computed_before_unload, service.cloner.clone_prompt_hits, after - before) == (1, 4, 4)
    assert unloaded.status_code == 200
    # unloading the model drops its prompts: computed again, and the same voice as before
    assert reloaded.status_code == 200 and reloaded.content == together[0].content
    assert (service.cloner.clone_prompts, service.cloner.clone_prompt_hits) == (2, 4)


async def test_a_kept_prompt_is_served_while_every_gpu_slot_is_taken(make_service, kit):
    service = await make_service(gpu_max_concurrency=1)
    reference = base64.b64encode(kit.reference_wav()).decode()
    async with kit.http_client(service) as client:
        first = await client.post("/v1/audio/speech", json=speech(reference))
        assert first.status_code == 200, first.text
        async with service.generator.gpu_slots:  # e.g. a fused batch of the batch scheduler holds it
            again = await asyncio.wait_for(client.post("/v1/audio/speech", json=speech(reference)), 20)
    assert again.status_code == 200 and again.content == first.content
    assert (service.cloner.clone_prompts, service.cloner.clone_prompt_hits) == (1, 1)


async def test_missing_or_bad_reference_fields_are_400_naming_the_field(make_service, kit):
    service = await make_service()
    encoded = base64.b64encode(kit.reference_wav()).decode()
    private = "http://10.0.0.1/a.wav"
    async with kit.http_client(service) as client:
        no_audio = await client.post("/v1/audio/speech", json=speech())
        no_text = await client.post("/v1/audio/speech", json={**speech(), "ref_audio_url": encoded})
        refused = await client.post("/v1/audio/speech", json=speech(private))
        garbage = await client.post("/v1/audio/speech", json=speech("ftp://example.com/a.wav"))
        too_long = await client.post("/v1/audio/speech", json={**speech(encoded), "ref_text": "x" * 2001})
        elsewhere = await client.post("/v1/audio/speech", json={**speech(encoded), "voice": "alloy"})
        # /voice-clone's own answers for the same values: the same checks
        clone_refused = await client.post(
            "/voice-clone", json={"ref_audio_url": private, "ref_text": "Ref.", "text": "Hi."}
        )
        clone_garbage = await client.post(
            "/voice-clone",
            json={"ref_audio_url": "ftp://example.com/a.wav", "ref_text": "Ref.", "text": "Hi."},
        )
    assert [a.status_code for a in (no_audio, no_text, refused, garbage, too_long, elsewhere)] == [400] * 6
    assert no_audio.json() == error(
        "voice 'clone' needs ref_audio_url (the reference audio: a URL, base64 or a data: URL)",
        "ref_audio_url",
        "missing_required_parameter",
    )
    assert no_text.json() == error(MISSING_REF_TEXT, "ref_text", "missing_required_parameter")
    assert clone_refused.status_code == clone_garbage.status_code == 400
    assert refused.json() == error(clone_refused.json()["detail"], "ref_audio_url", "invalid_value")
    assert refused.json()["error"]["message"].startswith("ref_audio_url host '10.0.0.1' resolves to 10.0.0.1")
    assert garbage.json() == error(clone_garbage.json()["detail"], "ref_audio_url", "invalid_value")
    assert garbage.json()["error"]["message"] == (
        "ref_audio_url scheme 'ftp' is not supported: use http(s), data: or base64"
    )
    assert too_long.json() == error(
        "ref_text: String should have at most 2000 characters", "ref_text", "invalid_value"
    )
    assert elsewhere.json() == error(
        "ref_audio_url is only used with voice 'clone'", "ref_audio_url", "invalid_value"
    )
    assert service.cloner.clone_prompts == 0 and service.activity.total_requests == 0
