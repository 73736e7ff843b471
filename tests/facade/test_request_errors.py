"""Errors a client's request earns, on a real `vft serve` and a real `vft inference`: only the upload route takes a
multipart body (a JSON route answers one with a 415 before reading it, here before the client has even sent it); a
422 names the value it refuses but repeats no more than a 100-character prefix of anything sent; a body that is not
JSON says where it breaks."""

from __future__ import annotations

import json
import socket

import h11
import httpx
import pytest

JSON_LIMIT = 1024 * 1024  # VFT_MAX_JSON_BYTES's default
ECHO = 100  # the most of one input value an error body repeats
MULTIPART = "multipart/form-data; boundary=x"
ONLY_FINETUNE = (
    "a multipart body is an upload and only POST /finetune takes one: send JSON (Content-Type: "
    "application/json)"
)
NO_UPLOADS = (
    "a multipart body is an upload and no route here takes one: send JSON (Content-Type: application/json)"
)
JSON_ROUTES = [("POST", "/voice-design"), ("PUT", "/gpu/config"), ("POST", "/v1/audio/speech")]


@pytest.fixture(params=["serve", "inference"])
def server(request) -> tuple[str, str]:
    """(command, base URL) of a real `vft serve` and of a real `vft inference`."""
    if request.param == "serve":
        return "serve", request.getfixturevalue("served").url
    return "inference", request.getfixturevalue("inference_served")


def answer_to_a_started_body(url: str, method: str, path: str, *, declared: bool) -> tuple[int, dict]:
    """Send a multipart request's headers (announcing twice the JSON cap, or chunked) and its first 1000 body
    bytes, never the rest, and read the answer: only a server that answers without reading the body gives one."""
    host, port = url.removeprefix("http://").split(":")
    client = h11.Connection(h11.CLIENT)
    size = [("Content-Length", str(2 * JSON_LIMIT))] if declared else [("Transfer-Encoding", "chunked")]
    headers = [("Host", host), ("Content-Type", MULTIPART), *size]
    with socket.create_connection(
        (host, int(port)), timeout=10
    ) as sock:  # recv fails after 10 s without answer
        sock.sendall(client.send(h11.Request(method=method, target=path, headers=headers)))
        sock.sendall(client.send(h11.Data(data=b"--x\r\n" + b"a" * 995)))
        status, body = 0, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, json.loads(body)


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_multipart_body_on_a_json_route_is_415_before_it_is_read(server, method, path, declared):
    command, url = server
    message = ONLY_FINETUNE if command == "serve" else NO_UPLOADS
    expected = (
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
        if path.startswith("/v1/")
        else {"detail": message}
    )
    assert answer_to_a_started_body(url, method, path, declared=declared) == (415, expected)


def test_a_422_repeats_only_a_prefix_of_a_long_value(server):
    _, url = server
    response = httpx.post(url + "/voice-design", json={"text": "Hi.", "instruct": "x" * 5000}, timeout=30)
    line = f"instruct: String should have at most 2000 characters (got '{'x' * (ECHO - 1)}…)"
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": line,
            "message": line,
            "errors": [
                {
                    "type": "string_too_long",
                    "loc": ["body", "instruct"],
                    "msg": "String should have at most 2000 characters",
                    "input": "x" * ECHO + "…",
                }
            ],
        },
    )


def test_a_422_in_a_list_item_names_it_by_position_and_repeats_only_a_prefix(server):
    _, url = server
    body = {"ref_audio_url": "http://example.com/a.wav", "items": [{"text": "Hi.", "filename": "f" * 5000}]}
    response = httpx.post(url + "/voice-clone/batch", json=body, timeout=30)
    line = f"items.0.filename: String should have at most 200 characters (got '{'f' * (ECHO - 1)}…)"
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": line,
            "message": line,
            "errors": [
                {
                    "type": "string_too_long",
                    "loc": ["body", "items", 0, "filename"],
                    "msg": "String should have at most 200 characters",
                    "input": "f" * ECHO + "…",
                }
            ],
        },
    )


def test_a_422_for_a_missing_field_repeats_only_a_prefix_of_the_body_it_shows(server):
    _, url = server
    body = {"instruct": "y" * 1_000_000}  # under the JSON cap: it reaches validation
    response = httpx.post(url + "/voice-design", json=body, timeout=30)
    line = f"text: Field required; instruct: String should have at most 2000 characters (got '{'y' * (ECHO - 1)}…)"
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": line,
            "message": line,
            "errors": [
                {
                    "type": "missing",
                    "loc": ["body", "text"],
                    "msg": "Field required",
                    "input": json.dumps(body)[:ECHO] + "…",
                },
                {
                    "type": "string_too_long",
                    "loc": ["body", "instruct"],
                    "msg": "String should have at most 2000 characters",
                    "input": "y" * ECHO + "…",
                },
            ],
        },
    )
    assert len(response.content) < 2000


REFUSED = [  # (field, value, pydantic's message, error type)
    (
        "lr",
        0,
        "Input should be greater than 0",
        "greater_than",
    ),  # the bound's digits are the value's: still named
    ("lr", 2, "Input should be less than or equal to 1", "less_than_equal"),
    ("num_epochs", 0, "Input should be greater than or equal to 1", "greater_than_equal"),
    ("num_epochs", 1001, "Input should be less than or equal to 1000", "less_than_equal"),
    ("lr", "fast", "Input should be a valid number, unable to parse string as a number", "float_parsing"),
]


def test_every_refused_value_is_named_with_what_was_received(served):
    with served.client() as http:
        for field, value, message, kind in REFUSED:
            response = http.post("/finetune", json={"dataset_s3_key": "datasets/none.zip", field: value})
            line = f"{field}: {message} (got {value!r})"
            assert (response.status_code, response.json()) == (
                422,
                {
                    "detail": line,
                    "message": line,
                    "errors": [{"type": kind, "loc": ["body", field], "msg": message, "input": value}],
                },
            )


def test_a_refused_query_parameter_is_named_with_what_was_received_by_both_servers(served, inference_served):
    line = "threshold_gb: Input should be greater than or equal to 0 (got '-1')"
    for url in (served.url, inference_served):
        response = httpx.get(url + "/gpu/cleanup", params={"threshold_gb": "-1"}, timeout=30)
        assert (response.status_code, response.json()) == (
            422,
            {
                "detail": line,
                "message": line,
                "errors": [
                    {
                        "type": "greater_than_equal",
                        "loc": ["query", "threshold_gb"],
                        "msg": "Input should be greater than or equal to 0",
                        "input": "-1",
                    }
                ],
            },
        ), url


@pytest.mark.parametrize(
    ("body", "offset", "where"),
    [
        (b'{"text": "Hi.",}', 15, "Expecting property name enclosed in double quotes at line 1 column 16"),
        (b'{"text": "Hi.", "instruct": }', 28, "Expecting value at line 1 column 29"),
        (b'{\n  "text":\n}', 12, "Expecting value at line 3 column 1"),
    ],
)
def test_a_body_that_is_not_json_says_where_it_breaks(server, body, offset, where):
    _, url = server
    response = httpx.post(
        url + "/voice-design", content=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    line = f"request body is not valid JSON: {where}"
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": line,
            "message": line,
            "errors": [
                {"type": "json_invalid", "loc": ["body", offset], "msg": "JSON decode error", "input": {}}
            ],
        },
    )


def test_a_finetune_body_that_is_not_json_says_where_it_breaks(served):
    with served.client() as http:
        response = http.post("/finetune", content=b"{not json", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (
        400,
        {
            "detail": "request body is not valid JSON: Expecting property name enclosed in double quotes at line 1 "
            "column 2; send JSON (Content-Type: application/json) or a multipart form with a 'dataset' file",
        },
    )


def test_an_error_about_a_long_name_repeats_only_its_prefix(server):
    command, url = server
    cut = "'" + "v" * (ECHO - 1) + "…"
    speech = httpx.post(
        url + "/v1/audio/speech", json={"model": "tts-1", "voice": "v" * 5000, "input": "Hi."}, timeout=30
    )
    assert (speech.status_code, speech.json()) == (
        400,
        {
            "error": {
                "message": f"Invalid value: voice {cut} is neither a ready fine-tuned voice (job id or speaker name), "
                "'design', nor a preset; GET /v1/audio/voices lists them",
                "type": "invalid_request_error",
                "param": "voice",
                "code": "invalid_value",
            }
        },
    )
    model = httpx.post(
        url + "/v1/audio/speech", json={"model": "v" * 5000, "voice": "alloy", "input": "Hi."}, timeout=30
    )
    assert (model.status_code, model.json()) == (
        404,
        {
            "error": {
                "message": f"The model {cut} does not exist; GET /v1/models lists the ids",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        },
    )
    if command == "serve":  # job ids in a path are the facade's
        job = httpx.get(url + "/jobs/" + "v" * 5000, timeout=30)
        assert (job.status_code, job.json()) == (
            400,
            {
                "detail": (
                    "job_id must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit; "
                    f"got {cut}"
                )
            },
        )
