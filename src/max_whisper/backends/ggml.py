"""A checkpoint written in whisper.cpp's ggml model format, so that whisper.cpp runs the same weights.

The layout is the one whisper.cpp's `models/convert-pt-to-ggml.py` writes and `whisper.cpp` reads: the magic,
eleven int32 hyperparameters (the last one the weights' type: 1 float16, 0 float32), the mel filters, the
byte-level vocabulary without the special tokens (whisper.cpp adds those from n_vocab), then each tensor as
(n_dims, name length, type, dims innermost first, name, data). As that script does, a float16 file keeps
vectors, the convolution biases and the positional embeddings in float32.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import WhisperError
from ..features import N_FFT, mel_filters
from ..weights import Checkpoint, expected_state_names

MAGIC = 0x67676D6C  # "ggml"
FLOAT32_TENSORS = {"encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding",
                   "decoder.positional_embedding"}


def write_ggml(ckpt: Checkpoint, path: Path, float16: bool = True) -> Path:
    """Write `ckpt` to `path` (via a temporary file beside it, so a failure leaves no partial model)."""
    if ckpt.tokenizer_file is None:
        raise WhisperError(f"{ckpt.source}: no tokenizer.json, which the ggml file's vocabulary comes from")
    d = ckpt.dims
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<12i", MAGIC, d.n_vocab, d.n_audio_ctx, d.n_audio_state, d.n_audio_head,
                                d.n_audio_layer, d.n_text_ctx, d.n_text_state, d.n_text_head, d.n_text_layer,
                                d.n_mels, int(float16)))
            filters = mel_filters(d.n_mels).astype(np.float32)
            assert filters.shape == (d.n_mels, N_FFT // 2 + 1)
            f.write(struct.pack("<2i", *filters.shape))
            f.write(filters.tobytes())
            _write_vocabulary(f, ckpt.tokenizer_file)
            for name in sorted(expected_state_names(d)):
                _write_tensor(f, name, np.asarray(ckpt.state[name]), float16)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_vocabulary(f: BinaryIO, tokenizer_file: Path) -> None:
    """The byte-level BPE tokens in id order, up to the first special token (<|endoftext|>)."""
    spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    vocab: dict[str, int] = spec["model"]["vocab"]
    first_special = min(t["id"] for t in spec.get("added_tokens", []) if t.get("special"))
    by_id = sorted((i, token) for token, i in vocab.items() if i < first_special)
    if [i for i, _ in by_id] != list(range(first_special)):
        raise WhisperError(f"{tokenizer_file}: the vocabulary's ids below {first_special} are not 0..{first_special - 1}")
    decoder = _unicode_to_byte()
    f.write(struct.pack("<i", len(by_id)))
    for _, token in by_id:
        data = bytes(decoder[c] for c in token)
        f.write(struct.pack("<i", len(data)))
        f.write(data)


def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: the printable bytes stand for themselves, the others for 256 + n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(others)}}


def _write_tensor(f: BinaryIO, name: str, data: np.ndarray, float16: bool) -> None:
    data = data.squeeze()
    if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
        data = data.reshape(-1, 1)
    half = float16 and data.ndim >= 2 and name not in FLOAT32_TENSORS
    data = np.ascontiguousarray(data, dtype=np.float16 if half else np.float32)
    encoded = name.encode("utf-8")
    f.write(struct.pack("<3i", data.ndim, len(encoded), int(half)))
    f.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
    f.write(encoded)
    f.write(data.tobytes())
