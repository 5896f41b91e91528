"""numpy work with temporaries of a few MB in the main thread against a worker thread: the windowed frames of
an FFT block and their transform, and a short file's whole front end (log-mel window, padding, silence check).

    python -m benchmarks.investigations.main_thread_alloc [--audio FILE]
    MALLOC_MMAP_THRESHOLD_=100000000 MALLOC_TRIM_THRESHOLD_=100000000 python -m ...   (glibc keeps such blocks)

Prints milliseconds per call (best of 5 repeats of 20 calls) in each thread.
"""

from __future__ import annotations

import timeit
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.common import SPEECH, parser
from max_whisper.audio import N_SAMPLES, load_audio, pad_or_trim
from max_whisper.features import FFT_BLOCK, HOP_LENGTH, N_FFT, N_FRAMES, LogMelFeatures, _hann_window
from max_whisper.transcribe import loudest_frame_db


def ms(call: Callable[[], object]) -> float:
    return 1e3 * min(timeit.repeat(call, number=20, repeat=5)) / 20


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--audio", type=Path, default=SPEECH / "jfk.wav")
    args = p.parse_args()
    audio = load_audio(args.audio)
    samples = audio[: (FFT_BLOCK - 1) * HOP_LENGTH + N_FFT]
    frames = np.lib.stride_tricks.as_strided(samples, shape=((len(samples) - N_FFT) // HOP_LENGTH + 1, N_FFT),
                                             strides=(samples.strides[0] * HOP_LENGTH, samples.strides[0]))

    def front_end() -> None:
        mel = LogMelFeatures(audio, 80, N_SAMPLES)
        pad_or_trim(mel.window(0, N_FRAMES), N_FRAMES)
        loudest_frame_db(audio, 0, N_FRAMES)

    worker = ThreadPoolExecutor(1)
    for name, call in (("windowed FFT block", lambda: np.fft.rfft(frames * _hann_window(), axis=-1)),
                       (f"front end of {args.audio.name}", front_end)):
        print(f"{name}: main thread {ms(call):.2f} ms, worker thread {ms(lambda: worker.submit(call).result()):.2f} ms")


if __name__ == "__main__":
    main()
