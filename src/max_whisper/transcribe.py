"""Long-form transcription: openai-whisper's sliding 30 s windows over a whole recording.

`transcribe` runs openai-whisper's sequential loop (each window decoded after the previous one's text,
seeking to its last complete timestamp, temperature fallback on failure) on any `Engine`: the MAX engine,
or the batcher that decodes windows of several recordings together. `TranscribeOptions` holds every
option, checked once when made.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Protocol, Sequence, cast

import numpy as np

from .alignment import (APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS, WordOptions, add_word_timestamps,
                        find_alignment, segment_ends)
from .audio import N_SAMPLES, SAMPLE_RATE, load_audio, pad_or_trim
from .decoding import DecodingOptions, DecodingResult
from .errors import WhisperError
from .features import FRAMES_PER_SECOND, HOP_LENGTH, N_FRAMES, LogMelFeatures
from .tokenizer import Tokenizer
from .vad import SpeechMap, VadOptions, merge_regions, speech_regions
from .weights import ModelDimensions

DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
SILENCE_THRESHOLD_DB = -60.0  # windows whose loudest 20 ms is quieter are not decoded
SILENCE_FRAME = 2 * HOP_LENGTH  # 20 ms: shorter than any spoken syllable
# DecodingOptions that the loop sets for each window itself.
_PER_WINDOW = {"temperature", "prompt", "best_of"}

Progress = Callable[[float, float], None]  # (seconds done, seconds in all)


class Engine(Protocol):
    """What the long-form loop needs of a model."""

    @property
    def dims(self) -> ModelDimensions: ...

    def tokenizer(self, language: str | None = None, task: str | None = None) -> Tokenizer: ...

    def decode_windows(self, mels: np.ndarray, options: DecodingOptions, prompts: list[list[int]] | None = None,
                       frames: list[int] | None = None) -> list[DecodingResult]:
        """Decode log-mel windows [n, n_mels, 3000] under `options`."""
        ...

    def detect_language(self, mel: np.ndarray) -> tuple[str, dict[str, float]]: ...


@dataclass(frozen=True)
class TranscribeOptions:
    """The long-form loop's options (openai-whisper's, and the engine's `batch_size` and
    `silence_threshold_db`) and the decoding options of every window, checked when made."""

    temperature: tuple[float, ...] = DEFAULT_TEMPERATURES  # tried in turn while a decode fails the thresholds
    compression_ratio_threshold: float | None = 2.4  # a more repetitive text fails
    logprob_threshold: float | None = -1.0  # a less likely text fails
    # with logprob_threshold: a window that is likely silence is skipped (not in the throughput mode: VAD found speech)
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    initial_prompt: str | None = None
    # Throughput mode: the speech (VAD regions, merged into windows of at most 30 s as faster-whisper's batched
    # pipeline cuts) split at those windows' junctions into up to this many contiguous stretches of at least
    # MIN_STREAM_WINDOWS windows, each read by the sequential loop, their windows decoded side by side;
    # None: the sequential loop over the whole recording.
    batch_size: int | None = None
    # A window whose loudest 20 ms is quieter than this (dBFS) is not decoded: Whisper writes text such as
    # "you" for digital silence. The loudest short frame, not the window's mean, so that a short quiet phrase
    # in a long quiet window still counts. None decodes every window (openai-whisper's behaviour).
    silence_threshold_db: float | None = SILENCE_THRESHOLD_DB
    best_of: int | None = None  # samples drawn at temperatures above 0
    # With word timestamps (`decoding.word_timestamps`): punctuation joined to the next / the previous word.
    prepend_punctuations: str = PREPEND_PUNCTUATIONS
    append_punctuations: str = APPEND_PUNCTUATIONS
    # Only these stretches of the recording: start,end[,start,end...] in seconds (an open last end: to the end).
    clip_timestamps: str | Sequence[float] = "0"
    # With word timestamps: skip silence longer than this (seconds) before a likely hallucination.
    hallucination_silence_threshold: float | None = None
    # Decode only the speech that Silero VAD finds (faster-whisper's vad_filter), the regions one after
    # another; every time maps back to the recording. The throughput mode always cuts on VAD regions.
    vad_filter: bool = False
    vad_parameters: VadOptions | dict | None = None  # faster-whisper's names; None: its defaults
    decoding: DecodingOptions = DecodingOptions()  # every window's options at temperature 0, but its prompt

    def __post_init__(self) -> None:
        temperature = self.temperature
        temperatures = (temperature,) if isinstance(temperature, (int, float)) else tuple(temperature)
        if not temperatures or any(not 0 <= t <= 2 for t in temperatures):
            raise WhisperError(f"temperature must be one value or a sequence of values in [0, 2], got {temperature}")
        object.__setattr__(self, "temperature", tuple(float(t) for t in temperatures))
        if self.batch_size is not None and self.batch_size < 1:
            raise WhisperError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.best_of is not None and self.best_of < 1:
            raise WhisperError(f"best_of must be at least 1, got {self.best_of}")
        if self.decoding.temperature != 0 or self.decoding.prompt is not None or self.decoding.best_of is not None:
            raise WhisperError("internal error: TranscribeOptions.decoding sets temperature, prompt or best_of")
        clips = self.clip_timestamps
        if isinstance(clips, str):
            try:
                clips = [float(t) for t in clips.split(",") if t.strip()]
            except ValueError:
                raise WhisperError(f"clip_timestamps must be comma-separated seconds, got '{clips}'") from None
        if any(t < 0 for t in clips) or list(clips) != sorted(clips):
            raise WhisperError(f"clip_timestamps must be increasing and not negative, got {self.clip_timestamps}")
        object.__setattr__(self, "clip_timestamps", tuple(float(t) for t in clips))
        if self.clip_timestamps not in ((), (0.0,)) and self.batch_size is not None:
            raise WhisperError("clip_timestamps needs the sequential loop (no batch_size)")
        if not isinstance(self.vad_parameters, VadOptions):
            object.__setattr__(self, "vad_parameters", None if self.vad_parameters is None
                               else VadOptions.from_dict(self.vad_parameters))
        if self.vad_parameters is not None and not self.vad_filter and self.batch_size is None:
            raise WhisperError("vad_parameters needs vad_filter (or batch_size, which cuts on VAD regions)")
        if self.vad_filter and self.clip_timestamps not in ((), (0.0,)):
            raise WhisperError("clip_timestamps and vad_filter both choose what to transcribe: give one of them")
        if self.hallucination_silence_threshold is not None and (not self.decoding.word_timestamps
                                                                 or self.batch_size is not None):
            raise WhisperError("hallucination_silence_threshold needs word_timestamps and the sequential loop "
                               "(no batch_size)")

    @classmethod
    def from_kwargs(cls, **options) -> TranscribeOptions:
        """openai-whisper's `transcribe` keywords: the loop's own, and DecodingOptions' for every window."""
        loop = {f.name for f in fields(cls)} - {"decoding"}
        decoding = {f.name for f in fields(DecodingOptions)} - _PER_WINDOW
        unknown = set(options) - loop - decoding
        if unknown:
            raise WhisperError(f"unknown transcribe option(s): {', '.join(sorted(unknown))}")
        window = DecodingOptions(**{k: v for k, v in options.items() if k in decoding})
        return cls(**{k: v for k, v in options.items() if k in loop}, decoding=window)

    def vad_options(self) -> VadOptions | None:
        """The VAD's options, None without VAD. The throughput mode's as faster-whisper's batched pipeline
        sets them: regions of at most 30 s, 160 ms of silence ending speech unless given."""
        given = cast(VadOptions | None, self.vad_parameters)  # made VadOptions when the options were made
        if self.batch_size is not None:
            return replace(given or VadOptions(min_silence_duration_ms=160), max_speech_duration_s=N_SAMPLES / SAMPLE_RATE)
        return (given or VadOptions()) if self.vad_filter else None

    def window_options(self, temperature: float, prompt: list[int] | None) -> DecodingOptions:
        """A window's options at `temperature`: beam search at 0, `best_of` samples above."""
        if temperature > 0:
            return replace(self.decoding, temperature=temperature, prompt=prompt, beam_size=None, patience=None,
                           best_of=self.best_of)
        return replace(self.decoding, prompt=prompt)

    def needs_fallback(self, result: DecodingResult, speech: bool) -> bool:
        """A decode too repetitive or too unsure, worth a try at the next temperature (`speech`: the window is
        known to hold speech, so a decode that looks like silence is retried too)."""
        if (not speech and self.no_speech_threshold is not None and result.no_speech_prob > self.no_speech_threshold
                and self.logprob_threshold is not None and result.avg_logprob < self.logprob_threshold):
            return False  # silence: nothing better to find
        too_unsure = self.logprob_threshold is not None and result.avg_logprob < self.logprob_threshold
        return self.is_repetitive(result.compression_ratio) or too_unsure

    def is_repetitive(self, compression_ratio: float) -> bool:
        """A text that compresses this well: a decode caught in a loop."""
        return self.compression_ratio_threshold is not None and compression_ratio > self.compression_ratio_threshold

    def is_no_speech(self, result: DecodingResult) -> bool:
        """A window to skip: likely silence, and not a confident text."""
        if self.no_speech_threshold is None or result.no_speech_prob <= self.no_speech_threshold:
            return False
        return not (self.logprob_threshold is not None and result.avg_logprob > self.logprob_threshold)


def transcribe(  # noqa: PLR0913  (openai-whisper's keywords, so that code written for it runs)
    model: Engine,
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
    on_progress: Progress | None = None,
    word_timestamps: bool = False,
    prepend_punctuations: str = PREPEND_PUNCTUATIONS,
    append_punctuations: str = APPEND_PUNCTUATIONS,
    clip_timestamps: str | Sequence[float] = "0",
    hallucination_silence_threshold: float | None = None,
    vad_filter: bool = False,
    vad_parameters: VadOptions | dict | None = None,
    **decode_options,
) -> dict:
    """Transcribe a file or a 16 kHz mono float32 array; returns openai-whisper's result dict
    (`text`, `segments`, `language`), every second of the input covered. The options are
    `TranscribeOptions`' and `DecodingOptions`'; `on_progress(done_seconds, total_seconds)` is called
    after each window."""
    options = TranscribeOptions.from_kwargs(
        temperature=temperature, compression_ratio_threshold=compression_ratio_threshold,
        logprob_threshold=logprob_threshold, no_speech_threshold=no_speech_threshold,
        condition_on_previous_text=condition_on_previous_text, initial_prompt=initial_prompt,
        batch_size=batch_size, silence_threshold_db=silence_threshold_db, word_timestamps=word_timestamps,
        prepend_punctuations=prepend_punctuations, append_punctuations=append_punctuations,
        clip_timestamps=clip_timestamps, hallucination_silence_threshold=hallucination_silence_threshold,
        vad_filter=vad_filter, vad_parameters=vad_parameters, **decode_options)
    return transcribe_with(model, audio, options, on_progress)


def transcribe_with(model: Engine, audio: str | Path | np.ndarray, options: TranscribeOptions,
                    on_progress: Progress | None = None) -> dict:
    """`transcribe` with its options made."""
    return transcribe_speech(model, front_end(audio, options, model.dims.n_mels), options, on_progress)


@dataclass
class Speech:
    """A recording's front end, all of it done before the model's first call: the speech regions VAD found
    (None without VAD: the whole recording) and the log-mel of that speech, one after another."""

    samples: int  # the recording's length
    regions: list[tuple[int, int]] | None
    mel: LogMelFeatures

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def empty(self) -> bool:
        return self.regions is not None and not self.regions


def front_end(audio: str | Path | np.ndarray, options: TranscribeOptions, n_mels: int,
              precompute: bool = False) -> Speech:
    """Load (a path), VAD (with `options.vad_filter`) and log-mel features for a model of `n_mels` mels;
    `precompute` computes the log-mel now (it is otherwise computed as the loop reads its windows), for a
    front end run apart from the model (a CPU task of a Ray job)."""
    if isinstance(audio, (str, Path)):
        audio = load_audio(audio)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise WhisperError(f"audio must be a non-empty 1-D array of 16 kHz samples, got shape {audio.shape}")
    vad = options.vad_options()
    regions = speech_regions(audio, vad) if vad is not None else None
    if regions is None:
        speech = audio  # the whole recording: no copy
    else:
        speech = np.concatenate([audio[start:end] for start, end in regions]) if regions else audio[:0]
    mel = LogMelFeatures(speech if speech.size else audio, n_mels, padding=N_SAMPLES)
    if precompute:
        mel.precompute()
    return Speech(audio.size, regions, mel)


def transcribe_speech(model: Engine, speech: Speech, options: TranscribeOptions,
                      on_progress: Progress | None = None, max_windows: int | None = None) -> dict:
    """The long-form loop over a recording's front end (`front_end`, made for a model of these mels);
    `max_windows` stops the sequential loop after that many decoded windows (a streaming transcriber decodes
    its buffer once, where the loop would decode the tail after the last complete segment again)."""
    mel = speech.mel
    if mel.n_mels != model.dims.n_mels:
        raise WhisperError(f"features of {mel.n_mels} mels for a model of {model.dims.n_mels}")
    language = options.decoding.language
    if language is None:
        language = model.detect_language(pad_or_trim(mel.window(0, N_FRAMES), N_FRAMES))[0] \
            if model.dims.is_multilingual else "en"
    if speech.empty:
        return {"text": "", "segments": [], "language": language}
    options = replace(options, decoding=replace(options.decoding, language=language))
    loop = Loop(model, mel, options, model.tokenizer(language, options.decoding.task), on_progress)
    if options.batch_size is None:
        result = loop.sequential(max_windows)
    else:
        if speech.regions is None:
            raise WhisperError("the throughput mode (batch_size) cuts on VAD regions: make the front end with "
                               "these options")
        result = loop.batched(speech_windows(speech.regions, mel.n_frames - N_FRAMES))
    if speech.regions is not None:
        SpeechMap(speech.regions).restore(result["segments"])
        clear_wordless(result)
    return result


def clear_wordless(result: dict) -> None:
    """Segments without a letter or digit (" .", " ...") cleared as `clear_empty` clears: Whisper writes
    such text for non-speech that a VAD region let through (a click, a note of music)."""
    cleared = False
    for segment in result["segments"]:
        if segment["text"] and not any(ch.isalnum() for ch in segment["text"]):
            segment["text"], segment["tokens"] = "", []
            if "words" in segment:
                segment["words"] = []
            cleared = True
    if cleared:
        result["text"] = "".join(s["text"] for s in result["segments"])


# A stream's first window is decoded without the text before it: with every window a stream's first (5
# recordings of 3-5 windows) tiny.en lost 1.4 WER points against the sequential loop (docs/measurements.md).
# Streams of at least this many windows (1-2 minutes of speech) keep the heads to a quarter of the windows or
# fewer, and a recording under 8 windows is one stream.
MIN_STREAM_WINDOWS = 4


def stream_count(windows: int, batch_size: int) -> int:
    """How many streams the throughput mode cuts `windows` windows into: at most `batch_size`, each of at
    least MIN_STREAM_WINDOWS windows (one stream when there are fewer)."""
    return max(1, min(batch_size, windows // MIN_STREAM_WINDOWS))


def contiguous_runs(items: list, n: int) -> list[list]:
    """`items` in order, cut into at most `n` contiguous runs of lengths differing by at most one."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    runs, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        runs.append(items[start:end])
        start = end
    return [run for run in runs if run]


def speech_windows(regions: list[tuple[int, int]], content_frames: int) -> list[tuple[int, int]]:
    """The speech-only audio as VAD regions merged in order into groups of at most 30 s (faster-whisper's
    `collect_chunks`), as (first mel frame, frames): the throughput mode splits its streams at their junctions."""
    windows, start = [], 0
    for group in merge_regions(regions, N_SAMPLES):
        samples = sum(end - begin for begin, end in group)
        first, last = round(start / HOP_LENGTH), min(round((start + samples) / HOP_LENGTH), content_frames)
        for seek in range(first, last, N_FRAMES):  # a region longer than 30 s (none with the VAD's 30 s cut)
            windows.append((seek, min(N_FRAMES, last - seek)))
        start += samples
    return windows


class Loop:
    """One recording's windows, decoded under one set of options."""

    def __init__(self, model: Engine, mel: LogMelFeatures, options: TranscribeOptions, tokenizer: Tokenizer,
                 on_progress: Progress | None):
        self.model, self.mel, self.options, self.tokenizer = model, mel, options, tokenizer
        self.on_progress = on_progress
        self.content_frames = mel.n_frames - N_FRAMES
        self.input_stride = N_FRAMES // model.dims.n_audio_ctx  # mel frames per output token: 2
        prompt = options.initial_prompt
        self.initial_prompt_tokens = tokenizer.encode(" " + prompt.strip()) if prompt else []
        self.streams: list[Stream] = []

    def sequential(self, max_windows: int | None = None) -> dict:
        """openai-whisper's loop: each window after the previous text, seeking to its last complete timestamp
        (or, with word timestamps, its last word), within each of the clips; at most `max_windows` decoded."""
        return self.read([Stream(self, self.clips())], max_windows)

    def batched(self, windows: list[tuple[int, int]]) -> dict:
        """The throughput mode: `windows` (first mel frame, frames: the speech cut at pauses into windows of
        at most 30 s) in `stream_count` contiguous runs, each run's audio a stream that the sequential loop
        reads, all of them stepped together. So a stream's windows are cut and conditioned as the sequential
        loop cuts and conditions them, and only each stream's first window lacks the text before it."""
        runs = contiguous_runs(windows, stream_count(len(windows), self.options.batch_size or 1))
        return self.read([Stream(self, [(run[0][0], run[-1][0] + run[-1][1])], stretch=True) for run in runs])

    def read(self, streams: list[Stream], max_steps: int | None = None) -> dict:
        """Step `streams` until each has read its audio (or `max_steps` steps): a step decodes the next
        window of every stream in one batch at the first temperature, each after its own stream's text; a
        window that fails the thresholds is retried alone at the next temperatures."""
        options = self.options
        self.streams = streams
        steps = 0
        while max_steps is None or steps < max_steps:
            active = [(stream, window) for stream in streams if (window := stream.next_window()) is not None]
            if not active:
                break
            mels = np.stack([pad_or_trim(self.mel.window(seek, size), N_FRAMES) for _, (seek, size) in active])
            prompts = [stream.prompt() for stream, _ in active]
            results = self.model.decode_windows(mels, options.window_options(options.temperature[0], None),
                                                prompts=prompts, frames=[size for _, (_, size) in active])
            for (stream, (seek, size)), mel, prompt, result in zip(active, mels, prompts, results):
                if options.needs_fallback(result, stream.speech) and len(options.temperature) > 1:
                    result = self.decode_with_fallback(mel, prompt, size, options.temperature[1:], stream.speech)
                if stream.speech and prompt and prompt != self.initial_prompt_tokens and options.is_repetitive(result.compression_ratio):
                    result = self.decode_without_context(mel, size, result)
                stream.take(seek, size, result)
            steps += 1
        return self.result()

    def result(self) -> dict:
        """The streams' segments in order, numbered, and their text."""
        segments = [{"id": i, **s} for i, s in enumerate(s for stream in self.streams for s in stream.segments)]
        return {"text": "".join(stream.text() for stream in self.streams), "segments": segments,
                "language": self.options.decoding.language}

    def clips(self) -> list[tuple[int, int]]:
        """The (first, end) mel frames of each clip to transcribe (openai-whisper's clip_timestamps)."""
        seconds = cast(tuple[float, ...], self.options.clip_timestamps)  # made a tuple when the options were made
        points = [round(t * FRAMES_PER_SECOND) for t in seconds] or [0]
        if len(points) % 2:
            points.append(self.content_frames)
        points = [min(p, self.content_frames) for p in points]  # a clip past the end stops there
        return list(zip(points[::2], points[1::2]))

    def decode_with_fallback(self, mel: np.ndarray, prompt: list[int], frames: int,
                             temperatures: tuple[float, ...], speech: bool) -> DecodingResult:
        """Decode one window [n_mels, 3000], `frames` of them audio, at each of `temperatures` in turn until
        it passes the thresholds (`speech`: as `needs_fallback` takes it)."""
        result = None
        for t in temperatures:
            options = self.options.window_options(t, prompt)
            result = self.model.decode_windows(mel[None], options, frames=[frames])[0]
            if not self.options.needs_fallback(result, speech):
                break
        assert result is not None  # at least one temperature (TranscribeOptions checks)
        return result

    def decode_without_context(self, mel: np.ndarray, frames: int, looped: DecodingResult) -> DecodingResult:
        """A throughput stream's window still repetitive after every temperature, decoded once more at the first
        without its stream's text (a loop the prompt carried: at temperature 0 alone nothing else replaces it);
        kept if no longer repetitive. The sequential loop keeps openai-whisper's rules and never does this."""
        options = self.options.window_options(self.options.temperature[0], self.initial_prompt_tokens or None)
        result = self.model.decode_windows(mel[None], options, frames=[frames])[0]
        return looped if self.options.is_repetitive(result.compression_ratio) else result

    def silent(self, seek: int, size: int) -> bool:
        threshold = self.options.silence_threshold_db
        return threshold is not None and loudest_frame_db(self.mel.audio, seek, size) < threshold

    def report(self) -> None:
        if self.on_progress is not None:
            done = sum(stream.seek - stream.origin for stream in self.streams)
            total = self.content_frames / FRAMES_PER_SECOND
            self.on_progress(min(done, self.content_frames) / FRAMES_PER_SECOND, total)


class Stream:
    """One run of the sequential loop over its clips (mel frames): where it is, its text so far (the next
    window's prompt) and its segments. A `stretch` is one of the throughput mode's contiguous parts of the
    speech, read beside the others: its progress counts from its start, the speech before it (for the word
    timings' rule) ends at its start, and no time it reports passes its end, where the next stretch begins.
    A stretch is speech by the VAD that cut it, so none of its windows is skipped as likely silence (as
    faster-whisper's batched pipeline keeps every chunk's text): a window decoded into a repetition loop, which
    the no-speech rule took for silence, had dropped a minute of speech (docs/measurements.md, issue 23)."""

    def __init__(self, loop: Loop, clips: list[tuple[int, int]], stretch: bool = False):
        self.loop, self.clips = loop, clips
        self.clip, self.seek = 0, clips[0][0]
        self.origin = clips[0][0] if stretch else 0
        self.end_time = clips[-1][1] / FRAMES_PER_SECOND if stretch else None
        self.speech = stretch
        self.tokens: list[int] = list(loop.initial_prompt_tokens)
        self.prompt_reset_since = 0
        self.segments: list[dict] = []
        self.last_speech_timestamp = clips[0][0] / FRAMES_PER_SECOND if stretch else 0.0

    def next_window(self) -> tuple[int, int] | None:
        """The next window to decode (first frame, frames), past silent ones; None when the clips are read."""
        loop = self.loop
        while self.clip < len(self.clips):
            clip_start, clip_end = self.clips[self.clip]
            self.seek = max(self.seek, clip_start)
            if self.seek >= clip_end:  # the next clip from its start, as openai-whisper's loop goes on
                self.clip += 1
                if self.clip < len(self.clips):
                    self.seek = self.clips[self.clip][0]
                continue
            size = min(N_FRAMES, loop.content_frames - self.seek, clip_end - self.seek)
            if not loop.silent(self.seek, size):
                return self.seek, size
            self.seek += size
            loop.report()
        return None

    def prompt(self) -> list[int]:
        return self.tokens[self.prompt_reset_since:]

    def text(self) -> str:
        return self.loop.tokenizer.decode(self.tokens[len(self.loop.initial_prompt_tokens):])

    def take(self, seek: int, size: int, result: DecodingResult) -> None:
        """A window's decode: its segments (with words), its text as the prompt, and where to go on."""
        options = self.loop.options
        if not self.speech and options.is_no_speech(result):
            self.seek = seek + size
            self.loop.report()
            return
        current, advance, single_timestamp_ending = split_segments(result, self.loop.tokenizer, seek, size,
                                                                   self.loop.input_stride)
        next_seek = seek + advance
        if options.decoding.word_timestamps:
            next_seek, kept = self.add_words(Window(seek, size, result, single_timestamp_ending), current, next_seek)
            if kept is None:  # a hallucination after a long silence: the window is read again from after it
                self.seek = next_seek
                return
            current = kept
        self.seek = next_seek
        clear_empty(current)
        if self.end_time is not None:  # a timestamp in the padding after a stretch's last audio
            for item in [*current, *(w for s in current for w in s.get("words", []))]:
                item["start"], item["end"] = min(item["start"], self.end_time), min(item["end"], self.end_time)
        self.segments.extend(current)
        self.tokens.extend(t for s in current for t in s["tokens"])
        if not options.condition_on_previous_text or result.temperature > 0.5:
            self.prompt_reset_since = len(self.tokens)
        self.loop.report()

    def add_words(self, window: Window, segments: list[dict], next_seek: int) -> tuple[int, list[dict] | None]:
        """Word timestamps for a window's segments (`words`, and their bounds from the words), and where the
        loop goes on: after the last word where the window ends inside a segment, and past silence before a
        likely hallucination (openai-whisper's hallucination_silence_threshold). Returns None as the segments
        where the window is to be read again from the returned seek."""
        options, tok = self.loop.options, self.loop.tokenizer
        time_offset = window.seek * HOP_LENGTH / SAMPLE_RATE
        assert window.result.alignment is not None  # word_timestamps decodes align
        text_tokens = [t for s in segments for t in s["tokens"] if t < tok.eot]
        timings = find_alignment(window.result.alignment, tok, text_tokens)
        word_options = WordOptions(options.prepend_punctuations, options.append_punctuations)
        add_word_timestamps(segments, timings, tok.eot, time_offset, self.last_speech_timestamp, word_options)
        if not window.single_timestamp_ending:
            last_word_end = _last_word_end(segments)
            if last_word_end is not None and last_word_end > time_offset:
                next_seek = round(last_word_end * FRAMES_PER_SECOND)
        if options.hallucination_silence_threshold is not None:
            next_seek, kept = self.skip_hallucinations(window, segments, next_seek, word_options.punctuation)
            if kept is None:
                return next_seek, None
            segments = kept
        last_word_end = _last_word_end(segments)
        if last_word_end is not None:
            self.last_speech_timestamp = last_word_end
        return next_seek, segments

    def skip_hallucinations(self, window: Window, segments: list[dict], next_seek: int,
                            punctuation: str) -> tuple[int, list[dict] | None]:
        """openai-whisper's guard: a segment of anomalous words (improbable, very short or very long) with
        more than `hallucination_silence_threshold` seconds of silence around it is dropped, and the loop
        goes on after the silence before it."""
        threshold = self.loop.options.hallucination_silence_threshold
        assert threshold is not None
        time_offset = window.seek * HOP_LENGTH / SAMPLE_RATE
        window_end_time = (window.seek + N_FRAMES) * HOP_LENGTH / SAMPLE_RATE
        if not window.single_timestamp_ending:
            last_word_end = _last_word_end(segments)
            if last_word_end is not None and last_word_end > time_offset:
                remaining = window_end_time - last_word_end
                next_seek = round(last_word_end * FRAMES_PER_SECOND) if remaining > threshold else window.seek + window.size
        first = next((s for s in segments if s["words"]), None)
        if first is not None and _is_anomaly(first, punctuation):
            gap = first["start"] - time_offset
            if gap > threshold:
                return window.seek + round(gap * FRAMES_PER_SECOND), None
        last_end = self.last_speech_timestamp
        for i, segment in enumerate(segments):
            if not segment["words"]:
                continue
            if _is_anomaly(segment, punctuation):
                following = next((s for s in segments[i + 1:] if s["words"]), None)
                next_start = following["words"][0]["start"] if following else time_offset + window.size * HOP_LENGTH / SAMPLE_RATE
                silence_before = (segment["start"] - last_end > threshold or segment["start"] < threshold
                                  or segment["start"] - time_offset < 2.0)
                silence_after = (next_start - segment["end"] > threshold or _is_anomaly(following, punctuation)
                                 or window_end_time - segment["end"] < 2.0)
                if silence_before and silence_after:
                    next_seek = round(max(time_offset + 1, segment["start"]) * FRAMES_PER_SECOND)
                    if self.loop.content_frames * HOP_LENGTH / SAMPLE_RATE - segment["end"] < threshold:
                        next_seek = self.loop.content_frames
                    return next_seek, segments[:i]
            last_end = segment["end"]
        return next_seek, segments



@dataclass(frozen=True)
class Window:
    """One decoded window: its first mel frame, its frames of audio, its decode."""

    seek: int
    size: int
    result: DecodingResult
    single_timestamp_ending: bool


def split_segments(result: DecodingResult, tokenizer: Tokenizer, seek: int, segment_size: int,
                   input_stride: int) -> tuple[list[dict], int, bool]:
    """openai-whisper's segmentation of one window's tokens at consecutive timestamps.

    Returns segments with absolute times (empty ones too: `clear_empty` after word timestamps), how many
    mel frames to advance (to the last complete timestamp, or the whole window), and whether the tokens end
    with a single timestamp (no speech after it).
    """
    tokens = np.array(result.tokens, dtype=np.int64)
    time_offset = seek * HOP_LENGTH / SAMPLE_RATE
    time_precision = input_stride * HOP_LENGTH / SAMPLE_RATE  # seconds per timestamp step: 0.02
    ts_begin = tokenizer.timestamp_begin

    def new_segment(start: float, end: float, toks: np.ndarray) -> dict:
        ids = toks.tolist()
        return {"seek": seek, "start": start, "end": end,
                "text": tokenizer.decode([t for t in ids if t < tokenizer.eot]), "tokens": ids,
                "temperature": result.temperature, "avg_logprob": result.avg_logprob,
                "compression_ratio": result.compression_ratio, "no_speech_prob": result.no_speech_prob}

    segments: list[dict] = []
    consecutive, single_timestamp_ending = segment_ends(result.tokens, ts_begin)
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
    else:
        duration = segment_size * HOP_LENGTH / SAMPLE_RATE
        stamps = tokens[tokens >= ts_begin]
        if len(stamps) > 0 and int(stamps[-1]) != ts_begin:
            duration = (int(stamps[-1]) - ts_begin) * time_precision
        segments.append(new_segment(time_offset, time_offset + duration, tokens))
        advance = segment_size
    return segments, advance, single_timestamp_ending


def clear_empty(segments: list[dict]) -> None:
    """An instantaneous segment, or one without text, keeps its place but nothing else."""
    for segment in segments:
        if segment["start"] == segment["end"] or segment["text"].strip() == "":
            segment["text"], segment["tokens"] = "", []
            if "words" in segment:
                segment["words"] = []


def _last_word_end(segments: list[dict]) -> float | None:
    return next((w["end"] for s in reversed(segments) for w in reversed(s.get("words", []))), None)


def _word_anomaly(word: dict) -> float:
    """How unlike speech a word is: improbable, much too short or too long (openai-whisper's score)."""
    duration = word["end"] - word["start"]
    score = 1.0 if word.get("probability", 0.0) < 0.15 else 0.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def _is_anomaly(segment: dict | None, punctuation: str) -> bool:
    if segment is None or not segment["words"]:
        return False
    words = [w for w in segment["words"] if w["word"] not in punctuation][:8]
    score = sum(_word_anomaly(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


def loudest_frame_db(audio: np.ndarray, seek: int, n_frames: int) -> float:
    """RMS level in dBFS of the loudest 20 ms frame of the samples behind mel frames [seek, seek + n_frames)."""
    power = np.square(audio[seek * HOP_LENGTH: (seek + n_frames) * HOP_LENGTH], dtype=np.float64)
    if power.size == 0:
        return -np.inf
    whole = power.size - power.size % SILENCE_FRAME  # a last, shorter frame is read as if padded with zeros
    means = [power[:whole].reshape(-1, SILENCE_FRAME).mean(axis=1).max()] if whole else []
    if whole < power.size:
        means.append(pad_or_trim(power[whole:], SILENCE_FRAME).mean())
    peak = float(np.sqrt(np.max(means)))  # NaN samples give NaN, hence -inf, as a padded copy did
    return 20 * np.log10(peak) if peak > 0 else -np.inf
