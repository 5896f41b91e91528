"""Result writers: txt, srt, vtt, tsv and json in openai-whisper's shapes, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, TextIO

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


def _cue_text(segment: dict) -> str:
    return segment["text"].strip().replace("-->", "->")


def _spoken(result: dict) -> list[dict]:
    return [s for s in result["segments"] if s["text"].strip()]


def write_txt(result: dict, f: TextIO) -> None:
    for segment in result["segments"]:
        print(segment["text"].strip(), file=f)


def write_srt(result: dict, f: TextIO) -> None:
    for i, s in enumerate(_spoken(result), start=1):
        start = format_timestamp(s["start"], always_include_hours=True, decimal_marker=",")
        end = format_timestamp(s["end"], always_include_hours=True, decimal_marker=",")
        print(f"{i}\n{start} --> {end}\n{_cue_text(s)}\n", file=f)


def write_vtt(result: dict, f: TextIO) -> None:
    print("WEBVTT\n", file=f)
    for s in _spoken(result):
        print(f"{format_timestamp(s['start'])} --> {format_timestamp(s['end'])}\n{_cue_text(s)}\n", file=f)


def write_tsv(result: dict, f: TextIO) -> None:
    print("start", "end", "text", sep="\t", file=f)
    for s in result["segments"]:
        print(round(1000 * s["start"]), round(1000 * s["end"]), s["text"].strip().replace("\t", " "), sep="\t", file=f)


def write_json(result: dict, f: TextIO) -> None:
    json.dump(result, f, ensure_ascii=False)


WRITERS: dict[str, Callable[[dict, TextIO], None]] = {
    "txt": write_txt, "srt": write_srt, "vtt": write_vtt, "tsv": write_tsv, "json": write_json,
}


def write_result(result: dict, base: Path, fmt: str) -> Path:
    """Write `<base>.<fmt>` (folders made as needed); a failure never leaves a partial file in its place."""
    target = base.with_name(f"{base.name}.{fmt}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            WRITERS[fmt](result, f)
        os.replace(tmp, target)  # the old file stays whole until the new one is complete
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
