"""Session fixtures: each MAX graph compiles once per test session (tiny.en, then base)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SPEECH = Path(os.environ.get("MAX_WHISPER_SPEECH", REPO.parent / "shared" / "speech"))


def speech_dir() -> Path:
    if not (SPEECH / "refs.tsv").is_file():
        raise FileNotFoundError(f"test speech not found at {SPEECH}; set MAX_WHISPER_SPEECH")
    return SPEECH


def references() -> dict[str, str]:
    with open(speech_dir() / "refs.tsv", newline="") as f:
        return {row["file"]: row["reference"] for row in csv.DictReader(f, delimiter="\t")}


SHORT_CLIPS = sorted(name for name in references() if name != "lecture.flac")


@pytest.fixture(scope="session")
def speech() -> Path:
    return speech_dir()


@pytest.fixture(scope="session")
def tiny():
    import max_whisper

    return max_whisper.load_model("tiny.en")


@pytest.fixture(scope="session")
def base():
    import max_whisper

    return max_whisper.load_model("base")


def reference_model(ckpt):
    """openai-whisper's PyTorch model with the same weights, read by our loader, in fp32."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    model = Whisper(ModelDimensions(**ckpt.dims.asdict()))
    model.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in ckpt.state.items()},
                          strict=True)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_ref(tiny):
    return reference_model(tiny.checkpoint)


@pytest.fixture(scope="session")
def base_ref(base):
    return reference_model(base.checkpoint)
