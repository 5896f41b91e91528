"""The `max-whisper` command, run as users run it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from max_whisper import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "max_whisper.cli", *args], capture_output=True, text=True, timeout=900)


def test_sample_transcribes():
    proc = run("transcribe", "--sample")
    assert proc.returncode == 0, proc.stderr
    assert "ask not what your country can do for you" in proc.stdout


def test_bad_file_is_reported_and_others_still_transcribed(tmp_path, capsys, tiny, monkeypatch):
    monkeypatch.setattr("max_whisper.engine.load_model", lambda *a, **k: tiny)
    missing = tmp_path / "missing.wav"
    code = cli.main(["transcribe", str(missing), str(cli.sample_path())])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"error: {missing}: no such file" in err
    assert "ask not what your country" in out


def test_unknown_model_exits_nonzero(capsys):
    assert cli.main(["transcribe", "--sample", "--model", "nonesuch"]) == 2
    assert "unknown model 'nonesuch'" in capsys.readouterr().err


def test_bad_option_exits_nonzero():
    with pytest.raises(SystemExit) as e:
        cli.main(["transcribe", "--device", "tpu", "--sample"])
    assert e.value.code == 2
