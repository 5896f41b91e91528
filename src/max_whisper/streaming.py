"""Live transcription: audio fed as it arrives, text committed as it is spoken.

Whisper reads 30 s windows, so a stream re-decodes a growing buffer (whisper_streaming's local agreement,
Macháček et al. 2023): after each decode, the words that this hypothesis and the previous ones agree on
(`agreement` decodes in all, two by default), in order from the start and up to `lookahead_s` before the end of
the audio read, are committed (final, never revised); the rest is the tentative tail. Each decode reads the
buffer as a whole window of audio: its speech, then silence. Words carry word timestamps (the aligner); a new hypothesis is
matched against what is already committed by its words' text and times, and the buffer is cut by their
times: at the end of a committed sentence (or of one of Whisper's segments) once it is longer than `trim_s`,
keeping up to `keep_s` of it as the context of the words to come, so memory and the cost of an update stay
bounded over hours. The committed text before the buffer, when it holds a sentence end, is the prompt.

`StreamingTranscriber` does the bookkeeping and is driven by its caller (`feed`, `update`, `finish`); `run`
drives one from a source of chunks in real time (the CLI's `max-whisper live`), `replay` from a recording on
simulated time (`live --speed 0`); the server drives one per WebSocket connection, the streams' windows decoded
together by its batcher.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np

from .audio import N_SAMPLES, SAMPLE_RATE, from_pcm16
from .errors import WhisperError
from .features import FRAMES_PER_SECOND, N_FRAMES
from .transcribe import Engine, TranscribeOptions, front_end, transcribe_speech

WINDOW_S = N_FRAMES / FRAMES_PER_SECOND  # the model's window: 30 s
SENTENCE_ENDS = (".", "?", "!", "。", "？", "！")
_FORCED_KEEP_S = 5.0  # what a cut without a committed word to cut at keeps of the buffer's end
_EDGE_S = 1.0  # with more audio than one window, words ending this close to the window's end may be cut short
GPU_MIN_CHUNK_S = 0.5  # `StreamingOptions.for_device`


@dataclass(frozen=True)
class StreamingOptions:
    """How a stream decodes and trims its buffer."""

    # new audio before the buffer is decoded again (a driver's pace; `for_device`: a GPU's is shorter): at 0.8 s
    # tiny.en's median commit latency (over all words) is 1.8-2.1 s on a 2-core CPU (docs/measurements.md, issue 24)
    min_chunk_s: float = 0.8
    # A word is committed once two successive decodes agree on it and the decoded audio runs this far past
    # its end: a word near the end of what was heard may be cut short, and its punctuation waits on what
    # follows (measured: docs/measurements.md, issue 24).
    lookahead_s: float = 0.5
    # how many successive decodes must agree on a word: a word's reading near the buffer's end can change from one
    # decode to the next and back, so two in a row agreeing on a wrong one is often a matter of chance; a third
    # takes tiny.en's text 1-2 WER points closer to offline for one more min_chunk_s of latency, and more under
    # many streams (docs/measurements.md, issue 24)
    agreement: int = 2
    # A buffer over trim_s is cut at the first committed sentence end that leaves at most keep_s of it (the last
    # one if none does): new words are then read with up to keep_s of the speech before them, where a cut at
    # the last sentence end (keep_s 0) left a few seconds, and words in a buffer's first seconds were read
    # wrong twice as often (docs/measurements.md, issue 24).
    trim_s: float = 24.0
    keep_s: float = 20.0
    max_buffer_s: float = 28.0  # a longer buffer is cut after its last committed word, or forced (below)
    prompt_chars: int = 200  # committed text before the buffer given to each decode as its prompt (`_prompt`)

    @classmethod
    def for_device(cls, gpu: bool, min_chunk_s: float | None = None, agreement: int | None = None) -> StreamingOptions:
        """The defaults for a model on a GPU (`gpu`) or the CPU, `min_chunk_s` and `agreement` unless given. A GPU decodes a
        buffer in about 0.06 s, so it decodes every GPU_MIN_CHUNK_S: tiny.en's median commit latency on an
        H200 is then 0.87-0.93 s a recording, against about 1.5 s at 0.8 s, and 32 streams are carried in real
        time (median 1.65 s); on simulated time the text is 0.2 WER points further from offline than at 0.8 s
        (docs/measurements.md, issue 24)."""
        if min_chunk_s is None:
            min_chunk_s = GPU_MIN_CHUNK_S if gpu else cls.min_chunk_s
        return cls(min_chunk_s=min_chunk_s, agreement=cls.agreement if agreement is None else agreement)

    def __post_init__(self) -> None:
        if self.min_chunk_s <= 0:
            raise WhisperError(f"min_chunk_s must be positive, got {self.min_chunk_s}")
        if self.agreement < 2:
            raise WhisperError(f"agreement must be at least 2 decodes, got {self.agreement}")
        if not 0 <= self.lookahead_s < _FORCED_KEEP_S:
            raise WhisperError(f"lookahead_s must be at least 0 and under {_FORCED_KEEP_S:g} s, got {self.lookahead_s}")
        if not 0 < self.trim_s <= self.max_buffer_s <= WINDOW_S - _EDGE_S:
            raise WhisperError(f"need 0 < trim_s <= max_buffer_s <= {WINDOW_S - _EDGE_S:g} s, got "
                               f"{self.trim_s} and {self.max_buffer_s}")
        if not 0 <= self.keep_s < self.trim_s:
            raise WhisperError(f"need 0 <= keep_s < trim_s, got {self.keep_s} and {self.trim_s} (keep_s 0: cut at the "
                               "last committed sentence end)")
        if self.min_chunk_s > self.max_buffer_s - self.keep_s:
            # more new audio than a cut buffer has room for: every decode would drop its newest words
            raise WhisperError(f"min_chunk_s must be at most max_buffer_s - keep_s "
                               f"({self.max_buffer_s - self.keep_s:g} s), got {self.min_chunk_s}")
        if self.max_buffer_s <= _FORCED_KEEP_S:
            raise WhisperError(f"max_buffer_s must be over {_FORCED_KEEP_S:g} s, got {self.max_buffer_s}")
        if self.prompt_chars < 0:
            raise WhisperError(f"prompt_chars must not be negative, got {self.prompt_chars}")


@dataclass
class StreamUpdate:
    """What one decode of the buffer changed: the words committed by it, in order, and the tentative tail
    after them (each word openai-whisper's dict: word, start, end, probability; times in the stream's)."""

    committed: list[dict] = field(default_factory=list)
    tentative: list[dict] = field(default_factory=list)

    @property
    def committed_text(self) -> str:
        return words_text(self.committed)

    @property
    def tentative_text(self) -> str:
        return words_text(self.tentative)


def words_text(words: list[dict]) -> str:
    return "".join(w["word"] for w in words)


def _ends_sentence(word: dict) -> bool:
    return word["word"].rstrip().endswith(SENTENCE_ENDS)


def _agreed(words: list[dict], reference: list[dict]) -> int:
    """How many words from the start two hypotheses agree on (`_key`)."""
    n = 0
    while n < min(len(words), len(reference)) and _key(words[n]) == _key(reference[n]):
        n += 1
    return n


def _key(word: dict) -> str:
    """A word as two hypotheses are compared: its text, punctuation included (a commit that picked one of two
    punctuations would make the prompt, and with it the following text, drift out of the model's style)."""
    return word["word"].strip()


class StreamingTranscriber:
    """One audio stream, 16 kHz mono float32 samples `feed` in as they arrive; each `update` decodes the
    buffer once and returns what it committed; `finish` commits the rest at the end of the stream.

    `feed` may be called from another thread than `update`; `update` and `finish` from one thread at a time.
    Without `options`, decodes are greedy at temperature 0 without fallback: agreement needs decodes that
    change only with the audio, where a fallback's sampling differs each time (measured: docs/measurements.md).
    """

    def __init__(self, model: Engine, options: TranscribeOptions | None = None,
                 streaming: StreamingOptions = StreamingOptions()):
        options = options or TranscribeOptions(temperature=(0.0,))
        if options.batch_size is not None or options.clip_timestamps not in ((), (0.0,)):
            raise WhisperError("a stream decodes its buffer with the sequential loop: no batch_size or clip_timestamps")
        self.model, self.streaming = model, streaming
        self.options = replace(options, decoding=replace(options.decoding, word_timestamps=True))
        self.language = options.decoding.language  # a multilingual model's is detected, then kept from the first commit
        self._detected: str | None = None
        self._lock = threading.Lock()
        self._audio = np.zeros(0, dtype=np.float32)  # the buffer
        self._offset = 0.0  # the stream time of the buffer's first sample
        self._decoded_until = 0.0  # the stream time up to which the last decode read
        self.committed: list[dict] = []  # every committed word
        self._committed_in_buffer: list[dict] = []  # those after the buffer's start
        self._hypothesis: list[dict] = []  # the last decode's words after the committed ones
        self._earlier: list[list[dict]] = []  # those of the `agreement` - 2 decodes before it, as they were left
        self._segment_ends: set[float] = set()  # the last decode's words that ended one of its segments (their ends)
        self._committed_segment_ends: set[float] = set()  # those of them committed, in the buffer: `_sentence_ends`
        # the last decode's tokens, while the buffer starts where it did: the next decode reads the same audio and
        # more after the same prompt, so its greedy tokens start with most of them (a draft, `DecodingOptions`)
        self._draft: tuple[int, ...] = ()
        self._prompt_looped = False  # the buffer's decodes loop after the committed text: `_transcribe`
        self.decodes = 0

    @property
    def fed_s(self) -> float:
        """Seconds of audio fed so far."""
        with self._lock:
            return self._offset + self._audio.size / SAMPLE_RATE

    @property
    def pending_s(self) -> float:
        """Seconds fed that no decode has read yet."""
        return self.fed_s - self._decoded_until

    @property
    def buffer_s(self) -> float:
        with self._lock:
            return self._audio.size / SAMPLE_RATE

    @property
    def text(self) -> str:
        return words_text(self.committed)

    def feed(self, samples: np.ndarray) -> None:
        """Append 16 kHz mono samples (float32 in [-1, 1])."""
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise WhisperError(f"a stream takes 1-D chunks of 16 kHz mono samples, got shape {samples.shape}")
        with self._lock:
            self._audio = np.concatenate([self._audio, samples])

    def update(self) -> StreamUpdate:
        """Decode the buffer (at most one window of it) and commit the words this decode and the previous
        ones (`agreement` decodes in all) agree on, up to `lookahead_s` before the end of the audio decoded."""
        words = self._decode()
        ready = self._heard_through(words, _agreed(words, self._agreement_reference()))
        committed = self._commit(words[:ready])
        if self.streaming.agreement > 2:
            self._earlier = [*self._earlier, self._hypothesis][2 - self.streaming.agreement:]
        self._hypothesis = words[ready:]
        committed += self._trim()
        return StreamUpdate(committed, list(self._hypothesis))

    def _agreement_reference(self) -> list[dict]:
        """The words a new decode must agree with to commit them: the previous decode's after the committed, as
        far as the decodes before it (less the words committed since) agree with them."""
        if len(self._earlier) < self.streaming.agreement - 2:
            return []
        reference = self._hypothesis
        for earlier in self._earlier:
            reference = reference[:_agreed(reference, self._after_committed(earlier))]
        return reference

    def _heard_through(self, words: list[dict], agreed: int) -> int:
        """How many of the `agreed` first words to commit: up to the last one ending `lookahead_s` before the
        end of the audio decoded."""
        heard_until = self._decoded_until - self.streaming.lookahead_s
        while agreed and words[agreed - 1]["end"] > heard_until:
            agreed -= 1
        return agreed

    def finish(self) -> StreamUpdate:
        """The end of the stream: what is left is decoded and committed, one window at a time (each cut as
        `_force` cuts)."""
        committed: list[dict] = []
        while True:
            if self.pending_s > 0:
                self._hypothesis = self._decode()
            if self.pending_s <= 0:
                committed += self._commit(self._hypothesis)
                self._hypothesis = []
                return StreamUpdate(committed, [])
            offset = self._offset
            committed += self._force(self._decoded_until, self._decoded_until - _FORCED_KEEP_S)
            if self._offset == offset:  # a word of no length at the buffer's start: go on all the same
                self._cut_at(self._decoded_until - _FORCED_KEEP_S)

    def result(self) -> dict:
        """The committed transcript as `transcribe` returns one: text, segments (cut after sentences and at
        pauses of 2 s or more), language."""
        segments: list[dict] = []
        current: list[dict] = []
        for i, word in enumerate(self.committed):
            current.append(word)
            following = self.committed[i + 1] if i + 1 < len(self.committed) else None
            if following is None or _ends_sentence(word) or following["start"] - word["end"] >= 2.0:
                segments.append({"id": len(segments), "start": current[0]["start"], "end": current[-1]["end"],
                                 "text": words_text(current), "words": current})
                current = []
        return {"text": self.text, "segments": segments, "language": self.language}

    def _decode(self) -> list[dict]:
        """The buffer's words after those committed, in stream time; when the buffer holds more than one
        window, those of its first window without the last second's (they may be cut short)."""
        with self._lock:
            audio, offset = self._audio, self._offset
        clipped = audio.size > self.streaming.max_buffer_s * SAMPLE_RATE
        if clipped:
            audio = audio[: round(self.streaming.max_buffer_s * SAMPLE_RATE)]
        end = offset + audio.size / SAMPLE_RATE
        options = replace(self.options, decoding=replace(self.options.decoding, draft=self._draft,
                                                          language=self.language or self.options.decoding.language))
        if audio.size:
            result = self._transcribe(audio, options)
            self._detected = result["language"]
            self._draft = tuple(t for s in result["segments"] for t in s["tokens"])
            seconds = audio.size / SAMPLE_RATE  # an aligned time can run past the audio's end
            segments = [[{**w, "start": round(min(w["start"], seconds) + offset, 3),
                          "end": round(min(w["end"], seconds) + offset, 3)} for w in s.get("words", [])]
                        for s in result["segments"]]
            words = [w for segment in segments for w in segment]
            self._segment_ends = {segment[-1]["end"] for segment in segments[:-1] if segment}
        else:
            words, self._segment_ends = [], set()
        self.decodes += 1
        self._decoded_until = end
        if clipped:
            words = [w for w in words if w["end"] <= end - _EDGE_S]
        return self._new_words(words)

    def _transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> dict:
        """The buffer's first window decoded after the stream's committed text (`_prompt`). A text caught in a loop
        there is read again after the caller's prompt alone, and that reading kept, until the buffer is cut, when
        it is no longer looped: at temperature 0 a prompt that ends mid-sentence can start a loop (a buffer cut
        after "...the auction begins at" read "5.5.5..." to the window's end), and once committed the loop was in
        every later decode's prompt, so the rest of the stream was lost (docs/measurements.md, issue 24)."""
        # the buffer then silence (the log-mel of zeros) to a whole window, where the sequential loop pads a
        # short window's log-mel with zeros, as openai-whisper's does: the features of a broadband noise, which
        # every decode of a stream would read right after its newest words (docs/measurements.md, issue 24)
        mel = front_end(np.pad(audio, (0, max(0, N_SAMPLES - audio.size))), options, self.model.dims.n_mels)

        def decode(options: TranscribeOptions) -> dict:
            return transcribe_speech(self.model, mel, options, max_windows=1)

        prompt = None if self._prompt_looped else self._prompt()
        if not prompt:
            return decode(options)
        result = decode(replace(options, initial_prompt=prompt))
        if not _looped(result, options):
            return result
        retry = decode(replace(options, decoding=replace(options.decoding, draft=())))  # not the loop's tokens
        if _looped(retry, options):
            return result  # the audio's own loop: the offline loop keeps one at its last temperature too
        self._prompt_looped = True
        return retry

    def _prompt(self) -> str | None:
        """The committed text before the buffer (its last `prompt_chars`) when it holds a sentence end; None: the
        caller's initial prompt. Without one it is in tiny.en's unpunctuated style (a near-tie at a decode's first
        segment end, a timestamp token against a comma, sets a decode's style), and as the prompt it held every
        later decode in that style, cut mid-sentence (docs/measurements.md, issue 24)."""
        done = len(self.committed) - len(self._committed_in_buffer)
        if done == 0 or not self.streaming.prompt_chars:
            return None
        text = words_text(self.committed[:done])[-self.streaming.prompt_chars:]
        return text if any(end in text for end in SENTENCE_ENDS) else None

    def _new_words(self, words: list[dict]) -> list[dict]:
        """A hypothesis' words after the committed ones. A decode reads the buffer's committed words again:
        the new words follow the first run of the last 2 to 5 of them, found by their text (a run starting
        before the last committed word's end: the same words said again later are new); of those, the ones
        starting after the last committed word's end (less 0.1 s: aligned times overlap), without a repeat of
        the last committed words (up to 5) at their head. By text first: a decode that stops early can
        stretch a committed word's aligned time seconds past its place, and by time alone that word was
        committed twice and the words a later decode read before that time were dropped (a whole sentence
        of one recording; docs/measurements.md, issue 24)."""
        if not self.committed:
            return words
        last_end = self.committed[-1]["end"]
        done = [_key(w) for w in self._committed_in_buffer]
        keys = [_key(w) for w in words]
        for n in range(min(len(done), 5), 1, -1):
            after = next((i + n for i in range(len(keys) - n + 1)
                          if keys[i:i + n] == done[-n:] and words[i]["start"] < last_end), None)
            if after is not None:
                words = words[after:]
                break
        words = self._after_committed(words)
        if words and abs(words[0]["start"] - last_end) < 1.0:
            for n in range(min(len(done), len(words), 5), 0, -1):
                if done[-n:] == [_key(w) for w in words[:n]]:
                    return words[n:]
        return words

    def _after_committed(self, words: list[dict]) -> list[dict]:
        """The words starting after the last committed word's end (less 0.1 s: aligned times overlap)."""
        if not self.committed:
            return words
        last_end = self.committed[-1]["end"]
        return [w for w in words if w["start"] > last_end - 0.1]

    def _commit(self, words: list[dict]) -> list[dict]:
        if words and self.language is None:
            self.language = self._detected
        self.committed += words
        self._committed_in_buffer += words
        self._committed_segment_ends |= {w["end"] for w in words} & self._segment_ends
        return words

    def _trim(self) -> list[dict]:
        """Cut the buffer once it is over `trim_s`: at the first committed sentence end that leaves at most
        `keep_s` of it, else the last one; over `max_buffer_s` without one, after its last committed word, or
        (none) commit the tentative words before its last seconds (`_force`). Returns the words so committed."""
        length = self.buffer_s
        if length <= self.streaming.trim_s:
            return []
        done = self._committed_in_buffer
        sentence_ends = self._sentence_ends()
        if sentence_ends:
            end = self._offset + length
            self._cut_at(next((e for e in sentence_ends if end - e <= self.streaming.keep_s), sentence_ends[-1]))
            return []
        if length <= self.streaming.max_buffer_s:
            return []
        if done:
            self._cut_at(done[-1]["end"])
            return []
        keep_from = self._decoded_until - _FORCED_KEEP_S
        return self._force(keep_from, keep_from)

    def _force(self, until: float, keep_from: float) -> list[dict]:
        """Commit the tentative words ending by `until` without waiting for agreement, up to the last of them
        that ends a sentence (or one of Whisper's segments) when one does, and cut the buffer after them (when
        there are none, at `keep_from` or after the last committed word). Returns them. A cut mid-sentence makes
        the next decode's prompt end mid-sentence: after "...ask not what your country can do for", tiny.en read
        the rest of the buffer, "you. Ask what you can do for your country.", as "your country." (a stream sent
        in one burst; docs/measurements.md, issue 24)."""
        forced = [w for w in self._hypothesis if w["end"] <= until]
        ends = [i + 1 for i, w in enumerate(forced) if _ends_sentence(w) or w["end"] in self._segment_ends]
        if ends:
            forced = forced[:ends[-1]]
        self._hypothesis = self._hypothesis[len(forced):]
        self._commit(forced)
        if forced:
            self._cut_at(forced[-1]["end"])
        else:
            done = self._committed_in_buffer
            self._cut_at(max(keep_from, done[-1]["end"]) if done else keep_from)
        return forced

    def _sentence_ends(self) -> list[float]:
        """The ends of the buffer's committed sentences that a cut can move its start to: by a sample at least
        (a cut at the start would be taken again and again). A committed word that ended one of Whisper's
        segments in the decode it was committed from counts as a sentence end: in tiny.en's unpunctuated style
        the segments still end where sentences do, and the buffer was otherwise cut at max_buffer_s after its
        last committed word, mid-sentence (docs/measurements.md, issue 24)."""
        return [w["end"] for w in self._committed_in_buffer
                if (_ends_sentence(w) or w["end"] in self._committed_segment_ends)
                and w["end"] > self._offset + 0.5 / SAMPLE_RATE]

    def _cut_at(self, time_s: float) -> None:
        with self._lock:
            n = min(max(0, round((time_s - self._offset) * SAMPLE_RATE)), self._audio.size)
            self._audio = self._audio[n:]
            self._offset += n / SAMPLE_RATE
            cut = self._offset
        if n:
            self._draft = ()  # the next decode's audio starts elsewhere
            self._prompt_looped = False  # and after other text
        # the word cut at leaves too: the offset is counted in whole samples and summed, so it can fall a hair
        # before that word's end, which kept the word (and its sentence end) in the buffer: a stream cut at it
        # for ever without moving, committing nothing more (measured: docs/measurements.md, issue 24)
        self._committed_in_buffer = [w for w in self._committed_in_buffer if w["end"] > max(cut, time_s)]
        self._committed_segment_ends = {t for t in self._committed_segment_ends if t > max(cut, time_s)}


def _looped(result: dict, options: TranscribeOptions) -> bool:
    """A decode whose text compresses too well (its window's ratio, on each of its segments)."""
    return any(options.is_repetitive(s["compression_ratio"]) for s in result["segments"])


def run(transcriber: StreamingTranscriber, chunks: Iterable[np.ndarray],
        on_update: Callable[[StreamUpdate], None]) -> dict:
    """Feed `chunks` (as they come: a live source blocks until its next one) from a thread of their own, and
    decode whenever `min_chunk_s` of new audio has arrived; `on_update` gets each update, the last from
    `finish`. Returns the transcript (`StreamingTranscriber.result`)."""
    arrived = threading.Condition()
    state: dict = {"ended": False, "error": None}

    def read() -> None:
        try:
            for chunk in chunks:
                transcriber.feed(chunk)
                with arrived:
                    arrived.notify()
        except (WhisperError, OSError) as e:
            state["error"] = e
        finally:
            with arrived:
                state["ended"] = True
                arrived.notify()

    reader = threading.Thread(target=read, name="stream-reader", daemon=True)
    reader.start()
    min_chunk = transcriber.streaming.min_chunk_s
    while True:
        with arrived:
            arrived.wait_for(lambda: state["ended"] or transcriber.pending_s >= min_chunk)
            ended = state["ended"]
        if ended:
            break
        on_update(transcriber.update())
    reader.join()
    if state["error"] is not None:
        raise state["error"]
    on_update(transcriber.finish())
    return transcriber.result()


def replay(transcriber: StreamingTranscriber, audio: np.ndarray,
           on_update: Callable[[StreamUpdate], None]) -> dict:
    """A recording streamed on simulated time, as fast as the decodes go: fed `min_chunk_s` at a time and
    decoded after each, so the updates fall where a live source's would if every decode kept up, and every
    run gives the same text (with `run`, where the decodes fall depends on how fast the chunks arrive).
    Returns the transcript (`StreamingTranscriber.result`)."""
    step = max(1, round(transcriber.streaming.min_chunk_s * SAMPLE_RATE))
    for first in range(0, audio.size, step):
        transcriber.feed(audio[first:first + step])
        on_update(transcriber.update())
    on_update(transcriber.finish())
    return transcriber.result()


def paced(audio: np.ndarray, speed: float = 1.0, chunk_s: float = 0.1) -> Iterator[np.ndarray]:
    """A recording's chunks as a live source gives them: each when the time it ends has come, at `speed` (> 0)
    times real time."""
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed} (replay streams a recording without the clock)")
    step = max(1, round(chunk_s * SAMPLE_RATE))
    start = time.perf_counter()
    for first in range(0, audio.size, step):
        chunk = audio[first:first + step]
        delay = start + (first + chunk.size) / SAMPLE_RATE / speed - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield chunk


def pcm_chunks(stream: BinaryIO, chunk_s: float = 0.1, name: str = "stdin") -> Iterator[np.ndarray]:
    """Raw 16-bit little-endian 16 kHz mono PCM from a byte stream (a recorder's pipe), in chunks."""
    size = 2 * max(1, round(chunk_s * SAMPLE_RATE))
    read = getattr(stream, "read1", stream.read)  # read1: what has arrived, without waiting for a whole chunk
    tail = b""
    while True:
        data = read(size)
        if not data:
            break
        data = tail + data
        whole = len(data) - len(data) % 2
        tail = data[whole:]
        if whole:
            yield from_pcm16(np.frombuffer(data[:whole], dtype="<i2"))
    if tail:
        raise WhisperError(f"{name}: ended inside a sample (an odd number of bytes): not 16-bit PCM")
