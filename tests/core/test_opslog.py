import pytest

from voicefinetune.opslog import OpsLog


def test_averages_history_and_running(tmp_path):
    ops = OpsLog(tmp_path / "ops.jsonl")
    ops.record("s3_upload", 1.0, job_id="a")
    ops.record("s3_upload", 3.0, job_id="b")
    with ops.track("training", job_id="a") as entry:
        assert [r["op_name"] for r in ops.running()] == ["training"]
        assert entry["job_id"] == "a"
    assert ops.running() == []
    averages = ops.averages()
    assert averages["s3_upload"] == {"avg_seconds": 2.0, "count": 2}
    assert averages["training"]["count"] == 1
    assert [r["job_id"] for r in ops.history(op_name="s3_upload")] == ["b", "a"]
    assert [r["op_name"] for r in ops.history(job_id="a", limit=1)] == ["training"]


def test_failures_stay_out_of_averages_and_history_survives_a_restart(tmp_path):
    path = tmp_path / "ops.jsonl"
    ops = OpsLog(path)
    with pytest.raises(RuntimeError), ops.track("model_load", job_id="x"):
        raise RuntimeError("boom")
    with open(path, "a") as handle:
        handle.write('{"op_name": "torn')  # a crash mid-write
    restarted = OpsLog(path)
    with restarted.track("model_load", job_id="x"):
        pass
    reopened = OpsLog(path)
    assert [r["ok"] for r in reopened.history()] == [True, False]
    assert reopened.averages()["model_load"]["count"] == 1  # failures are in the history, not the averages


def test_started_operation_is_running_until_finished_once(tmp_path):
    ops = OpsLog(tmp_path / "ops.jsonl")
    op_id = ops.start("prepare_data", job_id="j", attempt=2)
    assert [
        {k: v for k, v in r.items() if k not in ("started_at", "elapsed_seconds")} for r in ops.running()
    ] == [{"op_name": "prepare_data", "job_id": "j", "attempt": 2}]
    ops.finish(op_id, ok=False)
    ops.finish(op_id)
    assert ops.running() == []
    assert [
        (r["op_name"], r["job_id"], r["ok"], r["attempt"]) for r in OpsLog(tmp_path / "ops.jsonl").history()
    ] == [("prepare_data", "j", False, 2)]
