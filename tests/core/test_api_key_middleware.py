"""The API key on its own (ApiKeyMiddleware around an echo app, and the key helpers): which requests pass, the exact
401, key rotation, the open paths. The same rules on a real `vft serve` are in test_api_key.py."""

from __future__ import annotations

import pytest

from voicefinetune.security import (
    HEALTH_PATHS,
    UNAUTHORIZED,
    ApiKeyMiddleware,
    auth_headers,
    client_key,
    key_matches,
    open_paths,
    parse_keys,
    presented_key,
    protect,
)
from voicefinetune.settings import Settings

from .asgi_helpers import Echo, call

KEYS = ("k1", "rotated-k2")
DETAIL_401 = {"detail": UNAUTHORIZED}


def guarded(
    keys: tuple[str, ...] = KEYS, paths: frozenset[str] = HEALTH_PATHS
) -> tuple[ApiKeyMiddleware, Echo]:
    echo = Echo()
    return ApiKeyMiddleware(echo, keys=keys, open_paths=paths), echo


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer k1"},
        {"Authorization": "bearer rotated-k2"},
        {"X-API-Key": "k1"},
        {"x-api-key": " rotated-k2 "},
        {"Authorization": "Bearer  k1 "},
    ],
)
async def test_a_valid_key_in_either_header_reaches_the_app(headers):
    app, echo = guarded()
    answer = await call(app, path="/jobs", headers=headers, chunks=[b"{}"])
    assert (answer.status, answer.json(), echo.bodies) == (200, {"received": 2}, [b"{}"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": "k"},
        {"Authorization": "k1"},
        {"Authorization": "Basic k1"},
        {"Authorization": "Bearer "},
        {"X-API-Key": ""},
        {"Authorization": "Bearer k1x"},
        {"X-Other": "k1"},
    ],
)
async def test_a_missing_or_wrong_key_is_the_exact_401_and_never_reaches_the_app(headers):
    app, echo = guarded()
    answer = await call(app, path="/jobs", headers=headers)
    assert (answer.status, answer.json(), echo.bodies) == (401, DETAIL_401, [])
    assert answer.headers[b"www-authenticate"] == b"Bearer"
    assert answer.headers[b"content-type"] == b"application/json"


async def test_the_openai_routes_answer_401_in_openais_error_shape():
    app, _ = guarded()
    answer = await call(app, path="/v1/audio/speech")
    assert answer.status == 401
    assert answer.json() == {
        "error": {
            "message": UNAUTHORIZED,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


@pytest.mark.parametrize("path", sorted(HEALTH_PATHS))
async def test_the_health_paths_are_open(path):
    app, echo = guarded()
    answer = await call(app, method="GET", path=path)
    assert (answer.status, echo.bodies) == (200, [b""])


async def test_without_keys_everything_passes_and_non_http_scopes_pass():
    app, echo = guarded(keys=())
    assert (await call(app, path="/jobs")).status == 200
    seen = []

    async def lifespan_app(scope, receive, send) -> None:
        seen.append(scope["type"])

    await ApiKeyMiddleware(lifespan_app, keys=KEYS)({"type": "lifespan"}, None, None)
    assert seen == ["lifespan"] and echo.bodies == [b""]


def test_keys_are_parsed_trimmed_and_the_first_is_sent():
    assert parse_keys(" a , ,b,") == ("a", "b")
    assert parse_keys(None) == parse_keys("") == parse_keys(" , ") == ()
    keyed = Settings.from_env({"VFT_API_KEY": "first, second"})
    assert (client_key(keyed), auth_headers(keyed)) == ("first", {"Authorization": "Bearer first"})
    open_ = Settings.from_env({})
    assert (client_key(open_), auth_headers(open_)) == (None, {})


def test_presented_key_and_matching():
    assert presented_key([(b"Authorization", b"Bearer abc ")]) == "abc"
    assert presented_key([(b"X-API-KEY", b" abc")]) == "abc"
    assert presented_key([(b"authorization", b"Token abc")]) is None
    assert presented_key([(b"authorization", b"Token abc"), (b"x-api-key", b"k")]) == "k"
    assert presented_key([]) is None
    assert key_matches("rotated-k2", KEYS) and key_matches("k1", KEYS)
    assert not key_matches("", KEYS) and not key_matches(None, KEYS) and not key_matches("k1", ())


def test_metrics_is_open_only_when_public():
    public = Settings.from_env({"VFT_METRICS_PUBLIC": "1"})
    private = Settings.from_env({"VFT_METRICS_PUBLIC": "0"})
    docs = {
        "/docs",
        "/redoc",
        "/openapi.json",
    }  # a browser loads Swagger UI before its Authorize button sends the key
    assert open_paths(public) == HEALTH_PATHS | docs | {"/metrics"}
    assert open_paths(private) == HEALTH_PATHS | docs


def test_protect_adds_the_middleware_only_with_keys():
    added = []

    class App:
        def add_middleware(self, cls, **options) -> None:
            added.append((cls, options))

    protect(App(), Settings.from_env({}))
    assert added == []
    protect(App(), Settings.from_env({"VFT_API_KEY": "a,b", "VFT_METRICS_PUBLIC": "0"}))
    assert added == [
        (
            ApiKeyMiddleware,
            {
                "keys": ("a", "b"),
                "open_paths": HEALTH_PATHS | {"/docs", "/redoc", "/openapi.json"},
                "open_prefixes": ("/docs-assets/",),
            },
        )
    ]
