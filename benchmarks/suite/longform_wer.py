"""Long-form word error rate of the max backend's sequential loop against its throughput mode
(`--batch-size`: streams over the VAD speech, each read by the sequential loop), on synthetic speech made
here from the texts in longform_texts/ (written for this test; none of the shared recordings), and on tests/speech/lecture.flac.
Needs espeak-ng (`apt-get install espeak-ng`).

    python -m benchmarks.suite.longform_wer [--batch-size 8] [--device cpu] [--output benchmarks/results/longform]

Each text is spoken by one espeak-ng voice at one speed (VOICES), 16 kHz WAV in a temporary folder. Each
recording is under 8 windows, so the throughput mode reads it as one stream; the last row joins all five
into one recording (about 8.4 min), which it cuts into several streams.
Writes results.json and results.md to --output.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import (RESULTS, SPEECH, add_model_args, add_output_arg, command, load, machine, parser,
                               references, write_json)
from max_whisper import load_audio
from max_whisper.audio import SAMPLE_RATE
from max_whisper.bench import word_error_rate

TEXTS = Path(__file__).parent / "longform_texts"
VOICES = {"garden": ("en-us", 160), "railway": ("en-gb", 150), "kitchen": ("en-us", 175), "comet": ("en-gb-x-rp", 165)}


def synthesize(text_file: Path, voice: str, speed: int, out: Path) -> Path:
    wav = out / f"{text_file.stem}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), "-f", str(text_file)], check=True)
    return wav


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    add_output_arg(p, RESULTS / "longform")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()
    model = load(args)
    rows = []

    def measure(name: str, voice: str, speed: int, audio, reference: str) -> dict:
        row = {"text": name, "voice": voice, "words_per_minute": speed, "words": len(reference.split()),
               "seconds": round(audio.size / SAMPLE_RATE, 1)}
        for mode, batch_size in (("sequential", None), ("batched", args.batch_size)):
            hypothesis = model.transcribe(audio, temperature=0.0, batch_size=batch_size)["text"]
            row[f"{mode}_wer"] = round(word_error_rate([reference], [hypothesis])[0], 2)
            row[f"{mode}_text"] = hypothesis
        print(f"{name}: {row['seconds']} s, WER sequential {row['sequential_wer']} %, "
              f"batched {row['batched_wer']} %", flush=True)
        return row

    recordings = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (voice, speed) in [*VOICES.items(), ("lecture", ("(lecture.flac)", 0))]:
            if name == "lecture":
                reference = references(SPEECH)["lecture.flac"]
                audio = load_audio(SPEECH / "lecture.flac")
            else:
                text_file = TEXTS / f"{name}.txt"
                reference = text_file.read_text().strip()
                audio = load_audio(synthesize(text_file, voice, speed, Path(tmp)))
            recordings.append((audio, reference))
            rows.append(measure(name, voice, speed, audio, reference))
    n_words = {r["text"]: r["words"] for r in rows}
    total = sum(n_words.values())
    pooled = {mode: round(sum(r[f"{mode}_wer"] * n_words[r["text"]] for r in rows) / total, 2)
              for mode in ("sequential", "batched")}
    # The five as one recording: long enough for the throughput mode to cut it into several streams.
    joined = measure("all five joined", "(each its own)", 0, np.concatenate([a for a, _ in recordings]),
                     " ".join(r for _, r in recordings))
    report = {"model": args.model, "device": args.device, "batch_size": args.batch_size, "machine": machine(),
              "settings": "greedy, temperature 0 (no fallback), openai-whisper EnglishTextNormalizer",
              "word_weighted_wer": pooled, "rows": rows, "joined": joined}
    write_json(args.output / "results.json", report)
    machine_line = ", ".join(f"{k} {v}" for k, v in report["machine"].items())
    lines = [f"model {args.model}, device {args.device}, greedy, temperature 0; throughput mode --batch-size "
             f"{args.batch_size}; audio: benchmarks/suite/longform_texts/*.txt spoken by espeak-ng (voice and words "
             "per minute below)", "", f"Machine: {machine_line}.", "", f"Command: `{command()}`", "",
             "| text | voice | wpm | seconds | WER sequential % | WER batched % |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['text']} | {r['voice']} | {r['words_per_minute']} | {r['seconds']} | {r['sequential_wer']} | "
              f"{r['batched_wer']} |" for r in rows]
    lines += [f"| all ({total} words) | | | | {pooled['sequential']} | {pooled['batched']} |",
              f"| all five as one recording ({joined['seconds']} s) | | | | {joined['sequential_wer']} | "
              f"{joined['batched_wer']} |"]
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
