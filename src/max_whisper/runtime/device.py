"""The MAX device a model runs on, and arrays to and from it."""

from __future__ import annotations

import os

import numpy as np
from max import driver
from max.dtype import DType

from ..errors import WhisperError

DEVICES = ("cpu", "gpu")
DTYPES = {"float32": DType.float32, "float16": DType.float16}
GPU_MEMORY_PERCENT = 10  # default cap on MAX's GPU memory pool; the environment variable overrides it


def resolve_device(device: str) -> driver.Device:
    if device == "cpu":
        return driver.CPU()
    if device in ("gpu", "cuda"):
        # Recording a step (Model.capture) makes MAX's memory pool take most of the GPU unless capped
        # (74 of 80 GB on an H100; the model needs about 1-3 GB). Set before the first GPU context.
        os.environ.setdefault("MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE_PERCENT", str(GPU_MEMORY_PERCENT))
        if driver.accelerator_count() == 0:
            raise WhisperError("device 'gpu' requested but MAX finds no GPU on this machine")
        return driver.Accelerator()
    raise WhisperError(f"unknown device '{device}': use cpu or gpu")


def resolve_dtype(dtype: str, device: driver.Device) -> DType:
    if dtype not in DTYPES:
        raise WhisperError(f"unsupported dtype '{dtype}': use float32 or float16")
    if dtype != "float32" and device.is_host:
        raise WhisperError(f"dtype {dtype} needs device gpu; the CPU engine runs float32")
    return DTYPES[dtype]


def cast(array: np.ndarray, dtype: DType) -> np.ndarray:
    """A fresh, aligned copy: checkpoint arrays can be views at odd offsets of a file buffer."""
    return np.array(array, dtype=dtype.to_numpy(), order="C", copy=True)


def to_device(array: np.ndarray, device: driver.Device) -> driver.Buffer:
    return driver.Buffer.from_numpy(np.ascontiguousarray(array)).to(device)


def to_host(buffer: driver.Buffer, device: driver.Device) -> np.ndarray:
    """A device buffer as a float32 numpy array on the host."""
    host = buffer if device.is_host else buffer.to(driver.CPU())
    return host.to_numpy().astype(np.float32, copy=False)
