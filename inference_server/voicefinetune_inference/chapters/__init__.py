"""Audiobook chapters (``/synthesis``): a long text or a list of voiced items rendered as one file with its timing
manifest and subtitles, segment by segment through the normal engine path, durably in S3 and resumable."""
