"""Whisper checkpoints from disk: CTranslate2, Hugging Face and OpenAI formats.

Every loader returns a `Checkpoint` whose state dict uses openai-whisper's
parameter names (``encoder.blocks.0.attn.query.weight`` ...), so the MAX graphs,
the reference PyTorch model and the tests all speak one naming scheme.
Model names (tiny.en, large-v3-turbo ...) resolve to such folders in `models`.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import WhisperError, first_line


@dataclass(frozen=True)
class ModelDimensions:
    """Same fields as openai-whisper's `ModelDimensions`."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @property
    def is_multilingual(self) -> bool:
        return self.n_vocab >= 51865

    @property
    def num_languages(self) -> int:
        return self.n_vocab - 51765 - int(self.is_multilingual)

    def asdict(self) -> dict:
        return asdict(self)


@dataclass
class Checkpoint:
    dims: ModelDimensions
    state: dict[str, np.ndarray]  # openai-whisper names, checkpoint dtype
    tokenizer_file: Path | None
    source: str
    alignment_heads: list[tuple[int, int]] = field(default_factory=list)


def load_path(path: Path) -> Checkpoint:
    """A checkpoint from a CTranslate2 or Hugging Face folder or an OpenAI .pt file, fully validated."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / "model.bin").is_file():
            return validate(load_ct2(path))
        if any(path.glob("*.safetensors")):
            return validate(load_hf_safetensors(path))
        raise WhisperError(f"{path}: no model.bin (CTranslate2) or *.safetensors (Hugging Face) in this folder")
    if path.is_file():
        if path.suffix in (".pt", ".pth"):
            return validate(load_openai_pt(path))
        if path.name == "model.bin":
            return validate(load_ct2(path.parent))
        raise WhisperError(f"{path}: not a Whisper checkpoint (expected a .pt file or a model folder)")
    raise WhisperError(f"{path}: no such model file or folder")


# --- CTranslate2 -----------------------------------------------------------

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}  # 5: bfloat16 bits
_BFLOAT16 = 5


def read_ct2_model_bin(data: bytes | memoryview, source: str = "model.bin") -> dict[str, np.ndarray]:
    """Parse a CTranslate2 `model.bin` (version 6) into {name: array}, aliases resolved."""
    buf = memoryview(data)
    pos = 0

    def take(fmt: str):
        nonlocal pos
        value = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return value[0]

    def text() -> str:
        nonlocal pos
        n = take("<H")
        if n == 0 or pos + n > len(buf):
            raise ValueError("bad string length")
        s = bytes(buf[pos : pos + n - 1]).decode("utf-8")
        pos += n
        return s

    try:
        version = take("<I")
        if version != 6:
            raise WhisperError(f"{source}: CTranslate2 model version {version} is not supported (need 6)")
        spec = text()
        if spec != "WhisperSpec":
            raise WhisperError(f"{source}: a CTranslate2 '{spec}' model, not Whisper")
        take("<I")  # spec revision
        variables: dict[str, np.ndarray] = {}
        for _ in range(take("<I")):
            name = text()
            rank = take("<B")
            dims = [take("<I") for _ in range(rank)]
            dtype_code = take("<B")
            nbytes = take("<I")
            if dtype_code not in _CT2_DTYPES:
                raise WhisperError(f"{source}: variable {name} has unsupported dtype code {dtype_code}")
            if pos + nbytes > len(buf):
                raise ValueError(f"variable {name} runs past the end of the file")
            arr = np.frombuffer(buf[pos : pos + nbytes], dtype=_CT2_DTYPES[dtype_code])
            if arr.size != int(np.prod(dims)):
                raise ValueError(f"variable {name}: {nbytes} bytes do not fill shape {dims}")
            if dtype_code == _BFLOAT16:  # the upper half of a float32
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            variables[name] = arr.reshape(dims)
            pos += nbytes
        aliases = [(text(), text()) for _ in range(take("<I"))]
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise WhisperError(f"{source}: corrupt or truncated CTranslate2 model file ({e})") from None
    variables = _dequantize(variables, source)
    for alias, target in aliases:  # after dequantizing: an alias of a weight does not name its scale
        if target not in variables:
            raise WhisperError(f"{source}: corrupt CTranslate2 model file (alias {alias} of a missing {target})")
        variables[alias] = variables[target]
    return variables


def _dequantize(variables: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Integer weights (CTranslate2's int8 and int16 conversions) back to float32: each `.../weight` with a
    `.../weight_scale` holds round(w * scale), the scale per output row (int8) or one for the matrix (int16)."""
    out = {}
    for name, value in variables.items():
        if name.endswith("_scale") and name[: -len("_scale")] in variables:
            continue
        scale = variables.get(f"{name}_scale")
        if scale is not None:
            scale = scale.astype(np.float32).reshape(scale.shape + (1,) * (value.ndim - scale.ndim))
            value = value.astype(np.float32) / scale
        elif value.dtype.kind == "i" and value.ndim > 0:
            raise WhisperError(f"{source}: variable {name} holds {value.dtype} values without a scale to read them with")
        out[name] = value
    return out


def _split_rows(w: np.ndarray, n: int) -> list[np.ndarray]:
    return np.split(w, n, axis=0)


def ct2_to_openai(v: dict[str, np.ndarray]) -> tuple[ModelDimensions, dict[str, np.ndarray]]:
    """Rename CTranslate2 Whisper variables to openai-whisper's state dict."""
    out: dict[str, np.ndarray] = {}

    def norm(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = v[f"{src}/gamma"]
        out[f"{dst}.bias"] = v[f"{src}/beta"]

    def linear(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = v[f"{src}/weight"]
        out[f"{dst}.bias"] = v[f"{src}/bias"]

    def self_attention(dst: str, src: str) -> None:
        q, k, v_ = _split_rows(v[f"{src}/linear_0/weight"], 3)
        qb, _kb, vb = _split_rows(v[f"{src}/linear_0/bias"], 3)  # key has no bias
        out.update({f"{dst}.query.weight": q, f"{dst}.query.bias": qb, f"{dst}.key.weight": k,
                    f"{dst}.value.weight": v_, f"{dst}.value.bias": vb})
        linear(f"{dst}.out", f"{src}/linear_1")

    def cross_attention(dst: str, src: str) -> None:
        linear(f"{dst}.query", f"{src}/linear_0")
        k, v_ = _split_rows(v[f"{src}/linear_1/weight"], 2)
        _kb, vb = _split_rows(v[f"{src}/linear_1/bias"], 2)
        out.update({f"{dst}.key.weight": k, f"{dst}.value.weight": v_, f"{dst}.value.bias": vb})
        linear(f"{dst}.out", f"{src}/linear_2")

    def ffn(dst: str, src: str) -> None:
        linear(f"{dst}.mlp.0", f"{src}/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/layer_norm")

    n_audio_layer = _count_layers(v, "encoder")
    n_text_layer = _count_layers(v, "decoder")
    for name in ("conv1", "conv2"):
        linear(f"encoder.{name}", f"encoder/{name}")
    out["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    for i in range(n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        self_attention(f"{dst}.attn", f"{src}/self_attention")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        ffn(dst, f"{src}/ffn")
    norm("encoder.ln_post", "encoder/layer_norm")

    out["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    out["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in range(n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        self_attention(f"{dst}.attn", f"{src}/self_attention")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        cross_attention(f"{dst}.cross_attn", f"{src}/attention")
        norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        ffn(dst, f"{src}/ffn")
    norm("decoder.ln", "decoder/layer_norm")

    conv1 = out["encoder.conv1.weight"]
    dims = ModelDimensions(
        n_mels=conv1.shape[1],
        n_audio_ctx=out["encoder.positional_embedding"].shape[0],
        n_audio_state=conv1.shape[0],
        n_audio_head=int(v["encoder/num_heads"]),
        n_audio_layer=n_audio_layer,
        n_vocab=out["decoder.token_embedding.weight"].shape[0],
        n_text_ctx=out["decoder.positional_embedding"].shape[0],
        n_text_state=out["decoder.token_embedding.weight"].shape[1],
        n_text_head=int(v["decoder/num_heads"]),
        n_text_layer=n_text_layer,
    )
    return dims, out


def _count_layers(v: dict, prefix: str) -> int:
    ids = {int(m.group(1)) for k in v if (m := re.match(rf"{prefix}/layer_(\d+)/", k))}
    return max(ids) + 1 if ids else 0


def load_ct2(folder: Path, model_bytes: bytes | None = None) -> Checkpoint:
    folder = Path(folder)
    model_file = folder / "model.bin"
    if model_bytes is None:
        if not model_file.is_file():
            raise WhisperError(f"{model_file}: no such file")
        model_bytes = model_file.read_bytes()
    variables = read_ct2_model_bin(model_bytes, str(model_file))
    try:
        dims, state = ct2_to_openai(variables)
    except KeyError as e:
        raise WhisperError(f"{model_file}: not a complete Whisper model (missing {e})") from None
    config = _read_json(folder / "config.json")
    heads = [tuple(h) for h in config.get("alignment_heads", [])]
    return Checkpoint(dims, state, _optional(folder / "tokenizer.json"), str(model_file), heads)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WhisperError(f"{path}: not valid JSON ({e})") from None


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


# --- Hugging Face safetensors ----------------------------------------------

_HF_BLOCK = {
    "self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value", "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query", "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value", "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln",
}
_HF_TOP = {
    "encoder.conv1": "encoder.conv1", "encoder.conv2": "encoder.conv2",
    "encoder.layer_norm": "encoder.ln_post", "decoder.layer_norm": "decoder.ln",
    "decoder.embed_tokens": "decoder.token_embedding",
}


def hf_name_to_openai(name: str) -> str | None:
    """`model.encoder.layers.0.fc1.weight` -> `encoder.blocks.0.mlp.0.weight`; None if unused."""
    name = name.removeprefix("model.")
    if name.startswith("proj_out."):
        return None  # tied to the token embedding
    if m := re.fullmatch(r"(encoder|decoder)\.embed_positions\.weight", name):
        return f"{m.group(1)}.positional_embedding"
    if m := re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)", name):
        part = _HF_BLOCK.get(m.group(3))
        return part and f"{m.group(1)}.blocks.{m.group(2)}.{part}.{m.group(4)}"
    stem, _, leaf = name.rpartition(".")
    return f"{_HF_TOP[stem]}.{leaf}" if stem in _HF_TOP else None


def _safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a Hugging Face folder: those its index names, else model.safetensors, else every
    *.safetensors (openai/whisper-large-v3 also holds float32 copies, model.fp32-*.safetensors)."""
    index = _read_json(folder / "model.safetensors.index.json")
    if index:
        return [folder / f for f in sorted(set(index.get("weight_map", {}).values()))]
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    return sorted(folder.glob("*.safetensors"))


# ModelDimensions' fields as transformers' WhisperConfig names them.
HF_CONFIG_KEYS = {"n_mels": "num_mel_bins", "n_audio_ctx": "max_source_positions", "n_audio_state": "d_model",
                  "n_audio_head": "encoder_attention_heads", "n_audio_layer": "encoder_layers", "n_vocab": "vocab_size",
                  "n_text_ctx": "max_target_positions", "n_text_state": "d_model",
                  "n_text_head": "decoder_attention_heads", "n_text_layer": "decoder_layers"}


def hf_config(dims: ModelDimensions) -> dict[str, int]:
    """transformers' WhisperConfig arguments for a model of these dimensions (the inverse of reading one)."""
    return {**{key: getattr(dims, field) for field, key in HF_CONFIG_KEYS.items()},
            "encoder_ffn_dim": 4 * dims.n_audio_state, "decoder_ffn_dim": 4 * dims.n_text_state}


def load_hf_safetensors(folder: Path) -> Checkpoint:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    config = _read_json(folder / "config.json")
    if not config:
        raise WhisperError(f"{folder}: a Hugging Face model folder needs config.json")
    state: dict[str, np.ndarray] = {}
    for f in _safetensors_files(folder):
        try:
            tensors = load_file(str(f))
        except (SafetensorError, OSError) as e:
            raise WhisperError(f"{f}: unreadable safetensors file ({first_line(e)})") from None
        for k, t in tensors.items():
            if (dst := hf_name_to_openai(k)) is not None:
                state[dst] = t
    try:
        dims = ModelDimensions(**{field: config[key] for field, key in HF_CONFIG_KEYS.items()})
    except KeyError as e:
        raise WhisperError(f"{folder / 'config.json'}: missing {e}") from None
    generation = _read_json(folder / "generation_config.json")
    heads = [tuple(h) for h in generation.get("alignment_heads") or config.get("alignment_heads") or []]
    return Checkpoint(dims, state, _optional(folder / "tokenizer.json"), str(folder), heads)


# --- OpenAI .pt ------------------------------------------------------------

def load_openai_pt(path: Path) -> Checkpoint:
    try:
        import torch
    except ImportError:
        raise WhisperError(f"{path}: reading OpenAI .pt checkpoints needs torch: pip install 'max-whisper[reference]'") from None
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        dims = ModelDimensions(**ckpt["dims"])
        state = {k: t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
                 for k, t in ckpt["model_state_dict"].items()}
    except (RuntimeError, KeyError, TypeError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise WhisperError(f"{path}: not a readable OpenAI Whisper checkpoint ({first_line(e)})") from None
    tok = _optional(path.parent / "tokenizer.json")
    return Checkpoint(dims, state, tok, str(path))


def expected_state_names(dims: ModelDimensions) -> set[str]:
    """The parameter names of openai-whisper's model for these dimensions."""
    names = {"encoder.conv1.weight", "encoder.conv1.bias", "encoder.conv2.weight", "encoder.conv2.bias",
             "encoder.positional_embedding", "encoder.ln_post.weight", "encoder.ln_post.bias",
             "decoder.token_embedding.weight", "decoder.positional_embedding",
             "decoder.ln.weight", "decoder.ln.bias"}
    attn = ["query.weight", "query.bias", "key.weight", "value.weight", "value.bias", "out.weight", "out.bias"]
    mlp = ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp_ln.weight", "mlp_ln.bias"]
    for side, n, cross in (("encoder", dims.n_audio_layer, False), ("decoder", dims.n_text_layer, True)):
        for i in range(n):
            b = f"{side}.blocks.{i}"
            names |= {f"{b}.attn.{a}" for a in attn} | {f"{b}.{m}" for m in mlp}
            names |= {f"{b}.attn_ln.weight", f"{b}.attn_ln.bias"}
            if cross:
                names |= {f"{b}.cross_attn.{a}" for a in attn}
                names |= {f"{b}.cross_attn_ln.weight", f"{b}.cross_attn_ln.bias"}
    return names


def state_shapes(dims: ModelDimensions) -> dict[str, tuple[int, ...]]:
    """The shape of each of openai-whisper's parameters for these dimensions."""
    def shape(name: str) -> tuple[int, ...]:
        d = dims.n_audio_state if name.startswith("encoder.") else dims.n_text_state
        if name.startswith("encoder.conv"):
            in_channels = dims.n_mels if name.startswith("encoder.conv1") else d
            return (d, in_channels, 3) if name.endswith("weight") else (d,)
        if name == "encoder.positional_embedding":
            return (dims.n_audio_ctx, d)
        if name == "decoder.positional_embedding":
            return (dims.n_text_ctx, d)
        if name == "decoder.token_embedding.weight":
            return (dims.n_vocab, d)
        if ".mlp.0." in name:
            return (4 * d, d) if name.endswith("weight") else (4 * d,)
        if ".mlp.2." in name:
            return (d, 4 * d) if name.endswith("weight") else (d,)
        if name.endswith("weight") and "attn." in name and "_ln" not in name:
            return (d, d)
        return (d,)  # biases and layer norms

    return {name: shape(name) for name in sorted(expected_state_names(dims))}


def validate(ckpt: Checkpoint) -> Checkpoint:
    """Refuse checkpoints with missing or extra parameters: no silent partial loads."""
    want = expected_state_names(ckpt.dims)
    missing = sorted(want - ckpt.state.keys())
    if missing:
        raise WhisperError(f"{ckpt.source}: checkpoint lacks {len(missing)} parameters, e.g. {missing[0]}")
    extra = sorted(ckpt.state.keys() - want)
    if extra:
        raise WhisperError(f"{ckpt.source}: checkpoint has unexpected parameters, e.g. {extra[0]}")
    return ckpt
