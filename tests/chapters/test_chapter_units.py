"""The chapter's pieces on their own: sentence segmentation, joining at one loudness, subtitles, the quality guard,
and webhook signing and URL checks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import numpy as np
import pytest
from pydantic import ValidationError
from voicefinetune_inference.chapters.joining import TARGET_RMS, join
from voicefinetune_inference.chapters.protocol import RegenerateRequest, SynthesisRequest
from voicefinetune_inference.chapters.quality import SAMPLES_PER_FRAME, DurationNorms
from voicefinetune_inference.chapters.segmenting import Part, segment, sentences
from voicefinetune_inference.chapters.subtitles import srt, webvtt

from voicefinetune.schemas import SAMPLE_RATE, InvalidInput
from voicefinetune.seeds import derived_seed
from voicefinetune.settings import Settings
from voicefinetune.webhooks import WebhookSender, check_webhook_url, event_body, signature


def test_sentences_keep_abbreviations_initials_and_decimals_together():
    text = (
        "Dr. Smith met J. R. R. Tolkien at 3.5 p.m. on Monday. It cost $4.50, e.g. a lot. "
        'Mr. Brown left early! Did St. Ives wait? "Yes." She said so.'
    )
    assert sentences(text, 400) == [
        "Dr. Smith met J. R. R. Tolkien at 3.5 p.m. on Monday.",
        "It cost $4.50, e.g. a lot.",
        "Mr. Brown left early!",
        "Did St. Ives wait?",
        '"Yes." She said so.',
    ]


def test_a_long_sentence_is_cut_within_the_cap_and_never_inside_a_word():
    words = [f"word{n:03d}" for n in range(120)]
    text = " ".join(words) + "."
    pieces = sentences(text, 100)
    assert all(len(piece) <= 100 for piece in pieces)
    assert " ".join(pieces).split() == text.split()  # every word whole, in order


def test_segments_carry_their_item_voice_and_the_pause_after_them():
    parts = [
        Part("First sentence here. Second sentence here.", "narrator", "", "English", 600),
        Part("A character speaks now.", "design:a child", "", "English", 900),
        Part("The narrator ends the chapter.", "narrator", "", "English", 600),
    ]
    got = [
        (s.index, s.item, s.voice, s.text, s.pause_ms)
        for s in segment(parts, sentence_pause_ms=250, max_chars=2000)
    ]
    assert got == [
        (0, 0, "narrator", "First sentence here.", 250),
        (1, 0, "narrator", "Second sentence here.", 600),
        (2, 1, "design:a child", "A character speaks now.", 900),
        (3, 2, "narrator", "The narrator ends the chapter.", 0),
    ]


def test_a_segments_seed_is_the_documented_hash_of_the_chapter_seed_its_index_and_the_attempt():
    # docs/chapters.md: SHA-256 of "{seed}:{index}:{attempt}", first 8 bytes little-endian, top bit cleared
    digest = hashlib.sha256(b"7:12:1").digest()
    assert derived_seed(7, 12, 1) == int.from_bytes(digest[:8], "little") % 2**63
    seeds = {derived_seed(seed, index, attempt) for seed in (7, 8) for index in (0, 1) for attempt in (1, 2)}
    assert len(seeds) == 8 and all(0 <= seed < 2**63 for seed in seeds)
    assert derived_seed(None, 12, 1) is None  # an unseeded chapter's segments are unseeded


@pytest.mark.parametrize("seed", [-1, 2**63, "7", 7.0, True])
@pytest.mark.parametrize("body", [{"text": "One line.", "voice": "alloy"}, {}], ids=["chapter", "regenerate"])
def test_a_chapter_seed_is_a_strict_integer_in_the_seed_range(body, seed):
    model = SynthesisRequest if body else RegenerateRequest
    with pytest.raises(ValidationError) as refused:
        model.model_validate({**body, "seed": seed})
    assert [error["loc"] for error in refused.value.errors()] == [("seed",)]
    assert model.model_validate({**body, "seed": 2**63 - 1}).seed == 2**63 - 1


def test_joining_puts_the_pauses_between_segments_and_brings_them_to_one_loudness():
    rng = np.random.default_rng(0)
    quiet = (0.01 * rng.standard_normal(12_000)).astype(np.float32)
    loud = (0.4 * rng.standard_normal(24_000)).clip(-1, 1).astype(np.float32)
    audio, placed = join([quiet, loud], [250, 0])
    pause = SAMPLE_RATE * 250 // 1000
    assert [(p.start, p.end) for p in placed] == [(0, 12_000), (12_000 + pause, 12_000 + pause + 24_000)]
    assert audio.size == 12_000 + pause + 24_000
    assert not audio[12_000 : 12_000 + pause].any()
    levels = [float(np.sqrt(np.mean(np.square(audio[p.start : p.end])))) for p in placed]
    assert levels == pytest.approx([TARGET_RMS, TARGET_RMS], rel=0.1)  # the fades take a little
    assert audio[0] == 0 and audio[placed[1].end - 1] == 0  # faded in and out: no click at a join


def test_subtitles_have_one_cue_per_segment_in_each_format():
    cues = [(0.0, 1.25, "First line."), (1.5, 3661.042, "Second --> line\nwrapped.")]
    assert webvtt(cues) == (
        "WEBVTT\n\n1\n00:00:00.000 --> 00:00:01.250\nFirst line.\n\n"
        "2\n00:00:01.500 --> 01:01:01.042\nSecond -> line wrapped.\n"
    )
    assert srt(cues) == (
        "1\n00:00:00,000 --> 00:00:01,250\nFirst line.\n\n2\n00:00:01,500 --> 01:01:01,042\nSecond -> line wrapped.\n"
    )


def test_the_quality_guard_refuses_a_run_to_the_frame_bound_and_a_length_far_from_the_voice_norm():
    from voicefinetune_inference.engine.fast_engine import frame_bound

    norms = DurationNorms()
    text = "A sentence of some forty characters ok."
    bound = frame_bound(text) * SAMPLES_PER_FRAME
    assert norms.problem("v", text, bound, SAMPLE_RATE) == "reached its frame bound (no end of speech)"
    normal = 3 * SAMPLE_RATE
    for _ in range(4):
        assert norms.problem("v", text, normal, SAMPLE_RATE) is None
        norms.add("v", text, normal, SAMPLE_RATE)
    assert norms.problem("v", text, normal * 2, SAMPLE_RATE) is None
    assert norms.problem("v", text, normal * 4, SAMPLE_RATE) == "4.0x its voice's seconds per character"
    assert norms.problem("v", text, normal // 4, SAMPLE_RATE) == "0.2x its voice's seconds per character"
    assert norms.problem("other", text, normal * 4, SAMPLE_RATE) is None  # no norm for that voice yet


def test_an_event_is_signed_over_its_raw_body_and_carries_its_timestamp_header():
    body = event_body("synthesis", "abc", "succeeded", output=None)
    event = json.loads(body)
    assert (event["type"], event["id"], event["status"]) == ("synthesis", "abc", "succeeded")
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature("s3cret", body) == expected
    headers = WebhookSender(Settings(webhook_secret="s3cret")).headers(body)
    assert headers["X-Voicefinetune-Signature"] == expected
    assert headers["X-Voicefinetune-Timestamp"] == str(event["timestamp"])
    assert "X-Voicefinetune-Signature" not in WebhookSender(Settings()).headers(body)


@pytest.mark.parametrize(
    ("url", "settings", "refusal"),
    [
        ("http://127.0.0.1:9/hook", Settings(), "a loopback address"),
        ("http://169.254.169.254/latest", Settings(allow_private_urls=True), "a cloud metadata address"),
        ("http://[::ffff:10.1.2.3]/hook", Settings(), "a private address"),
        ("http://127.0.0.1:9/hook", Settings(trusted_url_origins="http://127.0.0.1:9"), None),
        ("http://127.0.0.1:9/hook", Settings(allow_private_urls=True), None),
    ],
)
def test_a_webhook_url_passes_the_reference_audio_address_policy(url, settings, refusal):
    if refusal is None:
        assert asyncio.run(check_webhook_url(url, settings)) == url
    else:
        with pytest.raises(InvalidInput, match=refusal):
            asyncio.run(check_webhook_url(url, settings))


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"text": "Hi.", "voice": "narrator-job"}', "narrator-job"),
        (b'{"items": [{"text": "Hi.", "voice": "hero-job"}, {"text": "Yo.", "voice": "other"}]}', "hero-job"),
        (b'{"items": [{"text": "Hi.", "voice": "design:a calm woman"}]}', "voice-design"),
        (b'{"items": [{"text": "Hi."}], "voice": "alloy"}', "voice-design"),
        (b'{"items": [{"text": "Hi."}]}', None),
        (b"not json", None),
        (b"[1, 2]", None),
    ],
)
def test_the_facade_routes_a_chapter_by_its_first_voice(body: bytes, key: str | None):
    from voicefinetune.facade.inference_proxy import chapter_key

    assert chapter_key(body) == key
