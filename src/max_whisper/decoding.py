"""Decoding one 30 s window on the MAX graphs, with openai-whisper's rules.

Logit filters (blank and symbol suppression, timestamp pairing), greedy and beam search,
temperature sampling, language detection, no-speech probability and the sequence ranker
follow openai-whisper's `decoding.py` so that greedy fp32 output is token for token the same.
Logits come from the MAX decoder graph; the rules run on them in numpy.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from .audio import CHUNK_LENGTH
from .errors import WhisperError
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    from .model import DecoderState
    from .engine import WhisperModel


@dataclass(frozen=True)
class DecodingOptions:
    task: str = "transcribe"  # or "translate"
    language: str | None = None  # None: detect
    temperature: float = 0.0
    sample_len: int | None = None  # most tokens to sample; default n_text_ctx // 2
    best_of: int | None = None  # independent samples when temperature > 0
    beam_size: int | None = None  # beams when temperature == 0
    patience: float | None = None
    length_penalty: float | None = None  # None: divide by length
    prompt: str | list[int] | None = None  # previous text, for context
    prefix: str | list[int] | None = None  # forced start of the current window
    suppress_tokens: str | list[int] | None = "-1"  # "-1": openai-whisper's non-speech symbols
    suppress_blank: bool = True
    without_timestamps: bool = False
    max_initial_timestamp: float | None = 1.0
    seed: int | None = None  # for temperature sampling


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


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    m = np.max(x, axis=-1, keepdims=True)
    shifted = x - m
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _logsumexp(x: np.ndarray) -> float:
    m = np.max(x)
    if not np.isfinite(m):
        return float(m)
    return float(m + np.log(np.sum(np.exp(x - m))))


# --- logit filters: change logits [batch, vocab] in place, given tokens [batch, time] ---

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


class ApplyTimestampRules:
    """Timestamps come in non-decreasing pairs; a timestamp opens the window; timestamps win
    when their summed probability beats every text token."""

    def __init__(self, tokenizer: Tokenizer, sample_begin: int, max_initial_timestamp_index: int | None):
        self.tok = tokenizer
        self.sample_begin = sample_begin
        self.max_initial_timestamp_index = max_initial_timestamp_index

    def state(self, row: np.ndarray) -> tuple[bool, bool, int]:
        """What the rules need of one row's sampled tokens: was the last a timestamp, was the one before
        (true while fewer than two were sampled), and the last timestamp (-1: none yet)."""
        sampled = row[self.sample_begin:]
        is_ts = sampled >= self.tok.timestamp_begin
        last_ts = int(sampled[is_ts][-1]) if is_ts.any() else -1
        return len(sampled) >= 1 and bool(is_ts[-1]), len(sampled) < 2 or bool(is_ts[-2]), last_ts

    def bounds(self, row: np.ndarray, vocab: int) -> tuple[bool, int, int]:
        """For one row of tokens, after the first step: is text allowed next, and the range
        [lo, hi) of allowed timestamp tokens. (model.timestamp_rules is the same in a graph.)"""
        last_was_ts, penultimate_was_ts, last_ts = self.state(row)
        text_ok, lo, hi = True, self.tok.timestamp_begin, vocab
        if last_was_ts:
            if penultimate_was_ts:
                lo = hi = vocab  # a pair is complete: text or end of text must follow
            else:
                text_ok = False  # an open pair: a timestamp or end of text must follow
        if last_ts >= 0:
            # never go back in time; a segment has nonzero length
            lo = max(lo, last_ts if last_was_ts and not penultimate_was_ts else last_ts + 1)
        return text_ok, int(lo), int(hi)

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        ts_begin, eot = self.tok.timestamp_begin, self.tok.eot
        logits[:, self.tok.no_timestamps] = -np.inf
        for k in range(tokens.shape[0]):
            text_ok, lo, hi = self.bounds(tokens[k], logits.shape[1])
            if not text_ok:
                logits[k, :eot] = -np.inf
            logits[k, ts_begin:min(lo, hi)] = -np.inf
            logits[k, hi:] = -np.inf
        if tokens.shape[1] == self.sample_begin:
            logits[:, :ts_begin] = -np.inf
            if self.max_initial_timestamp_index is not None:
                logits[:, ts_begin + self.max_initial_timestamp_index + 1:] = -np.inf
        logprobs = log_softmax(logits)
        for k in range(tokens.shape[0]):
            if _logsumexp(logprobs[k, ts_begin:]) > logprobs[k, :ts_begin].max():
                logits[k, :ts_begin] = -np.inf


# --- token choice ---

class GreedyDecoder:
    def __init__(self, temperature: float, eot: int, rng: np.random.Generator):
        self.temperature, self.eot, self.rng = temperature, eot, rng

    def update(self, tokens: np.ndarray, logits: np.ndarray, sum_logprobs: np.ndarray,
               state: DecoderState) -> tuple[np.ndarray, bool]:
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

    def finalize(self, tokens: np.ndarray, sum_logprobs: np.ndarray):
        tokens = np.pad(tokens, [(0, 0), (0, 0), (0, 1)], constant_values=self.eot)
        return [[row for row in group] for group in tokens], sum_logprobs.tolist()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True)).astype(np.float64)
    return e / e.sum(axis=-1, keepdims=True)


class BeamSearchDecoder:
    def __init__(self, beam_size: int, eot: int, patience: float | None):
        self.beam_size, self.eot = beam_size, eot
        self.max_candidates = round(beam_size * (patience or 1.0))
        if self.max_candidates <= 0:
            raise WhisperError(f"invalid beam size ({beam_size}) or patience ({patience})")
        self.finished: list[dict] | None = None

    def update(self, tokens: np.ndarray, logits: np.ndarray, sum_logprobs: np.ndarray,
               state: DecoderState) -> tuple[np.ndarray, bool]:
        n_audio = tokens.shape[0] // self.beam_size
        if self.finished is None:
            self.finished = [{} for _ in range(n_audio)]
        logprobs = log_softmax(logits)
        next_tokens, sources, newly_finished = [], [], []
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
            for seq in sorted(scores, key=scores.get, reverse=True):
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
            state.reorder(np.array(sources))
        for previous, new in zip(self.finished, newly_finished):
            for seq in sorted(new, key=new.get, reverse=True):
                if len(previous) >= self.max_candidates:
                    break
                previous[seq] = new[seq]
        return tokens, all(len(s) >= self.max_candidates for s in self.finished)

    def finalize(self, tokens: np.ndarray, sum_logprobs: np.ndarray):
        for i, sequences in enumerate(self.finished):
            if len(sequences) < self.beam_size:  # not enough finished: add the best unfinished
                for j in np.argsort(sum_logprobs[i])[::-1]:
                    sequences[tuple(tokens[i, j].tolist() + [self.eot])] = float(sum_logprobs[i][j])
                    if len(sequences) >= self.beam_size:
                        break
        return ([[np.array(s) for s in seqs] for seqs in self.finished],
                [list(seqs.values()) for seqs in self.finished])


def rank(tokens: list[list[np.ndarray]], sum_logprobs: list[list[float]], length_penalty: float | None) -> list[int]:
    """Index of the best candidate per audio: log probability over a length penalty."""
    best = []
    for seqs, logprobs in zip(tokens, sum_logprobs):
        penalties = [len(t) if length_penalty is None else ((5 + len(t)) / 6) ** length_penalty for t in seqs]
        best.append(int(np.argmax([lp / p for lp, p in zip(logprobs, penalties)])))
    return best


# --- the decoding task ---

def detect_language(model: WhisperModel, features, tokenizer: Tokenizer) -> tuple[list[str], list[dict[str, float]]]:
    """Language of each encoded window, from the logits after <|startoftranscript|>."""
    if not model.is_multilingual:
        raise WhisperError("this model is English-only and has no language detection")
    n_audio = features.shape[0]
    state = model.graphs.start_decoding(features, np.arange(n_audio))
    logits = state.step(np.full((n_audio, 1), tokenizer.sot, np.int64))[:, 0]
    lang_ids = np.array(tokenizer.all_language_tokens)
    lang_logits = logits[:, lang_ids]
    probs = _softmax(lang_logits)
    codes = tokenizer.language_codes
    languages = [codes[int(np.argmax(row))] for row in lang_logits]
    return languages, [{c: float(p) for c, p in zip(codes, row)} for row in probs]


class DecodingTask:
    """Decodes a batch of encoded windows under one set of options. `prompts`: each window's own
    previous text (token lists, one per window) instead of `options.prompt`, for windows of different
    recordings decoded together; rows whose initial tokens differ in length are decoded in one batch
    where the device can hold each row at its own position (greedy steps on the recorded step graph),
    otherwise in groups of equal length."""

    def __init__(self, model: WhisperModel, options: DecodingOptions, prompts: list[list[int]] | None = None):
        self.model = model
        language = options.language or ("en" if not model.is_multilingual else None)
        self.options = options = replace(options, language=language)
        if options.task not in ("transcribe", "translate"):
            raise WhisperError(f"unknown task '{options.task}': use transcribe or translate")
        if options.beam_size is not None and options.best_of is not None:
            raise WhisperError("beam_size and best_of can't be given together")
        if options.temperature == 0 and options.best_of is not None:
            raise WhisperError("best_of with greedy sampling (temperature 0) is meaningless")
        if options.beam_size is not None and options.temperature != 0:
            raise WhisperError("beam search needs temperature 0")
        self.tokenizer = model.tokenizer(language=language or "en", task=options.task)
        self.n_group = options.beam_size or options.best_of or 1
        self.n_ctx = model.dims.n_text_ctx
        self.sample_len = options.sample_len or model.dims.n_text_ctx // 2
        self.suffix = self._sot_and_prefix()  # every row's initial tokens end with it
        self.prompts = prompts

    def _sot_and_prefix(self) -> tuple[int, ...]:
        tok, opts = self.tokenizer, self.options
        tokens = list(tok.sot_sequence_including_notimestamps if opts.without_timestamps else tok.sot_sequence)
        if prefix := opts.prefix:
            prefix_tokens = tok.encode(" " + prefix.strip()) if isinstance(prefix, str) else list(prefix)
            # openai-whisper's slice, kept as it is: with the default sample_len the bound is 0, and
            # [-0:] keeps the whole prefix
            tokens += prefix_tokens[-(self.n_ctx // 2 - self.sample_len):]
        return tuple(tokens)

    def _initial_tokens(self, prompt: str | list[int] | None) -> tuple[int, ...]:
        if not prompt:
            return self.suffix
        prompt_tokens = self.tokenizer.encode(" " + prompt.strip()) if isinstance(prompt, str) else list(prompt)
        return (self.tokenizer.sot_prev, *prompt_tokens[-(self.n_ctx // 2 - 1):], *self.suffix)

    def _suppress_tokens(self) -> tuple[int, ...]:
        tok = self.tokenizer
        ids = self.options.suppress_tokens
        if isinstance(ids, str):
            try:
                ids = [int(t) for t in ids.split(",")]
            except ValueError:
                raise WhisperError(f"suppress_tokens must be comma-separated integers, got '{ids}'") from None
        ids = list(ids or [])
        if -1 in ids:
            ids = [t for t in ids if t >= 0] + list(tok.non_speech_tokens)
        ids += [tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech]
        return tuple(sorted(set(ids)))

    def run(self, features) -> list[DecodingResult]:
        """Decode encoded windows (device features [n_audio, 1500, d])."""
        n_audio = features.shape[0]
        if self.prompts is not None and len(self.prompts) != n_audio:
            raise WhisperError(f"internal error: {len(self.prompts)} prompts for {n_audio} windows")
        heads = [self._initial_tokens(p) for p in (self.prompts or [self.options.prompt] * n_audio)]
        languages, lang_probs = [self.options.language] * n_audio, [None] * n_audio
        if self.options.language is None:
            languages, lang_probs = detect_language(self.model, features, self.tokenizer)
        rows = list(range(n_audio))
        if len({len(h) for h in heads}) == 1 or self._ragged_on_device():
            groups = [rows]
        else:
            groups = [[i for i in rows if len(heads[i]) == n] for n in sorted({len(h) for h in heads})]
        results: list[DecodingResult | None] = [None] * n_audio
        for group in groups:
            decoded = self._decode(features, group, [heads[i] for i in group], [languages[i] for i in group])
            for i, result in zip(group, decoded):
                results[i] = replace(result, language_probs=lang_probs[i])
        return results

    def _decode(self, features, audio_rows: list[int], heads: list[tuple[int, ...]],
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
            tokens[:, self.sot_index + 1] = [tok.to_language_token(lang) for lang in languages]
        self._start_run()
        tokens, pad = np.repeat(tokens, self.n_group, axis=0), np.repeat(pad, self.n_group)
        state = self.model.graphs.start_decoding(features, np.repeat(np.array(audio_rows), self.n_group))
        tokens, sum_logprobs, no_speech = self._main_loop(state, tokens, pad)
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
                language=languages[i], tokens=out, text=text,
                avg_logprob=sum_lp / (len(out) + 1), sum_logprob=sum_lp, no_speech_prob=no_speech[i],
                temperature=opts.temperature, compression_ratio=compression_ratio(text)))
        return results

    def _start_run(self) -> None:
        """A fresh token chooser and filters for rows whose sampled tokens start at `sample_begin`."""
        opts = self.options
        if opts.beam_size is not None:
            self.decoder = BeamSearchDecoder(opts.beam_size, self.tokenizer.eot, opts.patience)
        else:
            self.decoder = GreedyDecoder(opts.temperature, self.tokenizer.eot, np.random.default_rng(opts.seed))
        self.filters = []
        if opts.suppress_blank:
            self.filters.append(SuppressBlank(self.tokenizer, self.sample_begin))
        if opts.suppress_tokens:
            self.filters.append(SuppressTokens(self._suppress_tokens()))
        if not opts.without_timestamps:
            max_init = None
            if opts.max_initial_timestamp:
                max_init = round(opts.max_initial_timestamp / (CHUNK_LENGTH / self.model.dims.n_audio_ctx))
            self.filters.append(ApplyTimestampRules(self.tokenizer, self.sample_begin, max_init))

    def _main_loop(self, state: DecoderState, tokens: np.ndarray, pad: np.ndarray):
        n_batch = tokens.shape[0]
        sum_logprobs = np.zeros(n_batch, np.float32)
        no_speech = [np.nan] * n_batch
        on_device = self._greedy_on_device()
        if on_device:
            state.suppress = self.model.graphs.suppression(self._suppressed_on_device())
        choices: list[tuple[np.ndarray, np.ndarray]] = []  # made on the device, not yet taken
        for i in range(self.sample_len):
            if i > 0 and on_device:
                if not choices:
                    choices = self._greedy_steps(state, tokens)
                next_tokens, logprobs = choices.pop(0)
                # A row past its context's end stops there, as the sequential loop does: end of text, no score.
                full = tokens.shape[-1] - pad > self.n_ctx
                next_tokens, logprobs = np.where(full, self.tokenizer.eot, next_tokens), np.where(full, 0, logprobs)
                tokens, completed = self.decoder.append(tokens, next_tokens, logprobs, sum_logprobs)
            else:
                if i == 0:
                    sot_logits, logits = self._first_step(state, tokens, pad)
                    no_speech = _softmax(sot_logits)[:, self.tokenizer.no_speech].tolist()
                else:
                    logits = np.array(state.step(tokens[:, -1:])[:, 0], dtype=np.float32)
                for f in self.filters:
                    f.apply(logits, tokens)
                tokens, completed = self.decoder.update(tokens, logits, sum_logprobs, state)
            if completed or (tokens.shape[-1] - pad > self.n_ctx).all():
                break
        return tokens, sum_logprobs, no_speech

    def _first_step(self, state: DecoderState, tokens: np.ndarray, pad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed every row's initial tokens; returns the logits after <|startoftranscript|> (for the
        no-speech probability) and after the last initial token, float32 [batch, vocab] each.

        On the device each row starts at position 0, so rows of different lengths are padded at the end
        (causal attention keeps padding out of the real tokens; later steps mask and overwrite it)."""
        width = tokens.shape[1]
        if not pad.any():
            both = state.step(tokens, [self.sot_index, width - 1])
            return both[:, 0], np.array(both[:, 1], dtype=np.float32)
        left_aligned = np.full_like(tokens, self.tokenizer.eot)
        for k, p in enumerate(pad):
            left_aligned[k, :width - p] = tokens[k, p:]
        sot_at, last_at = self.sot_index - pad, width - 1 - pad
        positions = sorted({*sot_at.tolist(), *last_at.tolist()})  # every row's logits at each of these
        logits = state.step(left_aligned, positions, ragged=pad)
        rows, column = np.arange(len(tokens)), {p: j for j, p in enumerate(positions)}
        return (logits[rows, [column[p] for p in sot_at]],
                np.array(logits[rows, [column[p] for p in last_at]], dtype=np.float32))

    # Greedy decoding after the first step chooses tokens inside the decoder graph, under the same
    # rules as the filters here (the first step's extra rules run on the host), so that only the
    # chosen tokens come back to the host.

    def _greedy_on_device(self) -> bool:
        return self.options.beam_size is None and self.options.temperature == 0

    def _ragged_on_device(self) -> bool:
        """Can rows of different initial lengths share one run: greedy steps on the recorded step
        graph, whose rows each have their own position."""
        return self._greedy_on_device() and self.model.graphs.decoder_step is not None

    def _timestamp_rules(self) -> ApplyTimestampRules | None:
        return next((f for f in self.filters if isinstance(f, ApplyTimestampRules)), None)

    def _suppressed_on_device(self) -> tuple[int, ...]:
        ids = {t for f in self.filters if isinstance(f, SuppressTokens) for t in f.ids}
        if self._timestamp_rules():
            ids.add(self.tokenizer.no_timestamps)
        return tuple(sorted(ids))

    def _greedy_steps(self, state: DecoderState, tokens: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The next greedy choices: one step's, or several where the graph follows the rules itself
        (a GPU's recorded steps); the caller takes them up to the end of the rows or the limits."""
        if state.slot is None:
            return [state.step_greedy(tokens[:, -1:], self._rules(tokens))]
        return state.steps_greedy(tokens[:, -1:], self._rule_state(tokens))

    def _rules(self, tokens: np.ndarray) -> np.ndarray:
        """Each row's token rules for the decoder graph (model.RULE_COLUMNS)."""
        tok, vocab = self.tokenizer, self.model.dims.n_vocab
        timestamps = self._timestamp_rules()
        rules = np.empty((tokens.shape[0], 6), np.int64)
        for k, row in enumerate(tokens):
            text_ok, lo, hi = timestamps.bounds(row, vocab) if timestamps else (True, tok.timestamp_begin, vocab)
            rules[k] = (tok.eot if text_ok else 0, tok.eot, tok.timestamp_begin, lo, hi, timestamps is not None)
        return rules

    def _rule_state(self, tokens: np.ndarray) -> np.ndarray:
        """Each row's end of text, timestamp rules on or off, and their state (model.STEP_COLUMNS after
        token and position)."""
        timestamps = self._timestamp_rules()
        state = np.zeros((tokens.shape[0], 5), np.int64)
        for k, row in enumerate(tokens):
            state[k] = (self.tokenizer.eot, timestamps is not None, *(timestamps.state(row) if timestamps else (0, 0, -1)))
        return state


def decode(model: WhisperModel, mel: np.ndarray, options: DecodingOptions = DecodingOptions()) -> list[DecodingResult]:
    """Decode log-mel windows [n_audio, n_mels, 3000] (or one [n_mels, 3000])."""
    single = mel.ndim == 2
    features = model.graphs.encode(mel[None] if single else mel)
    results = DecodingTask(model, options).run(features)
    return results[:1] if single else results
