"""The MAX engine: one checkpoint's compiled graphs and tokenizer, with decode and transcribe."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .audio import N_FRAMES, pad_or_trim
from .decoding import DecodingOptions, DecodingResult, DecodingTask, detect_language
from .errors import WhisperError
from .model import N_TIMESTAMPS, WhisperGraphs
from .tokenizer import Tokenizer, check_english_only, get_tokenizer
from .weights import Checkpoint


class WhisperModel:
    """Whisper running entirely in MAX graphs (encoder and KV-cached decoder)."""

    backend = "max"

    def __init__(self, ckpt: Checkpoint, device: str = "cpu", dtype: str = "float32", step_graph: bool | None = None,
                 compiled: list[str] | None = None):
        self.checkpoint = ckpt
        self.dims = ckpt.dims
        self.device = device
        self.dtype = dtype
        tok = get_tokenizer(ckpt.tokenizer_file, self.is_multilingual, self.num_languages)  # fail early on a bad file
        if tok.timestamp_begin != self.dims.n_vocab - N_TIMESTAMPS:  # the graphs' token choice relies on it
            raise WhisperError(f"tokenizer's timestamps start at {tok.timestamp_begin}, not at the vocabulary's "
                               f"last {N_TIMESTAMPS} tokens ({self.dims.n_vocab - N_TIMESTAMPS}): not a Whisper tokenizer for this model")
        self.graphs = WhisperGraphs(ckpt, device=device, dtype=dtype, step_graph=step_graph, compiled=compiled)

    @property
    def is_multilingual(self) -> bool:
        return self.dims.is_multilingual

    @property
    def num_languages(self) -> int:
        return self.dims.num_languages

    @lru_cache(maxsize=16)
    def tokenizer(self, language: str | None = None, task: str | None = None) -> Tokenizer:
        if not self.is_multilingual:
            check_english_only(language, task)
        return get_tokenizer(self.checkpoint.tokenizer_file, self.is_multilingual, self.num_languages, language, task)

    def decode(self, mel: np.ndarray, options: DecodingOptions = DecodingOptions()) -> DecodingResult:
        """Decode one log-mel window [n_mels, 3000]."""
        features = self.graphs.encode(pad_or_trim(mel, N_FRAMES)[None])
        return DecodingTask(self, options).run(features)[0]

    def detect_language(self, mel: np.ndarray) -> tuple[str, dict[str, float]]:
        """Most likely language of one log-mel window [n_mels, 3000], and all probabilities."""
        features = self.graphs.encode(pad_or_trim(mel, N_FRAMES)[None])
        languages, probs = detect_language(self, features, self.tokenizer())
        return languages[0], probs[0]

    def max_graph_seconds(self) -> float:
        """Seconds spent inside MAX graph execution since the model was loaded."""
        return sum(self.graphs.timings.execute.values())

    def transcribe(self, audio: str | Path | np.ndarray, **kwargs) -> dict:
        from .transcribe import transcribe

        return transcribe(self, audio, **kwargs)

