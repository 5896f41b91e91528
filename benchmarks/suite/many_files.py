"""Many files, mostly short, as a batch job meets them (voice notes, call snippets, dataset rows): a set of
WAV files and their references for `max-whisper bench`, which times every engine on it in a process of its
own.

    python -m benchmarks.suite.many_files --folder DIR [--files 64] [--voices DIR]
    max-whisper bench DIR/*.wav --backends reference,transformers,max --devices gpu --files-at-once 64 --runs 3

The distinct recordings: the 8 short clips of tests/speech (1-11 s, real speech), 12 espeak-ng clips of
8-22 s (runs of 2, 3 and 4 whole sentences from benchmarks/suite/longform_texts, each text in a voice and speed
of its own, other than the long reading's), and 5 long ones (tests/speech/lecture.flac and the four texts read
whole, as in longform_wer: 86-125 s). The set: each long recording once, and the short ones in turn until
--files, every file a copy after its own silence (under 1 s) at its own gain (0.5-1.0), so no two files
are the same samples. With 64 files: 59 short and 5 long, 1211.7 s of audio. refs.tsv beside the files
holds each one's reference text (bench reads it for WER).

espeak-ng's recordings are made into --voices (default: DIR/voices) unless they are there already (NAME.flac
or NAME.wav), so a machine without espeak-ng builds the set from recordings made elsewhere.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from benchmarks.common import SPEECH, parser, references, write_wav
from benchmarks.suite.longform_wer import TEXTS, VOICES, synthesize
from max_whisper import load_audio
from max_whisper.audio import SAMPLE_RATE

SHORT_VOICES = {"garden": ("en-gb", 175), "railway": ("en-us", 165), "kitchen": ("en-gb-x-rp", 150),
                "comet": ("en-us", 180)}  # the short clips' voices: not those of the long readings (VOICES)
CLIPS_PER_TEXT = 3
SENTENCES_PER_CLIP = (2, 3, 4)  # the three clips of a text: its first runs of this many sentences


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def distinct_recordings(voices: Path) -> tuple[list[tuple[str, np.ndarray, str]], list[tuple[str, np.ndarray, str]]]:
    """(short, long): each recording's name, 16 kHz samples and reference text."""
    refs = references(SPEECH)
    short = [(p.stem, load_audio(p), refs[p.name]) for p in sorted(SPEECH.glob("*.wav"))]
    long = [("lecture", load_audio(SPEECH / "lecture.flac"), refs["lecture.flac"])]
    voices.mkdir(parents=True, exist_ok=True)
    for name, (voice, speed) in VOICES.items():
        text_file = TEXTS / f"{name}.txt"
        long.append((name, load_audio(_spoken(text_file, voice, speed, voices)), text_file.read_text().strip()))
        said = sentences(text_file.read_text())
        first = 0
        for k, count in enumerate(SENTENCES_PER_CLIP[:CLIPS_PER_TEXT]):
            text = " ".join(said[first:first + count])
            first += count
            clip_file = voices / f"{name}_{k}.txt"
            clip_file.write_text(text + "\n")
            short_voice, short_speed = SHORT_VOICES[name]
            short.append((clip_file.stem, load_audio(_spoken(clip_file, short_voice, short_speed, voices)), text))
    return short, long


def _spoken(text_file: Path, voice: str, speed: int, voices: Path) -> Path:
    made = [voices / f"{text_file.stem}{ext}" for ext in (".flac", ".wav") if (voices / f"{text_file.stem}{ext}").exists()]
    return made[0] if made else synthesize(text_file, voice, speed, voices)


def make_set(folder: Path, n_files: int, voices: Path) -> list[Path]:
    short, long = distinct_recordings(voices)
    if n_files < len(long) + len(short):
        raise SystemExit(f"--files must be at least {len(long) + len(short)} (every distinct recording once)")
    chosen = long + [short[i % len(short)] for i in range(n_files - len(long))]
    folder.mkdir(parents=True, exist_ok=True)
    rows, paths = [], []
    for i, (name, audio, text) in enumerate(chosen):
        silence = np.zeros(int((i * 0.137) % 1.0 * SAMPLE_RATE), np.float32)  # under 1 s, a different one per file
        gain = 0.5 + 0.5 * ((i * 0.311) % 1.0)
        path = folder / f"f{i:03d}_{name}.wav"
        write_wav(path, np.concatenate([silence, gain * audio]))
        rows.append({"file": path.name, "reference": text})
        paths.append(path)
    with open(folder / "refs.tsv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "reference"], delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return paths


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--folder", type=Path, required=True, help="where the set's WAV files and refs.tsv go")
    p.add_argument("--files", type=int, default=64, help="how many files (default 64)")
    p.add_argument("--voices", type=Path, default=None, metavar="DIR",
                   help="espeak-ng's recordings, made here unless there already (default FOLDER/voices)")
    args = p.parse_args()
    paths = make_set(args.folder, args.files, args.voices or args.folder / "voices")
    seconds = [len(load_audio(p)) / SAMPLE_RATE for p in paths]
    print(f"{len(paths)} files, {sum(seconds):.1f} s of audio, {sum(s < 30 for s in seconds)} under 30 s, "
          f"longest {max(seconds):.1f} s: {args.folder}")


if __name__ == "__main__":
    main()
