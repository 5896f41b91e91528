"""Compile the default model's graphs for each shipped target and store them, xz-compressed, in the package
(src/max_whisper/assets/compiled/<target>-max-<version>/). Run after any change to the graphs;
tests/test_shipped.py fails until the shipped graphs are what the code builds. No GPU is needed.

    python scripts/ship_compiled.py                   # every CPU level and GPU architecture
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

from max_whisper.shipped import CPU_LEVELS, GPU_ARCHS, GPU_HOST_LEVEL, SHIPPED


def ship(target: str) -> None:
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
    for target in sys.argv[1:] or [*CPU_LEVELS, *GPU_ARCHS]:
        ship(target)
