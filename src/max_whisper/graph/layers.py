"""Layers: functions from MAX graph values to graph values, with weights named as in openai-whisper's
state dict (`GraphWeights`), bound once when a graph is loaded."""

from __future__ import annotations

import numpy as np
from max.dtype import DType
from max.graph import DeviceRef, StaticDim, TensorValue, Weight, ops
from max.graph.type import FilterLayout
from max.nn.attention import MHAMaskVariant
from max.nn.kernels import flash_attention_gpu

LN_EPS = 1e-5
# A weight that 16-bit graphs also read in float32 is in the state a second time, its name with this suffix.
FLOAT32_COPY = ":float32"
FLOAT32_WEIGHTS = ("decoder.token_embedding.weight",)  # the vocabulary projection: logits in float32

class GraphWeights:
    """Creates graph weights on first use, named as in the checkpoint; remembers which were used."""

    def __init__(self, state: dict[str, np.ndarray], dtype: DType, device: DeviceRef):
        self.state, self.dtype, self.device = state, dtype, device
        self.used: dict[str, Weight] = {}

    def __call__(self, name: str) -> Weight:
        if name not in self.used:
            dtype = DType.float32 if name.endswith(FLOAT32_COPY) else self.dtype
            self.used[name] = Weight(name, dtype, self.state[name].shape, self.device)
        return self.used[name]

    def registry(self) -> dict[str, np.ndarray]:
        return {name: self.state[name] for name in self.used}


def linear(w: GraphWeights, name: str, x: TensorValue, bias: bool = True, row_form: bool = False) -> TensorValue:
    """x @ weight^T + bias; `row_form`: in `row_product`'s form (x of one row, or of a few on a GPU)."""
    weight = w(f"{name}.weight")
    y = row_product(x, weight) if row_form else x @ ops.transpose(weight, 0, 1)
    return y + w(f"{name}.bias") if bias else y


def row_product(x: TensorValue, weight: TensorValue) -> TensorValue:
    """x [..., in] @ weight [out, in]^T for an x of one row (or of a few rows on a GPU: `decoder_step_rows`).

    On MAX 26.7's CPU a broadcast multiply and a sum over `in` reads the checkpoint's [out, in] matrix at
    memory speed where the matmul is slower: the 51864-token vocabulary 4.6 -> 2.0 ms, 16 384x384 matrices
    0.38 -> 0.27 ms. Not when `in` is the longer side (the MLP's 1536 -> 384: the sum form takes 2x the
    matmul's time), nor, on the CPU, for several rows: the sum form reads the matrix once per row. On an
    H200 it is the faster form for 2-64 rows of tiny's 384-wide products, where MAX's matmul runs GEMM kernels
    (`decoder_step_rows`).
    """
    if int(weight.shape[1]) > int(weight.shape[0]):
        return x @ ops.transpose(weight, 0, 1)
    return ops.squeeze(ops.sum(ops.unsqueeze(x, -2) * weight, axis=-1), -1)


def layer_norm(w: GraphWeights, name: str, x: TensorValue) -> TensorValue:
    return ops.layer_norm(x, w(f"{name}.weight"), w(f"{name}.bias"), LN_EPS)


def mlp(w: GraphWeights, name: str, x: TensorValue, row_form: bool = False) -> TensorValue:
    return linear(w, f"{name}.mlp.2", ops.gelu(linear(w, f"{name}.mlp.0", x, row_form=row_form)), row_form=row_form)


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
    over 1500 keys, this form 13 us (docs/benchmarks-journal.md, benchmarks/investigations/step_parts.py).
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


def fused_self_attention(q: TensorValue, k: TensorValue, v: TensorValue, n_head: int) -> TensorValue:
    """Unmasked softmax(q k^T / sqrt(d_head)) v over [batch, time, d] values, as MAX's flash-attention kernel
    (GPU, bfloat16): the scores never reach device memory, and the heads are read in place."""
    b, t, d = q.shape
    q, k, v = (ops.reshape(x, [b, t, n_head, int(d) // n_head]) for x in (q, k, v))
    out = flash_attention_gpu(q, k, v, mask_variant=MHAMaskVariant.NULL_MASK, scale=1.0 / float(np.sqrt(int(d) // n_head)))
    return ops.reshape(out, [b, t, d])


def conv1d_time_major(w: GraphWeights, name: str, x: TensorValue, stride: int) -> TensorValue:
    """PyTorch Conv1d (kernel 3, padding 1, stride 1, or 2 over an even time) on [batch, time, channels], as one
    matrix product:
    the three taps' inputs side by side [batch, time_out, 3 * channels] against the filter as
    [out, 3 * channels]. The GPU's matmul runs it on the tensor cores, where its convolution did not."""
    weight = w(f"{name}.weight")  # [out, in, 3]
    out_ch, in_ch = int(weight.shape[0]), int(weight.shape[1])
    b, t, _ = x.shape
    zero = ops.broadcast_to(ops.constant(0.0, x.dtype, x.device), [b, 1, in_ch])
    padded = ops.concat([zero, x, zero], axis=1)  # [batch, time + 2, in]
    steps = int(t) // stride
    if stride == 1:
        taps = ops.concat([padded[:, k:k + steps, :] for k in range(3)], axis=2)
    else:  # output i reads padded rows 2i, 2i + 1 (side by side in a reshape) and 2i + 2
        pairs = ops.reshape(padded[:, 0:2 * steps, :], [b, steps, 2 * in_ch])
        third = ops.reshape(padded[:, 2:2 * steps + 2, :], [b, steps, 2 * in_ch])[:, :, 0:in_ch]
        taps = ops.concat([pairs, third], axis=2)
    filt = ops.reshape(ops.permute(weight, [0, 2, 1]), [out_ch, 3 * in_ch])  # tap-major, as `taps`
    return taps @ ops.transpose(filt, 0, 1) + w(f"{name}.bias")


def conv1d(w: GraphWeights, name: str, x: TensorValue, stride: int) -> TensorValue:
    """PyTorch Conv1d (kernel 3, padding 1) on [batch, channels, time], torch-ordered filter."""
    filt = ops.unsqueeze(w(f"{name}.weight"), 2)  # [out, in, 1, k]: FCRS
    y = ops.conv2d(ops.unsqueeze(ops.transpose(x, 1, 2), 1), filt, stride=(1, stride),
                   padding=(0, 0, 1, 1), bias=w(f"{name}.bias"), filter_layout=FilterLayout.FCRS)
    return ops.transpose(ops.squeeze(y, 1), 1, 2)


def embed(w: GraphWeights, tokens: TensorValue, positions: TensorValue) -> TensorValue:
    """Token plus positional embedding: tokens [batch, seq], positions [seq] or [batch, seq] -> [batch, seq, d]."""
    return (ops.gather(w("decoder.token_embedding.weight"), tokens, axis=0)
            + ops.gather(w("decoder.positional_embedding"), positions, axis=0))
