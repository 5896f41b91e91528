"""Compile the default model's graphs for each shipped target and store them, xz-compressed, in the package
(src/max_whisper/assets/compiled/<target>-max-<version>/). Run after any change to the graphs;
tests/test_shipped.py fails until the shipped graphs are what the code builds. No GPU is needed.

A CPU level is compiled on a machine of exactly that level: MAX 26.7 compiling for x86-64-v3 on an AVX-512
host wrote a set that runs but computes wrong values on an AVX2-only CPU (tiny.en's encoder off by up to 15;
jfk.wav transcribed "And..."), and tests/test_shipped.py runs every set the CPU it runs on can run.

    python scripts/ship_compiled.py                   # this machine's CPU level and every GPU architecture
    python scripts/ship_compiled.py x86-64-v4 sm_90   # some
"""

from __future__ import annotations

import lzma
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from max_whisper.runtime.shipped import CPU_LEVELS, GPU_ARCHS, GPU_HOST_LEVEL, SHIPPED, cpu_target


def ship(target: str) -> None:
    if target in CPU_LEVELS and target != cpu_target():
        sys.exit(f"{target}: compile it on a machine of that level (this one is {cpu_target()}); see the docstring")
    if target in GPU_ARCHS:
        folder, options = f"{target}-{GPU_HOST_LEVEL}", ["--device", "gpu", "--gpu-arch", target, "--cpu-target", GPU_HOST_LEVEL]
    else:
        folder, options = target, ["--cpu-target", target]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "graphs"
        subprocess.run([sys.executable, "-m", "max_whisper.cli", "compile", str(out), *options], check=True)
        pack(out, folder)


def pack(graphs: Path, folder: str) -> None:
    """Store a `max-whisper compile` folder in the package as `folder`."""
    dest = SHIPPED / f"{folder}-max-{version('max')}"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for mef in graphs.glob("*.mef"):
        with open(mef, "rb") as src, lzma.open(dest / f"{mef.name}.xz", "wb", preset=9) as packed:
            shutil.copyfileobj(src, packed)
    shutil.copy(graphs / "manifest.json", dest / "manifest.json")
    print(f"{folder}: {sum(f.stat().st_size for f in dest.iterdir()) / 1e6:.1f} MB in {dest}")


if __name__ == "__main__":
    for target in sys.argv[1:] or [cpu_target(), *GPU_ARCHS]:
        ship(target)
