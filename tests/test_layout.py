"""The package's shape: importing it loads the engine, not the peers, the bench harness or the front ends."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("max_whisper.bench", "max_whisper.backends.peers", "max_whisper.cli", "max_whisper.server",
         "max_whisper.distributed", "ray", "pyarrow", "torch", "whisper", "transformers", "faster_whisper", "ctranslate2", "fastapi")


def test_importing_the_package_loads_no_peer_bench_or_front_end():
    code = f"import sys, max_whisper; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
