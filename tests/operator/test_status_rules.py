"""The operator's status rules (voicefinetune_operator/status.py) as pure functions: phase order, the conditions
each phase sets, condition merging and how a trainer event reads in ``status.progress``. Expected values are
spelled out as the CRD shows them, not derived from the module."""

from __future__ import annotations

import datetime
import re
import time

import pytest
from voicefinetune_operator.status import (
    may_advance,
    merge_conditions,
    now,
    phase_conditions,
    progress_status,
)

ORDERED = ["Queued", "Preparing", "Training", "Loading", "Ready"]


@pytest.mark.parametrize("current", [None, *ORDERED[:-1]])
def test_failed_ends_any_unfinished_phase(current):
    assert may_advance(current, "Failed") is True


@pytest.mark.parametrize("final", ["Ready", "Failed"])
@pytest.mark.parametrize("proposed", [*ORDERED, "Failed"])
def test_ready_and_failed_are_final(final, proposed):
    assert may_advance(final, proposed) is False


@pytest.mark.parametrize("phase", ORDERED)
def test_a_phase_does_not_follow_itself(phase):
    assert may_advance(phase, phase) is False


@pytest.mark.parametrize("proposed", ORDERED)
def test_a_new_resource_takes_any_phase(proposed):
    assert may_advance(None, proposed) is True


@pytest.mark.parametrize(
    ("current", "proposed"),
    [(a, b) for i, a in enumerate(ORDERED[:-1]) for b in ORDERED[i + 1 :]],
)
def test_phases_move_forward(current, proposed):
    assert may_advance(current, proposed) is True
    assert may_advance(proposed, current) is False


def test_an_unknown_phase_neither_follows_nor_blocks_a_known_one():
    assert may_advance("Queued", "Mystery") is False
    assert may_advance("Mystery", "Queued") is True
    assert may_advance("Mystery", "Other") is False


def test_queued_conditions():
    assert phase_conditions("Queued", "JobCreated", "m") == [
        ("TrainingJobCreated", "True", "JobCreated", "m"),
        ("Ready", "False", "Queued", "m"),
    ]


@pytest.mark.parametrize("phase", ["Preparing", "Training"])
def test_running_conditions(phase):
    assert phase_conditions(phase, "r", "m") == [("Ready", "False", phase, "m")]


def test_loading_conditions():
    assert phase_conditions("Loading", "Trained", "m") == [
        ("TrainingSucceeded", "True", "Trained", "m"),
        ("Ready", "False", "Loading", "m"),
    ]


def test_ready_conditions():
    assert phase_conditions("Ready", "Loaded", "m") == [
        ("VoiceLoaded", "True", "Loaded", "m"),
        ("Ready", "True", "VoiceReady", "m"),
    ]


def test_a_load_failure_marks_the_voice_not_loaded():
    assert phase_conditions("Failed", "LoadFailed", "m") == [
        ("VoiceLoaded", "False", "LoadFailed", "m"),
        ("Ready", "False", "LoadFailed", "m"),
    ]


def test_any_other_failure_marks_the_training_not_succeeded():
    assert phase_conditions("Failed", "TrainingFailed", "m") == [
        ("TrainingSucceeded", "False", "TrainingFailed", "m"),
        ("Ready", "False", "TrainingFailed", "m"),
    ]


def test_merging_adds_a_condition_with_the_generation():
    merged = merge_conditions([], [("Ready", "False", "Queued", "m")], generation=3, timestamp="T1")
    assert merged == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Queued",
            "message": "m",
            "lastTransitionTime": "T1",
            "observedGeneration": 3,
        }
    ]


def test_the_transition_time_moves_only_when_the_status_changes():
    existing = [
        {"type": "Ready", "status": "False", "reason": "Queued", "message": "a", "lastTransitionTime": "T0"},
        {"type": "VoiceLoaded", "status": "False", "reason": "x", "message": "b", "lastTransitionTime": "T0"},
        {"status": "True"},  # no type: dropped
    ]
    merged = merge_conditions(
        existing,
        [("Ready", "False", "Training", "c"), ("VoiceLoaded", "True", "Loaded", "d")],
        generation=None,
        timestamp="T1",
    )
    assert merged == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Training",
            "message": "c",
            "lastTransitionTime": "T0",
        },
        {
            "type": "VoiceLoaded",
            "status": "True",
            "reason": "Loaded",
            "message": "d",
            "lastTransitionTime": "T1",
        },
    ]


def test_an_unchanged_condition_without_a_time_takes_the_new_one():
    merged = merge_conditions(
        [{"type": "Ready", "status": "False"}],
        [("Ready", "False", "r", "m")],
        generation=None,
        timestamp="T1",
    )
    assert merged[0]["lastTransitionTime"] == "T1"


def test_a_condition_message_is_cut_at_2048_characters():
    merged = merge_conditions([], [("Ready", "False", "r", "x" * 3000)], generation=None, timestamp="T")
    assert merged[0]["message"] == "x" * 2048


def test_progress_reads_the_numbers_in_camel_case():
    event = {"stage": "training", "epoch": "2", "total_epochs": 5, "step": 7, "loss": 0.5, "global_step": 9}
    assert progress_status(event, "T") == {
        "stage": "training",
        "updatedAt": "T",
        "epoch": 2,
        "totalEpochs": 5,
        "step": 7,
        "loss": 0.5,
        "globalStep": 9,
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"error": "e", "message": "m", "warning": "w"}, "e"),
        ({"message": "m", "warning": "w"}, "m"),
        ({"warning": "w"}, "w"),
        ({"error": "", "message": "", "warning": "w"}, "w"),
    ],
)
def test_progress_message_prefers_the_error_then_the_message_then_the_warning(fields, message):
    assert progress_status({"stage": "failed", **fields}, "T") == {
        "stage": "failed",
        "updatedAt": "T",
        "message": message,
    }


def test_progress_without_a_message_has_none_and_a_long_one_is_cut():
    assert progress_status({"stage": "preparing", "unknown": 1}, "T") == {
        "stage": "preparing",
        "updatedAt": "T",
    }
    assert progress_status({"stage": "failed", "error": "y" * 2000}, "T")["message"] == "y" * 1024


def test_now_is_the_utc_time_in_rfc3339_seconds():
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    stamp = now()
    after = datetime.datetime.now(datetime.UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    parsed = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert before <= parsed <= after


def test_now_is_utc_whatever_the_local_time_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no daylight saving
    time.tzset()
    try:
        stamp = datetime.datetime.strptime(now(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
        utc = datetime.datetime.now(datetime.UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert abs((utc - stamp).total_seconds()) < 60
