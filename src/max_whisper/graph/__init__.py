"""Whisper as MAX graphs: layers (`layers`), the encoder (`encoder`), the decoder's graphs (`decoder`) and the
alignment pass for word timestamps (`alignment`).

Every weight is a graph `Weight` named as in openai-whisper's state dict and bound when the graph is
loaded; calls pass only audio features, tokens and cache buffers. Batch and length are symbolic where
they can be, so one compiled model serves every call. Nothing here runs a graph: `runtime` does.
"""

from __future__ import annotations

import functools
from typing import Callable

from max.graph import Graph

from .alignment import build_alignment
from .decoder import build_cross_kv, build_decoder, build_decoder_step, build_reorder
from .encoder import build_encoder
from .layers import GraphWeights

__all__ = ["BUILDERS", "Builder", "GraphWeights"]

Builder = Callable[..., Graph]  # (dims, weights, dtype, device, **options of the graph)

# Every graph the engine compiles, by name.
BUILDERS: dict[str, Builder] = {
    "encoder": build_encoder,
    "cross_kv": build_cross_kv,
    "cross_kv_for_steps": functools.partial(build_cross_kv, for_steps=True),
    "decoder": build_decoder,
    "decoder_row": functools.partial(build_decoder, one_row=True),
    "decoder_step": build_decoder_step,
    "decoder_step_rows": functools.partial(build_decoder_step, row_form=True),
    "reorder": build_reorder,
    "alignment": build_alignment,  # options: heads, median_width
}
