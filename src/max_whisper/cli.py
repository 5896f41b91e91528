"""The `max-whisper` command."""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

from .errors import WhisperError


def sample_path() -> Path:
    """The bundled sample: JFK's inaugural address, 11 s (public domain)."""
    return Path(str(resources.files("max_whisper") / "assets" / "jfk.wav"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="max-whisper", description="Whisper speech recognition on MAX graphs")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe audio files")
    t.add_argument("files", nargs="*", type=Path, help="audio files (any format FFmpeg reads)")
    t.add_argument("--sample", action="store_true", help="transcribe the bundled 11 s sample")
    t.add_argument("--model", default="tiny.en", help="tiny.en, base, or a model folder / .pt file")
    t.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    t.add_argument("--language", default=None, help="language code or name; default: detect")
    t.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    t.add_argument("--beam-size", type=int, default=None)
    t.add_argument("--temperature", type=float, default=None,
                   help="a single sampling temperature (default: 0 with fallback up to 1.0)")
    t.add_argument("--without-timestamps", action="store_true", help="decode without timestamp tokens")
    return parser


def cmd_transcribe(args: argparse.Namespace) -> int:
    from .engine import load_model

    files = list(args.files) + ([sample_path()] if args.sample else [])
    if not files:
        raise WhisperError("no input: give audio files, or --sample")
    options = {"language": args.language, "task": args.task, "beam_size": args.beam_size,
               "without_timestamps": args.without_timestamps}
    if args.temperature is not None:
        options["temperature"] = args.temperature
    start = time.perf_counter()
    model = load_model(args.model, device=args.device)
    print(f"loaded {args.model} on {args.device} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    failures = 0
    for path in files:
        try:
            result = model.transcribe(path, **options)
        except WhisperError as e:
            print(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        print(result["text"].strip())
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return cmd_transcribe(args)
    except WhisperError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
