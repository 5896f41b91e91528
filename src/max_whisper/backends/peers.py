"""The peers, on the same weights as the MAX engine, behind the same interface (`backends.Backend`).

- `hybrid`: the MAX encoder graph inside openai-whisper's PyTorch decoder and decoding loop
  (the reference encoder is never built or run);
- `reference`: openai-whisper on PyTorch, CPU or CUDA (extra `reference`);
- `faster-whisper`: CTranslate2 through faster-whisper, the strongest CPU peer (extra `peers`);
- `transformers`: Hugging Face transformers' chunked pipeline, every 30 s chunk of a file in one
  batch, or the chunks of many files batched together (fp16 on CUDA), the usual batched GPU peer (extra `peers`);
- `whisper.cpp`: whisper.cpp on the CPU through pywhispercpp, the weights converted to its ggml file
  (`backends.ggml`; extra `peers`).

Imported only when one of them is asked for: the product does not need torch, openai-whisper,
CTranslate2 or transformers.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import load_audio
from ..errors import WhisperError
from ..models import cache_folder, ct2_folder
from ..weights import Checkpoint


def _import_reference():
    try:
        import torch
        import whisper
    except ImportError:
        raise WhisperError("the reference and hybrid backends need openai-whisper and torch: "
                           "pip install 'max-whisper[reference]'") from None
    return torch, whisper


def _torch_device(torch, device: str) -> str:
    if device == "cpu":
        return "cpu"
    if device == "gpu":
        if not torch.cuda.is_available():
            raise WhisperError("device 'gpu' requested but PyTorch finds no CUDA GPU on this machine")
        return "cuda"
    raise WhisperError(f"unknown device '{device}': use cpu or gpu")


# Options of the max engine's transcribe() that openai-whisper's does not take: dropped where they only
# report or seed, refused where they would change the transcript.
_DROPPED_OPTIONS = ("on_progress", "seed")
_MAX_ONLY_OPTIONS = {"batch_size": "--batch-size (the throughput mode)",
                     "silence_threshold_db": "--silence-threshold-db", "vad_filter": "--vad-filter",
                     "vad_parameters": "--vad-parameters", "repetition_penalty": "--repetition-penalty",
                     "no_repeat_ngram_size": "--no-repeat-ngram-size"}
_NEUTRAL = {"vad_filter": False, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}  # the option left off


class ReferenceModel:
    """openai-whisper on PyTorch with weights read by our loader (fp32 on CPU, fp16 on CUDA)."""

    backend = "reference"

    def __init__(self, ckpt: Checkpoint, device: str = "cpu"):
        torch, whisper = _import_reference()
        self.checkpoint, self.dims, self.device = ckpt, ckpt.dims, device
        self.torch_device = _torch_device(torch, device)
        self.fp16 = self.torch_device == "cuda"
        model = whisper.model.Whisper(whisper.model.ModelDimensions(**ckpt.dims.asdict()))
        self._load_weights(model, torch, ckpt)
        self.model = model.to(self.torch_device).eval()

    def _load_weights(self, model, torch, ckpt: Checkpoint) -> None:
        model.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in ckpt.state.items()},
                              strict=True)

    def transcribe(self, audio, **options) -> dict:
        _, whisper = _import_reference()
        for key in _DROPPED_OPTIONS:
            options.pop(key, None)
        for key, flag in _MAX_ONLY_OPTIONS.items():
            if options.pop(key, None) not in (None, _NEUTRAL.get(key)):
                raise WhisperError(f"{flag} is an option of the max backend; the {self.backend} backend "
                                   "runs openai-whisper's loop")
        return whisper.transcribe(self.model, audio, fp16=self.fp16, verbose=None, **options)

    def max_graph_seconds(self) -> float:
        return 0.0


class HybridModel(ReferenceModel):
    """openai-whisper's decoder and decoding loop fed by the MAX encoder graph."""

    backend = "hybrid"

    def _load_weights(self, model, torch, ckpt: Checkpoint) -> None:
        from ..runtime import Encoder, GraphSession

        self.session = GraphSession(ckpt, device=self.device, dtype="float32")  # as openai-whisper's fp32 decoder
        self.encoder = Encoder(self.session)
        model.encoder = MaxEncoder(self.encoder, torch)  # drops the PyTorch encoder before any use
        prefix = "decoder."
        model.decoder.load_state_dict(
            {k[len(prefix):]: torch.from_numpy(np.asarray(v, np.float32)) for k, v in ckpt.state.items()
             if k.startswith(prefix)}, strict=True)

    def max_graph_seconds(self) -> float:
        return sum(self.session.timings.execute.values())


def MaxEncoder(encoder, torch):  # noqa: N802  (builds a torch Module; torch is imported lazily)
    """A torch Module that stands where openai-whisper's AudioEncoder stood and runs the MAX encoder graph."""

    def forward(self, mel):
        features = encoder.encode(mel.detach().float().cpu().numpy())
        return torch.from_numpy(encoder.session.to_host(features)).to(device=mel.device, dtype=mel.dtype)

    return type("MaxEncoder", (torch.nn.Module,), {"forward": forward})()


class FasterWhisperModel:
    """faster-whisper (CTranslate2) on the same CTranslate2 weights folder."""

    backend = "faster-whisper"

    def __init__(self, name: str | Path, device: str = "cpu", compute_type: str | None = None):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise WhisperError("the faster-whisper backend needs faster-whisper: pip install 'max-whisper[peers]'") from None
        self.device = device
        if device not in ("cpu", "gpu"):
            raise WhisperError(f"unknown device '{device}': use cpu or gpu")
        self.compute_type = compute_type or ("float16" if device == "gpu" else "float32")
        folder = ct2_folder(name)
        self.model = WhisperModel(str(folder), device="cuda" if device == "gpu" else "cpu",
                                  compute_type=self.compute_type)

    # openai-whisper's option names that faster-whisper spells otherwise
    RENAMED = {"logprob_threshold": "log_prob_threshold"}
    TAKES = {"language", "task", "beam_size", "best_of", "patience", "length_penalty", "temperature",
             "compression_ratio_threshold", "logprob_threshold", "no_speech_threshold", "condition_on_previous_text",
             "initial_prompt", "suppress_tokens", "without_timestamps", "word_timestamps", "prepend_punctuations",
             "append_punctuations", "clip_timestamps", "hallucination_silence_threshold", "on_progress",
             "repetition_penalty", "no_repeat_ngram_size", "batch_size"}

    def transcribe(self, audio, **options) -> dict:
        unknown = set(options) - self.TAKES
        if unknown:
            raise WhisperError(f"the faster-whisper backend does not take {', '.join(sorted(unknown))}")
        options.pop("on_progress", None)
        batch_size = options.pop("batch_size", None)
        temperature = options.pop("temperature", (0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
        suppress = options.pop("suppress_tokens", "-1")
        kwargs = {self.RENAMED.get(k, k): v for k, v in options.items()}
        kwargs.update(beam_size=kwargs.get("beam_size") or 1, best_of=kwargs.get("best_of") or 5,
                      patience=kwargs.get("patience") or 1, length_penalty=kwargs.get("length_penalty") or 1,
                      temperature=list(temperature) if isinstance(temperature, (tuple, list)) else temperature,
                      suppress_tokens=[int(t) for t in suppress.split(",")] if isinstance(suppress, str) else suppress)
        if batch_size is not None and kwargs.get("clip_timestamps") not in (None, "0", [0], [0.0], (0.0,)):
            raise WhisperError("faster-whisper's batched pipeline (batch_size) cuts the audio by its VAD: it takes "
                               "no clip_timestamps")
        if batch_size is None:
            segments, info = self.model.transcribe(audio, vad_filter=False, **kwargs)
        else:  # its throughput mode: BatchedInferencePipeline, at its own defaults (Silero VAD chunks) but these
            from faster_whisper import BatchedInferencePipeline

            segments, info = BatchedInferencePipeline(self.model).transcribe(audio, batch_size=batch_size, **kwargs)
        out = []
        for i, s in enumerate(segments):
            segment = {"id": i, "seek": s.seek, "start": s.start, "end": s.end, "text": s.text, "tokens": list(s.tokens),
                       "temperature": s.temperature, "avg_logprob": s.avg_logprob,
                       "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob}
            if s.words is not None:
                segment["words"] = [{"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
                                    for w in s.words]
            out.append(segment)
        return {"text": "".join(s["text"] for s in out), "segments": out, "language": info.language}

    def max_graph_seconds(self) -> float:
        return 0.0


class WhisperCppModel:
    """whisper.cpp (pywhispercpp) on the CPU, on the same weights written as its ggml file in float16 (its
    default; pywhispercpp 1.5.1's convolution aborts on float32 kernels), converted once into the cache."""

    backend = "whisper.cpp"
    TAKES = {"language", "task", "temperature", "beam_size", "initial_prompt", "condition_on_previous_text",
             "logprob_threshold", "no_speech_threshold", "compression_ratio_threshold", "suppress_tokens",
             "on_progress"}

    def __init__(self, ckpt: Checkpoint, device: str = "cpu", dtype: str = "float16"):
        try:
            from pywhispercpp.model import Model
        except ImportError:
            raise WhisperError("the whisper.cpp backend needs pywhispercpp: pip install 'max-whisper[peers]'") from None
        if device != "cpu":
            raise WhisperError("the whisper.cpp backend runs on the CPU here (pywhispercpp's wheel has no GPU)")
        if dtype != "float16":
            raise WhisperError(f"the whisper.cpp backend runs float16 weights (its convolution takes no other), "
                               f"not {dtype}")
        from .ggml import write_ggml

        self.device, self.dtype = device, dtype
        path = cache_folder("ggml") / f"{_fingerprint(ckpt)}-float16.bin"
        if not path.exists():
            write_ggml(ckpt, path, float16=True)
        self.english_only = not ckpt.dims.is_multilingual
        self.model = Model(str(path), redirect_whispercpp_logs_to=None, n_threads=os.cpu_count() or 1,
                           print_progress=False, print_realtime=False)

    def transcribe(self, audio, **options) -> dict:
        unknown = set(options) - self.TAKES
        if unknown:
            raise WhisperError(f"the whisper.cpp backend does not take {', '.join(sorted(unknown))}")
        if options.get("beam_size"):
            raise WhisperError("the whisper.cpp backend decodes greedily here: leave out beam_size")
        if options.get("compression_ratio_threshold", 2.4) != 2.4:  # openai-whisper's default: taken as its analogue
            raise WhisperError("whisper.cpp tells repetition by token entropy (2.4), not by compression ratio: "
                               "leave compression_ratio_threshold at its default")
        if str(options.get("suppress_tokens", "-1")) != "-1":
            raise WhisperError("the whisper.cpp backend suppresses its own set of tokens: leave suppress_tokens out")
        samples = load_audio(audio) if isinstance(audio, (str, Path)) else np.asarray(audio, np.float32)
        language = options.get("language") or ("en" if self.english_only else None)
        if language is None:
            (language, _), _ = self.model.auto_detect_language(samples)
        params: dict[str, Any] = {"language": language, "translate": options.get("task") == "translate",
                                  "no_context": not options.get("condition_on_previous_text", True),
                                  "initial_prompt": options.get("initial_prompt") or ""}
        if options.get("logprob_threshold") is not None:
            params["logprob_thold"] = float(options["logprob_threshold"])
        if options.get("no_speech_threshold") is not None:
            params["no_speech_thold"] = float(options["no_speech_threshold"])
        temperature = options.get("temperature", 0.0)
        if isinstance(temperature, (tuple, list)):  # openai-whisper's fallback: whisper.cpp's first and step
            params["temperature"] = float(temperature[0])
            params["temperature_inc"] = float(temperature[1] - temperature[0]) if len(temperature) > 1 else 0.0
        else:
            params.update(temperature=float(temperature), temperature_inc=0.0)
        segments = self.model.transcribe(samples, **params)
        # its segments' texts come stripped: openai-whisper's start with the space before their first word
        out: list[dict[str, Any]] = [{"id": i, "start": s.t0 / 100, "end": s.t1 / 100, "text": " " + s.text.strip()}
               for i, s in enumerate(segments) if s.text.strip()]
        return {"text": "".join(s["text"] for s in out), "segments": out, "language": language}

    def max_graph_seconds(self) -> float:
        return 0.0


def _fingerprint(ckpt: Checkpoint) -> str:
    """Names a converted file after the weights it holds (dims, and a sample of every tensor)."""
    digest = hashlib.sha256(repr(ckpt.dims).encode())
    for name in sorted(ckpt.state):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(np.asarray(ckpt.state[name]).ravel()[:4096]).tobytes())
    return digest.hexdigest()[:16]


class TransformersModel:
    """Hugging Face transformers' speech-recognition pipeline on our weights: audio cut into 30 s
    chunks with 5 s strides, all chunks of a file decoded in one batch (greedy: one beam), texts merged;
    `transcribe_files` batches the chunks of several files together."""

    backend = "transformers"

    def __init__(self, ckpt: Checkpoint, device: str = "cpu"):
        try:
            import torch
            import transformers
        except ImportError:
            raise WhisperError("the transformers backend needs torch and transformers: "
                               "pip install torch 'max-whisper[peers]'") from None
        from ..tokenizer import get_tokenizer
        from ..weights import hf_name_to_openai

        if ckpt.tokenizer_file is None:
            raise WhisperError(f"{ckpt.source}: the transformers backend needs tokenizer.json")
        self.checkpoint, self.dims, self.device = ckpt, ckpt.dims, device
        torch_device = _torch_device(torch, device)
        dtype = torch.float16 if torch_device == "cuda" else torch.float32
        d = ckpt.dims
        config = transformers.WhisperConfig(
            vocab_size=d.n_vocab, num_mel_bins=d.n_mels, d_model=d.n_audio_state,
            encoder_layers=d.n_audio_layer, encoder_attention_heads=d.n_audio_head,
            decoder_layers=d.n_text_layer, decoder_attention_heads=d.n_text_head,
            encoder_ffn_dim=4 * d.n_audio_state, decoder_ffn_dim=4 * d.n_text_state,
            max_source_positions=d.n_audio_ctx, max_target_positions=d.n_text_ctx)
        model = transformers.WhisperForConditionalGeneration(config)
        state = {}
        for name in model.state_dict():
            source = hf_name_to_openai(name)
            if source is not None:
                state[name] = torch.from_numpy(np.asarray(ckpt.state[source], np.float32))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not n.startswith("proj_out.") for n in missing):
            raise WhisperError(f"{ckpt.source}: weights don't fit transformers' Whisper ({missing + unexpected})")
        model.tie_weights()
        tok = get_tokenizer(ckpt.tokenizer_file, d.is_multilingual, d.num_languages)
        model.generation_config = self._generation_config(transformers, tok, d)
        self.model = model.to(device=torch_device, dtype=dtype).eval()
        self.pipe = transformers.pipeline(
            "automatic-speech-recognition", model=self.model, device=torch_device, dtype=dtype,
            tokenizer=transformers.WhisperTokenizerFast(tokenizer_file=str(ckpt.tokenizer_file),
                                                         pad_token="<|endoftext|>"),
            feature_extractor=transformers.WhisperFeatureExtractor(feature_size=d.n_mels),
            chunk_length_s=30)

    @staticmethod
    def _generation_config(transformers, tok, dims):
        """What openai's generation_config.json holds, from the tokenizer (we ship no HF config)."""
        config = transformers.GenerationConfig(
            decoder_start_token_id=tok.sot, bos_token_id=tok.eot, eos_token_id=tok.eot, pad_token_id=tok.eot,
            no_timestamps_token_id=tok.no_timestamps, prev_sot_token_id=tok.sot_prev,
            begin_suppress_tokens=tok.encode(" ") + [tok.eot], suppress_tokens=list(tok.non_speech_tokens),
            max_initial_timestamp_index=50, max_length=dims.n_text_ctx, is_multilingual=dims.is_multilingual)
        if dims.is_multilingual:
            config.lang_to_id = {f"<|{c}|>": tok.to_language_token(c) for c in tok.language_codes}
            config.task_to_id = {"transcribe": tok.transcribe, "translate": tok.translate}
        return config

    # The pipeline decodes each chunk once, greedily, from temperature 0: openai-whisper's fallback and its
    # thresholds do not apply to it (taken, and documented as such, so that the same options run every backend).
    TAKES = {"language", "task", "without_timestamps", "temperature", "compression_ratio_threshold",
             "logprob_threshold", "no_speech_threshold", "condition_on_previous_text", "suppress_tokens", "on_progress"}

    def transcribe(self, audio, **options) -> dict:
        from ..audio import SAMPLE_RATE

        self._generate_kwargs(options)  # an option it does not take is refused before the audio is read
        samples = self._samples(audio)
        n_chunks = max(1, int(np.ceil(len(samples) / SAMPLE_RATE / 20)))  # 30 s chunks advance 20 s
        return self.transcribe_files([samples], batch_size=n_chunks, **options)[0]

    def transcribe_files(self, audios: list, batch_size: int, **options) -> list[dict]:
        """Several files through the pipeline at once: their 30 s chunks, across files, decoded `batch_size` at
        a time (the pipeline's own batching); a result per file, in order."""
        from ..audio import SAMPLE_RATE

        kwargs = self._generate_kwargs(options)
        inputs = [{"raw": self._samples(a), "sampling_rate": SAMPLE_RATE} for a in audios]
        outs = self.pipe(inputs, batch_size=batch_size, return_timestamps=not options.get("without_timestamps", False),
                         generate_kwargs=kwargs)
        return [{"text": out["text"], "language": options.get("language") or "en",
                 "segments": [{"id": i, "start": c["timestamp"][0], "end": c["timestamp"][1], "text": c["text"]}
                              for i, c in enumerate(out.get("chunks", []))]} for out in outs]

    def _generate_kwargs(self, options: dict) -> dict[str, Any]:
        unknown = set(options) - self.TAKES
        temperature = options.get("temperature", 0.0)
        if (temperature[0] if isinstance(temperature, (tuple, list)) else temperature) != 0:
            unknown.add("a first temperature above 0")
        if unknown:
            raise WhisperError(f"the transformers backend decodes greedily; it does not take {', '.join(sorted(unknown))}")
        # num_beams given: the speech-recognition pipeline otherwise decodes with 5 beams (its own default)
        kwargs: dict[str, Any] = {"num_beams": 1}
        if self.dims.is_multilingual:
            kwargs.update(language=options.get("language"), task=options.get("task", "transcribe"))
        return kwargs

    @staticmethod
    def _samples(audio) -> np.ndarray:
        return load_audio(audio) if isinstance(audio, (str, Path)) else np.asarray(audio, np.float32)

    def max_graph_seconds(self) -> float:
        return 0.0
