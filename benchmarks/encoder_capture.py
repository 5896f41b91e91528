"""The encoder on the GPU: an eager call against a recorded one (Model.capture / replay), batch 1.

    python benchmarks/encoder_capture.py

Prints median milliseconds of 20 calls each (to completion) and the largest difference of the features.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from max import driver
from max.dtype import DType

import max_whisper as mw
from max_whisper.cli import sample_path


def main() -> None:
    model = mw.load_model("tiny.en", device="gpu")
    g = model.graphs
    mel = mw.pad_or_trim(mw.log_mel_spectrogram(mw.load_audio(sample_path())), 3000)[None]
    eager_features = g.to_host(g.encode(mel))
    eager = []
    for _ in range(20):
        t = time.perf_counter()
        g.encode(mel)
        eager.append(time.perf_counter() - t)
    mel_buffer = driver.Buffer(DType.float32, mel.shape, g.device)
    mel_buffer.inplace_copy_from(driver.Buffer.from_numpy(np.ascontiguousarray(mel)))
    g.device.synchronize()
    features = g.encoder.capture([1], mel_buffer)[0]
    g.encoder.replay([1], mel_buffer)
    g.device.synchronize()
    difference = float(np.abs(g.to_host(features) - eager_features).max())
    recorded = []
    for _ in range(20):
        t = time.perf_counter()
        g.encoder.replay([1], mel_buffer)
        g.device.synchronize()
        recorded.append(time.perf_counter() - t)
    print({"eager_ms": 1000 * statistics.median(eager), "replay_ms": 1000 * statistics.median(recorded),
           "max_abs_difference": difference})


if __name__ == "__main__":
    main()
