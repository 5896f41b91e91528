"""How a recording's first words are read as more audio follows them: each recording's first T seconds decoded
as one window (greedy, temperature 0, no prompt: a stream's first decodes), for growing T; WER of the
decode's first `--words` words against the reference's first as many.

    python -m benchmarks.investigations.first_words_context --voices DIR [--seconds 4,6,8,12,20,30] [--words 10]

A stream commits its first words from buffers of a few seconds, where the offline loop reads them in a full
30 s window: the same words, read with different amounts of audio after them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import max_whisper as mw
from benchmarks.common import add_model_args, command, machine, parser, write_json
from benchmarks.suite.streaming import recordings
from max_whisper.audio import SAMPLE_RATE
from max_whisper.bench import word_error_rate
from max_whisper.transcribe import TranscribeOptions, front_end, transcribe_speech


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--recordings", default="lecture,garden,railway,kitchen,comet")
    p.add_argument("--voices", type=Path, default=None, metavar="DIR")
    p.add_argument("--seconds", default="4,6,8,12,20,30")
    p.add_argument("--words", type=int, default=10)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args()
    seconds = [float(s) for s in args.seconds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        audio = recordings(args.recordings.split(","), args.voices or Path(tmp))
    model = mw.load_model(args.model, device=args.device, compiled=args.compiled)
    options = TranscribeOptions.from_kwargs(temperature=0.0)
    rows = []
    for t in seconds:
        refs, hyps = [], []
        for name, (samples, reference) in audio.items():
            buffer = samples[: round(t * SAMPLE_RATE)]
            text = transcribe_speech(model, front_end(buffer, options, model.dims.n_mels), options, max_windows=1)["text"]
            refs.append(" ".join(reference.split()[: args.words]))
            hyps.append(" ".join(text.split()[: args.words]))
            rows.append({"seconds": t, "recording": name, "text": hyps[-1],
                         "wer": round(word_error_rate(refs[-1:], hyps[-1:])[0], 2)})
        wer = round(word_error_rate(refs, hyps)[0], 2)
        rows.append({"seconds": t, "recording": "pooled", "wer": wer})
        print(f"{t:4.1f} s: first {args.words} words' WER {wer:5.2f} % |",
              " | ".join(f"{r['recording']} {r['wer']:.0f}" for r in rows if r["seconds"] == t and r["recording"] != "pooled"),
              flush=True)
    if args.output:
        write_json(args.output / "first_words_context.json", {"machine": machine(), "command": command(),
                                                              "model": args.model, "rows": rows})


if __name__ == "__main__":
    main()
