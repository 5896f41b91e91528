"""Throughput: 16 lectures, transcribed one after another, as one recording in throughput mode, and as
16 files at once (`--files-at-once`: each file's sequential loop, windows batched across files).

    python -m benchmarks.suite.throughput --device gpu --copies 16 --batch-size 16 --speech DIR

Modes, each timed after a warm-up (compiles, records the step graph for the batch sizes it meets):
- `sequential`: the copies as one recording, openai-whisper's loop (conditioned on previous text);
- `batch_size=N`: that recording in throughput mode (up to N streams, each read by the sequential loop,
  their windows decoded together);
Greedy (temperature 0 only) unless `--fallback` (transcribe's default temperatures) for these two.
- `files_at_once=N`: the copies as N files transcribed together;
- `one_by_one (shifted)` and `files_at_once=N (shifted)`: N different recordings (the lecture started
  at a different second each, the start moved to the end), alone one after another and together; their
  transcripts are compared token for token (windows of different files with prompts of different
  lengths share each batch here).
Prints JSON lines: audio hours per device hour (audio seconds / median wall seconds of --repeat runs) and WER
against the lecture's reference (copies) or the number of files whose transcript equals their transcript alone.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

from benchmarks.common import add_model_args, add_speech_arg, load, machine, parser, references, timed
from max_whisper import load_audio
from max_whisper.audio import SAMPLE_RATE
from max_whisper.batching import transcribe_files
from max_whisper.bench import word_error_rate
from max_whisper.transcribe import TranscribeOptions
from max_whisper.vad import speech_regions

GREEDY = TranscribeOptions.from_kwargs(temperature=0.0)


def segment_tokens(result: dict) -> list[list[int]]:
    return [s["tokens"] for s in result["segments"]]


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    add_speech_arg(p)
    p.add_argument("--copies", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--modes", default="sequential,batch,files,shifted")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per mode (median and min reported)")
    p.add_argument("--fallback", action="store_true",
                   help="sequential and batch modes at transcribe's default temperatures (fallback), not greedy only")
    args = p.parse_args()
    modes = args.modes.split(",")
    ref = references(args.speech)["lecture.flac"]
    lecture = load_audio(args.speech / "lecture.flac")
    n = args.copies
    start = time.perf_counter()
    model = load(args)
    report = {"machine": machine(), "model": args.model, "device": args.device, "copies": n,
              "temperatures": "default (fallback)" if args.fallback else "0 only",
              "audio_s": n * len(lecture) / SAMPLE_RATE, "load_s": time.perf_counter() - start}

    def record(name: str, walls: list[float], **quality) -> None:
        wall = statistics.median(walls)
        report[name] = {"wall_s": wall, "wall_s_min": min(walls), "runs": len(walls),
                        "audio_hours_per_device_hour": report["audio_s"] / wall, **quality}
        print(json.dumps({name: report[name]}), flush=True)

    reference = [" ".join([ref] * n)]
    copies = np.concatenate([lecture] * n)
    temperature = {} if args.fallback else {"temperature": 0.0}
    for name, batch in (("sequential", None), (f"batch_size={args.batch_size}", args.batch_size)):
        if ("sequential" if batch is None else "batch") not in modes:
            continue
        # warm-up on the same recording: the throughput mode's batch sizes follow its length (streams)
        model.transcribe(copies, batch_size=batch, **temperature)
        result, walls = timed(lambda: model.transcribe(copies, batch_size=batch, **temperature), args.repeat)
        record(name, walls, wer=word_error_rate(reference, [result["text"]])[0])
    if "batch" in modes:  # the throughput mode's VAD, on the host, inside its wall time
        vad = TranscribeOptions(batch_size=args.batch_size).vad_options()
        assert vad is not None
        _, walls = timed(lambda: speech_regions(copies, vad), args.repeat)
        record("vad (inside batch_size)", walls)

    def at_once(recordings: list[np.ndarray]) -> list[dict]:
        return [r for _, _, r in transcribe_files(model, recordings, n, GREEDY)]

    if "files" in modes:
        at_once([lecture] * n)  # warm-up: records the step graph for every batch size met
        results, walls = timed(lambda: at_once([lecture] * n), args.repeat)
        record(f"files_at_once={n}", walls, wer=word_error_rate([ref] * n, [r["text"] for r in results])[0])
    if "shifted" in modes:
        shifted = [np.roll(lecture, -SAMPLE_RATE * 7 * i) for i in range(n)]
        at_once(shifted)  # warm-up
        alone, walls = timed(lambda: [model.transcribe(a, temperature=0.0) for a in shifted], args.repeat)
        record("one_by_one (shifted)", walls)
        together, walls = timed(lambda: at_once(shifted), args.repeat)
        pairs = list(zip(alone, together))
        record(f"files_at_once={n} (shifted)", walls,
               transcripts_equal_alone=f"{sum(segment_tokens(a) == segment_tokens(b) for a, b in pairs)}/{n}",
               texts_equal_alone=f"{sum(a['text'] == b['text'] for a, b in pairs)}/{n}",
               wer_against_alone=word_error_rate([a["text"] for a, _ in pairs], [b["text"] for _, b in pairs])[0])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
