"""One long recording for the throughput mode on a CPU: the lecture and the four espeak-ng readings of
longform_texts one after another, 1 s of silence after each (513.7 s), written as 16-bit WAV with a refs.tsv
that `max-whisper bench` reads.

    python -m benchmarks.suite.long_recording --voices DIR --output DIR [--transcribe 8]
    max-whisper bench DIR/five.wav --backends max --devices cpu --batch-size 8 --runs 3

`--voices`: where the espeak-ng readings are (made there first if missing; needs espeak-ng).
`--transcribe N`: also transcribe it with tiny.en on the CPU at `transcribe`'s defaults (temperature
fallback, which the bench leaves out), sequentially and with `batch_size=N`, one run each after a warm-up:
seconds and WER into DIR/transcribe.json.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

import max_whisper as mw
from benchmarks.common import command, machine, parser, timed, write_json, write_wav
from benchmarks.suite.streaming import recordings
from max_whisper.audio import SAMPLE_RATE
from max_whisper.bench import word_error_rate

NAMES = ("lecture", "garden", "railway", "kitchen", "comet")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--voices", type=Path, required=True, metavar="DIR")
    p.add_argument("--output", type=Path, required=True, metavar="DIR")
    p.add_argument("--transcribe", type=int, default=None, metavar="N")
    args = p.parse_args()
    parts = recordings(list(NAMES), args.voices)
    gap = np.zeros(SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([x for samples, _ in parts.values() for x in (samples, gap)])
    args.output.mkdir(parents=True, exist_ok=True)
    write_wav(args.output / "five.wav", audio)
    reference = " ".join(" ".join(text.split()) for _, text in parts.values())
    (args.output / "refs.tsv").write_text(f"file\treference\nfive.wav\t{reference}\n")
    print(f"{args.output / 'five.wav'}: {audio.size / SAMPLE_RATE:.1f} s")
    if args.transcribe:
        model = mw.load_model("tiny.en", device="cpu")
        rows = []
        for batch_size in (None, args.transcribe):
            result, runs = timed(lambda: model.transcribe(audio, batch_size=batch_size), 1, warmup=1)
            text, seconds = result["text"], statistics.median(runs)
            rows.append({"batch_size": batch_size, "seconds": round(seconds, 3),
                         "wer": round(word_error_rate([reference], [text])[0], 2), "text": text})
            print(f"batch_size {batch_size}: {seconds:.2f} s, WER {rows[-1]['wer']:.2f} %", flush=True)
        write_json(args.output / "transcribe.json", {"machine": machine(), "command": command(), "model": "tiny.en",
                                                     "settings": "transcribe's defaults", "rows": rows})


if __name__ == "__main__":
    main()
