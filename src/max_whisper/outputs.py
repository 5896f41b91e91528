"""Result writers: txt, srt, vtt, tsv and json in openai-whisper's shapes (subtitle lines of words with word
timestamps), written atomically."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TextIO

from .errors import WhisperError

FORMATS = ("txt", "srt", "vtt", "tsv", "json")


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    if seconds < 0:
        raise ValueError(f"negative timestamp {seconds}")
    ms = round(seconds * 1000.0)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1_000)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_marker}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


@dataclass(frozen=True)
class SubtitleOptions:
    """openai-whisper's subtitle options; the line options need word timestamps."""

    max_line_width: int | None = None  # characters in a line; with max_line_count, lines leave segments
    max_line_count: int | None = None  # lines in a cue
    max_words_per_line: int | None = None
    highlight_words: bool = False  # one cue per word, the word underlined

    def __post_init__(self) -> None:
        for name in ("max_line_width", "max_line_count", "max_words_per_line"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise WhisperError(f"{name} must be at least 1, got {value}")


Cue = tuple[float, float, str]  # start, end, text


def cues(result: dict, options: SubtitleOptions = SubtitleOptions()) -> Iterator[Cue]:
    """A subtitle's cues: one per spoken segment, or, with word timestamps, lines of words as openai-whisper
    makes them (new cue at a segment start unless lines may cross segments, after a pause of 3 s, or when the
    cue has max_line_count lines; new line when max_line_width or max_words_per_line would be passed)."""
    spoken = [s for s in result["segments"] if s["text"].strip()]
    if not spoken or "words" not in spoken[0]:
        for s in spoken:
            yield s["start"], s["end"], s["text"].strip().replace("-->", "->")
        return
    for cue in _word_cues(spoken, options):
        text = "".join(w["word"] for w in cue).replace("-->", "->")
        if not options.highlight_words:
            yield cue[0]["start"], cue[-1]["end"], text
            continue
        last = cue[0]["start"]
        for i, word in enumerate(cue):
            if last != word["start"]:
                yield last, word["start"], text
            yield word["start"], word["end"], "".join(re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", w["word"]) if j == i
                                                      else w["word"] for j, w in enumerate(cue))
            last = word["end"]


def _word_cues(segments: list[dict], options: SubtitleOptions) -> Iterator[list[dict]]:
    preserve_segments = options.max_line_count is None or options.max_line_width is None
    max_width = options.max_line_width or 1000
    per_line = options.max_words_per_line or 1000
    line_len, line_count = 0, 1
    cue: list[dict] = []
    last = next((w["start"] for s in segments for w in s["words"]), segments[0]["start"])
    for segment in segments:
        words = segment["words"]
        for chunk in range(0, len(words), per_line):
            for i, original in enumerate(words[chunk:chunk + per_line]):
                word = dict(original)
                long_pause = not preserve_segments and word["start"] - last > 3.0
                has_room = line_len + len(word["word"]) <= max_width
                segment_break = i == 0 and len(cue) > 0 and preserve_segments
                if line_len > 0 and has_room and not long_pause and not segment_break:
                    line_len += len(word["word"])
                else:
                    word["word"] = word["word"].strip()
                    if (cue and options.max_line_count is not None
                            and (long_pause or line_count >= options.max_line_count)) or segment_break:
                        yield cue
                        cue, line_count = [], 1
                    elif line_len > 0:
                        line_count += 1
                        word["word"] = "\n" + word["word"]
                    line_len = len(word["word"].strip())
                cue.append(word)
                last = word["start"]
    if cue:
        yield cue


def write_txt(result: dict, f: TextIO, options: SubtitleOptions) -> None:
    for segment in result["segments"]:
        print(segment["text"].strip(), file=f)


def write_srt(result: dict, f: TextIO, options: SubtitleOptions) -> None:
    for i, (start, end, text) in enumerate(cues(result, options), start=1):
        print(f"{i}\n{format_timestamp(start, True, ',')} --> {format_timestamp(end, True, ',')}\n{text}\n", file=f)


def write_vtt(result: dict, f: TextIO, options: SubtitleOptions) -> None:
    print("WEBVTT\n", file=f)
    for start, end, text in cues(result, options):
        print(f"{format_timestamp(start)} --> {format_timestamp(end)}\n{text}\n", file=f)


def write_tsv(result: dict, f: TextIO, options: SubtitleOptions) -> None:
    """Start and end in integer milliseconds and the text: per segment, or per cue with word timestamps."""
    print("start", "end", "text", sep="\t", file=f)
    rows = cues(result, options) if _has_words(result) else (
        (s["start"], s["end"], s["text"].strip()) for s in result["segments"])
    for start, end, text in rows:
        print(round(1000 * start), round(1000 * end), text.replace("\t", " ").replace("\n", " "), sep="\t", file=f)


def _has_words(result: dict) -> bool:
    return any("words" in s for s in result["segments"])


def write_json(result: dict, f: TextIO, options: SubtitleOptions) -> None:
    json.dump(result, f, ensure_ascii=False)


WRITERS: dict[str, Callable[[dict, TextIO, SubtitleOptions], None]] = {
    "txt": write_txt, "srt": write_srt, "vtt": write_vtt, "tsv": write_tsv, "json": write_json,
}


def output_names(files: list[Path]) -> list[Path]:
    """Where each input's output files go, relative to the output folder and without the format's extension:
    the input's stem; where different inputs share a stem, their paths from the folder they have in common
    (`a/x.wav`, `b/x.wav` -> `a/x`, `b/x`), with the extension where that is not enough (`x.wav`, `x.mp3` ->
    `x.wav`, `x.mp3`), so that no input's outputs overwrite another's."""
    by_stem: dict[str, set[Path]] = {}
    for f in files:
        by_stem.setdefault(f.stem, set()).add(f.resolve())
    names: dict[Path, Path] = {}
    for stem, paths in by_stem.items():
        if len(paths) == 1:
            names[next(iter(paths))] = Path(stem)
            continue
        root = Path(os.path.commonpath(list(paths)))
        relative = {p: p.relative_to(root) for p in paths}
        bare = Counter(r.with_suffix("") for r in relative.values())
        names.update({p: r.with_suffix("") if bare[r.with_suffix("")] == 1 else r for p, r in relative.items()})
    return [names[f.resolve()] for f in files]


def write_result(result: dict, base: Path, fmt: str, options: SubtitleOptions = SubtitleOptions()) -> Path:
    """Write `<base>.<fmt>` (folders made as needed); a failure never leaves a partial file in its place."""
    target = output_path(base, fmt)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            WRITERS[fmt](result, f, options)
        os.replace(tmp, target)  # the old file stays whole until the new one is complete
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def output_path(base: Path, fmt: str) -> Path:
    """Where `write_result(result, base, fmt)` writes."""
    return base.with_name(f"{base.name}.{fmt}")
