"""The engine's Silero VAD (NumPy) against faster-whisper's (the same v6 weights on onnxruntime, its own
calling code): speed on one CPU core and agreement of speech probabilities and regions.

    python -m benchmarks.suite.vad_check [--seconds 600] [--runs 5] [--output benchmarks/results/vad]

Audio: every recording in tests/speech and tests/audio, one after another, repeated to --seconds (the same
array for both). Speed: each engine in a process of its own, BLAS and onnxruntime on one thread, median of
--runs calls after a warm-up, as x real time. Agreement, per recording: the largest difference of speech
probabilities over all windows but the last (faster-whisper zeroes its last window's final 64 samples),
and whether faster-whisper's `get_speech_timestamps` finds the same regions (default options, and its
batched pipeline's: 30 s, 160 ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, SPEECH, command, machine, parser, write_json
from max_whisper import load_audio
from max_whisper.audio import SAMPLE_RATE

FILES = sorted(SPEECH.glob("*.wav")) + sorted(SPEECH.glob("*.flac")) + sorted((REPO / "tests" / "audio").glob("*.*"))
FILES = [f for f in FILES if f.suffix in (".wav", ".flac")]


def long_audio(seconds: float) -> np.ndarray:
    joined = np.concatenate([load_audio(f) for f in FILES])
    return np.resize(joined, int(seconds * SAMPLE_RATE))


def time_engine(engine: str, seconds: float, runs: int) -> dict:
    from threadpoolctl import threadpool_limits

    audio = long_audio(seconds)
    if engine == "max-whisper":
        from max_whisper.vad import silero_vad

        model = silero_vad()

        def call():
            return model(audio)
        version = "max-whisper NumPy " + np.__version__
    else:
        import faster_whisper
        import onnxruntime
        from faster_whisper.vad import get_vad_model

        model = get_vad_model()  # its session: one intra-op and one inter-op thread
        padded = np.pad(audio, (0, 512 - len(audio) % 512))

        def call():
            return model(padded.copy())  # it writes into its input
        version = f"faster-whisper {faster_whisper.__version__}, onnxruntime {onnxruntime.__version__}"
    walls = []
    with threadpool_limits(1):
        call()
        for _ in range(runs):
            start = time.perf_counter()
            call()
            walls.append(time.perf_counter() - start)
    wall = statistics.median(walls)
    return {"engine": version, "wall_s": round(wall, 4), "x_real_time": round(seconds / wall, 1), "runs": runs}


def agreement() -> list[dict]:
    from faster_whisper.vad import VadOptions as TheirOptions
    from faster_whisper.vad import get_speech_timestamps, get_vad_model

    from max_whisper.vad import VadOptions, silero_vad, speech_regions

    rows = []
    for path in FILES:
        audio = load_audio(path)
        ours = silero_vad()(audio)
        theirs = get_vad_model()(np.pad(audio, (0, 512 - len(audio) % 512)))
        row = {"file": path.name, "seconds": round(len(audio) / SAMPLE_RATE, 2), "windows": len(ours),
               "max_abs_diff": float(np.abs(ours[:-1] - theirs[:len(ours) - 1]).max()) if len(ours) > 1 else 0.0}
        for name, options in (("default", {}), ("batched", {"max_speech_duration_s": 30, "min_silence_duration_ms": 160})):
            found = [(r["start"], r["end"]) for r in get_speech_timestamps(audio, TheirOptions(**options))]
            row[f"regions_{name}"] = len(found)
            row[f"regions_equal_{name}"] = speech_regions(audio, VadOptions(**options), ours) == found
        rows.append(row)
    return rows


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--output", type=Path, default=RESULTS / "vad")
    p.add_argument("--engine", help=argparse.SUPPRESS)  # a child process's one engine
    args = p.parse_args()
    if args.engine:
        print(json.dumps(time_engine(args.engine, args.seconds, args.runs)))
        return
    speed = {}
    for engine in ("max-whisper", "faster-whisper"):
        done = subprocess.run([sys.executable, "-m", "benchmarks.suite.vad_check", "--engine", engine, "--seconds",
                               str(args.seconds), "--runs", str(args.runs)], capture_output=True, text=True, check=True)
        speed[engine] = json.loads(done.stdout.strip().splitlines()[-1])
        print(engine, speed[engine], flush=True)
    rows = agreement()
    report = {"command": command(), "machine": machine(), "audio_s": args.seconds, "speed": speed,
              "max_over_faster_whisper_speed": round(speed["max-whisper"]["x_real_time"]
                                                     / speed["faster-whisper"]["x_real_time"], 2),
              "agreement": rows,
              "largest_probability_difference": max(r["max_abs_diff"] for r in rows),
              "regions_equal": all(r["regions_equal_default"] and r["regions_equal_batched"] for r in rows)}
    write_json(args.output / "results.json", report)
    print(json.dumps({k: v for k, v in report.items() if k != "agreement"}, indent=1))


if __name__ == "__main__":
    main()
