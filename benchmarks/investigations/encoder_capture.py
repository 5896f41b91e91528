"""The encoder on the GPU: an eager call against a recorded one (Model.capture / replay), batch 1.

    python -m benchmarks.investigations.encoder_capture

Prints median milliseconds of 20 calls each (to completion) and the largest difference of the features.
"""

from __future__ import annotations

import numpy as np
from max import driver
from max.dtype import DType

from benchmarks.common import add_model_args, first_window, load, median_ms, parser, timed
from max_whisper import load_audio
from max_whisper.cli import sample_path

CALLS = 20


def main() -> None:
    p = parser(__doc__)
    add_model_args(p, devices=("gpu",))
    args = p.parse_args()
    model = load(args)
    s, encoder = model.session, model.encoder.model
    mel = first_window(load_audio(sample_path()), model.dims.n_mels)[None]
    eager_features = s.to_host(model.embed_audio(mel))
    _, eager = timed(lambda: model.embed_audio(mel), CALLS)  # each call ends with a device synchronize

    mel_buffer = driver.Buffer(DType.float32, mel.shape, s.device)
    mel_buffer.inplace_copy_from(driver.Buffer.from_numpy(np.ascontiguousarray(mel)))
    s.device.synchronize()
    features = encoder.capture([1], mel_buffer)[0]
    encoder.replay([1], mel_buffer)
    s.device.synchronize()
    difference = float(np.abs(s.to_host(features) - eager_features).max())

    def replay() -> None:
        encoder.replay([1], mel_buffer)
        s.device.synchronize()

    _, recorded = timed(replay, CALLS)
    print({"eager_ms": median_ms(eager), "replay_ms": median_ms(recorded), "max_abs_difference": difference})


if __name__ == "__main__":
    main()
