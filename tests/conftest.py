"""Session fixtures: each MAX graph compiles once per test session (tiny.en, then base)."""

from __future__ import annotations

import csv
import os
import socket
import threading
import time
from contextlib import contextmanager
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


def as_pcm16(samples: np.ndarray) -> bytes:
    """16-bit little-endian PCM, the inverse of `audio.from_pcm16`: loaded audio written out reads back equal."""
    return (np.clip(samples, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


def write_wav(path, samples: np.ndarray, rate: int = 16000):
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(as_pcm16(samples))
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
    if ckpt.alignment_heads:  # as openai-whisper's load_model sets them for its models
        mask = torch.zeros(ckpt.dims.n_text_layer, ckpt.dims.n_text_head, dtype=torch.bool)
        for layer, head in ckpt.alignment_heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_ref(tiny):
    return reference_model(tiny.checkpoint)


@pytest.fixture(scope="session")
def base_ref(base):
    return reference_model(base.checkpoint)


# --- checkpoints of every architecture, written in every format the engine reads ---

def write_hf_folder(ckpt, folder: Path) -> Path:
    """A Hugging Face `openai/whisper-*` folder of `ckpt` (safetensors, config, tokenizer), written by
    transformers, with the checkpoint's alignment heads in generation_config.json."""
    import json

    import torch
    import transformers

    from max_whisper.weights import hf_config, hf_name_to_openai

    model = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**hf_config(ckpt.dims)))
    model.load_state_dict({name: torch.from_numpy(np.asarray(ckpt.state[source], np.float32))
                           for name in model.state_dict() if (source := hf_name_to_openai(name))}, strict=False)
    model.save_pretrained(str(folder))
    transformers.WhisperTokenizerFast(tokenizer_file=str(ckpt.tokenizer_file),
                                      pad_token="<|endoftext|>").save_pretrained(str(folder))
    if ckpt.alignment_heads:
        generation = json.loads((folder / "generation_config.json").read_text())
        generation["alignment_heads"] = [list(h) for h in ckpt.alignment_heads]
        (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


def v3_tokenizer(base_tokenizer: Path, out: Path) -> Path:
    """large-v3's tokenizer.json (vocabulary 51866) from base's (51865): <|yue|> after the 99 languages,
    the later special tokens one further on, <|nospeech|> as v3 names it. Written here because no v3
    tokenizer is installable offline; tests compare it with openai-whisper's own v3 tokenizer."""
    import json

    spec = json.loads(base_tokenizer.read_text())
    added = [t for t in spec["added_tokens"] if t["id"] <= 50357]  # end of text .. <|su|>
    later = ["<|yue|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
             "<|notimestamps|>"]
    added += [{**added[-1], "id": 50358 + i, "content": content} for i, content in enumerate(later)]
    spec["added_tokens"] = added
    spec["post_processor"]["special_tokens"]["<|notimestamps|>"]["ids"] = [50364]
    out.write_text(json.dumps(spec))
    return out


def random_checkpoint(dims, tokenizer: Path, seed: int = 0):
    """A checkpoint of `dims` with random weights (normal, std 0.02; layer norms near 1; the encoder's
    sinusoidal positions as openai-whisper makes them), named as openai-whisper names them."""
    from whisper.model import sinusoids

    from max_whisper.weights import Checkpoint, state_shapes

    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in state_shapes(dims).items():
        value = rng.normal(0.0, 0.02, shape).astype(np.float32)
        if name.endswith(("ln.weight", "ln_post.weight", "attn_ln.weight", "mlp_ln.weight")):
            value += 1.0
        state[name] = value
    state["encoder.positional_embedding"] = sinusoids(dims.n_audio_ctx, dims.n_audio_state).numpy()
    return Checkpoint(dims, state, tokenizer, f"random {seed}")


@contextmanager
def running_server(model, options):
    """A real uvicorn server of `create_app(model, options)` on a free loopback port: (URL, app)."""
    import uvicorn

    from max_whisper.server import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(model, options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
