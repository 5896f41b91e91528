"""Where one transcription's time goes: seconds per MAX graph and the host functions that took the most.

    python benchmarks/profile_lecture.py tests/speech/lecture.flac --device gpu [--batch-size 16]

One warm-up transcription, then one under cProfile (which slows the Python parts somewhat); the graph
times are the engine's own (each call timed to completion). Prints JSON.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time

import max_whisper as mw
from max_whisper.bench import _machine


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("audio")
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    model = mw.load_model(args.model, device=args.device)
    audio = mw.load_audio(args.audio)
    model.transcribe(audio, temperature=0.0, batch_size=args.batch_size)
    timings = model.graphs.timings
    timings.execute.clear()
    timings.calls.clear()
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    model.transcribe(audio, temperature=0.0, batch_size=args.batch_size)
    profile.disable()
    wall = time.perf_counter() - start
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(args.top)
    print(json.dumps({"machine": _machine(), "audio": args.audio, "model": args.model,
                      "batch_size": args.batch_size, "wall_s": wall,
                      "graphs_s": {k: round(v, 4) for k, v in timings.execute.items()},
                      "graph_calls": dict(timings.calls), "host_top": text.getvalue().splitlines()}, indent=1))


if __name__ == "__main__":
    main()
