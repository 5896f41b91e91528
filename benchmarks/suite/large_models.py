"""The engine against transformers fp16 on the large architectures, random weights of their true shapes
(issue 19's targets; no large weights are installable here).

    python -m benchmarks.suite.large_models --models large-v3-turbo large-v3 --dtype bfloat16 \
        [--compiled DIR ...] [--profile] [--output benchmarks/results/large_models]

For each model: transformers initialises it (seed 0) and saves it as a Hugging Face folder, which both
engines load, each in a process of its own, one after the other:
- encoder: milliseconds per 30 s window of noise-like log-mel, at batch 1 and 16 (median of --runs calls);
- decoder step: milliseconds per new token at batch 1 and 16, after a 4-token prompt. transformers: one
  forward of the decoder and its output projection with its KV cache (SDPA), the argmax on the GPU; the
  engine: its recorded greedy calls (8 steps each, the token rules included), per step;
- the engine's load time per graph (compiling, or importing --compiled / shipped graphs), and each
  process's GPU memory at its end (nvidia-smi).
The bf16 floor of the encoder is its matmul FLOPs at 790 TFLOP/s (H200 dense bf16, as the issue states).
`--profile` adds the engine's kernels by GPU time (torch.profiler) for the encoder at batch 16 and one
recorded decoder call. Writes <output>/<model>.json and prints a table.
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

from benchmarks.common import RESULTS, command, machine, median_ms, parser, process_gpu_memory_mb, timed, write_json
from max_whisper.models import ARCHITECTURES
from max_whisper.weights import ModelDimensions, hf_config

BF16_TFLOPS = 790.0
BATCHES = (1, 16)
PROMPT = 4


def encoder_flops(d: ModelDimensions) -> float:
    """Multiply-adds x 2 of one 30 s window through the encoder (convolutions, projections, attention)."""
    t, w = d.n_audio_ctx, d.n_audio_state
    conv = 2 * t * d.n_mels * 3 * w + t * w * 3 * w
    layer = t * (4 * w * w + 8 * w * w) + 2 * t * t * w
    return 2.0 * (conv + d.n_audio_layer * layer)


def log_mel(batch: int, n_mels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.8, 1.2, (batch, n_mels, 3000)).astype(np.float32)


def median_call_ms(fn, runs: int, synchronize) -> tuple[float, object]:
    """Median milliseconds of `runs` calls of `fn` to completion on the device, after one untimed call (which
    also records a step); and the last call's result."""
    result, seconds = timed(lambda: (fn(), synchronize())[0], runs, warmup=1)
    return median_ms(seconds), result


def gpu_memory(device: str) -> float | None:
    return process_gpu_memory_mb() if device == "gpu" else None


def save_random_model(name: str, folder: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.WhisperConfig(**hf_config(ARCHITECTURES[name]))
    transformers.WhisperForConditionalGeneration(config).save_pretrained(str(folder))


def run_transformers(folder: Path, runs: int, device: str) -> dict:
    import torch
    import transformers

    where, dtype = ("cuda", torch.float16) if device == "gpu" else ("cpu", torch.float32)
    model = transformers.WhisperForConditionalGeneration.from_pretrained(
        str(folder), dtype=dtype, attn_implementation="sdpa").to(where).eval()
    n_mels = model.config.num_mel_bins
    out: dict = {"engine": f"transformers {transformers.__version__} {dtype} sdpa, torch {torch.__version__}"}
    sync = torch.cuda.synchronize if device == "gpu" else (lambda: None)
    with torch.inference_mode():
        for batch in BATCHES:
            mel = torch.from_numpy(log_mel(batch, n_mels)).to(where, dtype)
            ms, _ = median_call_ms(lambda: model.model.encoder(mel), runs, sync)
            out[f"encoder_ms_per_window_b{batch}"] = ms / batch
            features = model.model.encoder(mel).last_hidden_state
            prompt = torch.full((batch, PROMPT), 50258, device=where)
            first = model(encoder_outputs=(features,), decoder_input_ids=prompt, use_cache=True)
            cache = first.past_key_values
            token = first.logits[:, -1:].argmax(-1)

            def step() -> None:
                nonlocal cache, token
                result = model(encoder_outputs=(features,), decoder_input_ids=token, past_key_values=cache,
                               use_cache=True)
                cache, token = result.past_key_values, result.logits[:, -1:].argmax(-1)
                cache.crop(-1)  # back to the prompt: every step sees PROMPT + 1 keys (a view, no kernel)

            out[f"decoder_step_ms_b{batch}"], _ = median_call_ms(step, runs * 5, sync)
    out["gpu_memory_mb"] = gpu_memory(device)
    return out


def run_max(folder: Path, dtype: str, runs: int, compiled: list[str] | None, profile: bool, device: str) -> dict:
    from max_whisper import rules
    from max_whisper.runtime import GraphSession, make_decoder
    from max_whisper.runtime.encoder import Encoder
    from max_whisper.weights import load_path

    ckpt = load_path(folder)
    start = time.perf_counter()
    session = GraphSession(ckpt, device=device, dtype=dtype, compiled=compiled)
    encoder, decoder = Encoder(session), make_decoder(session)
    load_s = time.perf_counter() - start
    out: dict = {"engine": f"max-whisper {dtype}", "load_s": round(load_s, 1),
                 "load_s_per_graph": {k: round(v, 1) for k, v in session.timings.compile.items()},
                 "graph_sources": dict(session.sources)}
    sync = session.synchronize
    eot = 50257
    for batch in BATCHES:
        mel = log_mel(batch, ckpt.dims.n_mels)
        ms, _ = median_call_ms(lambda: encoder.encode(mel), runs, sync)
        out[f"encoder_ms_per_window_b{batch}"] = ms / batch
        run = decoder.start(encoder.encode(mel), np.arange(batch))
        run.logits(np.full((batch, PROMPT), 50258, np.int64))
        rule_state = rules.columns(rules.STATE, batch, eot=eot, ts_rule=0, last_was_ts=0, penultimate_was_ts=0,
                                   last_ts=-1)
        tokens = np.full((batch, 1), 440, np.int64)

        def call() -> int:
            run.offset = PROMPT  # every call runs its steps from the same position
            return len(run.greedy(tokens, rule_state))  # STEPS_PER_CALL recorded steps on a GPU, one on the CPU

        ms, steps = median_call_ms(call, runs, sync)
        out[f"decoder_step_ms_b{batch}"] = ms / steps
        if profile and batch == BATCHES[-1]:
            out["profile"] = kernel_profile(lambda: encoder.encode(mel), call, sync)
    out["gpu_memory_mb"] = gpu_memory(device)
    return out


def kernel_profile(encode, step_call, sync) -> dict:
    """The top kernels by GPU time of one encoder call and one recorded decoder call."""
    from torch.profiler import ProfilerActivity, profile

    result = {}
    for name, fn in (("encoder", encode), ("decoder_call", step_call)):
        fn()
        sync()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            sync()
        rows = sorted(((e.key, e.count, e.device_time_total) for e in prof.key_averages() if e.device_time_total > 0),
                      key=lambda r: -r[2])
        result[name] = {"total_us": round(sum(r[2] for r in rows), 1), "kernels": sum(r[1] for r in rows),
                        "top": [{"kernel": k[:160], "count": c, "us": round(us, 1)} for k, c, us in rows[:15]]}
    return result


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--models", nargs="+", default=["large-v3-turbo", "large-v3"], choices=sorted(ARCHITECTURES))
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--compiled", action="append", default=None, metavar="DIR")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--device", default="gpu", choices=["gpu", "cpu"], help="cpu: only to try the script out")
    p.add_argument("--output", type=Path, default=RESULTS / "large_models")
    p.add_argument("--engine", choices=["max", "transformers"], help=argparse.SUPPRESS)  # a child process's one engine
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.engine:  # a child process: one engine, JSON on stdout
        result = (run_max(args.folder, args.dtype, args.runs, args.compiled, args.profile, args.device)
                  if args.engine == "max" else run_transformers(args.folder, args.runs, args.device))
        print(json.dumps(result))
        return

    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / name
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"from benchmarks.suite.large_models import save_random_model as s; "
                            f"from pathlib import Path; s({name!r}, Path({str(folder)!r}))"], check=True)
            print(f"{name}: random weights saved in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            results = {}
            for engine in ("transformers", "max"):
                cmd = [sys.executable, "-m", "benchmarks.suite.large_models", "--engine", engine, "--folder", str(folder),
                       "--dtype", args.dtype, "--runs", str(args.runs), "--device", args.device]
                cmd += [f"--compiled={c}" for c in args.compiled or []] + (["--profile"] if args.profile else [])
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{name}, {engine}: failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
                results[engine] = json.loads(done.stdout.strip().splitlines()[-1])
        report = summarise(name, args, results)
        write_json(args.output / f"{name}.json", report)
        print(table(report))


def summarise(name: str, args, results: dict) -> dict:
    dims = ARCHITECTURES[name]
    floor_ms = encoder_flops(dims) / (BF16_TFLOPS * 1e12) * 1000
    hf, mx = results["transformers"], results["max"]
    ratios = {key: round(mx[key] / hf[key], 3) for key in hf if key.startswith(("encoder_ms", "decoder_step"))}
    return {"command": command(), "machine": machine(),
            "model": f"{name}-shaped, random weights (transformers init, seed 0)", "dims": dims.asdict(),
            "encoder_bf16_floor_ms_per_window": round(floor_ms, 3), "results": results,
            "max_over_transformers": ratios}


def table(report: dict) -> str:
    hf, mx = report["results"]["transformers"], report["results"]["max"]
    lines = [f"## {report['model']}", "", "| | transformers | max | max / transformers |", "| --- | --- | --- | --- |"]
    for key, ratio in report["max_over_transformers"].items():
        lines.append(f"| {key} | {hf[key]:.3f} | {mx[key]:.3f} | {ratio:.2f} |")
    lines.append(f"| GPU memory (MB) | {hf['gpu_memory_mb']} | {mx['gpu_memory_mb']} | |")
    lines.append(f"\nencoder bf16 floor {report['encoder_bf16_floor_ms_per_window']} ms per window; "
                 f"max load {mx['load_s']} s ({mx['graph_sources']})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
