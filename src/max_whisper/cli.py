"""The `max-whisper` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

from .audio import SAMPLE_RATE, load_audio
from .backends import BACKENDS, Backend
from .errors import WhisperError, describe, file_error
from .tokenizer import language_code
from .vad import VadOptions
from .alignment import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS
from .outputs import FORMATS, SubtitleOptions, format_timestamp, output_names, write_result
from .runtime.device import DTYPES as DEVICE_DTYPES

# Extensions picked up when a directory is given (files named explicitly may have any).
AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif",
                    ".webm", ".mp4", ".mkv", ".mov", ".amr", ".3gp"}


DTYPES = ["auto", *DEVICE_DTYPES]
MODEL_HELP = ("a model name (default tiny.en; `max-whisper models` lists them and where each loads from) or the path "
              "of a model folder or .pt file")


def sample_path() -> Path:
    """The bundled sample: JFK's inaugural address, 11 s (public domain)."""
    return Path(str(resources.files("max_whisper") / "assets" / "jfk.wav"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="max-whisper", description="Whisper speech recognition on MAX graphs")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe audio files or folders of them")
    t.add_argument("inputs", nargs="*", type=Path,
                   help="audio files (any format FFmpeg reads), folders, or manifests: a .txt (a path a line), "
                        ".jsonl ({\"path\": ...} a line) or .parquet (a path column) file of paths")
    t.add_argument("--sample", action="store_true", help="transcribe the bundled 11 s sample")
    t.add_argument("--model", default="tiny.en", help=MODEL_HELP)
    t.add_argument("--device", default="cpu", type=_device, choices=["cpu", "gpu"], help="cpu or gpu (cuda: gpu)")
    t.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="MAX weights and activations (default auto: float32 on the CPU, its only dtype; on a GPU "
                        "bfloat16 for models of width 1024 and more, float32 below; see docs/measurements.md)")
    t.add_argument("--backend", default="max", choices=BACKENDS,
                   help="max (default): all MAX graphs; hybrid: MAX encoder + openai-whisper decoder; "
                        "reference: openai-whisper; faster-whisper: CTranslate2; transformers: Hugging Face; "
                        "whisper.cpp: pywhispercpp")
    t.add_argument("--output-format", "--output_format", "-f", choices=[*FORMATS, "all"], default=None,
                   help="write files in this format (default: none, or all when --output-dir is given)")
    t.add_argument("--output-dir", "--output_dir", "-o", type=Path, default=None,
                   help="where files go (default: current folder)")
    t.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False,
                   help="print segments with their times as they are decoded")
    add_decoding_arguments(t)
    add_subtitle_arguments(t)
    t.add_argument("--batch-size", type=_positive_int, default=None,
                   help="throughput mode: the speech VAD finds, cut into up to N streams of at least 4 windows "
                        "(1-2 minutes), each read by the sequential loop, their windows decoded together (default: "
                        "openai-whisper's sequential loop over the whole recording); with --backend faster-whisper, "
                        "its BatchedInferencePipeline with batch_size N")
    t.add_argument("--vad-filter", action=argparse.BooleanOptionalAction, default=False,
                   help="max backend: decode only the speech Silero VAD finds (faster-whisper's vad_filter); "
                        "times stay those of the recording")
    t.add_argument("--vad-parameters", type=_vad_parameters, default=None, metavar="NAME=VALUE,...",
                   help="VAD options by faster-whisper's names: threshold, neg_threshold, min_speech_duration_ms, "
                        "max_speech_duration_s, min_silence_duration_ms, speech_pad_ms")
    t.add_argument("--files-at-once", type=_positive_int, default=None, metavar="N",
                   help="max backend: transcribe N files at a time, their windows decoded together as one batch; "
                        "each file keeps the sequential loop and its previous-text conditioning (default 1; with "
                        "--ray 8 per worker)")
    t.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="transcribe on a Ray cluster (pip install 'max-whisper[distributed]'), after the inputs: "
                        "the one at ADDRESS, or without it Ray's default (RAY_ADDRESS, a cluster `ray start` began "
                        "here, else a new one on this machine); writes the output files and a results table "
                        "(OUTPUT_DIR/results/*.jsonl) and skips files an earlier run completed")
    t.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="with --ray: engine workers (default: one per GPU of the cluster with --device gpu, else 1)")
    t.add_argument("--silence-threshold-db", type=_decibels_or_off, default=None, metavar="DB",
                   help="max backend: windows whose loudest 20 ms is quieter than DB dBFS are not decoded "
                        "(default -60; 'off' decodes every window, as openai-whisper does)")
    add_compiled_argument(t)
    b = sub.add_parser("bench", help="compare backends on the same audio: time, memory, transcript quality")
    from . import bench  # the harness, loaded only for the command line

    bench.add_arguments(b)
    v = sub.add_parser("serve", help="serve the OpenAI audio API (transcriptions, translations) over HTTP")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--model", default="tiny.en", help=MODEL_HELP)
    v.add_argument("--device", default="cpu", type=_device, choices=["cpu", "gpu"], help="cpu or gpu (cuda: gpu)")
    v.add_argument("--dtype", default="auto", choices=DTYPES)
    v.add_argument("--max-upload-mb", type=float, default=25.0, help="largest accepted upload (default 25)")
    v.add_argument("--max-batch", type=_positive_int, default=8,
                   help="most 30 s windows, from concurrent requests, decoded together (default 8)")
    v.add_argument("--max-queue", type=_positive_int, default=64,
                   help="most requests in progress at once; more get 503 with Retry-After (default 64)")
    v.add_argument("--max-streams", type=_positive_int, default=64,
                   help="most live WebSocket streams open at once; more are refused (default 64)")
    v.add_argument("--silence-threshold-db", type=_decibels_or_off, default=None, metavar="DB",
                   help="windows whose loudest 20 ms is quieter than DB dBFS are not decoded "
                        "(default -60; 'off' decodes every window)")
    add_compiled_argument(v)
    live = sub.add_parser("live", help="transcribe audio as it arrives (a file played at real speed, or raw PCM on "
                                       "stdin), printing text as it is committed")
    live.add_argument("input", help="an audio file, played at --speed; or - for raw 16-bit little-endian 16 kHz mono "
                                    "PCM on stdin (e.g. `arecord -f S16_LE -r 16000 -c 1 | max-whisper live -`)")
    live.add_argument("--model", default="tiny.en", help=MODEL_HELP)
    live.add_argument("--device", default="cpu", type=_device, choices=["cpu", "gpu"], help="cpu or gpu (cuda: gpu)")
    live.add_argument("--dtype", default="auto", choices=DTYPES)
    live.add_argument("--language", default=None, help="language code or name (default: detect)")
    live.add_argument("--speed", type=_non_negative_float, default=1.0,
                      help="a file's pace: 1 real time (default), 2 twice as fast; 0 as fast as it decodes, "
                           "each --min-chunk of audio decoded as it would be live (the same text every run)")
    live.add_argument("--min-chunk", type=_positive_float, default=None, metavar="SECONDS",
                      help="new audio before the buffer is decoded again (default 0.8 on the CPU, 0.5 on a GPU: "
                           "StreamingOptions.for_device; shorter: text sooner, more decodes)")
    live.add_argument("--agreement", type=int, default=None, metavar="N",
                      help="successive decodes that must read a word alike before it is committed (default 2: "
                           "StreamingOptions.agreement; 3: text closer to the offline transcript, one more "
                           "--min-chunk of latency)")
    live.add_argument("--vad-filter", action=argparse.BooleanOptionalAction, default=False,
                      help="decode only the speech Silero VAD finds in the buffer")
    add_compiled_argument(live)
    sub.add_parser("models", help="list the model names and where each loads from on this machine")
    c = sub.add_parser("compile", help="compile the max backend's graphs ahead of time, for this machine or "
                                       "another (then pass the folder as --compiled)")
    c.add_argument("out", type=Path, help="folder to write the compiled graphs to")
    c.add_argument("--model", default="tiny.en", help=MODEL_HELP)
    c.add_argument("--device", default="cpu", type=_device, choices=["cpu", "gpu"], help="cpu or gpu (cuda: gpu)")
    c.add_argument("--dtype", default="auto", choices=DTYPES)
    c.add_argument("--gpu-arch", default=None, metavar="SM",
                   help="compile for this NVIDIA architecture (sm_80, sm_90, ...) without such a GPU here")
    c.add_argument("--cpu-target", default=None, metavar="CPU",
                   help="compile CPU code for this LLVM CPU (x86-64-v3, generic, ...) instead of this machine's")
    return parser


def add_decoding_arguments(t: argparse.ArgumentParser) -> None:
    """openai-whisper's decoding and long-form options, under both its spellings and ours."""
    t.add_argument("--language", default=None, help="language code or name (default: detect)")
    t.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    t.add_argument("--temperature", type=_temperature, default=0.0,
                   help="temperature of the first try (default 0: greedy or beam search)")
    t.add_argument("--temperature-increment-on-fallback", "--temperature_increment_on_fallback",
                   type=_increment, default=0.2, metavar="STEP",
                   help="a window that fails the thresholds below is decoded again at a temperature this much "
                        "higher, up to 1.0 (default 0.2; 0 or 'none': no fallback)")
    t.add_argument("--best-of", "--best_of", type=_positive_int, default=None,
                   help="samples to choose from at temperatures above 0 (default 5)")
    t.add_argument("--beam-size", "--beam_size", type=_positive_int, default=None, help="beam search with this many beams")
    t.add_argument("--patience", type=float, default=None, help="beam search patience (default 1.0)")
    t.add_argument("--length-penalty", "--length_penalty", type=float, default=None,
                   help="length penalty for ranking candidates (default: divide by the length)")
    t.add_argument("--suppress-tokens", "--suppress_tokens", default="-1",
                   help="comma-separated token ids never written; -1: symbols that are never speech (default)")
    t.add_argument("--repetition-penalty", type=_positive_float, default=None,
                   help="against loops: logits of tokens a window already sampled divided (positive) or multiplied "
                        "(negative) by this; > 1 penalizes (faster-whisper's; default 1, off)")
    t.add_argument("--no-repeat-ngram-size", type=_positive_int, default=None, metavar="N",
                   help="against loops: no N-gram twice in a window (faster-whisper's; default 0, off)")
    t.add_argument("--initial-prompt", "--initial_prompt", default=None, help="text to condition the first window on")
    t.add_argument("--condition-on-previous-text", action=argparse.BooleanOptionalAction, default=True,
                   help="each window after the previous window's text (default: yes)")
    t.add_argument("--compression-ratio-threshold", "--compression_ratio_threshold", type=_float_or_none, default=2.4,
                   help="a text more repetitive than this gzip ratio fails (default 2.4; 'none': off)")
    t.add_argument("--logprob-threshold", "--logprob_threshold", type=_float_or_none, default=-1.0,
                   help="a text less likely than this mean log probability fails (default -1.0; 'none': off)")
    t.add_argument("--no-speech-threshold", "--no_speech_threshold", type=_float_or_none, default=0.6,
                   help="a window more likely silence than this, and failing --logprob-threshold, is skipped "
                        "(not with --batch-size, whose windows VAD found speech in; default 0.6; 'none': off)")
    t.add_argument("--without-timestamps", action="store_true", help="decode without timestamp tokens")
    t.add_argument("--clip-timestamps", "--clip_timestamps", default="0", metavar="START,END,...",
                   help="only these stretches, in seconds (an open last end: to the end; default 0: all)")
    t.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None,
                   help="openai-whisper's precision switch: on a GPU, --fp16 is --dtype float16; on the CPU, "
                        "which runs float32, it is refused")


def add_subtitle_arguments(t: argparse.ArgumentParser) -> None:
    """Word timestamps and openai-whisper's subtitle layout options."""
    t.add_argument("--word-timestamps", action=argparse.BooleanOptionalAction, default=False,
                   help="time every word (segments gain `words`; subtitles can be laid out by word)")
    t.add_argument("--prepend-punctuations", "--prepend_punctuations", default=PREPEND_PUNCTUATIONS,
                   help="with word timestamps: punctuation joined to the next word")
    t.add_argument("--append-punctuations", "--append_punctuations", default=APPEND_PUNCTUATIONS,
                   help="with word timestamps: punctuation joined to the previous word")
    t.add_argument("--highlight-words", action=argparse.BooleanOptionalAction, default=False,
                   help="with word timestamps: one subtitle cue per word, the word underlined (srt, vtt)")
    t.add_argument("--max-line-width", "--max_line_width", type=_positive_int, default=None,
                   help="with word timestamps: characters in a subtitle line")
    t.add_argument("--max-line-count", "--max_line_count", type=_positive_int, default=None,
                   help="with word timestamps: lines in a subtitle cue")
    t.add_argument("--max-words-per-line", "--max_words_per_line", type=_positive_int, default=None,
                   help="with word timestamps: words in a subtitle line")
    t.add_argument("--hallucination-silence-threshold", "--hallucination_silence_threshold", type=float, default=None,
                   metavar="SECONDS", help="with word timestamps: skip silence longer than this before a likely "
                                           "hallucination")


def transcribe_options(args: argparse.Namespace) -> dict:
    """The backend's transcribe() keywords from the command line; those not given are left out, so that each
    backend keeps its own default."""
    temperature: float | tuple[float, ...] = args.temperature
    if args.temperature_increment_on_fallback:
        temperature = tuple(np.arange(args.temperature, 1.0 + 1e-6, args.temperature_increment_on_fallback).tolist())
    options = {
        "language": language_code(args.language) if args.language else None, "task": args.task,
        "temperature": temperature, "best_of": args.best_of, "beam_size": args.beam_size, "patience": args.patience,
        "length_penalty": args.length_penalty, "suppress_tokens": args.suppress_tokens,
        "repetition_penalty": args.repetition_penalty, "no_repeat_ngram_size": args.no_repeat_ngram_size,
        "initial_prompt": args.initial_prompt, "condition_on_previous_text": args.condition_on_previous_text,
        "compression_ratio_threshold": args.compression_ratio_threshold,
        "logprob_threshold": args.logprob_threshold, "no_speech_threshold": args.no_speech_threshold,
        "without_timestamps": args.without_timestamps or None,
        "clip_timestamps": None if args.clip_timestamps.strip() == "0" else args.clip_timestamps,  # "0": all of it
        "batch_size": args.batch_size, "vad_filter": args.vad_filter or None,
        "vad_parameters": VadOptions.from_dict(args.vad_parameters) if args.vad_parameters else None,
    }
    if args.word_timestamps:
        options.update(word_timestamps=True, prepend_punctuations=args.prepend_punctuations,
                       append_punctuations=args.append_punctuations,
                       hallucination_silence_threshold=args.hallucination_silence_threshold)
    elif args.hallucination_silence_threshold is not None:
        raise WhisperError("--hallucination-silence-threshold needs --word-timestamps")
    options = {k: v for k, v in options.items() if v is not None}
    for name in ("compression_ratio_threshold", "logprob_threshold", "no_speech_threshold"):
        options[name] = getattr(args, name)  # None: the threshold is off
    options.update(silence_option(args.silence_threshold_db))
    return options


def subtitle_options(args: argparse.Namespace) -> SubtitleOptions:
    wants_words = args.highlight_words or args.max_line_width or args.max_line_count or args.max_words_per_line
    if wants_words and not args.word_timestamps:
        raise WhisperError("--highlight-words, --max-line-width, --max-line-count and --max-words-per-line "
                           "need --word-timestamps")
    return SubtitleOptions(args.max_line_width, args.max_line_count, args.max_words_per_line, args.highlight_words)


def add_compiled_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compiled", action="append", type=Path, default=None, metavar="DIR",
                        help="max backend: use the graphs `max-whisper compile` wrote to DIR (repeatable) instead "
                             "of compiling them here")


def compiled_dirs(args: argparse.Namespace) -> list[str] | None:
    """The --compiled folders (the engine checks each holds compiled graphs: never a silent compile)."""
    if not args.compiled:
        return None
    if getattr(args, "backend", "max") != "max":
        raise WhisperError("--compiled is for the max backend")
    return [str(d) for d in args.compiled]


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


OFF = "off"


def _decibels_or_off(text: str) -> float | str:
    if text.strip().lower() == OFF:
        return OFF
    value = float(text)
    if value > 0:
        raise argparse.ArgumentTypeError(f"must be a level in dBFS (0 or less) or 'off', got {value}")
    return value


def _vad_parameters(text: str) -> dict[str, str]:
    """NAME=VALUE,... as a dict (VadOptions checks the names and values)."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE,..., got '{text}'")
    return {name.strip(): value.strip() for name, value in pairs}


def silence_option(value: float | str | None) -> dict:
    """The engine's `silence_threshold_db` for a --silence-threshold-db value (None: not given)."""
    if value is None:
        return {}
    return {"silence_threshold_db": None if value == OFF else value}


def _device(text: str) -> str:
    return "gpu" if text == "cuda" else text


# openai-whisper's command line writes its switches with a value (`--word_timestamps True`); ours are flags
# (`--word-timestamps`, `--no-word-timestamps`): `openai_spellings` turns the one into the other.
_SWITCHES = ("verbose", "word_timestamps", "condition_on_previous_text", "highlight_words", "fp16")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def openai_spellings(argv: list[str]) -> list[str]:
    """`argv` with each switch given a True/False value (`--word_timestamps True`, `--fp16=False`) as a flag."""
    out, i = [], 0
    while i < len(argv):
        name, joined, value = argv[i][2:].replace("-", "_").partition("=") if argv[i].startswith("--") else (None, "", "")
        if not joined:
            value = argv[i + 1] if i + 1 < len(argv) else ""
        if name in _SWITCHES and value.lower() in _TRUE | _FALSE:
            out.append(("--" if value.lower() in _TRUE else "--no-") + name.replace("_", "-"))
            i += 1 if joined else 2
        elif name in _SWITCHES:
            out.append("--" + name.replace("_", "-"))
            i += 1
        else:
            out.append(argv[i])
            i += 1
    return out


def _float_or_none(text: str) -> float | None:
    return None if text.strip().lower() == "none" else float(text)


def _increment(text: str) -> float | None:
    value = _float_or_none(text)
    if value is not None and value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value or None


def _temperature(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 2.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2, got {value}")
    return value


MANIFESTS = (".txt", ".jsonl", ".parquet")


def expand_inputs(inputs: list[Path]) -> tuple[list[Path], list[str]]:
    """Files as given, folders walked for audio, manifests read; returns (files, problems)."""
    files: list[Path] = []
    problems: list[str] = []
    for path in inputs:
        if path.suffix.lower() in MANIFESTS:
            try:
                files.extend(read_manifest(path))
            except WhisperError as e:
                problems.append(str(e))
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                problems.append(f"{path}: folder has no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})")
            files.extend(found)
        else:
            files.append(path)  # missing or unreadable files are reported when they are read
    return files, problems


def read_manifest(path: Path) -> list[Path]:
    """The paths a manifest lists: a text file of a path a line (blank lines and # comments skipped), JSON
    lines of objects with a "path", or a Parquet table with a "path" column; relative paths are relative to
    the manifest's folder."""
    try:
        if path.suffix.lower() == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise WhisperError(f"{path}: a Parquet manifest needs pyarrow (pip install "
                                   "'max-whisper[distributed]')") from None
            table = pq.read_table(path)
            if "path" not in table.column_names:
                raise WhisperError(f"{path}: no 'path' column (columns: {', '.join(table.column_names)})")
            listed = [str(p) for p in table.column("path").to_pylist()]
        else:
            lines = [(i, line.strip()) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)]
            kept = [(i, line) for i, line in lines if line and not line.startswith("#")]
            if path.suffix.lower() == ".jsonl":
                listed = [_manifest_path(path, i, line) for i, line in kept]
            else:
                listed = [line for _, line in kept]
    except (OSError, UnicodeDecodeError) as e:
        raise WhisperError(f"{path}: cannot read the manifest: {describe(e)}") from None
    except ValueError as e:  # pyarrow's errors for a file that is not Parquet
        raise WhisperError(f"{path}: not a Parquet manifest: {describe(e)}") from None
    return [path.parent / p for p in listed]


def _manifest_path(manifest: Path, number: int, line: str) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        raise WhisperError(f"{manifest}:{number}: not a JSON line") from None
    if not isinstance(row, dict) or not isinstance(row.get("path"), str):
        raise WhisperError(f"{manifest}:{number}: a manifest line needs a \"path\" string")
    return row["path"]


class Progress:
    """A progress bar over audio seconds (or files), on stderr, only when stderr is a terminal."""

    def __init__(self, name: str, unit: str = "s"):
        from tqdm import tqdm

        self.bar = tqdm(desc=name, disable=not sys.stderr.isatty(), leave=False,
                        bar_format=f"{{desc}}: {{percentage:3.0f}}%|{{bar}}| {{n:.0f}}/{{total:.0f}} {unit} "
                                   "[{elapsed}<{remaining}]")

    def __call__(self, done: float, total: float) -> None:
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def cmd_transcribe(args: argparse.Namespace) -> int:
    from .backends import load_model
    from .engine import WhisperModel

    files, problems = expand_inputs(list(args.inputs))
    if args.sample:
        files.append(sample_path())
    if not files and not problems:
        raise WhisperError("no input: give audio files or folders, or --sample")
    formats = []
    if args.output_format or args.output_dir:
        formats = list(FORMATS) if args.output_format in (None, "all") else [args.output_format]
    output_dir = args.output_dir or Path(".")
    if formats:
        check_writable(output_dir)  # before any audio is transcribed
    options, subtitles = transcribe_options(args), subtitle_options(args)
    dtype = _dtype(args)
    if args.ray is not None:
        return _on_ray(args, files, problems, options, formats, output_dir, subtitles)
    if args.workers is not None:
        raise WhisperError("--workers needs --ray")
    args.files_at_once = args.files_at_once or 1
    if args.files_at_once > 1 and (args.backend != "max" or args.batch_size is not None):
        raise WhisperError("--files-at-once needs the max backend, and no --batch-size (each file runs the "
                           "sequential loop)")
    if args.batch_size is not None and args.backend not in ("max", "faster-whisper"):
        raise WhisperError(f"--batch-size is the throughput mode of the max backend (and faster-whisper's "
                           f"BatchedInferencePipeline), not of {args.backend}")
    if args.backend != "max" and (args.silence_threshold_db is not None or args.vad_filter or args.vad_parameters):
        raise WhisperError(f"--silence-threshold-db and --vad-filter/--vad-parameters are options of the max "
                           f"backend, not of {args.backend}")
    if args.vad_parameters and not (args.vad_filter or args.batch_size):
        raise WhisperError("--vad-parameters needs --vad-filter (or --batch-size, which cuts on VAD regions)")

    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    failures = len(problems)
    if not files:
        return 1
    from .runtime.device import decoding_rows

    start = time.perf_counter()
    model = load_model(args.model, device=args.device, backend=args.backend, dtype=dtype, compiled=compiled_dirs(args),
                       rows=decoding_rows(max(args.files_at_once, args.batch_size or 1), args.beam_size, args.best_of))
    print(f"loaded {args.model} ({args.backend}) on {args.device} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if isinstance(model, WhisperModel):  # a language or task the model lacks fails here, not once per file
        model.tokenizer(options.get("language"), options.get("task"))

    if args.files_at_once > 1:
        from .batching import transcribe_files
        from .transcribe import TranscribeOptions

        if not isinstance(model, WhisperModel):
            raise WhisperError("--files-at-once needs the max backend")
        done = _counting_files(transcribe_files(model, files, args.files_at_once,
                                                TranscribeOptions.from_kwargs(**options)), len(files))
    else:
        done = _one_by_one(model, files, options)
    names = output_names(files)
    audio_seconds, transcribed, work_start = 0.0, 0, time.perf_counter()
    for path, name, (_, audio, result) in zip(files, names, done):
        if isinstance(result, WhisperError):
            print(f"error: {result}", file=sys.stderr)
            failures += 1
            continue
        audio_seconds += len(audio) / SAMPLE_RATE
        transcribed += 1
        if len(files) > 1:
            print(f"==> {path} <==")
        if args.verbose:
            for s in result["segments"]:
                print(f"[{format_timestamp(s['start'])} --> {format_timestamp(s['end'])}] {s['text'].strip()}")
        else:
            print(result["text"].strip())
        for fmt in formats:
            try:
                write_result(result, output_dir / name, fmt, subtitles)
            except OSError as e:
                print(f"error: {path}: cannot write {fmt} output in {output_dir}: {e.strerror or e}", file=sys.stderr)
                failures += 1
    wall = time.perf_counter() - work_start
    print(f"transcribed {transcribed}/{len(files)} files: {audio_seconds:.1f} s of audio in {wall:.1f} s "
          f"({audio_seconds / wall if wall > 0 else 0:.1f}x real time)", file=sys.stderr)
    return 1 if failures else 0


def _on_ray(args: argparse.Namespace, files: list[Path], problems: list[str], options: dict, formats: list[str],
            output_dir: Path, subtitles: SubtitleOptions) -> int:
    """`transcribe --ray`: the files on a Ray cluster (`distributed.run_corpus`)."""
    from .distributed import CorpusJob, run_corpus

    if args.backend != "max" or args.batch_size is not None:
        raise WhisperError("--ray runs the max backend's sequential loop: no --backend other than max, no --batch-size")
    if args.ray and Path(args.ray).exists():
        raise WhisperError(f"--ray takes a cluster address, got the path {args.ray}: put --ray after the inputs, "
                           "or write --ray=ADDRESS")
    # the workers run elsewhere (other folders, other machines): local paths go to them absolute
    model = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    compiled = tuple(str(Path(d).resolve()) for d in compiled_dirs(args) or ()) or None
    job = CorpusJob(model=model, device=args.device, dtype=_dtype(args), options=options, compiled=compiled,
                    files_at_once=args.files_at_once or 8, workers=args.workers)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    summary = run_corpus(files, job, output_dir, formats, subtitles, address=args.ray or None)
    print(summary.line(), file=sys.stderr)
    return 1 if problems or summary.failed else 0


def _dtype(args: argparse.Namespace) -> str:
    """--dtype, or openai-whisper's --fp16 where given: float16 on a GPU; the CPU engine runs float32 only."""
    if args.fp16 is None:
        return args.dtype
    if args.fp16 and args.device == "cpu" and args.backend == "max":
        raise WhisperError("--fp16: the CPU engine runs float32; pass --fp16 False (or nothing) on the CPU")
    return "float16" if args.fp16 and args.device == "gpu" else "float32"


def check_writable(folder: Path) -> None:
    """Fail now, not after hours of transcribing, when output files cannot be written into `folder`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise WhisperError(f"{folder}: cannot write output files there ({e.strerror or e})") from None


def _counting_files(done, total: int):
    """The results as they come, under a progress bar over files (files at once have no bar each)."""
    progress = Progress("files", unit="files")
    try:
        for i, item in enumerate(done):
            progress.bar.clear()  # the result is printed next
            yield item
            progress(i + 1, total)
    finally:
        progress.close()


def _one_by_one(model: Backend, files: list[Path],
                options: dict) -> Iterator[tuple[Path, np.ndarray | None, dict | WhisperError]]:
    """(path, audio, result or WhisperError) for each file, transcribed in turn with a progress bar."""
    for path in files:
        progress = Progress(path.name)
        done: tuple[Path, np.ndarray | None, dict | WhisperError]
        try:
            audio = load_audio(path)
            done = path, audio, model.transcribe(audio, on_progress=progress, **options)
        except Exception as e:  # noqa: BLE001  (any failure of one file is reported in one line; the next goes on)
            done = path, None, file_error(path, e)
        finally:
            progress.close()
        yield done


def cmd_serve(args: argparse.Namespace) -> int:
    from .backends import load_model
    from .server import ServerOptions, serve

    if args.max_upload_mb <= 0:
        raise WhisperError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    start = time.perf_counter()
    from .runtime.device import decoding_rows

    model = load_model(args.model, device=args.device, dtype=args.dtype, compiled=compiled_dirs(args),
                       rows=decoding_rows(args.max_batch))
    print(f"loaded {args.model} on {args.device} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    serve(model, ServerOptions(model_name=str(args.model), max_upload_mb=args.max_upload_mb,
                               max_batch=args.max_batch, max_queue=args.max_queue, max_streams=args.max_streams,
                               **silence_option(args.silence_threshold_db)), args.host, args.port)
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    from .backends import load_model
    from .engine import WhisperModel
    from .streaming import StreamingOptions, StreamingTranscriber, StreamUpdate, paced, pcm_chunks, replay, run
    from .transcribe import TranscribeOptions

    options = TranscribeOptions.from_kwargs(language=language_code(args.language) if args.language else None,
                                            vad_filter=args.vad_filter, temperature=0.0)  # see StreamingTranscriber
    audio = None if args.input == "-" else load_audio(Path(args.input))
    model = load_model(args.model, device=args.device, dtype=args.dtype, compiled=compiled_dirs(args))
    assert isinstance(model, WhisperModel)  # the max backend
    streaming = StreamingOptions.for_device(not model.session.on_host, args.min_chunk, args.agreement)
    transcriber = StreamingTranscriber(model, options, streaming)
    tentative = sys.stderr.isatty()

    def show(update: StreamUpdate) -> None:
        if tentative:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        if update.committed:
            start, end = update.committed[0]["start"], update.committed[-1]["end"]
            print(f"[{format_timestamp(start)} --> {format_timestamp(end)}] {update.committed_text.strip()}", flush=True)
        if tentative and update.tentative:
            print(f"\033[2m{update.tentative_text.strip()[-150:]}\033[0m", end="", file=sys.stderr, flush=True)

    try:
        if audio is None:
            run(transcriber, pcm_chunks(sys.stdin.buffer), show)
        elif args.speed > 0:
            run(transcriber, paced(audio, args.speed), show)
        else:
            replay(transcriber, audio, show)
    except KeyboardInterrupt:  # the usual way to end a live session: what was heard is still committed
        show(transcriber.finish())
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from max import driver

    if args.cpu_target:
        driver.set_virtual_cpu_target(args.cpu_target)
    if args.gpu_arch:
        if args.device != "gpu":
            raise WhisperError("--gpu-arch needs --device gpu")
        driver.set_virtual_device_api("cuda")
        driver.set_virtual_device_target_arch(args.gpu_arch)
        driver.set_virtual_device_count(1)
    from .runtime import compile_graphs
    from .models import load_checkpoint

    if (args.out / "manifest.json").exists():
        raise WhisperError(f"{args.out}: already holds compiled graphs; choose an empty folder")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    timings = compile_graphs(load_checkpoint(args.model), args.device, args.dtype, str(args.out))
    for name, seconds in timings.compile.items():
        print(f"{name}: {seconds:.1f} s", file=sys.stderr)
    print(f"compiled {args.model} for {args.device} into {args.out} in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import ALIASES, available_models, where

    for name in available_models():
        print(f"{name:20s} {'= ' + ALIASES[name] if name in ALIASES else where(name)}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.run(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(openai_spellings(sys.argv[1:] if argv is None else argv))
    commands = {"transcribe": cmd_transcribe, "bench": cmd_bench, "serve": cmd_serve, "live": cmd_live,
                "compile": cmd_compile, "models": cmd_models}
    try:
        return commands[args.command](args)
    except WhisperError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (the last resort: one line, not a traceback)
        if os.environ.get("MAX_WHISPER_TRACEBACK"):
            traceback.print_exc()
        print(f"error: {describe(e)} (set MAX_WHISPER_TRACEBACK=1 to see where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
