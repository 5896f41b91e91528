"""One interface over six ways to run Whisper, all on the same weights.

- `max`: the pure MAX engine (encoder and KV-cached decoder graphs), the product;
- `hybrid`, `reference`, `faster-whisper`, `transformers`, `whisper.cpp`: the peers it is measured against (`peers`),
  imported only when asked for.

Each returns a `Backend`: `transcribe(audio, **options)` giving openai-whisper's result dict, and
`max_graph_seconds()`, the time spent inside MAX graphs so far.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import WhisperError
from ..models import load_checkpoint
from ..runtime.device import DEFAULT_ROWS

BACKENDS = ("max", "hybrid", "reference", "faster-whisper", "transformers", "whisper.cpp")


class Backend(Protocol):
    backend: str  # its name in BACKENDS
    device: str

    def transcribe(self, audio: str | Path | np.ndarray, **options: Any) -> dict:
        """openai-whisper's result dict: text, segments, language."""
        ...

    def max_graph_seconds(self) -> float:
        """Seconds spent inside MAX graph execution since loading."""
        ...


def load_model(name: str | Path = "tiny.en", device: str = "cpu", backend: str = "max", dtype: str = "auto",
               compiled: list[str] | None = None, rows: int = DEFAULT_ROWS) -> Backend:
    """Load `name` (a model name or a path) for `device` (cpu or gpu) on `backend`; the max backend takes
    graphs compiled ahead of time from the `compiled` directories, and sizes its GPU memory for `rows`
    decoding rows at once."""
    if backend == "max":
        from ..engine import WhisperModel

        return WhisperModel(load_checkpoint(name), device=device, dtype=dtype, compiled=compiled, rows=rows)
    if backend not in BACKENDS:
        raise WhisperError(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
    from . import peers

    if backend == "reference":
        return peers.ReferenceModel(load_checkpoint(name), device)
    if backend == "hybrid":
        return peers.HybridModel(load_checkpoint(name), device)
    if backend == "faster-whisper":
        return peers.FasterWhisperModel(name, device, compute_type=None if dtype == "auto" else dtype)
    if backend == "whisper.cpp":
        return peers.WhisperCppModel(load_checkpoint(name), device, "float16" if dtype == "auto" else dtype)
    return peers.TransformersModel(load_checkpoint(name), device)
