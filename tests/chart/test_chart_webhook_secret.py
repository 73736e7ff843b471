"""The chart gives the webhook senders (the operator: fine-tunes; the inference pods it builds: chapters) the webhooks'
signing key from an existing Secret, by reference only. No Secret named: no key anywhere, events go unsigned."""

from __future__ import annotations

from typing import Any

from tests.helpers.chart import CHART, S3_KEYS, env_entries, helm, operator_built, render


def webhook_secret_env(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each Deployment's VFT_WEBHOOK_SECRET entry, by Deployment name: the chart's and the operator-built one."""
    return env_entries([*docs, *operator_built(docs)], "VFT_WEBHOOK_SECRET")


def test_without_a_secret_no_pod_gets_a_webhook_key():
    assert webhook_secret_env(render()) == {}


def test_the_operator_and_the_inference_pods_read_the_key_from_the_named_secret():
    docs = render("--set", "webhooks.existingSecret=hook-keys", "--set", "webhooks.key=signing")
    reference = {
        "name": "VFT_WEBHOOK_SECRET",
        "valueFrom": {"secretKeyRef": {"name": "hook-keys", "key": "signing"}},
    }
    assert webhook_secret_env(docs) == {
        "vft-voicefinetune-operator": reference,
        "vft-voicefinetune-inference": reference,
    }


def test_the_key_name_defaults_to_the_variable_and_may_not_be_empty():
    docs = render("--set", "webhooks.existingSecret=hook-keys")
    keys = {item["valueFrom"]["secretKeyRef"]["key"] for item in webhook_secret_env(docs).values()}
    assert keys == {"VFT_WEBHOOK_SECRET"}
    refused = helm("template", "vft", str(CHART), *S3_KEYS, "--set", "webhooks.key=")
    assert refused.returncode == 1 and "- at '/webhooks/key': minLength: got 0, want 1" in refused.stderr
