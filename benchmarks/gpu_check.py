"""GPU check in one run on a GPU machine: correctness against the CPU fp32 engine, then where the time goes.

    python benchmarks/gpu_check.py --speech DIR --output DIR [--dtypes float32,float16] [--bench]

1. CPU fp32 MAX engine: greedy tokens on every short clip (with and without timestamps) and the
   lecture transcript (the yardstick).
2. For each GPU dtype: compile time per graph (cold on a fresh machine), the same tokens
   (equal or not, per clip), the lecture's WER next to the CPU fp32 engine's, and the steady state:
   encoder per 30 s window, decoder per token (batch 1), and a lecture transcription split into
   time inside MAX graphs and the rest (host-side decoding rules, copies, Python).
3. With --bench: `max-whisper bench lecture.flac --backends reference,hybrid,max --devices gpu` into
   --output/bench (JSON, Markdown, PNG), with the first of --dtypes for the max backend.
Writes gpu_check.json to --output and prints it. On a fresh machine the cold compile (about 7 min
on an H100) and the bench (about 2.5 min) can exceed one 10-minute device call: then run it twice,
the second time with --bench and --dtypes float32 only (the compile is cached by then).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import max_whisper as mw
from max_whisper.bench import word_error_rate
from max_whisper.model import STEPS_PER_CALL


def clip_tokens(model, speech: Path, clips: list[str]) -> dict:
    out = {}
    for clip in clips:
        mel = mw.pad_or_trim(mw.log_mel_spectrogram(mw.load_audio(speech / clip)), 3000)
        for wt in (True, False):
            out[f"{clip}|{'notimestamps' if wt else 'timestamps'}"] = model.decode(
                mel, mw.DecodingOptions(without_timestamps=wt)).tokens
    return out


def steady_state(model, lecture: np.ndarray) -> dict:
    g = model.graphs
    mel = mw.pad_or_trim(mw.log_mel_spectrogram(lecture[: 30 * 16000]), 3000)[None]
    g.encode(mel)
    enc = []
    for _ in range(20):
        t = time.perf_counter()
        features = g.encode(mel)
        g.to_host(features)  # wait for the device: the copy ends the timing
        enc.append(time.perf_counter() - t)
    state = g.start_decoding(features, np.array([0]))
    state.step(np.array([[50257, 50362]]))
    step, greedy = [], []
    for _ in range(100):
        t = time.perf_counter()
        state.step(np.array([[262]]))  # logits to the host
        step.append(time.perf_counter() - t)
    rule_state = np.array([[50256, 1, 0, 1, -1]])  # end of text, timestamp rules on, no timestamp yet
    for _ in range(100):
        state.offset = 3  # each call runs STEPS_PER_CALL steps from position 3
        t = time.perf_counter()
        state.steps_greedy(np.array([[262]]), rule_state)  # only the chosen tokens to the host
        greedy.append((time.perf_counter() - t) / STEPS_PER_CALL)
    model.transcribe(lecture, temperature=0.0)  # warm-up
    g0, t0 = model.max_graph_seconds(), time.perf_counter()
    result = model.transcribe(lecture, temperature=0.0)
    wall = time.perf_counter() - t0
    graph = model.max_graph_seconds() - g0
    calls = dict(g.timings.calls)
    return {"encoder_window_ms_median": 1000 * statistics.median(enc),
            "decoder_step_ms_median": 1000 * statistics.median(step),
            "decoder_greedy_step_ms_median": 1000 * statistics.median(greedy),
            "lecture_wall_s": wall, "lecture_in_max_graphs_s": graph, "lecture_rest_s": wall - graph,
            "graph_calls_total": calls, "lecture_text": result["text"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--speech", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--dtypes", default="float32,float16")
    p.add_argument("--cpu-reference", type=Path, default=None,
                   help="the CPU fp32 yardstick from an earlier --cpu-only run (default: compute it here)")
    p.add_argument("--cpu-only", action="store_true", help="compute the CPU fp32 yardstick and stop")
    p.add_argument("--device", default="gpu", help="gpu (default); cpu only to try the script out")
    p.add_argument("--bench", action="store_true", help="then run max-whisper bench on the device")
    p.add_argument("--skip-check", action="store_true", help="with --bench: only the bench")
    p.add_argument("--bench-backends", default="reference,transformers,max")
    p.add_argument("--batch-size", default=None, help="bench: also the max backend's throughput mode")
    p.add_argument("--compiled", action="append", default=None,
                   help="folders from `max-whisper compile --device gpu` (skips the compile on the device)")
    args = p.parse_args()
    with open(args.speech / "refs.tsv", newline="") as f:
        refs = {r["file"]: r["reference"] for r in csv.DictReader(f, delimiter="\t")}
    clips = sorted(c for c in refs if c != "lecture.flac")
    lecture = mw.load_audio(args.speech / "lecture.flac")
    report: dict = {"model": args.model, "machine": mw.bench._machine()}

    if args.cpu_reference:
        report["cpu_fp32"] = json.loads(args.cpu_reference.read_text())
    else:
        cpu = mw.load_model(args.model, device="cpu")
        tokens = clip_tokens(cpu, args.speech, clips)
        text = cpu.transcribe(lecture, temperature=0.0)["text"]
        report["cpu_fp32"] = {"machine": mw.bench._machine(), "tokens": tokens, "lecture_text": text,
                              "lecture_wer": word_error_rate([refs["lecture.flac"]], [text])[0]}
        del cpu
    cpu_tokens, cpu_text = report["cpu_fp32"]["tokens"], report["cpu_fp32"]["lecture_text"]
    if args.cpu_only:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "cpu_fp32_reference.json").write_text(json.dumps(report["cpu_fp32"], indent=1) + "\n")
        return

    for dtype in [] if args.skip_check else args.dtypes.split(","):
        t = time.perf_counter()
        gpu = mw.load_model(args.model, device=args.device, dtype=dtype, compiled=args.compiled)
        entry = {"load_and_compile_s": time.perf_counter() - t,
                 "compile_s_per_graph": dict(gpu.graphs.timings.compile)}
        tokens = clip_tokens(gpu, args.speech, clips)
        entry["tokens_equal_cpu_fp32"] = {k: tokens[k] == v for k, v in cpu_tokens.items()}
        entry["all_tokens_equal"] = all(entry["tokens_equal_cpu_fp32"].values())
        entry.update(steady_state(gpu, lecture))
        entry["lecture_wer"] = word_error_rate([refs["lecture.flac"]], [entry["lecture_text"]])[0]
        entry["lecture_text_equal_cpu_fp32"] = entry.pop("lecture_text") == cpu_text
        report[f"gpu_{dtype}"] = entry
        print(json.dumps({dtype: entry}, indent=1), flush=True)
        del gpu

    args.output.mkdir(parents=True, exist_ok=True)
    if not args.skip_check:
        (args.output / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
    if args.bench:
        cmd = [sys.executable, "-m", "max_whisper.cli", "bench", str(args.speech / "lecture.flac"),
               "--backends", args.bench_backends, "--devices", args.device, "--runs", "5",
               "--dtype", args.dtypes.split(",")[0], "--output", str(args.output / "bench")]
        cmd += ["--batch-size", args.batch_size] if args.batch_size else []
        cmd += [a for d in args.compiled or [] for a in ("--compiled", d)]
        sys.exit(subprocess.run(cmd).returncode)


if __name__ == "__main__":
    main()
