"""The chart takes the API key from a Secret: the facade and the operator read it there, the operator tells the
inference Deployment which Secret holds it, and no key value appears in any spec. No key configured: none at all."""

from __future__ import annotations

import yaml

from tests.helpers.chart import env_entries, render


def api_key_env(docs: list[dict]) -> dict[str, dict]:
    return env_entries(docs, "VFT_API_KEY")


def test_without_a_key_nothing_mentions_one():
    docs = render()
    assert api_key_env(docs) == {}
    config = next(d for d in docs if d["kind"] == "ConfigMap" and "VFT_OPERATOR_NAMESPACE" in d["data"])
    assert "VFT_API_KEY_SECRET" not in config["data"]


def test_a_key_value_becomes_a_secret_that_every_component_references():
    docs = render("--set", "apiKey.value=s3cr3t-key")
    secret = next(
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "vft-voicefinetune-api-key"
    )
    assert secret["stringData"] == {"VFT_API_KEY": "s3cr3t-key"}
    env = api_key_env(docs)
    assert set(env) == {"vft-voicefinetune-facade", "vft-voicefinetune-operator"}
    for item in env.values():
        assert item == {
            "name": "VFT_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "vft-voicefinetune-api-key", "key": "VFT_API_KEY"}},
        }
    config = next(d for d in docs if d["kind"] == "ConfigMap" and "VFT_OPERATOR_NAMESPACE" in d["data"])
    assert config["data"]["VFT_API_KEY_SECRET"] == "vft-voicefinetune-api-key"
    assert sum("s3cr3t-key" in yaml.safe_dump(d) for d in docs) == 1  # only in the Secret


def test_an_existing_secret_is_used_as_is():
    docs = render("--set", "apiKey.existingSecret=my-keys", "--set", "apiKey.key=token")
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-api-key")]
    refs = {item["valueFrom"]["secretKeyRef"]["name"] for item in api_key_env(docs).values()}
    assert refs == {"my-keys"}
