"""Throughput: 16 lectures, transcribed one after another, as one recording in throughput mode, and as
16 files at once (`--files-at-once`: each file's sequential loop, windows batched across files).

    python benchmarks/throughput.py --device gpu --copies 16 --batch-size 16 --speech DIR

Modes, each timed after a warm-up (compiles, records the step graph for the batch sizes it meets):
- `sequential`: the copies as one recording, openai-whisper's loop (conditioned on previous text);
- `batch_size=N`: that recording in throughput mode (independent windows, N at a time);
- `files_at_once=N`: the copies as N files transcribed together;
- `one_by_one (shifted)` and `files_at_once=N (shifted)`: N different recordings (the lecture started
  at a different second each, the start moved to the end), alone one after another and together; their
  transcripts are compared token for token (windows of different files with prompts of different
  lengths share each batch here).
Prints JSON lines: audio hours per device hour (audio seconds / median wall seconds of --repeat runs) and WER against the
lecture's reference (copies) or the number of files whose transcript equals their transcript alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

import numpy as np

import max_whisper as mw
from max_whisper.batching import transcribe_files
from max_whisper.bench import _machine, word_error_rate


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--copies", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--modes", default="sequential,batch,files,shifted")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per mode (median and min reported)")
    p.add_argument("--compiled", action="append", default=None, help="folders from `max-whisper compile`")
    p.add_argument("--speech", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "speech")
    args = p.parse_args()
    modes = args.modes.split(",")
    with open(args.speech / "refs.tsv", newline="") as f:
        ref = {r["file"]: r["reference"] for r in csv.DictReader(f, delimiter="\t")}["lecture.flac"]
    lecture = mw.load_audio(args.speech / "lecture.flac")
    n = args.copies
    t = time.perf_counter()
    model = mw.load_model(args.model, device=args.device, compiled=args.compiled)
    report = {"machine": _machine(), "model": args.model, "device": args.device, "copies": n,
              "audio_s": n * len(lecture) / 16000, "load_s": time.perf_counter() - t}

    def record(name: str, walls: list[float], **quality) -> None:
        wall = statistics.median(walls)
        report[name] = {"wall_s": wall, "wall_s_min": min(walls), "runs": len(walls),
                        "audio_hours_per_device_hour": report["audio_s"] / wall, **quality}
        print(json.dumps({name: report[name]}), flush=True)

    def timed(run):
        walls = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            out = run()
            walls.append(time.perf_counter() - start)
        return out, walls

    reference = [" ".join([ref] * n)]
    for name, batch in (("sequential", None), (f"batch_size={args.batch_size}", args.batch_size)):
        if ("sequential" if batch is None else "batch") not in modes:
            continue
        model.transcribe(lecture, temperature=0.0, batch_size=batch)  # warm-up
        result, wall = timed(lambda: model.transcribe(np.concatenate([lecture] * n), temperature=0.0, batch_size=batch))
        record(name, wall, wer=word_error_rate(reference, [result["text"]])[0])

    def at_once(recordings):
        return [r for _, _, r in transcribe_files(model, recordings, n, temperature=0.0)]

    if "files" in modes:
        at_once([lecture] * n)  # warm-up: records the step graph for every batch size met
        results, wall = timed(lambda: at_once([lecture] * n))
        record(f"files_at_once={n}", wall, wer=word_error_rate([ref] * n, [r["text"] for r in results])[0])
    if "shifted" in modes:
        shifted = [np.roll(lecture, -16000 * 7 * i) for i in range(n)]
        at_once(shifted)  # warm-up
        alone, wall = timed(lambda: [model.transcribe(a, temperature=0.0) for a in shifted])
        record("one_by_one (shifted)", wall)
        together, wall = timed(lambda: at_once(shifted))
        equal = sum([s["tokens"] for s in a["segments"]] == [s["tokens"] for s in b["segments"]]
                    for a, b in zip(alone, together))
        record(f"files_at_once={n} (shifted)", wall, transcripts_equal_alone=f"{equal}/{n}",
               texts_equal_alone=f"{sum(a['text'] == b['text'] for a, b in zip(alone, together))}/{n}",
               wer_against_alone=word_error_rate([a["text"] for a in alone], [b["text"] for b in together])[0])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
