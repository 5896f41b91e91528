"""Where the host time of transcribing files one by one goes: the bench's "rest" (wall time less the time
inside MAX graphs), by function, from cProfile.

    python -m benchmarks.investigations.host_time --device gpu --folder DIR [--runs 2] [--output OUT]

Decodes every WAV file of DIR first (as `max-whisper bench` does), transcribes them all once to warm up,
then `--runs` times one by one under cProfile (greedy, temperature 0, as the bench). Prints wall, graph and
host milliseconds per file, and the functions with the most host time of their own, their cumulative time
beside it. Left out of that table: the calls that run or wait for the graphs (`GRAPH_CALLS`; the recorded
steps' replay and its wait show as the own time of `StepSlot.step`). cProfile's overhead adds to the host
time, and Python 3.12's profiles count the log-mel's worker threads too.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from pathlib import Path

from benchmarks.common import add_model_args, add_output_arg, command, load, machine, parser, write_json
from max_whisper.audio import load_audio

# Functions whose own time is the graphs' execution or a wait for it: (file, function name).
GRAPH_CALLS = {("api.py", "_Model_execute"), ("decoders.py", "step"), ("session.py", "synchronize")}


def main() -> None:
    p = parser(__doc__)
    add_model_args(p, devices=("gpu", "cpu"))
    p.add_argument("--folder", type=Path, required=True, help="a folder of WAV files (benchmarks.suite.many_files)")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--top", type=int, default=30)
    add_output_arg(p, default=Path("host_time"))
    args = p.parse_args()
    model = load(args)
    audios = [load_audio(f) for f in sorted(args.folder.glob("*.wav"))]
    options = {"temperature": 0.0}
    for audio in audios:
        model.transcribe(audio, **options)
    profile = cProfile.Profile()
    walls, graphs = [], []
    for _ in range(args.runs):
        g0, t0 = model.max_graph_seconds(), time.perf_counter()
        profile.enable()
        for audio in audios:
            model.transcribe(audio, **options)
        profile.disable()
        walls.append(time.perf_counter() - t0)
        graphs.append(model.max_graph_seconds() - g0)
    n = len(audios) * args.runs
    stats = pstats.Stats(profile)
    rows = []
    for (path, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if (Path(path).name, name) not in GRAPH_CALLS and "replay" not in name and "synchronize" not in name:
            rows.append({"function": f"{Path(path).name}:{line}({name})", "calls_per_file": calls / n,
                         "own_ms_per_file": 1e3 * own / n, "cumulative_ms_per_file": 1e3 * cumulative / n})
    rows.sort(key=lambda r: -r["own_ms_per_file"])
    per_file = {"wall_ms": 1e3 * sum(walls) / n, "graph_ms": 1e3 * sum(graphs) / n,
                "host_ms": 1e3 * (sum(walls) - sum(graphs)) / n}
    print(f"{len(audios)} files x {args.runs} runs: " + ", ".join(f"{k} {v:.1f}" for k, v in per_file.items()))
    print(f"{'own ms':>8} {'cum ms':>8} {'calls':>7}  function (per file)")
    for r in rows[:args.top]:
        print(f"{r['own_ms_per_file']:8.2f} {r['cumulative_ms_per_file']:8.2f} {r['calls_per_file']:7.1f}  {r['function']}")
    write_json(args.output / "host_time.json", {
        "machine": machine(), "command": command(), "model": args.model, "device": args.device,
        "files": len(audios), "runs": args.runs, "per_file": per_file, "functions": rows[:200]})


if __name__ == "__main__":
    main()
