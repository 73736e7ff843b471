"""VFT_API_KEY on a real `vft serve`: health open, every other endpoint 401 without a valid key, as before with one."""

from __future__ import annotations

import pytest

from voicefinetune.security import UNAUTHORIZED

# (method, path, JSON body, the status a keyed request gets: the same as on a server without VFT_API_KEY)
PROTECTED = [
    ("GET", "/jobs", None, 200),
    ("GET", "/gpu/status", None, 200),
    ("POST", "/voices/x", {"speaker_name": "nobody"}, 400),
    ("GET", "/ops/history", None, 200),
    ("POST", "/voice-design", {}, 422),
    ("GET", "/storage/status", None, 200),
]
WRONG = [
    {},
    {"Authorization": "Bearer wrong"},
    {"X-API-Key": "wrong"},
    {"Authorization": "Bearer k2"},
    {"Authorization": "k"},
    {"Authorization": "Basic k"},
]


def test_health_is_open(served_with_key):
    with served_with_key.client() as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize(("method", "path", "body", "status"), PROTECTED)
def test_protected_without_a_valid_key(served_with_key, method, path, body, status):
    with served_with_key.client() as client:
        for headers in WRONG:
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (headers, response.text)
            assert response.json() == {"detail": UNAUTHORIZED}
            assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body", "status"), PROTECTED)
def test_protected_with_a_key(served_with_key, method, path, body, status):
    with served_with_key.client() as client:
        for headers in (
            {"Authorization": "Bearer k"},
            {"X-API-Key": "k"},
            {"Authorization": "bearer rotated-k2"},
        ):
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == status, (headers, response.text)


def test_jobs_need_the_key_docs_and_metrics_stay_open(served_with_key):
    with served_with_key.client() as client:
        assert client.get("/docs-assets-x").status_code == 401
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/jobs/abc").status_code == 401
        assert client.post("/finetune", json={}).status_code == 401
        assert client.get("/openapi.json", headers={"X-API-Key": "k"}).status_code == 200
        assert client.get("/jobs/abc", headers={"X-API-Key": "k"}).status_code == 404
        assert client.get("/metrics").status_code == 200
