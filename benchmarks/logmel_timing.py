"""Time of the log-mel front end of one recording (LogMelFeatures' pass one) in pass-one blocks of
LogMelFeatures.CHUNK_FRAMES (= audio.FFT_BLOCK) frames against blocks of 6000 frames (the code before), and
numpy's rfft alone.

    python benchmarks/logmel_timing.py tests/speech/lecture.flac

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
    features = audio_module.LogMelFeatures
    block = features.CHUNK_FRAMES
    cases = {f"pass_one_blocks_of_{block}_frames_ms": block, "pass_one_blocks_of_6000_frames_ms": 6000}
    times: dict[str, list[float]] = {name: [] for name in [*cases, "rfft_of_all_frames_ms"]}
    for _ in range(9):
        for name, size in cases.items():
            features.CHUNK_FRAMES = size
            start = time.perf_counter()
            audio_module.LogMelFeatures(audio)._pass_one
            times[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        np.fft.rfft(frames, axis=-1)
        times["rfft_of_all_frames_ms"].append(time.perf_counter() - start)
    features.CHUNK_FRAMES = block
    print({"cpus": os.cpu_count(), "seconds_of_audio": round(audio.size / 16000, 1),
           **{name: round(1000 * statistics.median(t), 1) for name, t in times.items()}})


if __name__ == "__main__":
    main()
