"""Streamed codec decode time per chunk with transformers' attention masks and with `codec_mask`'s, same run.

Two decoders with random weights (`voicefinetune.devtools.random_codec`, CPU, float32): the tiny checkpoints' shape
(1 transformer layer, the shape the tests and the LoRA profile decode with) and the released 12 Hz decoder's
(8 layers, 114 M parameters), each with the intra-op threads it is served with. Each decodes, as `codec_stream.IncrementalDecoder` does, the first chunk of an
utterance (1 frame) and a steady chunk (8 frames, 600 frames in: the frame-rate stage runs over 588 frames), with
upstream's masks and the plain ones in turn; each cell is the median of the repeats. The samples are compared too.

    .venv/bin/python -m bench.codec_mask [--repeats N] [--write-docs]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.results import load_average, write_section  # noqa: E402

SECTION = "## Streaming codec: attention masks, upstream vs plain (`bench/codec_mask.py`)"
FRAMES = 600
INTERPRETATION = (
    "The masks do not depend on the weights, so the time saved per chunk is about the same in every row; what it "
    "is worth depends on the rest of the chunk: on the tiny checkpoints (the tests, the LoRA profile, the "
    "concurrency bench) the masks were a large share of a chunk, on the released shape the sample-rate stage (1920 "
    "samples per frame through 1536-channel convolutions) dwarfs them. A GPU run is not measured here."
)
THREADS = max(1, min(4, os.cpu_count() or 1))
CHUNKS = {"first chunk (1 frame)": (0, 1), f"steady chunk (8 frames, {FRAMES - 8} in)": (FRAMES - 8, FRAMES)}


def decoders() -> dict[str, tuple[object, int]]:
    """Each decoder with the intra-op threads it is served with (`voicefinetune.qwen`: one for tiny models)."""
    from voicefinetune.devtools.random_codec import random_decoder
    from voicefinetune.devtools.tiny_configs import speech_tokenizer_config

    tiny = speech_tokenizer_config()["decoder_config"]
    return {
        "tiny checkpoints' shape, 1 thread": (random_decoder(seed=1, **tiny), 1),
        f"released shape, {THREADS} threads": (random_decoder(seed=1), THREADS),
    }


def measure(decoder, repeats: int) -> dict[str, tuple[float, float, bool]]:
    """Per chunk: (upstream ms, plain ms, samples identical)."""
    import torch
    from voicefinetune_inference.engine import codec_mask, codec_stream

    codes = torch.randint(
        0, int(decoder.config.codebook_size), (FRAMES, 16), generator=torch.Generator().manual_seed(2)
    )
    rows = {}
    for name, (start, end) in CHUNKS.items():
        times: dict[bool, list[float]] = {False: [], True: []}
        samples = {}
        for _ in range(repeats):
            for plain in (False, True):
                (codec_mask.install if plain else codec_mask.uninstall)(decoder)
                stream = codec_stream.IncrementalDecoder(
                    decoder, prefix=codes[:start], schedule=(end - start,)
                )
                began = time.perf_counter()
                (samples[plain],) = stream.push(codes[start:end])
                times[plain].append(time.perf_counter() - began)
        same = bool((samples[False] == samples[True]).all())
        rows[name] = (statistics.median(times[False]) * 1e3, statistics.median(times[True]) * 1e3, same)
        print(f"{name}: upstream {rows[name][0]:.1f} ms, plain {rows[name][1]:.1f} ms, identical {same}")
    codec_mask.uninstall(decoder)
    return rows


def report(
    results: dict[str, dict[str, tuple[float, float, bool]]], repeats: int, loads: tuple[float, float]
) -> str:
    lines = [
        f"CPU ({platform.machine()}, {os.cpu_count()} cores shared with other work; load average {loads[0]:.1f} "
        f"before, {loads[1]:.1f} after), float32, random weights, median of {repeats} chunk decodes each, the two "
        "masks alternating in one run. Upstream: transformers' masking_utils builds a causal and a sliding-window "
        "mask per forward with `torch.vmap` (the decoder's position ids make it test for packed sequences, so it "
        "never skips to SDPA's `is_causal`); plain: `engine/codec_mask.py` hands the transformer the same boolean "
        "masks (two comparisons, cached per length), installed at model load.",
        "",
        "| decoder | chunk | upstream masks (ms) | plain masks (ms) | speed-up | samples identical |",
        "|---|---|---|---|---|---|",
    ]
    for decoder, rows in results.items():
        for chunk, (upstream, plain, same) in rows.items():
            lines.append(
                f"| {decoder} | {chunk} | {upstream:.1f} | {plain:.1f} | {upstream / plain:.2f}x | "
                f"{'yes' if same else 'NO'} |"
            )
    lines += ["", INTERPRETATION]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    import torch

    before = load_average()
    results = {}
    for name, (decoder, threads) in decoders().items():
        print(name, flush=True)
        torch.set_num_threads(threads)
        results[name] = measure(decoder, args.repeats)
    text = report(results, args.repeats, (before, load_average()))
    print(text)
    if args.write_docs:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
