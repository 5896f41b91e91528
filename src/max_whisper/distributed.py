"""A corpus transcribed on a Ray cluster, with Ray Data.

The pipeline is Ray Data's batch inference: CPU tasks read each file and make its front end (decoded
audio, VAD regions, the whole log-mel: `transcribe.front_end`); one actor per GPU (or per CPU worker)
loads the engine once and transcribes `files_at_once` front ends at a time, through the batcher of
`--files-at-once`, so each transcript is the one a local run gives. Ray restarts an actor that dies
and runs its files again.

`run_corpus` is the command line's job: it skips files already done, writes each file's output formats
(atomically, as a local run names them) and one results table in JSONL shards as results arrive, and
takes each file's result once even when Ray delivers a retried batch's rows again. `transcribe_dataset`
is the same pipeline for a `ray.data.Dataset` of paths, for those who write their own.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np
from threadpoolctl import threadpool_limits

from .batching import BatchedModel, WindowBatcher
from .errors import WhisperError, describe, file_error
from .models import dimensions
from .outputs import SubtitleOptions, output_names, output_path, write_result
from .runtime.device import decoding_rows
from .tokenizer import check_english_only
from .transcribe import TranscribeOptions, front_end, transcribe_speech
from .weights import ModelDimensions, state_shapes

RESULTS = "results"  # the results table's folder in the output folder
SHARD_ROWS = 1000  # rows per shard of the results table
COLUMNS = ("path", "duration", "language", "text", "segments", "error")


@dataclass(frozen=True)
class CorpusJob:
    """What every worker needs: the model, where it runs, and the transcription options."""

    model: str = "tiny.en"
    device: str = "cpu"
    dtype: str = "auto"
    compiled: tuple[str, ...] | None = None  # folders of graphs compiled ahead of time
    options: dict[str, Any] = field(default_factory=dict)  # `transcribe`'s keyword options
    files_at_once: int = 8  # files each worker transcribes at once (their windows batched)
    workers: int | None = None  # engine actors; None: one per GPU of the cluster (device gpu), else 1

    def __post_init__(self) -> None:
        if self.files_at_once < 1:
            raise WhisperError(f"files_at_once must be at least 1, got {self.files_at_once}")
        if self.workers is not None and self.workers < 1:
            raise WhisperError(f"workers must be at least 1, got {self.workers}")
        if self.transcribe_options.batch_size is not None:  # a bad option fails here, not in every worker
            raise WhisperError("a corpus runs each file's sequential loop (its windows batched with other files'): "
                               "leave out batch_size")

    @cached_property
    def transcribe_options(self) -> TranscribeOptions:
        return TranscribeOptions.from_kwargs(**self.options)


@dataclass
class CorpusSummary:
    """What a corpus run did, for its last line."""

    files: int = 0  # given
    skipped: int = 0  # done by an earlier run
    transcribed: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_s: float = 0.0  # from the cluster's start of work to the last result
    workers: int = 0
    device: str = "cpu"

    def line(self) -> str:
        hours = self.audio_seconds / 3600
        unit = "GPU" if self.device == "gpu" else "worker"
        rate = hours / (self.wall_s / 3600 * self.workers) if self.wall_s > 0 and self.workers else 0.0
        return (f"transcribed {self.transcribed}/{self.files} files ({self.skipped} done before, {self.failed} "
                f"failed): {hours:.3f} audio hours in {self.wall_s:.1f} s on {self.workers} {unit}(s), "
                f"{rate:.1f} audio hours per {unit} hour")


def connect(address: str | None = None) -> bool:
    """Join the Ray cluster at `address`, or start one on this machine (None); a session this process
    already joined is used as it is. Returns whether this call joined (and so should leave)."""
    try:
        import ray
    except ImportError:
        raise WhisperError("--ray needs Ray: pip install 'max-whisper[distributed]'") from None
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise WhisperError(f"cannot join the Ray cluster at {address or 'this machine'}: {describe(e)}") from None
    return True


def worker_count(job: CorpusJob) -> int:
    """The engine actors to start: `job.workers`, or one per GPU of the cluster (CPU-only: 1). Each actor
    holds a CPU, and the front-end tasks need at least one more."""
    import ray

    resources = ray.cluster_resources()
    if job.device == "gpu":
        gpus = int(resources.get("GPU", 0))
        if gpus == 0:
            raise WhisperError("--device gpu: the Ray cluster has no GPU")
        if job.workers is not None and job.workers > gpus:
            raise WhisperError(f"{job.workers} GPU workers asked for, the Ray cluster has {gpus} GPU(s)")
        workers = job.workers or gpus
    else:
        workers = job.workers or 1
    cpus = int(resources.get("CPU", 0))
    if workers >= cpus:
        raise WhisperError(f"{workers} engine worker(s) hold a CPU each and the front-end tasks need more; the Ray "
                           f"cluster has {cpus} CPU(s)")
    return workers


def transcribe_dataset(paths, job: CorpusJob):
    """A `ray.data.Dataset` of rows {"path": ...} transcribed: rows of COLUMNS (segments as JSON; error the
    file's one-line error, else empty), in no particular order. Run it in a process that has loaded no model:
    pyarrow's compute library, which Ray Data uses, crashes where MAX loaded first (MAX 26.7, pyarrow 26)."""
    import ray.data

    dims = dimensions(job.model)
    if not dims.is_multilingual:  # as a local run checks before its first file
        decoding = job.transcribe_options.decoding
        check_english_only(decoding.language, decoding.task)
    features = paths.map(_FrontEnd(job.transcribe_options, dims.n_mels), num_cpus=1)
    # Ray Data restarts an engine actor that dies and reruns its files (its actor pools' default:
    # max_restarts=-1, max_task_retries=-1; tests/test_distributed.py kills one). The memory an engine holds
    # is reserved, which also keeps Ray from running the front end inside the actors (fusing the stages).
    return features.map_batches(
        _Transcriber, fn_constructor_args=(job,), batch_size=1, batch_format="numpy", num_cpus=1,
        num_gpus=1 if job.device == "gpu" else 0, memory=engine_memory(dims),
        # files_at_once files in flight in each actor, each call one file, their windows batched together;
        # as soon as one is done the next starts, and its result goes back.
        compute=ray.data.ActorPoolStrategy(size=worker_count(job), max_concurrent_calls_per_actor=job.files_at_once,
                                           max_tasks_in_flight_per_actor=2 * job.files_at_once,
                                           enable_true_multi_threading=True))


def engine_memory(dims: ModelDimensions) -> int:
    """Host bytes an engine actor holds: the float32 weights twice (the checkpoint read and the graphs'
    copy) and 1 GiB for MAX's runtime and the files in flight."""
    weights = 4 * sum(math.prod(shape) for shape in state_shapes(dims).values())
    return 2 * weights + 2**30


class _FrontEnd:
    """The CPU task: one file read and made ready for the model."""

    def __init__(self, options: TranscribeOptions, n_mels: int):
        self.options, self.n_mels = options, n_mels

    def __call__(self, row: dict) -> dict:
        path = str(row["path"])
        try:
            speech = front_end(Path(path), self.options, self.n_mels, precompute=True)
        except Exception as e:  # noqa: BLE001  (a file that cannot be read is that file's result)
            return {"path": path, "duration": 0.0, "speech": None, "error": str(file_error(path, e))}
        return {"path": path, "duration": speech.seconds, "speech": speech, "error": ""}


class _Transcriber:
    """The actor: the engine loaded once; the calls in flight (one file each, from threads of their own)
    decode their windows together through one `WindowBatcher`, as `--files-at-once` does."""

    def __init__(self, job: CorpusJob):
        from .engine import WhisperModel
        from .models import load_checkpoint

        self.options = job.transcribe_options
        rows = decoding_rows(job.files_at_once, self.options.decoding.beam_size, self.options.best_of)
        model = WhisperModel(load_checkpoint(job.model), device=job.device, dtype=job.dtype,
                             compiled=list(job.compiled) if job.compiled else None, rows=rows)
        self.batcher = WindowBatcher(model, max_batch=job.files_at_once, linger_s=0.1)
        self.engine = BatchedModel(model, self.batcher)
        threadpool_limits(limits=1, user_api="blas")  # for the actor's life: see batching.one_blas_thread

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {c: [] for c in COLUMNS}
        for path, duration, speech, error in zip(batch["path"], batch["duration"], batch["speech"], batch["error"]):
            result = {"language": "", "text": "", "segments": []}
            if not error:
                try:
                    with self.batcher.running():
                        result = transcribe_speech(self.engine, speech, self.options)
                except Exception as e:  # noqa: BLE001  (one file's failure, whatever it is, is that file's result)
                    error = str(file_error(path, e))
            out["path"].append(str(path))
            out["duration"].append(float(duration))
            out["language"].append(result["language"])
            out["text"].append(result["text"])
            out["segments"].append(json.dumps(result["segments"], ensure_ascii=False))
            out["error"].append(error)
        return out


class ResultsTable:
    """The results table: JSONL shards in one folder, a row per file and run, appended as results arrive
    (each row flushed). A file's last row is its state; a line cut short by a crash is ignored."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.file: TextIO | None = None
        self.rows = 0
        self.stamp = f"{time.time_ns():020d}-{os.getpid()}"  # shards sort in the order runs began
        self.shard = 0

    def latest(self) -> dict[str, dict]:
        """Each path's last row in the shards written so far."""
        rows: dict[str, dict] = {}
        for shard in sorted(self.folder.glob("part-*.jsonl")):
            with open(shard, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # the last line of a run that was killed
                        continue
                    rows[row["path"]] = row
        return rows

    def append(self, row: dict) -> None:
        if self.file is None or self.rows == SHARD_ROWS:
            self.close()
            self.folder.mkdir(parents=True, exist_ok=True)
            self.shard += 1
            self.file = open(self.folder / f"part-{self.stamp}-{self.shard:05d}.jsonl", "a", encoding="utf-8")
            self.rows = 0
        file = self.file
        file.write(json.dumps(row, ensure_ascii=False) + "\n")
        file.flush()
        self.rows += 1

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def run_corpus(files: list[Path], job: CorpusJob, output_dir: Path, formats: list[str],
               subtitles: SubtitleOptions = SubtitleOptions(), address: str | None = None,
               on_result: Callable[[dict], None] | None = None) -> CorpusSummary:
    """Transcribe `files` on the Ray cluster at `address` (None: a local one, or the one this process joined):
    each file's `formats` in `output_dir` as a local run names them, the results table in `output_dir`/results.
    Files whose outputs an earlier run completed are skipped; a failed file's error is printed and recorded
    and the others go on. `on_result(row)` is called after each file's outputs are written."""
    keys = [str(f.resolve()) for f in files]
    bases = dict(zip(keys, (output_dir / n for n in output_names(files))))
    table = ResultsTable(output_dir / RESULTS)
    earlier = table.latest()
    todo = [k for k in dict.fromkeys(keys) if not _complete(earlier.get(k), bases[k], formats)]
    summary = CorpusSummary(files=len(set(keys)), skipped=len(set(keys)) - len(todo), device=job.device)
    if not todo:
        return summary
    joined = connect(address)
    try:
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts files and audio hours
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        summary.workers = worker_count(job)
        start = time.perf_counter()
        rows = transcribe_dataset(ray.data.from_items([{"path": k} for k in todo], override_num_blocks=len(todo)),
                                  job).iter_rows()
        for row in _once(rows, todo, summary):
            _record(row, bases[row["path"]], formats, subtitles, table, summary)
            summary.wall_s = time.perf_counter() - start
            if on_result is not None:
                on_result(row)
    finally:
        table.close()
        if joined:
            import ray

            ray.shutdown()
    return summary


def _complete(row: dict | None, base: Path, formats: list[str]) -> bool:
    return row is not None and not row["error"] and all(output_path(base, fmt).exists() for fmt in formats)


def _once(rows: Iterator[dict], todo: list[str], summary: CorpusSummary) -> Iterator[dict]:
    """Each path's first row, under a progress bar over files and audio hours."""
    from tqdm import tqdm

    seen: set[str] = set()
    with tqdm(total=len(todo), unit="file", disable=not sys.stderr.isatty(), leave=False) as bar:
        for row in rows:
            if row["path"] in seen:
                continue
            seen.add(row["path"])
            yield row
            bar.update(1)
            bar.set_postfix_str(f"{summary.audio_seconds / 3600:.2f} audio h")


def _record(row: dict, base: Path, formats: list[str], subtitles: SubtitleOptions, table: ResultsTable,
            summary: CorpusSummary) -> None:
    """One file's outputs written, then its row: a row without error means its outputs are complete."""
    row = {"path": str(row["path"]), "duration": round(float(row["duration"]), 3), "language": str(row["language"]),
           "text": str(row["text"]), "segments": json.loads(row["segments"]), "error": str(row["error"])}
    if not row["error"]:
        result = {"text": row["text"], "segments": row["segments"], "language": row["language"]}
        try:
            for fmt in formats:
                write_result(result, base, fmt, subtitles)
        except OSError as e:
            row["error"] = f"{row['path']}: cannot write {fmt} output: {e.strerror or e}"
    if row["error"]:
        print(f"error: {row['error']}", file=sys.stderr)
        summary.failed += 1
    else:
        summary.transcribed += 1
        summary.audio_seconds += row["duration"]
    table.append(row)
