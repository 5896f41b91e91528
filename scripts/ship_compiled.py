"""Compile graphs for each shipped target and store them, xz-compressed, in the package
(src/max_whisper/assets/compiled/<target>-max-<version>/). Run after any change to the graphs;
tests/test_shipped.py fails until the shipped graphs are what the code builds. No GPU is needed.

The default model's graphs go in the target's folder. An architecture's graphs (`--architecture NAME`, in
a dtype) go in its subfolder <NAME>-<dtype>: compiled from zero weights of that shape, since a compiled graph
holds no weights and serves any checkpoint of the shape.

A CPU level is compiled on a machine of exactly that level: MAX 26.7 compiling for x86-64-v3 on an AVX-512
host wrote a set that runs but computes wrong values on an AVX2-only CPU (tiny.en's encoder off by up to 15;
jfk.wav transcribed "And..."), and tests/test_shipped.py runs every set the CPU it runs on can run.

    python scripts/ship_compiled.py                   # this machine's CPU level and every GPU architecture
    python scripts/ship_compiled.py x86-64-v4 sm_90   # some
    python scripts/ship_compiled.py sm_90 --architecture large-v3-turbo --dtype bfloat16
    python scripts/ship_compiled.py sm_90 --architecture large-v3-turbo --dtype bfloat16 --from DIR  # compiled
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from max_whisper.runtime.shipped import CPU_LEVELS, GPU_ARCHS, GPU_HOST_LEVEL, SHIPPED, cpu_target

# The graphs of an architecture's set: what a GPU run loads in 16 bits (the word-timestamp alignment compiles
# on use; float32 models also run `decoder_step_rows` for a few rows).
ARCHITECTURE_GRAPHS = ["encoder", "cross_kv_for_steps", "decoder", "decoder_step", "reorder"]


def ship(target: str) -> None:
    folder, options = _target(target)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "graphs"
        subprocess.run([sys.executable, "-m", "max_whisper.cli", "compile", str(out), *options], check=True)
        pack(out, folder)


def ship_architecture(target: str, name: str, dtype: str, compiled: Path | None) -> None:
    from max_whisper.models import ARCHITECTURES

    if target not in GPU_ARCHS:
        sys.exit(f"{target}: architecture sets ship for GPU targets ({', '.join(GPU_ARCHS)})")
    if name not in ARCHITECTURES:
        sys.exit(f"{name}: not an architecture ({', '.join(ARCHITECTURES)})")
    folder, _ = _target(target)
    with tempfile.TemporaryDirectory() as tmp:
        out = compiled or Path(tmp) / "graphs"
        if compiled is None:
            subprocess.run([sys.executable, __file__, "--compile-shape", name, dtype, str(out), target], check=True)
        pack(out, f"{folder}-max-{version('max')}/{name}-{dtype}", versioned=False)


def compile_shape(name: str, dtype: str, out: str, gpu_arch: str, graphs: str = ",".join(ARCHITECTURE_GRAPHS)) -> None:
    """Compile an architecture's `graphs` (comma-separated) for `gpu_arch` ("attached": this machine's GPU)
    from zero weights (in this process: MAX's virtual device is set before its first use)."""
    import time

    import numpy as np
    from max import driver

    if gpu_arch != "attached":
        driver.set_virtual_device_api("cuda")
        driver.set_virtual_device_target_arch(gpu_arch)
        driver.set_virtual_device_count(1)
        driver.set_virtual_cpu_target(GPU_HOST_LEVEL)
    from max_whisper.models import ARCHITECTURES
    from max_whisper.runtime import GraphSession
    from max_whisper.weights import Checkpoint, state_shapes

    dims = ARCHITECTURES[name]
    zeros = Checkpoint(dims, {k: np.zeros(s, np.float32) for k, s in state_shapes(dims).items()}, None, f"{name} shape")
    session = GraphSession(zeros, device="gpu", dtype=dtype, export_to=out)
    for graph in graphs.split(","):
        start = time.perf_counter()
        session.load(graph)
        print(f"{name} {dtype} {graph}: {time.perf_counter() - start:.0f} s", flush=True)


def _target(target: str) -> tuple[str, list[str]]:
    if target in CPU_LEVELS and target != cpu_target():
        sys.exit(f"{target}: compile it on a machine of that level (this one is {cpu_target()}); see the docstring")
    if target in GPU_ARCHS:
        return f"{target}-{GPU_HOST_LEVEL}", ["--device", "gpu", "--gpu-arch", target, "--cpu-target", GPU_HOST_LEVEL]
    return target, ["--cpu-target", target]


def pack(graphs: Path, folder: str, versioned: bool = True) -> None:
    """Store a folder of compiled graphs (MEFs and their manifest) in the package as `folder`."""
    if not (graphs / "manifest.json").is_file():
        sys.exit(f"{graphs}: no manifest.json (not a folder of compiled graphs)")
    dest = SHIPPED / (f"{folder}-max-{version('max')}" if versioned else folder)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.iterdir():
        if old.is_file():  # architecture sets (subfolders) stay
            old.unlink()
    for mef in graphs.glob("*.mef"):
        with open(mef, "rb") as src, lzma.open(dest / f"{mef.name}.xz", "wb", preset=9) as packed:
            shutil.copyfileobj(src, packed)
    shutil.copy(graphs / "manifest.json", dest / "manifest.json")
    size = sum(f.stat().st_size for f in dest.iterdir() if f.is_file())
    print(f"{folder}: {size / 1e6:.1f} MB in {dest}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compile-shape"]:
        compile_shape(*sys.argv[2:7])
        sys.exit(0)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*", help="CPU levels and GPU architectures (default: this CPU's and every GPU's)")
    p.add_argument("--architecture", help="an architecture's set (models.ARCHITECTURES) instead of the default model")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--from", dest="compiled", type=Path, help="with --architecture: graphs compiled already")
    args = p.parse_args()
    if args.compiled and not args.architecture:
        sys.exit("--from goes with --architecture")
    for target in args.targets or ([*GPU_ARCHS] if args.architecture else [cpu_target(), *GPU_ARCHS]):
        if args.architecture:
            ship_architecture(target, args.architecture, args.dtype, args.compiled)
        else:
            ship(target)
