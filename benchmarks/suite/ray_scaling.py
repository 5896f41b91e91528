"""A corpus on a Ray cluster of one machine: audio hours per GPU hour on 1 GPU and on 2 (issue 22's target:
2 GPUs at least 1.8x the audio hours per hour of 1).

    python -m benchmarks.suite.ray_scaling [--files 240] [--gpus 1,2] [--files-at-once 16] [--model tiny.en]

The corpus: --files recordings made from the repository's test speech (tests/speech), each every clip of it
one after another in a rotated order, started after its own 0-990 ms of silence (copies and shifted variants:
about 160 s each). Each GPU count runs in a process of its own, one after another in this run: a local Ray
cluster started by `distributed.run_corpus`, the front end in Ray tasks on the host's cores, one engine actor
per GPU transcribing --files-at-once files at a time. Reported per run: the job's wall time from the cluster's
start of work to the last file (the cluster's own start not included; actors starting and loading the engine
included), the time from the call to the first result (the cluster's start included), and the steady rate (the audio of every file after the first over the time from the first
result to the last). Texts are compared across runs (on a GPU, files batched with different neighbours can
round differently: see README's --files-at-once).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, SPEECH, command, machine, parser, write_json, write_wav
from max_whisper import load_audio
from max_whisper.audio import SAMPLE_RATE

CLIPS = sorted(p for p in SPEECH.iterdir() if p.suffix in (".wav", ".flac"))


def make_corpus(folder: Path, n: int) -> list[Path]:
    clips = [load_audio(p) for p in CLIPS]
    files = []
    for i in range(n):
        shift = np.zeros(int((i * 0.037) % 1.0 * SAMPLE_RATE), np.float32)
        k = i % len(clips)
        audio = np.concatenate([shift, *clips[k:], *clips[:k]])
        path = folder / f"rec{i:04d}.wav"
        write_wav(path, audio)
        files.append(path)
    return files


def one_run(corpus: Path, out: Path, gpus: int, files_at_once: int, model: str, device: str) -> dict:
    """In this process: the corpus on a local cluster of `gpus` engine actors; with each file's text."""
    from max_whisper.distributed import RESULTS as TABLE
    from max_whisper.distributed import CorpusJob, ResultsTable, run_corpus

    times: list[tuple[float, float]] = []
    start = time.perf_counter()
    summary = run_corpus(sorted(corpus.glob("*.wav")), CorpusJob(model=model, device=device, workers=gpus,
                                                               files_at_once=files_at_once),
                         out, formats=["txt"], on_result=lambda row: times.append((time.perf_counter(),
                                                                                      row["duration"])))
    first = times[0][0]
    steady_audio = sum(d for _, d in times[1:])
    steady_s = times[-1][0] - first
    return {"gpus": gpus, "files": summary.transcribed, "failed": summary.failed,
            "audio_h": round(summary.audio_seconds / 3600, 3), "job_wall_s": round(summary.wall_s, 2),
            "first_result_s": round(first - start, 2),
            "audio_h_per_gpu_h": round(summary.audio_seconds / summary.wall_s / gpus, 1),
            "audio_h_per_h": round(summary.audio_seconds / summary.wall_s, 1),
            "steady_audio_h_per_h": round(steady_audio / steady_s, 1) if steady_s > 0 else None,
            "texts": {Path(k).name: row["text"] for k, row in ResultsTable(out / TABLE).latest().items()}}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--files", type=int, default=240)
    p.add_argument("--gpus", default="1,2", help="GPU counts, each run in a process of its own")
    p.add_argument("--files-at-once", type=int, default=16)
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--output", type=Path, default=RESULTS / "ray")
    p.add_argument("--device", default="gpu", help="gpu (default); cpu runs the same with CPU workers, to try it")
    p.add_argument("--one", nargs=2, metavar=("CORPUS", "WORKERS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as out:
            print(json.dumps(one_run(Path(args.one[0]), Path(out), int(args.one[1]), args.files_at_once, args.model,
                                     args.device)))
        return
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        make_corpus(corpus, args.files)
        for gpus in [int(g) for g in args.gpus.split(",")]:
            done = subprocess.run([sys.executable, "-m", "benchmarks.suite.ray_scaling", "--one", str(corpus),
                                   str(gpus), "--files-at-once", str(args.files_at_once), "--model", args.model,
                                   "--device", args.device],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"error: the {gpus}-GPU run failed: {done.stderr.strip().splitlines()[-1:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "texts"}), flush=True)
    texts = [run.pop("texts") for run in runs]
    report = {"command": command(), "machine": machine(), "model": args.model, "files_at_once": args.files_at_once,
              "corpus": f"{args.files} recordings of the test speech's clips, rotated and shifted", "runs": runs}
    report["texts_differing_from_the_first_run"] = [sum(t[k] != texts[0].get(k) for k in t) for t in texts]
    if len(runs) == 2:
        report["scaling_job"] = round(runs[1]["audio_h_per_h"] / runs[0]["audio_h_per_h"], 2)
        report["scaling_steady"] = round(runs[1]["steady_audio_h_per_h"] / runs[0]["steady_audio_h_per_h"], 2)
    write_json(args.output / "scaling.json", report)
    print(json.dumps({k: v for k, v in report.items() if k.startswith("scaling")}))


if __name__ == "__main__":
    main()
