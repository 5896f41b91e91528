"""The lecture's WER and time under faster-whisper's repetition guards (the engine's `repetition_penalty`,
`no_repeat_ngram_size`), against none: what they cost or gain on speech that does not loop.

    python -m benchmarks.investigations.repetition_guards [--model tiny.en] [--device cpu]

Greedy, temperature 0 (no fallback), tests/speech/lecture.flac; one run per setting after a warm-up.
"""

from __future__ import annotations

import json
import time

from benchmarks.common import SPEECH, add_model_args, command, load, machine, parser, references
from max_whisper import load_audio
from max_whisper.bench import word_error_rate

SETTINGS = ({}, {"no_repeat_ngram_size": 3}, {"no_repeat_ngram_size": 5}, {"repetition_penalty": 1.1})


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    args = p.parse_args()
    model = load(args)
    audio, reference = load_audio(SPEECH / "lecture.flac"), references(SPEECH)["lecture.flac"]
    model.transcribe(audio, temperature=0.0)  # warm-up: compiles
    print(json.dumps({"command": command(), "machine": machine(), "model": args.model, "device": args.device}))
    for setting in SETTINGS:
        start = time.perf_counter()
        text = model.transcribe(audio, temperature=0.0, **setting)["text"]
        print(json.dumps({"setting": setting, "seconds": round(time.perf_counter() - start, 2),
                          "wer": round(word_error_rate([reference], [text])[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
