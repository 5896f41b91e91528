"""The `max-whisper` command, run as users run it; bad inputs each get one line and an exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import max_whisper as mw
from max_whisper import WhisperError, cli, outputs
from conftest import mixed_recordings, write_wav


def run(*args):
    return subprocess.run([sys.executable, "-m", "max_whisper.cli", *args], capture_output=True, text=True, timeout=900)


def test_sample_transcribes():
    proc = run("transcribe", "--sample")
    assert proc.returncode == 0, proc.stderr
    assert "ask not what your country can do for you" in proc.stdout
    assert "transcribed 1/1 files: 11.0 s of audio" in proc.stderr


@pytest.fixture
def use_tiny(tiny, monkeypatch):
    """The CLI in-process, on the session's compiled tiny.en."""
    monkeypatch.setattr("max_whisper.backends.load_model", lambda *a, **k: tiny)


def bad_inputs(tmp_path, speech):
    """Each bad input and the one-line message it must give."""
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.mp3").write_text("not audio at all\n" * 100)
    (tmp_path / "truncated.flac").write_bytes((speech / "lecture.flac").read_bytes()[:40])
    (tmp_path / "nothing_here").mkdir()
    (tmp_path / "nothing_here" / "readme.txt").write_text("no audio")
    return {
        tmp_path / "missing.wav": "missing.wav: no such file",
        tmp_path / "empty.wav": "empty.wav: empty file (0 bytes)",
        tmp_path / "notes.mp3": "notes.mp3: not a readable audio file",
        tmp_path / "truncated.flac": "truncated.flac: ",
        tmp_path / "nothing_here": "nothing_here: folder has no audio files",
    }


@pytest.mark.parametrize("case", ["missing", "empty", "notes", "truncated", "nothing_here"])
def test_bad_input_reported_and_other_files_transcribed(tmp_path, speech, capsys, use_tiny, case):
    cases = bad_inputs(tmp_path, speech)
    bad = next(p for p in cases if p.name.startswith(case))
    out_dir = tmp_path / "out"
    code = cli.main(["transcribe", str(bad), str(speech / "jfk.wav"), "--output-dir", str(out_dir),
                     "--output-format", "txt"])
    out, err = capsys.readouterr()
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad.parent) in errors[0] and cases[bad] in errors[0]
    assert "ask not what your country" in out
    assert "ask not what your country" in (out_dir / "jfk.txt").read_text()


def test_silence_gives_an_empty_transcript(tmp_path, capsys, use_tiny):
    path = write_wav(tmp_path / "silence.wav", np.zeros(16000 * 20))
    code = cli.main(["transcribe", str(path), "--output-dir", str(tmp_path), "--output-format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == ""
    assert (tmp_path / "silence.json").exists()


def test_folder_is_walked_for_audio(tmp_path, speech, capsys, use_tiny):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "jfk.wav").write_bytes((speech / "jfk.wav").read_bytes())
    (tmp_path / "a" / "notes.txt").write_text("skip me")
    (tmp_path / "a" / "go.wav").write_bytes((speech / "goforward.wav").read_bytes())
    code = cli.main(["transcribe", str(tmp_path / "a"), "--output-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Go forward" in out and "ask not" in out
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(f"{stem}.{fmt}" for stem in ("go", "jfk") for fmt in ("json", "srt", "tsv", "txt", "vtt"))
    assert "transcribed 2/2 files" in err


def test_verbose_prints_timed_segments(speech, capsys, use_tiny):
    assert cli.main(["transcribe", str(speech / "jfk.wav"), "--verbose"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[00:00.000 --> ") and "ask not" in out


def test_unknown_model_exits_nonzero(capsys):
    assert cli.main(["transcribe", "--sample", "--model", "nonesuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown model 'nonesuch': use one of base, base.en, ")
    assert "large-v3-turbo" in err[0] and err[0].endswith("tiny.en, turbo, or the path of a model folder or .pt file")


def test_gpu_without_gpu_is_an_error_not_a_cpu_run(capsys, monkeypatch):
    from max import driver

    monkeypatch.setattr(driver, "accelerator_count", lambda: 0)  # as on CI: no GPU
    assert cli.main(["transcribe", "--sample", "--device", "gpu"]) == 2
    assert "device 'gpu' requested but MAX finds no GPU" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--device", "tpu"], ["--beam-size", "0"], ["--temperature", "-1"],
                                  ["--output-format", "docx"]])
def test_bad_options_exit_nonzero(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["transcribe", "--sample", *argv])
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_unknown_language_is_an_error(capsys):
    assert cli.main(["transcribe", "--sample", "--language", "klingon"]) == 2
    assert "unsupported language 'klingon'" in capsys.readouterr().err


def test_lecture_through_the_cli_matches_openai_wer(speech, tmp_path, capsys, use_tiny, tiny_ref):
    import json

    import jiwer
    import whisper
    from whisper.normalizers import EnglishTextNormalizer

    from conftest import references
    from max_whisper import load_audio

    code = cli.main(["transcribe", str(speech / "lecture.flac"), "--output-dir", str(tmp_path), "--output-format", "json"])
    assert code == 0, capsys.readouterr().err
    ours = json.loads((tmp_path / "lecture.json").read_text())
    theirs = whisper.transcribe(tiny_ref, load_audio(speech / "lecture.flac"), fp16=False)
    norm, ref = EnglishTextNormalizer(), references()["lecture.flac"]
    ours_wer, theirs_wer = (100 * jiwer.wer(norm(ref), norm(r["text"])) for r in (ours, theirs))
    assert abs(ours_wer - theirs_wer) <= 1.0
    assert ours["segments"][-1]["end"] > 121.0


def test_compiled_graphs_are_used_instead_of_compiling(tmp_path):
    out = tmp_path / "compiled"
    proc = run("compile", str(out), "--model", "tiny.en")
    assert proc.returncode == 0, proc.stderr
    # CPU: encoder, cross K/V, decoder, the one-row decoder, reorder and the word-timestamp alignment
    assert (out / "manifest.json").is_file() and len(list(out.glob("*.mef"))) == 6
    plain, compiled = run("transcribe", "--sample"), run("transcribe", "--sample", "--compiled", str(out))
    assert compiled.returncode == 0, compiled.stderr
    assert compiled.stdout == plain.stdout and "ask not what your country" in compiled.stdout
    words = run("transcribe", "--sample", "--compiled", str(out), "--word-timestamps", "-f", "json", "-o", str(tmp_path))
    assert words.returncode == 0, words.stderr
    assert len([w for s in json.loads((tmp_path / "jfk.json").read_text())["segments"] for w in s["words"]]) == 22
    again = run("compile", str(out))
    assert again.returncode == 2 and "already holds compiled graphs" in again.stderr


def test_compiled_folder_errors(tmp_path, capsys):
    assert cli.main(["transcribe", "--sample", "--compiled", str(tmp_path)]) == 2
    assert "not a folder written by `max-whisper compile`" in capsys.readouterr().err
    assert cli.main(["transcribe", "--sample", "--backend", "reference", "--compiled", str(tmp_path)]) == 2
    assert cli.main(["compile", str(tmp_path / "x"), "--gpu-arch", "sm_90"]) == 2
    assert "--gpu-arch needs --device gpu" in capsys.readouterr().err


def test_files_at_once_print_what_one_by_one_prints(tmp_path, speech, capsys, use_tiny):
    paths = [str(p) for p in mixed_recordings(tmp_path, speech)] + [str(tmp_path / "missing.wav")]
    assert cli.main(["transcribe", *paths]) == 1
    one_by_one = capsys.readouterr()
    assert cli.main(["transcribe", *paths, "--files-at-once", "3"]) == 1
    at_once = capsys.readouterr()
    assert at_once.out == one_by_one.out and at_once.out.count("==> ") == 3
    assert "missing.wav: no such file" in at_once.err


@pytest.mark.parametrize("argv", [["--batch-size", "4"], ["--backend", "reference"]])
def test_files_at_once_refuses_what_it_cannot_do(argv, capsys):
    assert cli.main(["transcribe", "--sample", "--files-at-once", "2", *argv]) == 2
    assert "--files-at-once needs the max backend, and no --batch-size" in capsys.readouterr().err


# --- defects found in review (issue 17): each fixed, each tested ---

@pytest.mark.parametrize("backend", ["reference", "hybrid"])
def test_reference_and_hybrid_backends_through_the_cli(backend, speech, capsys):
    """The CLI passes a backend only the options the user gave (it once always passed batch_size, which
    openai-whisper's transcribe does not take: a traceback)."""
    assert cli.main(["transcribe", str(speech / "jfk.wav"), "--backend", backend]) == 0, capsys.readouterr().err
    assert "ask not what your country can do for you" in capsys.readouterr().out


@pytest.mark.parametrize("flag", [["--silence-threshold-db", "-50"], ["--vad-filter"]])
def test_max_only_options_are_refused_by_other_backends(speech, capsys, flag):
    assert cli.main(["transcribe", str(speech / "jfk.wav"), "--backend", "reference", *flag]) == 2
    assert capsys.readouterr().err.strip() == ("error: --silence-threshold-db and --vad-filter/--vad-parameters are "
                                               "options of the max backend, not of reference")


def test_batch_size_is_the_max_and_faster_whisper_throughput_mode(speech, capsys):
    assert cli.main(["transcribe", str(speech / "jfk.wav"), "--backend", "reference", "--batch-size", "4"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --batch-size is the throughput mode of the max backend (and "
                                               "faster-whisper's BatchedInferencePipeline), not of reference")
    assert cli.main(["transcribe", str(speech / "jfk.wav"), "--backend", "faster-whisper", "--batch-size", "4"]) == 0
    assert "ask not what your country can do for you" in capsys.readouterr().out
    reference = mw.load_model("tiny.en", backend="reference")
    with pytest.raises(WhisperError, match="--batch-size .* is an option of the max backend"):
        reference.transcribe(str(speech / "jfk.wav"), batch_size=4)


def test_same_file_names_in_different_folders_keep_their_own_outputs(tmp_path, speech, capsys, use_tiny):
    for folder, clip in (("a", "jfk.wav"), ("b", "goforward.wav")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.wav").write_bytes((speech / clip).read_bytes())
    (tmp_path / "a" / "x.flac").write_bytes((speech / "cards_001.wav").read_bytes())  # same folder, same stem
    out = tmp_path / "out"
    inputs = [tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav", tmp_path / "a" / "x.flac"]
    assert cli.main(["transcribe", *map(str, inputs), "--output-dir", str(out), "--output-format", "txt"]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.txt"))
    assert written == ["a/x.flac.txt", "a/x.wav.txt", "b/x.txt"]
    assert "ask not" in (out / "a" / "x.wav.txt").read_text()
    assert "Go forward" in (out / "b" / "x.txt").read_text()
    assert "of clubs" in (out / "a" / "x.flac.txt").read_text()


def test_output_names_are_stems_unless_they_clash(tmp_path):
    a, b, c = tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav", tmp_path / "a" / "y.wav"
    assert outputs.output_names([a, c]) == [Path("x"), Path("y")]
    assert outputs.output_names([a, b, c, a]) == [Path("a/x"), Path("b/x"), Path("y"), Path("a/x")]  # a twice: one name


def test_english_only_model_refuses_another_language(speech, capsys, tiny, use_tiny):
    assert cli.main(["transcribe", str(speech / "jfk.wav"), "--language", "de"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == ("error: this model is English-only: it cannot "
                                                                "transcribe language 'de'; use a multilingual model such as base")
    with pytest.raises(WhisperError, match="English-only"):
        tiny.transcribe(str(speech / "jfk.wav"), language="German")
    with pytest.raises(WhisperError, match="English-only"):
        tiny.decode(np.zeros((80, 3000), np.float32), mw.DecodingOptions(language="fr"))
    assert tiny.transcribe(str(speech / "goforward.wav"), language="en")["language"] == "en"


class FailsOn:
    """The session's engine, with a failure that is not a WhisperError (as MAX or the OS raise them)
    when it transcribes audio of `n_samples`."""

    def __init__(self, model, n_samples: int, error: Exception):
        self.model, self.n_samples, self.error = model, n_samples, error

    def __getattr__(self, name):
        return getattr(self.model, name)

    def transcribe(self, audio, **options):
        if len(audio) == self.n_samples:
            raise self.error
        return self.model.transcribe(audio, **options)


@pytest.mark.parametrize("error", [RuntimeError("CUDA call failed: out of memory\nstack..."), MemoryError()])
def test_unexpected_failure_of_one_file_is_one_line_and_the_others_go_on(tmp_path, speech, capsys, monkeypatch,
                                                                          tiny, error):
    bad = speech / "goforward.wav"
    monkeypatch.setattr("max_whisper.backends.load_model",
                        lambda *a, **k: FailsOn(tiny, len(mw.load_audio(bad)), error))
    out = tmp_path / "out"
    code = cli.main(["transcribe", str(bad), str(speech / "jfk.wav"), "--output-dir", str(out), "--output-format", "txt"])
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad}: {type(error).__name__}" + (": CUDA call failed: out of memory" if str(error) else "")]
    assert "Traceback" not in captured.err
    assert (out / "jfk.txt").is_file() and not (out / "goforward.txt").exists()


def test_unexpected_failure_outside_a_file_is_one_line(capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("MAX runtime: device lost")

    monkeypatch.setattr("max_whisper.backends.load_model", broken)
    assert cli.main(["transcribe", "--sample"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: RuntimeError: MAX runtime: device lost") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_unwritable_output_dir_is_found_before_transcribing(tmp_path, capsys, monkeypatch):
    loads = []
    monkeypatch.setattr("max_whisper.backends.load_model", lambda *a, **k: loads.append(a))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.main(["transcribe", "--sample", "--output-dir", str(blocker / "subs")]) == 2
    assert f"error: {blocker / 'subs'}: cannot write output files there" in capsys.readouterr().err
    assert loads == []  # no model loaded, nothing transcribed


def test_silence_threshold_flag(tmp_path, capsys, use_tiny, tiny):
    """--silence-threshold-db off decodes windows the default skips."""
    rng = np.random.default_rng(7)
    path = write_wav(tmp_path / "hum.wav", 10 ** (-75 / 20) * rng.standard_normal(16000 * 20))
    calls = lambda: tiny.session.timings.calls.get("encoder", 0)  # noqa: E731
    before = calls()
    assert cli.main(["transcribe", str(path)]) == 0
    assert calls() == before  # the window's loudest 20 ms is under -60 dBFS: not decoded
    assert cli.main(["transcribe", str(path), "--silence-threshold-db", "off"]) == 0
    assert calls() > before
    with pytest.raises(SystemExit):
        cli.main(["transcribe", str(path), "--silence-threshold-db", "loud"])
