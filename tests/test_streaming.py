"""Live transcription: the streaming transcriber, `max-whisper live`, and the server's WebSocket endpoint
(a real uvicorn server, the `websockets` client)."""

from __future__ import annotations

import io
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from max_whisper import cli, load_audio, streaming
from max_whisper.bench import word_error_rate
from max_whisper.errors import WhisperError
from max_whisper.features import HOP_LENGTH, N_FRAMES
from max_whisper.server import ServerOptions
from max_whisper.streaming import StreamingOptions, StreamingTranscriber, StreamUpdate, pcm_chunks, replay, words_text
from max_whisper.transcribe import TranscribeOptions, transcribe_with

from conftest import REPO, as_pcm16, references, running_server, write_wav

# Five recordings one after another with pauses: 32 s, more than one window, so the buffer is cut.
PARTS = ["speech/sense_and_sensibility_01_austen_64kb-0870.wav", "speech/sense_and_sensibility_01_austen_64kb-0880.wav",
         "audio/vad_phrase1.flac", "speech/jfk.wav", "speech/sense_and_sensibility_01_austen_64kb-0890.wav"]
SAID = " ".join({**references(), "vad_phrase1.flac": "The weather station recorded heavy rain over the northern hills."}
                [part.split("/")[1]] for part in PARTS)  # tests/speech/refs.tsv, tests/audio/README.md
OPTIONS = TranscribeOptions.from_kwargs(word_timestamps=True, temperature=0.0)  # the live defaults


@pytest.fixture(scope="module")
def recording() -> np.ndarray:
    pause = np.zeros(8000, dtype=np.float32)
    return np.concatenate([x for part in PARTS for x in (load_audio(REPO / "tests" / part), pause)])


@pytest.fixture(scope="module")
def offline(tiny, recording) -> str:
    return transcribe_with(tiny, recording, OPTIONS)["text"]


@pytest.fixture(scope="module")
def replayed(tiny, recording) -> tuple[StreamingTranscriber, list[StreamUpdate], list[float]]:
    """The recording streamed on simulated time with the default options: the transcriber, its updates and
    the buffer's length after each."""
    transcriber = StreamingTranscriber(tiny, OPTIONS)
    return (transcriber, *replay_recorded(transcriber, recording))


def assert_as_close_to_what_was_said(text: str, offline: str) -> None:
    """A stream's final text is as close to what was said as the offline transcript of the recording (within 3
    WER points): each reads a few words the other does not."""
    assert word_error_rate([SAID], [text])[0] <= word_error_rate([SAID], [offline])[0] + 3.0, (offline, text)


def replay_recorded(transcriber: StreamingTranscriber, audio: np.ndarray) -> tuple[list[StreamUpdate], list[float]]:
    """`replay` the audio: its updates and the buffer's length after each."""
    updates, buffers = [], []

    def on_update(update: StreamUpdate) -> None:
        updates.append(update)
        buffers.append(transcriber.buffer_s)

    replay(transcriber, audio, on_update)
    return updates, buffers


def test_stream_commits_its_text_once_and_never_revises(replayed, recording, offline):
    transcriber, updates, buffers = replayed
    step = round(transcriber.streaming.min_chunk_s * 16000)
    assert len(updates) == -(-recording.size // step) + 1  # one per min_chunk_s, then finish
    committed = [w for u in updates for w in u.committed]
    assert committed == transcriber.committed  # each word committed once, in order, never taken back
    assert all(a["start"] <= b["start"] + 0.1 for a, b in zip(committed, committed[1:]))
    assert committed[-1]["end"] <= recording.size / 16000 + 0.01
    streaming = transcriber.streaming
    assert max(buffers) <= streaming.max_buffer_s + 1.0  # cut as it goes
    assert any(after < before for before, after in zip(buffers, buffers[1:]))  # a cut (its rule: test_a_cut_keeps_up_to_keep_s_of_the_buffer_as_context)
    assert_as_close_to_what_was_said(transcriber.text, offline)
    result = transcriber.result()
    assert result["text"] == transcriber.text and result["language"] == "en"
    assert "".join(s["text"] for s in result["segments"]) == result["text"]


def _words(text: str, start: float, step: float = 0.4) -> list[dict]:
    return [{"word": f" {w}", "start": start + i * step, "end": start + (i + 1) * step - 0.05, "probability": 0.9}
            for i, w in enumerate(text.split())]


def test_new_words_follow_the_committed_words_read_again(tiny):
    """A decode that stopped early can stretch a committed word's time seconds past its place: that word is
    not new (by time alone it was committed twice, and the words a later decode read before its stretched
    end were dropped: a whole sentence of one recording). A later real repeat of committed words is new."""
    transcriber = StreamingTranscriber(tiny, OPTIONS)
    committed = _words("Astronomers divide comets into two broad groups. Short", 37.0)
    transcriber.committed, transcriber._committed_in_buffer = list(committed), list(committed)
    read_again = [dict(w) for w in committed]
    read_again[-1].update(start=46.22, end=46.98)  # the last word stretched to the decode's end
    assert transcriber._new_words(read_again) == []
    following = _words("period comets return", committed[-1]["end"] + 0.05)
    assert transcriber._new_words([dict(w) for w in committed] + following) == following
    repeat = _words("and again two broad groups. Short", following[-1]["end"] + 1.0)
    assert transcriber._new_words([dict(w) for w in committed] + following + repeat) == following + repeat
    reread_otherwise = _words("Astronomers divide comets in two broad groups, short", 37.0)  # no run of 2 to anchor on
    assert transcriber._new_words(reread_otherwise + following + repeat) == following + repeat


def test_a_cut_at_a_sentence_end_lets_the_buffer_move_on(tiny):
    """The buffer's start summed to a hair before the committed sentence end it was cut at (27.8 s: a float
    sum of earlier cuts): that sentence end stayed in the buffer, every later trim cut at it again without
    moving, and a live stream committed nothing for 70 s (traced at real speed). Now the word cut at leaves,
    and a cut that would not move the start is not taken."""
    transcriber = StreamingTranscriber(tiny, OPTIONS)
    start = 27.8 - 1e-12
    over_max = round((transcriber.streaming.max_buffer_s + 1.0) * 16000)
    transcriber._offset, transcriber._audio = start, np.zeros(over_max, dtype=np.float32)
    sentence = _words("a spectrum.", 27.0)
    sentence[-1]["end"] = 27.8
    later = _words("we slide a short window along the signal and measure how much energy falls", 28.1)
    transcriber.committed = sentence + later
    transcriber._committed_in_buffer = [sentence[-1]] + later  # as the cut at 27.8 left it before
    transcriber._trim()
    assert transcriber._offset > 30.0  # over max_buffer_s without a sentence end: cut after the last word
    assert transcriber._offset == pytest.approx(later[-1]["end"], abs=1e-4)
    transcriber._offset, transcriber._committed_in_buffer = start, list(sentence)
    transcriber._cut_at(27.8)
    assert transcriber._committed_in_buffer == []


def test_a_cut_keeps_up_to_keep_s_of_the_buffer_as_context(tiny):
    """Over trim_s, the buffer is cut at the first committed sentence end that leaves at most keep_s of it;
    where none does, at the last one."""
    def trimmed(keep_s: float, sentence_ends: list[float]) -> float:
        transcriber = StreamingTranscriber(tiny, OPTIONS, StreamingOptions(trim_s=24.0, keep_s=keep_s))
        transcriber._audio = np.zeros(25 * 16000, dtype=np.float32)  # the buffer: 0-25 s
        words = _words(" ".join(["word."] * len(sentence_ends)), 0.0)
        for word, end in zip(words, sentence_ends):
            word.update(start=end - 0.3, end=end)
        transcriber.committed, transcriber._committed_in_buffer = list(words), list(words)
        transcriber._trim()
        return transcriber._offset

    assert trimmed(20.0, [3.0, 4.5, 9.0, 16.0]) == pytest.approx(9.0)  # leaves 16 s; 4.5 would leave 20.5
    assert trimmed(20.0, [2.0, 4.0]) == pytest.approx(4.0)  # none leaves 20 s or less: the last one
    assert trimmed(0.0, [3.0, 9.0, 16.0]) == pytest.approx(16.0)  # keep_s 0: the last sentence end


def test_a_stream_sent_in_one_burst_is_cut_at_a_sentence_end(tiny, recording, offline):
    """The whole recording before the first decode (a client sending faster than real time): no decode to agree
    with and a buffer over max_buffer_s, so the words read are committed without agreement, up to the last sentence
    end among them, and the buffer is cut there. Cut after the last of them, mid-sentence ("...ask not what your
    country can do for"), the next decode was prompted with a sentence's head and read its rest, "you. Ask what
    you can do for your country.", as "your country." (as the server's burst tests did, at random). `finish` cuts
    a buffer of more than one window the same way."""
    transcriber = StreamingTranscriber(tiny, OPTIONS)
    transcriber.feed(recording)
    update = transcriber.update()
    assert update.committed and streaming._ends_sentence(update.committed[-1])
    assert transcriber._offset == pytest.approx(update.committed[-1]["end"], abs=1e-4)
    transcriber.finish()
    assert word_error_rate([offline], [transcriber.text])[0] <= 5.0, (offline, transcriber.text)
    ended = StreamingTranscriber(tiny, OPTIONS)  # the same at the stream's end: finish reads it a window at a time
    ended.feed(recording)
    assert ended.finish().committed == ended.committed and ended.decodes == 2
    assert word_error_rate([offline], [ended.text])[0] <= 5.0, (offline, ended.text)


def test_silence_stays_bounded_and_writes_nothing(tiny):
    transcriber = StreamingTranscriber(tiny, OPTIONS, StreamingOptions(min_chunk_s=2.0))
    updates, buffers = replay_recorded(transcriber, np.zeros(16000 * 70, dtype=np.float32))
    assert transcriber.text == "" and not any(u.committed or u.tentative for u in updates)
    assert max(buffers) <= transcriber.streaming.max_buffer_s + 2.0


def test_options_are_checked():
    with pytest.raises(WhisperError, match="trim_s"):
        StreamingOptions(trim_s=40.0)
    with pytest.raises(WhisperError, match="min_chunk_s"):
        StreamingOptions(min_chunk_s=0)
    with pytest.raises(WhisperError, match="keep_s"):
        StreamingOptions(keep_s=24.0)
    with pytest.raises(WhisperError, match="agreement"):
        StreamingOptions(agreement=1)


def test_pcm_chunks_from_a_pipe():
    samples = np.array([0, 16384, -32768, 32767], dtype="<i2")
    chunks = list(pcm_chunks(io.BufferedReader(io.BytesIO(samples.tobytes() * 1000)), chunk_s=0.01))
    assert np.concatenate(chunks).tolist() == (samples.astype(np.float32) / 32768).tolist() * 1000
    with pytest.raises(WhisperError, match="odd number of bytes"):
        list(pcm_chunks(io.BytesIO(b"\x00\x01\x02")))


def test_live_command_prints_committed_text(replayed, recording, tmp_path, capsys):
    """`--speed 0` streams on simulated time, so it prints what `replay` commits (checked against what was said
    above), every run the same."""
    path = write_wav(tmp_path / "talk.wav", recording)
    assert np.array_equal(load_audio(path), recording)  # the audio replay read
    assert cli.main(["live", str(path), "--speed", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith("[") and " --> " in line for line in lines)
    text = " ".join(line.split("] ", 1)[1] for line in lines)
    assert text.split() == replayed[0].text.split()


def test_live_command_plays_a_file_at_its_speed(tiny, capsys):
    path = REPO / "tests" / "speech" / "jfk.wav"
    started = time.perf_counter()
    assert cli.main(["live", str(path), "--speed", "20"]) == 0
    assert time.perf_counter() - started >= load_audio(path).size / 16000 / 20  # paced: not faster than asked
    assert "ask not what your country can do for you" in capsys.readouterr().out.replace("\n", " ").lower()


def test_live_command_defaults_to_the_streaming_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["live", "--help"])
    defaults = (StreamingOptions.for_device(gpu=False).min_chunk_s, StreamingOptions.for_device(gpu=True).min_chunk_s)
    assert defaults == (StreamingOptions.min_chunk_s, 0.5)
    shown = " ".join(capsys.readouterr().out.split())
    assert "default {:g} on the CPU, {:g} on a GPU".format(*defaults) in shown
    assert f"(default {StreamingOptions.agreement}: StreamingOptions.agreement" in shown
    assert StreamingOptions.for_device(gpu=True, min_chunk_s=1.5).min_chunk_s == 1.5


def test_live_command_reads_pcm_on_stdin(tiny, monkeypatch, capsys):
    audio = load_audio(REPO / "tests" / "speech" / "jfk.wav")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(as_pcm16(audio)))))
    assert cli.main(["live", "-"]) == 0
    assert "ask not what your country can do for you" in capsys.readouterr().out.replace("\n", " ").lower()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(b"\x00" * 3))))
    assert cli.main(["live", "-"]) == 2
    assert capsys.readouterr().err.strip() == "error: stdin: ended inside a sample (an odd number of bytes): not 16-bit PCM"


# --- the WebSocket endpoint ---


@pytest.fixture(scope="module")
def server(tiny):
    with running_server(tiny, ServerOptions(model_name="tiny.en", max_batch=8)) as (url, app):
        yield url.replace("http://", "ws://") + "/v1/audio/stream", url, app


def send_stream(ws_url: str, audio: np.ndarray, chunk_s: float = 0.25, extra: list | None = None) -> list[dict]:
    """Stream `audio` as s16le chunks (as fast as they go), then end; every event until done."""
    with connect(ws_url, max_size=None) as ws:
        for message in extra or []:
            ws.send(message)
        step = int(chunk_s * 16000)
        for first in range(0, audio.size, step):
            ws.send(as_pcm16(audio[first:first + step]))
        ws.send(json.dumps({"type": "end"}))
        events = []
        while not events or events[-1]["type"] != "done":
            events.append(json.loads(ws.recv(timeout=120)))
    return events


def committed_text(events: list[dict]) -> str:
    return "".join(e["text"] for e in events if e["type"] == "committed")


def test_websocket_stream(server, recording, offline):
    events = send_stream(server[0], recording)
    done = events[-1]
    assert done["text"] == committed_text(events) and done["duration"] == pytest.approx(recording.size / 16000, abs=0.01)
    assert_as_close_to_what_was_said(done["text"], offline)
    assert {e["type"] for e in events} == {"committed", "tentative", "done"}
    words = [w for e in events if e["type"] == "committed" for w in e["words"]]
    assert "".join(w["word"] for w in words) == done["text"] and all(w["end"] >= w["start"] for w in words)


def test_bad_chunks_get_an_error_event_and_the_stream_goes_on(server):
    audio = load_audio(REPO / "tests" / "speech" / "jfk.wav")
    events = send_stream(server[0], audio, extra=[b"\x01\x02\x03", "hello", json.dumps({"type": "pause"}), b""])
    errors = [e["message"] for e in events if e["type"] == "error"]
    assert len(errors) == 4 and "3 bytes is not s16le PCM" in errors[0] and "expected binary PCM" in errors[1]
    assert "ask not what your country can do for you" in events[-1]["text"].lower()
    with connect(server[0] + "?format=f32le") as ws:
        ws.send(np.array([0.5, np.nan], dtype="<f4").tobytes())
        assert "not PCM" in json.loads(ws.recv(timeout=30))["message"]
        ws.send(np.array([0.5, 2.0], dtype="<f4").tobytes())
        assert "beyond [-1, 1]" in json.loads(ws.recv(timeout=30))["message"]
        ws.send(audio.astype("<f4").tobytes())
        ws.send(json.dumps({"type": "end"}))
        events = [json.loads(m) for m in ws]
    assert events[-1]["type"] == "done" and "fellow americans" in events[-1]["text"].lower()


@pytest.mark.parametrize("query, message", [("?format=u8", "format must be one of"),
                                            ("?model=large", "not served here"),
                                            ("?language=de", "English-only"),
                                            ("?min_chunk=0", "min_chunk_s must be positive"),
                                            ("?min_chunk=9", "min_chunk_s must be at most"),
                                            ("?agreement=1", "agreement must be at least 2"),
                                            ("?agreement=two", "agreement must be a whole number"),
                                            ("?speed=2", "unknown stream parameter")])
def test_bad_parameters_close_the_stream(server, query, message):
    with connect(server[0] + query) as ws:
        event = json.loads(ws.recv(timeout=30))
        assert event["type"] == "error" and message in event["message"], event
        with pytest.raises(Exception, match="1008"):
            ws.recv(timeout=30)


def test_abrupt_disconnect_frees_the_stream(server, recording):
    health = server[1] + "/health"
    with connect(server[0]) as ws:
        ws.send(as_pcm16(recording[: 16000 * 8]))
        json.loads(ws.recv(timeout=60))  # a decode is under way or done
        assert httpx.get(health).json()["streams"] == 1
        ws.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the client is gone
        ws.socket.close()
    deadline = time.monotonic() + 60
    while httpx.get(health).json()["streams"] != 0:
        assert time.monotonic() < deadline, "the stream was not freed"
        time.sleep(0.1)
    assert "fellow americans" in send_stream(server[0], load_audio(REPO / "tests" / "speech" / "jfk.wav"))[-1]["text"].lower()


def test_streams_share_the_engine_batches(server, recording, offline):
    app = server[2]
    before = app.state.batcher.batches, app.state.batcher.windows
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: send_stream(server[0], recording)[-1]["text"], range(3)))
    batches, windows = app.state.batcher.batches - before[0], app.state.batcher.windows - before[1]
    assert windows > batches  # some decodes of different streams went together
    for text in results:
        assert_as_close_to_what_was_said(text, offline)


def test_a_stream_decodes_from_its_previous_tokens_until_its_buffer_is_cut(tiny, recording, monkeypatch):
    """Each decode is given the previous one's tokens as its draft while the buffer starts where it did (the
    same audio and more, after the same prompt), and none after a cut."""
    decodes = []
    real = streaming.transcribe_speech

    def spy(model, speech, options, **kwargs):  # noqa: ANN001, ANN003
        result = real(model, speech, options, **kwargs)
        decodes.append((transcriber._offset, options.decoding.draft,
                        tuple(t for s in result["segments"] for t in s["tokens"])))
        return result

    monkeypatch.setattr(streaming, "transcribe_speech", spy)
    transcriber = StreamingTranscriber(tiny, OPTIONS)
    replay(transcriber, recording, lambda update: None)
    drafted = cut = 0
    for (offset, _, tokens), (next_offset, draft, _) in zip(decodes, decodes[1:]):
        assert draft == (tokens if next_offset == offset else ())
        drafted, cut = drafted + bool(draft), cut + (next_offset != offset)
    assert drafted > len(decodes) // 2 and cut


def test_a_loop_after_the_streams_text_is_read_again_without_it(tiny, monkeypatch):
    """A buffer cut mid-sentence, its committed text ending "...the auction begins at": tiny.en read the
    buffer after that prompt as "5.5.5..." to the window's end (checked below), the loop was committed, and
    from then on it was every decode's prompt: a held-out recording's last 50 s came out as the loop. The decode
    is read again after the caller's prompt alone, and the stream keeps doing so until its buffer is cut."""
    audio = load_audio(REPO / "tests" / "audio" / "auction.flac")
    prompt = " A small truck wakes up the fish market with a send-in running. Inside the market auction begins at"
    looped = transcribe_with(tiny, audio, replace(OPTIONS, initial_prompt=prompt))
    assert looped["segments"][0]["compression_ratio"] > OPTIONS.compression_ratio_threshold
    prompts = []
    real = streaming.transcribe_speech

    def spy(model, speech, options, **kwargs):  # noqa: ANN001, ANN003
        prompts.append(options.initial_prompt)
        return real(model, speech, options, **kwargs)

    monkeypatch.setattr(streaming, "transcribe_speech", spy)
    transcriber = StreamingTranscriber(tiny, OPTIONS)
    transcriber.committed = _words(prompt, -8.0)  # committed before the buffer (it starts at 0)
    transcriber.feed(audio)
    first = transcriber.update()
    assert prompts == [prompt, None]
    text = first.committed_text + first.tentative_text
    assert "5.5" not in text and "restaurants and shops walk along" in text
    transcriber.feed(np.zeros(8000, dtype=np.float32))
    transcriber.update()
    assert prompts == [prompt, None, None]
    transcriber._cut_at(3.0)  # after a cut, the committed text before the buffer is the prompt again
    transcriber.update()
    assert prompts[3] is not None and prompt[-60:] in prompts[3]


def test_an_unpunctuated_stream_is_cut_at_whispers_segment_ends_and_not_prompted_with_its_text(tiny):
    """In tiny.en's unpunctuated style a stream commits no sentence end: its buffer was cut mid-sentence at
    max_buffer_s, and its text, as the next decodes' prompt, kept them in that style. A committed word that
    ended one of Whisper's segments in its decode is a place to cut, and text without a sentence end is no
    prompt."""
    transcriber = StreamingTranscriber(tiny, OPTIONS)
    transcriber._audio = np.zeros(25 * 16000, dtype=np.float32)  # the buffer: 0-25 s, over trim_s
    words = _words("every spring my neighbor plants a garden behind her house and every spring she promises", 0.0)
    transcriber._segment_ends = {words[8]["end"]}  # "house": the last word of the decode's first segment
    transcriber._commit(words)
    transcriber._trim()
    assert transcriber._offset == pytest.approx(words[8]["end"], abs=1e-4)
    assert transcriber._prompt() is None
    sentence = _words("that this year it will be smaller. It never is", 10.0)
    transcriber._commit(sentence)
    transcriber._cut_at(sentence[6]["end"])  # after "smaller."
    assert transcriber._prompt() == words_text(words + sentence[:7])


def test_a_decode_reads_its_buffer_then_silence(tiny, monkeypatch):
    """A decode reads the buffer as a whole window of audio, its speech then silence: the sequential loop pads
    a short window's log-mel with zeros (as openai-whisper's does), the features of a broadband noise, which
    every decode of a stream read right after its newest words."""
    audio = load_audio(REPO / "tests" / "speech" / "jfk.wav")  # 11 s
    windows = []
    real = streaming.transcribe_speech

    def spy(model, speech, options, **kwargs):  # noqa: ANN001, ANN003
        windows.append((speech.mel.n_frames - N_FRAMES, speech.mel.window(0, N_FRAMES)))  # the loop's content
        return real(model, speech, options, **kwargs)

    monkeypatch.setattr(streaming, "transcribe_speech", spy)
    transcriber = StreamingTranscriber(tiny, OPTIONS)
    transcriber.feed(audio)
    update = transcriber.update()
    [(content, mel)] = windows
    assert content == N_FRAMES  # a whole window read, not the buffer's frames padded with zeros
    silence = mel[:, audio.size // HOP_LENGTH + 2:]  # after the speech's last frames
    assert silence.shape[1] > 1500 and np.all(silence == silence.min()) and silence.max() < mel.max() - 1.0
    assert "ask not what your country can do for you" in (update.committed_text + update.tentative_text).lower()


class Recorded(StreamingTranscriber):
    """A stream that keeps every decode's new words."""

    def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.hypotheses: list[list[dict]] = []

    def _decode(self) -> list[dict]:
        words = super()._decode()
        self.hypotheses.append(words)
        return words


def test_three_decodes_agree_on_every_word_a_stream_of_agreement_3_commits(tiny, recording, offline):
    """With `agreement` 3, the words an update commits were read alike (their text, in a run) by the decode that
    commits them and the two before it; the stream still reads what was said."""
    transcriber = Recorded(tiny, OPTIONS, StreamingOptions(agreement=3))
    updates, _ = replay_recorded(transcriber, recording)
    keys = [[w["word"] for w in h] for h in transcriber.hypotheses]

    def holds(hypothesis: list[str], run: list[str]) -> bool:
        return any(hypothesis[i:i + len(run)] == run for i in range(len(hypothesis) - len(run) + 1))

    committed = 0
    for k, update in enumerate(updates[:-1]):  # the last is `finish`, which commits the rest
        run = [w["word"] for w in update.committed]
        if run:
            assert k >= 2 and all(holds(h, run) for h in keys[k - 2:k + 1]), (k, run)
            committed += len(run)
    assert committed > 40
    assert_as_close_to_what_was_said(transcriber.text, offline)
