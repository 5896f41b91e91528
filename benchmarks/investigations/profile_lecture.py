"""Where one transcription's time goes: seconds per MAX graph and the host functions that took the most.

    python -m benchmarks.investigations.profile_lecture --audio tests/speech/lecture.flac --device gpu [--batch-size 16]

One warm-up transcription, then one under cProfile (which slows the Python parts somewhat); the graph
times are the engine's own (each call timed to completion). Prints JSON.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import time
from pathlib import Path

from benchmarks.common import SPEECH, add_model_args, load, machine, parser
from max_whisper import load_audio


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--audio", type=Path, default=SPEECH / "lecture.flac", help="default: the repository's lecture.flac")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--top", type=int, default=20, help="host functions to list")
    args = p.parse_args()
    model = load(args)
    audio = load_audio(args.audio)
    model.transcribe(audio, temperature=0.0, batch_size=args.batch_size)
    timings = model.session.timings
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
    print(json.dumps({"machine": machine(), "audio": str(args.audio), "model": args.model,
                      "batch_size": args.batch_size, "wall_s": wall,
                      "graphs_s": {k: round(v, 4) for k, v in timings.execute.items()},
                      "graph_calls": dict(timings.calls), "host_top": text.getvalue().splitlines()}, indent=1))


if __name__ == "__main__":
    main()
