"""How much the offline transcript's WER moves when its 30 s windows fall elsewhere in the speech: each
recording transcribed after 0, 0.5, 1, 2 and 3 s of leading silence (transcribe's defaults, word timestamps,
as benchmarks.suite.streaming's offline row), WER pooled and per recording. A yardstick for streaming rules,
whose decode boundaries move with every change.

    python -m benchmarks.investigations.offline_shift_wer [--model tiny.en] [--device cpu] [--voices DIR]
        [--recordings lecture,garden,railway,kitchen,comet] [--shifts 0,0.5,1,2,3]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import max_whisper as mw
from benchmarks.common import add_model_args, parser
from benchmarks.suite.streaming import recordings
from max_whisper.audio import SAMPLE_RATE
from max_whisper.bench import word_error_rate
from max_whisper.transcribe import TranscribeOptions, transcribe_with


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--recordings", default="lecture,garden,railway,kitchen,comet")
    p.add_argument("--shifts", default="0,0.5,1,2,3", help="seconds of silence before each recording")
    p.add_argument("--voices", type=Path, default=None, metavar="DIR")
    args = p.parse_args()
    names = args.recordings.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        audio = recordings(names, args.voices or Path(tmp))
    model = mw.load_model(args.model, device=args.device, compiled=args.compiled)
    options = TranscribeOptions.from_kwargs(word_timestamps=True)
    refs = [audio[n][1] for n in names]
    for shift in map(float, args.shifts.split(",")):
        silence = np.zeros(round(shift * SAMPLE_RATE), dtype=np.float32)
        texts = [transcribe_with(model, np.concatenate([silence, audio[n][0]]), options)["text"] for n in names]
        each = {n: round(word_error_rate([r], [t])[0], 2) for n, r, t in zip(names, refs, texts)}
        print(f"silence {shift:4.1f} s  pooled WER {word_error_rate(refs, texts)[0]:6.2f} %  {each}", flush=True)


if __name__ == "__main__":
    main()
