"""The encoder graph: log-mel windows [batch, n_mels, 3000] -> audio features [batch, 1500, d]."""

from __future__ import annotations

from max.dtype import DType
from max.graph import DeviceRef, Graph, TensorType, ops

from ..weights import ModelDimensions
from .layers import (GraphWeights, attention, conv1d, conv1d_time_major, fused_self_attention, layer_norm, linear,
                     merge_heads, mlp, split_heads)


def build_encoder(dims: ModelDimensions, w: GraphWeights, dtype: DType, device: DeviceRef) -> Graph:
    """float32 (CPU, GPU): the layers as written in openai-whisper; 16-bit (GPU): `build_fused_encoder`."""
    if dtype != DType.float32:
        return build_fused_encoder(dims, w, dtype, device)
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


def build_fused_encoder(dims: ModelDimensions, w: GraphWeights, dtype: DType, device: DeviceRef) -> Graph:
    """The encoder in 16-bit on the GPU, every product a tensor-core matmul: the convolutions as matmuls over
    time-major activations (no transposes), self-attention as the flash-attention kernel in bfloat16 (in
    float16, MAX 26.7's Hopper kernel fails to instantiate for a d_head of 64: written out in float32, as
    `attention`). Takes float32 log-mel (cast in the graph)."""
    mel_type = TensorType(DType.float32, ["batch", dims.n_mels, 2 * dims.n_audio_ctx], device)
    with Graph("whisper_encoder_fused", input_types=[mel_type]) as g:
        x = ops.transpose(ops.cast(g.inputs[0].tensor, dtype), 1, 2)  # [batch, time, n_mels]
        for name, stride in (("encoder.conv1", 1), ("encoder.conv2", 2)):
            x = ops.gelu(conv1d_time_major(w, name, x, stride))
        x = x + w("encoder.positional_embedding")
        for i in range(dims.n_audio_layer):
            b = f"encoder.blocks.{i}"
            h = layer_norm(w, f"{b}.attn_ln", x)
            q, k, v = (linear(w, f"{b}.attn.{p}", h, bias=p != "key") for p in ("query", "key", "value"))
            if dtype == DType.bfloat16:
                mixed = fused_self_attention(q, k, v, dims.n_audio_head)
            else:
                heads = (split_heads(t, dims.n_audio_head) for t in (q, k, v))
                mixed = merge_heads(attention(*heads))
            x = x + linear(w, f"{b}.attn.out", mixed)
            x = x + mlp(w, b, layer_norm(w, f"{b}.mlp_ln", x))
        g.output(layer_norm(w, "encoder.ln_post", x))
    return g
