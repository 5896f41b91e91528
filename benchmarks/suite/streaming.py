"""Live transcription (`max-whisper live`, the server's WebSocket streams): the final committed transcript's
accuracy against the offline transcript, the latency from a word's end in the audio to its committed text,
and how many streams one device carries in real time.

    python -m benchmarks.suite.streaming [--device cpu] [--model tiny.en] [--min-chunk 1.0]
        [--recordings lecture,garden,railway,kitchen,comet] [--streams 1] [--seconds S]
        [--output benchmarks/results/streaming/DEVICE]

Audio: tests/speech/lecture.flac and benchmarks/suite/longform_texts/*.txt spoken by espeak-ng (voices and
speeds of longform_wer; needs espeak-ng), references from tests/speech/refs.tsv and those texts.

`--streams 1` (accuracy and latency): each recording alone, fed at real speed in 0.1 s chunks through
`streaming.run` (what `max-whisper live FILE` does), one after another; its final transcript's WER beside
the offline `transcribe` WER with the same options (default temperatures, word timestamps on both).
Latency of a committed word: when its text was committed, counted from the stream's start (the moment its
first chunk could have arrived), less the word's end time in the audio (its aligned end, the time the
engine reports for it): what a listener waits from the word being spoken to its final text.

`--streams N,...` (capacity): N streams at once, stream k the recording k mod R (its first --seconds),
started 0.25 s after one another, their decodes batched by one `WindowBatcher` as the server batches them.
Each N reports the words' latency median and p95 over all streams, and the audio lag at the end (from a
stream's last chunk to its last committed text). Real time: the median latency stays under the single
stream's bound (--real-time-s, default 1 s on a GPU, 2 s on the CPU) and the lag at the end under 2x it.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, SPEECH, add_model_args, command, load, machine, parser, references, write_json
from benchmarks.suite.longform_wer import TEXTS, VOICES, synthesize
from max_whisper import load_audio
from max_whisper.audio import SAMPLE_RATE
from max_whisper.batching import BatchedModel, WindowBatcher, one_blas_thread
from max_whisper.bench import word_error_rate
from max_whisper.streaming import StreamingOptions, StreamingTranscriber, StreamUpdate, paced, run
from max_whisper.transcribe import TranscribeOptions, transcribe_with


def recordings(names: list[str], tmp: Path) -> dict[str, tuple[np.ndarray, str]]:
    out = {}
    for name in names:
        if name == "lecture":
            out[name] = load_audio(SPEECH / "lecture.flac"), references(SPEECH)["lecture.flac"]
        else:
            voice, speed = VOICES[name]
            text_file = TEXTS / f"{name}.txt"
            out[name] = load_audio(synthesize(text_file, voice, speed, tmp)), text_file.read_text().strip()
    return out


def stream(transcriber: StreamingTranscriber, audio: np.ndarray, batcher: WindowBatcher | None = None) -> dict:
    """One stream at real speed; each committed word's latency."""
    latencies: list[float] = []
    start = time.perf_counter()

    def on_update(update: StreamUpdate) -> None:
        now = time.perf_counter() - start
        latencies.extend(now - w["end"] for w in update.committed)

    if batcher is not None:  # the batcher waits for other streams' windows only while updates are running
        update, finish = transcriber.update, transcriber.finish
        transcriber.update = lambda: _counted(batcher, update)  # type: ignore[method-assign]
        transcriber.finish = lambda: _counted(batcher, finish)  # type: ignore[method-assign]
    result = run(transcriber, paced(audio, 1.0), on_update)
    end_lag = time.perf_counter() - start - audio.size / SAMPLE_RATE
    return {"text": result["text"], "latencies": latencies, "end_lag_s": end_lag, "decodes": transcriber.decodes}


def _counted(batcher: WindowBatcher, fn):
    with batcher.running():
        return fn()


def quantiles(values: list[float]) -> dict:
    if not values:
        return {"median_s": None, "p95_s": None}
    return {"median_s": round(statistics.median(values), 3),
            "p95_s": round(float(np.percentile(values, 95)), 3)}


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--recordings", default="lecture,garden,railway,kitchen,comet")
    p.add_argument("--min-chunk", type=float, default=1.0, help="StreamingOptions.min_chunk_s (default 1.0)")
    p.add_argument("--streams", default="1", help="comma-separated stream counts; 1: accuracy and latency")
    p.add_argument("--seconds", type=float, default=None, help="capacity runs: each stream's first seconds")
    p.add_argument("--real-time-s", type=float, default=None)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args()
    output = args.output or RESULTS / "streaming" / args.device
    bound = args.real_time_s or (1.0 if args.device == "gpu" else 2.0)
    model = load(args)
    options = TranscribeOptions.from_kwargs(word_timestamps=True)
    streaming = StreamingOptions(min_chunk_s=args.min_chunk)
    report: dict = {"model": args.model, "device": args.device, "machine": machine(), "command": command(),
                    "streaming": vars(streaming), "settings": "default transcribe options (temperature fallback), "
                    "word timestamps; WER with openai-whisper's EnglishTextNormalizer"}
    with tempfile.TemporaryDirectory() as tmp:
        audio = recordings(args.recordings.split(","), Path(tmp))
    counts = [int(n) for n in args.streams.split(",")]
    if 1 in counts:
        rows, pooled = [], []
        transcribe_with(model, next(iter(audio.values()))[0][: 5 * SAMPLE_RATE], options)  # warm-up
        for name, (samples, reference) in audio.items():
            offline = transcribe_with(model, samples, options)["text"]
            live = stream(StreamingTranscriber(model, options, streaming), samples)
            row = {"recording": name, "seconds": round(samples.size / SAMPLE_RATE, 1),
                   "offline_wer": round(word_error_rate([reference], [offline])[0], 2),
                   "streaming_wer": round(word_error_rate([reference], [live["text"]])[0], 2),
                   **quantiles(live["latencies"]), "end_lag_s": round(live["end_lag_s"], 3),
                   "decodes": live["decodes"], "offline_text": offline, "streaming_text": live["text"]}
            rows.append(row)
            pooled += live["latencies"]
            print({k: v for k, v in row.items() if not k.endswith("_text")}, flush=True)
        report["single_stream"] = rows
        report["single_stream_latency"] = quantiles(pooled)  # every committed word of every recording
    capacity = []
    for n in (c for c in counts if c > 1):
        clips = [(name, samples[: round((args.seconds or samples.size / SAMPLE_RATE) * SAMPLE_RATE)])
                 for name, (samples, _) in audio.items()]
        batcher = WindowBatcher(model, max_batch=n)
        engine = BatchedModel(model, batcher)
        results: list[dict] = [{} for _ in range(n)]

        def one(k: int) -> None:
            time.sleep(0.25 * k)
            results[k] = stream(StreamingTranscriber(engine, options, streaming), clips[k % len(clips)][1], batcher)

        with one_blas_thread():
            threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        batcher.stop()
        latencies = [x for r in results for x in r["latencies"]]
        lags = [r["end_lag_s"] for r in results]
        row = {"streams": n, **quantiles(latencies), "end_lag_max_s": round(max(lags), 3),
               "batches": batcher.batches, "windows": batcher.windows}
        row["real_time"] = bool(row["median_s"] is not None and row["median_s"] < bound and max(lags) < 2 * bound)
        capacity.append(row)
        print(row, flush=True)
    if capacity:
        report["capacity"] = capacity
        report["real_time_bound_s"] = bound
    write_json(output / "results.json", report)


if __name__ == "__main__":
    main()
