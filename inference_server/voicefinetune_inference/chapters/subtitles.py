"""WebVTT and SRT subtitles of a chapter, one cue per segment, from its manifest's times."""

from __future__ import annotations

from collections.abc import Iterable


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cue_text(text: str) -> str:
    # a blank line would end the cue early, and "-->" would read as a timing line
    return " ".join(text.split()).replace("-->", "->")


def webvtt(cues: Iterable[tuple[float, float, str]]) -> str:
    lines = ["WEBVTT", ""]
    for number, (start, end, text) in enumerate(cues, 1):
        lines += [str(number), f"{_clock(start, '.')} --> {_clock(end, '.')}", _cue_text(text), ""]
    return "\n".join(lines)


def srt(cues: Iterable[tuple[float, float, str]]) -> str:
    lines: list[str] = []
    for number, (start, end, text) in enumerate(cues, 1):
        lines += [str(number), f"{_clock(start, ',')} --> {_clock(end, ',')}", _cue_text(text), ""]
    return "\n".join(lines)
