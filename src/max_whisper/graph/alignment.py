"""The alignment graph, for word timestamps: the decoder over whole token sequences (no cache), returning what
openai-whisper's `find_alignment` reads from its model: each position's probability of the next token among
the text tokens, and the alignment heads' cross-attention scores."""

from __future__ import annotations

import numpy as np
from max.dtype import DType
from max.graph import DeviceRef, Graph, TensorType, TensorValue, ops

from ..weights import ModelDimensions
from .decoder import cross_types, decoder_blocks, vocab_logits
from .layers import GraphWeights, embed


def build_alignment(dims: ModelDimensions, w: GraphWeights, dtype: DType, device: DeviceRef,
                    heads: tuple[tuple[int, int], ...], median_width: int) -> Graph:
    """Inputs: a decoding run's cross-attention keys and values [layer, run rows, head, n_audio_ctx, d_head]
    (`decoder.cross_types`), the run's row of each row here [batch], tokens [batch, seq] (rows
    padded at the end), targets [batch, seq] (each position's next token), the end-of-text token (the text
    vocabulary is below it), the causal mask [seq, seq], and per row: a frame mask [batch, n_audio_ctx] (0 for
    the window's audio frames, -inf after them), a token weight [batch, seq] (1 for the row's tokens, 0 for
    its padding) and the median filter's reflected frame indices [batch, median_width, n_audio_ctx] (see
    `runtime.aligner`). The masks are inputs: MAX 26.7 fused masks made in this graph into its attention
    wrongly on the CPU (logits off by up to 20).

    Outputs: the probability [batch, seq] of each target among the text tokens, and openai-whisper's
    alignment matrix [batch, seq, n_audio_ctx]: the alignment `heads`' ((layer, head) pairs) cross-attention
    over the audio frames, normalised per frame over the tokens, median-filtered along time and averaged
    over the heads, float32. Frames past a row's audio hold no meaning."""
    int64, f32 = DType.int64, DType.float32
    inputs = [*cross_types(dims, dtype, device, "run_rows"),
              TensorType(int64, ["batch"], device),  # rows
              TensorType(int64, ["batch", "seq"], device),  # tokens
              TensorType(int64, ["batch", "seq"], device),  # targets
              TensorType(int64, [], device),  # end of text
              TensorType(dtype, ["seq", "seq"], device),  # causal mask
              TensorType(f32, ["batch", dims.n_audio_ctx], device),  # frame mask
              TensorType(f32, ["batch", "seq"], device),  # token weight
              TensorType(int64, ["batch", median_width, dims.n_audio_ctx], device)]  # reflected neighbours
    with Graph("whisper_alignment", input_types=inputs) as g:
        cross_k, cross_v, rows, tokens, targets, eot, mask, frame_mask, token_weight, reflected = (
            v.tensor for v in g.inputs)
        cross = (ops.gather(cross_k, rows, axis=1), ops.gather(cross_v, rows, axis=1))
        seq = tokens.shape[1]
        start = ops.constant(0, int64, DeviceRef.CPU())
        end = ops.cast(ops.shape_to_tensor([seq]).reshape([]), int64)
        positions = ops.range(start, end, 1, out_dim=seq, dtype=int64, device=DeviceRef.CPU())
        x = embed(w, tokens, positions.to(device))
        scores: list[TensorValue] = []
        x = decoder_blocks(dims, w, x, lambda i, new: new, mask, cross, cross_scores=scores)
        logits = ops.cast(vocab_logits(w, x), f32)
        vocab = ops.range(0, dims.n_vocab, 1, out_dim=dims.n_vocab, dtype=int64, device=device)
        text = ops.where(vocab < eot, logits, ops.constant(-np.inf, f32, device))
        probs = ops.exp(ops.gather_nd(ops.logsoftmax(text), ops.unsqueeze(targets, -1), batch_dims=2))
        picked = [ops.gather(scores[layer], ops.constant(np.array([head]), int64, device), axis=1)
                  for layer, head in heads]
        weights = ops.cast(ops.concat(picked, axis=1), f32)  # [batch, head, seq, frame]
        g.output(probs, alignment_matrix(weights, frame_mask, token_weight, reflected))
    return g


def alignment_matrix(scores: TensorValue, frame_mask: TensorValue, token_weight: TensorValue,
                     reflected: TensorValue) -> TensorValue:
    """openai-whisper's find_alignment from the heads' scores [batch, head, seq, frame] to the matrix
    [batch, seq, frame]: softmax over the row's frames, each frame standardised over the row's tokens
    (population deviation), the median of each frame's `reflected` neighbours, the mean over the heads."""
    weights = ops.softmax(scores + ops.unsqueeze(ops.unsqueeze(frame_mask, 1), 1))
    valid = ops.unsqueeze(ops.unsqueeze(token_weight, 1), -1)  # [batch, 1, seq, 1]
    count = ops.sum(valid, axis=2)
    mean = ops.sum(weights * valid, axis=2) / count
    centred = weights - mean
    deviation = ops.sqrt(ops.sum(centred * centred * valid, axis=2) / count)
    by_frame = ops.permute(centred / deviation, [0, 3, 1, 2])  # [batch, frame, head, seq]
    width = int(reflected.shape[1])
    neighbours = [ops.gather_nd(by_frame, ops.unsqueeze(reflected[:, k, :], -1), batch_dims=1)
                  for k in range(width)]
    for round_ in range(width):  # odd-even transposition sort; the middle one is the median
        for k in range(round_ % 2, width - 1, 2):
            low, high = ops.min(neighbours[k], neighbours[k + 1]), ops.max(neighbours[k], neighbours[k + 1])
            neighbours[k], neighbours[k + 1] = low, high
    median = neighbours[width // 2]  # [batch, frame, head, seq]
    return ops.permute(ops.mean(median, axis=2)[:, :, 0, :], [0, 2, 1])
