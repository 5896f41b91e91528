"""What the benchmark scripts share: one argument style, the engine loaded from those arguments, the
machine's description, timing, references and JSON output."""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
from max import driver

import max_whisper as mw
from max_whisper.bench import machine  # noqa: F401  (the scripts' record of the machine, as bench writes it)
from max_whisper.audio import N_SAMPLES, SAMPLE_RATE
from max_whisper.features import N_FRAMES

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "tests" / "speech"  # the repository's test speech
RESULTS = REPO / "benchmarks" / "results"  # the committed results
DEVICES = ("cpu", "gpu")
T = TypeVar("T")


def parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser whose --help shows `description` (a script's docstring) as written."""
    return argparse.ArgumentParser(prog=f"python -m {_module()}", description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_model_args(p: argparse.ArgumentParser, devices: Sequence[str] = DEVICES) -> None:
    """--model, --device (the first of `devices` by default) and --compiled, as `load` takes them."""
    p.add_argument("--model", default="tiny.en", help="a model name (default tiny.en) or a model folder / .pt file")
    p.add_argument("--device", default=devices[0], choices=devices, help=f"default {devices[0]}")
    p.add_argument("--compiled", action="append", default=None, metavar="DIR",
                   help="folders from `max-whisper compile` (repeatable): no compile here")


def add_speech_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speech", type=Path, default=SPEECH,
                   help="folder of the test speech and its refs.tsv (default: the repository's tests/speech)")


def add_output_arg(p: argparse.ArgumentParser, default: Path | None = None) -> None:
    shown = default.relative_to(REPO) if default and default.is_relative_to(REPO) else default
    p.add_argument("--output", type=Path, default=default, required=default is None, metavar="DIR",
                   help="folder to write the results to" + (f" (default {shown})" if default else ""))


def load(args: argparse.Namespace, dtype: str = "float32") -> mw.WhisperModel:
    """The MAX engine of --model on --device, graphs from --compiled where given."""
    model = mw.load_model(args.model, device=args.device, dtype=dtype, compiled=args.compiled)
    assert isinstance(model, mw.WhisperModel)  # the max backend
    return model


def command() -> str:
    """This run's command line, as typed at the repository root (for the record in a result file)."""
    return shlex.join(["python", "-m", _module(), *sys.argv[1:]])


def _module() -> str:
    """The running script as a module name (benchmarks.suite.NAME)."""
    return ".".join(Path(sys.argv[0]).resolve().relative_to(REPO).with_suffix("").parts)


def timed(fn: Callable[[], T], runs: int, warmup: int = 0) -> tuple[T, list[float]]:
    """Calls `fn` `warmup` times untimed, then `runs` times; returns the last result and each run's seconds."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return result, seconds


def seconds_per_call(call: Callable[[], object], n: int, device: driver.Device) -> float:
    """Seconds per call of `n` calls in a row (asynchronous device work), the device waited for once at the end."""
    start = time.perf_counter()
    for _ in range(n):
        call()
    device.synchronize()
    return (time.perf_counter() - start) / n


def median_ms(seconds: Sequence[float], digits: int = 3) -> float:
    return round(1000 * statistics.median(seconds), digits)


def references(speech: Path) -> dict[str, str]:
    """File name -> reference transcript, from a speech folder's refs.tsv."""
    with open(speech / "refs.tsv", newline="") as f:
        return {row["file"]: row["reference"] for row in csv.DictReader(f, delimiter="\t")}


def first_window(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """The log-mel of a recording's first 30 s, padded to one window [n_mels, 3000]."""
    return mw.pad_or_trim(mw.log_mel_spectrogram(audio[:N_SAMPLES], n_mels), N_FRAMES)


def process_gpu_memory_mb(pid: int | None = None) -> float | None:
    """The GPU memory nvidia-smi reports for a process (default: this one), None where it lists none."""
    pid = os.getpid() if pid is None else pid
    rows = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    used = [float(m) for p, m in (r.split(", ") for r in rows if r) if int(p) == pid]
    return sum(used) if used else None


def write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def write_wav(path: Path, audio: np.ndarray) -> None:
    """16 kHz mono samples as a 16-bit WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
