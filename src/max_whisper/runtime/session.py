"""One checkpoint's graphs on one device: each compiled once (or loaded ready-made), bound to the weights,
and run with its time measured."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from max import driver
from max.dtype import DType
from max._mlir_context import in_default_mlir_context  # MAX's own helper: MLIR's context is per thread
from max.engine import ArtifactBodyMismatch, InferenceSession, MefStore, MissingArtifactError, Model
from max.graph import DeviceRef, Graph

from ..errors import WhisperError
from ..graph import BUILDERS, GraphWeights
from ..graph.layers import FLOAT32_COPY, FLOAT32_WEIGHTS
from ..weights import Checkpoint
from .device import DEFAULT_ROWS, cast, gpu_memory_bytes, resolve_device, resolve_dtype, to_device, to_host
from .shipped import shipped_folders, shipped_target


@dataclass
class Timings:
    """Seconds spent compiling and inside MAX graph execution, per graph."""

    compile: dict[str, float] = field(default_factory=dict)
    execute: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.execute[name] = self.execute.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1


class GraphSession:
    """Compiles, loads and runs one checkpoint's graphs (`graph.BUILDERS`) on one device.

    `compiled`: folders of graphs compiled ahead of time (`max-whisper compile`), used instead of compiling
    here; each must hold exactly the graphs this code builds. `export_to`: a folder to write the compiled
    graphs to. Without either, graphs shipped in the package for this device are used where they hold what
    is built here (see `shipped`), and the others are compiled (MAX caches them on disk). `rows`: the most
    decoding rows run at once, which sizes the GPU memory (`device.gpu_memory_bytes`).
    """

    def __init__(self, ckpt: Checkpoint, device: str = "cpu", dtype: str = "auto",
                 compiled: list[str] | None = None, export_to: str | None = None, rows: int = DEFAULT_ROWS):
        self.dims = ckpt.dims
        self.dtype = resolve_dtype(dtype, device, ckpt.dims)
        self.device = resolve_device(device, gpu_memory_bytes(ckpt.dims, self.dtype, rows) if device != "cpu" else None)
        self.device_ref = DeviceRef.from_device(self.device)
        self.state = {k: cast(v, self.dtype) for k, v in ckpt.state.items()}  # lives as long as the models
        if self.dtype != DType.float32:
            self.state.update({k + FLOAT32_COPY: cast(ckpt.state[k], DType.float32) for k in FLOAT32_WEIGHTS})
        for folder in compiled or []:
            if not (Path(folder) / "manifest.json").is_file():
                raise WhisperError(f"{folder}: not a folder written by `max-whisper compile` (no manifest.json)")
        self.session = InferenceSession(devices=[self.device], export_mefs=export_to)
        self._compiled = MefStore.for_import(compiled, verify_body=True) if compiled else None
        shipped = shipped_folders(shipped_target(self.device), ckpt.dims) if not compiled and not export_to else []
        self._shipped = MefStore.for_import(shipped, verify_body=True) if shipped else None
        self.timings = Timings()
        self.sources: dict[str, str] = {}  # graph -> "compiled" (here), "--compiled" or "shipped"
        self._constants: dict[tuple, driver.Buffer] = {}  # small inputs reused by every call

    @property
    def on_host(self) -> bool:
        return self.device.is_host

    @in_default_mlir_context  # a graph built later in another thread (the server's engine thread) needs it
    def build(self, name: str, device: DeviceRef | None = None, **options) -> tuple[Graph, GraphWeights]:
        """One of BUILDERS' graphs for this checkpoint and dtype, on this device (or `device`: graphs for
        another device can be built, not run), and the weights it uses."""
        device = device or self.device_ref
        w = GraphWeights(self.state, self.dtype, device)
        return BUILDERS[name](self.dims, w, self.dtype, device, **options), w

    @in_default_mlir_context
    def load(self, name: str, **options) -> Model:
        """The graph `name` (built with `options`), compiled here or imported ready-made, with the weights bound."""
        start = time.perf_counter()
        graph, w = self.build(name, **options)
        artifact = None
        if self._compiled is not None:
            try:
                artifact = self._compiled.claim_import(graph)
            except (MissingArtifactError, ArtifactBodyMismatch) as e:
                raise WhisperError(f"--compiled: no compiled {name} graph for this model, device and version "
                                   f"of max-whisper ({type(e).__name__}); run `max-whisper compile` again") from None
        elif self._shipped is not None:
            try:
                artifact = self._shipped.claim_import(graph)
            except (MissingArtifactError, ArtifactBodyMismatch):
                pass  # not shipped (another model or dtype): compiled below, like any graph
        if artifact is not None:
            model = self.session.init(self.session.compile(artifact), weights_registry=w.registry())
        else:
            model = self.session.load(graph, weights_registry=w.registry())
        self.sources[name] = "--compiled" if self._compiled else "shipped" if artifact else "compiled"
        self.timings.compile[name] = time.perf_counter() - start
        return model

    def run(self, name: str, model: Model, *args) -> list:
        """Execute `model` (the graph `name`) to completion, timed."""
        start = time.perf_counter()
        out = model.execute(*args)
        self.synchronize()  # GPU work is asynchronous: time it to completion
        self.timings.add(name, time.perf_counter() - start)
        return out

    def synchronize(self) -> None:
        if not self.device.is_host:
            self.device.synchronize()

    def to_device(self, array: np.ndarray) -> driver.Buffer:
        return to_device(array, self.device)

    def to_host(self, buffer: driver.Buffer) -> np.ndarray:
        """A device buffer as a float32 numpy array on the host."""
        return to_host(buffer, self.device)

    def constant(self, key: tuple, make: Callable[[], np.ndarray]) -> driver.Buffer:
        """A read-only graph input on the device, uploaded once per distinct `key`."""
        if key not in self._constants:
            self._constants[key] = self.to_device(make())
        return self._constants[key]
