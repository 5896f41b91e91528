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
SILENCE_THRESHOLD_DB = -60.0  # windows whose loudest 20 ms is quieter are not decoded
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
    batch_size: int | None = None,
    silence_threshold_db: float | None = SILENCE_THRESHOLD_DB,
    on_progress=None,
    **decode_options,
) -> dict:
    """Transcribe a file or a 16 kHz mono float32 array; returns openai-whisper's result dict
    (`text`, `segments`, `language`), every second of the input covered.

    `silence_threshold_db`: a window whose loudest 20 ms is quieter than this (RMS, dBFS) is not
    decoded and gives no segment. Whisper, openai-whisper's included, writes text such as "you" for
    digital silence. The loudest short frame, not the window's average, so that a short quiet phrase
    in a long quiet window still counts as sound. None turns this off (openai-whisper's behaviour).

    `batch_size`: decode windows of at most 30 s, cut in pauses, this many at a time, without
    conditioning on previous text (throughput mode, like faster-whisper's batched pipeline);
    None: openai-whisper's sequential seeking loop.

    `on_progress(done_seconds, total_seconds)` is called after each window.
    """
    unknown = set(decode_options) - _DECODE_KEYS
    if unknown:
        raise WhisperError(f"unknown transcribe option(s): {', '.join(sorted(unknown))}")
    if batch_size is not None and batch_size < 1:
        raise WhisperError(f"batch_size must be at least 1, got {batch_size}")
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
    tokenizer = model.tokenizer(language, decode_options.get("task", "transcribe"))
    temperatures = (temperature,) if isinstance(temperature, (int, float)) else tuple(temperature)

    def needs_fallback(result: DecodingResult) -> bool:
        if (no_speech_threshold is not None and result.no_speech_prob > no_speech_threshold
                and logprob_threshold is not None and result.avg_logprob < logprob_threshold):
            return False  # silence: nothing better to find
        too_repetitive = compression_ratio_threshold is not None and result.compression_ratio > compression_ratio_threshold
        too_unsure = logprob_threshold is not None and result.avg_logprob < logprob_threshold
        return too_repetitive or too_unsure

    def decode_with_fallback(segment: np.ndarray, temps=temperatures) -> DecodingResult:
        result = None
        for t in temps:
            result = model.decode(segment, _options(decode_options, t))
            if not needs_fallback(result):
                break
        return result

    def is_no_speech(result: DecodingResult) -> bool:
        if no_speech_threshold is None or result.no_speech_prob <= no_speech_threshold:
            return False
        return not (logprob_threshold is not None and result.avg_logprob > logprob_threshold)

    def silent(seek: int, size: int) -> bool:
        return silence_threshold_db is not None and loudest_frame_db(audio, seek, size) < silence_threshold_db

    initial_prompt_tokens = tokenizer.encode(" " + initial_prompt.strip()) if initial_prompt else []
    if batch_size is not None:
        return _transcribe_batched(model, mel, content_frames, batch_size, tokenizer, decode_options,
                                   temperatures, needs_fallback, decode_with_fallback, is_no_speech, silent,
                                   initial_prompt_tokens, language, on_progress)

    input_stride = N_FRAMES // model.dims.n_audio_ctx  # mel frames per output token: 2
    all_tokens: list[int] = list(initial_prompt_tokens)
    all_segments: list[dict] = []
    prompt_reset_since = 0

    seek = 0
    while seek < content_frames:
        segment_size = min(N_FRAMES, content_frames - seek)
        if silent(seek, segment_size):
            seek += segment_size
            _report(on_progress, seek, content_frames)
            continue
        decode_options["prompt"] = all_tokens[prompt_reset_since:]
        result = decode_with_fallback(pad_or_trim(mel.window(seek, segment_size), N_FRAMES))
        if is_no_speech(result):
            seek += segment_size
            _report(on_progress, seek, content_frames)
            continue
        current, advance = split_segments(result, tokenizer, seek, segment_size, input_stride)
        seek += advance
        all_segments.extend({"id": i, **s} for i, s in enumerate(current, start=len(all_segments)))
        all_tokens.extend(t for s in current for t in s["tokens"])
        if not condition_on_previous_text or result.temperature > 0.5:
            prompt_reset_since = len(all_tokens)
        _report(on_progress, seek, content_frames)

    return {"text": tokenizer.decode(all_tokens[len(initial_prompt_tokens):]),
            "segments": all_segments, "language": language}


def _options(decode_options: dict, temperature: float) -> DecodingOptions:
    kwargs = dict(decode_options)
    if temperature > 0:
        kwargs.pop("beam_size", None)
        kwargs.pop("patience", None)
    else:
        kwargs.pop("best_of", None)
    return DecodingOptions(**kwargs, temperature=temperature)


def split_segments(result: DecodingResult, tokenizer, seek: int, segment_size: int, input_stride: int,
                   keep_tail: bool = False) -> tuple[list[dict], int]:
    """openai-whisper's segmentation of one window's tokens at consecutive timestamps.

    Returns segments with absolute times, and how many mel frames to advance: to the last complete
    timestamp, or the whole window. With `keep_tail` (fixed windows, nothing is decoded again) text
    after the last complete timestamp becomes a segment ending at the window's end.
    """
    tokens = np.array(result.tokens, dtype=np.int64)
    time_offset = seek * HOP_LENGTH / SAMPLE_RATE
    time_precision = input_stride * HOP_LENGTH / SAMPLE_RATE  # seconds per timestamp step: 0.02
    ts_begin = tokenizer.timestamp_begin

    def new_segment(start: float, end: float, toks: np.ndarray) -> dict:
        toks = toks.tolist()
        return {"seek": seek, "start": start, "end": end,
                "text": tokenizer.decode([t for t in toks if t < tokenizer.eot]), "tokens": toks,
                "temperature": result.temperature, "avg_logprob": result.avg_logprob,
                "compression_ratio": result.compression_ratio, "no_speech_prob": result.no_speech_prob}

    segments: list[dict] = []
    is_ts = tokens >= ts_begin
    single_timestamp_ending = is_ts[-2:].tolist() == [False, True]
    consecutive = (np.nonzero(is_ts[:-1] & is_ts[1:])[0] + 1).tolist()
    if consecutive:
        slices = consecutive + ([len(tokens)] if single_timestamp_ending else [])
        last_slice = 0
        for current_slice in slices:
            part = tokens[last_slice:current_slice]
            segments.append(new_segment(time_offset + (int(part[0]) - ts_begin) * time_precision,
                                        time_offset + (int(part[-1]) - ts_begin) * time_precision, part))
            last_slice = current_slice
        if single_timestamp_ending:
            advance = segment_size
        else:  # resume at the last complete timestamp
            advance = (int(tokens[last_slice - 1]) - ts_begin) * input_stride
            tail = tokens[last_slice:]
            if keep_tail and (tail < tokenizer.eot).any():
                start = time_offset + (int(tail[0]) - ts_begin) * time_precision if tail[0] >= ts_begin else segments[-1]["end"]
                segments.append(new_segment(start, time_offset + segment_size * HOP_LENGTH / SAMPLE_RATE, tail))
    else:
        duration = segment_size * HOP_LENGTH / SAMPLE_RATE
        stamps = tokens[is_ts]
        if len(stamps) > 0 and int(stamps[-1]) != ts_begin:
            duration = (int(stamps[-1]) - ts_begin) * time_precision
        segments.append(new_segment(time_offset, time_offset + duration, tokens))
        advance = segment_size
    for segment in segments:
        if segment["start"] == segment["end"] or segment["text"].strip() == "":
            segment["text"], segment["tokens"] = "", []
    return segments, advance


def _transcribe_batched(model, mel, content_frames, batch_size, tokenizer, decode_options, temperatures,
                        needs_fallback, decode_with_fallback, is_no_speech, silent, prompt_tokens, language,
                        on_progress) -> dict:
    """Windows of at most 30 s, cut in pauses, decoded `batch_size` at a time, none conditioned on
    another's text (only on `initial_prompt`). A window that fails the thresholds is retried alone at
    the next temperatures; audio a window's text stopped short of (over 1 s, not silent) is decoded
    again in a second round, as the sequential loop would by seeking to the last timestamp."""
    from .decoding import decode

    input_stride = N_FRAMES // model.dims.n_audio_ctx
    decode_options["prompt"] = prompt_tokens or None
    pending = [(seek, size) for seek, size in plan_windows(mel.audio, content_frames) if not silent(seek, size)]
    segments: list[dict] = []
    for final_round in (False, True):
        tails = []
        for i in range(0, len(pending), batch_size):
            group = pending[i:i + batch_size]
            mels = np.stack([pad_or_trim(mel.window(seek, size), N_FRAMES) for seek, size in group])
            results = decode(model, mels, _options(decode_options, temperatures[0]))
            for (seek, size), segment_mel, result in zip(group, mels, results):
                if needs_fallback(result) and len(temperatures) > 1:
                    result = decode_with_fallback(segment_mel, temperatures[1:])
                found = [] if is_no_speech(result) else \
                    split_segments(result, tokenizer, seek, size, input_stride, keep_tail=True)[0]
                segments += found
                covered = round(found[-1]["end"] * FRAMES_PER_SECOND) if found else seek
                rest = seek + size - covered
                if not final_round and found and rest > FRAMES_PER_SECOND and not silent(covered, rest):
                    tails.append((covered, rest))
            if not final_round:
                _report(on_progress, group[-1][0] + group[-1][1], content_frames)
        pending = tails
    segments.sort(key=lambda seg: seg["start"])
    segments = [{"id": i, **seg} for i, seg in enumerate(segments)]
    return {"text": "".join(seg["text"] for seg in segments), "segments": segments, "language": language}


def plan_windows(audio: np.ndarray, content_frames: int, search_frames: int = 500,
                 pause_frames: int = 20) -> list[tuple[int, int]]:
    """Cut the recording into windows of at most 30 s, each ending at the quietest
    `pause_frames` (200 ms) within its last `search_frames` (5 s), so that cuts fall in
    pauses rather than inside words. Returns (first mel frame, number of frames) pairs."""
    n = content_frames * HOP_LENGTH
    frame_energy = np.square(audio[:n].astype(np.float64)).reshape(-1, HOP_LENGTH).mean(axis=1)
    windows, seek = [], 0
    while seek < content_frames:
        end = seek + N_FRAMES
        if end < content_frames:
            lo = end - search_frames
            smoothed = np.convolve(frame_energy[lo - pause_frames // 2: end + pause_frames // 2],
                                   np.ones(pause_frames) / pause_frames, mode="valid")[: search_frames + 1]
            end = lo + int(np.argmin(smoothed))
        end = min(end, content_frames)
        windows.append((seek, end - seek))
        seek = end
    return windows


SILENCE_FRAME = 2 * HOP_LENGTH  # 20 ms: shorter than any spoken syllable


def loudest_frame_db(audio: np.ndarray, seek: int, n_frames: int) -> float:
    """RMS level in dBFS of the loudest 20 ms frame of the samples behind mel frames [seek, seek + n_frames)."""
    chunk = audio[seek * HOP_LENGTH: (seek + n_frames) * HOP_LENGTH].astype(np.float64)
    if chunk.size == 0:
        return -np.inf
    chunk = np.pad(chunk, (0, -chunk.size % SILENCE_FRAME))
    peak = float(np.sqrt(np.square(chunk).reshape(-1, SILENCE_FRAME).mean(axis=1).max()))
    return 20 * np.log10(peak) if peak > 0 else -np.inf


def _report(on_progress, seek: int, content_frames: int) -> None:
    if on_progress is not None:
        on_progress(min(seek, content_frames) / FRAMES_PER_SECOND, content_frames / FRAMES_PER_SECOND)
