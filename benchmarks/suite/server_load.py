"""Load test of `max-whisper serve`: N requests from C concurrent `openai` clients, per --max-batch.

    python -m benchmarks.suite.server_load --requests 64 --clients 16 --max-batch 1,16 --output OUT

For each --max-batch value a fresh `max-whisper serve` process is started on a loopback port (its
graphs from the disk cache), warmed up with one request per clip, then loaded: every client sends its
share of requests back to back, cycling over the short clips of the shared speech. Every response is
checked against what `max-whisper transcribe` gives for that clip (the engine's sequential
transcription, computed first in this process). Reports latency p50/p99, requests and audio seconds
per second, and the server's mean windows per engine batch. Writes server_load.json and .md.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai

from benchmarks.common import (add_model_args, add_output_arg, add_speech_arg, command, load, machine, parser,
                               references, write_json)
from max_whisper import load_audio
from max_whisper.audio import SAMPLE_RATE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, max_batch: int) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    cmd = [sys.executable, "-m", "max_whisper.cli", "serve", "--port", str(port), "--model", args.model,
           "--device", args.device, "--max-batch", str(max_batch), "--max-queue", str(max(64, args.clients))]
    cmd += [a for folder in args.compiled or [] for a in ("--compiled", folder)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc, url, time.perf_counter() - t0
        except httpx.TransportError:
            time.sleep(0.2)


def run_load(url: str, args: argparse.Namespace, clips: list[Path], expected: dict[str, str],
             durations: dict[str, float]) -> dict:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)

    def request(clip: Path) -> tuple[float, bool, str | None]:
        t = time.perf_counter()
        try:
            with open(clip, "rb") as f:
                text = client.audio.transcriptions.create(model=args.model, file=f).text
        except openai.APIError as e:
            return time.perf_counter() - t, False, str(e)
        return time.perf_counter() - t, text == expected[clip.name], None

    for clip in clips:  # warm-up
        request(clip)
    before = httpx.get(f"{url}/health").json()
    plan = [clips[i % len(clips)] for i in range(args.requests)]
    shares = [plan[c::args.clients] for c in range(args.clients)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        outcomes = [o for share in pool.map(lambda s: [request(c) for c in s], shares) for o in share]
    wall = time.perf_counter() - t0
    after = httpx.get(f"{url}/health").json()
    latencies = [o[0] for o in outcomes]
    windows, batches = after["windows"] - before["windows"], after["batches"] - before["batches"]
    audio = sum(durations[c.name] for c in plan)
    return {
        "requests": len(outcomes), "correct": sum(o[1] for o in outcomes),
        "errors": [o[2] for o in outcomes if o[2]], "wall_s": wall,
        "requests_per_s": len(outcomes) / wall, "audio_s_per_s": audio / wall,
        "latency_p50_s": float(np.percentile(latencies, 50)), "latency_p99_s": float(np.percentile(latencies, 99)),
        "latency_mean_s": statistics.mean(latencies), "windows_per_batch": windows / batches if batches else None,
    }


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    add_speech_arg(p)
    add_output_arg(p, Path("server-load"))
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-batch", default="1,16", help="comma-separated server --max-batch values")
    args = p.parse_args()
    clips = sorted(args.speech / name for name in references(args.speech) if name != "lecture.flac")

    model = load(args)  # the CLI's transcript of every clip
    expected, durations = {}, {}
    for clip in clips:
        audio = load_audio(clip)
        expected[clip.name] = model.transcribe(audio)["text"].strip()
        durations[clip.name] = len(audio) / SAMPLE_RATE
    del model

    report = {"machine": machine(), "model": args.model, "device": args.device, "clips": [c.name for c in clips],
              "requests": args.requests, "clients": args.clients, "command": command(), "runs": {}}
    for max_batch in [int(b) for b in args.max_batch.split(",")]:
        proc, url, startup = start_server(args, max_batch)
        try:
            run = run_load(url, args, clips, expected, durations)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        run["server_startup_s"] = startup
        report["runs"][f"max_batch={max_batch}"] = run
        print(json.dumps({f"max_batch={max_batch}": run}), flush=True)

    write_json(args.output / "server_load.json", report)
    lines = [f"`{report['command']}`: {args.requests} requests from {args.clients} concurrent openai clients, "
             f"{args.model} on {args.device}, clips: the {len(clips)} short clips of the shared speech.", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()) + ".", "",
             "| server | correct | latency p50 s | latency p99 s | requests/s | audio s/s | windows per batch |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in report["runs"].items():
        wpb = f"{r['windows_per_batch']:.2f}" if r["windows_per_batch"] else "n/a"
        lines.append(f"| {name} | {r['correct']}/{r['requests']} | {r['latency_p50_s']:.2f} | {r['latency_p99_s']:.2f} "
                     f"| {r['requests_per_s']:.2f} | {r['audio_s_per_s']:.1f} | {wpb} |")
    (args.output / "server_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
