"""The decoder's graphs: cross-attention keys/values, the KV-cached decoder, the recorded greedy steps, and
the beam reorder of the cache.

- cross_kv: features [n_audio, 1500, d], rows [batch] -> keys, values [layer, batch, head, 1500, d_head]
  (`rows` picks the audio for each decoding row, so beams share one encoding)
- decoder: tokens [batch, seq], offset, logit positions [n_pos], suppression mask [vocab], token rules
  [batch, rules.BOUNDS], cross keys/values and one self-attention cache buffer pair per layer [batch, 448, d],
  written in place -> logits [batch, n_pos, vocab], greedy choice [batch, 2] (token, log probability) at
  the last position; greedy decoding copies only the choice to the host
- decoder_row (CPU): the decoder for one token of one row, the sequential loop's every step after the first
- decoder_step (GPU): STEPS_PER_CALL greedy steps of one token per row, the token choice and its rules in
  the graph; recorded once per batch size and replayed
- decoder_step_rows (GPU): the same, its layers' products as broadcast multiplies and sums (`row_product`),
  for batches of a few rows
- reorder: gathers the cache buffers' rows by beam index (beam search)
"""

from __future__ import annotations

import functools
from typing import Callable, Literal

import numpy as np
from max.dtype import DType
from max.graph import BufferType, DeviceRef, Graph, TensorType, TensorValue, ops

from .. import rules
from ..weights import ModelDimensions
from .layers import (FLOAT32_COPY, GraphWeights, attention, embed, layer_norm, linear, merge_heads, mlp, row_product,
                     split_heads)


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
        TensorType(DType.int64, [batch, len(rules.BOUNDS)], device),  # each row's token rules
    ] + cross_types(dims, dtype, device, batch) + [cache_type(dims, dtype, device, batch)] * (2 * dims.n_text_layer)
    with Graph("whisper_decoder_row" if one_row else "whisper_decoder", input_types=inputs) as g:
        tokens, offset, logit_pos, suppress, row_bounds, cross_k, cross_v = (v.tensor for v in g.inputs[:7])
        caches = [v.buffer for v in g.inputs[7:]]
        seq = tokens.shape[1]
        n_seq = ops.shape_to_tensor([seq]).reshape([])
        end = offset + ops.cast(n_seq, DType.int64)
        positions = ops.range(offset, end, 1, out_dim=seq, dtype=DType.int64, device=DeviceRef.CPU())
        x = embed(w, tokens, positions.to(device))
        mask = causal_mask(offset, end, positions, dtype, device)

        def cached(i: int, new: TensorValue) -> TensorValue:
            ops.buffer_store_slice(caches[i], new, [slice(None), (slice(offset, end), seq), slice(None)])
            return caches[i][:, (slice(0, end), "total"), :]

        x = decoder_blocks(dims, w, x, cached, mask, (cross_k, cross_v), "one_row" if one_row else "full")
        logits = vocab_logits(w, ops.gather(x, logit_pos, axis=1), one_row)
        g.output(logits, rules.graph_greedy_choice(ops.cast(logits[:, -1, :], DType.float32), suppress, row_bounds))
    return g


# The recorded steps' input per row: its last token, that token's position, and its rule state, which the
# graph advances from step to step.
STEP_INPUT = ("token", "position", *rules.STATE)
STEPS_PER_CALL = 8  # greedy steps per recorded call: the host takes its tokens and rules once per call


def build_decoder_step(dims: ModelDimensions, w: GraphWeights, dtype: DType, device: DeviceRef,
                       n_steps: int = STEPS_PER_CALL, row_form: bool = False) -> Graph:
    """`n_steps` greedy steps of one new token per row, each row at its own position, choosing every
    token in the graph under openai-whisper's rules; every shape is fixed but the batch.

    `row_form`: the layers' products in `row_product`'s form (so the MLP's 1536 -> 384 stays a matmul), the
    vocabulary's a matmul. On an H200 MAX's float32 products run GEMV kernels for one row and GEMM kernels for
    more, which took 4x the time for 6 rows; in the row form each product is one reduction kernel
    (docs/measurements.md, "Few rows in the row form").

    Self-attention runs over all n_text_ctx cache rows with the later ones masked, and the new key and
    value are written by selecting the row, so no launch depends on a host value: the GPU can record
    the call once per batch size and replay it (`Model.capture`), which is what makes a step cheap
    there (an eager step is some hundred small kernel launches). A row that has ended is fed end of
    text, as the host loop does; steps past the context's end repeat its last position and are
    dropped by the caller. Returns [batch, n_steps, 2]: each step's token and log probability.
    """
    inputs = [
        TensorType(DType.int64, ["batch", len(STEP_INPUT)], device),
        TensorType(DType.float32, [dims.n_vocab], device),  # suppression: 0 or -inf per token
    ] + cross_types(dims, dtype, device, values_transposed=True) + [cache_type(dims, dtype, device)] * (2 * dims.n_text_layer)
    with Graph("whisper_decoder_step_rows" if row_form else "whisper_decoder_step", input_types=inputs) as g:
        state, suppress, cross_k, cross_v = (v.tensor for v in g.inputs[:4])
        caches = [v.buffer for v in g.inputs[4:]]
        token, position, eot, ts_rule, last_was_ts, penultimate_was_ts, last_ts = (
            state[:, i:i + 1] for i in range(len(STEP_INPUT)))  # each [batch, 1]
        rows = ops.unsqueeze(ops.range(0, dims.n_text_ctx, 1, out_dim=dims.n_text_ctx, dtype=DType.int64,
                                       device=device), 0)  # [1, n_text_ctx]
        int64 = functools.partial(ops.constant, dtype=DType.int64, device=device)
        last_position = int64(dims.n_text_ctx - 1)
        ts_begin = int64(dims.n_vocab - rules.N_TIMESTAMPS)
        choices = []
        for _ in range(n_steps):
            at = ops.min(position, last_position)
            x = embed(w, token, at)
            is_new = ops.unsqueeze(rows == at, 2)  # [batch, n_text_ctx, 1]
            future = ops.where(rows > at, ops.constant(-np.inf, dtype, device), ops.constant(0.0, dtype, device))
            mask = ops.unsqueeze(ops.unsqueeze(future, 1), 1)  # [batch, 1 (head), 1 (query), n_text_ctx]

            def cached(i: int, new: TensorValue) -> TensorValue:
                full = ops.where(is_new, new, ops.buffer_load(caches[i]))
                ops.buffer_store(caches[i], full)
                return full

            x = decoder_blocks(dims, w, x, cached, mask, (cross_k, cross_v),
                               "one_query_rows" if row_form else "one_query")
            logits = ops.cast(vocab_logits(w, x)[:, 0, :], DType.float32)
            row_bounds = rules.graph_bounds(dims.n_vocab, ts_begin, eot, ts_rule, last_was_ts, penultimate_was_ts,
                                            last_ts)
            chosen, logprob = rules.graph_greedy_pick(logits, suppress, row_bounds)
            choices.append(ops.stack([ops.cast(chosen, DType.float32), logprob], axis=1))
            token, last_was_ts, penultimate_was_ts, last_ts = rules.graph_advance(token, chosen, eot, ts_begin,
                                                                                  last_was_ts, last_ts)
            position = position + 1
        g.output(ops.stack(choices, axis=1))
    return g


def cross_types(dims: ModelDimensions, dtype: DType, device: DeviceRef, batch: int | str = "batch",
                values_transposed: bool = False) -> list[TensorType]:
    """Cross-attention keys and values [layer, batch, head, n_audio_ctx, d_head] (`values_transposed`:
    values [layer, batch, head, d_head, n_audio_ctx])."""
    keys = [dims.n_text_layer, batch, dims.n_text_head, dims.n_audio_ctx, dims.n_text_state // dims.n_text_head]
    values = keys[:3] + keys[:2:-1] if values_transposed else keys
    return [TensorType(dtype, keys, device), TensorType(dtype, values, device)]


BlockForm = Literal["full", "one_query", "one_query_rows", "one_row"]


def decoder_blocks(dims: ModelDimensions, w: GraphWeights, x: TensorValue, cached: Callable[[int, TensorValue], TensorValue],
                   mask: TensorValue, cross: tuple[TensorValue, TensorValue], form: BlockForm = "full",
                   cross_scores: list[TensorValue] | None = None) -> TensorValue:
    """The residual blocks; `cached(i, new rows)` stores new keys (i = 2 * layer) or values (2 * layer + 1)
    in the self-attention cache and returns the rows attention sees; `cross`: the cross-attention keys and
    values. `form` "one_query": see `attention`, and the cross values are transposed (`cross_types`);
    "one_row": see `row_product`; "one_query_rows": both. `cross_scores`, where given, receives each
    layer's cross-attention scores q k^T / sqrt(d_head) [batch, head, seq, n_audio_ctx] (word timestamps)."""
    cross_k, cross_v = cross
    one_query, row_form = form in ("one_query", "one_query_rows"), form in ("one_row", "one_query_rows")
    def lin(name: str, h: TensorValue, bias: bool = True) -> TensorValue:
        return linear(w, name, h, bias, row_form)

    for i in range(dims.n_text_layer):
        b = f"decoder.blocks.{i}"
        h = layer_norm(w, f"{b}.attn_ln", x)
        q = split_heads(lin(f"{b}.attn.query", h), dims.n_text_head)
        k = split_heads(cached(2 * i, lin(f"{b}.attn.key", h, bias=False)), dims.n_text_head)
        v = split_heads(cached(2 * i + 1, lin(f"{b}.attn.value", h)), dims.n_text_head)
        x = x + lin(f"{b}.attn.out", merge_heads(attention(q, k, v, mask, one_query)))
        h = layer_norm(w, f"{b}.cross_attn_ln", x)
        q = split_heads(lin(f"{b}.cross_attn.query", h), dims.n_text_head)
        if cross_scores is not None:
            batch, heads, seq, d_head = q.shape
            keys = cross_k[i].shape[2]
            q3, k3 = (ops.reshape(t, [-1, t.shape[2], d_head]) for t in (q, cross_k[i]))
            product = (q3 @ ops.transpose(k3, 1, 2)) * (1.0 / float(np.sqrt(int(d_head))))
            cross_scores.append(ops.reshape(product, [batch, heads, seq, keys]))
        x = x + lin(f"{b}.cross_attn.out", merge_heads(attention(q, cross_k[i], cross_v[i], one_query=one_query,
                                                               values_transposed=one_query)))
        x = x + mlp(w, b, layer_norm(w, f"{b}.mlp_ln", x), row_form)
    return x


def vocab_logits(w: GraphWeights, x: TensorValue, one_row: bool = False) -> TensorValue:
    """Final layer norm, then logits against the token embedding (tied weights). In float32 whatever the
    weights' dtype: bfloat16's 8-bit mantissa rounds logits near 20 to steps of 0.125, which would tie and
    swap close candidates (float16 logits, as openai-whisper computes them, are 8 times finer)."""
    x, name = layer_norm(w, "decoder.ln", x), "decoder.token_embedding.weight"
    if w.dtype != DType.float32:
        x, name = ops.cast(x, DType.float32), name + FLOAT32_COPY
    embedding = w(name)
    return row_product(x, embedding) if one_row else x @ ops.transpose(embedding, 0, 1)


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
