"""Session fixtures: each MAX graph compiles once per test session (tiny.en, then base)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SPEECH = Path(os.environ.get("MAX_WHISPER_SPEECH", REPO / "tests" / "speech"))


def speech_dir() -> Path:
    if not (SPEECH / "refs.tsv").is_file():
        raise FileNotFoundError(f"test speech not found at {SPEECH}; set MAX_WHISPER_SPEECH")
    return SPEECH


def references() -> dict[str, str]:
    with open(speech_dir() / "refs.tsv", newline="") as f:
        return {row["file"]: row["reference"] for row in csv.DictReader(f, delimiter="\t")}


SHORT_CLIPS = sorted(name for name in references() if name != "lecture.flac")


def write_wav(path, samples: np.ndarray, rate: int = 16000):
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def mixed_recordings(folder: Path, speech: Path) -> list[Path]:
    """Three recordings of about 35 s (two windows each), the short clips joined in different orders,
    so that each file's second window follows a different text."""
    import max_whisper

    clips = [max_whisper.load_audio(speech / name) for name in SHORT_CLIPS]
    orders = [clips, clips[::-1], clips[3:] + clips[:3]]
    return [write_wav(folder / f"mixed{i}.wav", np.concatenate(order)) for i, order in enumerate(orders)]


@pytest.fixture(scope="session")
def speech() -> Path:
    return speech_dir()


@pytest.fixture(scope="session")
def tiny():
    import max_whisper

    return max_whisper.load_model("tiny.en")


@pytest.fixture(scope="session")
def tiny_step(tiny):
    """The engine with the fixed-shape recorded-steps graph that GPUs record and replay, run on the CPU."""
    import max_whisper

    return max_whisper.WhisperModel(tiny.checkpoint, device="cpu", step_graph=True)


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
