"""How much GPU memory MAX's memory pool takes under each setting, and whether the engine still runs in it:
tiny.en (float32, its shipped graphs) transcribes 16 copies of the lecture at once (`files_at_once`), each cut
at another start, so that they end at different times and the recorded steps run at several batch sizes;
each setting in a process of its own.

    python -m benchmarks.investigations.gpu_memory_pool [--speech DIR]

A setting is an environment for the child process: none (the engine sizes the pool), MAX's MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE_PERCENT
(10: the engine's earlier default) or MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE (bytes; "formula": what
`runtime.device.gpu_memory_bytes` asks for tiny.en float32 and 16 rows). Prints JSON lines: the setting,
nvidia-smi's memory for the process after the work, whether it ran, its last error line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from max.dtype import DType

from benchmarks.common import SPEECH, parser
from max_whisper.models import ARCHITECTURES
from max_whisper.runtime.device import gpu_memory_bytes

SETTINGS = [
    {},  # the engine's own sizing (runtime.device.gpu_memory_bytes)
    {"MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE_PERCENT": "10"},
    {"MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE_PERCENT": "1"},
    {"MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE": "formula"},
    {"MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE": str(1 << 29)},
]

CHILD = """
import json, sys
import max_whisper as mw
from benchmarks.common import process_gpu_memory_mb
from max_whisper.batching import transcribe_files
lecture = mw.load_audio(sys.argv[1])
model = mw.load_model("tiny.en", device="gpu", dtype="float32")
starts = [k * 16000 * 7 for k in range(16)]
many = [r for _, _, r in transcribe_files(model, [lecture[s:] for s in starts], 16,
                                          mw.TranscribeOptions.from_kwargs(temperature=0.0))]
print(json.dumps({"gpu_memory_mb": process_gpu_memory_mb(), "failed": sum(isinstance(r, Exception) for r in many),
                  "words": sum(len(r["text"].split()) for r in many if not isinstance(r, Exception))}))
"""


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--speech", type=Path, default=SPEECH)
    p.add_argument("--settings", default=None, help="which SETTINGS to run, by index (default: all), e.g. 0,3")
    args = p.parse_args()
    chosen = [SETTINGS[int(i)] for i in args.settings.split(",")] if args.settings else SETTINGS
    for setting in chosen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER")}
        if setting.get("MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE") == "formula":
            setting = {"MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE": str(gpu_memory_bytes(
                ARCHITECTURES["tiny.en"], DType.float32, rows=16))}
        done = subprocess.run([sys.executable, "-c", CHILD, str(args.speech / "lecture.flac")], env={**env, **setting},
                              capture_output=True, text=True)
        row = {"setting": setting, "ran": done.returncode == 0}
        if done.returncode == 0:
            row.update(json.loads(done.stdout.strip().splitlines()[-1]))
        else:
            row["error"] = (done.stderr.strip().splitlines() or ["?"])[-1][:300]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
