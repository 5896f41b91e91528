"""Peak memory of a one-hour transcription: the lecture repeated to 60 minutes, tiny.en, CPU, greedy.

    python benchmarks/long_audio_memory.py [--minutes 60] [--speech tests/speech]

Prints one JSON line: audio seconds, wall seconds, peak RSS (MiB) of this process while transcribing
(the high-water mark is reset after the model is loaded, so a graph compile on a cold cache, which
MAX does in this process, is reported apart), segments, text length. The audio is built in memory
(not committed); the engine sees it as one long recording.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

import max_whisper as mw


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--speech", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "speech")
    args = p.parse_args()

    model = mw.load_model(args.model)
    peak_with_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak RSS (VmHWM) to the current RSS
    lecture = mw.load_audio(args.speech / "lecture.flac")
    target = int(args.minutes * 60 * mw.audio.SAMPLE_RATE)
    audio = np.resize(lecture, target)  # repeats the lecture to the target length
    del lecture
    start = time.perf_counter()
    result = model.transcribe(audio)
    wall = time.perf_counter() - start
    print(json.dumps({
        "model": args.model, "audio_s": round(target / mw.audio.SAMPLE_RATE, 1), "wall_s": round(wall, 1),
        "realtime_x": round(target / mw.audio.SAMPLE_RATE / wall, 1),
        "peak_rss_mib": round(_status_kib("VmHWM") / 1024),
        "peak_rss_with_model_load_mib": round(max(peak_with_load, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)),
        "segments": len(result["segments"]),
        "last_segment_end_s": result["segments"][-1]["end"] if result["segments"] else None,
        "text_chars": len(result["text"]),
    }))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


if __name__ == "__main__":
    main()
