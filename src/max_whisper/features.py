"""Log-mel features: openai-whisper's front end (n_fft 400, hop 160, Slaney mel filters, log10, clamp
to 8 decades under the loudest bin, scale), in numpy, equal to it within float tolerance."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, lru_cache

import numpy as np

from .audio import N_SAMPLES, SAMPLE_RATE

N_FFT = 400
HOP_LENGTH = 160
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames a second (10 ms each)
N_SAMPLES_PER_TOKEN = HOP_LENGTH * 2  # the encoder's conv stem halves the frame rate
TOKENS_PER_SECOND = SAMPLE_RATE // N_SAMPLES_PER_TOKEN  # 50 audio tokens a second (20 ms each)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's default)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0
    mels = f / f_sp
    log_part = f >= min_log_hz
    mels[log_part] = min_log_mel + np.log(f[log_part] / min_log_hz) / logstep
    return mels


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0
    freqs = f_sp * m
    log_part = m >= min_log_mel
    freqs[log_part] = min_log_hz * np.exp(logstep * (m[log_part] - min_log_mel))
    return freqs


@lru_cache(maxsize=4)
def mel_filters(n_mels: int, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-normalised triangular mel filters, shape (n_mels, n_fft // 2 + 1).

    The same matrix as librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels), which
    openai-whisper ships precomputed.
    """
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sr / 2]))[0], n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _hann_window(n: int = N_FFT) -> np.ndarray:
    """Periodic Hann window, float64: windowed frames are float64 then, and numpy 2's FFT of float64
    frames takes a third of the time of float32 ones (a 2-minute recording: 0.14 -> 0.06 s), as close to
    openai-whisper's log-mel (max difference 4.4e-5 against 4.8e-5)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


FFT_BLOCK = 1000  # frames transformed at once: 1.6 MB of windowed frames stays in cache


def _power_spectrum(padded: np.ndarray) -> np.ndarray:
    """|rFFT|^2 (n_frames, N_FFT // 2 + 1), float32, of the Hann-windowed frames starting every hop in an
    already padded signal.

    In blocks of FFT_BLOCK frames: each frame's value does not depend on its block, and the log-mel of a
    2-minute recording takes 33 ms against 50 ms in blocks of 6000 frames (2-core CPU,
    benchmarks/suite/logmel_timing.py).
    """
    n_frames = 1 + (padded.size - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, N_FFT), strides=(padded.strides[0] * HOP_LENGTH, padded.strides[0])
    )
    power = np.empty((n_frames, N_FFT // 2 + 1), np.float32)
    for start in range(0, n_frames, FFT_BLOCK):
        spectrum = np.fft.rfft(frames[start:start + FFT_BLOCK] * _hann_window(), axis=-1)
        power[start:start + FFT_BLOCK] = spectrum.real**2 + spectrum.imag**2
    return power


# The log10 mel power of a frame of zeros (the floor): what frames reading only the zero padding after a
# recording hold, without an FFT.
SILENT_LOG_POWER = np.log10(np.maximum(np.zeros(1, np.float32), 1e-10))[0]


def _log_mel(power: np.ndarray, n_mels: int) -> np.ndarray:
    """log10 mel power (n_mels, n_frames) of power spectra (n_frames, N_FFT // 2 + 1), before the clamp;
    the mel product over blocks of FFT_BLOCK frames."""
    mel = np.empty((n_mels, power.shape[0]), np.float32)
    for start in range(0, power.shape[0], FFT_BLOCK):
        mel[:, start:start + FFT_BLOCK] = mel_filters(n_mels) @ power[start:start + FFT_BLOCK].T
    return np.log10(np.maximum(mel, 1e-10))


@lru_cache(maxsize=1)
def _fft_workers() -> ThreadPoolExecutor:
    """Threads for pass one's FFTs, shared by every recording: numpy's FFT runs without the GIL (the mel
    product, a BLAS call, stays in the calling thread: OpenBLAS starts threads of its own)."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="log-mel")


def _without_trailing_zeros(audio: np.ndarray, block: int = 1 << 16) -> int:
    """The number of samples up to the last one that is not zero (read from the end a block at a time: most
    recordings end in sound)."""
    end = audio.size
    while end > 0:
        nonzero = np.flatnonzero(audio[max(0, end - block):end])
        if nonzero.size:
            return max(0, end - block) + int(nonzero[-1]) + 1
        end -= block
    return 0


def _log_scale(log_spec: np.ndarray, log_max: float) -> np.ndarray:
    """Clamp to 8 decades under the file's loudest bin, then scale to about [-1, 1]."""
    scaled = np.maximum(log_spec, np.float32(log_max - 8.0), dtype=np.float32)  # one array, changed in place
    scaled += 4.0
    scaled /= 4.0
    return scaled


def log_mel_spectrogram(audio: np.ndarray, n_mels: int = 80, padding: int = 0) -> np.ndarray:
    """openai-whisper's log-mel: |STFT|^2 (centred, reflect-padded), mel, log10, clamp, scale.

    Returns float32 (n_mels, n_frames) with n_frames = (len(audio) + padding) // 160.
    """
    features = LogMelFeatures(audio, n_mels, padding)
    log_spec = features.log_power(0, features.n_frames)
    return _log_scale(log_spec, float(log_spec.max()))  # one STFT pass: the clamp comes from these frames


class LogMelFeatures:
    """The log-mel of a whole recording, computed one window at a time.

    Equal to `log_mel_spectrogram(audio, n_mels, padding)[:, start:start + n]` for any
    window. A first pass over the audio finds the loudest bin (the clamp is relative to it).
    Up to HELD_FRAMES frames (30 min, 58 MB of 80 mels) that pass's result is kept and windows
    are cut from it; on longer recordings only one window's features exist at once and each
    window's frames are computed on demand, so memory stays bounded on any length.
    """

    # Frames per pass-one block: cache-sized, like the FFT's blocks (the samples, log10 and clamp passes
    # over 6000-frame blocks took the lecture's pass one to 48-60 ms against 27 ms; benchmarks/suite/logmel_timing.py).
    CHUNK_FRAMES = FFT_BLOCK
    HELD_FRAMES = 180_000  # longest recording whose log-mel power is kept whole

    def __init__(self, audio: np.ndarray, n_mels: int = 80, padding: int = 0):
        audio = np.asarray(audio, dtype=np.float32)
        if audio.size <= N_FFT // 2:  # reflect padding needs more samples than half a window
            audio = np.pad(audio, (0, N_FFT // 2 + 1 - audio.size))
        self.audio, self.n_mels, self.padding = audio, n_mels, padding
        self.n_frames = (audio.size + padding) // HOP_LENGTH
        # Frames from here on read zeros only (their reflection at the end too, with a window of zeros): a
        # short file's 30 s of padding is most of its frames, and their FFTs were most of its front end; so
        # are the zeros a stream's buffer is read with to a whole window (`streaming`).
        sound = _without_trailing_zeros(audio)
        sounding = -(-(sound + N_FFT // 2) // HOP_LENGTH)
        zeros = audio.size - sound + padding
        self.sounding_frames = self.n_frames if zeros < N_FFT else min(self.n_frames, sounding)

    @cached_property
    def _pass_one(self) -> tuple[float, np.ndarray | None]:
        """The loudest log-mel bin of the whole recording, found block by block, and the whole
        log-mel power when the recording is at most HELD_FRAMES long (else None)."""
        starts = range(0, self.n_frames, self.CHUNK_FRAMES)
        if self.n_frames > self.HELD_FRAMES:  # one block at a time: memory stays bounded
            return max(float(self.log_power(i, self._block(i)).max()) for i in starts), None
        sounding = range(0, self.sounding_frames, self.CHUNK_FRAMES)
        spectra = _fft_workers().map(lambda i: self._spectrum(i, self._block(i)), sounding)  # all cores at once
        held = np.full((self.n_mels, self.n_frames), SILENT_LOG_POWER, np.float32)
        for start, power in zip(sounding, spectra):
            held[:, start:start + power.shape[0]] = _log_mel(power, self.n_mels)
        return float(held.max()), held

    def precompute(self) -> None:
        """Compute pass one now rather than at the first window."""
        self._pass_one

    def _block(self, start: int) -> int:
        return min(self.CHUNK_FRAMES, self.n_frames - start)

    def _sounding(self, start: int, n: int) -> int:
        """How many of frames [start, start + n) read any of the audio."""
        return max(0, min(n, self.sounding_frames - start))

    def _samples(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) of the centred signal: the audio, then `padding` zeros, both
        ends reflect-padded by half a window (torch.stft's center=True)."""
        length = self.audio.size + self.padding
        first, last = start - N_FFT // 2, stop - N_FFT // 2  # positions in the unpadded signal
        out = np.zeros(stop - start, dtype=np.float32)
        inside_from, inside_to = max(first, 0), min(last, self.audio.size)
        if inside_to > inside_from:
            out[inside_from - first:inside_to - first] = self.audio[inside_from:inside_to]
        # Positions before the start or past the end (at most half a window each) read their mirror image.
        for outside_from, outside_to in ((first, min(last, 0)), (max(first, length), last)):
            if outside_to > outside_from:
                at = np.arange(outside_from, outside_to)
                mirror = np.where(at < 0, -at, 2 * (length - 1) - at)
                inside = mirror < self.audio.size  # else it mirrors into the padding's zeros
                out[at[inside] - first] = self.audio[mirror[inside]]
        return out

    def _spectrum(self, start: int, n: int) -> np.ndarray:
        """Power spectra of frames [start, start + n); those reading only the padding's zeros are 0 without
        an FFT (the block keeps its shape: the mel product's rounding can depend on it)."""
        sounding = self._sounding(start, n)
        if sounding < n:
            power = np.zeros((n, N_FFT // 2 + 1), np.float32)
            if sounding:
                power[:sounding] = self._spectrum(start, sounding)
            return power
        first = start * HOP_LENGTH
        return _power_spectrum(self._samples(first, first + (n - 1) * HOP_LENGTH + N_FFT))

    def log_power(self, start: int, n: int) -> np.ndarray:
        """log10 mel power of frames [start, start + n), before the clamp."""
        if self._sounding(start, n) == 0:
            return np.full((self.n_mels, n), SILENT_LOG_POWER, np.float32)
        return _log_mel(self._spectrum(start, n), self.n_mels)

    def window(self, start: int, n: int) -> np.ndarray:
        """Log-mel frames [start, start + n), float32 (n_mels, n)."""
        n = max(0, min(n, self.n_frames - start))
        if n == 0:
            return np.zeros((self.n_mels, 0), np.float32)
        log_max, held = self._pass_one
        if held is None:  # computed in pass one's blocks: the BLAS product's rounding can depend on a block's bounds
            first = start // self.CHUNK_FRAMES * self.CHUNK_FRAMES
            blocks = [self.log_power(b, self._block(b)) for b in range(first, start + n, self.CHUNK_FRAMES)]
            held, start = np.concatenate(blocks, axis=1), start - first
        return _log_scale(held[:, start:start + n], log_max)
