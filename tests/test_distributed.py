"""`transcribe --ray`: a corpus on a local Ray cluster (CPU, two engine workers) gives the plain CLI's
transcripts, skips what is done, reports a corrupt file and survives a worker killed mid-job.

Every Ray driver here runs in a process of its own, as the command line does: pyarrow's compute library
crashes in a process where MAX loaded first (MAX 26.7, pyarrow 26), and this test session loads tiny.en."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SHORT_CLIPS
from max_whisper import cli
from max_whisper.distributed import RESULTS, ResultsTable

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray cluster on this machine for the module, 4 logical CPUs (two engine actors, two front-end tasks);
    `ray start --block` ends it, and only it, when interrupted."""
    pytest.importorskip("ray", reason="the distributed extra: pip install 'max-whisper[distributed]'")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}  # a test cluster on loopback
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                             "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "4",
                             "--include-dashboard", "false", "--temp-dir", str(tmp_path_factory.mktemp("ray"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while True:  # the cluster takes its driver once the head's node is up
        up = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{port}')"],
                            capture_output=True, env=env)
        if up.returncode == 0 or head.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert up.returncode == 0, up.stderr.decode()[-2000:]
    yield f"127.0.0.1:{port}"
    head.send_signal(signal.SIGINT)
    head.wait(timeout=120)


def max_whisper(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "max_whisper.cli", *argv], capture_output=True, text=True,
                          timeout=900)


def table_rows(out: Path) -> list[dict]:
    return [json.loads(line) for shard in sorted((out / RESULTS).glob("*.jsonl")) for line in shard.open()]


def test_ray_gives_the_plain_cli_transcripts_and_a_rerun_skips_them(cluster, speech, tmp_path, capsys, tiny,
                                                                    monkeypatch):
    files = [str(speech / name) for name in SHORT_CLIPS]
    monkeypatch.setattr("max_whisper.backends.load_model", lambda *a, **k: tiny)  # the plain CLI in-process
    assert cli.main(["transcribe", *files, "-o", str(tmp_path / "plain"), "-f", "txt"]) == 0
    manifest = tmp_path / "corpus.txt"
    manifest.write_text("\n".join(files) + "\n")
    ray_out = tmp_path / "ray"
    argv = ["transcribe", str(manifest), "--ray", cluster, "--workers", "2", "--files-at-once", "2",
            "-o", str(ray_out), "-f", "txt"]
    done = max_whisper(*argv)
    assert done.returncode == 0, done.stderr
    assert f"transcribed {len(files)}/{len(files)} files (0 done before, 0 failed)" in done.stderr
    for name in SHORT_CLIPS:
        txt = Path(name).with_suffix(".txt").name
        assert (ray_out / txt).read_text() == (tmp_path / "plain" / txt).read_text(), name
    rows = table_rows(ray_out)
    assert sorted(r["path"] for r in rows) == sorted(str(Path(f).resolve()) for f in files)
    assert all(not r["error"] and r["duration"] > 0 and r["segments"] and r["language"] == "en" for r in rows)

    again = max_whisper(*argv)  # everything done: no cluster work, no new row
    assert again.returncode == 0 and f"transcribed 0/{len(files)} files ({len(files)} done before" in again.stderr
    assert len(table_rows(ray_out)) == len(files)

    (ray_out / "jfk.txt").unlink()  # an output gone: that file, and only it, is done again
    once_more = max_whisper(*argv)
    assert f"transcribed 1/{len(files)} files ({len(files) - 1} done before" in once_more.stderr
    assert (ray_out / "jfk.txt").read_text() == (tmp_path / "plain" / "jfk.txt").read_text()


def test_a_corrupt_file_is_reported_and_the_others_done(cluster, speech, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("jfk.wav", "cards_001.wav"):
        shutil.copy(speech / name, corpus / name)
    (corpus / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + os.urandom(4000))
    manifest = tmp_path / "corpus.parquet"  # a Parquet manifest, paths relative to it, written in a process of its own
    subprocess.run([sys.executable, "-c", "import sys, pyarrow as pa, pyarrow.parquet as pq; "
                    "pq.write_table(pa.table({'path': sys.argv[2:]}), sys.argv[1])", str(manifest),
                    *(f"corpus/{p.name}" for p in sorted(corpus.iterdir()))], check=True)
    out = tmp_path / "out"
    argv = ["transcribe", str(manifest), "--ray", cluster, "--workers", "2", "-o", str(out), "-f", "txt"]
    done = max_whisper(*argv)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(corpus / "broken.wav") in errors[0]
    assert "transcribed 2/3 files (0 done before, 1 failed)" in done.stderr
    broken = [r for r in table_rows(out) if r["error"]]
    assert len(broken) == 1 and broken[0]["path"] == str(corpus / "broken.wav") and broken[0]["text"] == ""
    assert "ask not what your country" in (out / "jfk.txt").read_text()
    assert not (out / "broken.txt").exists()

    again = max_whisper(*argv)  # the failed file is tried again, the others are done
    assert again.returncode == 1 and "transcribed 0/3 files (2 done before, 1 failed)" in again.stderr


KILLING_DRIVER = """
import os, signal, sys
from pathlib import Path
from max_whisper.distributed import CorpusJob, run_corpus

def worker_pids():
    pids = []  # the engine actors' processes: Ray titles them ray::MapWorker(MapBatches(_Transcriber))...
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
            if title.startswith(b"ray::") and b"_Transcriber" in title:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids

killed = []
def kill_one_worker(row):
    if not killed:  # after the first result: the other batches are queued or running on both workers
        pids = worker_pids()
        assert len(pids) == 2, pids
        os.kill(pids[0], signal.SIGKILL)
        killed.append(pids[0])

address, out, *files = sys.argv[1:]
summary = run_corpus([Path(f) for f in files], CorpusJob(workers=2, files_at_once=1), Path(out), ["txt"],
                     address=address, on_result=kill_one_worker)
print("killed, transcribed, failed:", len(killed), summary.transcribed, summary.failed)
"""


def test_a_worker_killed_mid_job_leaves_every_file_transcribed_once(cluster, speech, tmp_path, tiny):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    files = []
    for i in range(4):
        for name in ("cards_001.wav", "cards_005.wav"):
            files.append(corpus / f"{i}_{name}")
            shutil.copy(speech / name, files[-1])
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", KILLING_DRIVER, cluster, str(out), *map(str, files)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = next(line for line in done.stdout.splitlines() if line.startswith("killed, transcribed, failed:"))
    assert counts.split(":")[1].split() == ["1", str(len(files)), "0"]  # one worker killed, every file done
    rows = table_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(str(f) for f in files)  # each file once
    alone = {name: tiny.transcribe(speech / name)["text"] for name in ("cards_001.wav", "cards_005.wav")}
    assert all(r["text"] == alone[Path(r["path"]).name[2:]] for r in rows)
    assert all((out / f.with_suffix(".txt").name).exists() for f in files)


def test_results_table_takes_each_files_last_row_and_ignores_a_cut_line(tmp_path):
    table = ResultsTable(tmp_path)
    table.append({"path": "a", "error": "a: no such file"})
    table.append({"path": "a", "error": ""})
    table.close()
    with open(next(tmp_path.glob("*.jsonl")), "a") as f:
        f.write('{"path": "b", "err')  # a run killed while writing
    assert table.latest() == {"a": {"path": "a", "error": ""}}


def test_manifests_list_paths_relative_to_themselves(tmp_path, speech):
    (tmp_path / "list.txt").write_text(f"# corpus\n{speech / 'jfk.wav'}\n\nclips/a.wav\n")
    (tmp_path / "list.jsonl").write_text('{"path": "clips/a.wav"}\n{"path": "/data/b.flac", "speaker": 2}\n')
    files, problems = cli.expand_inputs([tmp_path / "list.txt", tmp_path / "list.jsonl"])
    assert problems == []
    assert files == [speech / "jfk.wav", tmp_path / "clips/a.wav", tmp_path / "clips/a.wav", Path("/data/b.flac")]
    (tmp_path / "bad.jsonl").write_text('{"path": "a.wav"}\n\n{"file": "b.wav"}\n')
    assert cli.expand_inputs([tmp_path / "bad.jsonl", tmp_path / "none.txt"])[1] == [
        f"{tmp_path / 'bad.jsonl'}:3: a manifest line needs a \"path\" string",
        f"{tmp_path / 'none.txt'}: cannot read the manifest: FileNotFoundError: [Errno 2] No such file or directory: "
        f"'{tmp_path / 'none.txt'}'"]


def test_ray_refuses_what_it_cannot_do(capsys, tmp_path):
    assert cli.main(["transcribe", "--sample", "--ray", "--batch-size", "4"]) == 2
    assert "--ray runs the max backend's sequential loop" in capsys.readouterr().err
    assert cli.main(["transcribe", "--sample", "--workers", "2"]) == 2
    assert "--workers needs --ray" in capsys.readouterr().err
    assert cli.main(["transcribe", "--ray", str(tmp_path), "--sample"]) == 2  # a folder taken as the address
    assert "--ray takes a cluster address, got the path" in capsys.readouterr().err
