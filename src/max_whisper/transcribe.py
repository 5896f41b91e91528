"""Long-form transcription: openai-whisper's sliding 30 s windows over a whole recording."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .audio import (FRAMES_PER_SECOND, HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE, LogMelFeatures, load_audio,
                    pad_or_trim)
from .decoding import DecodingOptions, DecodingResult
from .errors import WhisperError
from .tokenizer import language_code

if TYPE_CHECKING:
    from .engine import WhisperModel

DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
_DECODE_KEYS = {f.name for f in fields(DecodingOptions)}


def transcribe(
    model: WhisperModel,
    audio: str | Path | np.ndarray,
    *,
    temperature: float | tuple[float, ...] = DEFAULT_TEMPERATURES,
    compression_ratio_threshold: float | None = 2.4,
    logprob_threshold: float | None = -1.0,
    no_speech_threshold: float | None = 0.6,
    condition_on_previous_text: bool = True,
    initial_prompt: str | None = None,
    silence_threshold_db: float | None = -60.0,
    on_progress=None,
    **decode_options,
) -> dict:
    """Transcribe a file or a 16 kHz mono float32 array; returns openai-whisper's result dict
    (`text`, `segments`, `language`), every second of the input covered.

    `silence_threshold_db`: a window whose audio RMS is below this level (dBFS) is not decoded
    and gives no segment. Whisper, openai-whisper's included, writes text such as "you" for
    digital silence; no audible speech is this quiet. None turns this off (openai-whisper's behaviour).

    `on_progress(done_seconds, total_seconds)` is called after each window.
    """
    unknown = set(decode_options) - _DECODE_KEYS
    if unknown:
        raise WhisperError(f"unknown transcribe option(s): {', '.join(sorted(unknown))}")
    if decode_options.get("beam_size") is not None and decode_options["beam_size"] < 1:
        raise WhisperError(f"beam_size must be at least 1, got {decode_options['beam_size']}")
    if isinstance(audio, (str, Path)):
        audio = load_audio(audio)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise WhisperError(f"audio must be a non-empty 1-D array of 16 kHz samples, got shape {audio.shape}")
    mel = LogMelFeatures(audio, model.dims.n_mels, padding=N_SAMPLES)  # one window at a time
    content_frames = mel.n_frames - N_FRAMES

    if decode_options.get("language") is not None:
        decode_options["language"] = language_code(decode_options["language"])
    elif not model.is_multilingual:
        decode_options["language"] = "en"
    else:
        decode_options["language"], _ = model.detect_language(pad_or_trim(mel.window(0, N_FRAMES), N_FRAMES))
    language = decode_options["language"]
    task = decode_options.get("task", "transcribe")
    if task == "translate" and not model.is_multilingual:
        raise WhisperError("this model is English-only; translate needs a multilingual model such as base")
    tokenizer = model.tokenizer(language, task)
    temperatures = (temperature,) if isinstance(temperature, (int, float)) else tuple(temperature)

    def decode_with_fallback(segment: np.ndarray) -> DecodingResult:
        result = None
        for t in temperatures:
            kwargs = dict(decode_options)
            if t > 0:
                kwargs.pop("beam_size", None)
                kwargs.pop("patience", None)
            else:
                kwargs.pop("best_of", None)
            result = model.decode(segment, DecodingOptions(**kwargs, temperature=t))
            needs_fallback = False
            if compression_ratio_threshold is not None and result.compression_ratio > compression_ratio_threshold:
                needs_fallback = True  # too repetitive
            if logprob_threshold is not None and result.avg_logprob < logprob_threshold:
                needs_fallback = True  # too unsure
            if (no_speech_threshold is not None and result.no_speech_prob > no_speech_threshold
                    and logprob_threshold is not None and result.avg_logprob < logprob_threshold):
                needs_fallback = False  # silence: nothing better to find
            if not needs_fallback:
                break
        return result

    input_stride = N_FRAMES // model.dims.n_audio_ctx  # mel frames per output token: 2
    time_precision = input_stride * HOP_LENGTH / SAMPLE_RATE  # seconds per timestamp step: 0.02
    all_tokens: list[int] = []
    all_segments: list[dict] = []
    prompt_reset_since = 0
    initial_prompt_tokens = tokenizer.encode(" " + initial_prompt.strip()) if initial_prompt else []
    all_tokens.extend(initial_prompt_tokens)

    seek = 0
    while seek < content_frames:
        time_offset = seek * HOP_LENGTH / SAMPLE_RATE
        segment_size = min(N_FRAMES, content_frames - seek)
        mel_segment = pad_or_trim(mel.window(seek, segment_size), N_FRAMES)
        segment_duration = segment_size * HOP_LENGTH / SAMPLE_RATE
        if silence_threshold_db is not None and _rms_db(audio, seek, segment_size) < silence_threshold_db:
            seek += segment_size
            _report(on_progress, seek, content_frames)
            continue
        decode_options["prompt"] = all_tokens[prompt_reset_since:]
        result = decode_with_fallback(mel_segment)
        tokens = np.array(result.tokens, dtype=np.int64)

        if no_speech_threshold is not None:
            should_skip = result.no_speech_prob > no_speech_threshold
            if logprob_threshold is not None and result.avg_logprob > logprob_threshold:
                should_skip = False  # confident text despite the no-speech score
            if should_skip:
                seek += segment_size
                _report(on_progress, seek, content_frames)
                continue

        def new_segment(start: float, end: float, toks: np.ndarray) -> dict:
            toks = toks.tolist()
            return {"seek": seek, "start": start, "end": end,
                    "text": tokenizer.decode([t for t in toks if t < tokenizer.eot]), "tokens": toks,
                    "temperature": result.temperature, "avg_logprob": result.avg_logprob,
                    "compression_ratio": result.compression_ratio, "no_speech_prob": result.no_speech_prob}

        current: list[dict] = []
        is_ts = tokens >= tokenizer.timestamp_begin
        single_timestamp_ending = is_ts[-2:].tolist() == [False, True]
        consecutive = (np.nonzero(is_ts[:-1] & is_ts[1:])[0] + 1).tolist()
        if consecutive:
            slices = consecutive + ([len(tokens)] if single_timestamp_ending else [])
            last_slice = 0
            for current_slice in slices:
                part = tokens[last_slice:current_slice]
                start_pos = int(part[0]) - tokenizer.timestamp_begin
                end_pos = int(part[-1]) - tokenizer.timestamp_begin
                current.append(new_segment(time_offset + start_pos * time_precision,
                                           time_offset + end_pos * time_precision, part))
                last_slice = current_slice
            if single_timestamp_ending:
                seek += segment_size
            else:  # resume at the last complete timestamp
                seek += (int(tokens[last_slice - 1]) - tokenizer.timestamp_begin) * input_stride
        else:
            duration = segment_duration
            stamps = tokens[is_ts]
            if len(stamps) > 0 and int(stamps[-1]) != tokenizer.timestamp_begin:
                duration = (int(stamps[-1]) - tokenizer.timestamp_begin) * time_precision
            current.append(new_segment(time_offset, time_offset + duration, tokens))
            seek += segment_size

        for segment in current:
            if segment["start"] == segment["end"] or segment["text"].strip() == "":
                segment["text"], segment["tokens"] = "", []
        all_segments.extend({"id": i, **s} for i, s in enumerate(current, start=len(all_segments)))
        all_tokens.extend(t for s in current for t in s["tokens"])
        if not condition_on_previous_text or result.temperature > 0.5:
            prompt_reset_since = len(all_tokens)
        _report(on_progress, seek, content_frames)

    return {"text": tokenizer.decode(all_tokens[len(initial_prompt_tokens):]),
            "segments": all_segments, "language": language}


def _rms_db(audio: np.ndarray, seek: int, n_frames: int) -> float:
    """RMS level in dBFS of the samples behind mel frames [seek, seek + n_frames)."""
    chunk = audio[seek * HOP_LENGTH: (seek + n_frames) * HOP_LENGTH].astype(np.float64)
    rms = float(np.sqrt(np.mean(chunk**2))) if chunk.size else 0.0
    return 20 * np.log10(rms) if rms > 0 else -np.inf


def _report(on_progress, seek: int, content_frames: int) -> None:
    if on_progress is not None:
        on_progress(min(seek, content_frames) / FRAMES_PER_SECOND, content_frames / FRAMES_PER_SECOND)
