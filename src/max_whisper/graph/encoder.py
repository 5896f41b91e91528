"""The encoder graph: log-mel windows [batch, n_mels, 3000] -> audio features [batch, 1500, d]."""

from __future__ import annotations

from max.dtype import DType
from max.graph import DeviceRef, Graph, TensorType, ops

from ..weights import ModelDimensions
from .layers import GraphWeights, attention, conv1d, layer_norm, linear, merge_heads, mlp, split_heads


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
