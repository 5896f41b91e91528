"""An hour of audio in bounded memory: runs the benchmark benchmarks/suite/long_audio_memory.py in its own process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, speech_dir


@pytest.mark.slow
def test_one_hour_under_2_gb():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.suite.long_audio_memory", "--minutes", "60",
                           "--speech", str(speech_dir())], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(report)
    assert report["audio_s"] == 3600.0
    assert report["peak_rss_mib"] < 2048  # while transcribing (a cold-cache compile at load is apart)
    assert report["last_segment_end_s"] > 3590  # every window was transcribed
    assert report["text_chars"] > 50000
