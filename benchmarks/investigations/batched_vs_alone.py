"""Where --files-at-once transcripts differ from each file transcribed alone, and why.

    python -m benchmarks.investigations.batched_vs_alone --speech DIR     (on a GPU machine)

Transcribes 16 different recordings (lecture.flac started 7 s later each time) alone and at once,
logging every window decode (window, prompt, tokens). For the first windows whose tokens differ with the
same window and prompt, decodes that window again: alone (batch 1), in 16 rows of itself (a batch without
rows of different lengths), in its original batch, and next to one row of another prompt length; and
prints the top logits where the tokens part. Prints the sizes of the batches the engine decoded.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from itertools import islice
from typing import Iterator

import numpy as np

from benchmarks.common import add_model_args, add_speech_arg, load, parser
from max_whisper import WhisperModel, load_audio
from max_whisper.audio import SAMPLE_RATE
from max_whisper.batching import transcribe_files
from max_whisper.decoding import DecodingOptions, DecodingResult, DecodingTask
from max_whisper.transcribe import TranscribeOptions

FILES = 16
EXAMINED = 4  # mismatches looked into

# One decoded window: its log-mel, its options with its own prompt, its result.
Decode = tuple[np.ndarray, DecodingOptions, DecodingResult]


def log_decodes(model: WhisperModel, calls: list[list[Decode]]) -> None:
    """Appends every later call of `model.decode_windows` (the one way windows reach the engine, alone
    or batched across files) to `calls`, as its windows; `del model.decode_windows` stops it."""
    decode_windows = model.decode_windows

    def logged(mels: np.ndarray, options: DecodingOptions, prompts: list | None = None,
               frames: list[int] | None = None) -> list[DecodingResult]:
        results = decode_windows(mels, options, prompts, frames)
        rows = [replace(options, prompt=p) for p in prompts] if prompts is not None else [options] * len(mels)
        calls.append(list(zip(mels, rows, results)))
        return results

    model.decode_windows = logged


def key(mel: np.ndarray, prompt: list[int] | None) -> str:
    return hashlib.sha1(np.ascontiguousarray(mel).tobytes() + repr(list(prompt or [])).encode()).hexdigest()


def first_difference(a: list[int], b: list[int]) -> int:
    """The first index where `a` and `b` differ (the shorter one's length where it starts the other)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def mismatches(batches: list[list[Decode]],
               alone: dict[str, list[int]]) -> Iterator[tuple[list[Decode], int, list[int]]]:
    """Greedy windows that a batch decoded to other tokens than `alone` (by window and prompt): each one's
    batch, its index there, and its tokens alone."""
    for batch in batches:
        for index, (mel, options, result) in enumerate(batch):
            tokens = alone.get(key(mel, options.prompt))
            if options.temperature == 0 and tokens is not None and tokens != result.tokens:
                yield batch, index, tokens


def segment_tokens(result: dict) -> list[list[int]]:
    return [s["tokens"] for s in result["segments"]]


def examine(model: WhisperModel, batch: list[Decode], index: int, alone: list[int]) -> None:
    """Decodes window `index` of `batch`, whose tokens differ from `alone`, in other company."""
    mel, options, result = batch[index]
    prompt, batched = options.prompt, result.tokens
    i = first_difference(alone, batched)
    print("MISMATCH batch size", len(batch), "prompt len", len(prompt or []), "diverge at", i,
          "alone", alone[i - 2:i + 3], "batched", batched[i - 2:i + 3])
    no_prompt = replace(options, prompt=None)  # each row's prompt given apart

    def tokens(mels: list[np.ndarray], prompts: list) -> list[list[int]]:
        return [r.tokens for r in model.decode_windows(np.stack(mels), no_prompt, prompts)]

    prompts = [row.prompt for _, row, _ in batch]
    others = [p for p in prompts if len(p or []) != len(prompt or [])]
    pair = tokens([mel, mel], [prompt, others[0]])[0] == alone if others else "no other prompt length in the batch"
    print("  batch1 == alone", tokens([mel], [prompt])[0] == alone,
          "| 16 same rows == alone", tokens([mel] * FILES, [prompt] * FILES)[0] == alone,
          "| same batch again == batched", tokens([m for m, _, _ in batch], prompts)[index] == batched,
          "| ragged pair == alone", pair)
    # the margin where they part, in the general decoder graph at batch 1
    head = list(DecodingTask(model, no_prompt).initial_tokens(prompt))
    run = model.decoder.start(model.embed_audio(mel[None]), np.array([0]))
    logits = run.logits(np.array([head + alone[:i]]))[0, -1]
    top = np.argsort(-logits)[:3]
    print("  top3 at divergence", [(int(t), float(logits[t])) for t in top], "alone", alone[i], "batched", batched[i])


def main() -> None:
    p = parser(__doc__)
    add_model_args(p, devices=("gpu", "cpu"))
    add_speech_arg(p)
    args = p.parse_args()
    model = load(args)
    lecture = load_audio(args.speech / "lecture.flac")
    shifted = [np.roll(lecture, -SAMPLE_RATE * 7 * i) for i in range(FILES)]

    calls: list[list[Decode]] = []
    log_decodes(model, calls)
    alone = [model.transcribe(a, temperature=0.0) for a in shifted]
    n_alone = len(calls)
    greedy = TranscribeOptions.from_kwargs(temperature=0.0)
    together = [r for _, _, r in transcribe_files(model, shifted, FILES, greedy)]
    del model.decode_windows  # the engine's own again
    alone_tokens = {key(mel, o.prompt): r.tokens for call in calls[:n_alone] for mel, o, r in call
                    if o.temperature == 0}
    batches = calls[n_alone:]

    print("equal", sum(segment_tokens(a) == segment_tokens(b) for a, b in zip(alone, together)))
    print("batches", len(batches), "sizes", [len(b) for b in batches])
    examined = list(islice(mismatches(batches, alone_tokens), EXAMINED))
    for batch, index, tokens in examined:
        examine(model, batch, index, tokens)
    print("mismatches examined", len(examined))


if __name__ == "__main__":
    main()
