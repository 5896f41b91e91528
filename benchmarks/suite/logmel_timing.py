"""Time of the log-mel front end's pass one over one recording (the loudest bin and, up to 30 min, the whole
log-mel power; `features.LogMelFeatures`), in blocks of LogMelFeatures.CHUNK_FRAMES (= features.FFT_BLOCK)
frames against blocks of 6000 frames (the code before), and numpy's rfft of all frames alone.

    python -m benchmarks.suite.logmel_timing --audio tests/speech/lecture.flac

Pass one is timed as the recording's first window (`LogMelFeatures.window`, which computes it; cutting one
window from it adds little). Prints median milliseconds of --runs runs of each, alternating.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmarks.common import SPEECH, median_ms, parser, timed
from max_whisper import load_audio
from max_whisper.audio import SAMPLE_RATE
from max_whisper.features import HOP_LENGTH, N_FFT, N_FRAMES, LogMelFeatures

DEFAULT_BLOCK = LogMelFeatures.CHUNK_FRAMES


def pass_one(audio: np.ndarray, block: int) -> None:
    """Pass one of `audio` in blocks of `block` frames."""
    LogMelFeatures.CHUNK_FRAMES = block
    try:
        LogMelFeatures(audio).window(0, N_FRAMES)
    finally:
        LogMelFeatures.CHUNK_FRAMES = DEFAULT_BLOCK


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--audio", type=Path, default=SPEECH / "lecture.flac", help="default: the repository's lecture.flac")
    p.add_argument("--runs", type=int, default=9)
    args = p.parse_args()
    audio = load_audio(args.audio)
    frames = np.random.default_rng(0).standard_normal((audio.size // HOP_LENGTH, N_FFT))
    cases = {f"pass_one_blocks_of_{DEFAULT_BLOCK}_frames_ms": DEFAULT_BLOCK, "pass_one_blocks_of_6000_frames_ms": 6000}
    times: dict[str, list[float]] = {name: [] for name in [*cases, "rfft_of_all_frames_ms"]}
    for _ in range(args.runs):
        for name, block in cases.items():
            times[name] += timed(lambda: pass_one(audio, block), 1)[1]
        times["rfft_of_all_frames_ms"] += timed(lambda: np.fft.rfft(frames, axis=-1), 1)[1]
    print({"cpus": os.cpu_count(), "seconds_of_audio": round(audio.size / SAMPLE_RATE, 1),
           **{name: median_ms(t, 1) for name, t in times.items()}})


if __name__ == "__main__":
    main()
