"""Several recordings transcribed at once, their windows decoded together.

Each recording runs the sequential long-form loop (`transcribe`) in its own thread, conditioned on
its own previous text, so its transcript is the one it gets alone (on a GPU up to the rounding of
batched kernels, which can move a near-tied timestamp); the loops' window decodes go to a
`WindowBatcher`, the only thread that touches the engine, which decodes the windows waiting from all
loops as one batch (same decoding options; each window keeps its own prompt). Used by the server
(concurrent requests) and by `max-whisper transcribe --files-at-once`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from .audio import load_audio, pad_or_trim
from .decoding import DecodingOptions, DecodingResult
from .engine import WhisperModel
from .errors import WhisperError, file_error
from .features import N_FRAMES
from .tokenizer import Tokenizer
from .transcribe import TranscribeOptions, transcribe_with

T = TypeVar("T")


class WindowBatcher:
    """Runs every engine call in one thread; decodes windows submitted concurrently as one batch."""

    def __init__(self, model: WhisperModel, max_batch: int, linger_s: float = 0.003):
        self.model, self.max_batch, self.linger_s = model, max_batch, linger_s
        self.jobs: queue.Queue = queue.Queue()
        self.active = 0  # transcriptions running (they may submit windows)
        self.lock = threading.Lock()
        self.batches = self.windows = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, name="window-batcher", daemon=True)
        self.thread.start()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Counts a transcription as running while inside: a batch waits a little for its windows."""
        with self.lock:
            self.active += 1
        try:
            yield
        finally:
            with self.lock:
                self.active -= 1

    def counted(self, work: Callable[[], T]) -> T:
        """`work()` counted as a running transcription (`running`): a stream's update, whose windows the
        batch waits for."""
        with self.running():
            return work()

    def decode(self, mel: np.ndarray, options: DecodingOptions, frames: int = N_FRAMES) -> DecodingResult:
        """Decode one window [n_mels, 3000], `frames` of them audio, with the windows that other threads
        submit meanwhile."""
        return self._submit((pad_or_trim(mel, N_FRAMES), frames), options)

    def call(self, fn, *args):
        """Run `fn(*args)` in the engine thread (engine calls other than window decodes)."""
        return self._submit(fn, args)

    def _submit(self, work, args):
        future: Future = Future()
        with self.lock:
            if self.stopped:
                raise WhisperError("transcription stopped")
            self.jobs.put((work, args, future))
        return future.result()

    def _serve(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                self._fail_waiting()
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:  # wait a little only while other running transcriptions may still send a window
                    waiting = len(batch) < self.active
                    job = self.jobs.get(timeout=self.linger_s) if waiting else self.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self.jobs.put(None)
                    break
                batch.append(job)
            self._run(batch)

    def _run(self, batch: list) -> None:
        groups: dict[str, list] = {}
        for job in batch:
            if callable(job[0]):
                self._settle([job[2]], lambda fn=job[0], args=job[1]: [fn(*args)])
            else:  # windows differing only in their prompts (and drafts: one row's alone) share a batch
                groups.setdefault(repr(replace(job[1], prompt=None, draft=())), []).append(job)
        for jobs in groups.values():
            self.batches += 1
            self.windows += len(jobs)
            mels = np.stack([j[0][0] for j in jobs])
            options, prompts, frames = jobs[0][1], [j[1].prompt for j in jobs], [j[0][1] for j in jobs]
            if len(jobs) > 1:
                options = replace(options, draft=())
            self._settle([j[2] for j in jobs], lambda: self.model.decode_windows(mels, options, prompts, frames))

    @staticmethod
    def _settle(futures: list[Future], work) -> None:
        try:
            results = work()
        except Exception as e:  # noqa: BLE001  (each waiting transcription gets the error, the thread lives on)
            for f in futures:
                f.set_exception(e)
            return
        for f, r in zip(futures, results):
            f.set_result(r)

    def stop(self) -> None:
        """Ends the engine thread after the batch it is running; windows still waiting, or sent later,
        fail with "transcription stopped", so no transcription waits forever."""
        with self.lock:
            self.stopped = True
            self.jobs.put(None)
        self.thread.join(timeout=10)

    def _fail_waiting(self) -> None:
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job[2].set_exception(WhisperError("transcription stopped"))


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's BLAS (the log-mel's mel-filter product) on one thread while transcriptions run in many
    threads: OpenBLAS's own thread pool per call, from 16 callers at once, made 16 log-mels 9x slower on
    the H100 machine's 16 cores (1.8 s against 0.2 s on one BLAS thread each)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


class BatchedModel:
    """The engine as the long-form loop sees it (`transcribe.Engine`), every engine call going through the
    batcher."""

    def __init__(self, model: WhisperModel, batcher: WindowBatcher):
        self.model, self.batcher = model, batcher
        self.dims = model.dims

    def tokenizer(self, language: str | None = None, task: str | None = None) -> Tokenizer:
        return self.model.tokenizer(language, task)

    def decode_windows(self, mels: np.ndarray, options: DecodingOptions, prompts: list[list[int]] | None = None,
                       frames: list[int] | None = None) -> list[DecodingResult]:
        frames = frames or [N_FRAMES] * len(mels)
        options_of = [replace(options, prompt=p) for p in prompts] if prompts else [options] * len(mels)
        return [self.batcher.decode(mel, o, n) for mel, o, n in zip(mels, options_of, frames)]

    def detect_language(self, mel: np.ndarray) -> tuple[str, dict[str, float]]:
        return self.batcher.call(self.model.detect_language, mel)


Input = Path | np.ndarray


def transcribe_files(model: WhisperModel, inputs: Sequence[Input], at_once: int, options: TranscribeOptions,
                     ) -> Iterator[tuple[Input, np.ndarray | None, dict | WhisperError]]:
    """Transcribe `at_once` files (or 16 kHz arrays) at a time, their windows decoded together; yields
    (input, audio, result) in the order of `inputs`, as each is done (audio None and a WhisperError
    for one that failed). Transcripts are those of transcribing each alone (sequential loop; see the
    module's note on GPU rounding)."""
    if options.batch_size is not None:
        raise WhisperError("several files at once run each file's sequential loop: leave out batch_size")
    # Throughput, not latency: a batch waits up to 0.1 s for each next window while files are running
    # (their threads' host work between windows shares one interpreter), so that windows of all files
    # meet in one batch rather than in two alternating ones.
    batcher = WindowBatcher(model, max_batch=at_once, linger_s=0.1)
    engine = BatchedModel(model, batcher)

    def one(item: Input) -> tuple[Input, np.ndarray | None, dict | WhisperError]:
        with batcher.running():
            try:
                audio = load_audio(item) if isinstance(item, (str, Path)) else np.asarray(item, np.float32)
                return item, audio, transcribe_with(engine, audio, options)
            except Exception as e:  # noqa: BLE001  (one file's failure, whatever it is, is that file's result)
                return item, None, file_error(item if isinstance(item, (str, Path)) else "audio", e)

    workers = ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="transcribe")
    try:
        with one_blas_thread():
            futures = [workers.submit(one, item) for item in inputs]
            yield from (future.result() for future in futures)
    finally:  # also when the caller stops early (Ctrl-C): files not started are dropped, running ones fail
        workers.shutdown(wait=False, cancel_futures=True)
        batcher.stop()
