"""Two versions of the code, alternating, on the same machine: `max-whisper bench` of the max backend run
with each version's `src` folder first on PYTHONPATH, round after round (A B A B ...), so that drift of the
machine falls on both.

    python -m benchmarks.investigations.versions_ab --a OLD/src --b NEW/src --device gpu --rounds 2 \\
        --output OUT [--files-at-once 16]

Per round and version: the lecture alone (median of --runs), and with --files-at-once N the lecture given N
times, one by one and N at a time. Writes each bench's folder under OUT/<round>-<version>/ and prints a table
of medians; OUT/versions_ab.json holds them all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import add_output_arg, add_speech_arg, command, machine, parser, write_json


def bench(src: Path, args, audio: list[Path], out: Path, extra: list[str]) -> dict:
    """One `max-whisper bench` of the max backend with `src` first on the path; its rows by batching."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "max_whisper.cli", "bench", *map(str, audio), "--backends", "max", "--devices",
           args.device, "--runs", str(args.runs), "--output", str(out), *extra]
    subprocess.run(cmd, env=env, check=True)
    rows = json.loads((out / "bench.json").read_text())["rows"]
    return {r["batching"] or "one by one": {"median_s": r["median_s"], "min_s": r["min_s"],
                                            "wer_percent": r.get("wer_percent"), "texts": r["texts"]} for r in rows}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--a", type=Path, required=True, help="the first version's src folder")
    p.add_argument("--b", type=Path, required=True, help="the second version's src folder")
    p.add_argument("--device", default="gpu", choices=("cpu", "gpu"))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--files-at-once", type=int, default=None, metavar="N")
    add_speech_arg(p)
    add_output_arg(p)
    args = p.parse_args()
    lecture = args.speech / "lecture.flac"
    results: dict[str, list] = {"a": [], "b": []}
    for round_ in range(args.rounds):
        for name, src in (("a", args.a), ("b", args.b)):
            one = bench(src, args, [lecture], args.output / f"{round_}-{name}", [])
            many = {}
            if args.files_at_once:
                many = bench(src, args, [lecture] * args.files_at_once, args.output / f"{round_}-{name}-files",
                             ["--files-at-once", str(args.files_at_once)])
            results[name].append({"lecture": one, "files": many})
    write_json(args.output / "versions_ab.json", {"machine": machine(), "command": command(), "a_src": str(args.a),
                                                  "b_src": str(args.b), **results})
    print("| round | version | lecture median s | N files one by one s | N files at once s | texts = version a's |")
    print("| --- | --- | --- | --- | --- | --- |")
    nan = {"median_s": float("nan"), "texts": None}
    for round_ in range(args.rounds):
        for name in ("a", "b"):
            r, a = results[name][round_], results["a"][round_]
            cells = [r["lecture"]["one by one"], r["files"].get("one by one", nan),
                     next((v for k, v in r["files"].items() if k != "one by one"), nan)]
            same = [c["texts"] for c in cells] == [a["lecture"]["one by one"]["texts"],
                                                   a["files"].get("one by one", nan)["texts"],
                                                   next((v for k, v in a["files"].items() if k != "one by one"), nan)["texts"]]
            print(f"| {round_} | {name} | " + " | ".join(f"{c['median_s']:.3f}" for c in cells) + f" | {same} |")


if __name__ == "__main__":
    main()
