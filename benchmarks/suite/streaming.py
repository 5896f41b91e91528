"""Live transcription (`max-whisper live`, the server's WebSocket streams): the final committed transcript's
accuracy against the offline transcript, the latency from a word's end in the audio to its committed text,
and how many streams one device carries in real time.

    python -m benchmarks.suite.streaming [--device cpu] [--model tiny.en] [--min-chunk 0.8 on the CPU, 0.5 on a GPU]
        [--agreement 2] [--trim 24 --keep 20 --max-buffer 28]
        [--recordings lecture,garden,railway,kitchen,comet] [--streams 1] [--seconds S] [--without-draft]
        [--output benchmarks/results/streaming/DEVICE]

Audio: tests/speech/lecture.flac and benchmarks/suite/longform_texts/*.txt spoken by espeak-ng (voices and
speeds of longform_wer, and HELD_OUT_VOICES for longform_texts/held_out/: harbour, library, bicycle, forecast;
needs espeak-ng), references from tests/speech/refs.tsv and those texts.

`--streams 1` (accuracy and latency): each recording alone, fed at real speed in 0.1 s chunks through
`streaming.run` (what `max-whisper live FILE` does), one after another; its final transcript's WER beside
the offline `transcribe` WER (its defaults, temperature fallback included, with word timestamps; the
stream decodes at temperature 0 without fallback, `max-whisper live`'s default).
Latency of a committed word: when its text was committed, counted from the stream's start (the moment its
first chunk could have arrived), less the word's end time in the audio (its aligned end, the time the
engine reports for it): what a listener waits from the word being spoken to its final text.

`--streams N,...` (capacity): N streams at once, stream k the recording k mod R (its first --seconds),
started 0.25 s after one another, their decodes batched by one `WindowBatcher` as the server batches them.
Each N reports the words' latency median and p95 over all streams, and the lag at the end (from a stream's
last chunk to its last committed text). Carried in real time: every stream's lag at the end is at most
--real-time-s (default 2 s), so no stream fell behind its audio.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import max_whisper as mw
from benchmarks.common import RESULTS, SPEECH, add_model_args, command, machine, parser, references, write_json
from benchmarks.suite.longform_wer import TEXTS, VOICES, synthesize
from max_whisper import load_audio
from max_whisper.audio import SAMPLE_RATE
from max_whisper.batching import BatchedModel, WindowBatcher, one_blas_thread
from max_whisper.bench import word_error_rate
from max_whisper.runtime.device import decoding_rows
from max_whisper.streaming import StreamingOptions, StreamingTranscriber, StreamUpdate, paced, run
from max_whisper.transcribe import TranscribeOptions, transcribe_with


# Held out (longform_texts/held_out/): texts and voices the streaming rules were not chosen on (written
# 2026-12-01, after those rules), to check a rule's gain on the five default recordings away from them.
HELD_OUT_VOICES = {"harbour": ("en-gb-scotland", 160), "library": ("en-us+f3", 170), "bicycle": ("en-029", 155),
                   "forecast": ("en-gb-x-gbclan", 165)}


def recordings(names: list[str], voices: Path) -> dict[str, tuple[np.ndarray, str]]:
    """Each recording's audio and reference; espeak-ng's into `voices` unless made there before."""
    out = {}
    for name in names:
        if name == "lecture":
            out[name] = load_audio(SPEECH / "lecture.flac"), references(SPEECH)["lecture.flac"]
        else:
            voice, speed = {**VOICES, **HELD_OUT_VOICES}[name]
            text_file = TEXTS / ("held_out" if name in HELD_OUT_VOICES else "") / f"{name}.txt"
            made = [voices / f"{name}{ext}" for ext in (".flac", ".wav") if (voices / f"{name}{ext}").exists()]
            path = made[0] if made else synthesize(text_file, voice, speed, voices)
            out[name] = load_audio(path), text_file.read_text().strip()
    return out


class BatchedStream(StreamingTranscriber):
    """A stream whose decodes go through a shared batcher, which waits for other streams' windows only while
    their updates are running (as the server's streams do)."""

    def __init__(self, batcher: WindowBatcher, *args, **kwargs):  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.batcher = batcher

    def update(self) -> StreamUpdate:
        return self.batcher.counted(super().update)

    def finish(self) -> StreamUpdate:
        return self.batcher.counted(super().finish)


class Undrafted(StreamingTranscriber):
    """A stream whose decodes step through all their tokens (no draft from the previous decode): the streams
    before 2026-12-01's drafts, for `--without-draft`."""

    def _decode(self) -> list[dict]:
        self._draft = ()
        return super()._decode()


def stream(transcriber: StreamingTranscriber, audio: np.ndarray) -> dict:
    """One stream at real speed; each committed word's latency."""
    latencies: list[float] = []
    start = time.perf_counter()

    def on_update(update: StreamUpdate) -> None:
        now = time.perf_counter() - start
        latencies.extend(now - w["end"] for w in update.committed)

    result = run(transcriber, paced(audio, 1.0), on_update)
    end_lag = time.perf_counter() - start - audio.size / SAMPLE_RATE
    return {"text": result["text"], "latencies": latencies, "end_lag_s": end_lag, "decodes": transcriber.decodes}


def concurrent(model: mw.WhisperModel, clips: list[np.ndarray], n: int, options: TranscribeOptions,
               streaming: StreamingOptions) -> tuple[list[dict], WindowBatcher]:
    """n streams at once through one batcher, stream k the clip k mod len(clips), 0.25 s apart."""
    batcher = WindowBatcher(model, max_batch=n)
    engine = BatchedModel(model, batcher)
    results: list[dict] = [{} for _ in range(n)]

    def one(k: int) -> None:
        time.sleep(0.25 * k)
        results[k] = stream(BatchedStream(batcher, engine, options, streaming), clips[k % len(clips)])

    with one_blas_thread():
        threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    batcher.stop()
    return results, batcher


def quantiles(values: list[float]) -> dict:
    if not values:
        return {"median_s": None, "p95_s": None}
    return {"median_s": round(statistics.median(values), 3),
            "p95_s": round(float(np.percentile(values, 95)), 3)}


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--recordings", default="lecture,garden,railway,kitchen,comet")
    p.add_argument("--min-chunk", type=float, default=None,
                   help="StreamingOptions.min_chunk_s (default the device's: StreamingOptions.for_device)")
    p.add_argument("--lookahead", type=float, default=0.5, help="StreamingOptions.lookahead_s (default 0.5)")
    defaults = StreamingOptions()
    p.add_argument("--agreement", type=int, default=defaults.agreement,
                   help=f"StreamingOptions.agreement (default {defaults.agreement})")
    p.add_argument("--trim", type=float, default=defaults.trim_s, help=f"StreamingOptions.trim_s (default {defaults.trim_s:g})")
    p.add_argument("--keep", type=float, default=defaults.keep_s, help=f"StreamingOptions.keep_s (default {defaults.keep_s:g})")
    p.add_argument("--max-buffer", type=float, default=defaults.max_buffer_s,
                   help=f"StreamingOptions.max_buffer_s (default {defaults.max_buffer_s:g}; the rule before keep_s, 2026-12-01: "
                        "--trim 15 --keep 0 --max-buffer 25)")
    p.add_argument("--without-draft", action="store_true",
                   help="single streams decode without the previous decode's tokens as a draft (the streams before it)")
    p.add_argument("--streams", default="1", help="comma-separated stream counts; 1: accuracy and latency")
    p.add_argument("--seconds", type=float, default=None, help="capacity runs: each stream's first seconds")
    p.add_argument("--real-time-s", type=float, default=2.0,
                   help="capacity: N streams are carried in real time when each one's last text comes within this "
                        "many seconds of its audio's end (default 2)")
    p.add_argument("--voices", type=Path, default=None, metavar="DIR",
                   help="espeak-ng's recordings (NAME.flac or NAME.wav) made earlier, for a machine without espeak-ng")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args()
    output = args.output or RESULTS / "streaming" / args.device
    counts = [int(n) for n in args.streams.split(",")]
    model = mw.load_model(args.model, device=args.device, compiled=args.compiled, rows=decoding_rows(max(counts)))
    assert isinstance(model, mw.WhisperModel)
    options = TranscribeOptions.from_kwargs(word_timestamps=True)  # offline: transcribe's defaults
    stream_options = TranscribeOptions.from_kwargs(word_timestamps=True, temperature=0.0)  # the live defaults
    streaming = replace(StreamingOptions.for_device(args.device == "gpu", args.min_chunk, args.agreement),
                        lookahead_s=args.lookahead, trim_s=args.trim, keep_s=args.keep, max_buffer_s=args.max_buffer)
    report: dict = {"model": args.model, "device": args.device, "machine": machine(), "command": command(),
                    "streaming": vars(streaming), "draft": not args.without_draft, "settings": "offline: transcribe's defaults (temperature fallback), word "
                    "timestamps; stream: temperature 0 without fallback, word timestamps; WER with "
                    "openai-whisper's EnglishTextNormalizer"}
    with tempfile.TemporaryDirectory() as tmp:
        audio = recordings(args.recordings.split(","), args.voices or Path(tmp))
    if 1 in counts:
        rows, latencies = [], []
        transcribe_with(model, next(iter(audio.values()))[0][: 5 * SAMPLE_RATE], options)  # warm-up
        for name, (samples, reference) in audio.items():
            offline = transcribe_with(model, samples, options)["text"]
            live = stream((Undrafted if args.without_draft else StreamingTranscriber)(model, stream_options, streaming),
                          samples)
            row = {"recording": name, "seconds": round(samples.size / SAMPLE_RATE, 1),
                   "offline_wer": round(word_error_rate([reference], [offline])[0], 2),
                   "streaming_wer": round(word_error_rate([reference], [live["text"]])[0], 2),
                   **quantiles(live["latencies"]), "end_lag_s": round(live["end_lag_s"], 3),
                   "decodes": live["decodes"], "offline_text": offline, "streaming_text": live["text"]}
            rows.append(row)
            latencies += live["latencies"]
            report["single_stream"] = rows
            write_json(output / "results.json", report)  # each recording's row as soon as it is measured
            print({k: v for k, v in row.items() if not k.endswith("_text")}, flush=True)
        report["single_stream"] = rows
        report["single_stream_latency"] = quantiles(latencies)  # every committed word of every recording
        refs = [audio[row["recording"]][1] for row in rows]
        report["pooled_wer"] = {kind: round(word_error_rate(refs, [row[f"{kind}_text"] for row in rows])[0], 2)
                                for kind in ("offline", "streaming")}  # all recordings' words together
        print("pooled WER", report["pooled_wer"], "latency", report["single_stream_latency"], flush=True)
    capacity = []
    clips = [samples[: round((args.seconds or samples.size / SAMPLE_RATE) * SAMPLE_RATE)]
             for samples, _ in audio.values()]
    if any(c > 1 for c in counts):  # every batch size's graphs made before the clock runs
        concurrent(model, [c[: 10 * SAMPLE_RATE] for c in clips], max(counts), stream_options, streaming)
    for n in (c for c in counts if c > 1):
        results, batcher = concurrent(model, clips, n, stream_options, streaming)
        latencies = [x for r in results for x in r["latencies"]]
        lags = [r["end_lag_s"] for r in results]
        row = {"streams": n, **quantiles(latencies), "end_lag_max_s": round(max(lags), 3),
               "batches": batcher.batches, "windows": batcher.windows}
        row["real_time"] = max(lags) <= args.real_time_s
        capacity.append(row)
        print(row, flush=True)
    if capacity:
        report["capacity"] = capacity
        report["real_time_end_lag_s"] = args.real_time_s
    write_json(output / "results.json", report)


if __name__ == "__main__":
    main()
