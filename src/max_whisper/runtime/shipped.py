"""Compiled graphs shipped in the package, so that a first run loads them instead of compiling for minutes.

`max-whisper compile --cpu-target T [--device gpu --gpu-arch A]` writes MAX artifacts (MEF files and a
manifest) for a CPU family or a GPU architecture; the package holds such folders for the default model
(assets/compiled/<target>-max-<version>/, each MEF xz-compressed; `scripts/ship_compiled.py` makes them),
and, in subfolders named <architecture>-<dtype>, the graphs of other architectures (graphs hold no weights:
they serve every checkpoint of that shape). On first use the folders for the device, and the best level
this CPU runs, are unpacked into the user's cache. They are a cache: a graph they do not hold (another
model, dtype or device) is compiled as usual, and tests/test_shipped.py checks they hold exactly what this
code builds.
"""

from __future__ import annotations

import lzma
import platform
import shutil
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path

from ..models import ARCHITECTURES, cache_folder
from ..weights import ModelDimensions

SHIPPED = Path(__file__).parent.parent / "assets" / "compiled"

# x86-64 micro-architecture levels, best first, and the CPU flags (as Linux names them) each needs.
_V3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
CPU_LEVELS = {
    "x86-64-v4": _V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
    "x86-64-v3": _V3,
}


def cpu_target(cpuinfo: str | None = None) -> str | None:
    """The best shipped CPU target this machine runs, or None (not x86-64 Linux, or too old a CPU)."""
    if cpuinfo is None:
        if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
            return None
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return next((level for level, needed in CPU_LEVELS.items() if needed <= set(flags)), None)


# Shipped GPU graphs also hold host code, compiled for the most portable CPU level shipped.
GPU_HOST_LEVEL = "x86-64-v3"
# GPU architectures compiled for (`--gpu-arch`), and the names MAX gives the devices each runs on.
GPU_ARCHS = {"sm_90": ("sm_90", "sm_90a")}  # NVIDIA Hopper (H100, H200)


def shipped_target(device) -> str | None:
    """The shipped folder's target for a MAX device on this machine: a CPU level, or `<gpu arch>-<level>`."""
    level = cpu_target()
    if level is None or device.is_host:
        return level
    arch = next((arch for arch, names in GPU_ARCHS.items() if device.architecture_name in names), None)
    return f"{arch}-{GPU_HOST_LEVEL}" if arch else None


def cache_root() -> Path:
    return cache_folder("compiled") / f"max-{version('max')}"


def shipped_folder(target: str | None) -> Path | None:
    """The unpacked folder of the default model's graphs shipped for `target`, unpacking it on first use;
    None if none ships."""
    if target is None:
        return None
    return _unpacked(SHIPPED / f"{target}-max-{version('max')}", cache_root() / target)


def shipped_folders(target: str | None, dims: ModelDimensions) -> list[Path]:
    """The unpacked folders of graphs shipped for `target` that can serve a model of `dims`: the default
    model's, and the set of the architecture of that shape if one ships (sets of other shapes stay packed:
    two sets could hold graphs of one name and signature with different bodies)."""
    main = shipped_folder(target)
    if main is None:
        return []
    sets = sorted(p.parent for p in (SHIPPED / f"{target}-max-{version('max')}").glob("*/manifest.json")
                  if ARCHITECTURES.get(p.parent.name.rsplit("-", 1)[0]) == dims)
    unpacked = (_unpacked(source, main.parent / f"{target}-{source.name}") for source in sets)
    return [main, *(folder for folder in unpacked if folder is not None)]


def _unpacked(source: Path, dest: Path) -> Path | None:
    if not (source / "manifest.json").is_file():
        return None
    manifest = (source / "manifest.json").read_text()
    if (dest / "manifest.json").is_file() and (dest / "manifest.json").read_text() == manifest:
        return dest
    try:
        _unpack(source, dest, manifest)
    except OSError as e:  # e.g. a read-only home: the graphs are compiled instead, as without shipped ones
        warnings.warn(f"cannot unpack the shipped compiled graphs into {dest} ({e}); compiling them instead")
        return None
    return dest if (dest / "manifest.json").is_file() else None


def _unpack(source: Path, dest: Path, manifest: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Unpack beside the destination and rename, so a concurrent or interrupted run never sees half a folder.
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        for packed in source.glob("*.mef.xz"):
            with lzma.open(packed) as src, open(staging / packed.name[:-3], "wb") as out:
                shutil.copyfileobj(src, out)
        (staging / "manifest.json").write_text(manifest)  # last: a folder with a manifest is complete
        shutil.rmtree(dest, ignore_errors=True)
        try:
            staging.rename(dest)
        except OSError:  # another process put it there first
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
