"""Word timestamps: openai-whisper's alignment of a window's text with its audio (`whisper/timing.py`).

The decoder's alignment heads attend from each text token to the audio frames it was read from. Their
cross-attention weights are normalised per head, smoothed along time with a median filter and averaged
over the heads on the device (`graph.alignment`); here dynamic time warping finds the monotonic path
through tokens and frames, and a word starts where the path reaches its first token. The rest turns token
timings into word timings and word timings into segment bounds, as openai-whisper does.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

import numpy as np

from .features import TOKENS_PER_SECOND
from .tokenizer import Tokenizer

MEDIAN_FILTER_WIDTH = 7
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"


@dataclass
class Alignment:
    """What the device computes for one window's text: each text token's probability, and the alignment
    matrix [token, audio frame] (<|notimestamps|>, then the text tokens) that dynamic time warping reads.
    With a forced prefix its tokens come first among the text tokens (`prefix`): they are aligned with the
    audio too, but their words are not the window's."""

    text_token_probs: np.ndarray
    matrix: np.ndarray
    prefix: list[int] = field(default_factory=list)


@dataclass
class WordTiming:
    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


@dataclass
class WordOptions:
    """openai-whisper's word-timestamp options."""

    prepend_punctuations: str = PREPEND_PUNCTUATIONS
    append_punctuations: str = APPEND_PUNCTUATIONS
    punctuation: str = field(init=False)

    def __post_init__(self) -> None:
        self.punctuation = self.prepend_punctuations + self.append_punctuations


def segment_ends(tokens: list[int], timestamp_begin: int) -> tuple[list[int], bool]:
    """Where openai-whisper splits a window's decoded tokens into segments: after each pair of consecutive
    timestamps (the indices of the pairs' second tokens), and whether the tokens end with a single timestamp
    (the window's last segment is then finished, with no speech after it)."""
    is_ts = [t >= timestamp_begin for t in tokens]
    pairs = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    return pairs, is_ts[-2:] == [False, True]


def aligned_tokens(tokens: list[int], timestamp_begin: int) -> list[int]:
    """The part of a window's decoded tokens that becomes its segments, hence is aligned: all of them, or,
    where the window ends inside an unfinished segment, those up to its last pair of timestamps."""
    pairs, single_timestamp_ending = segment_ends(tokens, timestamp_begin)
    if pairs and not single_timestamp_ending:
        return tokens[:pairs[-1]]
    return tokens


# --- from attention to token timings --------------------------------------------------------------------

def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The monotonic path of least summed `cost` [N, M] from (0, 0) to (N-1, M-1), moving one row, one
    column or both at each step; returns its row and column indices.

    openai-whisper's `dtw_cpu` (a cell takes the diagonal predecessor if it is strictly the least, else the
    one above if strictly the least, else the one to the left), row by row: along a row a cell depends on the
    one to its left only through min(left, K), K the least of the diagonal and the upper predecessor (infinite
    where the two tie: the left one is taken then), so the row is a running minimum over prefix sums, numpy
    vector operations instead of N * M Python steps.
    """
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    total[0, 0] = 0.0
    prefix = np.zeros((n, m + 1))
    np.cumsum(cost, axis=1, out=prefix[:, 1:])
    running = np.empty(m + 1)
    running[0] = np.inf
    for i in range(1, n + 1):
        diagonal, above = total[i - 1, :-1], total[i - 1, 1:]
        k = np.minimum(diagonal, above)
        k[diagonal == above] = np.inf
        np.minimum.accumulate(k - prefix[i - 1, :-1], out=running[1:])
        np.add(running, prefix[i - 1], out=total[i])
    diagonal, above, left = total[:-1, :-1], total[:-1, 1:], total[1:, :-1]
    trace = np.full((n + 1, m + 1), 2, np.int8)
    trace[1:, 1:][(above < diagonal) & (above < left)] = 1
    trace[1:, 1:][(diagonal < above) & (diagonal < left)] = 0
    return _backtrace(trace)


def _backtrace(trace: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = trace.shape[0] - 1, trace.shape[1] - 1
    trace[0, :], trace[:, 0] = 2, 1
    moves, width = trace.tobytes(), trace.shape[1]  # bytes index in tens of nanoseconds, numpy in microseconds
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        move = moves[i * width + j]
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    rows, cols = np.array(path[::-1]).T
    return rows, cols


def find_alignment(alignment: Alignment, tokenizer: Tokenizer, text_tokens: list[int]) -> list[WordTiming]:
    """Word timings (seconds from the window's start) of `text_tokens`, the text `alignment` was made of
    (after its prefix: the prefix's words are split apart from the text's and left out)."""
    if not text_tokens:
        return []
    text_indices, time_indices = dtw(-alignment.matrix.astype(np.float64))

    prefix_words = split_to_word_tokens(tokenizer, alignment.prefix)[1] if alignment.prefix else []
    words, word_tokens = split_to_word_tokens(tokenizer, text_tokens + [tokenizer.eot])
    if len(word_tokens) <= 1:
        return []
    word_boundaries = np.pad(np.cumsum([len(t) for t in prefix_words + word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    starts, ends = jump_times[word_boundaries[:-1]], jump_times[word_boundaries[1:]]
    sums = np.add.reduceat(alignment.text_token_probs, word_boundaries[:-1])  # each word's tokens
    probabilities = sums / np.diff(word_boundaries).astype(sums.dtype)
    text = slice(len(prefix_words), None)
    return [WordTiming(*timing) for timing in zip(words, word_tokens, starts[text].tolist(), ends[text].tolist(),
                                                  probabilities[text].tolist())]


# --- words from tokens -----------------------------------------------------------------------------------

def split_to_word_tokens(tokenizer: Tokenizer, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
    """Words and their tokens: at spaces and punctuation, or at every character in languages written
    without spaces."""
    if tokenizer.language in {"zh", "ja", "th", "lo", "my", "yue"}:
        return split_tokens_on_unicode(tokenizer, tokens)
    words: list[str] = []
    word_tokens: list[list[int]] = []
    for subword, tokens_of in zip(*split_tokens_on_unicode(tokenizer, tokens)):
        special = tokens_of[0] >= tokenizer.eot
        if special or subword.startswith(" ") or subword.strip() in string.punctuation or not words:
            words.append(subword)
            word_tokens.append(tokens_of)
        else:
            words[-1] += subword
            word_tokens[-1].extend(tokens_of)
    return words, word_tokens


def split_tokens_on_unicode(tokenizer: Tokenizer, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
    """Runs of tokens that decode to whole characters (a character's bytes can span tokens)."""
    replacement = "\ufffd"
    full = tokenizer.decode_with_timestamps(tokens)
    words: list[str] = []
    word_tokens: list[list[int]] = []
    current: list[int] = []
    offset = 0
    for token in tokens:
        current.append(token)
        decoded = tokenizer.decode_with_timestamps(current)
        if replacement not in decoded or full[offset + decoded.index(replacement)] == replacement:
            words.append(decoded)
            word_tokens.append(current)
            current = []
            offset += len(decoded)
    return words, word_tokens


def merge_punctuations(alignment: list[WordTiming], prepended: str, appended: str) -> None:
    """Opening punctuation joins the word after it, closing punctuation the word before it (in place)."""
    i, j = len(alignment) - 2, len(alignment) - 1
    while i >= 0:
        previous, following = alignment[i], alignment[j]
        if previous.word.startswith(" ") and previous.word.strip() in prepended:
            following.word, following.tokens = previous.word + following.word, previous.tokens + following.tokens
            previous.word, previous.tokens = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(alignment):
        previous, following = alignment[i], alignment[j]
        if not previous.word.endswith(" ") and following.word in appended:
            previous.word, previous.tokens = previous.word + following.word, previous.tokens + following.tokens
            following.word, following.tokens = "", []
        else:
            i = j
        j += 1


# --- words into segments ---------------------------------------------------------------------------------

def add_word_timestamps(segments: list[dict], timings: list[WordTiming], eot: int, time_offset: float,
                        last_speech_timestamp: float, options: WordOptions) -> None:
    """Give each segment (of one window, `time_offset` seconds into the recording) its `words`, and move its
    bounds to them, as openai-whisper does: words longer than twice the median word are cut at sentence ends
    and after pauses, and a segment's bound is kept where its first or last word is much too long."""
    text_tokens_per_segment = [[t for t in segment["tokens"] if t < eot] for segment in segments]
    durations = np.array([t.end - t.start for t in timings])
    durations = durations[durations.nonzero()]
    median_duration = min(0.7, float(np.median(durations))) if len(durations) > 0 else 0.0
    max_duration = median_duration * 2
    if len(durations) > 0:  # words at sentence boundaries no longer than twice the median
        for i in range(1, len(timings)):
            if timings[i].end - timings[i].start > max_duration:
                if timings[i].word in SENTENCE_END_MARKS:
                    timings[i].end = timings[i].start + max_duration
                elif timings[i - 1].word in SENTENCE_END_MARKS:
                    timings[i].start = timings[i].end - max_duration
    merge_punctuations(timings, options.prepend_punctuations, options.append_punctuations)

    word_index = 0
    for segment, text_tokens in zip(segments, text_tokens_per_segment):
        saved_tokens = 0
        words: list[dict] = []
        while word_index < len(timings) and saved_tokens < len(text_tokens):
            timing = timings[word_index]
            if timing.word:
                words.append({"word": timing.word, "start": round(time_offset + timing.start, 2),
                              "end": round(time_offset + timing.end, 2), "probability": timing.probability})
            saved_tokens += len(timing.tokens)
            word_index += 1
        if words:
            _fit_segment(segment, words, last_speech_timestamp, median_duration, max_duration)
            last_speech_timestamp = segment["end"]
        segment["words"] = words


def _fit_segment(segment: dict, words: list[dict], last_speech_timestamp: float, median_duration: float,
                 max_duration: float) -> None:
    # The first and second word after a pause no longer than twice the median word.
    if words[0]["end"] - last_speech_timestamp > median_duration * 4 and (
            words[0]["end"] - words[0]["start"] > max_duration
            or (len(words) > 1 and words[1]["end"] - words[0]["start"] > max_duration * 2)):
        if len(words) > 1 and words[1]["end"] - words[1]["start"] > max_duration:
            boundary = max(words[1]["end"] / 2, words[1]["end"] - max_duration)
            words[0]["end"] = words[1]["start"] = boundary
        words[0]["start"] = max(0, words[0]["end"] - max_duration)
    # The segment's own start where the first word is much too long, else the first word's start.
    if segment["start"] < words[0]["end"] and segment["start"] - 0.5 > words[0]["start"]:
        words[0]["start"] = max(0, min(words[0]["end"] - median_duration, segment["start"]))
    else:
        segment["start"] = words[0]["start"]
    # Likewise at the end.
    if segment["end"] > words[-1]["start"] and segment["end"] + 0.5 < words[-1]["end"]:
        words[-1]["end"] = max(words[-1]["start"] + median_duration, segment["end"])
    else:
        segment["end"] = words[-1]["end"]
