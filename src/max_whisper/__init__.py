"""max-whisper: Whisper speech recognition on Modular MAX graphs.

The pipeline, module by module: `audio` (files to samples) -> `features` (log-mel) -> `graph` (the encoder
and decoder as MAX graphs) -> `runtime` (compiled graphs, device buffers, decoder modes) -> `decoding`
(openai-whisper's rules over the runtime's `Inference`) -> `transcribe` (the long-form loop) -> `outputs`;
`engine` puts one model together, `batching` decodes windows of many recordings at once, `cli` and
`server` face the user.
"""

from .audio import load_audio, pad_or_trim
from .backends import BACKENDS, load_model
from .decoding import DecodingOptions, DecodingResult
from .engine import WhisperModel
from .errors import WhisperError
from .features import log_mel_spectrogram
from .transcribe import TranscribeOptions
from .models import available_models

__version__ = "0.1.0"
__all__ = ["BACKENDS", "DecodingOptions", "DecodingResult", "TranscribeOptions", "WhisperError", "WhisperModel",
           "available_models", "load_audio", "load_model", "log_mel_spectrogram", "pad_or_trim", "__version__"]
