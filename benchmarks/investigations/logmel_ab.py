"""One lecture transcription and the lecture's log-mel pass one, timed with whichever max_whisper is imported:
for alternating A/B runs of two versions of the code in separate processes, point PYTHONPATH at each
version's src folder in turn.

    PYTHONPATH=SRC_DIR python -m benchmarks.investigations.logmel_ab --speech DIR --device cpu|gpu

Prints the max_whisper package timed, the median and min of --runs transcriptions after a warm-up, and the
median pass-one time in ms (the lecture's first window, which computes pass one).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import max_whisper as mw
from benchmarks.common import add_model_args, add_speech_arg, load, median_ms, parser
from max_whisper.audio import N_SAMPLES
from max_whisper.features import N_FRAMES, LogMelFeatures


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    add_speech_arg(p)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    model = load(args)
    audio = mw.load_audio(args.speech / "lecture.flac")
    model.transcribe(audio, temperature=0.0)
    walls, pass_one = [], []
    for _ in range(args.runs):  # alternating, so that both see the same state of the machine
        start = time.perf_counter()
        model.transcribe(audio, temperature=0.0)
        walls.append(time.perf_counter() - start)
        start = time.perf_counter()
        LogMelFeatures(audio, model.dims.n_mels, padding=N_SAMPLES).window(0, N_FRAMES)
        pass_one.append(time.perf_counter() - start)
    print(Path(mw.__file__).parent, "lecture median", round(statistics.median(walls), 4), "min", round(min(walls), 4),
          "pass one ms", median_ms(pass_one, 1))


if __name__ == "__main__":
    main()
