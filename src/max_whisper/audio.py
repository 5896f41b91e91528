"""Audio in: any file FFmpeg reads (through PyAV) as 16 kHz mono float32 samples."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import WhisperError, first_line

SAMPLE_RATE = 16000
CHUNK_LENGTH = 30  # seconds in a window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a 30 s window


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any audio file PyAV (FFmpeg) reads to mono float32 at `sr` Hz."""
    path = Path(path)
    if not path.exists():
        raise WhisperError(f"{path}: no such file")
    if path.is_dir():
        raise WhisperError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise WhisperError(f"{path}: empty file (0 bytes)")
    return decode_audio(str(path), str(path), sr)


def decode_audio(source: str | BinaryIO, name: str, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a file path or a binary file object to mono float32 at `sr` Hz; errors name `name`.

    Samples pass through signed 16-bit as in openai-whisper's ffmpeg pipe, so both
    front ends see the same numbers.
    """
    import av

    chunks: list[np.ndarray] = []
    try:
        with av.open(source) as container:
            if not container.streams.audio:
                raise WhisperError(f"{name}: no audio stream in this file")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sr)
            as_is = True  # frames already 16-bit mono at `sr` pass as they are, until one does not (from then
            # on all go through the resampler, which may hold samples back: their order is kept)
            for frame in container.decode(stream):
                as_is = as_is and frame.format.name == "s16" and len(frame.layout.channels) == 1 and frame.sample_rate == sr
                if as_is:
                    chunks.append(frame.to_ndarray().reshape(-1))
                    continue
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):  # flush the resampler's tail
                chunks.append(out.to_ndarray().reshape(-1))
    except WhisperError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise WhisperError(f"{name}: not a readable audio file ({first_line(e)})") from None
    if not chunks or sum(c.size for c in chunks) == 0:
        raise WhisperError(f"{name}: decodes to no audio samples")
    return from_pcm16(np.concatenate(chunks))


def from_pcm16(samples: np.ndarray) -> np.ndarray:
    """16-bit PCM samples as float32 in [-1, 1), openai-whisper's scale."""
    return samples.astype(np.float32) / 32768.0


def pad_or_trim(array: np.ndarray, length: int = N_SAMPLES, axis: int = -1) -> np.ndarray:
    """Pad with zeros or cut `array` along `axis` to `length`, as the encoder expects."""
    array = np.asarray(array)
    if array.shape[axis] > length:
        array = np.take(array, np.arange(length), axis=axis)
    elif array.shape[axis] < length:
        shape = list(array.shape)
        shape[axis] = length
        padded = np.zeros(shape, array.dtype)
        padded[(slice(None),) * (axis % array.ndim) + (slice(0, array.shape[axis]),)] = array
        array = padded
    return array
