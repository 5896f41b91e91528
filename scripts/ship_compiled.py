"""Compile the default model's CPU graphs for each shipped CPU target and store them, xz-compressed, in the
package (src/max_whisper/assets/compiled/<target>-max-<version>/). Run after any change to the graphs;
tests/test_shipped.py fails until the shipped graphs are what the code builds.

    python scripts/ship_compiled.py            # every target in max_whisper.shipped.CPU_LEVELS
    python scripts/ship_compiled.py x86-64-v4  # one
"""

from __future__ import annotations

import lzma
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from max_whisper.shipped import CPU_LEVELS, SHIPPED


def ship(target: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "graphs"
        subprocess.run([sys.executable, "-m", "max_whisper.cli", "compile", str(out), "--cpu-target", target], check=True)
        dest = SHIPPED / f"{target}-max-{version('max')}"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for mef in out.glob("*.mef"):
            with open(mef, "rb") as src, lzma.open(dest / f"{mef.name}.xz", "wb", preset=9) as packed:
                shutil.copyfileobj(src, packed)
        shutil.copy(out / "manifest.json", dest / "manifest.json")
    print(f"{target}: {sum(f.stat().st_size for f in dest.iterdir()) / 1e6:.1f} MB in {dest}")


if __name__ == "__main__":
    for target in sys.argv[1:] or list(CPU_LEVELS):
        ship(target)
