"""max-whisper: Whisper speech recognition on Modular MAX graphs."""

from .audio import load_audio, log_mel_spectrogram, pad_or_trim
from .decoding import DecodingOptions, DecodingResult
from .backends import BACKENDS, load_model
from .engine import WhisperModel
from .errors import WhisperError
from .weights import available_models

__version__ = "0.1.0"
__all__ = ["BACKENDS", "DecodingOptions", "DecodingResult", "WhisperError", "WhisperModel", "available_models",
           "load_audio", "load_model", "log_mel_spectrogram", "pad_or_trim", "__version__"]
