"""Whisper as MAX graphs: the encoder, cross-attention keys/values, and a KV-cached decoder step.

Every weight is a graph `Weight` named as in openai-whisper's state dict and bound once,
when the graph is loaded; calls pass only audio features, tokens and cache buffers.

Graphs (one compiled model each, reused for every call; batch and length are symbolic):
- encoder:  mel [batch, n_mels, 3000] -> audio features [batch, 1500, d]
- cross_kv: features [n_audio, 1500, d], rows [batch] -> keys, values [layer, batch, head, 1500, d_head]
            (`rows` picks the audio for each decoding row, so beams share one encoding)
- decoder:  tokens [batch, seq], offset, logit positions [n_pos], suppression mask [vocab],
            token rules [batch, 6], cross keys/values and one self-attention cache buffer pair per
            layer [batch, 448, d], written in place
            -> logits [batch, n_pos, vocab], greedy choice [batch, 2] (token, log probability)
            at the last position; greedy decoding copies only the choice to the host
- decoder_row (CPU): the decoder for one token of one row, the sequential loop's every step after the first
- decoder_step (GPU): STEPS_PER_CALL greedy steps of one token per row, the token choice and its rules
  in the graph; recorded once per batch size and replayed
- reorder:  gathers the cache buffers' rows by beam index (beam search).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field

import numpy as np
from max import driver
from max.dtype import DType
from max.engine import ArtifactBodyMismatch, InferenceSession, MefStore, MissingArtifactError
from max.graph import BufferType, BufferValue, DeviceRef, Graph, StaticDim, TensorType, TensorValue, Weight, ops
from max.graph.type import FilterLayout

from .errors import WhisperError
from .shipped import shipped_folder, shipped_target
from .weights import Checkpoint, ModelDimensions

LN_EPS = 1e-5


class GraphWeights:
    """Creates graph weights on first use, named as in the checkpoint; remembers which were used."""

    def __init__(self, state: dict[str, np.ndarray], dtype: DType, device: DeviceRef):
        self.state, self.dtype, self.device = state, dtype, device
        self.used: dict[str, Weight] = {}

    def __call__(self, name: str) -> Weight:
        if name not in self.used:
            self.used[name] = Weight(name, self.dtype, self.state[name].shape, self.device)
        return self.used[name]

    def registry(self) -> dict[str, np.ndarray]:
        return {name: self.state[name] for name in self.used}


# --- layers: functions from graph values to graph values ----------------------

def linear(w: GraphWeights, name: str, x: TensorValue, bias: bool = True, one_row: bool = False) -> TensorValue:
    """x @ weight^T + bias; `one_row`: x holds a single row (see `row_product`)."""
    weight = w(f"{name}.weight")
    y = row_product(x, weight) if one_row else x @ ops.transpose(weight, 0, 1)
    return y + w(f"{name}.bias") if bias else y


def row_product(x: TensorValue, weight: TensorValue) -> TensorValue:
    """x [..., in] @ weight [out, in]^T for an x of one row.

    On MAX 26.7's CPU a broadcast multiply and a sum over `in` reads the checkpoint's [out, in] matrix at
    memory speed where the matmul is slower: the 51864-token vocabulary 4.6 -> 2.0 ms, 16 384x384 matrices
    0.38 -> 0.27 ms. Not when `in` is the longer side (the MLP's 1536 -> 384: the sum form takes 2x the
    matmul's time), nor for several rows: the sum form reads the matrix once per row.
    """
    if int(weight.shape[1]) > int(weight.shape[0]):
        return x @ ops.transpose(weight, 0, 1)
    return ops.squeeze(ops.sum(ops.unsqueeze(x, -2) * weight, axis=-1), -1)


def layer_norm(w: GraphWeights, name: str, x: TensorValue) -> TensorValue:
    return ops.layer_norm(x, w(f"{name}.weight"), w(f"{name}.bias"), LN_EPS)


def mlp(w: GraphWeights, name: str, x: TensorValue, one_row: bool = False) -> TensorValue:
    return linear(w, f"{name}.mlp.2", ops.gelu(linear(w, f"{name}.mlp.0", x, one_row=one_row)), one_row=one_row)


def split_heads(x: TensorValue, n_head: int) -> TensorValue:
    """[batch, time, d] -> [batch, head, time, d_head]"""
    b, t, d = x.shape
    return ops.transpose(ops.reshape(x, [b, t, n_head, int(d) // n_head]), 1, 2)


def merge_heads(x: TensorValue) -> TensorValue:
    """[batch, head, time, d_head] -> [batch, time, d]"""
    b, h, t, dh = x.shape
    return ops.reshape(ops.transpose(x, 1, 2), [b, t, int(h) * int(dh)])


def attention(q: TensorValue, k: TensorValue, v: TensorValue, mask: TensorValue | None = None,
              one_query: bool = False, values_transposed: bool = False) -> TensorValue:
    """softmax(q k^T / sqrt(d_head) + mask) v over [batch, head, time, d_head] values.

    Computed in float32 whatever the weights' dtype: MAX 26.7's fused fp16 attention kernel for
    Hopper fails to instantiate for Whisper's shapes (seen on an H100), and fp32 keeps the softmax exact.
    `one_query`: q holds a single position, and the products are broadcasts and sums: the matmul form
    becomes MAX's fused flash-attention kernel, which on an H100 takes 55 us per call for one query
    over 1500 keys, this form 13 us (benchmarks/README.md, step_parts.py).
    `values_transposed` (with `one_query`): v is [batch, head, d_head, time], so that the sum over time
    runs along the inner axis: on an H100 4 layers' cross-attention value sums 32 -> 15 us at batch 1,
    285 -> 105 us at batch 16.
    """
    dtype = q.dtype
    if dtype != DType.float32:
        q, k, v = (ops.cast(t, DType.float32) for t in (q, k, v))
        if mask is not None:
            mask = ops.cast(mask, DType.float32)
    scale = 1.0 / float(np.sqrt(int(q.shape[-1])))
    # On the CPU with a symbolic batch, batch and heads become one dimension: MAX 26.7's CPU matmul over
    # [batch, head] with a symbolic batch is 6x slower (a decoder step's cross-attention, 4 layers:
    # 2.65 -> 0.44 ms; with a static batch the 4-D form takes 0.17 ms). On a GPU the 4-D form is the one
    # MAX fuses into its flash-attention kernel.
    merged = not one_query and q.device.is_cpu() and not isinstance(q.shape[0], StaticDim)
    if one_query:
        scores = ops.transpose(ops.sum(q * k, axis=-1), 2, 3) * scale  # [batch, head, 1, keys]
    elif merged:
        batch, heads, seq, d_head = q.shape
        keys = k.shape[2]
        q3, k3, v3 = (ops.reshape(t, [-1, t.shape[2], d_head]) for t in (q, k, v))
        scores = ops.reshape((q3 @ ops.transpose(k3, 1, 2)) * scale, [batch, heads, seq, keys])
    else:
        scores = (q @ ops.transpose(k, 2, 3)) * scale
    if mask is not None:
        scores = scores + mask
    weights = ops.softmax(scores)
    if values_transposed:
        out = ops.transpose(ops.sum(weights * v, axis=-1), 2, 3)
    elif one_query:
        out = ops.sum(ops.transpose(weights, 2, 3) * v, axis=2)
    elif merged:
        out = ops.reshape(ops.reshape(weights, [-1, seq, keys]) @ v3, [batch, heads, seq, d_head])
    else:
        out = weights @ v
    return out if dtype == DType.float32 else ops.cast(out, dtype)


# --- graphs --------------------------------------------------------------------

def build_encoder(dims: ModelDimensions, w: GraphWeights, dtype: DType, device: DeviceRef) -> Graph:
    mel_type = TensorType(dtype, ["batch", dims.n_mels, 2 * dims.n_audio_ctx], device)
    with Graph("whisper_encoder", input_types=[mel_type]) as g:
        x = g.inputs[0].tensor
        for name, stride in (("encoder.conv1", 1), ("encoder.conv2", 2)):
            x = ops.gelu(conv1d(w, name, x, stride))
        x = ops.transpose(x, 1, 2) + w("encoder.positional_embedding")  # [batch, time, d]
        for i in range(dims.n_audio_layer):
            b = f"encoder.blocks.{i}"
            h = layer_norm(w, f"{b}.attn_ln", x)
            q, k, v = (split_heads(linear(w, f"{b}.attn.{p}", h, bias=p != "key"), dims.n_audio_head)
                       for p in ("query", "key", "value"))
            x = x + linear(w, f"{b}.attn.out", merge_heads(attention(q, k, v)))
            x = x + mlp(w, b, layer_norm(w, f"{b}.mlp_ln", x))
        g.output(layer_norm(w, "encoder.ln_post", x))
    return g


def conv1d(w: GraphWeights, name: str, x: TensorValue, stride: int) -> TensorValue:
    """PyTorch Conv1d (kernel 3, padding 1) on [batch, channels, time], torch-ordered filter."""
    filt = ops.unsqueeze(w(f"{name}.weight"), 2)  # [out, in, 1, k]: FCRS
    y = ops.conv2d(ops.unsqueeze(ops.transpose(x, 1, 2), 1), filt, stride=(1, stride),
                   padding=(0, 0, 1, 1), bias=w(f"{name}.bias"), filter_layout=FilterLayout.FCRS)
    return ops.transpose(ops.squeeze(y, 1), 1, 2)


def build_cross_kv(dims: ModelDimensions, w: GraphWeights, dtype: DType, device: DeviceRef,
                   for_steps: bool = False) -> Graph:
    """Cross-attention keys and values of each decoding row's audio features; `for_steps`: the values
    also as [layer, batch, head, d_head, time], the recorded steps' layout (see `attention`)."""
    feats = TensorType(dtype, ["n_audio", dims.n_audio_ctx, dims.n_text_state], device)
    rows = TensorType(DType.int64, ["batch"], device)
    with Graph("whisper_cross_kv_for_steps" if for_steps else "whisper_cross_kv", input_types=[feats, rows]) as g:
        x = ops.gather(g.inputs[0].tensor, g.inputs[1].tensor, axis=0)
        keys, values = [], []
        for i in range(dims.n_text_layer):
            b = f"decoder.blocks.{i}.cross_attn"
            keys.append(split_heads(linear(w, f"{b}.key", x, bias=False), dims.n_text_head))
            values.append(split_heads(linear(w, f"{b}.value", x), dims.n_text_head))
        keys, values = ops.stack(keys), ops.stack(values)
        g.output(keys, values, *([ops.transpose(values, 3, 4)] if for_steps else []))
    return g


def cache_type(dims: ModelDimensions, dtype: DType, device: DeviceRef, batch: int | str = "batch") -> BufferType:
    return BufferType(dtype, [batch, dims.n_text_ctx, dims.n_text_state], device)


def build_decoder(dims: ModelDimensions, w: GraphWeights, dtype: DType, device: DeviceRef,
                  one_row: bool = False) -> Graph:
    """`one_row`: the graph for one new token of one decoding row (the CPU's sequential greedy steps),
    its products in `row_product`'s form."""
    batch = 1 if one_row else "batch"
    inputs = [
        TensorType(DType.int64, [batch, 1 if one_row else "seq"], device),  # tokens
        TensorType(DType.int64, [], DeviceRef.CPU()),  # offset: tokens already in the cache
        TensorType(DType.int64, ["n_pos"], device),  # positions whose logits are returned
        TensorType(DType.float32, [dims.n_vocab], device),  # suppression: 0 or -inf per token
        TensorType(DType.int64, [batch, len(RULE_COLUMNS)], device),  # token rules, see greedy_choice
    ] + cross_types(dims, dtype, device, batch) + [cache_type(dims, dtype, device, batch)] * (2 * dims.n_text_layer)
    with Graph("whisper_decoder_row" if one_row else "whisper_decoder", input_types=inputs) as g:
        tokens, offset, logit_pos, suppress, rules, cross_k, cross_v = (v.tensor for v in g.inputs[:7])
        caches = [v.buffer for v in g.inputs[7:]]
        seq = tokens.shape[1]
        n_seq = ops.shape_to_tensor([seq]).reshape([])
        end = offset + ops.cast(n_seq, DType.int64)
        positions = ops.range(offset, end, 1, out_dim=seq, dtype=DType.int64, device=DeviceRef.CPU())
        x = embed(w, tokens, positions.to(device))
        mask = causal_mask(offset, end, positions, dtype, device)

        def cached(buf: BufferValue, new: TensorValue) -> TensorValue:
            ops.buffer_store_slice(buf, new, [slice(None), (slice(offset, end), seq), slice(None)])
            return buf[:, (slice(0, end), "total"), :]

        x = decoder_blocks(dims, w, x, caches, cached, mask, cross_k, cross_v, one_row=one_row)
        logits = vocab_logits(w, ops.gather(x, logit_pos, axis=1), one_row)
        g.output(logits, greedy_choice(ops.cast(logits[:, -1, :], DType.float32), suppress, rules))
    return g


# The recorded steps' input per row: its last token and that token's position, the end-of-text token,
# whether timestamp rules apply, and what they need of the row's sampled tokens (see
# decoding.ApplyTimestampRules.state): was the last a timestamp, was the one before (1 while fewer than
# two were sampled), the last timestamp (-1: none yet). The graph advances them from step to step.
STEP_COLUMNS = ("token", "position", "eot", "ts_rule", "last_was_ts", "penultimate_was_ts", "last_ts")
STEPS_PER_CALL = 8  # greedy steps per recorded call: the host takes its tokens and rules once per call


def build_decoder_step(dims: ModelDimensions, w: GraphWeights, dtype: DType, device: DeviceRef,
                       n_steps: int = STEPS_PER_CALL) -> Graph:
    """`n_steps` greedy steps of one new token per row, each row at its own position, choosing every
    token in the graph under openai-whisper's rules; every shape is fixed but the batch.

    Self-attention runs over all n_text_ctx cache rows with the later ones masked, and the new key and
    value are written by selecting the row, so no launch depends on a host value: the GPU can record
    the call once per batch size and replay it (`Model.capture`), which is what makes a step cheap
    there (an eager step is some hundred small kernel launches). A row that has ended is fed end of
    text, as the host loop does; steps past the context's end repeat its last position and are
    dropped by the caller. Returns [batch, n_steps, 2]: each step's token and log probability.
    """
    inputs = [
        TensorType(DType.int64, ["batch", len(STEP_COLUMNS)], device),
        TensorType(DType.float32, [dims.n_vocab], device),  # suppression: 0 or -inf per token
    ] + cross_types(dims, dtype, device, values_transposed=True) + [cache_type(dims, dtype, device)] * (2 * dims.n_text_layer)
    with Graph("whisper_decoder_step", input_types=inputs) as g:
        state, suppress, cross_k, cross_v = (v.tensor for v in g.inputs[:4])
        caches = [v.buffer for v in g.inputs[4:]]
        token, position, eot, ts_rule, last_was_ts, penultimate_was_ts, last_ts = (
            state[:, i:i + 1] for i in range(len(STEP_COLUMNS)))  # each [batch, 1]
        rows = ops.unsqueeze(ops.range(0, dims.n_text_ctx, 1, out_dim=dims.n_text_ctx, dtype=DType.int64,
                                       device=device), 0)  # [1, n_text_ctx]
        int64 = functools.partial(ops.constant, dtype=DType.int64, device=device)
        last_position = int64(dims.n_text_ctx - 1)
        ts_begin = int64(dims.n_vocab - N_TIMESTAMPS)
        choices = []
        for _ in range(n_steps):
            at = ops.min(position, last_position)
            x = embed(w, token, at)
            is_new = ops.unsqueeze(rows == at, 2)  # [batch, n_text_ctx, 1]
            future = ops.where(rows > at, ops.constant(-np.inf, dtype, device), ops.constant(0.0, dtype, device))
            mask = ops.unsqueeze(ops.unsqueeze(future, 1), 1)  # [batch, 1 (head), 1 (query), n_text_ctx]

            def cached(buf: BufferValue, new: TensorValue) -> TensorValue:
                full = ops.where(is_new, new, ops.buffer_load(buf))
                ops.buffer_store(buf, full)
                return full

            x = decoder_blocks(dims, w, x, caches, cached, mask, cross_k, cross_v, one_query=True)
            logits = ops.cast(vocab_logits(w, x)[:, 0, :], DType.float32)
            rules = timestamp_rules(dims.n_vocab, ts_begin, eot, ts_rule, last_was_ts, penultimate_was_ts, last_ts)
            chosen, logprob = _greedy_pick(logits, suppress, rules)
            choices.append(ops.stack([ops.cast(chosen, DType.float32), logprob], axis=1))
            token = ops.where(token == eot, eot, ops.unsqueeze(chosen, 1))
            is_ts = ops.cast(token >= ts_begin, DType.int64)
            penultimate_was_ts, last_was_ts = last_was_ts, is_ts
            last_ts = ops.where(is_ts > 0, token, last_ts)
            position = position + 1
        g.output(ops.stack(choices, axis=1))
    return g


def timestamp_rules(n_vocab: int, ts_begin: TensorValue, eot: TensorValue, ts_rule: TensorValue,
                    last_was_ts: TensorValue, penultimate_was_ts: TensorValue, last_ts: TensorValue) -> TensorValue:
    """RULE_COLUMNS [batch, 6] from the STEP_COLUMNS of the same names ([batch, 1] each), as
    decoding.ApplyTimestampRules.bounds derives them on the host."""
    on = ts_rule > 0
    open_pair = ops.logical_and(on, ops.logical_and(last_was_ts > 0, penultimate_was_ts == 0))
    closed_pair = ops.logical_and(on, ops.logical_and(last_was_ts > 0, penultimate_was_ts > 0))
    vocab = ops.broadcast_to(ops.constant(n_vocab, DType.int64, eot.device), eot.shape)
    begin = ops.broadcast_to(ts_begin, eot.shape)
    text_end = ops.where(open_pair, ops.broadcast_to(ops.constant(0, DType.int64, eot.device), eot.shape), eot)
    # never back in time; a segment has nonzero length
    lo = ops.where(ops.logical_and(on, last_ts >= 0), ops.max(begin, ops.where(open_pair, last_ts, last_ts + 1)), begin)
    lo = ops.where(closed_pair, vocab, lo)
    return ops.concat([text_end, eot, begin, lo, vocab, ts_rule], axis=1)


def cross_types(dims: ModelDimensions, dtype: DType, device: DeviceRef, batch: int | str = "batch",
                values_transposed: bool = False) -> list[TensorType]:
    """Cross-attention keys and values [layer, batch, head, n_audio_ctx, d_head] (`values_transposed`:
    values [layer, batch, head, d_head, n_audio_ctx])."""
    keys = [dims.n_text_layer, batch, dims.n_text_head, dims.n_audio_ctx, dims.n_text_state // dims.n_text_head]
    values = keys[:3] + keys[:2:-1] if values_transposed else keys
    return [TensorType(dtype, keys, device), TensorType(dtype, values, device)]


def embed(w: GraphWeights, tokens: TensorValue, positions: TensorValue) -> TensorValue:
    """Token plus positional embedding: tokens [batch, seq], positions [seq] or [batch, seq] -> [batch, seq, d]."""
    return (ops.gather(w("decoder.token_embedding.weight"), tokens, axis=0)
            + ops.gather(w("decoder.positional_embedding"), positions, axis=0))


def decoder_blocks(dims: ModelDimensions, w: GraphWeights, x: TensorValue, caches: list[BufferValue], cached,
                   mask: TensorValue, cross_k: TensorValue, cross_v: TensorValue,
                   one_query: bool = False, one_row: bool = False) -> TensorValue:
    """The residual blocks; `cached(buffer, new rows)` stores the new keys or values in a cache buffer
    and returns the rows attention sees; `one_query`: see `attention`, and `cross_v` is transposed
    (`cross_types`); `one_row`: see `row_product`."""
    def lin(name: str, h: TensorValue, bias: bool = True) -> TensorValue:
        return linear(w, name, h, bias, one_row)

    for i in range(dims.n_text_layer):
        b = f"decoder.blocks.{i}"
        h = layer_norm(w, f"{b}.attn_ln", x)
        q = split_heads(lin(f"{b}.attn.query", h), dims.n_text_head)
        k = split_heads(cached(caches[2 * i], lin(f"{b}.attn.key", h, bias=False)), dims.n_text_head)
        v = split_heads(cached(caches[2 * i + 1], lin(f"{b}.attn.value", h)), dims.n_text_head)
        x = x + lin(f"{b}.attn.out", merge_heads(attention(q, k, v, mask, one_query)))
        h = layer_norm(w, f"{b}.cross_attn_ln", x)
        q = split_heads(lin(f"{b}.cross_attn.query", h), dims.n_text_head)
        x = x + lin(f"{b}.cross_attn.out", merge_heads(attention(q, cross_k[i], cross_v[i], one_query=one_query,
                                                               values_transposed=one_query)))
        x = x + mlp(w, b, layer_norm(w, f"{b}.mlp_ln", x), one_row)
    return x


def vocab_logits(w: GraphWeights, x: TensorValue, one_row: bool = False) -> TensorValue:
    """Final layer norm, then logits against the token embedding (tied weights)."""
    x, embedding = layer_norm(w, "decoder.ln", x), w("decoder.token_embedding.weight")
    return row_product(x, embedding) if one_row else x @ ops.transpose(embedding, 0, 1)


# Whisper's vocabulary ends with its 1501 timestamp tokens (0.00 s to 30.00 s in 0.02 s steps); the
# engine checks the tokenizer agrees (timestamp_begin == n_vocab - N_TIMESTAMPS).
N_TIMESTAMPS = 1501

# Per decoding row, the tokens allowed at the next step are [0, text_end) (text, unless a timestamp
# must come), [eot, ts_begin) (end of text and other specials), and [ts_lo, ts_hi) (timestamps not
# going back in time), minus the suppression mask; ts_rule 1 makes timestamps win when their summed
# probability beats every text token's (openai-whisper's ApplyTimestampRules).
RULE_COLUMNS = ("text_end", "eot", "ts_begin", "ts_lo", "ts_hi", "ts_rule")


def greedy_choice(logits: TensorValue, suppress: TensorValue, rules: TensorValue) -> TensorValue:
    """[batch, vocab] float32 logits -> [batch, 2]: the most likely allowed token and its log probability."""
    token, logprob = _greedy_pick(logits, suppress, rules)
    return ops.stack([ops.cast(token, DType.float32), logprob], axis=1)


def _greedy_pick(logits: TensorValue, suppress: TensorValue, rules: TensorValue) -> tuple[TensorValue, TensorValue]:
    """[batch, vocab] float32 logits -> the most likely allowed token [batch] (int64) and its log probability.

    openai-whisper's rule "timestamps win when their summed probability beats every text token" is
    compared on the masked logits (log-sum-exp of the timestamps against the best text logit: both sides
    of its log-probability comparison less the same normaliser), so the vocabulary is reduced in three
    passes (masking, text argmax, text exp-sum) plus small ones over the timestamps, not ten.
    """
    device = logits.device
    n_vocab = int(logits.shape[1])
    vocab = ops.range(0, n_vocab, 1, out_dim=n_vocab, dtype=DType.int64, device=device)
    idx = ops.unsqueeze(vocab, 0)
    text_end, eot, ts_begin, ts_lo, ts_hi, ts_rule = (rules[:, i:i + 1] for i in range(len(RULE_COLUMNS)))
    allowed = ops.logical_or(ops.logical_or(idx < text_end, ops.logical_and(idx >= eot, idx < ts_begin)),
                             ops.logical_and(idx >= ts_lo, idx < ts_hi))
    masked = ops.where(allowed, logits + suppress, ops.constant(-np.inf, DType.float32, device))
    first_ts = n_vocab - N_TIMESTAMPS
    text, stamps = masked[:, :first_ts], masked[:, first_ts:]
    text_idx = ops.argmax(text, axis=-1)  # [batch, 1]; ties go to the lower token, as argmax over all does
    text_max = ops.gather_nd(text, text_idx, batch_dims=1)  # [batch]
    text_lse = _logsumexp(text, text_max)
    stamp_idx = ops.argmax(stamps, axis=-1)
    stamp_max = ops.gather_nd(stamps, stamp_idx, batch_dims=1)
    stamp_lse = _logsumexp(stamps, stamp_max)
    drop_text = ops.logical_and(ops.squeeze(ts_rule, 1) > 0, stamp_lse > text_max)
    pick_stamp = ops.logical_or(drop_text, stamp_max > text_max)
    token = ops.where(pick_stamp, ops.squeeze(stamp_idx, 1) + first_ts, ops.squeeze(text_idx, 1))
    total = ops.where(drop_text, stamp_lse, _logaddexp(text_lse, stamp_lse))
    return token, ops.where(pick_stamp, stamp_max, text_max) - total


def _logsumexp(x: TensorValue, x_max: TensorValue) -> TensorValue:
    """[batch, n], its row maxima [batch] -> [batch]; -inf for a row of -inf."""
    m = ops.where(ops.is_inf(x_max), ops.constant(0.0, DType.float32, x.device), x_max)
    return m + ops.log(ops.sum(ops.exp(x - ops.unsqueeze(m, 1)), axis=-1)[:, 0])


def _logaddexp(a: TensorValue, b: TensorValue) -> TensorValue:
    m = ops.max(a, b)
    m = ops.where(ops.is_inf(m), ops.constant(0.0, DType.float32, a.device), m)
    return m + ops.log(ops.exp(a - m) + ops.exp(b - m))


def causal_mask(offset: TensorValue, end: TensorValue, positions: TensorValue,
                dtype: DType, device: DeviceRef) -> TensorValue:
    """[seq, total] additive mask: a new token at position p sees cached and new tokens <= p."""
    keys = ops.range(0, end, 1, out_dim="total", dtype=DType.int64, device=DeviceRef.CPU())
    future = ops.unsqueeze(keys, 0) > ops.unsqueeze(positions, 1)
    neg = ops.constant(-np.inf, dtype, DeviceRef.CPU())
    zero = ops.constant(0.0, dtype, DeviceRef.CPU())
    return ops.where(future, neg, zero).to(device)


def build_reorder(dims: ModelDimensions, w: GraphWeights, dtype: DType, device: DeviceRef) -> Graph:
    inputs = [TensorType(DType.int64, ["batch"], device)] + [cache_type(dims, dtype, device)] * (2 * dims.n_text_layer)
    with Graph("whisper_kv_reorder", input_types=inputs) as g:
        index = g.inputs[0].tensor
        for buf in g.inputs[1:]:
            buf = buf.buffer
            ops.buffer_store(buf, ops.gather(ops.buffer_load(buf), index, axis=0))
        g.output()
    return g


BUILDERS = {"encoder": build_encoder, "cross_kv": build_cross_kv,
            "cross_kv_for_steps": functools.partial(build_cross_kv, for_steps=True), "decoder": build_decoder,
            "decoder_row": functools.partial(build_decoder, one_row=True),
            "decoder_step": build_decoder_step, "reorder": build_reorder}


# --- runtime -------------------------------------------------------------------

GPU_MEMORY_PERCENT = 10  # default cap on MAX's GPU memory pool; the environment variable overrides it


def resolve_device(device: str) -> driver.Device:
    if device == "cpu":
        return driver.CPU()
    if device in ("gpu", "cuda"):
        # Recording a step (Model.capture) makes MAX's memory pool take most of the GPU unless capped
        # (74 of 80 GB on an H100; the model needs about 1-3 GB). Set before the first GPU context.
        os.environ.setdefault("MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE_PERCENT", str(GPU_MEMORY_PERCENT))
        if driver.accelerator_count() == 0:
            raise WhisperError("device 'gpu' requested but MAX finds no GPU on this machine")
        return driver.Accelerator()
    raise WhisperError(f"unknown device '{device}': use cpu or gpu")


@dataclass
class Timings:
    """Seconds spent compiling and inside MAX graph execution, per graph."""

    compile: dict[str, float] = field(default_factory=dict)
    execute: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.execute[name] = self.execute.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1


class WhisperGraphs:
    """The compiled graphs of one checkpoint on one device, and calls into them."""

    ALL = ("encoder", "cross_kv", "decoder")  # and "reorder", compiled on first use (beam search)

    def __init__(self, ckpt: Checkpoint, device: str = "cpu", dtype: str = "float32", graphs: tuple[str, ...] = ALL,
                 step_graph: bool | None = None, compiled: list[str] | None = None, export_to: str | None = None):
        self.dims = ckpt.dims
        self.device = resolve_device(device)
        self.device_ref = DeviceRef.from_device(self.device)
        dtypes = {"float32": DType.float32, "float16": DType.float16}
        if dtype not in dtypes:
            raise WhisperError(f"unsupported dtype '{dtype}': use float32 or float16")
        if dtype != "float32" and self.device.is_host:
            raise WhisperError(f"dtype {dtype} needs device gpu; the CPU engine runs float32")
        self.dtype = dtypes[dtype]
        self._state = {k: _cast(v, self.dtype) for k, v in ckpt.state.items()}  # lives as long as the models
        # `compiled`: folders of graphs compiled ahead of time (`max-whisper compile`), used instead of
        # compiling here; each must hold exactly the graph this code builds. `export_to`: the folder to
        # write the compiled graphs to.
        self.session = InferenceSession(devices=[self.device], export_mefs=export_to)
        self._compiled = MefStore.for_import(compiled, verify_body=True) if compiled else None
        # Otherwise the graphs shipped in the package for this device, if any hold what is built here.
        shipped = shipped_folder(shipped_target(self.device)) if not compiled and not export_to else None
        self._shipped = MefStore.for_import([shipped], verify_body=True) if shipped else None
        self.timings = Timings()
        self.sources: dict[str, str] = {}  # graph -> "compiled" (here), "--compiled" or "shipped"
        # On a GPU, greedy steps replay a recorded graph of STEPS_PER_CALL steps (see build_decoder_step); on the
        # CPU it brings nothing, but `step_graph=True` runs it there too (to test it without a GPU).
        steps = "decoder" in graphs and (step_graph if step_graph is not None else not self.device.is_host)
        for name in graphs:  # the hybrid backend compiles only the encoder
            setattr(self, name, self._compile("cross_kv_for_steps" if name == "cross_kv" and steps else name))
        self.decoder_step = self._compile("decoder_step") if steps else None
        self.decoder_row = self._compile("decoder_row") if "decoder" in graphs and not steps and self.device.is_host else None
        self._slots: dict[int, StepSlot] = {}
        self._reorder = None
        self._constants: dict[tuple, driver.Buffer] = {}  # small inputs reused by every call

    @property
    def reorder(self):
        if self._reorder is None:
            self._reorder = self._compile("reorder")
        return self._reorder

    def build(self, name: str, device: DeviceRef | None = None) -> tuple[Graph, GraphWeights]:
        """One of BUILDERS' graphs for this checkpoint and dtype, on this device (or `device`: graphs for
        another device can be built, not run), and the weights it uses."""
        device = device or self.device_ref
        w = GraphWeights(self._state, self.dtype, device)
        return BUILDERS[name](self.dims, w, self.dtype, device), w

    def _compile(self, name: str):
        start = time.perf_counter()
        graph, w = self.build(name)
        artifact = None
        if self._compiled is not None:
            try:
                artifact = self._compiled.claim_import(graph)
            except (MissingArtifactError, ArtifactBodyMismatch) as e:
                raise WhisperError(f"--compiled: no compiled {name} graph for this model, device and version "
                                   f"of max-whisper ({type(e).__name__}); run `max-whisper compile` again") from None
        elif self._shipped is not None:
            try:
                artifact = self._shipped.claim_import(graph)
            except (MissingArtifactError, ArtifactBodyMismatch):
                pass  # not shipped (another model or dtype): compiled below, like any graph
        if artifact is not None:
            model = self.session.init(self.session.compile(artifact), weights_registry=w.registry())
        else:
            model = self.session.load(graph, weights_registry=w.registry())
        self.sources[name] = "--compiled" if self._compiled else "shipped" if artifact else "compiled"
        self.timings.compile[name] = time.perf_counter() - start
        return model

    def _run(self, name: str, model, *args):
        start = time.perf_counter()
        out = model.execute(*args)
        if not self.device.is_host:
            self.device.synchronize()  # GPU work is asynchronous: time it to completion
        self.timings.add(name, time.perf_counter() - start)
        return out

    def to_device(self, array: np.ndarray) -> driver.Buffer:
        return driver.Buffer.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def to_host(self, buffer: driver.Buffer) -> np.ndarray:
        """A device buffer as a float32 numpy array on the host."""
        host = buffer if self.device.is_host else buffer.to(driver.CPU())
        return _to_float32(host.to_numpy())

    def encode(self, mel: np.ndarray) -> driver.Buffer:
        """mel [batch, n_mels, 3000] float32 -> audio features on the device."""
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        if self.dtype != DType.float32:
            mel = _cast(mel, self.dtype)
        return self._run("encoder", self.encoder, self.to_device(mel))[0]

    def start_decoding(self, features: driver.Buffer, rows: np.ndarray) -> "DecoderState":
        """Cross-attention keys/values for each decoding row, and an empty self-attention cache."""
        batch = len(rows)
        padding = recorded_batch(batch) - batch if self.decoder_step is not None else 0
        rows = np.concatenate([rows, np.repeat(rows[:1], padding)]).astype(np.int64)
        keys, values, *values_t = self._run("cross_kv", self.cross_kv, features, self.to_device(rows))
        if self.decoder_step is None:
            shape = (batch, self.dims.n_text_ctx, self.dims.n_text_state)
            caches = [driver.Buffer(self.dtype, shape, self.device) for _ in range(2 * self.dims.n_text_layer)]
            return DecoderState(self, keys, values, caches, self.suppression(()))
        if len(rows) not in self._slots:
            self._slots[len(rows)] = StepSlot(self, len(rows), keys, values, values_t[0])
        slot = self._slots[len(rows)]
        for buffer, new in ((slot.cross_k, keys), (slot.cross_v, values), (slot.cross_v_t, values_t[0])):
            buffer.inplace_copy_from(new)
        self.device.synchronize()  # copies are asynchronous, even on the CPU; `keys` dies here
        state = DecoderState(self, slot.cross_k, slot.cross_v, slot.caches, self.suppression(()), slot=slot,
                             padding=padding)
        slot.owner = state
        return state

    def positions(self, positions: tuple[int, ...]) -> driver.Buffer:
        """The decoder's logit-positions input (nearly every step asks for position 0 of one new token)."""
        return self._constant(("positions", positions), lambda: np.array(positions, np.int64))

    def suppression(self, token_ids: tuple[int, ...]) -> driver.Buffer:
        """The decoder's suppression mask input (-inf at `token_ids`)."""
        def mask():
            m = np.zeros(self.dims.n_vocab, np.float32)
            m[list(token_ids)] = -np.inf
            return m

        return self._constant(("suppression", token_ids), mask)

    def _constant(self, key: tuple, make) -> driver.Buffer:
        """A read-only graph input on the device, uploaded once per distinct value."""
        if key not in self._constants:
            self._constants[key] = self.to_device(make())
        return self._constants[key]


def recorded_batch(batch: int) -> int:
    """The batch the recorded steps run `batch` rows on: the least of 1, 2, 3, 4, 6, 8, 12, 16, 24, ...
    (2^k and 3 * 2^(k-1)) that holds them, the rest padding. Each recorded batch size keeps its own device
    memory (some hundred MB at 16 rows): every size from 1 to 16 ran out of MAX's 8 GB graph memory pool
    on an H100, and powers of two alone padded a single file's 5 windows to 8 rows (+20 % time)."""
    power = 1 << (batch - 1).bit_length()
    return 3 * power // 4 if power >= 4 and 3 * power // 4 >= batch else power


@dataclass
class DecoderState:
    """One decoding run's device state: cross keys/values, the self-attention cache, the suppression mask."""

    graphs: WhisperGraphs
    cross_k: driver.Buffer
    cross_v: driver.Buffer
    caches: list[driver.Buffer]
    suppress: driver.Buffer
    offset: int = 0  # positions written in the cache
    slot: StepSlot | None = None  # GPU: the recorded steps and the buffers they read
    # Rows whose first tokens were shorter than others': how many of the first step's positions each
    # left as padding. Such a row's next position is `offset - ragged`; only the recorded steps,
    # whose rows each have their own position, can continue them.
    ragged: np.ndarray | None = None
    padding: int = 0  # rows after the run's, up to the recorded batch size: fed zeros, their output dropped

    def step(self, tokens: np.ndarray, logit_positions: list[int] | None = None,
             ragged: np.ndarray | None = None) -> np.ndarray:
        """Feed new tokens [batch, seq]; returns float32 logits [batch, n_pos, vocab].

        By default only the last position's logits are computed. `ragged` (first step, recorded steps
        to follow): per row, how many of the last positions are padding.
        """
        if ragged is not None and (self.slot is None or self.offset > 0):
            raise WhisperError("internal error: rows of different lengths need the recorded step graph")
        open_rules = np.tile(np.array([self.graphs.dims.n_vocab, 0, 0, 0, 0, 0], np.int64), (len(tokens), 1))
        logits, _ = self._execute(tokens, logit_positions, open_rules)
        self.ragged = ragged
        return self.graphs.to_host(logits)[:len(tokens)]

    def step_greedy(self, tokens: np.ndarray, rules: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed new tokens [batch, seq]; choose each row's next token on the device under `rules`
        [batch, len(RULE_COLUMNS)] and the suppression mask. Returns tokens and their log probabilities."""
        _, choice = self._execute(tokens, None, rules)
        choice = self.graphs.to_host(choice)[:len(tokens)]
        return choice[:, 0].astype(np.int64), choice[:, 1]

    def steps_greedy(self, tokens: np.ndarray, rule_state: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The recorded steps (GPU): feed one new token per row [batch, 1] and make STEPS_PER_CALL greedy
        choices, the rules followed from `rule_state` [batch, STEP_COLUMNS after token and position].
        Returns each step's tokens and log probabilities; steps past the context's end are left out."""
        behind = self.ragged if self.ragged is not None else np.zeros(len(tokens), np.int64)
        first = self._claim(1, int(behind.max()))  # the steps go on while the row furthest behind fits
        n_steps = min(STEPS_PER_CALL, self.graphs.dims.n_text_ctx - first)
        positions = (self.offset - behind).astype(np.int64)[:, None]
        inputs = self._fill(np.concatenate([tokens, positions, rule_state], axis=1))
        choice = self.graphs.to_host(self.slot.step(inputs, self.suppress))[:len(tokens)]
        self.offset += n_steps
        return [(choice[:, i, 0].astype(np.int64), choice[:, i, 1]) for i in range(n_steps)]

    def _fill(self, rows: np.ndarray) -> np.ndarray:
        """Per-row inputs [n, ...] with zero rows for the padding."""
        if not self.padding:
            return rows
        return np.concatenate([rows, np.zeros((self.padding, *rows.shape[1:]), rows.dtype)])

    def _check_slot(self) -> None:
        if self.slot is not None and self.slot.owner is not self:
            raise WhisperError("internal error: a newer decoding run took over this run's GPU buffers")

    def _claim(self, n_new: int, behind: int = 0) -> int:
        """Checks that this run still owns its buffers and that `n_new` more tokens fit in the context of
        the row `behind` positions short of `offset` (ragged rows: the one furthest behind); returns that
        row's position for the first of them."""
        self._check_slot()
        first = self.offset - behind
        if first + n_new > self.graphs.dims.n_text_ctx:
            raise WhisperError(f"decoder context of {self.graphs.dims.n_text_ctx} tokens exceeded")
        return first

    def _execute(self, tokens: np.ndarray, logit_positions: list[int] | None, rules: np.ndarray):
        g = self.graphs
        if self.ragged is not None:
            raise WhisperError("internal error: rows of different lengths need the recorded step graph")
        tokens = np.ascontiguousarray(self._fill(tokens), dtype=np.int64)
        rules = self._fill(rules)
        self._claim(tokens.shape[1])
        positions = tuple(logit_positions if logit_positions is not None else [tokens.shape[1] - 1])
        offset = driver.Buffer.from_numpy(np.array(self.offset, dtype=np.int64))
        one_row = g.decoder_row is not None and tokens.shape == (1, 1) and positions == (0,)
        name = "decoder_row" if one_row else "decoder"
        logits, choice = g._run(name, g.decoder_row if one_row else g.decoder, g.to_device(tokens), offset,
                                g.positions(positions),
                                self.suppress, g.to_device(rules.astype(np.int64)),
                                self.cross_k, self.cross_v, *self.caches)
        self.offset += tokens.shape[1]
        return logits, choice

    def reorder(self, source_rows: np.ndarray) -> None:
        """Beam search: row i of the cache becomes row source_rows[i]."""
        g = self.graphs
        self._check_slot()
        n = len(source_rows)
        source_rows = np.concatenate([np.asarray(source_rows, np.int64), np.arange(n, n + self.padding)])
        g._run("reorder", g.reorder, g.to_device(source_rows), *self.caches)


class StepSlot:
    """The device buffers of decoding `batch` rows on a GPU, and the single-token step recorded on them.

    A recorded step reads and writes fixed buffers, so every decoding run of this batch size uses
    these (one run at a time: the newest run owns them); each step copies its inputs into `inputs`.
    """

    def __init__(self, graphs: WhisperGraphs, batch: int, cross_k: driver.Buffer, cross_v: driver.Buffer,
                 cross_v_t: driver.Buffer):
        dims, dev = graphs.dims, graphs.device
        self.graphs, self.batch = graphs, batch
        self.inputs = driver.Buffer(DType.int64, (batch, len(STEP_COLUMNS)), dev)
        self.suppress = driver.Buffer(DType.float32, (dims.n_vocab,), dev)
        self.cross_k = driver.Buffer(graphs.dtype, tuple(cross_k.shape), dev)
        self.cross_v = driver.Buffer(graphs.dtype, tuple(cross_v.shape), dev)  # for the first step
        self.cross_v_t = driver.Buffer(graphs.dtype, tuple(cross_v_t.shape), dev)  # for the recorded ones
        shape = (batch, dims.n_text_ctx, dims.n_text_state)
        # Zeroed: the step reads every row, and masked rows of fresh memory can hold inf or NaN
        # (0 * NaN is NaN); later windows leave finite values there.
        self.caches = [driver.Buffer.zeros(shape, graphs.dtype, dev) for _ in range(2 * dims.n_text_layer)]
        self.owner: DecoderState | None = None
        self._suppress_source: driver.Buffer | None = None
        self._output: driver.Buffer | None = None
        # Host copy of `inputs`: it must outlive the asynchronous copy to the device.
        self._staging = np.zeros(tuple(self.inputs.shape), np.int64)
        self._staging_buffer = driver.Buffer.from_numpy(self._staging)

    def step(self, inputs: np.ndarray, suppress: driver.Buffer) -> driver.Buffer:
        """Run the steps from `inputs` [batch, STEP_COLUMNS]; returns their greedy choices [batch, steps, 2]."""
        g, model = self.graphs, self.graphs.decoder_step
        self._staging[...] = inputs
        self.inputs.inplace_copy_from(self._staging_buffer)
        if suppress is not self._suppress_source:
            self.suppress.inplace_copy_from(suppress)
            self._suppress_source = suppress
        g.device.synchronize()  # the step reads what the copies write (and the next step rewrites the staging)
        args = (self.inputs, self.suppress, self.cross_k, self.cross_v_t, *self.caches)
        start = time.perf_counter()
        if g.device.is_host:
            self._output = model.execute(*args)[0]
        else:
            if self._output is None:
                self._output = model.capture(self.batch, *args)[0]
            model.replay(self.batch, *args)
            g.device.synchronize()
        g.timings.add("decoder_step", time.perf_counter() - start)
        return self._output


def _cast(array: np.ndarray, dtype: DType) -> np.ndarray:
    """A fresh, aligned copy: checkpoint arrays can be views at odd offsets of a file buffer."""
    return np.array(array, dtype=dtype.to_numpy(), order="C", copy=True)


def _to_float32(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32, copy=False)
