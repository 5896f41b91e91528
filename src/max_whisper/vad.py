"""Voice activity detection: Silero VAD v6 and the speech regions faster-whisper finds with it.

The model (309k parameters, MIT, (c) Silero Team; the weights faster-whisper 1.2.1 ships, converted by
`scripts/vad_weights.py`) runs in NumPy: every 32 ms window's spectrum (a real FFT) and convolutions (one
matrix product each) over all windows at once, then its 128-wide LSTM one window after another (as a MAX
graph loop a step cost 7x NumPy's; docs/measurements.md). `speech_regions` is faster-whisper's `get_speech_timestamps`, with its
option names and defaults (`VadOptions`); `SpeechMap` maps times in the speech-only audio back to the
recording's.
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE
from .errors import WhisperError

WEIGHTS = Path(__file__).parent / "assets" / "silero_vad_v6.safetensors"
WINDOW = 512  # samples per speech probability (32 ms)
CONTEXT = 64  # samples of the previous window each window sees
_STFT, _HOP = 256, 128
_HIDDEN = 128
_FLOAT_OPTIONS = ("threshold", "neg_threshold", "max_speech_duration_s")
JUNCTION_S = 0.5  # how far Whisper's segment times stray over a junction of two speech regions


@dataclass(frozen=True)
class VadOptions:
    """faster-whisper's VAD options, its names and defaults, checked when made."""

    threshold: float = 0.5  # a window at least this likely speech starts or continues speech
    neg_threshold: float | None = None  # below this speech ends (default: threshold - 0.15, at least 0.01)
    min_speech_duration_ms: int = 0  # shorter speech is dropped
    max_speech_duration_s: float = math.inf  # longer speech is cut, in its last pause over 98 ms if any
    min_silence_duration_ms: int = 2000  # a shorter pause does not end speech
    speech_pad_ms: int = 400  # added to each side of a region

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise WhisperError(f"vad threshold must be between 0 and 1, got {self.threshold}")
        if self.neg_threshold is not None and not 0 <= self.neg_threshold <= self.threshold:
            raise WhisperError(f"vad neg_threshold must be between 0 and threshold, got {self.neg_threshold}")
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise WhisperError(f"vad {name} must not be negative, got {getattr(self, name)}")
        if self.max_speech_duration_s <= 0:
            raise WhisperError(f"vad max_speech_duration_s must be positive, got {self.max_speech_duration_s}")

    @classmethod
    def from_dict(cls, values: dict | None) -> VadOptions:
        """Options from a dict of faster-whisper's names (None: the defaults)."""
        known = {f.name for f in fields(cls)}
        unknown = set(values or {}) - known
        if unknown:
            raise WhisperError(f"unknown vad parameter(s): {', '.join(sorted(unknown))} "
                               f"(known: {', '.join(sorted(known))})")
        converted: dict[str, Any] = {}
        try:
            for k, v in (values or {}).items():
                converted[k] = None if v is None else float(v) if k in _FLOAT_OPTIONS else int(v)
        except (TypeError, ValueError):
            raise WhisperError(f"vad parameter {k} must be a number, got {v!r}") from None
        return cls(**converted)


class SileroVAD:
    """Silero VAD v6 at 16 kHz: one speech probability per 512-sample window."""

    def __init__(self, path: Path = WEIGHTS):
        from safetensors.numpy import load_file

        try:
            w = load_file(str(path))
        except (OSError, ValueError) as e:
            raise WhisperError(f"{path}: cannot read the VAD weights: {e}") from None
        # The model's spectrum is a convolution with Hann x cos and Hann x -sin (its first row, cos 0, is the
        # window): a real FFT of the windowed frames gives it at a fraction of the cost.
        self.window = w["encoder.feature_extractor.forward_basis_buffer"][0, 0, :].copy()
        # The second convolution keeps its left padding's zero tap (the first writes a zero time in front of its
        # output): its sums then round as the earlier im2col form's did, which keeps the probabilities within
        # 1e-5 of those over 600 s of audio (1.3e-5 at one window without).
        self.convs = [(_taps(w[f"encoder.conv_layers.{i}.weight"]), w[f"encoder.conv_layers.{i}.bias"], *layout)
                      for i, layout in enumerate(((1, 0, 1), (2, 1, 0), (2, 0, 0), (1, 0, 0)))]  # stride, zeros
        # PyTorch's gates i, f, g, o as o, i, f, g: the sigmoids first, and i, f next to g and the cell (_lstm).
        order = np.r_[384:512, 0:256, 256:384]
        halve = np.r_[np.full(3 * _HIDDEN, 0.5), np.ones(_HIDDEN)].astype(np.float32)  # see _lstm
        self.w_ih = np.ascontiguousarray(w["decoder.rnn.weight_ih"][order].T * halve)  # [128, 512]
        # _lstm carries 2h: W_hh halved again (exact, a power of two), and the output layer's weights.
        self.w_hh = np.ascontiguousarray(w["decoder.rnn.weight_hh"][order].T * (halve / 2))
        self.bias = w["decoder.rnn.bias"][order] * halve
        self.w_out = w["decoder.conv1d.weight"][0, :, 0].astype(np.float64) / 2
        self.b_out = float(w["decoder.conv1d.bias"][0])

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Speech probabilities [ceil(len / 512)] of 16 kHz samples (the last window zero-padded), as
        silero-vad's model gives them window by window with its state carried."""
        n = -(-len(audio) // WINDOW)
        if n == 0:
            return np.zeros(0, np.float32)
        samples = np.zeros(CONTEXT + n * WINDOW, np.float32)
        samples[CONTEXT:CONTEXT + len(audio)] = audio
        rows = np.lib.stride_tricks.sliding_window_view(samples, CONTEXT + WINDOW)[::WINDOW]  # [n, 576]
        # The model pads each row by 128 (reflecting) and takes 4 frames 128 apart: the first three lie in the
        # row, the last runs 64 samples into the reflection. Windowed straight from the rows (no padded copy).
        frames = np.empty((n, 4, _STFT), np.float32)
        inside = CONTEXT + WINDOW - 3 * _HOP
        np.multiply(np.lib.stride_tricks.sliding_window_view(rows, _STFT, axis=1)[:, ::_HOP], self.window,
                    out=frames[:, :3])
        np.multiply(rows[:, 3 * _HOP:], self.window[:inside], out=frames[:, 3, :inside])
        reflection = rows[:, -2:-2 - (_STFT - inside):-1]  # rows[574], rows[573], ...
        np.multiply(reflection, self.window[inside:], out=frames[:, 3, inside:])
        spectrum = np.fft.rfft(frames, axis=-1)  # [n, 4, 129], time-major
        x = np.zeros((n, 4, _aligned(_STFT // 2 + 1)), np.float32)
        np.abs(spectrum, out=x[:, :, :_STFT // 2 + 1])
        for conv in self.convs:
            x = _conv3(x, *conv)
        inputs = x[:, 0, :] @ self.w_ih
        inputs += self.bias
        hidden = self._lstm(inputs)  # [n, 128], 2h
        logits = np.maximum(hidden, 0.0) @ self.w_out + self.b_out
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def _lstm(self, inputs: np.ndarray) -> np.ndarray:
        """The LSTM over the windows in turn, from a zero state: 2h [n, 128]. `inputs` [n, 512] are W_ih x +
        biases, gates in the order output, input, forget, cell, the first three halved (as `w_hh`'s): one tanh
        then gives every gate, since 2 sigmoid(x) = tanh(x / 2) + 1. A step is Python and NumPy call overhead
        around one 128 x 512 product, so it makes as few calls as it can: the doubled sigmoids are left so,
        their factors 2 taken out by a product with [1/2, 1/2] that sums i g and f c, and by carrying 2h."""
        out = np.empty((len(inputs), _HIDDEN), np.float32)
        state = np.zeros(5 * _HIDDEN, np.float32)  # o, i, f, g, c
        gates, sigmoids, o, c = state[:4 * _HIDDEN], state[:3 * _HIDDEN], state[:_HIDDEN], state[4 * _HIDDEN:]
        i_f, g_c = state[_HIDDEN:3 * _HIDDEN], state[3 * _HIDDEN:]
        products = np.empty((2, _HIDDEN), np.float32)
        halves = np.full(2, 0.5, np.float32)
        ones = np.ones(3 * _HIDDEN, np.float32)  # an array: a scalar operand costs more per call
        h = np.zeros(_HIDDEN, np.float32)
        dot, add, multiply, tanh = np.dot, np.add, np.multiply, np.tanh
        for x, h_next in zip(inputs, out):
            dot(h, self.w_hh, gates)
            add(gates, x, gates)
            tanh(gates, gates)
            add(sigmoids, ones, sigmoids)  # 2 sigmoid
            multiply(i_f, g_c, products.reshape(-1))  # 2 i g, 2 f c
            dot(halves, products, c)  # c = i g + f c
            tanh(c, h_next)
            multiply(h_next, o, h_next)  # 2h = 2 o tanh(c)
            h = h_next
        return out


def _aligned(width: int) -> int:
    """`width` rounded up to a multiple of 8: OpenBLAS runs odd widths at half speed."""
    return -(-width // 8) * 8


def _taps(weight: np.ndarray) -> np.ndarray:
    """A kernel-3 convolution's weight [out, in, 3] as one matrix [3 x in (aligned), out]: the taps' rows one
    after another, each in's channels aligned to 8 (its input's width; the extra rows zero)."""
    out_channels, in_channels, k = weight.shape
    taps = np.zeros((k, _aligned(in_channels), out_channels), np.float32)
    taps[:, :in_channels] = weight.transpose(2, 1, 0)
    return taps.reshape(-1, out_channels)


def _conv3(x: np.ndarray, taps: np.ndarray, bias: np.ndarray, stride: int, zeros: int = 0,
           zeros_out: int = 0) -> np.ndarray:
    """ReLU of a kernel-3, padding-1 convolution of each window's time-major x [n, zeros + T, C] (its first
    `zeros` times the left padding, 0 or 1): one matrix product per output time over the window's contiguous
    inputs under its taps, read in place (a strided view), the taps over padding that x lacks left out.
    The result [n, zeros_out + T_out, C_out] begins with `zeros_out` zero times."""
    n, width, channels = x.shape
    t_out = (width - zeros - 1) // stride + 1
    flat = x.reshape(n, width * channels)
    y = np.empty((n, zeros_out + t_out, taps.shape[1]), np.float32)
    y[:, :zeros_out] = 0.0
    for t in range(t_out):
        first = stride * t - 1 + zeros  # x's time under the first tap
        lo, hi = max(first, 0), min(first + 3, width)
        np.matmul(flat[:, lo * channels:hi * channels], taps[(lo - first) * channels:(hi - first) * channels],
                  out=y[:, zeros_out + t])
    body = y[:, zeros_out:]
    body += bias
    np.maximum(body, 0.0, out=body)
    return y


@functools.lru_cache(maxsize=1)
def silero_vad() -> SileroVAD:
    return SileroVAD()


def speech_regions(audio: np.ndarray, options: VadOptions = VadOptions(),
                   probabilities: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Speech regions of 16 kHz `audio` as (start, end) samples: faster-whisper's `get_speech_timestamps`
    (silero-vad's state machine: speech starts at `threshold`, ends after `min_silence_duration_ms` below
    `neg_threshold`, is cut at `max_speech_duration_s`, padded by `speech_pad_ms`)."""
    probs = silero_vad()(audio) if probabilities is None else probabilities
    rate = SAMPLE_RATE
    min_speech = rate * options.min_speech_duration_ms / 1000
    pad = rate * options.speech_pad_ms / 1000
    max_speech = rate * options.max_speech_duration_s - WINDOW - 2 * pad
    min_silence = rate * options.min_silence_duration_ms / 1000
    min_silence_at_max_speech = rate * 98 / 1000
    threshold = options.threshold
    neg_threshold = options.neg_threshold if options.neg_threshold is not None else max(threshold - 0.15, 0.01)
    length = len(audio)

    speeches: list[list[float]] = []
    start: float | None = None  # the open region's start while speech goes on
    temp_end = prev_end = next_start = 0
    for i, prob in enumerate(probs.tolist()):
        here = WINDOW * i
        if prob >= threshold and temp_end:
            temp_end = 0
            if next_start < prev_end:
                next_start = here
        if prob >= threshold and start is None:
            start = here
            continue
        if start is not None and here - start > max_speech:
            if prev_end:
                speeches.append([start, prev_end])
                start = None if next_start < prev_end else next_start
                prev_end = next_start = temp_end = 0
            else:
                speeches.append([start, here])
                start = None
                prev_end = next_start = temp_end = 0
                continue
        if prob < neg_threshold and start is not None:
            if not temp_end:
                temp_end = here
            if here - temp_end > min_silence_at_max_speech:
                prev_end = temp_end
            if here - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                speeches.append([start, temp_end])
            start = None
            prev_end = next_start = temp_end = 0
    if start is not None and length - start > min_speech:
        speeches.append([start, length])

    for i, speech in enumerate(speeches):
        if i == 0:
            speech[0] = int(max(0, speech[0] - pad))
        if i != len(speeches) - 1:
            gap = speeches[i + 1][0] - speech[1]
            if gap < 2 * pad:
                speech[1] += int(gap // 2)
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - gap // 2))
            else:
                speech[1] = int(min(length, speech[1] + pad))
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - pad))
        else:
            speech[1] = int(min(length, speech[1] + pad))
    return [(int(s), int(e)) for s, e in speeches]


def merge_regions(regions: list[tuple[int, int]], max_samples: float = math.inf) -> list[list[tuple[int, int]]]:
    """Regions in order, grouped so that each group's speech lasts at most `max_samples` (a region longer
    than that alone in its group): faster-whisper's `collect_chunks`."""
    groups: list[list[tuple[int, int]]] = []
    length = 0
    for start, end in regions:
        if groups and length + end - start <= max_samples:
            groups[-1].append((start, end))
            length += end - start
        else:
            groups.append([(start, end)])
            length = end - start
    return groups


class SpeechMap:
    """Times in the speech-only audio (the regions one after another) back to the recording's."""

    def __init__(self, regions: list[tuple[int, int]]):
        self.regions = [(start / SAMPLE_RATE, end / SAMPLE_RATE) for start, end in regions]  # the recording's
        self.starts: list[float] = []  # each region's start and end in speech-only seconds
        self.ends: list[float] = []
        done = 0.0
        for start, end in self.regions:
            self.starts.append(done)
            done += end - start
            self.ends.append(done)

    def region_of(self, t: float) -> int:
        """The region that speech-only time `t` falls in (a region's end: the next one)."""
        return min(bisect.bisect_right(self.ends, t), len(self.ends) - 1)

    def original_time(self, t: float, region: int) -> float:
        """Speech-only time `t` in the recording, held within `region` (Whisper's times stray a little)."""
        start, end = self.regions[region]
        return round(min(max(start + t - self.starts[region], start), end), 3)

    def restore(self, segments: list[dict]) -> None:
        """Segments' and their words' times, in place, from speech-only to the recording's: a word by the
        region of its middle, a segment by its words where it has them. Without words, a segment's start
        within `JUNCTION_S` before a region's end goes with the next region (its text begins there), and
        its end within `JUNCTION_S` after a region's start with the previous one."""
        for segment in segments:
            words = segment.get("words") or []
            for word in words:
                region = self.region_of((word["start"] + word["end"]) / 2)
                word["start"] = self.original_time(word["start"], region)
                word["end"] = self.original_time(word["end"], region)
            if words:
                segment["start"], segment["end"] = words[0]["start"], words[-1]["end"]
                continue
            start, end = segment["start"], segment["end"]
            first, last = self.region_of(start), self.region_of(end)
            if first < last and self.ends[first] - start < JUNCTION_S:
                first += 1
            if last > first and end - self.starts[last] < JUNCTION_S:
                last -= 1
            segment["start"] = self.original_time(start, first)
            segment["end"] = max(self.original_time(end, last), segment["start"])
