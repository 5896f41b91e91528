"""The backends behind one interface, and the benchmark that compares them."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import max_whisper as mw
from max_whisper import WhisperError, cli


@pytest.fixture(scope="module")
def jfk(speech):
    return mw.load_audio(speech / "jfk.wav")


@pytest.fixture(scope="module")
def reference():
    return mw.load_model("tiny.en", backend="reference")


@pytest.fixture(scope="module")
def hybrid():
    return mw.load_model("tiny.en", backend="hybrid")


def test_max_graph_time_is_measured_per_backend(tiny, reference, hybrid, jfk):
    for model in (tiny, reference, hybrid):
        before = model.max_graph_seconds()
        model.transcribe(jfk, temperature=0.0)
        spent = model.max_graph_seconds() - before
        if model.backend == "reference":
            assert spent == 0.0
        else:
            assert spent > 0.0, model.backend
    assert hybrid.session.timings.calls["encoder"] >= 1


def test_hybrid_runs_no_pytorch_encoder(hybrid):
    params = [name for name, _ in hybrid.model.named_parameters()]
    assert params and all(name.startswith("decoder.") for name in params)
    assert set(hybrid.session.timings.compile) == {"encoder"}


def test_hybrid_encoder_output_is_the_max_graphs(hybrid, tiny, speech):
    mel = mw.pad_or_trim(mw.log_mel_spectrogram(mw.load_audio(speech / "jfk.wav")), 3000)[None]
    with torch.no_grad():
        via_torch_module = hybrid.model.encoder(torch.from_numpy(mel)).numpy()
    assert np.array_equal(via_torch_module, tiny.session.to_host(tiny.embed_audio(mel)))


@pytest.mark.parametrize("clip", ["jfk.wav", "goforward.wav"])
def test_backends_agree_on_text(tiny, reference, hybrid, speech, clip):
    audio = mw.load_audio(speech / clip)
    texts = {m.backend: m.transcribe(audio, temperature=0.0)["text"] for m in (tiny, reference, hybrid)}
    assert texts["max"] == texts["reference"] == texts["hybrid"]


def test_faster_whisper_backend(jfk):
    model = mw.load_model("tiny.en", backend="faster-whisper")
    result = model.transcribe(jfk, temperature=0.0)
    assert "ask not what your country can do for you" in result["text"]
    assert result["language"] == "en" and result["segments"][0]["start"] == 0.0
    assert model.max_graph_seconds() == 0.0


def test_faster_whisper_throughput_mode_is_its_batched_pipeline(jfk):
    """`batch_size` runs faster-whisper's BatchedInferencePipeline (its VAD chunks decoded in batches), the
    peer's throughput mode that the bench puts beside the max backend's."""
    from faster_whisper import BatchedInferencePipeline

    model = mw.load_model("tiny.en", backend="faster-whisper")
    audio = np.concatenate([jfk, np.zeros(16000, np.float32), jfk, np.zeros(16000, np.float32), jfk])
    result = model.transcribe(audio, temperature=0.0, batch_size=4)
    theirs, _ = BatchedInferencePipeline(model.model).transcribe(audio, temperature=0.0, batch_size=4, beam_size=1)
    assert [(s["start"], s["end"], s["text"]) for s in result["segments"]] == [(s.start, s.end, s.text) for s in theirs]
    assert result["segments"] != model.transcribe(audio, temperature=0.0)["segments"]  # not the sequential loop
    assert result["text"].count("what your country can do for you") == 3 and result["segments"][-1]["end"] > 30
    with pytest.raises(WhisperError, match="takes no clip_timestamps"):
        model.transcribe(audio, temperature=0.0, batch_size=4, clip_timestamps="0,5")


def test_transformers_backend(jfk, speech, reference):
    model = mw.load_model("tiny.en", backend="transformers")
    # greedy, as the other backends here (the speech-recognition pipeline's own default is 5 beams, which
    # gives other words on these two clips)
    for clip in ("goforward.wav", "sense_and_sensibility_01_austen_64kb-0880.wav"):
        audio = mw.load_audio(speech / clip)
        assert (model.transcribe(audio, temperature=0.0, without_timestamps=True)["text"]
                == reference.transcribe(audio, temperature=0.0, without_timestamps=True)["text"])
    result = model.transcribe(jfk, temperature=0.0)
    assert "ask not what your country can do for you" in result["text"]
    assert result["segments"][0]["start"] == 0.0 and result["segments"][-1]["end"] == pytest.approx(11.0, abs=1.0)
    assert model.max_graph_seconds() == 0.0
    # its batching across files: every chunk of both files in one batch, each file's text its own
    files = [speech / "goforward.wav", jfk]
    together = model.transcribe_files(files, batch_size=4, temperature=0.0)
    assert [r["text"] for r in together] == [model.transcribe(f, temperature=0.0)["text"] for f in files]
    assert together[1]["text"] == result["text"]


def test_unknown_backend():
    with pytest.raises(WhisperError, match="unknown backend 'onnx'"):
        mw.load_model("tiny.en", backend="onnx")


def test_reference_gpu_without_cuda_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on CI
    with pytest.raises(WhisperError, match="PyTorch finds no CUDA GPU"):
        mw.load_model("tiny.en", backend="reference", device="gpu")


def test_bench_report_has_every_column(speech, tmp_path, capsys):
    out = tmp_path / "results"
    code = cli.main(["bench", str(speech / "jfk.wav"), str(speech / "goforward.wav"), "--backends", "reference,max",
                     "--runs", "2", "--warmup", "1", "--files-at-once", "2", "--output", str(out)])
    table = capsys.readouterr().out
    assert code == 0
    report = json.loads((out / "bench.json").read_text())
    rows = {r["backend"] + (r["batching"] or ""): r for r in report["rows"]}
    assert rows.pop("max2 files")["texts"] == rows["max"]["texts"]
    for key, title, _ in mw.bench.COLUMNS:
        assert title in table
        for r in rows.values():
            assert key in r, key
    assert rows["reference"]["max_graph_median_s"] == 0.0 and rows["max"]["max_graph_median_s"] > 0.0
    assert rows["reference"]["speedup_vs_cpu_reference"] == 1.0
    assert rows["max"]["same_text_as_cpu_reference"] is True
    assert rows["max"]["wer_percent"] < 10.0  # refs.tsv beside the audio was found
    assert len(rows["max"]["walls_s"]) == 2 and rows["max"]["peak_rss_mib"] > 100
    assert (out / "bench.png").stat().st_size > 10_000 and (out / "bench.md").read_text() in table


def test_bench_writes_each_row_as_it_is_done(speech, tmp_path):
    """A bench stopped after its first backend keeps that backend's row in bench.json and bench.md."""
    out = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "max_whisper.cli", "bench", str(speech / "jfk.wav"), "--backends",
                             "max,reference", "--runs", "1", "--warmup", "0", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (out / "bench.md").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        running = proc.poll() is None  # the reference backend still to come
        time.sleep(0.5)  # bench.md is written after bench.json
        rows = json.loads((out / "bench.json").read_text())["rows"]
    finally:
        proc.kill()
        proc.wait()
    assert running and [r["backend"] for r in rows] == ["max"] and rows[0]["texts"]
    assert "| max |" in (out / "bench.md").read_text()


def test_bench_compares_with_the_cpu_reference_in_any_order(speech, tmp_path, capsys):
    """The CPU reference's row after the others: every row still gets its speedup over it."""
    out = tmp_path / "results"
    assert cli.main(["bench", str(speech / "jfk.wav"), "--backends", "max,reference", "--runs", "1", "--warmup", "0",
                     "--output", str(out)]) == 0, capsys.readouterr().err
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [r["backend"] for r in rows] == ["max", "reference"] and rows[1]["speedup_vs_cpu_reference"] == 1.0
    assert rows[0]["speedup_vs_cpu_reference"] > 0 and isinstance(rows[0]["same_text_as_cpu_reference"], bool)


def test_bench_gpu_without_gpu_fails_clearly(speech, capsys, monkeypatch):
    from max import driver

    monkeypatch.setattr(driver, "accelerator_count", lambda: 0)
    assert cli.main(["bench", str(speech / "jfk.wav"), "--devices", "cpu,gpu"]) == 2
    assert "--devices gpu: MAX finds no GPU on this machine" in capsys.readouterr().err


@pytest.mark.parametrize("names", [["--backends", ","], ["--devices", " "]])
def test_bench_without_a_backend_or_device_fails_clearly(speech, capsys, names):
    assert cli.main(["bench", str(speech / "jfk.wav"), *names]) == 2
    assert "--backends and --devices each need at least one name" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_needs_a_gpu(dtype):
    with pytest.raises(WhisperError, match=f"dtype {dtype} needs device gpu"):
        mw.load_model("tiny.en", dtype=dtype)


def test_the_default_dtype_on_the_cpu_is_float32(tiny):
    assert tiny.dtype == "float32"


def test_unknown_dtype():
    with pytest.raises(WhisperError, match="unsupported dtype 'int4'"):
        mw.load_model("tiny.en", dtype="int4")


def test_max_gpu_without_gpu_is_an_error(monkeypatch):
    from max import driver

    monkeypatch.setattr(driver, "accelerator_count", lambda: 0)
    with pytest.raises(WhisperError, match="device 'gpu' requested but MAX finds no GPU"):
        mw.load_model("tiny.en", device="gpu")


def test_ggml_file_holds_the_checkpoint_as_whisper_cpp_reads_it(tiny, tmp_path):
    import struct

    from max_whisper.backends.ggml import write_ggml
    from max_whisper.features import mel_filters
    from max_whisper.weights import expected_state_names

    ckpt = tiny.checkpoint
    data = write_ggml(ckpt, tmp_path / "tiny.en.bin", float16=True).read_bytes()
    d = ckpt.dims
    header = struct.unpack_from("<12i", data)
    assert header == (0x67676D6C, d.n_vocab, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer,
                      d.n_text_ctx, d.n_text_state, d.n_text_head, d.n_text_layer, d.n_mels, 1)
    at = 48
    rows, cols = struct.unpack_from("<2i", data, at)
    filters = np.frombuffer(data, np.float32, rows * cols, at + 8).reshape(rows, cols)
    np.testing.assert_array_equal(filters, mel_filters(d.n_mels))
    at += 8 + 4 * rows * cols
    (n_tokens,) = struct.unpack_from("<i", data, at)
    at += 4
    tokens = []
    for _ in range(n_tokens):
        (size,) = struct.unpack_from("<i", data, at)
        tokens.append(data[at + 4:at + 4 + size])
        at += 4 + size
    tokenizer = tiny.tokenizer()
    assert n_tokens == tokenizer.eot  # the byte-level tokens below <|endoftext|>
    assert [tokens[t] for t in tokenizer.encode(" ask not what your country")] == [
        w.encode() for w in (" ask", " not", " what", " your", " country")]
    tensors = {}
    while at < len(data):
        n_dims, name_size, half = struct.unpack_from("<3i", data, at)
        shape = struct.unpack_from(f"<{n_dims}i", data, at + 12)[::-1]
        name = data[at + 12 + 4 * n_dims:at + 12 + 4 * n_dims + name_size].decode()
        at += 12 + 4 * n_dims + name_size
        count = int(np.prod(shape))
        tensors[name] = np.frombuffer(data, np.float16 if half else np.float32, count, at).reshape(shape)
        at += count * (2 if half else 4)
    assert set(tensors) == set(expected_state_names(d))
    embedding = ckpt.state["decoder.token_embedding.weight"]
    np.testing.assert_array_equal(tensors["decoder.token_embedding.weight"], embedding.astype(np.float16))
    assert tensors["encoder.conv1.bias"].shape == (d.n_audio_state, 1)
    assert tensors["encoder.positional_embedding"].dtype == np.float32


def test_whisper_cpp_runs_the_same_weights(jfk, monkeypatch, tmp_path):
    pytest.importorskip("pywhispercpp", reason="the peers extra")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the converted file
    model = mw.load_model("tiny.en", backend="whisper.cpp")
    result = model.transcribe(jfk, temperature=0.0)
    assert "ask not what your country can do for you" in result["text"].lower()
    assert result["segments"][0]["text"].startswith(" ") and result["segments"][-1]["end"] <= 11.1
    with pytest.raises(WhisperError, match="decodes greedily"):
        model.transcribe(jfk, beam_size=5)
    with pytest.raises(WhisperError, match="runs float16 weights"):
        mw.load_model("tiny.en", backend="whisper.cpp", dtype="float32")


def test_whisper_cpp_from_the_command_line(speech, monkeypatch, tmp_path, capsys):
    pytest.importorskip("pywhispercpp", reason="the peers extra")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli.main(["transcribe", str(speech / "jfk.wav"), "--backend", "whisper.cpp"]) == 0
    assert "ask not what your country can do for you" in capsys.readouterr().out.lower()
    assert cli.main(["transcribe", str(speech / "jfk.wav"), "--backend", "whisper.cpp",
                     "--compression-ratio-threshold", "3"]) == 1
    assert "not by compression ratio" in capsys.readouterr().err
