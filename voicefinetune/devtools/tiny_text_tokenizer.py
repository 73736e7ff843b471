"""The tiny checkpoints' text tokenizer: a byte-level BPE with Qwen's special tokens, trained here in a blink."""

from __future__ import annotations

from typing import Any

TEXT_VOCAB_SIZE = 384
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|tts_pad|>", "<|tts_bos|>", "<|tts_eos|>")
# Qwen2's pre-tokenizer split; with it `<|im_start|>assistant\n` is three tokens, as qwen_tts' slicing expects.
PRETOKENIZE_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
CORPUS = (
    "Hello, this is a tiny voice. The quick brown fox jumps over the lazy dog.",
    "Speak slowly and clearly, with a warm and friendly tone.",
    "A deep calm male voice. A bright cheerful female voice. Whisper softly.",
    "Guten Tag, wie geht es dir? Bonjour, comment allez-vous? Hola, ¿qué tal?",
    "Buongiorno a tutti. Olá, tudo bem? Привет, как дела?",
    "你好，欢迎使用语音合成。こんにちは、元気ですか。안녕하세요, 반갑습니다.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation: ; ! ? ( ) - ' \".",
)
ROLE_LINES = ("<|im_start|>assistant\n", "<|im_start|>user\n", "<|im_end|>\n")


def train_text_tokenizer() -> Any:
    """A byte-level BPE with Qwen's special tokens, wrapped as `Qwen2TokenizerFast`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE())
    # A Sequence, because transformers 4.57.3 replaces pre_tokenizer[0] when loading (its Mistral regex fix).
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TEXT_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # Role words repeated so that "assistant" and "user" become single tokens.
    bpe.train_from_iterator(list(CORPUS) + [line for line in ROLE_LINES for _ in range(50)], trainer)
    return Qwen2TokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
        errors="replace",
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
