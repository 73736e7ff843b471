"""/docs and /redoc work offline and with an API key, on `vft serve` and on `vft inference`: every file the pages
reference is served by the app itself (none from another host) without the key, and the schema declares the key's
two headers so Swagger UI's Authorize button sends it."""

from __future__ import annotations

import re

import httpx
import pytest
from voicefinetune_inference import create_app as create_inference_app

from tests.helpers.server_fixtures import API_KEYS

REFERENCE = re.compile(r"""(?:src|href|spec-url)="([^"]+)"|url: '([^']+)'""")
PAGES = ("/docs", "/redoc")
SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "the API key as 'Authorization: Bearer <key>'",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def referenced(html: str) -> list[str]:
    return [a or b for a, b in REFERENCE.findall(html)]


def check_docs(client: httpx.Client) -> None:
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        urls = referenced(response.text)
        assert "/openapi.json" in urls, urls
        assert len(urls) >= 3, urls  # the page's script, its icon, the schema (and Swagger's stylesheet)
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 1000, (url, asset.status_code)
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"] == SCHEMES
    assert schema["security"] == [{"bearer": []}, {"apiKey": []}]
    key = API_KEYS.split(",")[0]
    assert client.get("/gpu/status").status_code == 401
    assert client.get("/gpu/status", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/gpu/status", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_serve_docs_render_from_the_app_with_a_key(served_with_key):
    with served_with_key.client() as client:
        check_docs(client)


@pytest.mark.asyncio
async def test_inference_docs_render_from_the_app_with_a_key(served_with_key):
    app = create_inference_app(served_with_key.settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        for page in PAGES:
            urls = referenced((await client.get(page)).text)
            for url in urls:
                assert url.startswith("/") and (await client.get(url)).status_code == 200, url
        schema = (await client.get("/openapi.json")).json()
        assert schema["components"]["securitySchemes"] == SCHEMES


def test_no_security_schemes_without_a_key(served):
    with served.client() as client:
        schema = client.get("/openapi.json").json()
        assert "securitySchemes" not in schema.get("components", {}) and "security" not in schema
        assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
