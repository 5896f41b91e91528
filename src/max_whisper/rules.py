"""openai-whisper's token rules for timestamps, on the host (numpy) and in a graph (MAX ops), side by side.

The rules (openai-whisper's `ApplyTimestampRules`): timestamps come in pairs, never go back in time, a
segment has nonzero length; and a timestamp is chosen whenever the timestamps' summed probability beats
every text token's. What they need of a row's sampled tokens is its `STATE` (a few integers); from the state
follow the row's `BOUNDS`, the ranges of tokens allowed next. The host computes both for the filters of
beam search and sampling; the decoder graphs take either (the recorded GPU steps advance the state
themselves) and choose greedy tokens under them. This module owns both column layouts.
"""

from __future__ import annotations

import numpy as np
from max.dtype import DType
from max.graph import TensorValue, ops

# Whisper's vocabulary ends with its 1501 timestamp tokens (0.00 s to 30.00 s in 0.02 s steps); the
# engine checks the tokenizer agrees (timestamp_begin == n_vocab - N_TIMESTAMPS).
N_TIMESTAMPS = 1501

# Per row: its end-of-text token, whether the timestamp rules apply (0 or 1), whether its last sampled
# token was a timestamp, whether the one before was (1 while fewer than two were sampled), and its last
# timestamp token (-1: none yet).
STATE = ("eot", "ts_rule", "last_was_ts", "penultimate_was_ts", "last_ts")

# Per row, the tokens allowed next are [0, text_end) (text, unless a timestamp must come), [eot, ts_begin)
# (end of text and the other specials) and [ts_lo, ts_hi) (timestamps not going back in time), less the
# suppressed ones; ts_rule 1 makes timestamps win when their summed probability beats every text token's.
BOUNDS = ("text_end", "eot", "ts_begin", "ts_lo", "ts_hi", "ts_rule")


def columns(layout: tuple[str, ...], n_rows: int, **values) -> np.ndarray:
    """An int64 [n_rows, len(layout)] array with the named columns set (a value or one per row)."""
    if set(values) != set(layout):
        raise ValueError(f"columns {sorted(set(layout) ^ set(values))} missing or unknown for {layout}")
    out = np.empty((n_rows, len(layout)), np.int64)
    for i, name in enumerate(layout):
        out[:, i] = values[name]
    return out


def open_bounds(n_rows: int, n_vocab: int) -> np.ndarray:
    """BOUNDS that allow every token (calls made for their logits, not for a choice)."""
    return columns(BOUNDS, n_rows, text_end=n_vocab, eot=0, ts_begin=0, ts_lo=0, ts_hi=0, ts_rule=0)


# --- on the host -------------------------------------------------------------------------------------

def state(sampled: np.ndarray, eot: int, ts_begin: int, timestamps: bool) -> np.ndarray:
    """STATE [n, 5] of rows whose sampled tokens are `sampled` [n, t] (t may be 0)."""
    n, t = sampled.shape
    is_ts = sampled >= ts_begin
    last_was_ts = is_ts[:, -1] if t >= 1 else np.zeros(n, bool)
    penultimate_was_ts = is_ts[:, -2] if t >= 2 else np.ones(n, bool)
    if t == 0:
        last_ts = np.full(n, -1, np.int64)
    else:
        last_index = t - 1 - np.argmax(is_ts[:, ::-1], axis=1)
        last_ts = np.where(is_ts.any(axis=1), sampled[np.arange(n), last_index], -1)
    return columns(STATE, n, eot=eot, ts_rule=int(timestamps), last_was_ts=last_was_ts,
                   penultimate_was_ts=penultimate_was_ts, last_ts=last_ts)


def bounds(rule_state: np.ndarray, n_vocab: int) -> np.ndarray:
    """BOUNDS [n, 6] from STATE [n, 5]; `graph_bounds` is the same in a graph."""
    eot, on, last_was_ts, penultimate_was_ts, last_ts = (rule_state[:, i] for i in range(len(STATE)))
    ts_begin = n_vocab - N_TIMESTAMPS
    on = on > 0
    open_pair = on & (last_was_ts > 0) & (penultimate_was_ts == 0)  # a timestamp or end of text must follow
    closed_pair = on & (last_was_ts > 0) & (penultimate_was_ts > 0)  # text or end of text must follow
    text_end = np.where(open_pair, 0, eot)
    lo = np.where(on & (last_ts >= 0), np.maximum(ts_begin, np.where(open_pair, last_ts, last_ts + 1)), ts_begin)
    lo = np.where(closed_pair, n_vocab, lo)
    return columns(BOUNDS, len(rule_state), text_end=text_end, eot=eot, ts_begin=ts_begin, ts_lo=lo, ts_hi=n_vocab,
                   ts_rule=on.astype(np.int64))


def mask_outside(logits: np.ndarray, row_bounds: np.ndarray) -> None:
    """-inf, in place, at every token of logits [n, vocab] that its row's BOUNDS do not allow."""
    text_end, eot, ts_begin, lo, hi, _ = (row_bounds[:, i:i + 1] for i in range(len(BOUNDS)))
    vocab = np.arange(logits.shape[1])[None]
    allowed = (vocab < text_end) | ((vocab >= eot) & (vocab < ts_begin)) | ((vocab >= lo) & (vocab < hi))
    logits[~allowed] = -np.inf


def timestamps_win(logprobs: np.ndarray, ts_begin: int) -> np.ndarray:
    """Rows [n] where the timestamps' summed probability beats every text token's (row by row, in float32
    as openai-whisper sums them: near ties decide timestamps)."""
    return np.array([_logsumexp(row[ts_begin:]) > row[:ts_begin].max() for row in logprobs], bool)


def _logsumexp(x: np.ndarray) -> float:
    m = np.max(x)
    if not np.isfinite(m):
        return float(m)
    return float(m + np.log(np.sum(np.exp(x - m))))


# --- in a graph --------------------------------------------------------------------------------------

def graph_bounds(n_vocab: int, ts_begin: TensorValue, eot: TensorValue, ts_rule: TensorValue,
                 last_was_ts: TensorValue, penultimate_was_ts: TensorValue, last_ts: TensorValue) -> TensorValue:
    """BOUNDS [batch, 6] from the STATE columns ([batch, 1] each), as `bounds` derives them on the host."""
    on = ts_rule > 0
    open_pair = ops.logical_and(on, ops.logical_and(last_was_ts > 0, penultimate_was_ts == 0))
    closed_pair = ops.logical_and(on, ops.logical_and(last_was_ts > 0, penultimate_was_ts > 0))
    vocab = ops.broadcast_to(ops.constant(n_vocab, DType.int64, eot.device), eot.shape)
    begin = ops.broadcast_to(ts_begin, eot.shape)
    text_end = ops.where(open_pair, ops.broadcast_to(ops.constant(0, DType.int64, eot.device), eot.shape), eot)
    lo = ops.where(ops.logical_and(on, last_ts >= 0), ops.max(begin, ops.where(open_pair, last_ts, last_ts + 1)), begin)
    lo = ops.where(closed_pair, vocab, lo)
    return ops.concat([text_end, eot, begin, lo, vocab, ts_rule], axis=1)


def graph_greedy_choice(logits: TensorValue, suppress: TensorValue, row_bounds: TensorValue) -> TensorValue:
    """[batch, vocab] float32 logits -> [batch, 2]: the most likely allowed token and its log probability."""
    token, logprob = graph_greedy_pick(logits, suppress, row_bounds)
    return ops.stack([ops.cast(token, DType.float32), logprob], axis=1)


def graph_greedy_pick(logits: TensorValue, suppress: TensorValue,
                      row_bounds: TensorValue) -> tuple[TensorValue, TensorValue]:
    """[batch, vocab] float32 logits -> the most likely allowed token [batch] (int64) and its log probability.

    "Timestamps win when their summed probability beats every text token" (`timestamps_win` on the host) is
    compared on the masked logits (log-sum-exp of the timestamps against the best text logit: both sides of
    its log-probability comparison less the same normaliser), so the vocabulary is reduced in three passes
    (masking, text argmax, text exp-sum) plus small ones over the timestamps, not ten.
    """
    device = logits.device
    n_vocab = int(logits.shape[1])
    vocab = ops.range(0, n_vocab, 1, out_dim=n_vocab, dtype=DType.int64, device=device)
    idx = ops.unsqueeze(vocab, 0)
    text_end, eot, ts_begin, ts_lo, ts_hi, ts_rule = (row_bounds[:, i:i + 1] for i in range(len(BOUNDS)))
    allowed = ops.logical_or(ops.logical_or(idx < text_end, ops.logical_and(idx >= eot, idx < ts_begin)),
                             ops.logical_and(idx >= ts_lo, idx < ts_hi))
    masked = ops.where(allowed, logits + suppress, ops.constant(-np.inf, DType.float32, device))
    first_ts = n_vocab - N_TIMESTAMPS
    text, stamps = masked[:, :first_ts], masked[:, first_ts:]
    text_idx = ops.argmax(text, axis=-1)  # [batch, 1]; ties go to the lower token, as argmax over all does
    text_max = ops.gather_nd(text, text_idx, batch_dims=1)  # [batch]
    text_lse = _graph_logsumexp(text, text_max)
    stamp_idx = ops.argmax(stamps, axis=-1)
    stamp_max = ops.gather_nd(stamps, stamp_idx, batch_dims=1)
    stamp_lse = _graph_logsumexp(stamps, stamp_max)
    drop_text = ops.logical_and(ops.squeeze(ts_rule, 1) > 0, stamp_lse > text_max)
    pick_stamp = ops.logical_or(drop_text, stamp_max > text_max)
    token = ops.where(pick_stamp, ops.squeeze(stamp_idx, 1) + first_ts, ops.squeeze(text_idx, 1))
    total = ops.where(drop_text, stamp_lse, _graph_logaddexp(text_lse, stamp_lse))
    return token, ops.where(pick_stamp, stamp_max, text_max) - total


def graph_advance(token: TensorValue, chosen: TensorValue, eot: TensorValue, ts_begin: TensorValue,
                  last_was_ts: TensorValue, last_ts: TensorValue) -> tuple[TensorValue, ...]:
    """The STATE after a step that chose `chosen` [batch] for rows whose previous token is `token` [batch, 1]:
    the new token (end of text stays), last_was_ts, penultimate_was_ts and last_ts."""
    token = ops.where(token == eot, eot, ops.unsqueeze(chosen, 1))
    is_ts = ops.cast(token >= ts_begin, DType.int64)
    return token, is_ts, last_was_ts, ops.where(is_ts > 0, token, last_ts)


def _graph_logsumexp(x: TensorValue, x_max: TensorValue) -> TensorValue:
    """[batch, n], its row maxima [batch] -> [batch]; -inf for a row of -inf."""
    m = ops.where(ops.is_inf(x_max), ops.constant(0.0, DType.float32, x.device), x_max)
    return m + ops.log(ops.sum(ops.exp(x - ops.unsqueeze(m, 1)), axis=-1)[:, 0])


def _graph_logaddexp(a: TensorValue, b: TensorValue) -> TensorValue:
    m = ops.max(a, b)
    m = ops.where(ops.is_inf(m), ops.constant(0.0, DType.float32, a.device), m)
    return m + ops.log(ops.exp(a - m) + ops.exp(b - m))
