"""A LoRA job through `vft serve` (local backend, in-process inference server): trained, published, loaded onto the
Base model as an adapter, and spoken; its method reported all along."""

from __future__ import annotations

from tests.helpers.servers import Server


def test_a_lora_job_reports_its_method_and_its_voice_speaks_on_the_base_model(served: Server, dataset_zip):
    form = {
        "speaker_name": "Cast1",
        "num_epochs": "1",
        "method": "lora",
        "lora_rank": "2",
        "lora_targets": "q_proj,v_proj",
    }
    with served.client() as http:
        r = http.post("/finetune", files={"dataset": dataset_zip.read_bytes()}, data=form)
    assert r.status_code == 202, r.text
    assert r.json()["config"]["method"] == "lora"
    job_id = r.json()["job_id"]
    job = served.wait_for(job_id, timeout=300)
    assert job["status"] == "ready", f"{job}\n{served.log_tail()}"
    assert job["config"]["method"] == "lora"
    with served.client() as http:
        speech = http.post(
            f"/infer/{job_id}",
            json={"text": "The cast speaks.", "upload_to_s3": False, "voice_strength": 0.5},
        )
        assert speech.status_code == 200 and speech.content[:4] == b"RIFF", speech.text[:300]
        models = http.get("/gpu/status").json()["loaded_models"]
    (base,) = [model for model in models if model["kind"] == "base"]
    assert [adapter["key"].split("@")[0] for adapter in base["adapters"]] == [f"voice:{job_id}"]
    assert not [model for model in models if model["job_id"] == job_id]  # no model of its own
