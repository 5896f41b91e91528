"""The device runtime: compiled graphs (`session`), the encoder and the decoder modes on the device, and the
compiled graphs shipped in the package (`shipped`)."""

from __future__ import annotations

from ..models import alignment_heads
from ..weights import Checkpoint
from .aligner import Aligner
from .decoders import CachedDecoder, make_decoder
from .encoder import Encoder
from .session import GraphSession, Timings


def compile_graphs(ckpt: Checkpoint, device: str, dtype: str, export_to: str) -> Timings:
    """Compile every graph a model runs on `device` (the beam reorder and the word-timestamp alignment
    included) into `export_to`."""
    session = GraphSession(ckpt, device=device, dtype=dtype, export_to=export_to)
    Encoder(session)
    make_decoder(session).reorder  # noqa: B018  (compiled on first use otherwise)
    Aligner(session, alignment_heads(ckpt)).load()  # word timestamps
    return session.timings


__all__ = ["Aligner", "CachedDecoder", "Encoder", "GraphSession", "Timings", "compile_graphs", "make_decoder"]
