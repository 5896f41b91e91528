"""What smaller weights would cost in accuracy: the float32 engine run on weights rounded as bfloat16 or Q4_0
would store them (rounded and widened back to float32), so the rounding of the weights alone is measured;
the kernels' own rounding of the activations (bfloat16 inputs, Q4_0's 8-bit quantized rows) comes on top.
Pooled WER over recordings, greedy at temperature 0, beside the float32 weights.

    python -m benchmarks.investigations.weight_rounding_wer [--model tiny.en] [--voices DIR]
        [--recordings lecture,garden,railway,kitchen,comet] [--roundings q4_0:encoder,q4_0:decoder,...]

A rounding is FORM:PARTS: FORM bfloat16 or q4_0, PARTS encoder, decoder or encoder+decoder. Rounded: every
2-D weight matrix of those parts but the positional embeddings; Q4_0 also leaves the token embedding (the
vocabulary projection) in float32, since MAX's Q4_0 kernel takes outputs in whole blocks of 32 and the
vocabulary's 51864 is not one.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import parser
from benchmarks.investigations.cpu_weight_types import dequantize_q4_0, quantize_q4_0
from benchmarks.suite.streaming import recordings
from max_whisper.bench import word_error_rate
from max_whisper.engine import WhisperModel
from max_whisper.models import load_checkpoint
from max_whisper.transcribe import TranscribeOptions, transcribe_with
from max_whisper.weights import Checkpoint


def bfloat16_rounded(w: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16's 8-bit significand (to nearest, ties to even), as float32."""
    bits = w.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def q4_0_rounded(w: np.ndarray) -> np.ndarray:
    return dequantize_q4_0(quantize_q4_0(w.astype(np.float32)), w.shape[1])


def rounded(ckpt: Checkpoint, form: str, parts: set[str]) -> tuple[Checkpoint, int]:
    state = dict(ckpt.state)
    count = 0
    for name, w in ckpt.state.items():
        if (w.ndim != 2 or name.split(".")[0] not in parts or "positional" in name
                or (form == "q4_0" and "embedding" in name)):
            continue
        state[name] = (bfloat16_rounded(w) if form == "bfloat16" else q4_0_rounded(w)).astype(w.dtype)
        count += 1
    return dataclasses.replace(ckpt, state=state), count


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--recordings", default="lecture,garden,railway,kitchen,comet")
    p.add_argument("--roundings", default="bfloat16:encoder,bfloat16:decoder,q4_0:encoder,q4_0:decoder,"
                                          "q4_0:encoder+decoder")
    p.add_argument("--voices", type=Path, default=None, metavar="DIR")
    args = p.parse_args()
    names = args.recordings.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        audio = recordings(names, args.voices or Path(tmp))
    refs = [audio[n][1] for n in names]
    ckpt = load_checkpoint(args.model)
    options = TranscribeOptions.from_kwargs(temperature=0.0)
    for rounding in ["float32", *args.roundings.split(",")]:
        if rounding == "float32":
            weights, count = ckpt, 0
        else:
            form, parts = rounding.split(":")
            weights, count = rounded(ckpt, form, set(parts.split("+")))
        model = WhisperModel(weights, device="cpu")
        texts = [transcribe_with(model, audio[n][0], options)["text"] for n in names]
        each = [round(word_error_rate([r], [t])[0], 2) for r, t in zip(refs, texts)]
        print(f"{rounding:22s} {count:3d} matrices rounded  pooled WER {word_error_rate(refs, texts)[0]:6.2f} %  "
              f"{dict(zip(names, each))}", flush=True)


if __name__ == "__main__":
    main()
