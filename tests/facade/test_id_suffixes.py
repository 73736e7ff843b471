"""Every id field of the API refuses a value with a trailing newline, CRLF or NUL (a `$` anchor matches before a
final newline), naming the field. The table is checked against the apps' OpenAPI documents, so a new id field
(path, query, JSON or form) cannot be left out of it."""

from __future__ import annotations

import base64
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from voicefinetune_inference.app import create_app as create_inference_app

from tests.helpers.servers import server_environment
from voicefinetune.devtools.sample_data import make_dataset_zip
from voicefinetune.serve import create_local_app
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage

SUFFIXES = ["\n", "\r\n", "\x00"]
# A valid value of each field (the suffix is what makes it invalid); ids not listed take "hero1".
VALID = {
    "s3_filename": "take.wav",
    "items[].filename": "take.wav",
    "voice": "alloy",
    "model": "qwen3-tts",
    "model_id": "qwen3-tts",
    "speaker_name": "Hero",
}
DATASET_KEY = "datasets/Hero1/dataset.zip"
VOICE = "hero1"  # registered on the standalone inference app, so its /infer routes reach their field checks
SPEAKER = "tiny_speaker"  # the speaker of the tiny custom_voice checkpoint
ID_NAMES = ("voice", "model")
ID_ENDINGS = ("_id", "_name", "filename")
FACADE, INFERENCE = "facade", "inference"

JOB_ID_RULE = "job_id must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit; got {!r}"
VOICE_ID_RULE = "job_id {!r} must be 1-128 letters, digits, '.', '_' or '-' (starting with a letter or digit)"
SPEAKER_RULE = (
    "speaker_name must start with a letter and use only letters, digits, '_' or '-' (64 at most); got {!r}"
)
FILENAME_RULE = "unsafe {} {!r}: use letters, digits, '.', '_' or '-' only, no folders and no '..'"
SYNTHESIS_ID_RULE = "synthesis_id must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit; got {!r}"
SAFE_ID_RULE = (
    "unsafe {} {!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, and no '..'"
)
UNKNOWN_VOICE_RULE = (
    "unknown voice: Invalid value: voice {!r} is neither a ready fine-tuned voice (job id or speaker name), "
    "'design', nor a preset; GET /v1/audio/voices lists them"
)


def _is_id(name: str) -> bool:
    return name in ID_NAMES or name.endswith(ID_ENDINGS)


def _body_fields(schema: dict[str, Any], doc: dict[str, Any], prefix: str = "") -> Iterator[str]:
    if "$ref" in schema:
        yield from _body_fields(doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], doc, prefix)
        return
    for alternative in schema.get("anyOf", []) + schema.get("oneOf", []):
        yield from _body_fields(alternative, doc, prefix)
    if schema.get("type") == "array" and "items" in schema:
        yield from _body_fields(schema["items"], doc, prefix + "[]")
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        if _is_id(name):
            yield path
        yield from _body_fields(sub, doc, path)


def id_fields(app: FastAPI) -> set[tuple[str, str, str, str]]:
    """(method, route, where, field) of every id-like parameter and body field in the app's OpenAPI document."""
    doc = app.openapi()
    found = set()
    for route, operations in doc["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if _is_id(parameter["name"]):
                    found.add((method.upper(), route, parameter["in"], parameter["name"]))
            for content_type, content in operation.get("requestBody", {}).get("content", {}).items():
                for field in _body_fields(content["schema"], doc):
                    found.add((method.upper(), route, content_type, field))
    return found


# --- what each field's request looks like and what it must answer --------------------------------------------


@dataclass(frozen=True)
class Sent:
    """A request carrying ``value`` in one field."""

    method: str
    url: str
    json: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    upload: bool = False


def _finetune(field: str, value: str) -> Sent:
    return Sent(
        "POST", "/finetune", json={"dataset_s3_key": DATASET_KEY, "speaker_name": "Hero", field: value}
    )


def _finetune_form(field: str, value: str) -> Sent:
    return Sent("POST", "/finetune", data={"speaker_name": "Hero", field: value}, upload=True)


def _path(method: str, route: str, body: dict[str, Any] | None = None) -> Callable[[str], Sent]:
    return lambda value: Sent(method, route.replace("{job_id}", quote(value, safe="")), json=body)


def _refused_422(field: str) -> Callable[[Response, str], None]:
    """A validation error: 422 whose one-line detail starts with the field's name and shows the value received."""

    def check(answer: Response, value: str) -> None:
        assert answer.status_code == 422, answer.text
        detail = answer.json()["detail"]
        assert detail.startswith(f"{field}: ") and repr(value) in detail, detail

    return check


def _refused_400(rule: str, *names: str) -> Callable[[Response, str], None]:
    def check(answer: Response, value: str) -> None:
        assert answer.status_code == 400, answer.text
        assert answer.json() == {"detail": rule.format(*names, value)}

    return check


def _item_refused(field: str) -> Callable[[Response, str], None]:
    """A batch answers 200 with the bad item's error in its place (the batch's rule for item checks)."""

    def check(answer: Response, value: str) -> None:
        assert answer.status_code == 200, answer.text
        [item] = answer.json()
        assert item["status_code"] == 400 and item["index"] == 0 and item["filename"] == value, item
        assert item["error"] == FILENAME_RULE.format(field, value)

    return check


def _openai_refused(status: int, param: str) -> Callable[[Response, str], None]:
    def check(answer: Response, value: str) -> None:
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert error["param"] == param and repr(value) in error["message"], error

    return check


def _no_match(answer: Response, _value: str) -> None:
    """A query filter: no record can have such an id, so nothing matches (and nothing fails)."""
    assert answer.status_code == 200, answer.text
    assert answer.json() == []


REFERENCE = "data:audio/wav;base64,"  # + a real WAV, added by the fixture
SPEECH = {"model": "qwen3-tts", "input": "Hello.", "voice": "alloy"}
TEXT = {"text": "Hello there."}

# (app, method, route, where, field) -> (the request for a value, the check of the answer)
CASES: dict[
    tuple[str, str, str, str, str], tuple[Callable[[str], Sent], Callable[[Response, str], None]]
] = {}
for _field in ("job_id", "speaker_name", "book_id", "chapter_id", "character_id", "resume_job_id"):
    CASES[(FACADE, "POST", "/finetune", "application/json", _field)] = (
        lambda value, field=_field: _finetune(field, value),
        _refused_422(_field),
    )
    CASES[(FACADE, "POST", "/finetune", "multipart/form-data", _field)] = (
        lambda value, field=_field: _finetune_form(field, value),
        _refused_422(_field),
    )
for _method, _route in (("GET", "/jobs/{job_id}"), ("DELETE", "/jobs/{job_id}")):
    CASES[(FACADE, _method, _route, "path", "job_id")] = (_path(_method, _route), _refused_400(JOB_ID_RULE))
for _app, _rule in ((FACADE, JOB_ID_RULE), (INFERENCE, VOICE_ID_RULE)):  # the facade's job gate comes first
    CASES[(_app, "POST", "/infer/{job_id}", "path", "job_id")] = (
        _path("POST", "/infer/{job_id}", TEXT),
        _refused_400(_rule),
    )
    CASES[(_app, "POST", "/infer/{job_id}/batch", "path", "job_id")] = (
        _path("POST", "/infer/{job_id}/batch", {"items": [TEXT]}),
        _refused_400(_rule),
    )
for _app in (FACADE, INFERENCE):
    for _method, _route, _body in (
        ("POST", "/voices/{job_id}", {"speaker_name": SPEAKER}),
        ("DELETE", "/voices/{job_id}", None),
        ("GET", "/storage/list/{job_id}", None),
    ):
        CASES[(_app, _method, _route, "path", "job_id")] = (
            _path(_method, _route, _body),
            _refused_400(VOICE_ID_RULE),
        )
    CASES[(_app, "POST", "/voices/{job_id}", "application/json", "speaker_name")] = (
        lambda value: Sent("POST", f"/voices/{VOICE}-new", json={"speaker_name": value}),
        _refused_400(SPEAKER_RULE),
    )
    for _field in ("job_id", "op_name"):
        CASES[(_app, "GET", "/ops/history", "query", _field)] = (
            lambda value, field=_field: Sent("GET", f"/ops/history?{field}={quote(value, safe='')}"),
            _no_match,
        )
    CASES[(_app, "GET", "/v1/models/{model_id}", "path", "model_id")] = (
        lambda value: Sent("GET", f"/v1/models/{quote(value, safe='')}"),
        _openai_refused(404, "model"),
    )
    CASES[(_app, "POST", "/v1/audio/speech", "application/json", "model")] = (
        lambda value: Sent("POST", "/v1/audio/speech", json={**SPEECH, "model": value}),
        _openai_refused(404, "model"),
    )
    CASES[(_app, "POST", "/v1/audio/speech", "application/json", "voice")] = (
        lambda value: Sent("POST", "/v1/audio/speech", json={**SPEECH, "voice": value}),
        _openai_refused(400, "voice"),
    )
    CASES[(_app, "POST", "/voice-design", "application/json", "s3_filename")] = (
        lambda value: Sent("POST", "/voice-design", json={**TEXT, "instruct": "calm", "s3_filename": value}),
        _refused_400(FILENAME_RULE, "s3_filename"),
    )
    CASES[(_app, "POST", "/voice-clone", "application/json", "s3_filename")] = (
        lambda value: Sent(
            "POST",
            "/voice-clone",
            json={
                **TEXT,
                "ref_audio_url": REFERENCE,
                "ref_text": "Hi.",
                "upload_to_s3": True,
                "s3_filename": value,
            },
        ),
        _refused_400(FILENAME_RULE, "s3_filename"),
    )
    CASES[(_app, "POST", "/voice-clone/batch", "application/json", "items[].filename")] = (
        lambda value: Sent(
            "POST",
            "/voice-clone/batch",
            json={"ref_audio_url": REFERENCE, "ref_text": "Hi.", "items": [{**TEXT, "filename": value}]},
        ),
        _item_refused("filename"),
    )
    for _route in ("/infer/{job_id}", "/infer/{job_id}/batch"):
        for _field in ("book_id", "chapter_id"):
            body = (
                (lambda v, f=_field: {**TEXT, f: v})
                if _route == "/infer/{job_id}"
                else (lambda v, f=_field: {"items": [TEXT], f: v})
            )
            CASES[(_app, "POST", _route, "application/json", _field)] = (
                lambda value, route=_route, body=body: Sent(
                    "POST", route.replace("{job_id}", VOICE), json=body(value)
                ),
                _refused_422(_field),
            )
for _app in (FACADE, INFERENCE):  # audiobook chapters: checked before anything is written
    for _method, _route in (
        ("GET", "/synthesis/{synthesis_id}"),
        ("DELETE", "/synthesis/{synthesis_id}"),
        ("POST", "/synthesis/{synthesis_id}/segments/{index}/regenerate"),
    ):
        CASES[(_app, _method, _route, "path", "synthesis_id")] = (
            lambda value, method=_method, route=_route: Sent(
                method, route.replace("{synthesis_id}", quote(value, safe="")).replace("{index}", "0")
            ),
            _refused_400(SYNTHESIS_ID_RULE),
        )
    CASES[(_app, "POST", "/synthesis", "application/json", "synthesis_id")] = (
        lambda value: Sent("POST", "/synthesis", json={**TEXT, "voice": "alloy", "synthesis_id": value}),
        _refused_400(SYNTHESIS_ID_RULE),
    )
    for _field in ("book_id", "chapter_id"):
        CASES[(_app, "POST", "/synthesis", "application/json", _field)] = (
            lambda value, field=_field: Sent(
                "POST", "/synthesis", json={**TEXT, "voice": "alloy", "book_id": "hero1", field: value}
            ),
            _refused_400(SAFE_ID_RULE, _field),
        )
    CASES[(_app, "POST", "/synthesis", "application/json", "voice")] = (
        lambda value: Sent("POST", "/synthesis", json={**TEXT, "voice": value}),
        _refused_400(UNKNOWN_VOICE_RULE),
    )
    CASES[(_app, "POST", "/synthesis", "application/json", "items[].voice")] = (
        lambda value: Sent("POST", "/synthesis", json={"items": [{**TEXT, "voice": value}]}),
        _refused_400(UNKNOWN_VOICE_RULE),
    )
CASES[(INFERENCE, "POST", "/infer/{job_id}", "application/json", "s3_filename")] = (
    lambda value: Sent("POST", f"/infer/{VOICE}", json={**TEXT, "s3_filename": value}),
    _refused_400(FILENAME_RULE, "s3_filename"),
)
CASES[(INFERENCE, "POST", "/infer/{job_id}/batch", "application/json", "items[].filename")] = (
    lambda value: Sent("POST", f"/infer/{VOICE}/batch", json={"items": [{**TEXT, "filename": value}]}),
    _item_refused("filename"),
)
# On the facade these body fields sit behind the job gate (a ready job): the standalone server's rows check them.
BEHIND_THE_JOB_GATE = {
    (FACADE, "POST", "/infer/{job_id}", "application/json", "s3_filename"),
    (FACADE, "POST", "/infer/{job_id}/batch", "application/json", "items[].filename"),
}


@pytest.fixture(scope="module")
def apps(tmp_path_factory, s3_endpoint: str, tiny_models) -> Iterator[dict[str, TestClient]]:
    """The facade (local backend) and a standalone inference server, each on its own bucket and data folder."""
    root = tmp_path_factory.mktemp("id-suffixes")
    clients: dict[str, TestClient] = {}
    for name, create in ((FACADE, create_local_app), (INFERENCE, create_inference_app)):
        settings = Settings.from_env(
            server_environment(
                root / name,
                s3_endpoint=s3_endpoint,
                bucket=f"vft-ids-{uuid.uuid4().hex[:10]}",
                tiny_root=tiny_models.root,
            )
        )
        Storage(settings).ensure_bucket()
        clients[name] = TestClient(create(settings)).__enter__()
    folder = (
        Settings.from_env(
            server_environment(
                root / INFERENCE, s3_endpoint=s3_endpoint, bucket="unused", tiny_root=tiny_models.root
            )
        ).job_dir(VOICE)
        / "output"
        / "checkpoint-epoch-0"
    )
    shutil.copytree(tiny_models.custom_voice, folder)
    registered = clients[INFERENCE].post(f"/voices/{VOICE}", json={"speaker_name": SPEAKER})
    assert registered.status_code == 200, registered.text
    yield clients
    for client in clients.values():
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> bytes:
    return make_dataset_zip(tmp_path_factory.mktemp("ids-dataset") / "dataset.zip", count=2).read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
    import io

    import numpy as np
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(
        buffer,
        (0.1 * np.sin(np.arange(24000) / 24000 * 2 * np.pi * 140)).astype(np.float32),
        24000,
        format="WAV",
        subtype="PCM_16",
    )
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_table_covers_every_id_field_of_both_apps(apps: dict[str, TestClient]) -> None:
    documented = {(name, *row) for name, client in apps.items() for row in id_fields(client.app)}
    assert documented - BEHIND_THE_JOB_GATE == set(CASES), (
        f"missing: {sorted(documented - BEHIND_THE_JOB_GATE - set(CASES))}; "
        f"gone: {sorted(set(CASES) - documented)}"
    )


@pytest.mark.parametrize("suffix", SUFFIXES, ids=["LF", "CRLF", "NUL"])
@pytest.mark.parametrize(
    "case", sorted(CASES), ids=lambda case: f"{case[0]}:{case[1]}:{case[2]}:{case[3]}:{case[4]}"
)
def test_an_id_with_a_control_suffix_is_refused_naming_the_field(
    apps: dict[str, TestClient], dataset: bytes, reference: str, case, suffix: str
) -> None:
    app, _method, _route, _where, field = case
    build, check = CASES[case]
    value = VALID.get(field, "hero1") + suffix
    sent = build(value)
    json = sent.json
    if json is not None and json.get("ref_audio_url") == REFERENCE:
        json = {**json, "ref_audio_url": REFERENCE + reference}
    client = apps[app]
    jobs_before = client.get("/jobs").json() if app == FACADE else None
    answer = client.request(
        sent.method,
        sent.url,
        json=json,
        data=sent.data,
        files={"dataset": ("dataset.zip", dataset, "application/zip")} if sent.upload else None,
    )
    check(answer, value)
    if app == FACADE:
        assert client.get("/jobs").json() == jobs_before  # nothing was created


def test_vft_train_refuses_a_job_id_or_speaker_with_a_control_suffix(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    import json

    from voicefinetune_trainer.cli import EXIT_FAILED, main

    monkeypatch.setenv("VFT_DATA_DIR", str(tmp_path / "data"))
    for suffix in SUFFIXES:
        for flag, value, expected in (
            (
                "--job-id",
                "hero1" + suffix,
                f"--job-id {'hero1' + suffix!r} must be letters, digits, '.', '_' or '-' (128 at most)",
            ),
            ("--speaker-name", "Hero" + suffix, "--speaker-name: " + SPEAKER_RULE.format("Hero" + suffix)),
        ):
            arguments = {
                "--job-id": "hero1",
                "--dataset": "missing.zip",
                "--speaker-name": "Hero",
                flag: value,
            }
            code = main([item for pair in arguments.items() for item in pair])
            last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            assert code == EXIT_FAILED and last["stage"] == "failed", last
            assert last["error"] == expected
    assert not (tmp_path / "data" / "jobs").exists()  # no folder was made for any of them
