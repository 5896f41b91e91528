"""Which streaming rule keeps a stream's final transcript closest to the offline one: variants of
`StreamingTranscriber` on simulated time (every recording fed `--min-chunk` at a time and decoded after each
chunk, as a device that decodes faster than real time would), all (variant, recording) streams at once
through one batcher.

    python -m benchmarks.investigations.streaming_rules --device gpu --voices DIR [--min-chunk 0.3]
        [--variants shipped,long_buffer,...] --output OUT

Per variant and recording: WER of the final transcript, the offline transcript's WER (the transcribe defaults
with word timestamps, as benchmarks.suite.streaming), decodes, and the algorithmic latency of each committed
word (the audio fed when it was committed less its end; a real device adds its decode time).
Variants (all but shipped and sliding_* with the buffer rule before keep_s: BEFORE):
- shipped: StreamingOptions' defaults;
- before: the buffer rule before keep_s (cut at the last committed sentence end once over 15 s);
- long_buffer: trim_s 25, max_buffer_s 28 (cut less often: more context per decode, more tokens per decode);
- older_agreement: a word is committed when the new hypothesis agrees with the last one made from at least
  1 s less audio (not the one just before, 0.3 s less, which sees nearly the same audio and repeats its errors);
- older_agreement_0.6: the same with 0.6 s;
- both: long_buffer and older_agreement;
- lookahead_1: lookahead_s 1.0 (a word is committed only once 1 s of audio after it was decoded);
- quiet_cut: the buffer cut in the quietest 20 ms of up to 0.4 s after the word it is cut at;
- lookahead_0.3, lookahead_3, lookahead_4.5: lookahead_s 0.3, 3.0, 4.5 (how much right context matters);
- long_lookahead_4.5: lookahead_s 4.5 with long_buffer's trim_s and max_buffer_s;
- confident: a word under probability 0.6 waits for 2 s of audio after it, the others for lookahead_s (the
  prefix committed stops at the first word still waiting);
- long_prompt, prompt_1000: prompt_chars 600, 1000 (openai-whisper conditions a window on up to 223 tokens of
  the text before it; 1000 characters of English are about 200);
- keep_sentence: whisper_streaming's trim (cut at the second-last committed sentence end);
- first_words_5, first_words_8: nothing committed at the stream's start before 5 or 8 s of audio;
  context_5: no buffer commits before it holds 5 s;
- sliding_20, sliding_15: the buffer cut from 24 (20) s at the first committed sentence end leaving at most
  20 (15) s, so new words are read with that much audio before them (sliding_20 is now shipped: keep_s);
- sliding_20_prompt_600: sliding_20 with prompt_chars 600;
- keep20_lookahead_0.3, _1, _2, _3, _4.5: the shipped rule (keep_s 20) with lookahead_s 0.3, 1, 2, 3, 4.5 s (how close more
  right context brings the stream to offline, at what latency);
- unsettled_2, unsettled_3, unsettled_4.5: a word that two decodes which heard it through read differently waits
  for 2 (3, 4.5) s of audio after it, the others for lookahead_s (the shipped rule otherwise); unsettled_3_early,
  unsettled_4.5_early: the same, a reading counted once 0.2 s of audio follows the word (not lookahead_s);
- agree_3: a word committed once three successive decodes agree on it (StreamingOptions.agreement 3, the option
  `live --agreement 3`).
Result files written before keep_s (2026-12-01) name the rule of that time `shipped`: it is `before` here now.
A variant "anchored" (a hypothesis' new words found after the committed words it reads again, by their text)
was measured here against the rule before it (benchmarks/results/streaming/rules_cpu/) and is now the shipped
rule (`StreamingTranscriber._new_words`): `--variants shipped` reruns it. So are two rules measured here as the
variants punctuated_prompt (the committed text the prompt only when it holds a sentence end), segment_cuts (a cut
after a committed word that ended one of Whisper's segments) and both (rules_h200_segments/: the package of
98e5e3d with this file as of 2ce5e12, which holds them): `StreamingTranscriber._prompt` and `_sentence_ends` since
2ce5e12. And two measured as silence_padded (each decode's window the buffer then silence, the log-mel of zeros,
not the log-mel zeros the sequential loop pads a short window with) and agree_3 / silence_agree_3 (three decodes
in a row agree; rules_h200_silence/: the package of b7b733c): the first is how every stream decodes now, so
`shipped` is silence_padded and `agree_3` silence_agree_3.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

import max_whisper as mw
from benchmarks.common import add_model_args, command, machine, parser, write_json
from benchmarks.suite.streaming import BatchedStream, recordings
from max_whisper.audio import SAMPLE_RATE
from max_whisper.batching import BatchedModel, WindowBatcher, one_blas_thread
from max_whisper.bench import word_error_rate
from max_whisper.runtime.device import decoding_rows
from max_whisper.streaming import StreamingOptions, StreamingTranscriber, StreamUpdate, replay
from max_whisper.transcribe import TranscribeOptions, transcribe_with


class OlderAgreement(StreamingTranscriber):
    """Agreement with the last hypothesis made from at least `gap_s` less audio."""

    gap_s = 1.0

    def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self._history: list[tuple[float, list[dict]]] = []  # (audio read until, hypothesis after the committed)

    def _decode(self) -> list[dict]:
        words = super()._decode()
        self._history = [(t, h) for t, h in self._history if t > self._decoded_until - 3 * self.gap_s]
        self._history.append((self._decoded_until, words))
        return words

    def _agreement_reference(self) -> list[dict]:
        older = [h for t, h in self._history if t <= self._decoded_until - self.gap_s]
        return self._after_committed(older[-1]) if older else []  # less the words committed since


class OlderAgreementShort(OlderAgreement):
    gap_s = 0.6


class QuietCut(StreamingTranscriber):
    """Cuts the buffer in the quietest 20 ms of the pause after the word it is cut at (up to `reach_s` on, not
    past the next decoded word's start) rather than at that word's aligned end, which can fall inside its tail."""

    reach_s = 0.4

    def _cut_at(self, time_s: float) -> None:
        with self._lock:
            audio, offset = self._audio, self._offset
        following = [w["start"] for w in self._hypothesis if w["start"] >= time_s]
        first = round((time_s - offset) * SAMPLE_RATE)
        last = round((min([time_s + self.reach_s, *following]) - offset) * SAMPLE_RATE)
        frames = (min(last, audio.size) - max(first, 0)) // 320
        if first >= 0 and frames > 1:
            energy = np.square(audio[first:first + frames * 320]).reshape(frames, 320).mean(axis=1)
            time_s += (int(np.argmin(energy)) + 0.5) * 320 / SAMPLE_RATE
        super()._cut_at(time_s)


class ConfidentLookahead(StreamingTranscriber):
    """A word the decode is unsure of (probability under `threshold`) waits for `unsure_lookahead_s` of audio
    after it, the others for `lookahead_s`: the prefix committed stops at the first word still waiting."""

    threshold = 0.6
    unsure_lookahead_s = 2.0

    def _heard_through(self, words: list[dict], agreed: int) -> int:
        ready = 0
        while ready < agreed:
            w = words[ready]
            wait = self.streaming.lookahead_s if w["probability"] >= self.threshold else self.unsure_lookahead_s
            if w["end"] > self._decoded_until - wait:
                break
            ready += 1
        return ready


class Unsettled(StreamingTranscriber):
    """A word that two decodes which both heard it through (`lookahead_s` of audio after its end) read
    differently waits for `unsettled_lookahead_s` of audio after it; the others commit as shipped (the prefix
    committed stops at the first word still waiting). The decodes' own disagreement marks the words a stream
    gets wrong, where most words are read the same from the first decode that hears them whole, so the median
    latency should barely move."""

    unsettled_lookahead_s = 2.0
    heard_s: float | None = None  # audio after a word's end for its reading to count (None: lookahead_s)

    def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self._heard: list[tuple[float, float, str]] = []  # words heard through by earlier decodes, not yet committed
        self._unsettled: list[tuple[float, float]] = []  # time spans two such readings differ on

    def _heard_through(self, words: list[dict], agreed: int) -> int:
        heard_until = self._decoded_until - (self.streaming.lookahead_s if self.heard_s is None else self.heard_s)
        heard = [(w["start"], w["end"], w["word"].strip()) for w in words if w["end"] <= heard_until]
        for start, end, key in heard:
            for s, e, k in self._heard:
                if k != key and min(end, e) - max(start, s) > 0.5 * max(min(end - start, e - s), 0.02):
                    self._unsettled.append((min(start, s), max(end, e)))
        committed_end = self.committed[-1]["end"] if self.committed else 0.0
        self._heard = [h for h in self._heard if h[1] > committed_end - 1.0] + heard
        self._unsettled = [u for u in self._unsettled if u[1] > committed_end - 1.0]
        ready = 0
        while ready < agreed:
            w = words[ready]
            unsettled = any(min(w["end"], e) - max(w["start"], s) > 0 for s, e in self._unsettled)
            wait = self.unsettled_lookahead_s if unsettled else self.streaming.lookahead_s
            if w["end"] > self._decoded_until - wait:
                break
            ready += 1
        return ready


class Unsettled3(Unsettled):
    unsettled_lookahead_s = 3.0


class Unsettled45(Unsettled):
    unsettled_lookahead_s = 4.5


class Unsettled3Early(Unsettled):
    unsettled_lookahead_s = 3.0
    heard_s = 0.2


class Unsettled45Early(Unsettled45):
    heard_s = 0.2


class KeepSentence(StreamingTranscriber):
    """whisper_streaming's trim: a buffer over `trim_s` is cut at the end of its second-last committed sentence,
    so that the last committed sentence stays in the buffer as audio context for the words after it (the rule
    it was measured against, BEFORE, cuts after the last one, and the next words are decoded from a few seconds
    of audio)."""

    def _trim(self) -> list[dict]:
        if self.buffer_s <= self.streaming.trim_s:
            return []
        ends = self._sentence_ends()
        if len(ends) >= 2:
            self._cut_at(ends[-2])
            return []
        if self.buffer_s > self.streaming.max_buffer_s:  # the transcriber's rule: the last sentence, word or forced cut
            return super()._trim()
        return []


class FirstWords(StreamingTranscriber):
    """Nothing is committed from a decode that read less than `context_s` of audio: at the stream's start only
    (`everywhere` False: the first words, decoded from a second or two of audio without a prompt), or in every
    buffer (after each cut too)."""

    context_s = 5.0
    everywhere = False

    def _heard_through(self, words: list[dict], agreed: int) -> int:
        short = self._decoded_until - self._offset < self.context_s
        if short and (self.everywhere or self._offset == 0):
            return 0
        return super()._heard_through(words, agreed)


class FirstWords8(FirstWords):
    context_s = 8.0


class Context5(FirstWords):
    everywhere = True


# The buffer rule all variants but shipped and sliding_* were measured with (StreamingOptions before keep_s): cut
# at the last committed sentence end once over 15 s, at the last committed word over 25 s.
BEFORE = {"trim_s": 15.0, "keep_s": 0.0, "max_buffer_s": 25.0}
VARIANTS = {
    "shipped": (StreamingTranscriber, {}),
    "before": (StreamingTranscriber, BEFORE),
    "long_buffer": (StreamingTranscriber, {**BEFORE, "trim_s": 25.0, "max_buffer_s": 28.0}),
    "older_agreement": (OlderAgreement, BEFORE),
    "older_agreement_0.6": (OlderAgreementShort, BEFORE),
    "both": (OlderAgreement, {**BEFORE, "trim_s": 25.0, "max_buffer_s": 28.0}),
    "lookahead_1": (StreamingTranscriber, {**BEFORE, "lookahead_s": 1.0}),
    "quiet_cut": (QuietCut, BEFORE),
    "lookahead_0.3": (StreamingTranscriber, {**BEFORE, "lookahead_s": 0.3}),
    "lookahead_3": (StreamingTranscriber, {**BEFORE, "lookahead_s": 3.0}),
    "lookahead_4.5": (StreamingTranscriber, {**BEFORE, "lookahead_s": 4.5}),
    "long_lookahead_4.5": (StreamingTranscriber, {**BEFORE, "lookahead_s": 4.5, "trim_s": 25.0, "max_buffer_s": 28.0}),
    "confident": (ConfidentLookahead, BEFORE),
    "long_prompt": (StreamingTranscriber, {**BEFORE, "prompt_chars": 600}),
    "prompt_1000": (StreamingTranscriber, {**BEFORE, "prompt_chars": 1000}),
    "keep_sentence": (KeepSentence, BEFORE),
    "first_words_5": (FirstWords, BEFORE),
    "first_words_8": (FirstWords8, BEFORE),
    "context_5": (Context5, BEFORE),
    "sliding_20": (StreamingTranscriber, {"trim_s": 24.0, "keep_s": 20.0, "max_buffer_s": 28.0}),
    "sliding_15": (StreamingTranscriber, {"trim_s": 20.0, "keep_s": 15.0, "max_buffer_s": 28.0}),
    "keep20_lookahead_0.3": (StreamingTranscriber, {"lookahead_s": 0.3}),
    "keep20_lookahead_1": (StreamingTranscriber, {"lookahead_s": 1.0}),
    "keep20_lookahead_2": (StreamingTranscriber, {"lookahead_s": 2.0}),
    "keep20_lookahead_3": (StreamingTranscriber, {"lookahead_s": 3.0}),
    "keep20_lookahead_4.5": (StreamingTranscriber, {"lookahead_s": 4.5}),
    "unsettled_2": (Unsettled, {}),
    "unsettled_3": (Unsettled3, {}),
    "unsettled_4.5": (Unsettled45, {}),
    "unsettled_3_early": (Unsettled3Early, {}),
    "unsettled_4.5_early": (Unsettled45Early, {}),
    "agree_3": (StreamingTranscriber, {"agreement": 3}),
    "sliding_20_prompt_600": (StreamingTranscriber, {"trim_s": 24.0, "keep_s": 20.0, "max_buffer_s": 28.0,
                                                     "prompt_chars": 600}),
}


def simulate(transcriber: StreamingTranscriber, audio: np.ndarray) -> dict:
    """`replay` the audio; each committed word's latency on simulated time (the audio fed less its end)."""
    latencies: list[float] = []

    def on_update(update: StreamUpdate) -> None:
        latencies.extend(transcriber.fed_s - w["end"] for w in update.committed)

    replay(transcriber, audio, on_update)
    return {"text": transcriber.text, "latencies": latencies, "decodes": transcriber.decodes}


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--recordings", default="lecture,garden,railway,kitchen,comet")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--min-chunk", type=float, default=0.3)
    p.add_argument("--voices", type=Path, default=None, metavar="DIR")
    p.add_argument("--seconds", type=float, default=None, help="each recording's first seconds only (a quick check)")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()
    variants = args.variants.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        audio = recordings(args.recordings.split(","), args.voices or Path(tmp))
    if args.seconds:
        audio = {k: (a[: round(args.seconds * SAMPLE_RATE)], ref) for k, (a, ref) in audio.items()}
    n = len(variants) * len(audio)
    model = mw.load_model(args.model, device=args.device, compiled=args.compiled, rows=decoding_rows(n))
    assert isinstance(model, mw.WhisperModel)
    offline = {name: transcribe_with(model, a, TranscribeOptions.from_kwargs(word_timestamps=True))["text"]
               for name, (a, _) in audio.items()}
    batcher = WindowBatcher(model, max_batch=n)
    engine = BatchedModel(model, batcher)
    stream_options = TranscribeOptions.from_kwargs(word_timestamps=True, temperature=0.0)
    results: dict[tuple[str, str], dict] = {}

    def one(variant: str, name: str) -> None:
        cls, changes = VARIANTS[variant]
        streaming = replace(StreamingOptions(min_chunk_s=args.min_chunk), **changes)
        batched = type(f"Batched{cls.__name__}", (BatchedStream, cls), {})  # the variant's decodes through the batcher
        results[variant, name] = simulate(batched(batcher, engine, stream_options, streaming), audio[name][0])

    with one_blas_thread():
        threads = [threading.Thread(target=one, args=(v, name)) for v in variants for name in audio]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    batcher.stop()
    rows, pooled = [], {}
    for v in variants:
        mine = []
        for name, (_, ref) in audio.items():
            r = results[v, name]
            mine.append({"variant": v, "recording": name, "wer": round(word_error_rate([ref], [r["text"]])[0], 2),
                         "offline_wer": round(word_error_rate([ref], [offline[name]])[0], 2), "decodes": r["decodes"],
                         "median_latency_s": round(statistics.median(r["latencies"]), 3) if r["latencies"] else None,
                         "text": r["text"]})
        refs = [audio[rw["recording"]][1] for rw in mine]
        pooled[v] = {"wer": round(word_error_rate(refs, [rw["text"] for rw in mine])[0], 2),
                     "offline_wer": round(word_error_rate(refs, [offline[rw["recording"]] for rw in mine])[0], 2)}
        rows += mine
        print(v, "pooled", pooled[v], [(rw["recording"], rw["wer"], rw["offline_wer"], rw["median_latency_s"])
                                       for rw in mine], flush=True)
    write_json(args.output / "streaming_rules.json", {"machine": machine(), "command": command(), "model": args.model,
                                                       "device": args.device, "min_chunk_s": args.min_chunk,
                                                       "offline": offline, "pooled": pooled, "rows": rows})

if __name__ == "__main__":
    main()
