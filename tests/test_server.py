"""The OpenAI-compatible server: a real uvicorn server on a loopback port, the real `openai` client."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import srt
import webvtt

from max_whisper import cli
from max_whisper.server import ServerOptions, create_app

from conftest import SHORT_CLIPS, running_server

UPLOAD_LIMIT_MB = 1.0  # every short clip is under it, lecture.flac (2.3 MB) is over


@pytest.fixture(scope="module")
def served(tiny):
    with running_server(tiny, ServerOptions(model_name="tiny.en", max_upload_mb=UPLOAD_LIMIT_MB, max_batch=8)) as s:
        yield s


@pytest.fixture(scope="module")
def url(served):
    return served[0]


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0)


@pytest.fixture
def cli_text(tiny, monkeypatch, capsys, speech):
    """What `max-whisper transcribe CLIP` prints (on the session's compiled tiny.en)."""
    monkeypatch.setattr("max_whisper.backends.load_model", lambda *a, **k: tiny)

    def run(clip: str) -> str:
        capsys.readouterr()
        assert cli.main(["transcribe", str(speech / clip)]) == 0
        return capsys.readouterr().out.strip()

    return run


def transcribe(client, speech, clip: str, **kwargs):
    with open(speech / clip, "rb") as f:
        return client.audio.transcriptions.create(model=kwargs.pop("model", "tiny.en"), file=f, **kwargs)


@pytest.mark.parametrize("clip", SHORT_CLIPS)
def test_transcription_matches_cli(client, speech, cli_text, clip):
    assert transcribe(client, speech, clip).text == cli_text(clip)


def test_openai_model_alias_and_text_format(client, speech, cli_text):
    text = transcribe(client, speech, "jfk.wav", model="whisper-1", response_format="text")
    assert text == cli_text("jfk.wav") + "\n"


def test_verbose_json(client, speech, tiny):
    result = transcribe(client, speech, "jfk.wav", response_format="verbose_json",
                        timestamp_granularities=["segment"])
    expected = tiny.transcribe(str(speech / "jfk.wav"))
    assert result.language == "english" and result.duration == pytest.approx(11.0, abs=0.01)
    assert result.text == expected["text"].strip()
    assert [(s.start, s.end, s.text, s.tokens) for s in result.segments] == \
        [(s["start"], s["end"], s["text"], s["tokens"]) for s in expected["segments"]]


@pytest.mark.parametrize("granularities", [["word"], ["word", "segment"]])
def test_verbose_json_words(client, speech, tiny, granularities):
    """timestamp_granularities[]=word through the official client: OpenAI's `words`, our word timings."""
    result = transcribe(client, speech, "jfk.wav", response_format="verbose_json",
                        timestamp_granularities=granularities)
    expected = tiny.transcribe(str(speech / "jfk.wav"), word_timestamps=True)
    words = [w for s in expected["segments"] for w in s["words"]]
    assert [(w.word, w.start, w.end) for w in result.words] == [(w["word"].strip(), w["start"], w["end"]) for w in words]
    assert len(result.words) == 22
    assert (result.segments is not None) == ("segment" in granularities)
    if result.segments is not None:
        assert [(s.start, s.end) for s in result.segments] == [(s["start"], s["end"]) for s in expected["segments"]]


def test_srt_and_vtt(client, speech):
    subtitles = list(srt.parse(transcribe(client, speech, "jfk.wav", response_format="srt")))
    cues = webvtt.from_string(transcribe(client, speech, "jfk.wav", response_format="vtt"))
    assert len(subtitles) == len(cues) >= 2
    assert subtitles[0].start.total_seconds() == 0.0 and "ask not" in subtitles[0].content
    for sub, cue in zip(subtitles, cues):
        assert sub.content == cue.text
        h, m, sec = cue.end.split(":")
        assert sub.end.total_seconds() == pytest.approx(3600 * int(h) + 60 * int(m) + float(sec), abs=1e-3)


def test_models_and_health(client, url):
    assert {m.id for m in client.models.list()} == {"tiny.en", "whisper-1"}
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny.en"


def test_concurrent_requests_are_batched_and_all_correct(client, served, speech, tiny):
    """16 good and 4 corrupt uploads at once: the good ones all get the CLI's text, the bad ones 400."""
    clips = SHORT_CLIPS * 2 + ["corrupt.wav"] * 4
    expected = {c: tiny.transcribe(str(speech / c))["text"].strip() for c in SHORT_CLIPS}
    batcher = served[1].state.batcher
    batches, windows = batcher.batches, batcher.windows

    def send(clip: str) -> str:
        if clip == "corrupt.wav":
            with pytest.raises(openai.BadRequestError, match="corrupt.wav: not a readable audio file"):
                client.audio.transcriptions.create(model="tiny.en", file=(clip, b"\x00\x01garbage" * 999))
            return "rejected"
        return transcribe(client, speech, clip).text

    with ThreadPoolExecutor(10) as pool:
        texts = list(pool.map(send, clips))
    assert texts == [expected.get(c, "rejected") for c in clips]
    assert batcher.windows - windows >= 2 * len(SHORT_CLIPS)
    assert batcher.batches - batches < batcher.windows - windows  # some windows shared a batch


# --- errors: OpenAI-style JSON, and the server keeps answering ---

def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]


def test_corrupt_upload_is_400(client):
    with pytest.raises(openai.BadRequestError, match="notes.wav: not a readable audio file"):
        client.audio.transcriptions.create(model="tiny.en", file=("notes.wav", b"this is not audio" * 100))


def test_non_audio_upload_is_400(client, speech):
    with pytest.raises(openai.BadRequestError, match="refs.tsv: "):
        with open(speech / "refs.tsv", "rb") as f:
            client.audio.transcriptions.create(model="tiny.en", file=f)


def test_empty_upload_is_400(client):
    with pytest.raises(openai.BadRequestError, match="empty.wav: empty file"):
        client.audio.transcriptions.create(model="tiny.en", file=("empty.wav", b""))


def test_too_large_upload_is_413(client, url, speech):
    with pytest.raises(openai.APIStatusError) as e:
        transcribe(client, speech, "lecture.flac")
    assert e.value.status_code == 413
    # without a Content-Length (chunked), the size is checked as the file is read
    data = (speech / "lecture.flac").read_bytes()
    body = (b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ntiny.en\r\n--b\r\nContent-Disposition: "
            b"form-data; name=\"file\"; filename=\"lecture.flac\"\r\n\r\n" + data + b"\r\n--b--\r\n")
    r = httpx.post(f"{url}/v1/audio/transcriptions", content=iter([body]),
                   headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and error_of(r)["code"] == "file_too_large"


def test_unknown_model_is_404(client, speech):
    with pytest.raises(openai.NotFoundError, match="model 'whisper-9' is not served here"):
        transcribe(client, speech, "jfk.wav", model="whisper-9")


def test_wrong_path_and_method(url):
    r = httpx.get(f"{url}/v1/audio/speech")
    assert r.status_code == 404 and "Not Found" in error_of(r)["message"]
    r = httpx.get(f"{url}/v1/audio/transcriptions")
    assert r.status_code == 405 and "Method Not Allowed" in error_of(r)["message"]


@pytest.mark.parametrize("fields, message", [
    ({"model": "tiny.en"}, "missing the audio 'file' field"),
    ({"model": "tiny.en", "response_format": "xml", "file": True}, "response_format 'xml'"),
    ({"model": "tiny.en", "temperature": "hot", "file": True}, "temperature must be a number"),
    ({"model": "tiny.en", "language": "klingon", "file": True}, "klingon"),
    ({"model": "tiny.en", "timestamp_granularities[]": "char", "file": True}, "must be segment and/or word"),
    ({"model": "tiny.en", "timestamp_granularities[]": "word", "file": True}, "need response_format verbose_json"),
    ({"file": True}, "missing the 'model' field"),
])
def test_bad_fields_are_400(url, speech, fields, message):
    files = {"file": ("jfk.wav", (speech / "jfk.wav").read_bytes())} if fields.pop("file", False) else None
    r = httpx.post(f"{url}/v1/audio/transcriptions", data=fields, files=files or {"other": ("x", b"x")})
    assert r.status_code == 400 and message in error_of(r)["message"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the openai client marks translations so
def test_translation_on_english_only_model_is_400(client, speech):
    with pytest.raises(openai.BadRequestError, match="English-only"):
        with open(speech / "jfk.wav", "rb") as f:
            client.audio.translations.create(model="tiny.en", file=f)


def test_full_queue_answers_503_with_retry_after(tiny, speech):
    """With one request admitted and the engine held, the next gets 503 at once; the first completes."""
    with running_server(tiny, ServerOptions(max_queue=1)) as (url, app):
        hold = threading.Event()
        app.state.batcher.jobs.put((lambda: hold.wait(30), (), _Ignored()))  # the engine thread waits
        files = {"file": ("jfk.wav", (speech / "jfk.wav").read_bytes())}
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{url}/v1/audio/transcriptions", data={"model": "tiny.en"},
                                files=files, timeout=60)
            deadline = time.monotonic() + 10
            while httpx.get(f"{url}/health").json()["requests_in_flight"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            busy = httpx.post(f"{url}/v1/audio/transcriptions", data={"model": "tiny.en"}, files=files)
            hold.set()
            assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
            assert error_of(busy)["code"] == "server_busy"
            assert first.result().status_code == 200 and "ask not" in first.result().json()["text"]


class _Ignored:
    def set_result(self, value):
        pass

    def set_exception(self, e):
        pass


def test_good_request_after_errors(client, speech, cli_text):
    """Last in this module: every error above left the server answering."""
    assert transcribe(client, speech, "goforward.wav").text == cli_text("goforward.wav")


def test_serve_command_starts_and_answers(speech, tmp_path):
    """`max-whisper serve` as a user runs it (a separate process; graphs come from the disk cache)."""
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "max_whisper.cli", "serve", "--port", str(port), "--max-batch", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.5)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        result = json.loads(transcribe(client, speech, "jfk.wav", response_format="verbose_json").model_dump_json())
        assert "ask not what your country" in result["text"] and result["segments"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_chunked_upload_over_the_limit_is_refused_before_it_is_read(tiny):
    """A body without Content-Length is counted as it arrives: 413 once the limit is passed, the rest never
    read (here the client would send 650 MB)."""
    import asyncio

    app = create_app(tiny, ServerOptions(max_upload_mb=1.0))
    head = (b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ntiny.en\r\n--b\r\nContent-Disposition: "
            b"form-data; name=\"file\"; filename=\"big.wav\"\r\n\r\n")
    chunk, pulled, sent = b"\x01" * 65536, 0, []

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": head if pulled == 1 else chunk, "more_body": pulled < 10_000}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/audio/transcriptions", "raw_path": b"/v1/audio/transcriptions", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", b"multipart/form-data; boundary=b"), (b"transfer-encoding", b"chunked")]}
    try:
        asyncio.run(app(scope, receive, send))
    finally:
        app.state.batcher.stop()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "file_too_large"
    assert pulled * len(chunk) < 2 * 2**20  # stopped reading just past the 1 MB limit


def test_english_only_model_refuses_another_language(client, speech):
    with pytest.raises(openai.BadRequestError, match="English-only: it cannot transcribe language 'de'"):
        transcribe(client, speech, "jfk.wav", language="de")


def test_silence_skip_can_be_turned_off(tiny, speech):
    """The server's --silence-threshold-db: by default a window of room noise is not decoded; off, it is."""
    import io
    import wave

    import numpy as np

    noise = (10 ** (-80 / 20) * np.random.default_rng(8).standard_normal(16000 * 5) * 32767).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(noise.tobytes())
    encodes = lambda: tiny.session.timings.calls.get("encoder", 0)  # noqa: E731
    for threshold, decoded in ((-60.0, False), (None, True)):
        with running_server(tiny, ServerOptions(silence_threshold_db=threshold)) as (url, _):
            before = encodes()
            r = httpx.post(f"{url}/v1/audio/transcriptions", data={"model": "tiny.en"},
                           files={"file": ("noise.wav", buffer.getvalue())}, timeout=120)
            assert r.status_code == 200
            assert (encodes() > before) == decoded
