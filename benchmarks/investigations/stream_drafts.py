"""What a draft saves a stream's decodes: each recording streamed alone on simulated time (`streaming.replay`:
fed `--min-chunk` at a time, decoded after each chunk) with the streaming defaults, once with each decode given
the previous decode's tokens as its draft (what `StreamingTranscriber` does) and once without, each in turn.

    python -m benchmarks.investigations.stream_drafts [--device cpu] --voices DIR [--recordings lecture]
        [--min-chunk 0.8] --output OUT

Per recording and form: the time of each decode of the buffer (median, mean; the whole update: front end,
encoder, decoding steps, alignment), the decoding steps after the first (`Inference.greedy` calls: one a token
on the CPU, up to eight on a GPU), the stream's WER, and whether both forms committed the same text.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import max_whisper as mw
from benchmarks.common import add_model_args, command, machine, parser, write_json
from benchmarks.suite.streaming import Undrafted, recordings
from max_whisper.audio import SAMPLE_RATE
from max_whisper.bench import word_error_rate
from max_whisper.runtime.decoders import CachedRun, RecordedRun
from max_whisper.streaming import StreamingOptions, StreamingTranscriber, replay
from max_whisper.transcribe import TranscribeOptions

FORMS = {"draft": StreamingTranscriber, "without_draft": Undrafted}


def counting_steps() -> list[int]:
    """Counts the greedy calls of every decoding run from now on (one entry per call)."""
    calls: list[int] = []
    for run in (CachedRun, RecordedRun):
        greedy = run.greedy

        def counted(self, tokens, rule_state, greedy=greedy):  # noqa: ANN001, ANN202
            calls.append(1)
            return greedy(self, tokens, rule_state)

        run.greedy = counted  # type: ignore[method-assign]
    return calls


def streamed(transcriber: StreamingTranscriber, audio, calls: list[int]) -> dict:  # noqa: ANN001
    """Replay `audio` through `transcriber`, timing each decode of its buffer."""
    times: list[float] = []
    decode = transcriber._decode

    def timed() -> list[dict]:
        start = time.perf_counter()
        words = decode()
        times.append(time.perf_counter() - start)
        return words

    transcriber._decode = timed  # type: ignore[method-assign]
    before = len(calls)
    text = replay(transcriber, audio, lambda update: None)["text"]
    return {"text": text, "decodes": len(times), "decode_median_s": round(statistics.median(times), 4),
            "decode_mean_s": round(statistics.fmean(times), 4), "greedy_calls": len(calls) - before}


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--recordings", default="lecture")
    p.add_argument("--min-chunk", type=float, default=StreamingOptions.min_chunk_s)
    p.add_argument("--voices", type=Path, default=None, metavar="DIR", help="espeak-ng's recordings made earlier")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()
    model = mw.load_model(args.model, device=args.device, compiled=args.compiled)
    options = TranscribeOptions.from_kwargs(word_timestamps=True, temperature=0.0)  # the live defaults
    streaming = StreamingOptions(min_chunk_s=args.min_chunk)
    with tempfile.TemporaryDirectory() as tmp:
        audio = recordings(args.recordings.split(","), args.voices or Path(tmp))
    warm = StreamingTranscriber(model, options, streaming)  # every graph compiled before the clock runs
    replay(warm, next(iter(audio.values()))[0][: 8 * SAMPLE_RATE], lambda update: None)
    calls = counting_steps()
    rows = []
    for name, (samples, reference) in audio.items():
        row: dict = {"recording": name, "seconds": round(samples.size / SAMPLE_RATE, 1)}
        for form, make in FORMS.items():
            result = streamed(make(model, options, streaming), samples, calls)
            result["wer"] = round(word_error_rate([reference], [result["text"]])[0], 2)
            row[form] = result
        row["same_text"] = row["draft"]["text"] == row["without_draft"]["text"]
        rows.append(row)
        print({k: ({f: v for f, v in x.items() if f != "text"} if isinstance(x, dict) else x) for k, x in row.items()},
              flush=True)
    write_json(args.output / "stream_drafts.json", {
        "model": args.model, "device": args.device, "machine": machine(), "command": command(),
        "streaming": vars(streaming), "rows": rows})


if __name__ == "__main__":
    main()
