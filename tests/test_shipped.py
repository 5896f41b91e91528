"""The compiled graphs shipped in the package: chosen by CPU, and exactly what this code builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version

import pytest
from max.engine import MefStore
from max.graph import DeviceRef

from max_whisper.runtime.shipped import CPU_LEVELS, GPU_ARCHS, GPU_HOST_LEVEL, SHIPPED, cpu_target, shipped_folder, shipped_target

V3_FLAGS = "fpu sse4_2 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
V4_FLAGS = V3_FLAGS + " avx512f avx512bw avx512cd avx512dq avx512vl"
CPU_GRAPHS = ("encoder", "cross_kv", "decoder", "decoder_row", "reorder")  # what `max-whisper compile` writes for the CPU
# the GPU records steps (tiny's batches of a few rows in the row form), has no single-row graph
GPU_GRAPHS = ("encoder", "cross_kv_for_steps", "decoder", "decoder_step", "decoder_step_rows", "reorder")
ARCHITECTURE_GRAPHS = tuple(g for g in GPU_GRAPHS if g != "decoder_step_rows")  # 16-bit sets: no row-form steps
needs_shipped_cpu = pytest.mark.skipif(cpu_target() is None, reason="this CPU runs none of the shipped targets")


def test_cpu_target_from_flags():
    assert cpu_target(f"processor\t: 0\nflags\t\t: {V4_FLAGS}\n") == "x86-64-v4"
    assert cpu_target(f"flags\t\t: {V3_FLAGS}\n") == "x86-64-v3"
    assert cpu_target(f"flags\t\t: {V3_FLAGS.replace(' avx2', '')}\n") is None  # no AVX2: nothing shipped fits
    assert cpu_target("processor\t: 0\n") is None


@needs_shipped_cpu
def test_gpu_target_by_architecture():
    """GPU graphs compiled for sm_90 serve devices MAX names sm_90 or sm_90a; other GPUs compile their own."""

    class Device:  # the two attributes of max.driver.Accelerator that choose a target
        is_host = False

        def __init__(self, arch):
            self.architecture_name = arch

    assert shipped_target(Device("sm_90a")) == shipped_target(Device("sm_90")) == f"sm_90-{GPU_HOST_LEVEL}"
    assert shipped_target(Device("sm_80")) is None


@pytest.mark.parametrize("target", [*CPU_LEVELS, *(f"{arch}-{GPU_HOST_LEVEL}" for arch in GPU_ARCHS)])
def test_shipped_graphs_are_what_this_code_builds(tiny, target):
    """Each shipped folder holds the default model's graphs with the bodies this code builds; after a change
    to a graph this fails until `python scripts/ship_compiled.py` is run again."""
    folder = SHIPPED / f"{target}-max-{version('max')}"
    manifest = json.loads((folder / "manifest.json").read_text())
    on_gpu = target not in CPU_LEVELS
    names = GPU_GRAPHS if on_gpu else CPU_GRAPHS
    store = MefStore.for_import([folder], verify_body=True)
    for name in names:
        graph, _ = tiny.session.build(name, DeviceRef.GPU() if on_gpu else None)
        artifact = store.claim_import(graph)  # raises ArtifactBodyMismatch for a stale graph
        assert (folder / f"{artifact.name}.xz").is_file()
    assert len(manifest["graphs"]) == len(names)


def architecture_sets() -> list:
    return sorted(p.parent for arch in GPU_ARCHS
                  for p in (SHIPPED / f"{arch}-{GPU_HOST_LEVEL}-max-{version('max')}").glob("*/manifest.json"))


@pytest.mark.parametrize("folder", architecture_sets(), ids=lambda p: p.name)
def test_shipped_architecture_sets_are_what_this_code_builds(folder):
    """Each architecture's set (<name>-<dtype>) holds its GPU graphs with the bodies this code builds, for
    weights of that shape (graphs hold none)."""
    import numpy as np
    from max.dtype import DType

    from max_whisper.graph import BUILDERS, GraphWeights
    from max_whisper.graph.layers import FLOAT32_COPY
    from max_whisper.models import ARCHITECTURES
    from max_whisper.weights import state_shapes

    name, dtype = folder.name.rsplit("-", 1)
    dims, dtype = ARCHITECTURES[name], getattr(DType, dtype)
    shapes = {k: np.broadcast_to(np.float32(0), s) for k, s in state_shapes(dims).items()}  # shapes, no memory
    shapes.update({k + FLOAT32_COPY: v for k, v in shapes.items()})
    store = MefStore.for_import([folder], verify_body=True)
    for graph_name in ARCHITECTURE_GRAPHS:
        graph = BUILDERS[graph_name](dims, GraphWeights(shapes, dtype, DeviceRef.GPU()), dtype, DeviceRef.GPU())
        artifact = store.claim_import(graph)
        assert (folder / f"{artifact.name}.xz").is_file()
    assert len(json.loads((folder / "manifest.json").read_text())["graphs"]) == len(ARCHITECTURE_GRAPHS)


def test_a_model_gets_the_default_set_and_its_own_shape_s_set(tmp_path, monkeypatch):
    """A GPU session imports the default model's graphs and the set of its own architecture, not the others."""
    from max_whisper.models import ARCHITECTURES
    from max_whisper.runtime.shipped import shipped_folders

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    target = f"sm_90-{GPU_HOST_LEVEL}"
    turbo = shipped_folders(target, ARCHITECTURES["large-v3-turbo"])
    assert [p.name for p in turbo] == [target, f"{target}-large-v3-turbo-bfloat16"]
    MefStore.for_import(turbo, verify_body=True)  # the two manifests load as one store
    assert [p.name for p in shipped_folders(target, ARCHITECTURES["tiny.en"])] == [target]


@needs_shipped_cpu
def test_default_model_loads_shipped_graphs(tiny):
    loaded = {name: tiny.session.sources[name] for name in ("encoder", "cross_kv", "decoder", "decoder_row")}  # reorder: on first use
    assert loaded == {name: "shipped" for name in loaded}


@needs_shipped_cpu
def test_first_run_after_install_uses_shipped_graphs(tmp_path):
    """A fresh home (no MAX cache, no unpacked graphs): the sample transcribes from the shipped graphs."""
    target = cpu_target()
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "max_whisper.cli", "transcribe", "--sample"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "ask not what your country can do for you" in proc.stdout
    unpacked = tmp_path / "cache" / "max-whisper" / "compiled" / f"max-{version('max')}" / target
    assert len(list(unpacked.glob("*.mef"))) == len(CPU_GRAPHS)


@needs_shipped_cpu
def test_unwritable_cache_compiles_instead(tmp_path, monkeypatch):
    """Where the cache cannot be written, the shipped graphs are skipped with a warning (compiled as usual)."""
    target = cpu_target()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.warns(UserWarning, match="cannot unpack the shipped compiled graphs"):
        assert shipped_folder(target) is None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert (shipped_folder(target) / "manifest.json").is_file()


RUNNABLE_LEVELS = [level for level in CPU_LEVELS if cpu_target() and
                   list(CPU_LEVELS).index(level) >= list(CPU_LEVELS).index(cpu_target())]


@pytest.mark.parametrize("level", RUNNABLE_LEVELS)
def test_each_shipped_cpu_set_this_cpu_runs_computes_what_openai_whisper_computes(tiny, tiny_ref, speech, level):
    """Run each shipped CPU set this machine can run (its own level and the lower ones), not only the one
    it would pick: a set compiled for another CPU level once gave a wrong encoder (jfk transcribed "And...")."""
    import numpy as np
    import torch
    import whisper

    import max_whisper as mw

    model = mw.WhisperModel(tiny.checkpoint, compiled=[str(shipped_folder(level))])
    assert set(model.session.sources.values()) == {"--compiled"}
    mel = mw.pad_or_trim(mw.log_mel_spectrogram(mw.load_audio(speech / "jfk.wav")), 3000)
    with torch.no_grad():
        theirs = tiny_ref.encoder(torch.from_numpy(mel[None])).numpy()
    assert np.abs(model.session.to_host(model.embed_audio(mel[None])) - theirs).max() < 1e-3
    reference = whisper.decode(tiny_ref, torch.from_numpy(mel), whisper.DecodingOptions(language="en", fp16=False))
    assert model.decode(mel, mw.DecodingOptions(language="en")).tokens == reference.tokens
