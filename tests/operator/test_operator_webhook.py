"""The operator calls a VoiceFinetune's spec.webhookUrl, signed, when the resource becomes Ready or Failed (and not
on the way there)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

from voicefinetune_operator.events import EventRecorder
from voicefinetune_operator.status_writer import StatusWriter

from tests.chapters.chapter_helpers import SECRET, SIGNATURE_HEADER, Receiver
from tests.helpers.k8s_harness import GROUP, PLURAL, VERSION, voicefinetune
from voicefinetune.cluster.client import KubeClient
from voicefinetune.settings import Settings
from voicefinetune.webhooks import WebhookSender


async def test_ready_and_failed_resources_call_their_webhook_signed(kubeconfig, custom):
    hooks = Receiver()
    hooks.thread.start()
    try:
        for name in ("hooked-ok", "hooked-bad"):
            body = voicefinetune(name)
            body["spec"]["webhookUrl"] = hooks.url
            custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
        sender = WebhookSender(Settings(webhook_secret=SECRET, trusted_url_origins=hooks.thread.url))
        kube = await KubeClient.connect(str(kubeconfig))
        try:
            writer = StatusWriter(kube, EventRecorder(kube), sender)
            await writer.transition("default", "hooked-ok", phase="Training", reason="JobRunning")
            await writer.transition("default", "hooked-ok", phase="Ready", reason="VoiceLoaded")
            await writer.transition(
                "default", "hooked-bad", phase="Failed", reason="TrainingFailed", message="OOM"
            )
            ok_body, ok_headers = await asyncio.to_thread(hooks.wait_for, "hooked-ok", 30)
            bad_body, _ = await asyncio.to_thread(hooks.wait_for, "hooked-bad", 30)
        finally:
            await kube.close()
            await sender.close()
    finally:
        hooks.thread.stop()
    assert (
        ok_headers[SIGNATURE_HEADER.lower()]
        == "sha256=" + hmac.new(SECRET.encode(), ok_body, hashlib.sha256).hexdigest()
    )
    ok, bad = json.loads(ok_body), json.loads(bad_body)
    assert {k: ok[k] for k in ("type", "id", "status", "error")} == {
        "type": "finetune",
        "id": "hooked-ok",
        "status": "ready",
        "error": None,
    }
    assert {k: bad[k] for k in ("type", "id", "status", "error")} == {
        "type": "finetune",
        "id": "hooked-bad",
        "status": "failed",
        "error": "OOM",
    }
    assert [json.loads(b)["status"] for b, _ in hooks.calls].count("training") == 0  # only the end is told
