"""The MAX engine: one checkpoint's encoder and decoder on a device, its tokenizer, and openai-whisper's
`decode`, `detect_language` and `transcribe` over them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from max import driver

from .decoding import DecodingOptions, DecodingResult, DecodingTask, language_probabilities
from .errors import WhisperError
from .audio import pad_or_trim
from .features import N_FRAMES
from .rules import N_TIMESTAMPS
from .models import alignment_heads
from .runtime import Aligner, CachedDecoder, Encoder, GraphSession, make_decoder
from .runtime.device import DEFAULT_ROWS
from .tokenizer import Tokenizer, check_english_only, get_tokenizer
from .transcribe import Progress, transcribe
from .weights import Checkpoint


class WhisperModel:
    """Whisper running entirely in MAX graphs: the encoder, and a KV-cached decoder in the mode that suits
    the device (`runtime.decoders`; `step_graph=True` runs the GPU's recorded steps on the CPU)."""

    backend = "max"

    def __init__(self, ckpt: Checkpoint, device: str = "cpu", dtype: str = "auto", step_graph: bool | None = None,
                 compiled: list[str] | None = None, rows: int = DEFAULT_ROWS):
        self.checkpoint = ckpt
        self.dims = ckpt.dims
        self.device = device
        tok = get_tokenizer(ckpt.tokenizer_file, self.dims.is_multilingual, self.dims.num_languages)  # fail early
        if tok.timestamp_begin != self.dims.n_vocab - N_TIMESTAMPS:  # the graphs' token choice relies on it
            raise WhisperError(f"tokenizer's timestamps start at {tok.timestamp_begin}, not at the vocabulary's "
                               f"last {N_TIMESTAMPS} tokens ({self.dims.n_vocab - N_TIMESTAMPS}): not a Whisper tokenizer for this model")
        self.session = GraphSession(ckpt, device=device, dtype=dtype, compiled=compiled, rows=rows)
        self.dtype = self.session.dtype.name  # "auto" resolved
        self.encoder = Encoder(self.session)
        self.decoder: CachedDecoder = make_decoder(self.session, step_graph)
        self.aligner = Aligner(self.session, alignment_heads(ckpt))

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

    def embed_audio(self, mel: np.ndarray) -> driver.Buffer:
        """Audio features on the device of log-mel windows [n, n_mels, 3000]."""
        return self.encoder.encode(mel)

    def decode(self, mel: np.ndarray, options: DecodingOptions = DecodingOptions()) -> DecodingResult | list[DecodingResult]:
        """openai-whisper's `decode`: one log-mel window [n_mels, 3000] gives one result, windows
        [n, n_mels, 3000] a list."""
        results = self.decode_windows(mel[None] if mel.ndim == 2 else mel, options)
        return results[0] if mel.ndim == 2 else results

    def decode_windows(self, mels: np.ndarray, options: DecodingOptions, prompts: list[list[int]] | None = None,
                       frames: list[int] | None = None) -> list[DecodingResult]:
        """Decode log-mel windows [n, n_mels, 3000] (each padded or cut to 3000 frames) in one batch;
        `prompts`: each window's own previous text instead of `options.prompt`; `frames`: how many of each
        window's frames are audio, the rest padding (word timestamps; default all)."""
        features = self.embed_audio(pad_or_trim(mels, N_FRAMES))
        return DecodingTask(self, options, prompts).run(features, frames)

    def detect_language(self, mel: np.ndarray) -> tuple[str, dict[str, float]]:
        """Most likely language of one log-mel window [n_mels, 3000], and all probabilities."""
        features = self.embed_audio(pad_or_trim(mel, N_FRAMES)[None])
        languages, probs = language_probabilities(self.decoder, features, self.tokenizer())
        return languages[0], probs[0]

    def max_graph_seconds(self) -> float:
        """Seconds spent inside MAX graph execution since the model was loaded."""
        return sum(self.session.timings.execute.values())

    def transcribe(self, audio: str | Path | np.ndarray, on_progress: Progress | None = None, **options) -> dict:
        """openai-whisper's `transcribe` (see `transcribe.transcribe` for the options)."""
        return transcribe(self, audio, on_progress=on_progress, **options)
