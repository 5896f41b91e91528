"""Where the time of `--files-at-once` goes: each batch the engine thread ran (when its decode started and
ended, how many windows) and each file's host work before its first window (audio decode, log-mel), over
runs of a set of files (`benchmarks.suite.many_files`).

    python -m benchmarks.investigations.files_at_once_timeline --device gpu --folder DIR [--files-at-once 64]
        [--runs 3] [--output OUT]

Per run: wall time; the engine thread's time decoding (the sum of its batches' decodes), between batches (from a
batch's decode to the next one's: the loops' host work, gathering, and waiting for windows); batch sizes; the
files' summed audio-decode and log-mel seconds (the log-mel is computed at a file's first window) and when the
last of them was done. The one-by-one loop over the same files is timed too, with its time inside MAX graphs,
so that host time per file shows.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from functools import cached_property
from typing import Callable

import max_whisper as mw
from benchmarks.common import add_model_args, add_output_arg, command, machine, parser, write_json
from max_whisper import batching
from max_whisper.audio import SAMPLE_RATE, load_audio
from max_whisper.batching import WindowBatcher, transcribe_files
from max_whisper.features import LogMelFeatures
from max_whisper.runtime.device import decoding_rows
from max_whisper.transcribe import TranscribeOptions


class Timeline:
    """Records the batcher's batches and the files' front ends (the module functions wrapped for a run)."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, float, int]] = []  # decode start, decode end, windows
        self.front: list[tuple[float, float, str]] = []  # start, end, what

    def install(self) -> None:
        timeline = self
        run_batch = WindowBatcher._run

        def run(batcher: WindowBatcher, batch: list) -> None:
            start = time.perf_counter()
            run_batch(batcher, batch)
            timeline.batches.append((start, time.perf_counter(), len(batch)))

        def timed(fn: Callable, what: str) -> Callable:
            def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    timeline.front.append((t0, time.perf_counter(), what))
            return wrapped

        WindowBatcher._run = run  # type: ignore[method-assign]
        batching.load_audio = timed(batching.load_audio, "audio")  # type: ignore[assignment]
        pass_one = LogMelFeatures.__dict__["_pass_one"]  # the log-mel, computed at a file's first window
        timed_pass = cached_property(timed(pass_one.func, "log-mel"))
        timed_pass.__set_name__(LogMelFeatures, "_pass_one")
        LogMelFeatures._pass_one = timed_pass  # type: ignore[assignment]

    def clear(self) -> None:
        self.batches.clear()
        self.front.clear()

    def summary(self, start: float, end: float) -> dict:
        sizes = [n for *_, n in self.batches]
        gaps = [s - e for (_, e, _), (s, _, _) in zip(self.batches, self.batches[1:])]
        return {"wall_s": round(end - start, 3), "batches": len(sizes), "windows": sum(sizes),
                "engine_decoding_s": round(sum(e - s for s, e, _ in self.batches), 3),
                "engine_between_batches_s": round(sum(gaps), 3),
                "before_first_batch_s": round(self.batches[0][0] - start, 3) if self.batches else None,
                "after_last_batch_s": round(end - self.batches[-1][1], 3) if self.batches else None,
                "batch_sizes": sizes,
                "batch_decode_ms": [round(1000 * (e - s)) for s, e, _ in self.batches],
                "gap_before_ms": [0] + [round(1000 * g) for g in gaps],
                "audio_decode_s": round(sum(e - s for s, e, w in self.front if w == "audio"), 3),
                "log_mel_s": round(sum(e - s for s, e, w in self.front if w == "log-mel"), 3),
                "last_front_end_done_s": round(max(e for _, e, _ in self.front) - start, 3) if self.front else None}


def main() -> None:
    p = parser(__doc__)
    add_model_args(p, devices=("gpu", "cpu"))
    p.add_argument("--folder", type=Path, required=True, help="a set from benchmarks.suite.many_files")
    p.add_argument("--files-at-once", type=int, default=64)
    p.add_argument("--runs", type=int, default=3)
    add_output_arg(p)
    args = p.parse_args()
    files = sorted(args.folder.glob("*.wav"))
    audio_s = sum(len(load_audio(f)) for f in files) / SAMPLE_RATE
    model = mw.load_model(args.model, device=args.device, compiled=args.compiled,
                          rows=decoding_rows(args.files_at_once))
    assert isinstance(model, mw.WhisperModel)
    options = TranscribeOptions.from_kwargs(temperature=0.0)
    timeline = Timeline()
    timeline.install()
    report: dict = {"machine": machine(), "command": command(), "model": args.model, "device": args.device,
                    "files": len(files), "audio_s": round(audio_s, 1), "files_at_once": args.files_at_once,
                    "settings": "greedy, temperature 0, timestamps", "at_once": [], "one_by_one": []}
    list(transcribe_files(model, files, args.files_at_once, options))  # warm-up
    for _ in range(args.runs):
        timeline.clear()
        start = time.perf_counter()
        done = list(transcribe_files(model, files, args.files_at_once, options))
        end = time.perf_counter()
        assert all(isinstance(r, dict) for *_, r in done)
        report["at_once"].append(timeline.summary(start, end))
    for _ in range(args.runs):
        g0, t0 = model.max_graph_seconds(), time.perf_counter()
        for f in files:
            model.transcribe(f, temperature=0.0)
        wall, graphs = time.perf_counter() - t0, model.max_graph_seconds() - g0
        report["one_by_one"].append({"wall_s": round(wall, 3), "in_graphs_s": round(graphs, 3),
                                     "host_ms_per_file": round(1000 * (wall - graphs) / len(files), 1)})
    walls = [r["wall_s"] for r in report["at_once"]]
    report["at_once_median_s"] = statistics.median(walls)
    report["at_once_realtime_x"] = round(audio_s / statistics.median(walls), 1)
    report["one_by_one_median_s"] = statistics.median(r["wall_s"] for r in report["one_by_one"])
    write_json(args.output / "files_at_once_timeline.json", report)
    print({k: v for k, v in report.items() if k not in ("at_once", "machine")})
    for r in report["at_once"]:
        print({k: v for k, v in r.items() if not isinstance(v, list)})
    print("batch sizes", report["at_once"][-1]["batch_sizes"])
    print("decode ms", report["at_once"][-1]["batch_decode_ms"])
    print("gap ms", report["at_once"][-1]["gap_before_ms"])


if __name__ == "__main__":
    main()
