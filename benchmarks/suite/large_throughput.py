"""Many files at once on a large architecture with random weights (issue 19's throughput target): the engine's
`--files-at-once N` against transformers fp16 generating every 30 s chunk of all files batched together, and
openai-whisper fp16 decoding the chunks a batch at a time.

    python -m benchmarks.suite.large_throughput --model large-v3-turbo --tokenizer TOKENIZER_JSON \
        [--files 16] [--tokens 100] [--hf-batch 16 80] [--output benchmarks/results/large_models]

Random weights write no text worth reading and end at no particular token, so every engine does the same
fixed work: each 30 s window of each file (tests/speech/lecture.flac, 124.6 s: 5 windows) decodes exactly
--tokens tokens greedily (end of text suppressed), without timestamps, English transcription forced, no
window conditioned on another's text, no temperature fallback. Timed: from 16 kHz arrays in memory to
tokens on the host, log-mel included, median of --runs after one warm-up; each engine in a process of its own.
The engine: `transcribe_files` (each file's loop, windows of all files batched, as `--files-at-once`).
transformers: its feature extractor (on the GPU where it can), then `generate` on --hf-batch chunks at a time,
every size given measured (its best is the comparison). openai-whisper: `decode` on batches of --files
windows, fp16 (its float32 weights cast per call, as its own loader leaves them: its layer norms need them).
--tokenizer: a tokenizer.json of the model's vocabulary (random-weight folders have none; for the v3
vocabulary tests/conftest.py `v3_tokenizer` makes one from base's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, SPEECH, command, machine, process_gpu_memory_mb, timed, write_json
from benchmarks.common import parser as make_parser
from max_whisper.audio import N_SAMPLES, SAMPLE_RATE, load_audio
from max_whisper.models import ARCHITECTURES


def recordings(files: int) -> list[np.ndarray]:
    lecture = load_audio(SPEECH / "lecture.flac")
    return [lecture] * files


def thirty_second_chunks(audios: list[np.ndarray]) -> list[np.ndarray]:
    """Every recording cut into 30 s chunks (the last of each shorter), as transformers' and openai-whisper's
    runs decode them."""
    return [a[i:i + N_SAMPLES] for a in audios for i in range(0, len(a), N_SAMPLES)]


def seconds(audios: list[np.ndarray]) -> float:
    return sum(len(a) for a in audios) / SAMPLE_RATE


def prompt_ids(tokenizer_json: Path, multilingual: bool, num_languages: int) -> tuple[list[int], int]:
    from max_whisper.tokenizer import get_tokenizer

    tok = get_tokenizer(tokenizer_json, multilingual, num_languages, "en", "transcribe")
    return list(tok.sot_sequence_including_notimestamps), tok.eot


def torch_device(device: str):
    import torch

    return ("cuda", torch.float16) if device == "gpu" else ("cpu", torch.float32)


def summary(walls: list[float], audio_s: float, windows: int, tokens: int, device: str) -> dict:
    wall = statistics.median(walls)
    return {"wall_s": round(wall, 4), "wall_s_min": round(min(walls), 4), "runs": len(walls), "windows": windows,
            "tokens": tokens, "tokens_per_s": round(tokens / wall), "audio_hours_per_device_hour": round(audio_s / wall, 1),
            "gpu_memory_mb": process_gpu_memory_mb() if device == "gpu" else None}


def run_max(folder: Path, args, batch: int | None) -> dict:
    """`batch` None: the files at once (each file's loop, windows of all files batched); a number: the files
    one after another as one recording in throughput mode, up to `batch` streams decoded side by side."""
    import max_whisper as mw
    from max_whisper.batching import transcribe_files
    from max_whisper.errors import WhisperError
    from max_whisper.transcribe import TranscribeOptions

    audios = recordings(args.files)
    start = time.perf_counter()
    model = mw.load_model(folder, device=args.device, dtype=args.dtype, rows=batch or args.files)
    load_s = time.perf_counter() - start
    eot = model.tokenizer("en", "transcribe").eot
    options = dict(temperature=0.0, condition_on_previous_text=False, without_timestamps=True,
                   sample_len=args.tokens, suppress_tokens=f"-1,{eot}", no_speech_threshold=None,
                   compression_ratio_threshold=None, logprob_threshold=None, language="en", task="transcribe")

    def at_once() -> list[dict]:
        results = [r for _, _, r in transcribe_files(model, audios, args.files, TranscribeOptions.from_kwargs(**options))]
        failed = [r for r in results if isinstance(r, WhisperError)]
        if failed:
            raise failed[0]
        return results  # type: ignore[return-value]

    recording = np.concatenate(audios)
    results, walls = timed(at_once if batch is None else lambda: [model.transcribe(recording, batch_size=batch,
                                                                                   **options)],
                           args.runs, warmup=1)
    segments = [s for r in results for s in r["segments"]]
    out = summary(walls, seconds(audios), len(segments), sum(len(s["tokens"]) for s in segments),
                  args.device)
    how = f"transcribe_files at_once={args.files}" if batch is None else f"throughput mode batch_size={batch}"
    return {"engine": f"max-whisper {model.dtype}, {how}", "load_s": round(load_s, 1), **out}


def run_transformers(folder: Path, args, batch: int) -> dict:
    import torch
    import transformers

    prompt, eot = json.loads(args.prompt)
    where, dtype = torch_device(args.device)
    model = transformers.WhisperForConditionalGeneration.from_pretrained(
        str(folder), dtype=dtype, attn_implementation="sdpa").to(where).eval()
    extractor = transformers.WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    audios = recordings(args.files)
    chunks = thirty_second_chunks(audios)
    start = torch.tensor([prompt], device=where)

    def run() -> list:
        features = extractor(chunks, sampling_rate=SAMPLE_RATE, return_tensors="pt", device=where).input_features
        features = features.to(where, dtype)
        out = []
        with torch.inference_mode():
            for i in range(0, len(chunks), batch):
                part = features[i:i + batch]
                # GenerationMixin's own greedy loop with the KV cache: Whisper's generate wants a generation
                # config of language and task tables, which a random-weight folder has not.
                ids = transformers.GenerationMixin.generate(
                    model, input_features=part, decoder_input_ids=start.expand(len(part), -1),
                    max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False, num_beams=1,
                    eos_token_id=eot, pad_token_id=eot)
                out.extend(ids[:, len(prompt):].cpu().tolist())
        return out

    ids, walls = timed(run, args.runs, warmup=1)
    return {"engine": f"transformers {transformers.__version__} {dtype} sdpa, generate batch {batch}, torch "
                      f"{torch.__version__}",
            **summary(walls, seconds(audios), len(ids), sum(map(len, ids)), args.device)}


def run_openai(folder: Path, args) -> dict:
    import torch
    import whisper
    from whisper.model import ModelDimensions, Whisper

    from max_whisper.weights import load_path

    prompt, eot = json.loads(args.prompt)
    ckpt = load_path(folder)
    model = Whisper(ModelDimensions(**ckpt.dims.asdict()))
    model.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in ckpt.state.items()})
    where, dtype = torch_device(args.device)
    model = model.to(where).eval()  # its layer norms need float32 weights; fp16 casts the others per call
    audios = recordings(args.files)
    chunks = thirty_second_chunks(audios)
    options = whisper.DecodingOptions(language="en", task="transcribe", without_timestamps=True, fp16=dtype == torch.float16,
                                      sample_len=args.tokens, suppress_tokens=[-1, eot], temperature=0.0)

    def run() -> list:
        mels = torch.stack([whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(c).to(where)),
                                                        model.dims.n_mels) for c in chunks])
        out = []
        for i in range(0, len(chunks), args.files):
            out.extend(r.tokens for r in whisper.decode(model, mels[i:i + args.files], options))
        return out

    ids, walls = timed(run, args.runs, warmup=1)
    return {"engine": f"openai-whisper {whisper.__version__} {'fp16' if dtype == torch.float16 else 'fp32'}, decode batch {args.files}, torch "
                      f"{torch.__version__}",
            **summary(walls, seconds(audios), len(ids), sum(map(len, ids)), args.device)}


def main() -> None:
    p = make_parser(__doc__)
    p.add_argument("--model", default="large-v3-turbo", choices=sorted(ARCHITECTURES))
    p.add_argument("--tokenizer", type=Path, required=True, help="tokenizer.json of the model's vocabulary")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--files", type=int, default=16)
    p.add_argument("--tokens", type=int, default=100, help="tokens decoded per 30 s window")
    p.add_argument("--max-batch", type=int, nargs="*", default=[80],
                   help="the engine's throughput-mode batch sizes, besides the files at once")
    p.add_argument("--hf-batch", type=int, nargs="+", default=[16, 80], help="transformers' generate batch sizes")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--device", default="gpu", choices=["gpu", "cpu"], help="cpu: only to try the script out")
    p.add_argument("--engines", default="max,transformers,openai-whisper")
    p.add_argument("--output", type=Path, default=RESULTS / "large_models")
    p.add_argument("--engine", help=argparse.SUPPRESS)  # a child process's one engine
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--prompt", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.engine:  # a child process: one engine, JSON on stdout
        run = {"max": lambda: run_max(args.folder, args, args.batch),
               "transformers": lambda: run_transformers(args.folder, args, args.batch),
               "openai-whisper": lambda: run_openai(args.folder, args)}[args.engine]
        print(json.dumps(run()))
        return

    dims = ARCHITECTURES[args.model]
    prompt = json.dumps(prompt_ids(args.tokenizer, dims.is_multilingual, dims.num_languages))
    runs = [("max", None)] + [("max", b) for b in args.max_batch] if "max" in args.engines else []
    runs += [("transformers", b) for b in args.hf_batch] if "transformers" in args.engines else []
    runs += [("openai-whisper", None)] if "openai-whisper" in args.engines else []
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / args.model
        subprocess.run([sys.executable, "-c", "from benchmarks.suite.large_models import save_random_model as s; "
                        f"from pathlib import Path; s({args.model!r}, Path({str(folder)!r}))"], check=True)
        shutil.copy(args.tokenizer, folder / "tokenizer.json")
        for engine, batch in runs:
            cmd = [sys.executable, "-m", "benchmarks.suite.large_throughput", "--engine", engine, "--folder",
                   str(folder), "--model", args.model, "--tokenizer", str(args.tokenizer), "--dtype", args.dtype,
                   "--files", str(args.files), "--tokens", str(args.tokens), "--runs", str(args.runs), "--device", args.device,
                   "--prompt", prompt] + (["--batch", str(batch)] if batch else [])
            done = subprocess.run(cmd, capture_output=True, text=True)
            name = engine if batch is None else f"{engine} batch {batch}"
            if done.returncode != 0:
                results[name] = {"failed": done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}
            else:
                results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    report = {"command": command(), "machine": machine(),
              "model": f"{args.model}-shaped, random weights (transformers init, seed 0)",
              "audio": f"{args.files} x tests/speech/lecture.flac", "tokens_per_window": args.tokens,
              "results": results}
    ok = {k: v for k, v in results.items() if "wall_s" in v}
    best = max((v["audio_hours_per_device_hour"] for k, v in ok.items() if k.startswith("max")), default=None)
    if best:
        report["best_max_over_engine_throughput"] = {
            k: round(best / v["audio_hours_per_device_hour"], 2) for k, v in ok.items() if not k.startswith("max")}
    write_json(args.output / f"{args.model}-throughput.json", report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
