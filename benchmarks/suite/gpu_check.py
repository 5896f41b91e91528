"""GPU check in one run on a GPU machine: correctness against the CPU fp32 engine, then where the time goes.

    python -m benchmarks.suite.gpu_check --speech DIR --output DIR [--dtypes float32,float16] [--bench]

1. CPU fp32 MAX engine: greedy tokens on every short clip (with and without timestamps) and the
   lecture transcript (the yardstick).
2. For each GPU dtype: compile time per graph (cold on a fresh machine), the same tokens
   (equal or not, per clip), the lecture's WER next to the CPU fp32 engine's, and the steady state:
   encoder per 30 s window, decoder per token (batch 1), and a lecture transcription split into
   time inside MAX graphs and the rest (host-side decoding rules, copies, Python).
3. With --bench: `max-whisper bench lecture.flac --backends reference,transformers,max --devices gpu` into
   --output/bench (JSON, Markdown, PNG), with the first of --dtypes for the max backend.
Writes gpu_check.json to --output and prints it. On a fresh machine the cold compile (about 7 min
on an H100) and the bench (about 2.5 min) can exceed one 10-minute device call: then run it twice,
the second time with --bench and --dtypes float32 only (the compile is cached by then).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import max_whisper as mw
from benchmarks.common import (add_model_args, add_output_arg, add_speech_arg, first_window, load, machine,
                               median_ms, parser, references, timed, write_json)
from max_whisper import rules
from max_whisper.bench import word_error_rate


def clip_tokens(model: mw.WhisperModel, speech: Path, clips: list[str]) -> dict:
    """Greedy tokens of each clip's first window, with and without timestamps."""
    out = {}
    for clip in clips:
        mel = first_window(mw.load_audio(speech / clip), model.dims.n_mels)
        for wt in (True, False):
            out[f"{clip}|{'notimestamps' if wt else 'timestamps'}"] = model.decode(
                mel, mw.DecodingOptions(without_timestamps=wt)).tokens
    return out


def steady_state(model: mw.WhisperModel, lecture: np.ndarray) -> dict:
    s, tok = model.session, model.tokenizer()
    mel = first_window(lecture, model.dims.n_mels)[None]
    features = model.embed_audio(mel)
    _, encoder = timed(lambda: s.to_host(model.embed_audio(mel)), 20)  # the copy to the host ends the timing
    run = model.decoder.start(features, np.array([0]))
    run.logits(np.array([list(tok.sot_sequence_including_notimestamps)]))
    the = np.array([[tok.encode(" the")[0]]])
    _, step = timed(lambda: run.logits(the), 100)  # logits to the host
    # end of text, timestamp rules on, no timestamp yet
    rule_state = rules.columns(rules.STATE, 1, eot=tok.eot, ts_rule=1, last_was_ts=0, penultimate_was_ts=1,
                               last_ts=-1)

    def greedy_call() -> list:
        run.offset = 3  # each call runs its steps from position 3
        return run.greedy(the, rule_state)  # only the chosen tokens to the host

    choices, greedy = timed(greedy_call, 100)  # a recorded call makes STEPS_PER_CALL steps on a GPU
    model.transcribe(lecture, temperature=0.0)  # warm-up
    g0, t0 = model.max_graph_seconds(), time.perf_counter()
    result = model.transcribe(lecture, temperature=0.0)
    wall = time.perf_counter() - t0
    graph = model.max_graph_seconds() - g0
    return {"encoder_window_ms_median": median_ms(encoder),
            "decoder_step_ms_median": median_ms(step),
            "decoder_greedy_step_ms_median": median_ms([t / len(choices) for t in greedy], 4),
            "lecture_wall_s": wall, "lecture_in_max_graphs_s": graph, "lecture_rest_s": wall - graph,
            "graph_calls_total": dict(s.timings.calls), "lecture_text": result["text"]}


def main() -> None:
    p = parser(__doc__)
    add_model_args(p, devices=("gpu", "cpu"))  # cpu only to try the script out
    add_speech_arg(p)
    add_output_arg(p)
    p.add_argument("--dtypes", default="float32,float16")
    p.add_argument("--cpu-reference", type=Path, default=None,
                   help="the CPU fp32 yardstick from an earlier --cpu-only run (default: compute it here)")
    p.add_argument("--cpu-only", action="store_true", help="compute the CPU fp32 yardstick and stop")
    p.add_argument("--bench", action="store_true", help="then run max-whisper bench on the device")
    p.add_argument("--skip-check", action="store_true", help="with --bench: only the bench")
    p.add_argument("--bench-backends", default="reference,transformers,max")
    p.add_argument("--batch-size", default=None, help="bench: also the max backend's throughput mode")
    args = p.parse_args()
    refs = references(args.speech)
    clips = sorted(c for c in refs if c != "lecture.flac")
    lecture = mw.load_audio(args.speech / "lecture.flac")
    report: dict = {"model": args.model, "machine": machine()}

    if args.cpu_reference:
        report["cpu_fp32"] = json.loads(args.cpu_reference.read_text())
    else:
        cpu = mw.load_model(args.model, device="cpu")
        assert isinstance(cpu, mw.WhisperModel)  # the max backend
        tokens = clip_tokens(cpu, args.speech, clips)
        text = cpu.transcribe(lecture, temperature=0.0)["text"]
        report["cpu_fp32"] = {"machine": machine(), "tokens": tokens, "lecture_text": text,
                              "lecture_wer": word_error_rate([refs["lecture.flac"]], [text])[0]}
        del cpu
    cpu_tokens, cpu_text = report["cpu_fp32"]["tokens"], report["cpu_fp32"]["lecture_text"]
    if args.cpu_only:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "cpu_fp32_reference.json").write_text(json.dumps(report["cpu_fp32"], indent=1) + "\n")
        return

    for dtype in [] if args.skip_check else args.dtypes.split(","):
        t = time.perf_counter()
        gpu = load(args, dtype)
        entry = {"load_and_compile_s": time.perf_counter() - t,
                 "compile_s_per_graph": dict(gpu.session.timings.compile), "graph_sources": dict(gpu.session.sources)}
        tokens = clip_tokens(gpu, args.speech, clips)
        entry["tokens_equal_cpu_fp32"] = {k: tokens[k] == v for k, v in cpu_tokens.items()}
        entry["all_tokens_equal"] = all(entry["tokens_equal_cpu_fp32"].values())
        entry.update(steady_state(gpu, lecture))
        entry["lecture_wer"] = word_error_rate([refs["lecture.flac"]], [entry["lecture_text"]])[0]
        entry["lecture_text_equal_cpu_fp32"] = entry.pop("lecture_text") == cpu_text
        report[f"gpu_{dtype}"] = entry
        print(json.dumps({dtype: entry}, indent=1), flush=True)
        del gpu

    if not args.skip_check:
        write_json(args.output / "gpu_check.json", report)
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
