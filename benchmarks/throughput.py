"""Throughput: N copies of lecture.flac as one recording, sequential loop vs batched windows.

    python benchmarks/throughput.py --device gpu --copies 16 --batch-size 16 --speech DIR

Prints JSON: audio hours per device hour (audio seconds / wall seconds) for each mode, and WER.
Compile happens before timing (one warm-up transcription of one copy in each mode).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

import max_whisper as mw
from max_whisper.bench import _machine, word_error_rate


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--copies", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--compiled", action="append", default=None, help="folders from `max-whisper compile`")
    p.add_argument("--speech", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "speech")
    args = p.parse_args()
    with open(args.speech / "refs.tsv", newline="") as f:
        ref = {r["file"]: r["reference"] for r in csv.DictReader(f, delimiter="\t")}["lecture.flac"]
    lecture = mw.load_audio(args.speech / "lecture.flac")
    audio = np.concatenate([lecture] * args.copies)
    t = time.perf_counter()
    model = mw.load_model(args.model, device=args.device, compiled=args.compiled)
    report = {"machine": _machine(), "model": args.model, "device": args.device, "copies": args.copies,
              "audio_s": len(audio) / 16000, "load_s": time.perf_counter() - t}
    for name, batch in (("sequential", None), (f"batch_size={args.batch_size}", args.batch_size)):
        model.transcribe(lecture, temperature=0.0, batch_size=batch)  # warm-up
        t = time.perf_counter()
        result = model.transcribe(audio, temperature=0.0, batch_size=batch)
        wall = time.perf_counter() - t
        report[name] = {"wall_s": wall, "audio_hours_per_device_hour": report["audio_s"] / wall,
                        "wer": word_error_rate([" ".join([ref] * args.copies)], [result["text"]])[0]}
        print(json.dumps({name: report[name]}), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
