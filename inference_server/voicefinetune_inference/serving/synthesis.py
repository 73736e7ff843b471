"""The speech requests (custom voice, voice design, voice clone; single and batch): check and plan each one,
then hand it to the generator; a batch reports a bad item in its place rather than failing whole."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from voicefinetune.schemas import (
    BatchInferRequest,
    BatchItem,
    BatchItemError,
    CloneItem,
    InferRequest,
    InferS3Response,
    InvalidInput,
    VoiceCloneBatchRequest,
    VoiceCloneRequest,
    VoiceDesignRequest,
    check_filename,
    check_language,
    check_text,
)
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage, audio_key, clone_key, design_key
from voicefinetune_inference.activity import RequestActivity
from voicefinetune_inference.caches.model_loading import ModelLoader
from voicefinetune_inference.caches.voices import VoiceCatalog
from voicefinetune_inference.engine import tts_model
from voicefinetune_inference.errors import message_for, status_for
from voicefinetune_inference.serving.cloning import VoiceCloner, check_ref_text, reference_id
from voicefinetune_inference.serving.generation import Generator, Planned, Result
from voicefinetune_inference.serving.outputs import AudioOutputs, auto_filename


def description_id(instruct: str, language: str) -> str:
    """A short digest of a designed voice's description (``{language}\n{instruct}``: no language name holds a line
    break): the folder of its outputs, as ``reference_id`` is a clone's, so the same description finds its files
    again and different ones never collide."""
    return hashlib.sha256(f"{language}\n{instruct}".encode()).hexdigest()[:16]


class SpeechRequests:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        outputs: AudioOutputs,
        voices: VoiceCatalog,
        loader: ModelLoader,
        generator: Generator,
        cloner: VoiceCloner,
        activity: RequestActivity,
    ):
        self.settings = settings
        self.storage = storage
        self.outputs = outputs
        self.voices = voices
        self.loader = loader
        self.generator = generator
        self.cloner = cloner
        self.activity = activity

    async def infer(self, job_id: str, request: InferRequest) -> bytes | InferS3Response:
        """One utterance in a fine-tuned voice: the WAV, or the S3 object it was uploaded to."""
        return await self.voices.work.run(job_id, self._infer(job_id, request))

    async def _infer(self, job_id: str, request: InferRequest) -> bytes | InferS3Response:
        voice = self.voices.get(job_id)
        text = check_text(request.text, self.settings.max_text_chars)
        language = check_language(request.language)
        upload = self.storage.configured if request.upload_to_s3 is None else request.upload_to_s3
        key = None
        if upload:
            self.outputs.require_storage()
            filename = (
                check_filename(request.s3_filename, field="s3_filename")
                if request.s3_filename
                else auto_filename("tts")
            )
            key = audio_key(job_id, filename=filename, book_id=request.book_id, chapter_id=request.chapter_id)
        with self.activity.track("inference_custom_voice", job_id):
            self.voices.touch(job_id)
            if kept := await self.outputs.kept(key, overwrite=request.overwrite, text=text, job_id=job_id):
                return kept
            spec, extra = await self.voices.target(voice, request.voice_strength)
            item = tts_model.SpeechItem(text, language, request.instruct or "", **extra, seed=request.seed)
            if key is None:
                return await self.generator.generate(spec, item)
            return await self.generator.produce(spec, item, key=key, job_id=job_id)

    async def infer_batch(self, job_id: str, request: BatchInferRequest) -> list[Result]:
        """Many utterances in one voice, uploaded to S3; results in request order, bad items reported in place."""
        return await self.voices.work.run(job_id, self._infer_batch(job_id, request))

    async def _infer_batch(self, job_id: str, request: BatchInferRequest) -> list[Result]:
        voice = self.voices.get(job_id)
        self.outputs.require_storage()
        default_language = check_language(request.language)

        def plan(index: int, entry: BatchItem) -> Planned:
            text = check_text(entry.text, self.settings.max_text_chars)
            language = check_language(entry.language) if entry.language else default_language
            filename = check_filename(entry.filename) if entry.filename else auto_filename("tts")
            key = audio_key(job_id, filename=filename, book_id=request.book_id, chapter_id=request.chapter_id)
            instruct = request.instruct if entry.instruct is None else entry.instruct
            return Planned(index, text, language, instruct or "", filename, key, entry.seed)

        planned, results = self._plan_items(request.items, plan)
        with self.activity.track("inference_custom_voice", job_id, items=len(request.items)):
            self.voices.touch(job_id)
            spec, extra = await self.voices.target(voice, request.voice_strength)
            results.update(
                await self.generator.produce_all(
                    spec, planned, job_id=job_id, overwrite=request.overwrite, **extra
                )
            )
        return [results[index] for index in range(len(request.items))]

    async def voice_design(self, request: VoiceDesignRequest) -> bytes | InferS3Response:
        text = check_text(request.text, self.settings.max_text_chars)
        language = check_language(request.language)
        instruct = request.instruct or ""
        key = None
        if request.upload_to_s3:
            self.outputs.require_storage()
            filename = (
                check_filename(request.s3_filename, field="s3_filename")
                if request.s3_filename
                else auto_filename("design")
            )
            key = design_key(description_id(instruct, language), filename=filename)
        spec = await self.loader.shared_spec("voice_design")
        with self.activity.track("inference_voice_design", None):
            if kept := await self.outputs.kept(key, overwrite=request.overwrite, text=text, job_id=None):
                return kept
            item = tts_model.SpeechItem(text, language, instruct, seed=request.seed)
            if key is None:
                return await self.generator.generate(spec, item)
            return await self.generator.produce(spec, item, key=key, job_id=None)

    async def voice_clone(self, request: VoiceCloneRequest) -> bytes | InferS3Response:
        text = check_text(request.text, self.settings.max_text_chars)
        language = check_language(request.language)
        check_ref_text(request.ref_text, request.use_xvec)
        upload = self.storage.configured if request.upload_to_s3 is None else request.upload_to_s3
        filename = None
        if upload:
            self.outputs.require_storage()
            filename = (
                check_filename(request.s3_filename, field="s3_filename")
                if request.s3_filename
                else auto_filename("clone")
            )
        waveform, rate = await self.cloner.reference_audio(request.ref_audio_url)
        reference = reference_id(waveform, rate, ref_text=request.ref_text, use_xvec=request.use_xvec)
        key = None if filename is None else clone_key(reference, filename=filename)
        with self.activity.track("inference_voice_clone", None):
            if kept := await self.outputs.kept(key, overwrite=request.overwrite, text=text, job_id=None):
                return kept
            spec, prompt = await self.cloner.clone_prompt(
                waveform, rate=rate, ref_text=request.ref_text, use_xvec=request.use_xvec
            )
            item = tts_model.SpeechItem(text, language, clone_prompt=prompt, seed=request.seed)
            if key is None:
                return await self.generator.generate(spec, item)
            return await self.generator.produce(spec, item, key=key, job_id=None)

    async def voice_clone_batch(self, request: VoiceCloneBatchRequest) -> list[Result]:
        """Clone one reference voice for many texts: the prompt is computed once and reused for every item.
        Uploaded to S3, or (``upload_to_s3: false``) each WAV returned base64-encoded in its entry."""
        if request.upload_to_s3:
            self.outputs.require_storage()
        language = check_language(request.language)
        check_ref_text(request.ref_text, request.use_xvec)

        waveform, rate = await self.cloner.reference_audio(request.ref_audio_url)
        reference = reference_id(waveform, rate, ref_text=request.ref_text, use_xvec=request.use_xvec)

        def plan(index: int, entry: CloneItem) -> Planned:
            text = check_text(entry.text, self.settings.max_text_chars)
            filename = check_filename(entry.filename) if entry.filename else auto_filename("clone")
            key = clone_key(reference, filename=filename) if request.upload_to_s3 else None
            return Planned(index, text, language, "", filename, key, entry.seed)

        planned, results = self._plan_items(request.items, plan)
        with self.activity.track("inference_voice_clone", None, items=len(request.items)):
            if planned:
                spec, prompt = await self.cloner.clone_prompt(
                    waveform, rate=rate, ref_text=request.ref_text, use_xvec=request.use_xvec
                )
                results.update(
                    await self.generator.produce_all(
                        spec, planned, job_id=None, overwrite=request.overwrite, clone_prompt=prompt
                    )
                )
        return [results[index] for index in range(len(request.items))]

    def _plan_items(
        self, entries: Sequence[BatchItem | CloneItem], plan: Callable[[int, Any], Planned]
    ) -> tuple[list[Planned], dict[int, Result]]:
        """Check and plan every item of a batch; a bad one becomes an error in its place. Two items of one batch
        may not write the same S3 object."""
        planned: list[Planned] = []
        errors: dict[int, Result] = {}
        used: dict[str, int] = {}
        for index, entry in enumerate(entries):
            try:
                item = plan(index, entry)
                if item.key is not None:
                    if item.key in used:
                        raise InvalidInput(
                            f"filename {item.filename!r} is already used by item {used[item.key]} of this batch"
                        )
                    used[item.key] = index
                planned.append(item)
            except Exception as exc:
                errors[index] = self._item_error(index, entry.filename, entry.text, exc)
        return planned, errors

    @staticmethod
    def _item_error(index: int, filename: str | None, text: str | None, exc: Exception) -> BatchItemError:
        return BatchItemError(
            index=index, filename=filename, text=text, error=message_for(exc), status_code=status_for(exc)
        )
