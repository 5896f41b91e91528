"""Decoding 30 s windows with openai-whisper's rules, over the device's `Inference`.

Logit filters (blank and symbol suppression, timestamp pairing), greedy and beam search, temperature
sampling, language detection, no-speech probability and the sequence ranker follow openai-whisper's
`decoding.py`, so that greedy fp32 output is token for token the same. The device side is declared here
as two protocols, `Decoder` (chosen once when a model is loaded) and `Inference` (one decoding run); this
module never touches a graph or a device buffer. Greedy steps after the first choose their tokens on the
device under the same rules (`rules`), so that only the chosen tokens come back to the host.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, Sequence, cast

import numpy as np

from . import rules
from .alignment import Alignment, aligned_tokens
from .errors import WhisperError
from .audio import CHUNK_LENGTH
from .features import N_FRAMES
from .tokenizer import Tokenizer, language_code
from .weights import ModelDimensions


@dataclass(frozen=True)
class DecodingOptions:
    """openai-whisper's decoding options, checked when made."""

    task: str = "transcribe"  # or "translate"
    language: str | None = None  # code or name; None: detect
    temperature: float = 0.0
    sample_len: int | None = None  # most tokens to sample; default n_text_ctx // 2
    best_of: int | None = None  # independent samples when temperature > 0
    beam_size: int | None = None  # beams when temperature == 0
    patience: float | None = None
    length_penalty: float | None = None  # None: divide by length
    prompt: str | list[int] | None = None  # previous text, for context
    prefix: str | list[int] | None = None  # forced start of the current window
    suppress_tokens: str | Sequence[int] | None = "-1"  # "-1": openai-whisper's non-speech symbols
    suppress_blank: bool = True
    # Against loops (faster-whisper's names, off by default): a token this window already sampled has its
    # logit divided (positive) or multiplied (negative) by repetition_penalty; no n-gram of this size is
    # sampled twice in a window. Either decodes greedy windows step by step on the host.
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    without_timestamps: bool = False
    max_initial_timestamp: float | None = 1.0
    seed: int | None = None  # for temperature sampling
    word_timestamps: bool = False  # also run the alignment pass over the tokens that become segments
    # Tokens the sampled ones are expected to start with (a stream's previous decode of the same audio): a
    # greedy decode of one row feeds them all in its first step and keeps the run of them it would have chosen,
    # then steps on from the first it would not (on a decoder that `takes_drafts`: the CPU's). The tokens
    # decoded are greedy's either way (up to float rounding between the two forms of the pass); only the
    # number of sequential steps changes.
    draft: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.task not in ("transcribe", "translate"):
            raise WhisperError(f"unknown task '{self.task}': use transcribe or translate")
        if self.language is not None:
            object.__setattr__(self, "language", language_code(self.language))
        object.__setattr__(self, "draft", tuple(int(t) for t in self.draft))
        if self.temperature < 0:
            raise WhisperError(f"temperature must be at least 0, got {self.temperature}")
        for name in ("beam_size", "best_of", "sample_len"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise WhisperError(f"{name} must be at least 1, got {value}")
        if self.beam_size is not None and self.best_of is not None:
            raise WhisperError("beam_size and best_of can't be given together")
        if self.temperature == 0 and self.best_of is not None:
            raise WhisperError("best_of with greedy sampling (temperature 0) is meaningless")
        if self.beam_size is not None and self.temperature != 0:
            raise WhisperError("beam search needs temperature 0")
        if self.patience is not None and (self.beam_size is None or self.patience <= 0):
            raise WhisperError(f"patience needs beam_size and must be positive, got {self.patience}")
        if self.repetition_penalty <= 0:
            raise WhisperError(f"repetition_penalty must be positive, got {self.repetition_penalty}")
        if self.no_repeat_ngram_size < 0:
            raise WhisperError(f"no_repeat_ngram_size must not be negative, got {self.no_repeat_ngram_size}")
        if self.length_penalty is not None and not 0 <= self.length_penalty <= 1:
            raise WhisperError(f"length_penalty must be between 0 and 1, got {self.length_penalty}")
        if isinstance(self.suppress_tokens, str):
            try:
                object.__setattr__(self, "suppress_tokens", tuple(int(t) for t in self.suppress_tokens.split(",") if t))
            except ValueError:
                raise WhisperError(f"suppress_tokens must be comma-separated integers, got '{self.suppress_tokens}'") from None

    @property
    def greedy(self) -> bool:
        """Greedy decoding whose steps after the first choose their tokens on the device (the repetition
        guards need every step's logits on the host)."""
        return (self.beam_size is None and self.temperature == 0 and self.repetition_penalty == 1
                and self.no_repeat_ngram_size == 0)


@dataclass
class DecodingResult:
    language: str
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    avg_logprob: float = np.nan
    sum_logprob: float = np.nan
    no_speech_prob: float = np.nan
    temperature: float = np.nan
    compression_ratio: float = np.nan
    language_probs: dict[str, float] | None = None
    alignment: Alignment | None = None  # with word_timestamps: what the words' times are found from


# --- the device side -----------------------------------------------------------------------------------

Choices = list[tuple[np.ndarray, np.ndarray]]  # per step: each row's token and its log probability


class Inference(Protocol):
    """One decoding run on the device: a batch of rows, each with its audio's cross-attention keys and
    values and a self-attention cache that grows by the tokens fed."""

    def logits(self, tokens: np.ndarray, positions: Sequence[int] | None = None,
               ragged: np.ndarray | None = None) -> np.ndarray:
        """Feed tokens [batch, seq]; float32 logits [batch, n_pos, vocab] at `positions` (default the last).
        `ragged` (first call only, where the decoder keeps ragged rows): per row, how many of its last
        positions are padding."""
        ...

    def greedy(self, tokens: np.ndarray, rule_state: np.ndarray) -> Choices:
        """Feed each row's last token [batch, 1] and choose the next greedily under the rules of
        `rule_state` [batch, rules.STATE] and the run's suppressed tokens; one step's choices or several
        (the device then advances the rules itself), to be taken while rows go on."""
        ...

    def reorder(self, source_rows: np.ndarray) -> None:
        """Beam search: row i of the cache becomes row source_rows[i]."""
        ...

    def rewind(self, fed: int) -> None:
        """Keep the first `fed` tokens fed (the later ones are fed again), where the decoder `takes_drafts`."""
        ...


class Decoder(Protocol):
    """The device's decoder, chosen when a model is loaded (runtime.decoders)."""

    keeps_ragged_rows: bool  # can rows whose initial tokens differ in length go on in one run
    takes_drafts: bool  # does a greedy decode of one row feed its draft in the first step (its runs rewind)

    def start(self, features: Any, rows: np.ndarray, suppressed: tuple[int, ...] = ()) -> Inference:
        """A run decoding one row per entry of `rows` (indices into the encoded windows `features`)."""
        ...


class Aligner(Protocol):
    """The device's alignment pass (runtime.aligner), for word timestamps."""

    def align(self, inference: Any, rows: np.ndarray, sequences: list[list[int]], eot: int,
              text_from: list[int], frames: list[int]) -> list[Alignment]:
        """For each of the run's `rows` (its cross-attention over its window's audio is reused): the
        sequence to align, where its text starts, how many of its window's mel frames are audio."""
        ...


class DecodingModel(Protocol):
    """What decoding needs of a model."""

    @property
    def dims(self) -> ModelDimensions: ...

    @property
    def decoder(self) -> Decoder: ...

    @property
    def aligner(self) -> Aligner: ...

    def tokenizer(self, language: str | None = None, task: str | None = None) -> Tokenizer: ...


# --- small pieces ----------------------------------------------------------------------------------------

def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    m = np.max(x, axis=-1, keepdims=True)
    shifted = x - m
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True)).astype(np.float64)
    return e / e.sum(axis=-1, keepdims=True)


class LogitFilter(Protocol):
    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        """Change logits [batch, vocab] in place, given the tokens so far [batch, time]."""
        ...


class SuppressBlank:
    """No blank or end-of-text as the first sampled token."""

    def __init__(self, tokenizer: Tokenizer, sample_begin: int):
        self.ids = tokenizer.encode(" ") + [tokenizer.eot]
        self.sample_begin = sample_begin

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        if tokens.shape[1] == self.sample_begin:
            logits[:, self.ids] = -np.inf


class SuppressTokens:
    def __init__(self, ids: tuple[int, ...]):
        self.ids = list(ids)

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        logits[:, self.ids] = -np.inf


class RepetitionPenalty:
    """CTranslate2's repetition penalty (faster-whisper's `repetition_penalty`) over each row's sampled
    tokens: a positive logit divided by the penalty, a negative one multiplied."""

    def __init__(self, penalty: float, sample_begin: int):
        self.penalty, self.sample_begin = penalty, sample_begin

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        for row, sampled in enumerate(tokens[:, self.sample_begin:]):
            if sampled.size:
                ids = np.unique(sampled)
                values = logits[row, ids]
                logits[row, ids] = np.where(values > 0, values / self.penalty, values * self.penalty)


class NoRepeatNGram:
    """No n-gram twice among each row's sampled tokens (faster-whisper's `no_repeat_ngram_size`): every token
    that followed the row's last n - 1 tokens before is ruled out."""

    def __init__(self, size: int, sample_begin: int):
        self.size, self.sample_begin = size, sample_begin

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        n = self.size
        for row, sampled in enumerate(tokens[:, self.sample_begin:].tolist()):
            if len(sampled) < n:  # no earlier n-gram to repeat
                continue
            prefix = sampled[len(sampled) - n + 1:] if n > 1 else []
            banned = [sampled[i + n - 1] for i in range(len(sampled) - n + 1) if sampled[i:i + n - 1] == prefix]
            if banned:
                logits[row, banned] = -np.inf


class ApplyTimestampRules:
    """The timestamp rules (`rules`) on the host; a timestamp opens the window, at most
    `max_initial_timestamp_index` steps in."""

    def __init__(self, tokenizer: Tokenizer, sample_begin: int, max_initial_timestamp_index: int | None):
        self.tok = tokenizer
        self.sample_begin = sample_begin
        self.max_initial_timestamp_index = max_initial_timestamp_index

    def state(self, tokens: np.ndarray) -> np.ndarray:
        """rules.STATE of each row of tokens [batch, time]."""
        return rules.state(tokens[:, self.sample_begin:], self.tok.eot, self.tok.timestamp_begin, timestamps=True)

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        ts_begin = self.tok.timestamp_begin
        logits[:, self.tok.no_timestamps] = -np.inf
        rules.mask_outside(logits, rules.bounds(self.state(tokens), logits.shape[1]))
        if tokens.shape[1] == self.sample_begin:
            logits[:, :ts_begin] = -np.inf
            if self.max_initial_timestamp_index is not None:
                logits[:, ts_begin + self.max_initial_timestamp_index + 1:] = -np.inf
        logits[rules.timestamps_win(log_softmax(logits), ts_begin), :ts_begin] = -np.inf


# --- token choice ----------------------------------------------------------------------------------------

class TokenDecoder(Protocol):
    def update(self, tokens: np.ndarray, logits: np.ndarray, sum_logprobs: np.ndarray,
               inference: Inference) -> tuple[np.ndarray, bool]:
        """The next token of each row from its logits; (tokens with it appended, whether all rows ended)."""
        ...

    def finalize(self, tokens: np.ndarray, sum_logprobs: np.ndarray) -> tuple[list, list]:
        """Candidate sequences [audio][candidate] and their summed log probabilities."""
        ...


class GreedyDecoder:
    def __init__(self, temperature: float, eot: int, rng: np.random.Generator):
        self.temperature, self.eot, self.rng = temperature, eot, rng

    def update(self, tokens: np.ndarray, logits: np.ndarray, sum_logprobs: np.ndarray,
               inference: Inference) -> tuple[np.ndarray, bool]:
        logprobs = log_softmax(logits)
        if self.temperature == 0:
            next_tokens = logits.argmax(axis=-1)
        else:
            next_tokens = np.array([self.rng.choice(p.size, p=p) for p in _softmax(logits / self.temperature)])
        chosen = logprobs[np.arange(len(next_tokens)), next_tokens]
        return self.append(tokens, next_tokens, chosen, sum_logprobs)

    def append(self, tokens: np.ndarray, next_tokens: np.ndarray, logprobs: np.ndarray,
               sum_logprobs: np.ndarray) -> tuple[np.ndarray, bool]:
        """Add chosen tokens (end of text once a row has ended) and their log probabilities."""
        not_done = tokens[:, -1] != self.eot
        sum_logprobs += logprobs * not_done
        next_tokens = np.where(not_done, next_tokens, self.eot)
        tokens = np.concatenate([tokens, next_tokens[:, None]], axis=-1)
        return tokens, bool((tokens[:, -1] == self.eot).all())

    def finalize(self, tokens: np.ndarray, sum_logprobs: np.ndarray) -> tuple[list, list]:
        tokens = np.pad(tokens, [(0, 0), (0, 0), (0, 1)], constant_values=self.eot)
        return [[row for row in group] for group in tokens], sum_logprobs.tolist()


class BeamSearchDecoder:
    def __init__(self, beam_size: int, eot: int, patience: float | None):
        self.beam_size, self.eot = beam_size, eot
        self.max_candidates = round(beam_size * (patience or 1.0))
        if self.max_candidates <= 0:
            raise WhisperError(f"invalid beam size ({beam_size}) or patience ({patience})")
        self.finished: list[dict] | None = None

    def update(self, tokens: np.ndarray, logits: np.ndarray, sum_logprobs: np.ndarray,
               inference: Inference) -> tuple[np.ndarray, bool]:
        n_audio = tokens.shape[0] // self.beam_size
        if self.finished is None:
            self.finished = [{} for _ in range(n_audio)]
        logprobs = log_softmax(logits)
        next_tokens: list[tuple[int, ...]] = []
        sources: list[int] = []
        newly_finished: list[dict[tuple[int, ...], float]] = []
        for i in range(n_audio):
            scores, origin, finished = {}, {}, {}
            for j in range(self.beam_size):
                idx = i * self.beam_size + j
                prefix = tokens[idx].tolist()
                top = np.argsort(-logprobs[idx], kind="stable")[: self.beam_size + 1]
                for token in top:
                    seq = tuple(prefix + [int(token)])
                    scores[seq] = float(sum_logprobs[idx] + logprobs[idx, token])
                    origin[seq] = idx
            saved = 0
            for seq in sorted(scores, key=lambda s: scores[s], reverse=True):
                if seq[-1] == self.eot:
                    finished[seq] = scores[seq]
                else:
                    sum_logprobs[len(next_tokens)] = scores[seq]
                    next_tokens.append(seq)
                    sources.append(origin[seq])
                    saved += 1
                    if saved == self.beam_size:
                        break
            newly_finished.append(finished)
        tokens = np.array(next_tokens, dtype=np.int64)
        if sources != list(range(len(sources))):
            inference.reorder(np.array(sources))
        for previous, new in zip(self.finished, newly_finished):
            for seq in sorted(new, key=lambda s: new[s], reverse=True):
                if len(previous) >= self.max_candidates:
                    break
                previous[seq] = new[seq]
        return tokens, all(len(s) >= self.max_candidates for s in self.finished)

    def finalize(self, tokens: np.ndarray, sum_logprobs: np.ndarray) -> tuple[list, list]:
        finished = self.finished or [{} for _ in range(len(tokens))]
        for i, sequences in enumerate(finished):
            if len(sequences) < self.beam_size:  # not enough finished: add the best unfinished
                for j in np.argsort(sum_logprobs[i])[::-1]:
                    sequences[tuple(tokens[i, j].tolist() + [self.eot])] = float(sum_logprobs[i][j])
                    if len(sequences) >= self.beam_size:
                        break
        return ([[np.array(s) for s in seqs] for seqs in finished], [list(seqs.values()) for seqs in finished])


def rank(tokens: list[list[np.ndarray]], sum_logprobs: list[list[float]], length_penalty: float | None) -> list[int]:
    """The sequence ranker: index of the best candidate per audio, log probability over a length penalty."""
    best = []
    for seqs, logprobs in zip(tokens, sum_logprobs):
        penalties = [len(t) if length_penalty is None else ((5 + len(t)) / 6) ** length_penalty for t in seqs]
        best.append(int(np.argmax([lp / p for lp, p in zip(logprobs, penalties)])))
    return best


# --- the decoding task -----------------------------------------------------------------------------------

def language_probabilities(decoder: Decoder, features: Any,
                           tokenizer: Tokenizer) -> tuple[list[str], list[dict[str, float]]]:
    """The most likely language of each encoded window, and every language's probability, from the
    logits after <|startoftranscript|>."""
    if not tokenizer.multilingual:
        raise WhisperError("this model is English-only and has no language detection")
    n_audio = features.shape[0]
    run = decoder.start(features, np.arange(n_audio))
    logits = run.logits(np.full((n_audio, 1), tokenizer.sot, np.int64))[:, 0]
    lang_logits = logits[:, np.array(tokenizer.all_language_tokens)]
    probs = _softmax(lang_logits)
    codes = tokenizer.language_codes
    languages = [codes[int(np.argmax(row))] for row in lang_logits]
    return languages, [{c: float(p) for c, p in zip(codes, row)} for row in probs]


class DecodingTask:
    """Decodes a batch of encoded windows under one set of options. `prompts`: each window's own
    previous text (token lists, one per window) instead of `options.prompt`, for windows of different
    recordings decoded together; rows whose initial tokens differ in length are decoded in one batch
    where the device keeps ragged rows (greedy steps on the recorded step graph), otherwise in groups of
    equal length."""

    def __init__(self, model: DecodingModel, options: DecodingOptions, prompts: list[list[int]] | None = None):
        self.model, self.dims = model, model.dims
        language = options.language or ("en" if not model.dims.is_multilingual else None)
        self.options = options = replace(options, language=language)
        self.tokenizer = tok = model.tokenizer(language=language or "en", task=options.task)
        self.n_group = options.beam_size or options.best_of or 1
        self.n_ctx = model.dims.n_text_ctx
        self.sample_len = options.sample_len or model.dims.n_text_ctx // 2
        self.prefix = self._prefix()
        sot = tok.sot_sequence_including_notimestamps if options.without_timestamps else tok.sot_sequence
        self.suffix = (*sot, *self.prefix)  # every row's initial tokens end with it
        self.prompts = prompts

    def _prefix(self) -> tuple[int, ...]:
        prefix = self.options.prefix
        if not prefix:
            return ()
        tokens = self.tokenizer.encode(" " + prefix.strip()) if isinstance(prefix, str) else list(prefix)
        # openai-whisper's slice, kept as it is: with the default sample_len the bound is 0, and [-0:] keeps
        # the whole prefix
        return tuple(tokens[-(self.n_ctx // 2 - self.sample_len):])

    def initial_tokens(self, prompt: str | list[int] | None) -> tuple[int, ...]:
        """A row's tokens before the first sampled one: previous text (its last n_ctx // 2 - 1 tokens),
        start of transcript, language, task, prefix."""
        if not prompt:
            return self.suffix
        prompt_tokens = self.tokenizer.encode(" " + prompt.strip()) if isinstance(prompt, str) else list(prompt)
        return (self.tokenizer.sot_prev, *prompt_tokens[-(self.n_ctx // 2 - 1):], *self.suffix)

    def _suppress_tokens(self) -> tuple[int, ...]:
        tok = self.tokenizer
        ids = [int(t) for t in self.options.suppress_tokens or ()]  # a string was split when the options were made
        if -1 in ids:
            ids = [t for t in ids if t >= 0] + list(tok.non_speech_tokens)
        ids += [tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech]
        return tuple(sorted(set(ids)))

    def run(self, features: Any, frames: list[int] | None = None) -> list[DecodingResult]:
        """Decode encoded windows (device features [n_audio, 1500, d]); `frames`: how many of each window's
        mel frames are audio (word timestamps align the text with those; default all)."""
        n_audio = features.shape[0]
        if self.prompts is not None and len(self.prompts) != n_audio:
            raise WhisperError(f"internal error: {len(self.prompts)} prompts for {n_audio} windows")
        prompts: list = self.prompts if self.prompts is not None else [self.options.prompt] * n_audio
        heads = [self.initial_tokens(p) for p in prompts]
        languages: list[str | None] = [self.options.language] * n_audio
        lang_probs: list[dict[str, float] | None] = [None] * n_audio
        if self.options.language is None:
            detected, probs = language_probabilities(self.model.decoder, features, self.tokenizer)
            languages, lang_probs = list(detected), list(probs)
        self.frames = frames or [N_FRAMES] * n_audio
        rows = list(range(n_audio))
        if len({len(h) for h in heads}) == 1 or (self.options.greedy and self.model.decoder.keeps_ragged_rows):
            groups = [rows]
        else:
            groups = [[i for i in rows if len(heads[i]) == n] for n in sorted({len(h) for h in heads})]
        by_row: dict[int, DecodingResult] = {}
        for group in groups:
            decoded = self._decode(features, group, [heads[i] for i in group], [languages[i] for i in group])
            for i, result in zip(group, decoded):
                by_row[i] = replace(result, language_probs=lang_probs[i])
        return [by_row[i] for i in rows]

    def _align(self, inference: Inference, audio_rows: list[int], results: list[DecodingResult]) -> list[DecodingResult]:
        """Each result's alignment: the alignment pass over the text that becomes its segments, after its
        start-of-transcript sequence and <|notimestamps|>, as openai-whisper's find_alignment feeds it, and
        after the forced prefix (spoken in the window before the text: without it the text's first words
        would be placed on the prefix's audio); on the run's first row of each window, before the run's
        buffers go to another."""
        tok = self.tokenizer
        sequences, text_from = [], []
        for result in results:
            sot = list(self.model.tokenizer(result.language, self.options.task).sot_sequence)
            text = [t for t in aligned_tokens(result.tokens, tok.timestamp_begin) if t < tok.eot]
            sequences.append([*sot, tok.no_timestamps, *self.prefix, *text, tok.eot])
            text_from.append(len(sot))
        found = self.model.aligner.align(inference, np.arange(len(results)) * self.n_group, sequences, tok.eot,
                                         text_from, [self.frames[i] for i in audio_rows])
        return [replace(result, alignment=replace(alignment, prefix=list(self.prefix)))
                for result, alignment in zip(results, found)]

    def _decode(self, features: Any, audio_rows: list[int], heads: list[tuple[int, ...]],
                languages: list[str | None]) -> list[DecodingResult]:
        """Decode the windows `audio_rows` of `features`, each after its initial tokens `heads`."""
        tok, opts = self.tokenizer, self.options
        n_audio = len(audio_rows)
        # On the host every row is right-aligned (padded on the left), so that sampled tokens start at
        # one index for all rows, as the filters and the ranker expect; `pad` is each row's padding.
        self.sample_begin = max(len(h) for h in heads)
        self.sot_index = self.sample_begin - len(self.suffix) + self.suffix.index(tok.sot)
        pad = np.array([self.sample_begin - len(h) for h in heads])
        tokens = np.full((n_audio, self.sample_begin), tok.eot, np.int64)
        for k, head in enumerate(heads):
            tokens[k, pad[k]:] = head
        if opts.language is None:
            tokens[:, self.sot_index + 1] = [tok.to_language_token(str(lang)) for lang in languages]
        self._start_run()
        tokens, pad = np.repeat(tokens, self.n_group, axis=0), np.repeat(pad, self.n_group)
        suppressed = self._suppressed_on_device() if opts.greedy else ()
        inference = self.model.decoder.start(features, np.repeat(np.array(audio_rows), self.n_group), suppressed)
        tokens, sum_logprobs, no_speech = self._main_loop(inference, tokens, pad)
        no_speech = no_speech[:: self.n_group]
        tokens = tokens.reshape(n_audio, self.n_group, -1)
        sum_logprobs = sum_logprobs.reshape(n_audio, self.n_group)
        candidates, cand_logprobs = self.decoder.finalize(tokens, sum_logprobs)
        sampled = [[t[self.sample_begin:] for t in s] for s in candidates]
        candidates = [[t[: int(np.nonzero(t == tok.eot)[0][0])] for t in s] for s in sampled]
        chosen = rank(candidates, cand_logprobs, opts.length_penalty)
        results = []
        for i, idx in enumerate(chosen):
            out = [int(t) for t in candidates[i][idx]]
            text = tok.decode(out).strip()
            sum_lp = cand_logprobs[i][idx]
            results.append(DecodingResult(
                language=str(languages[i]), tokens=out, text=text,
                avg_logprob=sum_lp / (len(out) + 1), sum_logprob=sum_lp, no_speech_prob=no_speech[i],
                temperature=opts.temperature, compression_ratio=compression_ratio(text)))
        return self._align(inference, audio_rows, results) if opts.word_timestamps else results

    def _start_run(self) -> None:
        """A fresh token chooser and filters for rows whose sampled tokens start at `sample_begin`."""
        opts = self.options
        self.decoder: GreedyDecoder | BeamSearchDecoder
        if opts.beam_size is not None:
            self.decoder = BeamSearchDecoder(opts.beam_size, self.tokenizer.eot, opts.patience)
        else:
            self.decoder = GreedyDecoder(opts.temperature, self.tokenizer.eot, np.random.default_rng(opts.seed))
        self.filters: list[LogitFilter] = []
        if opts.suppress_blank:
            self.filters.append(SuppressBlank(self.tokenizer, self.sample_begin))
        if opts.suppress_tokens:
            self.filters.append(SuppressTokens(self._suppress_tokens()))
        if opts.repetition_penalty != 1:
            self.filters.append(RepetitionPenalty(opts.repetition_penalty, self.sample_begin))
        if opts.no_repeat_ngram_size > 0:
            self.filters.append(NoRepeatNGram(opts.no_repeat_ngram_size, self.sample_begin))
        self.timestamp_rules: ApplyTimestampRules | None = None
        if not opts.without_timestamps:
            max_init = None
            if opts.max_initial_timestamp:
                max_init = round(opts.max_initial_timestamp / (CHUNK_LENGTH / self.dims.n_audio_ctx))
            self.timestamp_rules = ApplyTimestampRules(self.tokenizer, self.sample_begin, max_init)
            self.filters.append(self.timestamp_rules)

    def _main_loop(self, inference: Inference, tokens: np.ndarray, pad: np.ndarray):
        n_batch = tokens.shape[0]
        sum_logprobs = np.zeros(n_batch, np.float32)
        draft = self._usable_draft(tokens)
        if draft:
            tokens, completed, sot_logits = self._first_steps_with_draft(inference, tokens, sum_logprobs, draft)
        else:
            sot_logits, logits = self._first_step(inference, tokens, pad)
            tokens, completed = self._choose(inference, tokens, logits, sum_logprobs)
        no_speech = _softmax(sot_logits)[:, self.tokenizer.no_speech].tolist()
        choices: Choices = []  # made on the device, not yet taken
        while not (completed or (tokens.shape[-1] - pad > self.n_ctx).all()
                   or tokens.shape[-1] - self.sample_begin >= self.sample_len):
            if self.options.greedy:
                if not choices:
                    choices = inference.greedy(tokens[:, -1:], self._rule_state(tokens))
                next_tokens, logprobs = choices.pop(0)
                # A row past its context's end stops there, as the sequential loop does: end of text, no score.
                full = tokens.shape[-1] - pad > self.n_ctx
                next_tokens, logprobs = np.where(full, self.tokenizer.eot, next_tokens), np.where(full, 0, logprobs)
                tokens, completed = cast(GreedyDecoder, self.decoder).append(tokens, next_tokens, logprobs, sum_logprobs)
            else:
                logits = np.array(inference.logits(tokens[:, -1:])[:, 0], dtype=np.float32)
                tokens, completed = self._choose(inference, tokens, logits, sum_logprobs)
        return tokens, sum_logprobs, no_speech

    def _choose(self, inference: Inference, tokens: np.ndarray, logits: np.ndarray,
                sum_logprobs: np.ndarray) -> tuple[np.ndarray, bool]:
        """The next token of every row from its logits [batch, vocab] on the host, under the filters."""
        for f in self.filters:
            f.apply(logits, tokens)
        return self.decoder.update(tokens, logits, sum_logprobs, inference)

    def _usable_draft(self, tokens: np.ndarray) -> list[int]:
        """The draft's tokens that fit in the context (and leave one sampled token to choose after them), where
        a draft is used: a greedy decode (temperature 0, `greedy`) of one row, on a decoder that takes drafts."""
        opts = self.options
        if not (opts.draft and opts.greedy and tokens.shape[0] == 1 and self.model.decoder.takes_drafts):
            return []
        if not all(0 <= t < self.dims.n_vocab for t in opts.draft):
            raise WhisperError(f"a draft's tokens must be ids of this model's vocabulary (0 to {self.dims.n_vocab - 1})")
        room = min(self.n_ctx - tokens.shape[1] - 1, self.sample_len - 1)
        return list(opts.draft[:max(0, room)])

    def _first_steps_with_draft(self, inference: Inference, tokens: np.ndarray, sum_logprobs: np.ndarray,
                                draft: list[int]) -> tuple[np.ndarray, bool, np.ndarray]:
        """The first step with the draft fed after the initial tokens: the logits after each of them choose
        the next token as a step would, while the choices are the draft's; the first other choice (or the
        one after the whole draft) is kept too, and the run is rewound to before it, so that the steps go on
        from there. Returns the tokens, whether the row ended, and the logits after <|startoftranscript|>."""
        width = tokens.shape[1]
        fed = np.concatenate([tokens, np.array([draft], np.int64)], axis=1)
        out = inference.logits(fed, [self.sot_index, *range(width - 1, width + len(draft))])
        completed = False
        for j, guess in enumerate([*draft, None]):
            tokens, completed = self._choose(inference, tokens, np.array(out[:, 1 + j], np.float32), sum_logprobs)
            if completed or int(tokens[0, -1]) != guess:
                break
        inference.rewind(tokens.shape[1] - 1)  # the last token chosen is not fed yet
        return tokens, completed, out[:, 0]

    def _first_step(self, inference: Inference, tokens: np.ndarray, pad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed every row's initial tokens; returns the logits after <|startoftranscript|> (for the
        no-speech probability) and after the last initial token, float32 [batch, vocab] each.

        On the device each row starts at position 0, so rows of different lengths are padded at the end
        (causal attention keeps padding out of the real tokens; later steps mask and overwrite it)."""
        width = tokens.shape[1]
        if not pad.any():
            both = inference.logits(tokens, [self.sot_index, width - 1])
            return both[:, 0], np.array(both[:, 1], dtype=np.float32)
        left_aligned = np.full_like(tokens, self.tokenizer.eot)
        for k, p in enumerate(pad):
            left_aligned[k, :width - p] = tokens[k, p:]
        sot_at, last_at = self.sot_index - pad, width - 1 - pad
        positions = sorted({*sot_at.tolist(), *last_at.tolist()})  # every row's logits at each of these
        logits = inference.logits(left_aligned, positions, ragged=pad)
        rows, column = np.arange(len(tokens)), {p: j for j, p in enumerate(positions)}
        return (logits[rows, [column[p] for p in sot_at]],
                np.array(logits[rows, [column[p] for p in last_at]], dtype=np.float32))

    def _suppressed_on_device(self) -> tuple[int, ...]:
        """The tokens the device never chooses: the suppressed ones, and <|notimestamps|> under the
        timestamp rules (the first step's other rules run on the host)."""
        ids = {t for f in self.filters if isinstance(f, SuppressTokens) for t in f.ids}
        if self.timestamp_rules is not None:
            ids.add(self.tokenizer.no_timestamps)
        return tuple(sorted(ids))

    def _rule_state(self, tokens: np.ndarray) -> np.ndarray:
        """Each row's rules.STATE for the device's greedy choice."""
        tok = self.tokenizer
        return rules.state(tokens[:, self.sample_begin:], tok.eot, tok.timestamp_begin,
                           timestamps=self.timestamp_rules is not None)
