"""The MAX device a model runs on, and arrays to and from it."""

from __future__ import annotations

import os
import warnings
from typing import TypeAlias

import numpy as np
from max import driver
from max.dtype import DType

from ..errors import WhisperError
from ..weights import ModelDimensions, state_shapes

DEVICES = ("cpu", "gpu")
DTYPES = {"float32": DType.float32, "bfloat16": DType.bfloat16, "float16": DType.float16}
DEFAULT_ROWS = 16  # decoding rows a model is sized for unless told: beam search or best-of 5 on three windows
POOL_VARIABLES = ("MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE", "MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE_PERCENT")


def decoding_rows(windows: int, beam_size: int | None = None, best_of: int | None = None) -> int:
    """The most decoding rows a run holds at once, which sizes the GPU memory: windows decoded together,
    times the rows each can take (its beams, or its best-of samples when temperature falls back; 5 by
    default, as openai-whisper)."""
    return max(DEFAULT_ROWS, windows * max(beam_size or 1, best_of or 5))


_pool_set_here: int | None = None  # the pool size this process set (the first GPU model's)


def resolve_device(device: str, pool_bytes: int | None = None) -> driver.Device:
    """A MAX device by name. On a GPU, MAX's memory pool (everything the graphs allocate, fixed once the first
    GPU context exists, so for the whole process) is `pool_bytes` unless the environment sets it (bytes or
    percent of the GPU, `POOL_VARIABLES`): uncapped, recording a step made it take most of the GPU (74 of
    80 GB on an H100), and MAX 26.7 caps it at a tenth of the GPU by default."""
    global _pool_set_here
    if device == "cpu":
        return driver.CPU()
    if device in ("gpu", "cuda"):
        if pool_bytes is not None and not any(v in os.environ for v in POOL_VARIABLES):
            os.environ[POOL_VARIABLES[0]] = str(pool_bytes)
            _pool_set_here = pool_bytes
        elif pool_bytes is not None and _pool_set_here is not None and pool_bytes > _pool_set_here:
            warnings.warn(f"this model needs a GPU memory pool of {pool_bytes / 1e9:.1f} GB, but the process's was "
                          f"sized for its first model ({_pool_set_here / 1e9:.1f} GB); set {POOL_VARIABLES[0]} "
                          "to run both")
        if driver.accelerator_count() == 0:
            raise WhisperError("device 'gpu' requested but MAX finds no GPU on this machine")
        return driver.Accelerator()
    raise WhisperError(f"unknown device '{device}': use cpu or gpu")


def recorded_batches(rows: int) -> list[int]:
    """The batch sizes the recorded steps run up to `rows` rows on: 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (2^k and
    3 * 2^(k-1)), each keeping its own buffers (`decoders.StepSlot`)."""
    sizes, power = [1, 2], 4
    while sizes[-1] < rows:
        sizes += [3 * power // 4, power]
        power *= 2
    return [n for n in sizes if n < rows] + [next(n for n in sizes if n >= rows)]


def gpu_memory_bytes(dims: ModelDimensions, dtype: DType, rows: int = DEFAULT_ROWS) -> int:
    """What a model needs on the GPU to decode up to `rows` rows at once: its weights, each recorded batch
    size's self-attention cache and cross-attention keys and values (the values twice: `cross_kv_for_steps`)
    plus one more set in flight, and the encoder's activations for `rows` windows (its attention scores
    where they are written out, in float32); 1.5 times that, for the graphs' other temporaries."""
    size = dtype.size_in_bytes
    weights = sum(int(np.prod(shape)) for shape in state_shapes(dims).values()) * size
    if dtype != DType.float32:  # the float32 copy of the token embedding (graph.layers.FLOAT32_WEIGHTS)
        weights += dims.n_vocab * dims.n_text_state * 4
    per_row = dims.n_text_layer * dims.n_text_state * size * (2 * dims.n_text_ctx + 3 * dims.n_audio_ctx)
    buffered_rows = sum(recorded_batches(rows)) + rows
    activations = rows * dims.n_audio_ctx * 8 * dims.n_audio_state * size
    if dtype != DType.bfloat16:  # no flash attention: [rows, heads, 1500, 1500] scores
        activations += rows * dims.n_audio_head * dims.n_audio_ctx ** 2 * 4
    return int(1.5 * (weights + buffered_rows * per_row + activations))


def resolve_dtype(dtype: str, device: str, dims: ModelDimensions) -> DType:
    """A dtype by name for a model on a device ("cpu" or "gpu"). "auto": float32 on the CPU (its only
    dtype); on a GPU bfloat16 for models of width 1024 and more (encoder 7.1 against 93.9 ms per window on a
    large-v3-turbo shape), float32 below (tiny.en in bfloat16 changed 12 of 16 short-clip decodes);
    docs/measurements.md, "Every model at its best precision"."""
    if dtype == "auto":
        return DType.bfloat16 if device != "cpu" and dims.n_audio_state >= 1024 else DType.float32
    if dtype not in DTYPES:
        raise WhisperError(f"unsupported dtype '{dtype}': use auto, {', '.join(DTYPES)}")
    if dtype != "float32" and device == "cpu":
        raise WhisperError(f"dtype {dtype} needs device gpu; the CPU engine runs float32")
    return DTYPES[dtype]


HostArray: TypeAlias = "np.ndarray | driver.Buffer"  # bfloat16: a MAX buffer (numpy has no such dtype)


def cast(array: np.ndarray, dtype: DType) -> HostArray:
    """A fresh, aligned copy in `dtype` (checkpoint arrays can be views at odd offsets of a file buffer);
    bfloat16, which numpy lacks, as a MAX host buffer, rounded to nearest even as torch rounds."""
    if dtype != DType.bfloat16:
        return np.array(array, dtype=dtype.to_numpy(), order="C", copy=True)
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    return driver.Buffer.from_numpy(rounded).view(DType.bfloat16)


def to_device(array: HostArray, device: driver.Device) -> driver.Buffer:
    host = array if isinstance(array, driver.Buffer) else driver.Buffer.from_numpy(np.ascontiguousarray(array))
    return host.to(device)


def to_host(buffer: driver.Buffer, device: driver.Device) -> np.ndarray:
    """A device buffer as a float32 numpy array on the host."""
    host = buffer if device.is_host else buffer.to(driver.CPU())
    if host.dtype == DType.bfloat16:
        return (host.view(DType.uint16).to_numpy().astype(np.uint32) << 16).view(np.float32)
    return host.to_numpy().astype(np.float32, copy=False)
