"""Compile time per graph, steady-state encoder time and per-token decoder time of the MAX engine.

    python benchmarks/engine_timing.py --model tiny.en --device cpu

Compile times depend on the on-disk cache (~/.cache/modular): run once on a fresh machine for the
cold figure, again for the warm one. Steady state: median of --runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

import max_whisper as mw
from max_whisper.cli import sample_path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--audio", default=str(sample_path()))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--steps", type=int, default=100, help="decoder steps to time")
    args = p.parse_args()

    start = time.perf_counter()
    model = mw.load_model(args.model, device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - start
    mel = mw.pad_or_trim(mw.log_mel_spectrogram(mw.load_audio(args.audio), model.dims.n_mels), 3000)[None]
    graphs = model.graphs

    graphs.encode(mel)
    enc = []
    for _ in range(args.runs):
        t = time.perf_counter()
        features = graphs.encode(mel)
        enc.append(time.perf_counter() - t)

    tok = model.tokenizer()
    state = graphs.start_decoding(features, np.array([0]))
    state.step(np.array([list(tok.sot_sequence_including_notimestamps)]))
    step = []
    for i in range(args.steps):
        t = time.perf_counter()
        state.step(np.array([[tok.encode(" the")[0]]]))
        step.append(time.perf_counter() - t)

    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "model": args.model, "device": args.device, "dtype": args.dtype, "audio": os.path.basename(args.audio),
        "load_and_compile_s": round(load_s, 2),
        "compile_s_per_graph": {k: round(v, 2) for k, v in graphs.timings.compile.items()},
        "encoder_window_s_median": round(statistics.median(enc), 4),
        "decoder_step_ms_median": round(1000 * statistics.median(step), 2),
        "decoder_step_ms_at_context": f"steps 1..{args.steps} after a 3-token prompt",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
