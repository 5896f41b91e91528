"""What word timestamps cost: the lecture transcribed with and without `word_timestamps`, alternating, in one
process, the alignment graph compiled before timing (its compile time reported apart).

    python -m benchmarks.suite.word_cost --device cpu --runs 3 [--batch-size 16] [--output DIR]

Greedy, temperature 0 (no fallback), float32. With --batch-size, the throughput mode (`batch_size`) is timed
too. With --check-cpu (for --device gpu), the sequential loop's words on the audio and on every short clip
in tests/speech are compared with the CPU engine's (float32): the same words, and the largest and median gap
of their times. Prints JSON (and writes
word_cost.json to --output where given).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SPEECH, add_model_args, command, load, machine, parser, timed, write_json
import max_whisper as mw
from max_whisper import load_audio


def compare_words(ours: dict, cpu: dict) -> dict:
    a = [w for s in ours["segments"] for w in s["words"]]
    b = [w for s in cpu["segments"] for w in s["words"]]
    same = [w["word"] for w in a] == [w["word"] for w in b]
    report: dict = {"words": len(a), "cpu_words": len(b), "same_words": same, "same_text": ours["text"] == cpu["text"]}
    if not same:  # where the two transcripts part
        at = next(i for i, (x, y) in enumerate(zip(a + [{}], b + [{}])) if x.get("word") != y.get("word"))
        report.update(first_difference=at, words_here=[w["word"] for w in a[at - 3:at + 4]],
                      cpu_words_there=[w["word"] for w in b[at - 3:at + 4]])
    if same:
        gaps = np.abs(np.array([[w["start"], w["end"]] for w in a]) - np.array([[w["start"], w["end"]] for w in b]))
        report.update(median_gap_s=float(np.median(gaps)), max_gap_s=float(gaps.max()))
    return report


def main() -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--audio", type=Path, default=SPEECH / "lecture.flac", help="default: the lecture")
    p.add_argument("--runs", type=int, default=3, help="timed runs of each setting, alternating")
    p.add_argument("--batch-size", type=int, default=None, help="also time the throughput mode at this batch")
    p.add_argument("--output", type=Path, default=None, metavar="DIR")
    p.add_argument("--check-cpu", action="store_true", help="compare the words with the CPU engine's")
    args = p.parse_args()
    model = load(args)
    audio = load_audio(args.audio)
    modes = [None] + ([args.batch_size] if args.batch_size else [])
    for batch_size in modes:  # warm-up: every graph compiled and every kernel loaded before timing
        model.transcribe(audio, temperature=0.0, batch_size=batch_size)
    start = time.perf_counter()
    model.transcribe(audio[:16000 * 5], temperature=0.0, word_timestamps=True)
    first_words_s = time.perf_counter() - start

    report: dict = {"command": command(), "machine": machine(), "model": args.model, "device": args.device,
                    "audio": args.audio.name, "settings": "greedy, temperature 0, float32",
                    "alignment_first_call_s": round(first_words_s, 2), "modes": {}}
    for batch_size in modes:
        seconds: dict[bool, list[float]] = {False: [], True: []}
        words = 0
        graph_before = model.session.timings.execute.get("alignment", 0.0)
        for _ in range(args.runs):
            for word_timestamps in (False, True):
                result, [s] = timed(lambda: model.transcribe(audio, temperature=0.0, batch_size=batch_size,
                                                             word_timestamps=word_timestamps), 1)
                seconds[word_timestamps].append(s)
                if word_timestamps:
                    words = sum(len(seg["words"]) for seg in result["segments"])
        without, with_words = statistics.median(seconds[False]), statistics.median(seconds[True])
        name = "sequential" if batch_size is None else f"batch_size {batch_size}"
        report["modes"][name] = {"without_s": [round(s, 3) for s in seconds[False]],
                                 "with_words_s": [round(s, 3) for s in seconds[True]],
                                 "median_ratio": round(with_words / without, 3), "words": words,
                                 "alignment_graph_s_per_run": round(
                                     (model.session.timings.execute.get("alignment", 0.0) - graph_before) / args.runs, 4)}
        print(f"{name}: {without:.3f} s without, {with_words:.3f} s with words "
              f"(x{with_words / without:.3f}, {words} words)", flush=True)
    if args.check_cpu:
        cpu = mw.load_model(args.model, device="cpu")
        report["against_cpu"] = {}
        for path in [args.audio, *sorted(p for p in SPEECH.iterdir() if p.suffix == ".wav")]:
            clip = load_audio(path)
            report["against_cpu"][path.name] = compare_words(
                model.transcribe(clip, temperature=0.0, word_timestamps=True),
                cpu.transcribe(clip, temperature=0.0, word_timestamps=True))
            print(f"{path.name} against the CPU engine:", report["against_cpu"][path.name], flush=True)
    if args.output:
        write_json(args.output / "word_cost.json", report)
    else:
        import json
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
