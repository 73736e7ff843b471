"""Checkpoints of a fine-tune: per-epoch custom_voice exports written atomically, resume loading, purge.

A checkpoint folder `checkpoint-epoch-N` is the base model folder with:
- `config.json` switched to `tts_model_type: custom_voice` with one speaker `{name: slot}`;
- `model.safetensors` without `speaker_encoder.*`, the averaged speaker embedding written into codec-embedding
  row `slot`, each tensor in the dtype the base file stores it in;
- `speech_tokenizer/` and the tokenizer files of the base, hard-linked (copied across file systems): the base's
  files are never written in place, and a link keeps its data even when the base folder is deleted;
- `trainer_state.json` (epoch, global step, speaker slot), so a run resumed from it continues the numbering;
- only when a run stopped early: `optimizer.pt` (resume), in the latest checkpoint alone.

Writes go to a hidden temporary folder that is renamed into place when complete, and the weights are streamed
tensor by tensor, so peak extra memory is one tensor rather than a copy of the model.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from voicefinetune.checkpoints import CONFIG_FILE, checkpoint_dir, list_checkpoints

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
OPTIMIZER_FILE = "optimizer.pt"
TRAINER_STATE_FILE = "trainer_state.json"
TRAINING_STATE_FILES = (OPTIMIZER_FILE, TRAINER_STATE_FILE)

TEMP_PREFIX = ".tmp-"
SPEAKER_ENCODER_PREFIX = "speaker_encoder."
CODEC_EMBEDDING_KEY = "talker.model.codec_embedding.weight"
CUSTOM_VOICE = "custom_voice"

# safetensors dtype names (the file format's own spelling).
_SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_TORCH_DTYPES = {name: dtype for dtype, name in _SAFETENSORS_DTYPES.items()}


class ResumeCheckpointError(ValueError):
    """The resume folder is not a checkpoint this trainer can continue from (the message says why)."""


@dataclass(frozen=True)
class TrainingState:
    """What a resumed run needs besides weights and optimizer moments (`trainer_state.json`)."""

    epoch: int  # last completed epoch
    global_step: int
    speaker_name: str
    speaker_slot: int
    seed: int

    def write(self, folder: Path) -> None:
        _write_json(folder / TRAINER_STATE_FILE, asdict(self))

    @classmethod
    def read(cls, folder: Path) -> TrainingState | None:
        path = Path(folder) / TRAINER_STATE_FILE
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise ResumeCheckpointError(
                f"{path} is unreadable ({exc}); delete it to resume from weights only"
            ) from exc


def local_model_dir(model_path: str | Path) -> Path:
    """The local folder of a model given as a folder or a hub id (from the hub cache, downloading if allowed)."""
    if Path(model_path).is_dir():
        return Path(model_path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(model_path)))


# ----- speaker slot and config ---------------------------------------------------------------------------------


def _ids(value: Any) -> list[int]:
    """Speaker ids are ints in fine-tuned configs and one-element lists in Qwen's CustomVoice release."""
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


def choose_speaker_slot(talker_config: Any) -> int:
    """The highest codec-embedding row that no code, control token, language or speaker uses.

    Rows below the codebook size are audio codes; qwen_tts looks a speaker up as `codec_embedding(spk_id)`.
    """
    reserved = {
        talker_config.codec_pad_id,
        talker_config.codec_bos_id,
        talker_config.codec_eos_token_id,
        talker_config.codec_think_id,
        talker_config.codec_nothink_id,
        talker_config.codec_think_bos_id,
        talker_config.codec_think_eos_id,
    }
    reserved.update(int(v) for v in (talker_config.codec_language_id or {}).values())
    for value in (talker_config.spk_id or {}).values():
        reserved.update(_ids(value))
    codebook_size = talker_config.code_predictor_config.vocab_size
    for slot in range(talker_config.vocab_size - 1, codebook_size - 1, -1):
        if slot not in reserved:
            return slot
    raise ValueError("no free codec-embedding row for a speaker in this model")


def speaker_key(speaker_name: str) -> str:
    """qwen_tts looks speakers up by `name.lower()`, so the config key must be lower case."""
    return speaker_name.lower()


def custom_voice_config(base_config: Mapping[str, Any], speaker_name: str, slot: int) -> dict[str, Any]:
    """The base `config.json` as a custom_voice model with one speaker in `slot`."""
    config = copy.deepcopy(dict(base_config))
    config["tts_model_type"] = CUSTOM_VOICE
    talker = config.setdefault("talker_config", {})
    talker["spk_id"] = {speaker_key(speaker_name): slot}
    talker["spk_is_dialect"] = {speaker_key(speaker_name): False}
    return config


def speaker_slot_of(folder: Path, speaker_name: str) -> int | None:
    """The codec row a custom_voice checkpoint uses for `speaker_name` (or its only speaker)."""
    config = json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))
    speakers = config.get("talker_config", {}).get("spk_id") or {}
    if speaker_key(speaker_name) in speakers:
        return _ids(speakers[speaker_key(speaker_name)])[0]
    if len(speakers) == 1:
        return _ids(next(iter(speakers.values())))[0]
    return None


# ----- safetensors streaming -------------------------------------------------------------------------------------


def stored_dtypes(model_dir: Path) -> dict[str, torch.dtype]:
    """Tensor name → dtype as stored in the folder's top-level safetensors files (header only)."""
    dtypes = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, entry in header.items():
            if name != "__metadata__" and entry["dtype"] in _TORCH_DTYPES:
                dtypes[name] = _TORCH_DTYPES[entry["dtype"]]
    return dtypes


def write_safetensors(path: Path, tensors: Iterable[tuple[str, torch.Tensor, torch.dtype]]) -> None:
    """Write (name, tensor, dtype) entries as a safetensors file, converting one tensor at a time."""
    entries = list(tensors)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, tensor, dtype in entries:
        size = tensor.numel() * dtype.itemsize
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # the format aligns the data start to 8 bytes
    with Path(path).open("wb") as handle:
        handle.write(struct.pack("<Q", len(header_bytes)))
        handle.write(header_bytes)
        for _, tensor, dtype in entries:
            data = tensor.detach().to("cpu", dtype).contiguous().reshape(-1)
            handle.write(data.view(torch.uint8).numpy().data)
        handle.flush()
        os.fsync(handle.fileno())


def _export_tensors(
    model: torch.nn.Module, dtypes: Mapping[str, torch.dtype], slot: int, speaker_embedding: torch.Tensor
) -> list[tuple[str, torch.Tensor, torch.dtype]]:
    state = model.state_dict()
    if CODEC_EMBEDDING_KEY not in state:
        raise ValueError(f"the model has no {CODEC_EMBEDDING_KEY}; is it a Qwen3-TTS model?")
    codec = state[CODEC_EMBEDDING_KEY]
    if speaker_embedding.shape != codec.shape[1:]:
        raise ValueError(
            f"speaker embedding has shape {tuple(speaker_embedding.shape)}, expected {tuple(codec.shape[1:])}"
        )
    with torch.no_grad():
        codec = codec.detach().clone()  # one embedding matrix, not the model
        codec[slot] = speaker_embedding.to(codec.device, codec.dtype)
    state[CODEC_EMBEDDING_KEY] = codec
    return [
        (name, tensor, dtypes.get(name, tensor.dtype))
        for name, tensor in sorted(state.items())
        if not name.startswith(SPEAKER_ENCODER_PREFIX)
    ]


# ----- folders ---------------------------------------------------------------------------------------------------


def _write_json(path: Path, value: Any) -> None:
    with Path(path).open("w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _is_model_weights(relative: Path) -> bool:
    return len(relative.parts) == 1 and (
        relative.suffix == ".safetensors" or relative.name == WEIGHTS_INDEX_FILE
    )


def _link_base_files(base_dir: Path, target: Path) -> None:
    """Everything of the base folder except its config, top-level weights and any training state."""
    skip = {CONFIG_FILE, *TRAINING_STATE_FILES}
    for source in sorted(Path(base_dir).rglob("*")):
        relative = source.relative_to(base_dir)
        if relative.parts[0].startswith(".") or (len(relative.parts) == 1 and relative.name in skip):
            continue
        if _is_model_weights(relative):
            continue
        destination = target / relative
        if source.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        real = source.resolve(strict=True)  # a link to the file a symlink names (a broken one fails here)
        try:
            os.link(real, destination)
        except OSError:  # another file system, or links not supported
            shutil.copy2(source, destination)


def _replace_dir(new: Path, final: Path) -> None:
    """Move the finished folder `new` to `final`; an older `final` is set aside first, then removed."""
    old = None
    if final.exists():
        old = final.with_name(f"{TEMP_PREFIX}old-{final.name}-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    new.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_checkpoint(
    model: torch.nn.Module,
    *,
    base_dir: Path,
    output_dir: Path,
    epoch: int,
    speaker_name: str,
    speaker_slot: int,
    speaker_embedding: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    state: TrainingState | None = None,
) -> Path:
    """Write `output_dir/checkpoint-epoch-{epoch}` atomically; returns its path.

    `model` is the trained `Qwen3TTSForConditionalGeneration`; `base_dir` the local base model folder it came
    from. With `optimizer`/`state` the folder also holds the resume files.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(output_dir, epoch)
    temp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{final.name}-", dir=output_dir))
    try:
        _link_base_files(base_dir, temp)
        base_config = json.loads((Path(base_dir) / CONFIG_FILE).read_text(encoding="utf-8"))
        _write_json(temp / CONFIG_FILE, custom_voice_config(base_config, speaker_name, speaker_slot))
        tensors = _export_tensors(model, stored_dtypes(base_dir), speaker_slot, speaker_embedding)
        write_safetensors(temp / WEIGHTS_FILE, tensors)
        del tensors
        if optimizer is not None:
            torch.save(optimizer.state_dict(), temp / OPTIMIZER_FILE)
        if state is not None:
            state.write(temp)
        _replace_dir(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def save_optimizer_state(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """`optimizer.pt` beside a checkpoint, written atomically (for a resume of a run that stopped early)."""
    saver = getattr(optimizer, "resume_state_dict", optimizer.state_dict)
    temp = Path(folder) / f"{TEMP_PREFIX}{OPTIMIZER_FILE}"
    torch.save(saver(), temp)
    temp.replace(Path(folder) / OPTIMIZER_FILE)


def load_checkpoint_weights(model: torch.nn.Module, folder: Path) -> None:
    """Copy a checkpoint's weights into `model` (a base model: its speaker encoder stays as loaded)."""
    from safetensors import safe_open

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise ResumeCheckpointError(
            f"{folder} has no {WEIGHTS_FILE}; resume from a checkpoint-epoch-N folder"
        )
    state = model.state_dict()
    with safe_open(str(path), framework="pt", device="cpu") as stored:
        names = set(stored.keys())
        missing = sorted(n for n in state if n not in names and not n.startswith(SPEAKER_ENCODER_PREFIX))
        unexpected = sorted(names - state.keys())
        wrong_shape = sorted(
            n for n in names & state.keys() if list(stored.get_slice(n).get_shape()) != list(state[n].shape)
        )
        if missing or unexpected or wrong_shape:
            raise ResumeCheckpointError(
                f"{folder} does not fit the base model (missing {missing[:3]}, unexpected {unexpected[:3]}, "
                f"other shape {wrong_shape[:3]}); resume with the base model it was trained from"
            )
        with torch.no_grad():
            for name in sorted(names):
                state[name].copy_(stored.get_tensor(name))


def drop_training_state(folder: Path) -> None:
    for name in TRAINING_STATE_FILES:
        (Path(folder) / name).unlink(missing_ok=True)


def remove_temporary_folders(output_dir: Path) -> None:
    """Leftovers of writes that were interrupted (crash, kill)."""
    if Path(output_dir).is_dir():
        for child in Path(output_dir).iterdir():
            if child.name.startswith(TEMP_PREFIX) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)


def purge_training_state(output_dir: Path) -> Path | None:
    """Keep only the final checkpoint: drops its optimizer state, earlier checkpoints and interrupted writes.

    The small `trainer_state.json` stays, so a run resumed from the published model continues its epoch and step
    numbering. Returns the final checkpoint folder (None when there is none)."""
    remove_temporary_folders(output_dir)
    checkpoints = list_checkpoints(output_dir)
    if not checkpoints:
        return None
    *earlier, (_, final) = checkpoints
    for _, folder in earlier:
        shutil.rmtree(folder)
    (final / OPTIMIZER_FILE).unlink(missing_ok=True)
    return final
