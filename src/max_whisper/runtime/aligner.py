"""The alignment pass on the device, for word timestamps."""

from __future__ import annotations

import numpy as np
from max import driver
from max.engine import Model

from ..alignment import MEDIAN_FILTER_WIDTH, Alignment
from .decoders import CachedRun
from .device import cast
from .session import GraphSession


class Aligner:
    """Runs the alignment graph (`graph.alignment`) of a model's alignment heads; compiled on first use."""

    def __init__(self, session: GraphSession, heads: list[tuple[int, int]]):
        self.session, self.heads = session, tuple(heads)
        self._model: Model | None = None

    def load(self) -> Model:
        """The compiled graph (compiled, or loaded from --compiled, on first use)."""
        if self._model is None:
            self._model = self.session.load("alignment", heads=self.heads, median_width=MEDIAN_FILTER_WIDTH)
        return self._model

    def align(self, inference: CachedRun, rows: np.ndarray, sequences: list[list[int]], eot: int,
              text_from: list[int], frames: list[int]) -> list[Alignment]:
        """For each of `rows` (rows of the decoding run `inference`, whose cross-attention keys and values
        are reused): the sequence it aligns, where in it its text starts, and how many of its window's mel
        frames are audio. Sequences are padded at the end with end of text (causal attention keeps it out of
        the others' results, the token weight out of the normalisation)."""
        s = self.session
        model = self.load()
        n_ctx = s.dims.n_audio_ctx
        width = max(len(q) for q in sequences)
        tokens = np.full((len(sequences), width), eot, np.int64)
        token_weight = np.zeros((len(sequences), width), np.float32)
        for k, sequence in enumerate(sequences):
            tokens[k, :len(sequence)] = sequence
            token_weight[k, :len(sequence)] = 1.0
        targets = np.concatenate([tokens[:, 1:], np.full((len(tokens), 1), eot, np.int64)], axis=1)
        mask = cast(np.triu(np.full((width, width), -np.inf, np.float32), k=1), s.dtype)
        audio = [min(n_ctx, n // 2) for n in frames]  # attention frames: two mel frames each
        frame_mask = np.where(np.arange(n_ctx) < np.array(audio)[:, None], 0.0, -np.inf).astype(np.float32)
        reflected = np.stack([reflected_neighbours(n, n_ctx, MEDIAN_FILTER_WIDTH) for n in audio])
        probs, matrix = s.run("alignment", model, inference.cross_k, inference.cross_v,
                              s.to_device(np.asarray(rows, np.int64)),
                              s.to_device(tokens), s.to_device(targets),
                              driver.Buffer.from_numpy(np.array(eot, np.int64)).to(s.device),  # a scalar
                              s.to_device(mask), s.to_device(frame_mask), s.to_device(token_weight),
                              s.to_device(reflected))
        probs, matrix = s.to_host(probs), s.to_host(matrix)
        return [Alignment(probs[k, start:len(q) - 2], matrix[k, start:len(q) - 1, :n])
                for k, (q, start, n) in enumerate(zip(sequences, text_from, audio))]


def reflected_neighbours(n: int, n_ctx: int, width: int) -> np.ndarray:
    """[width, n_ctx]: for each frame, the frames its median is taken over, the ends of the first `n`
    reflected (numpy's and torch's "reflect" padding, as openai-whisper's median filter pads); with `n` no
    more than half the width, each frame itself (openai-whisper leaves so short a sequence unfiltered)."""
    half = width // 2
    frames = np.arange(n_ctx)
    if n <= half:
        return np.tile(frames, (width, 1))
    at = frames[None, :] + np.arange(-half, half + 1)[:, None]
    at = np.abs(at)  # before the start: mirrored about frame 0
    at = np.where(at > n - 1, 2 * (n - 1) - at, at)  # past the end: mirrored about frame n - 1
    return np.clip(at, 0, n_ctx - 1)  # frames past the audio (ignored) stay in range
