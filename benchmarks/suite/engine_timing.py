"""Compile time per graph, steady-state encoder time and per-token decoder time of the MAX engine.

    python -m benchmarks.suite.engine_timing --model tiny.en --device cpu

Compile times depend on the on-disk cache (~/.cache/modular) and on whether the package ships the graphs
(`graph_sources`): run once on a fresh machine for the cold figure, again for the warm one. Steady state:
median of --runs after one warm-up. Prints JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import add_model_args, first_window, load, machine, median_ms, parser, timed
from max_whisper import load_audio
from max_whisper.cli import sample_path


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--audio", type=Path, default=sample_path(), help="default: the bundled jfk.wav")
    p.add_argument("--runs", type=int, default=10, help="encoder calls to time")
    p.add_argument("--steps", type=int, default=100, help="decoder steps to time")
    args = p.parse_args()

    start = time.perf_counter()
    model = load(args, args.dtype)
    load_s = time.perf_counter() - start
    mel = first_window(load_audio(args.audio), model.dims.n_mels)[None]
    features, encoder = timed(lambda: model.embed_audio(mel), args.runs, warmup=1)

    tok = model.tokenizer()
    run = model.decoder.start(features, np.array([0]))
    run.logits(np.array([list(tok.sot_sequence_including_notimestamps)]))
    the = np.array([[tok.encode(" the")[0]]])
    _, steps = timed(lambda: run.logits(the), args.steps)

    print(json.dumps({
        "machine": machine(), "model": args.model, "device": args.device, "dtype": args.dtype,
        "audio": args.audio.name, "load_and_compile_s": round(load_s, 2),
        "compile_s_per_graph": {k: round(v, 2) for k, v in model.session.timings.compile.items()},
        "graph_sources": model.session.sources,
        "encoder_window_s_median": round(median_ms(encoder) / 1000, 4),
        "decoder_step_ms_median": median_ms(steps, 2),
        "decoder_step_ms_at_context": f"steps 1..{args.steps} after a 3-token prompt",
    }, indent=2))


if __name__ == "__main__":
    main()
