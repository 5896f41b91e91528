"""Peak memory of a one-hour transcription: the lecture repeated to 60 minutes, tiny.en, CPU, greedy.

    python -m benchmarks.suite.long_audio_memory [--minutes 60] [--speech tests/speech]

Prints one JSON line: audio seconds, wall seconds, peak RSS (MiB) of this process while transcribing
(the high-water mark is reset after the model is loaded, so a graph compile on a cold cache, which
MAX does in this process, is reported apart), segments, text length. The audio is built in memory
(not committed); the engine sees it as one long recording. Linux only (/proc/self).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np

from benchmarks.common import add_model_args, add_speech_arg, load, parser
from max_whisper import load_audio
from max_whisper.audio import SAMPLE_RATE


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    add_speech_arg(p)
    p.add_argument("--minutes", type=float, default=60.0)
    args = p.parse_args()

    model = load(args)
    peak_with_load = _peak_rss_mib()
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak RSS (VmHWM) to the current RSS
    lecture = load_audio(args.speech / "lecture.flac")
    target = int(args.minutes * 60 * SAMPLE_RATE)
    audio = np.resize(lecture, target)  # repeats the lecture to the target length
    del lecture
    start = time.perf_counter()
    result = model.transcribe(audio)
    wall = time.perf_counter() - start
    print(json.dumps({
        "model": args.model, "audio_s": round(target / SAMPLE_RATE, 1), "wall_s": round(wall, 1),
        "realtime_x": round(target / SAMPLE_RATE / wall, 1),
        "peak_rss_mib": round(_status_kib("VmHWM") / 1024),
        "peak_rss_with_model_load_mib": round(max(peak_with_load, _peak_rss_mib())),
        "segments": len(result["segments"]),
        "last_segment_end_s": result["segments"][-1]["end"] if result["segments"] else None,
        "text_chars": len(result["text"]),
    }))


def _peak_rss_mib() -> float:
    """The process's peak RSS since it started (getrusage ignores the VmHWM reset)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


if __name__ == "__main__":
    main()
