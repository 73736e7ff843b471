"""/voice-clone and /voice-clone/batch: reference audio as base64, data: URL or a URL behind the SSRF guard."""

from __future__ import annotations

import base64
import re

import httpx
import pytest

REFUSED_URLS = [
    "http://127.0.0.1:{port}/ref.wav",
    "http://169.254.169.254/latest/meta-data/ref.wav",
    "http://10.0.0.1/ref.wav",
    "http://localhost:{port}/ref.wav",
    "http://[::1]:{port}/ref.wav",
    "http://192.168.1.20/ref.wav",
    "http://100.100.100.200/ref.wav",
]


S3_FIELDS = {"s3_url", "presigned_url", "s3_key", "sample_rate", "text", "job_id", "kept_existing", "note"}
CLONE_KEY = re.compile(r"audio/clone/([0-9a-f]{16})/(.+)")  # one folder per reference voice


def clone_folder_and_names(results: list[dict]) -> tuple[set[str], list[str]]:
    """The reference folders and the file names of uploaded clone results."""
    matches = [CLONE_KEY.fullmatch(r["s3_key"]) for r in results]
    assert all(matches), [r["s3_key"] for r in results]
    return {m.group(1) for m in matches}, [m.group(2) for m in matches]


def batch_body(ref: str, n: int = 2, **extra) -> dict:
    return {
        "ref_audio_url": ref,
        "ref_text": "This is the reference spoken text.",
        "items": [
            {"text": f"Sentence number {i} in this voice.", "filename": f"clone_{i:03d}.wav"}
            for i in range(n)
        ],
        "language": "English",
        **extra,
    }


@pytest.mark.parametrize("template", REFUSED_URLS)
async def test_private_loopback_and_metadata_urls_are_refused(
    make_service, kit, wav_server, template, monkeypatch
):
    service = await make_service()
    port = wav_server.url.rsplit(":", 1)[1]
    url = template.format(port=port)
    outgoing: list[str] = []  # every request that would open a network connection (the ASGI client's do not)
    send = httpx.AsyncHTTPTransport.handle_async_request

    async def spy(transport, request):
        outgoing.append(str(request.url))
        return await send(transport, request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", spy)
    async with kit.http_client(service) as client:
        answer = await client.post("/voice-clone/batch", json=batch_body(url))
    assert answer.status_code == 400, answer.text
    assert "resolves to" in answer.json()["detail"] and "refused" in answer.json()["detail"]
    assert outgoing == []  # refused after resolving, before any connection attempt (10.0.0.1 would hang)
    assert wav_server.requests == []  # the loopback server never saw a request
    assert (
        service.cloner.clone_prompts == 0
        and service.cache.total_loads == 0
        and service.activity.total_requests == 0
    )


async def test_batch_with_base64_and_data_url(make_service, kit):
    service = await make_service()
    encoded = base64.b64encode(kit.reference_wav()).decode()
    async with kit.http_client(service) as client:
        plain = await client.post("/voice-clone/batch", json=batch_body(encoded, n=3))
        assert plain.status_code == 200, plain.text
        results = plain.json()
        folders, names = clone_folder_and_names(results)
        assert len(folders) == 1 and names == [f"clone_{i:03d}.wav" for i in range(3)]
        assert all(set(r) == S3_FIELDS and r["kept_existing"] is False and r["note"] is None for r in results)
        assert all(r["sample_rate"] == 24000 and r["job_id"] is None for r in results)
        assert service.cloner.clone_prompts == 1  # one prompt for the three items

        data_url = f"data:audio/wav;base64,{encoded}"
        xvec = await client.post(
            "/voice-clone/batch",
            json={**batch_body(data_url, n=2), "ref_text": "", "use_xvec": True, "overwrite": True},
        )
        assert xvec.status_code == 200, xvec.text
        assert service.cloner.clone_prompts == 2

        # overwrite false (the default): existing objects come back without generating
        generated = service.generator.generated
        again = await client.post("/voice-clone/batch", json=batch_body(encoded, n=3))
        assert [r["s3_key"] for r in again.json()] == [r["s3_key"] for r in results]
        assert all(r["kept_existing"] is True and "overwrite: true" in r["note"] for r in again.json())
        assert service.generator.generated == generated

        icl_without_text = await client.post(
            "/voice-clone/batch", json={**batch_body(encoded), "ref_text": ""}
        )
        assert icl_without_text.status_code == 400 and "ref_text" in icl_without_text.json()["detail"]
        garbage = await client.post("/voice-clone/batch", json=batch_body("bm90IGF1ZGlv"))
        assert garbage.status_code == 400 and "audio" in garbage.json()["detail"]
        ftp = await client.post("/voice-clone/batch", json=batch_body("ftp://example.com/a.wav"))
        assert ftp.status_code == 400


async def test_batch_from_an_allowed_url_fetches_once(make_service, kit, wav_server):
    service = await make_service(allow_private_urls=True)
    items = batch_body(f"{wav_server.url}/ref.wav", n=4)
    items["items"][2]["text"] = ""
    async with kit.http_client(service) as client:
        answer = await client.post("/voice-clone/batch", json=items)
    assert answer.status_code == 200, answer.text
    results = answer.json()
    assert len(results) == 4 and results[2]["index"] == 2 and "empty" in results[2]["error"]
    folders, names = clone_folder_and_names([r for i, r in enumerate(results) if i != 2])
    assert len(folders) == 1 and names == [f"clone_{i:03d}.wav" for i in (0, 1, 3)]
    assert wav_server.requests == ["/ref.wav"] and service.cloner.clone_prompts == 1


async def test_url_guard_checks_redirects_size_and_content(make_service, kit, wav_server):
    service = await make_service(allow_private_urls=True)
    async with kit.http_client(service) as client:
        metadata = await client.post("/voice-clone/batch", json=batch_body(f"{wav_server.url}/to-metadata"))
        assert metadata.status_code == 400 and "metadata" in metadata.json()["detail"]
        huge = await client.post("/voice-clone/batch", json=batch_body(f"{wav_server.url}/huge.wav"))
        assert huge.status_code == 400 and "limit" in huge.json()["detail"]
        text = await client.post("/voice-clone/batch", json=batch_body(f"{wav_server.url}/text"))
        assert text.status_code == 400 and "audio" in text.json()["detail"]
        missing = await client.post("/voice-clone/batch", json=batch_body(f"{wav_server.url}/nothing.wav"))
        assert missing.status_code == 400 and "404" in missing.json()["detail"]
        followed = await client.post(
            "/voice-clone",
            json={
                "ref_audio_url": f"{wav_server.url}/to-ref",
                "ref_text": "Reference.",
                "text": "Hello there.",
                "upload_to_s3": False,
            },
        )
        assert followed.status_code == 200 and followed.headers["content-type"] == "audio/wav"
        assert kit.read_wav(followed.content)[1] == 24000


async def test_single_clone_defaults_to_s3_and_refuses_private_urls(make_service, kit):
    service = await make_service()
    encoded = base64.b64encode(kit.reference_wav()).decode()
    async with kit.http_client(service) as client:
        uploaded = await client.post(
            "/voice-clone",
            json={"ref_audio_url": encoded, "ref_text": "Ref.", "text": "Hi.", "s3_filename": "x.wav"},
        )
        assert uploaded.status_code == 200, uploaded.text
        assert clone_folder_and_names([uploaded.json()])[1] == ["x.wav"]
        refused = await client.post(
            "/voice-clone", json={"ref_audio_url": "http://10.0.0.1/a.wav", "ref_text": "Ref.", "text": "Hi."}
        )
        assert refused.status_code == 400


async def test_trusted_origin_allows_only_that_loopback_server(make_service, kit, wav_server):
    """VFT_TRUSTED_URL_ORIGINS: the listed origin is fetched; another loopback port stays refused, unconnected."""
    service = await make_service(trusted_url_origins=f"http://example.invalid, {wav_server.url}")
    async with kit.http_client(service) as client:
        allowed = await client.post("/voice-clone/batch", json=batch_body(f"{wav_server.url}/ref.wav", n=2))
        refused = await client.post("/voice-clone/batch", json=batch_body("http://127.0.0.1:9/ref.wav"))
    assert allowed.status_code == 200, allowed.text
    assert clone_folder_and_names(allowed.json())[1] == ["clone_000.wav", "clone_001.wav"]
    assert refused.status_code == 400 and "VFT_TRUSTED_URL_ORIGINS" in refused.json()["detail"]
    assert wav_server.requests == ["/ref.wav"]


async def test_batch_without_upload_answers_inline_wavs(make_service, kit):
    """upload_to_s3: false (even with no storage configured): each WAV base64-encoded in its entry, in order."""
    service = await make_service(s3_access_key=None, s3_secret_key=None)
    body = batch_body(base64.b64encode(kit.reference_wav()).decode(), n=3, upload_to_s3=False)
    body["items"][1] = {"text": "", "filename": "empty.wav"}
    async with kit.http_client(service) as client:
        answer = await client.post("/voice-clone/batch", json=body)
        uploading = await client.post("/voice-clone/batch", json={**body, "upload_to_s3": True})
    assert answer.status_code == 200, answer.text
    first, failed, third = answer.json()
    assert failed["index"] == 1 and failed["filename"] == "empty.wav" and "empty" in failed["error"]
    for entry, i in ((first, 0), (third, 2)):
        assert entry["filename"] == f"clone_{i:03d}.wav" and entry["text"] == body["items"][i]["text"]
        audio, rate = kit.read_wav(base64.b64decode(entry["audio_base64"]))
        assert rate == entry["sample_rate"] == 24000 and entry["media_type"] == "audio/wav"
        assert abs(entry["duration_seconds"] - len(audio) / rate) < 0.01
    assert service.cloner.clone_prompts == 1
    assert uploading.status_code == 503


async def test_clones_of_different_references_never_share_an_object_and_a_kept_one_says_so(make_service, kit):
    service = await make_service()
    one, other = (base64.b64encode(kit.reference_wav(seconds)).decode() for seconds in (1.0, 1.2))
    item = {"text": "The same file name from two clients.", "filename": "shared_name.wav"}

    async def clone(ref: str, **extra) -> dict:
        answer = await client.post("/voice-clone/batch", json={**batch_body(ref), "items": [item], **extra})
        assert answer.status_code == 200, answer.text
        [result] = answer.json()
        return result

    async with kit.http_client(service) as client:
        first = await clone(one)
        second = await clone(other)
        other_text = await clone(one, ref_text="Another transcript of the same clip.")
        keys = {first["s3_key"], second["s3_key"], other_text["s3_key"]}
        assert len(keys) == 3 and all(CLONE_KEY.fullmatch(key)[2] == "shared_name.wav" for key in keys)
        assert not any(r["kept_existing"] for r in (first, second, other_text))
        objects = {key: httpx.get(service.storage.presigned_url(key), timeout=30).content for key in keys}
        assert all(kit.read_wav(data)[1] == 24000 for data in objects.values())

        generated = service.generator.generated
        changed = {**item, "text": "New words for a file that exists."}
        kept = await client.post("/voice-clone/batch", json={**batch_body(one), "items": [changed]})
        [kept] = kept.json()
        assert kept["s3_key"] == first["s3_key"] and kept["text"] == changed["text"]
        assert kept["kept_existing"] is True
        assert kept["note"] == (
            "an object already existed under s3_key and was kept (overwrite: false); its audio was not generated "
            "from this text: send overwrite: true to replace it"
        )
        assert service.generator.generated == generated
        assert (
            httpx.get(service.storage.presigned_url(first["s3_key"]), timeout=30).content
            == objects[first["s3_key"]]
        )

        replaced = await client.post(
            "/voice-clone/batch", json={**batch_body(one), "items": [changed], "overwrite": True}
        )
        [replaced] = replaced.json()
        assert replaced["s3_key"] == first["s3_key"] and replaced["kept_existing"] is False
        assert service.generator.generated == generated + 1
