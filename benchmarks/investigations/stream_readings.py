"""Where a stream's errors come from: its committed text against texts built from its own decodes' readings.

    python -m benchmarks.investigations.stream_readings --voices DIR [--recordings lecture,garden,...]
        [--min-chunk 0.8] [--agreement 2] --output OUT

Each recording is streamed on simulated time (`replay`, StreamingOptions' defaults but --min-chunk and
--agreement) and every decode's words are kept with the start and end of the audio it read. A word is read many
times before and after it is committed, with more or less audio around it. From the same decodes:
- committed: the stream's final text;
- central: each moment of the recording taken from the decode in which it lies farthest from both ends of what
  that decode read (as the offline loop reads most words well inside a 30 s window);
- right_R: from the first decode that read the moment with at least R s of audio after it and 5 s before it (or
  from the stream's start), where there is one (central where none: the recording's last R s);
- single_0.5: the same with R 0.5 s, the audio after a word when it is committed, but one decode's reading
  where the stream needs `agreement` decodes to read it alike.
Pooled WER of each beside the offline transcript's (transcribe's defaults, word timestamps); tiny.en unless
--model.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import max_whisper as mw
from benchmarks.common import add_model_args, command, machine, parser, write_json
from benchmarks.suite.streaming import recordings
from max_whisper.bench import word_error_rate
from max_whisper.streaming import StreamingOptions, StreamingTranscriber, replay, words_text
from max_whisper.transcribe import TranscribeOptions, transcribe_with

STEP_S = 0.1  # the grid of moments a reading is chosen for


@dataclass(frozen=True)
class Reading:
    start: float  # the buffer's start, stream time
    end: float  # the end of the audio the decode read
    words: list[dict]  # all its words, committed ones read again included


class Recorded(StreamingTranscriber):
    """A stream that keeps every decode's reading of its buffer."""

    def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.readings: list[Reading] = []

    def _new_words(self, words: list[dict]) -> list[dict]:
        self.readings.append(Reading(self._offset, self._decoded_until, list(words)))
        return super()._new_words(words)


Score = Callable[[float, Reading], "float | None"]


def central(t: float, r: Reading) -> float:
    return min(t - r.start, r.end - t)


def right(seconds: float) -> Score:
    def score(t: float, r: Reading) -> float | None:
        heard = r.end - t >= seconds and (t - r.start >= 5.0 or r.start == 0.0)
        return -(r.end - t) if heard else None  # the first such decode: the least audio after t
    return score


def built(readings: list[Reading], score: Score) -> str:
    """A text from the readings: each moment's from the decode that scores highest for it (`central` where
    none scores), each word from the decode chosen for its middle."""
    end = max(r.end for r in readings)
    chosen: list[int | None] = []
    for k in range(int(end / STEP_S) + 1):
        t = k * STEP_S
        around = [(i, r) for i, r in enumerate(readings) if r.start <= t <= r.end]
        scored = [(s, i) for i, r in around if (s := score(t, r)) is not None]
        fallback = [(central(t, r), i) for i, r in around]
        chosen.append(max(scored)[1] if scored else max(fallback)[1] if fallback else None)
    words = [w for i, r in enumerate(readings) for w in r.words
             if 0 <= (k := round((w["start"] + w["end"]) / 2 / STEP_S)) < len(chosen) and chosen[k] == i]
    return words_text(sorted(words, key=lambda w: w["start"]))


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--recordings", default="lecture,garden,railway,kitchen,comet")
    p.add_argument("--min-chunk", type=float, default=StreamingOptions.min_chunk_s)
    p.add_argument("--agreement", type=int, default=StreamingOptions.agreement)
    p.add_argument("--voices", type=Path, default=None, metavar="DIR")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        audio = recordings(args.recordings.split(","), args.voices or Path(tmp))
    model = mw.load_model(args.model, device=args.device, compiled=args.compiled)
    assert isinstance(model, mw.WhisperModel)
    stream_options = TranscribeOptions.from_kwargs(word_timestamps=True, temperature=0.0)
    streaming = StreamingOptions(min_chunk_s=args.min_chunk, agreement=args.agreement)
    scores: dict[str, Score] = {"central": central, "single_0.5": right(0.5),
                                **{f"right_{s:g}": right(s) for s in (1.0, 2.0, 3.0, 5.0, 8.0)}}
    texts: dict[str, dict[str, str]] = {}
    for name, (samples, _) in audio.items():
        transcriber = Recorded(model, stream_options, streaming)
        replay(transcriber, samples, lambda update: None)
        texts[name] = {"offline": transcribe_with(model, samples, TranscribeOptions.from_kwargs(word_timestamps=True))["text"],
                       "committed": transcriber.text,
                       **{label: built(transcriber.readings, score) for label, score in scores.items()}}
        print(name, {k: round(word_error_rate([audio[name][1]], [v])[0], 2) for k, v in texts[name].items()}, flush=True)
    refs = [ref for _, ref in audio.values()]
    pooled = {kind: round(word_error_rate(refs, [texts[name][kind] for name in audio])[0], 2)
              for kind in next(iter(texts.values()))}
    print("pooled", pooled, flush=True)
    write_json(args.output / "stream_readings.json", {"machine": machine(), "command": command(), "model": args.model,
                                                      "device": args.device, "streaming": vars(streaming),
                                                      "pooled_wer": pooled, "texts": texts})


if __name__ == "__main__":
    main()
