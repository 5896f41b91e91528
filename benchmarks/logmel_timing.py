"""Time of the log-mel front end of one recording (LogMelFeatures' pass one) with the FFT over blocks
of audio.FFT_BLOCK frames against one FFT per pass-one chunk (the code before), and numpy's rfft alone.

    python benchmarks/logmel_timing.py ../shared/speech/lecture.flac

Prints median milliseconds of 9 runs of each, alternating.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import max_whisper as mw
from max_whisper import audio as audio_module


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("audio")
    args = p.parse_args()
    audio = mw.load_audio(args.audio)
    frames = np.random.default_rng(0).standard_normal((audio.size // 160, 400))
    block = audio_module.FFT_BLOCK
    cases = {f"pass_one_fft_block_{block}_ms": block, "pass_one_fft_per_6000_frame_chunk_ms": audio.size}
    times: dict[str, list[float]] = {name: [] for name in [*cases, "rfft_of_all_frames_ms"]}
    for _ in range(9):
        for name, size in cases.items():
            audio_module.FFT_BLOCK = size
            start = time.perf_counter()
            audio_module.LogMelFeatures(audio)._pass_one
            times[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        np.fft.rfft(frames, axis=-1)
        times["rfft_of_all_frames_ms"].append(time.perf_counter() - start)
    audio_module.FFT_BLOCK = block
    print({"cpus": os.cpu_count(), "seconds_of_audio": round(audio.size / 16000, 1),
           **{name: round(1000 * statistics.median(t), 1) for name, t in times.items()}})


if __name__ == "__main__":
    main()
