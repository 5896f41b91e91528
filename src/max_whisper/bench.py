"""`max-whisper bench`: backends side by side on the same audio, each in a process of its own.

The parent starts one worker process per (device, backend); a worker decodes the audio once
(not timed), loads the model (timed as load/compile), runs `--warmup` untimed transcriptions of
every file, then `--runs` timed ones, and reports wall times, the time measured inside MAX graph
execution, its own peak RSS and peak GPU memory, and its transcripts. The parent adds real-time
factor, speedup over the CPU reference, WER and agreement with the CPU reference's text, and
writes a Markdown table, a JSON file and a PNG chart.

Decoding settings are the same for every backend: temperature 0 without fallback, beam search
only with --beam-size, conditioning on previous text, timestamps on.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from .backends import BACKENDS
from .errors import WhisperError


def add_arguments(b: argparse.ArgumentParser) -> None:
    """`max-whisper bench`'s arguments."""
    b.add_argument("audio", nargs="+", type=Path, help="audio files (all are transcribed in every run)")
    b.add_argument("--backends", default="reference,hybrid,max,faster-whisper",
                   help="comma-separated: max, hybrid, reference, faster-whisper, transformers, whisper.cpp; "
                        "NAME:DTYPE sets one backend's weights (faster-whisper:int8)")
    b.add_argument("--devices", default="cpu", help="comma-separated: cpu, gpu")
    b.add_argument("--model", default="tiny.en")
    b.add_argument("--runs", type=int, default=5, help="timed runs per backend (default 5)")
    b.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    b.add_argument("--beam-size", type=int, default=None, help="beam search (default: greedy)")
    b.add_argument("--dtype", default="auto", help="MAX dtype on the GPU (default auto: see transcribe --help)")
    b.add_argument("--batch-size", type=int, default=None,
                   help="also time the throughput mode of the max backend (streams) and of faster-whisper "
                        "(its BatchedInferencePipeline) with this many windows per batch")
    b.add_argument("--files-at-once", type=int, default=None, metavar="N",
                   help="also time the max backend transcribing N of the files at a time (transcribe --files-at-once), "
                        "and transformers' pipeline decoding the files' 30 s chunks N at a time across files")
    b.add_argument("--refs", type=Path, default=None,
                   help="reference transcripts, TSV with columns file and reference (default: refs.tsv "
                        "beside the first audio file, if there is one)")
    b.add_argument("--output", type=Path, default=Path("bench-results"), help="folder for JSON, Markdown, PNG")
    b.add_argument("--compiled", action="append", type=Path, default=None, metavar="DIR",
                   help="max backend: the graphs `max-whisper compile` wrote to DIR (repeatable)")


def run(args: argparse.Namespace) -> int:
    """Run the bench the arguments describe; returns the exit code."""
    chosen = [b.strip().partition(":")[::2] for b in args.backends.split(",") if b.strip()]
    backends = [name for name, _ in chosen]
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    if not backends or not devices:
        raise WhisperError("--backends and --devices each need at least one name")
    for b in backends:
        if b not in BACKENDS:
            raise WhisperError(f"unknown backend '{b}': use {', '.join(BACKENDS)}")
    for d in devices:
        if d not in ("cpu", "gpu"):
            raise WhisperError(f"unknown device '{d}': use cpu or gpu")
    if "gpu" in devices:
        from max import driver

        if driver.accelerator_count() == 0:
            raise WhisperError("--devices gpu: MAX finds no GPU on this machine")
    if args.runs < 1 or args.warmup < 0:
        raise WhisperError("--runs must be at least 1 and --warmup at least 0")
    if args.batch_size is not None and (args.batch_size < 1 or not {"max", "faster-whisper"} & set(backends)):
        raise WhisperError("--batch-size must be at least 1 and needs the max or faster-whisper backend")
    if args.files_at_once is not None and (args.files_at_once < 1 or not {"max", "transformers"} & set(backends)):
        raise WhisperError("--files-at-once must be at least 1 and needs the max or transformers backend")
    audio = [p.resolve() for p in args.audio]
    for p in audio:
        if not p.is_file():
            raise WhisperError(f"{p}: no such file")
    refs = _load_refs(args.refs or audio[0].parent / "refs.tsv", audio, explicit=args.refs is not None)
    compiled = [str(d) for d in args.compiled] if args.compiled else None

    rows: list[dict] = []
    report: dict = {}
    table = ""
    args.output.mkdir(parents=True, exist_ok=True)
    for device in devices:
        for backend, dtype in chosen:
            modes: list[dict] = [{}]
            if backend in ("max", "faster-whisper") and args.batch_size:  # each one's throughput mode
                modes.append({"batch_size": args.batch_size, "batching": f"{args.batch_size} windows"})
            if backend == "max" and args.files_at_once:
                modes.append({"files_at_once": args.files_at_once, "batching": f"{args.files_at_once} files"})
            if backend == "transformers" and args.files_at_once:
                modes.append({"files_at_once": args.files_at_once,
                              "batching": f"{args.files_at_once} chunks across files"})
            for mode in modes:
                config = {"backend": backend, "device": device, "model": args.model, "audio": [str(p) for p in audio],
                          "runs": args.runs, "warmup": args.warmup, "beam_size": args.beam_size,
                          "dtype": dtype or _default_dtype(backend, device, args.dtype),
                          "compiled": compiled if backend == "max" else None, "batching": None, **mode}
                print(f"bench: {backend} on {device} ...", file=sys.stderr, flush=True)
                rows.append(_run_worker(config))
                report = _report(rows, refs, audio, args)
                table = _write(report, args.output)  # the rows so far outlive a stopped run
    _chart(report, args.output / "bench.png")
    print(table)
    failed = [r for r in rows if r.get("error")]
    return 1 if failed else 0


def _write(report: dict, output: Path) -> str:
    """bench.json and bench.md of `report`; returns the Markdown table."""
    (output / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (output / "bench.md").write_text(table)
    return table


def _default_dtype(backend: str, device: str, gpu_dtype: str) -> str:
    """A backend's weights unless NAME:DTYPE says: --dtype on the GPU, float32 on the CPU but for whisper.cpp,
    which runs float16 only."""
    if backend == "whisper.cpp":
        return "float16"
    return gpu_dtype if device == "gpu" else "float32"


def _run_worker(config: dict) -> dict:
    cmd = [sys.executable, "-m", "max_whisper.bench", json.dumps(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["worker died without output"])[-1]
        print(f"bench: {config['backend']} on {config['device']} failed: {err}", file=sys.stderr)
        return {**config, "error": err}
    return {**config, **json.loads(lines[-1])}


# --- the worker: one backend, one device, its own process ---

def _worker(config: dict) -> int:
    import resource

    from .audio import SAMPLE_RATE, load_audio
    from .backends import load_model
    from .runtime.device import decoding_rows

    gpu = GpuMemory() if config["device"] == "gpu" else None
    audio = [load_audio(p) for p in config["audio"]]
    start = time.perf_counter()
    windows = config.get("files_at_once") or config.get("batch_size") or 1
    model = load_model(config["model"], device=config["device"], backend=config["backend"], dtype=config["dtype"],
                       compiled=config.get("compiled"), rows=decoding_rows(windows, config["beam_size"]))
    load_s = time.perf_counter() - start
    options: dict = {"temperature": 0.0}
    if config["beam_size"]:
        options["beam_size"] = config["beam_size"]
    if config.get("batch_size"):
        options["batch_size"] = config["batch_size"]

    def transcribe_all() -> list[dict]:
        if config.get("files_at_once") and config["backend"] == "transformers":
            from .backends.peers import TransformersModel

            assert isinstance(model, TransformersModel)  # load_model's backend
            return model.transcribe_files(audio, batch_size=config["files_at_once"], **options)
        if config.get("files_at_once"):
            from .batching import transcribe_files
            from .engine import WhisperModel
            from .transcribe import TranscribeOptions

            if not isinstance(model, WhisperModel):
                raise WhisperError("--files-at-once needs the max backend")
            done = transcribe_files(model, audio, config["files_at_once"], TranscribeOptions.from_kwargs(**options))
            results = [r for _, _, r in done]
            for r in results:
                if isinstance(r, WhisperError):
                    raise r
            return [r for r in results if isinstance(r, dict)]
        return [model.transcribe(a, **options) for a in audio]

    for _ in range(config["warmup"]):
        transcribe_all()
    walls, graph = [], []
    for _ in range(config["runs"]):
        g0, t0 = model.max_graph_seconds(), time.perf_counter()
        results = transcribe_all()
        walls.append(time.perf_counter() - t0)
        graph.append(model.max_graph_seconds() - g0)
    from .engine import WhisperModel

    print(json.dumps({
        **({"dtype": model.dtype} if isinstance(model, WhisperModel) else {}),  # "auto" resolved
        "load_s": load_s, "walls_s": walls, "max_graph_s": graph,
        "audio_s": sum(len(a) for a in audio) / SAMPLE_RATE,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": gpu.stop() if gpu else None,
        "texts": [r["text"] for r in results],
    }))
    return 0


class GpuMemory:
    """Peak GPU memory in use (MiB) above what was in use when this process started, sampled with NVML."""

    def __init__(self, interval: float = 0.05):
        try:
            import pynvml
        except ImportError:
            self.pynvml = None
            return
        self.pynvml = pynvml
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.baseline = self._used()
        self.peak = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)
        self.thread.start()

    def _used(self) -> int:
        assert self.pynvml is not None  # sampled only when NVML loaded
        return self.pynvml.nvmlDeviceGetMemoryInfo(self.handle).used

    def _sample(self, interval: float) -> None:
        while not self.done.wait(interval):
            self.peak = max(self.peak, self._used() - self.baseline)

    def stop(self) -> float | None:
        if self.pynvml is None:
            return None
        self.done.set()
        self.thread.join()
        return max(self.peak, self._used() - self.baseline) / 2**20


# --- the report ---

def _load_refs(path: Path, audio: list[Path], explicit: bool) -> dict[str, str]:
    if not path.is_file():
        if explicit:
            raise WhisperError(f"{path}: no such reference file")
        return {}
    with open(path, newline="") as f:
        table = {row["file"]: row["reference"] for row in csv.DictReader(f, delimiter="\t")}
    return {p.name: table[p.name] for p in audio if p.name in table}


def _normalizer():
    try:
        from whisper.normalizers import EnglishTextNormalizer

        return EnglishTextNormalizer(), "openai-whisper EnglishTextNormalizer"
    except ImportError:
        return (lambda s: re.sub(r"[^\w\s']", " ", s.lower())), "lowercase, punctuation removed"


def word_error_rate(references: list[str], hypotheses: list[str]) -> tuple[float, str]:
    import jiwer

    norm, name = _normalizer()
    refs = [norm(r) for r in references]
    hyps = [norm(h) for h in hypotheses]
    return 100.0 * jiwer.wer(refs, hyps), name


def _report(rows: list[dict], refs: dict[str, str], audio: list[Path], args) -> dict:
    baseline = next((r for r in rows if r["backend"] == "reference" and r["device"] == "cpu" and not r.get("error")), None)
    normalizer = None
    for r in rows:
        if r.get("error"):
            continue
        r["median_s"] = statistics.median(r["walls_s"])
        r["min_s"] = min(r["walls_s"])
        r["realtime_x"] = r["audio_s"] / r["median_s"]
        r["max_graph_median_s"] = statistics.median(r["max_graph_s"])
        r["other_median_s"] = r["median_s"] - r["max_graph_median_s"]
        if all(p.name in refs for p in audio):
            r["wer_percent"], normalizer = word_error_rate([refs[p.name] for p in audio], r["texts"])
    for r in rows:  # against the CPU reference, whichever row it is
        if not r.get("error"):
            r["speedup_vs_cpu_reference"] = baseline["median_s"] / r["median_s"] if baseline else None
            r["same_text_as_cpu_reference"] = r["texts"] == baseline["texts"] if baseline else None
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": "max-whisper bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else None,
        "model": args.model, "audio": [p.name for p in audio],
        "settings": {"runs": args.runs, "warmup": args.warmup, "beam_size": args.beam_size,
                     "temperature": 0.0, "condition_on_previous_text": True},
        "wer_normalizer": normalizer, "rows": rows,
    }


def machine() -> dict:
    """The machine a result was measured on: CPU, cores, Python, OS, and the GPU and driver where there is one."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "os": platform.platform()}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            info["gpu"] = out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


COLUMNS = [("backend", "backend", "{}"), ("device", "device", "{}"), ("dtype", "weights", "{}"), ("batching", "batched", "{}"),
           ("load_s", "load+compile s", "{:.1f}"),
           ("median_s", "median s", "{:.3f}"), ("min_s", "min s", "{:.3f}"), ("realtime_x", "x real time", "{:.1f}"),
           ("speedup_vs_cpu_reference", "speedup vs CPU ref", "{:.2f}x"), ("max_graph_median_s", "in MAX graphs s", "{:.3f}"),
           ("other_median_s", "rest s", "{:.3f}"), ("peak_rss_mib", "peak RSS MiB", "{:.0f}"),
           ("peak_gpu_mib", "peak GPU MiB", "{:.0f}"), ("wer_percent", "WER %", "{:.2f}"),
           ("same_text_as_cpu_reference", "text = CPU ref", "{}")]


def markdown(report: dict) -> str:
    lines = [f"model {report['model']}, audio {', '.join(report['audio'])}, "
             f"runs {report['settings']['runs']} after {report['settings']['warmup']} warm-up, "
             f"beam {report['settings']['beam_size'] or 'none (greedy)'}, temperature 0; {report['date']}", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()) + ".", "",
             f"Command: `{report['command']}`" if report.get("command") else "", "",
             "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|" + " --- |" * len(COLUMNS)]
    for r in report["rows"]:
        if r.get("error"):
            lines.append(f"| {r['backend']} | {r['device']} | {r['dtype']} | {r.get('batching') or 'n/a'} | "
                         f"failed: {r['error']} |" + " |" * (len(COLUMNS) - 5))
            continue
        cells = []
        for key, _, fmt in COLUMNS:
            v = r.get(key)
            cells.append("n/a" if v is None else ("yes" if v is True else "no" if v is False else fmt.format(v)))
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("wer_normalizer"):
        lines += ["", f"WER text normaliser: {report['wer_normalizer']}."]
    return "\n".join(lines) + "\n"


def _chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if not r.get("error")]
    labels = [f"{r['backend']}\n{r['device']} {r['dtype']}" + (f" {r['batching']}" if r.get("batching") else "")
              for r in rows]
    graph = [r["max_graph_median_s"] for r in rows]
    other = [r["other_median_s"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4.5))
    ax.bar(labels, graph, label="inside MAX graphs", color="#d9480f")
    ax.bar(labels, other, bottom=graph, label="rest (PyTorch, CTranslate2, host code)", color="#868e96")
    for i, r in enumerate(rows):
        ax.text(i, r["median_s"], f"{r['median_s']:.2f} s\n{r['realtime_x']:.0f}x RT", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("median wall time per run (s)")
    ax.set_title(f"Whisper {report['model']} on {', '.join(report['audio'])}")
    ax.legend(fontsize=8)
    ax.margins(y=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":  # a worker: `python -m max_whisper.bench CONFIG` (see _run_worker)
    sys.exit(_worker(json.loads(sys.argv[1])))
