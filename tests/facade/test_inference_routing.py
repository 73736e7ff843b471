"""The facade's inference proxy in front of two real inference servers: the job gate, one replica per voice,
settings applied to every replica, failover when a replica goes away."""

from __future__ import annotations

import collections
from dataclasses import replace

import httpx
import pytest
from voicefinetune_inference.app import create_app as create_inference_app

from tests.helpers.k8s_harness import GROUP, PLURAL, VERSION, voicefinetune
from tests.helpers.servers import ServerThread
from voicefinetune.cluster.routing import pick, rendezvous_order
from voicefinetune.facade.app import ForwardedInference, create_app, create_kubernetes_app
from voicefinetune.facade.kubernetes_backend import KubernetesBackend


def start_replicas(settings, tmp_path, count: int) -> list[ServerThread]:
    return [
        ServerThread(create_inference_app(replace(settings, data_dir=tmp_path / f"replica-{i}"))).start()
        for i in range(count)
    ]


@pytest.fixture
def replicas(settings, tmp_path):
    servers = start_replicas(settings, tmp_path, 2)
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def three_replicas(settings, tmp_path):
    servers = start_replicas(settings, tmp_path, 3)
    yield servers
    for server in servers:
        server.stop()


VOICES = [f"voice-{i:02d}" for i in range(16)]


@pytest.fixture
async def facade(settings, kubeconfig, custom, replicas):
    for name in [*VOICES, "still-training"]:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, voicefinetune(name))
        phase = "Training" if name == "still-training" else "Ready"
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, "default", PLURAL, name, {"status": {"phase": phase}}
        )
    facade_settings = replace(settings, inference_url=",".join(server.url for server in replicas))
    backend = KubernetesBackend(facade_settings, kubeconfig=str(kubeconfig))
    app = create_app(facade_settings, backend, ForwardedInference(facade_settings))
    await backend.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://facade") as client:
        yield client
    await backend.stop()


async def test_gate_answers_404_and_409_before_any_replica(facade):
    unknown = await facade.post("/infer/nobody", json={"text": "hi"})
    assert unknown.status_code == 404 and "X-VFT-Replica" not in unknown.headers
    busy = await facade.post("/infer/still-training", json={"text": "hi"})
    assert busy.status_code == 409 and "training" in busy.json()["detail"]


async def test_each_voice_keeps_its_replica_and_voices_spread(facade, replicas):
    endpoints = [server.url for server in replicas]
    owners = {}
    for voice in VOICES:
        answers = {
            (await facade.post(f"/infer/{voice}", json={"text": "hi"})).headers["X-VFT-Replica"]
            for _ in range(3)
        }
        assert len(answers) == 1, f"{voice} went to several replicas"
        owners[voice] = answers.pop()
        assert owners[voice] == pick(voice, endpoints)  # where the operator preloaded it
    assert set(collections.Counter(owners.values())) == set(endpoints)


async def test_gpu_settings_reach_every_replica_and_a_gone_replica_fails_over(facade, replicas):
    changed = await facade.put("/gpu/config", json={"idle_timeout_seconds": 123})
    assert changed.status_code == 200
    for server in replicas:
        assert httpx.get(f"{server.url}/gpu/status").json()["idle_timeout_seconds"] == 123
    status = await facade.get("/gpu/status")
    assert status.status_code == 200 and status.json()["idle_timeout_seconds"] == 123
    endpoints = [server.url for server in replicas]
    voice = next(v for v in VOICES if pick(v, endpoints) == replicas[1].url)
    replicas[1].stop()
    moved = await facade.post(f"/infer/{voice}", json={"text": "hi"})
    assert moved.headers["X-VFT-Replica"] == replicas[0].url
    assert (await facade.get("/metrics")).status_code == 200


BASE = "Qwen/Qwen3-TTS-12Hz-1.7B-Base"
BOOK = "moby-dick"
CAST_KEY = f"lora:{BASE}#{BOOK}"  # the key the operator records for a LoRA voice of BASE in BOOK (docs/kubernetes.md)


def cast_names(endpoints: list[str]) -> tuple[list[str], str]:
    """Three LoRA voice names that routing by their own ids would split, over all replicas and over those left
    when the cast's replica is gone, and a full voice whose id hashes away from the cast's replica (so it cannot
    ride along by chance)."""
    home = pick(CAST_KEY, endpoints)
    rest = [endpoint for endpoint in endpoints if endpoint != home]
    names = [f"cast-{i}" for i in range(64)]
    cast = [next(n for n in names if pick(n, rest) == endpoint) for endpoint in rest]
    cast.append(next(n for n in names if n not in cast and pick(n, endpoints) != home))
    solo = next(n for n in names if n not in cast and pick(n, endpoints) != home)
    return cast, solo


def speaker_of(name: str, endpoints: list[str]) -> str:
    """The speaker name of cast voice ``name``: one whose upper-case spelling hashes away from the cast's replica,
    so that routing by the name as given would miss it."""
    home = pick(CAST_KEY, endpoints)
    return next(
        f"{name}_speaker{i}" for i in range(64) if pick(f"{name}_speaker{i}".upper(), endpoints) != home
    )


@pytest.fixture
async def cast_facade(settings, kubeconfig, custom, three_replicas):
    """The Kubernetes facade as `vft serve --backend kubernetes` builds it, in front of three replicas, with three
    Ready LoRA voices of one book whose status carries the routing key the operator records, and a full voice."""
    endpoints = [server.url for server in three_replicas]
    cast, solo = cast_names(endpoints)
    for name in cast:
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            voicefinetune(name, method="lora", bookId=BOOK, speakerName=speaker_of(name, endpoints)),
        )
        status = {"phase": "Ready", "routingKey": CAST_KEY, "baseModel": BASE}
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, "default", PLURAL, name, {"status": status}
        )
    # an earlier, failed training of the first cast voice's speaker: not a voice the servers serve
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        voicefinetune("cast-failed", speakerName=speaker_of(cast[0], endpoints)),
    )
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "cast-failed", {"status": {"phase": "Failed"}}
    )
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, voicefinetune(solo, bookId=BOOK)
    )
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, solo, {"status": {"phase": "Ready", "routingKey": solo}}
    )
    facade_settings = replace(settings, inference_url=",".join(endpoints))
    app = create_kubernetes_app(facade_settings, kubeconfig=str(kubeconfig))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://facade") as client,
    ):
        yield client, cast, solo


async def replica_of(facade: httpx.AsyncClient, voice: str) -> str:
    answer = await facade.post(f"/infer/{voice}", json={"text": "hi"})
    return answer.headers["X-VFT-Replica"]


async def test_a_books_lora_voices_share_the_replica_of_their_base_and_a_full_voice_keeps_its_own(
    cast_facade, three_replicas
):
    facade, cast, solo = cast_facade
    endpoints = [server.url for server in three_replicas]
    home = pick(CAST_KEY, endpoints)
    assert [await replica_of(facade, voice) for voice in cast] == [home] * 3
    speech = {"model": "qwen3-tts", "input": "hi", "response_format": "wav"}
    for voice in cast:  # the OpenAI route and chapters go where /infer goes
        spoken = await facade.post("/v1/audio/speech", json={**speech, "voice": voice})
        assert spoken.headers["X-VFT-Replica"] == home
        chapter = await facade.post("/synthesis", json={"voice": voice, "text": "hi"})
        assert chapter.headers["X-VFT-Replica"] == home
    assert await replica_of(facade, solo) == pick(solo, endpoints) != home


async def test_a_lora_voice_named_by_its_speaker_name_goes_to_the_replica_of_its_base(
    cast_facade, three_replicas
):
    facade, cast, _ = cast_facade
    endpoints = [server.url for server in three_replicas]
    home = pick(CAST_KEY, endpoints)
    speech = {"model": "qwen3-tts", "input": "hi", "response_format": "wav"}
    for voice in cast:
        speaker = speaker_of(voice, endpoints).upper()  # any case, as the servers match it
        spoken = await facade.post("/v1/audio/speech", json={**speech, "voice": speaker})
        assert spoken.headers["X-VFT-Replica"] == home  # the first one's failed namesake is no voice


async def test_when_the_replica_of_a_books_base_is_gone_its_lora_voices_move_together(
    cast_facade, three_replicas
):
    facade, cast, _ = cast_facade
    endpoints = [server.url for server in three_replicas]
    home, runner_up, _ = rendezvous_order(CAST_KEY, endpoints)
    next(server for server in three_replicas if server.url == home).stop()
    assert [await replica_of(facade, voice) for voice in cast] == [runner_up] * 3


@pytest.fixture
async def keyed_pair(settings, kubeconfig, tmp_path):
    """An inference server and a Kubernetes facade in front of it, both with VFT_API_KEY=k."""
    keyed = replace(settings, api_key="k", data_dir=tmp_path / "keyed")
    server = ServerThread(create_inference_app(keyed)).start()
    facade_settings = replace(keyed, inference_url=server.url)
    backend = KubernetesBackend(facade_settings, kubeconfig=str(kubeconfig))
    app = create_app(facade_settings, backend, ForwardedInference(facade_settings))
    await backend.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://facade") as client:
        yield server, client
    await backend.stop()
    server.stop()


async def test_api_key_on_the_inference_server_and_through_the_proxy(keyed_pair):
    server, facade = keyed_pair
    async with httpx.AsyncClient(base_url=server.url) as direct:
        assert (await direct.get("/")).status_code == 200
        assert (await direct.get("/gpu/status")).status_code == 401
        assert (await direct.get("/gpu/status", headers={"X-API-Key": "nope"})).status_code == 401
        assert (await direct.post("/voices/x", json={"speaker_name": "s"})).status_code == 401
        assert (await direct.get("/gpu/status", headers={"Authorization": "Bearer k"})).status_code == 200
    assert (await facade.get("/gpu/status")).status_code == 401
    forwarded = await facade.get("/gpu/status", headers={"Authorization": "Bearer k"})
    assert forwarded.status_code == 200, forwarded.text  # the facade passed its key on to the replica
    assert forwarded.headers["X-VFT-Replica"] == server.url


async def test_the_operator_fleet_sends_the_key(keyed_pair):
    from voicefinetune_operator.fleet import InferenceFleet

    from voicefinetune.cluster.routing import EndpointResolver
    from voicefinetune.security import auth_headers

    server, _ = keyed_pair
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await InferenceFleet(EndpointResolver(server.url)).registered(server.url)
    assert refused.value.response.status_code == 401
    from voicefinetune.settings import Settings

    fleet = InferenceFleet(EndpointResolver(server.url), headers=auth_headers(Settings(api_key="k")))
    assert await fleet.registered(server.url) == set()
