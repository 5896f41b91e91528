"""Where the CPU time of max and of faster-whisper goes, part by part: the encoder on one 30 s window, and the
greedy decode of that window (its tokens, time per token), each engine in a process of its own.

    python -m benchmarks.investigations.cpu_peer_split --engine max|faster-whisper|faster-whisper:int8
        [--audio tests/speech/lecture.flac] [--windows 4] [--repeats 5] [--rows 4]

The recording's first `--windows` 30 s windows, each log-mel made by the engine's own front end (not timed).
Per window: the encoder alone (median of `--repeats` calls), and a greedy decode at temperature 0 with
timestamps, no prompt (median of `--repeats`, the encoder's median taken off; tokens generated counted).
max's decode is `WhisperModel.decode` (its encoder, then the recorded or one-row steps); faster-whisper's is
CTranslate2's `generate` on the encoder output (what its transcribe loop calls). With `--rows N`, max also
decodes N of the windows together (the throughput mode's batched step): time per token of all rows. Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.common import SPEECH, add_model_args, command, machine, parser, timed
from max_whisper import load_audio
from max_whisper.audio import N_SAMPLES, SAMPLE_RATE, pad_or_trim


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    return statistics.median(timed(call, repeats)[1])


def max_parts(args: argparse.Namespace, windows: list[np.ndarray]) -> tuple[list[dict], dict | None]:
    import max_whisper as mw
    from max_whisper.decoding import DecodingOptions
    from max_whisper.features import log_mel_spectrogram

    model = mw.load_model(args.model, device="cpu", compiled=args.compiled)
    assert isinstance(model, mw.WhisperModel)
    options = DecodingOptions(language="en", temperature=0.0)
    out = []
    for audio in windows:
        mel = log_mel_spectrogram(pad_or_trim(audio), model.dims.n_mels)
        result, seconds = timed(lambda: model.decode(mel, options), args.repeats, warmup=1)
        assert not isinstance(result, list)
        whole = statistics.median(seconds)
        encoder = median_seconds(lambda: model.embed_audio(mel[None]), args.repeats)
        out.append({"encoder_s": encoder, "decode_s": whole - encoder, "tokens": len(result.tokens)})
    batched = None
    if args.rows > 1:  # the throughput mode's step: the windows decoded together, one row each
        mels = np.stack([log_mel_spectrogram(pad_or_trim(a), model.dims.n_mels) for a in windows[: args.rows]])
        results, seconds = timed(lambda: model.decode_windows(mels, options), args.repeats, warmup=1)
        whole = statistics.median(seconds)
        tokens = [len(r.tokens) for r in results]
        encoder = median_seconds(lambda: model.embed_audio(mels), args.repeats)
        batched = {"rows": len(mels), "encoder_s": encoder, "decode_s": whole - encoder, "steps": max(tokens),
                   "tokens": sum(tokens), "decode_ms_per_token": round(1000 * (whole - encoder) / sum(tokens), 3)}
    return out, batched


def faster_whisper_parts(args: argparse.Namespace, windows: list[np.ndarray], compute_type: str) -> list[dict]:
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    from max_whisper.backends.peers import FasterWhisperModel

    fw = FasterWhisperModel(args.model, device="cpu", compute_type=compute_type).model
    tokenizer = Tokenizer(fw.hf_tokenizer, fw.model.is_multilingual, task="transcribe", language="en")
    prompt = fw.get_prompt(tokenizer, [], without_timestamps=False)
    suppressed = get_suppressed_tokens(tokenizer, [-1])
    out = []
    for audio in windows:
        features = fw.feature_extractor(pad_or_trim(audio))[:, :3000]

        def generate(encoded: object) -> object:
            # faster-whisper's own greedy call (generate_with_fallback at temperature 0, beam_size 1)
            return fw.model.generate(encoded, [prompt], beam_size=1, max_length=448, return_scores=True,
                                     return_no_speech_prob=True, suppress_blank=True, suppress_tokens=suppressed,
                                     max_initial_timestamp_index=50)[0]

        result, seconds = timed(lambda: generate(fw.encode(features)), args.repeats, warmup=1)
        whole = statistics.median(seconds)
        encoder = median_seconds(lambda: fw.encode(features), args.repeats)
        out.append({"encoder_s": encoder, "decode_s": whole - encoder, "tokens": len(result.sequences_ids[0])})
    return out


def main() -> None:
    p = parser(__doc__)
    add_model_args(p, devices=("cpu",))
    p.add_argument("--engine", required=True, choices=["max", "faster-whisper", "faster-whisper:int8"])
    p.add_argument("--audio", type=Path, default=SPEECH / "lecture.flac")
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rows", type=int, default=0, help="max: also decode this many of the windows together")
    args = p.parse_args()
    audio = load_audio(args.audio)
    if audio.size < args.windows * N_SAMPLES:
        raise SystemExit(f"{args.audio}: {audio.size / SAMPLE_RATE:.1f} s, under the {args.windows} whole 30 s windows asked for")
    windows = [audio[i * N_SAMPLES:(i + 1) * N_SAMPLES] for i in range(args.windows)]  # whole windows: equal work
    batched = None
    if args.engine == "max":
        parts, batched = max_parts(args, windows)
    else:
        parts = faster_whisper_parts(args, windows, "int8" if args.engine.endswith("int8") else "float32")
    tokens = sum(w["tokens"] for w in parts)
    print(json.dumps({"machine": machine(), "command": command(), "engine": args.engine, "model": args.model, "audio": str(args.audio),
                      "windows": parts, "encoder_s_per_window": round(statistics.median(w["encoder_s"] for w in parts), 4),
                      "decode_ms_per_token": round(1000 * sum(w["decode_s"] for w in parts) / tokens, 3),
                      "tokens": tokens, "batched": batched}))


if __name__ == "__main__":
    main()
