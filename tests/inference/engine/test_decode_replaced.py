"""Upstream's ``speech_tokenizer.decode`` is replaced in one way (``tts_model.decode_replaced``): a replacement
inside another one gives the outer one back, and the class's own method returns at the end."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from voicefinetune_inference.engine.stream import _without_final_decode
from voicefinetune_inference.engine.tts_model import decode_replaced


class SpeechTokenizer:
    """Upstream's shape: ``decode`` is a method of the class, the rate a getter."""

    def decode(self, encoded):
        return [np.ones(3, dtype=np.float32) for _ in encoded], 24000

    def get_output_sample_rate(self):
        return 24000


def test_the_streams_silent_decode_inside_another_replacement_gives_the_outer_one_back():
    tokenizer = SpeechTokenizer()
    tts = SimpleNamespace(model=SimpleNamespace(speech_tokenizer=tokenizer))

    def outer(encoded):
        return [np.full(2, 7.0, dtype=np.float32) for _ in encoded], 24000

    with decode_replaced(tokenizer, outer):
        with _without_final_decode(tts):
            wavs, rate = tokenizer.decode([{}, {}])
            assert [len(w) for w in wavs] == [0, 0] and rate == 24000
        wavs, _ = tokenizer.decode([{}])
        assert wavs[0].tolist() == [7.0, 7.0]
    assert "decode" not in vars(tokenizer)
    assert tokenizer.decode([{}])[0][0].tolist() == [1.0, 1.0, 1.0]
