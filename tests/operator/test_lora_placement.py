"""A book's LoRA voices on Kubernetes: the operator attaches them all on the replica that holds their base model and
says so in their status; the facade sends their requests there (and elsewhere when that replica is gone); a full
voice keeps the replica of its own id. Two real `vft inference` replicas, a real `vft operator` on KMock, the
facade as `vft serve --backend kubernetes` builds it, trained tiny LoRA voices in moto S3."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace

import httpx
import soundfile

from tests.helpers.k8s_harness import (
    GROUP,
    JOBS,
    PLURAL,
    VERSION,
    VFT,
    mark_job,
    operator_environment,
    voicefinetune,
    wait_for,
)
from voicefinetune.cluster.routing import pick
from voicefinetune.facade.app import create_kubernetes_app
from voicefinetune.storage import checkpoint_prefix

S3_KEYS = ("E2E_ACCESS_KEY", "E2E_SECRET_KEY", "E2E_BUCKET", "E2E_ENDPOINT_URL")
BOOK = "moby-dick"
TINY_SPEAKER = "tiny_speaker"  # the tiny CustomVoice checkpoint's speaker


def status_of(cluster, name: str) -> dict:
    found = [o for o in cluster.objects(VFT) if o["metadata"]["name"] == name]
    return (found[0].get("status") or {}) if found else {}


def voices_on(url: str) -> dict[str, dict]:
    return {v["job_id"]: v for v in httpx.get(f"{url}/voices", timeout=10).json()}


def loaded_models(url: str) -> list[dict]:
    return httpx.get(f"{url}/gpu/status", timeout=10).json()["loaded_models"]


def pick_names(cast_key: str, endpoints: list[str]) -> tuple[list[str], str]:
    """Three voice names that their own ids would place on different replicas, and a full voice's name that its id
    places away from the cast's replica: placing by id could not pass this test by chance."""
    names = [f"voice-{i}" for i in range(64)]
    cast = [next(n for n in names if pick(n, endpoints) == endpoint) for endpoint in endpoints]
    cast.append(next(n for n in names if n not in cast))
    solo = next(n for n in names if n not in cast and pick(n, endpoints) != pick(cast_key, endpoints))
    return cast, solo


async def test_a_books_lora_voices_share_the_replica_of_their_base_and_follow_it_through_the_facade(
    cluster,
    kubeconfig,
    start_operator,
    services,
    custom,
    batch,
    settings,
    settings_env,
    storage,
    tiny_models,
    lora_voices,
    tmp_path,
):
    base = str(tiny_models.base)
    cast_key = f"lora:{base}#{BOOK}"  # docs/kubernetes.md: a LoRA voice's key is its base model and its book
    replicas = [
        services(
            ["inference"], {**settings_env, "VFT_DATA_DIR": str(tmp_path / f"replica-{i}")}, f"replica-{i}"
        )
        for i in range(2)
    ]
    urls = [replica.url for replica in replicas]
    home = pick(cast_key, urls)
    (away,) = [url for url in urls if url != home]
    cast, solo = pick_names(cast_key, urls)
    for name, voice in zip(cast, lora_voices, strict=True):
        storage.upload_dir(voice.folder, checkpoint_prefix(name))
    storage.upload_dir(tiny_models.custom_voice, checkpoint_prefix(solo))

    s3 = {key: settings_env[key] for key in S3_KEYS}
    start_operator(env=operator_environment(kubeconfig, ",".join(urls), {**s3, "VFT_MANAGE_INFERENCE": "0"}))
    for replica in replicas:
        replica.wait_healthy()
    for name, voice in zip(cast, lora_voices, strict=True):
        body = voicefinetune(name, speakerName=voice.speaker, method="lora", bookId=BOOK, baseModel=base)
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, voicefinetune(solo, speakerName=TINY_SPEAKER, bookId=BOOK)
    )
    jobs = wait_for(
        lambda: len(cluster.objects(JOBS)) == 4 and cluster.objects(JOBS), what="four training Jobs"
    )
    for job in jobs:  # the trainer's work is in S3 already: each Job just succeeds
        mark_job(batch, job["metadata"]["name"], outcome="Complete")
    wait_for(
        lambda: all(status_of(cluster, name).get("phase") == "Ready" for name in [*cast, solo]),
        timeout=180,
        what="all four voices Ready",
    )

    for name in cast:
        status = status_of(cluster, name)
        assert (status["routingKey"], status["baseModel"], status["inferenceReplica"]) == (
            cast_key,
            base,
            home,
        )
        loaded = {c["type"]: c for c in status["conditions"]}["VoiceLoaded"]
        assert loaded["message"] == (
            f"LoRA voice registered and its adapter attached on {home}, beside base model {base}"
        )
        assert voices_on(home)[name]["loaded"] is True and voices_on(away)[name]["loaded"] is False
    (resident,) = loaded_models(home)  # one base model, the three adapters on it
    assert (resident["kind"], resident["checkpoint"]) == ("base", base)
    assert sorted(adapter["key"].split("@")[0] for adapter in resident["adapters"]) == sorted(
        f"voice:{name}" for name in cast
    )
    solo_status = status_of(cluster, solo)
    assert (solo_status["routingKey"], solo_status["inferenceReplica"]) == (solo, away)
    assert "baseModel" not in solo_status
    assert [(m["key"], m["adapters"]) for m in loaded_models(away)] == [(f"voice:{solo}", None)]  # it alone

    app = create_kubernetes_app(replace(settings, inference_url=",".join(urls)), kubeconfig=str(kubeconfig))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://facade", timeout=120
        ) as facade,
    ):

        async def speak(voice: str) -> httpx.Response:
            return await facade.post(
                f"/infer/{voice}", json={"text": "Call me Ishmael.", "upload_to_s3": False}
            )

        answers = await asyncio.gather(*(speak(voice) for voice in [*cast, solo]))
        for voice, answer in zip([*cast, solo], answers, strict=True):
            assert answer.status_code == 200, answer.text
            assert answer.headers["X-VFT-Replica"] == (away if voice == solo else home)
            assert soundfile.info(io.BytesIO(answer.content)).samplerate == 24000
        assert len(loaded_models(home)) == 1  # the cast spoke on the base model it was attached to

        next(replica for replica in replicas if replica.url == home).stop()
        moved = await speak(cast[0])  # the next replica in order registered it too: it loads the base from S3
        assert moved.status_code == 200, moved.text
        assert moved.headers["X-VFT-Replica"] == away
