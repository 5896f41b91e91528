"""Long-form transcription on the 124.6 s lecture: openai-whisper parity, WER, output files."""

from __future__ import annotations

import json
from dataclasses import replace

import jiwer
import numpy as np
import pytest
import srt
import webvtt
import whisper
from whisper.normalizers import EnglishTextNormalizer

import max_whisper as mw
from max_whisper.outputs import write_result
from max_whisper.features import LogMelFeatures
from max_whisper.transcribe import MIN_STREAM_WINDOWS, contiguous_runs, speech_windows, stream_count
from max_whisper.vad import VadOptions, speech_regions
from conftest import mixed_recordings, references


@pytest.fixture(scope="module")
def lecture(speech):
    return mw.load_audio(speech / "lecture.flac")


@pytest.fixture(scope="module")
def ours(tiny, lecture):
    return tiny.transcribe(lecture)


@pytest.fixture(scope="module")
def theirs(tiny_ref, lecture):
    return whisper.transcribe(tiny_ref, lecture, fp16=False)


def wer(reference: str, hypothesis: str) -> float:
    norm = EnglishTextNormalizer()
    return 100 * jiwer.wer(norm(reference), norm(hypothesis))


@pytest.mark.parametrize("held_frames", [LogMelFeatures.HELD_FRAMES, 0], ids=["held", "on-demand"])
def test_windowed_features_equal_whole_file_features(lecture, held_frames, monkeypatch):
    monkeypatch.setattr(LogMelFeatures, "HELD_FRAMES", held_frames)  # 0: as a recording over 30 min
    whole = mw.log_mel_spectrogram(lecture, padding=mw.audio.N_SAMPLES)
    windows = LogMelFeatures(lecture, padding=mw.audio.N_SAMPLES)
    for start in (0, 1234, 9000, whole.shape[1] - 3000):
        assert np.array_equal(windows.window(start, 3000), whole[:, start:start + 3000])
    assert (windows._pass_one[1] is not None) == (held_frames > 0)


def test_lecture_tokens_equal_openai_transcribe(ours, theirs):
    assert [s["tokens"] for s in ours["segments"]] == [s["tokens"] for s in theirs["segments"]]
    assert [(s["start"], s["end"], s["seek"]) for s in ours["segments"]] == \
        [(s["start"], s["end"], s["seek"]) for s in theirs["segments"]]
    assert ours["text"] == theirs["text"]


def test_lecture_wer_within_a_point_of_openai(ours, theirs):
    ref = references()["lecture.flac"]
    ours_wer, theirs_wer = wer(ref, ours["text"]), wer(ref, theirs["text"])
    assert ours_wer <= theirs_wer + 1.0
    assert ours_wer < 15.0  # and the transcript is a real one


def test_segments_cover_the_file_in_order(ours, lecture):
    segments = ours["segments"]
    duration = len(lecture) / mw.audio.SAMPLE_RATE
    assert segments[0]["start"] < 1.0
    assert segments[-1]["end"] > duration - 3.0
    for a, b in zip(segments, segments[1:]):
        assert a["start"] <= a["end"] <= b["start"] + 1e-6 <= b["end"] + 1e-6
    assert [s["id"] for s in segments] == list(range(len(segments)))


def test_result_has_openai_keys(ours, theirs):
    assert set(ours) == set(theirs)
    assert set(ours["segments"][0]) == set(theirs["segments"][0])


def test_output_files_parse(ours, tmp_path):
    for fmt in ("txt", "srt", "vtt", "tsv", "json"):
        write_result(ours, tmp_path / "lecture", fmt)
    spoken = [s for s in ours["segments"] if s["text"].strip()]
    subs = list(srt.parse((tmp_path / "lecture.srt").read_text()))
    assert len(subs) == len(spoken)
    assert subs[0].content == spoken[0]["text"].strip()
    assert subs[-1].end.total_seconds() == pytest.approx(spoken[-1]["end"], abs=1e-3)
    cues = webvtt.read(str(tmp_path / "lecture.vtt"))
    assert len(cues) == len(spoken) and cues[1].text == spoken[1]["text"].strip()
    assert json.loads((tmp_path / "lecture.json").read_text()) == json.loads(json.dumps(ours))
    tsv = (tmp_path / "lecture.tsv").read_text().splitlines()
    assert tsv[0] == "start\tend\ttext" and len(tsv) == len(ours["segments"]) + 1
    assert (tmp_path / "lecture.txt").read_text().split() == " ".join(s["text"] for s in ours["segments"]).split()


def test_timestamps_format():
    assert mw.outputs.format_timestamp(3725.5, True, ",") == "01:02:05,500"
    assert mw.outputs.format_timestamp(65.0) == "01:05.000"


def test_failed_write_keeps_the_previous_file(ours, tmp_path, monkeypatch):
    good = mw.outputs.write_result(ours, tmp_path / "talk", "json")
    before = good.read_text()

    def broken(result, f, options):
        f.write('{"partial": ')
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(mw.outputs.WRITERS, "json", broken)
    with pytest.raises(OSError):
        write_result(ours, tmp_path / "talk", "json")
    assert good.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["talk.json"]


def test_batched_windows_cover_the_lecture_speech(tiny, lecture, monkeypatch):
    """The throughput mode's streams (the lecture's windows as 4 streams here) cover the speech to its end,
    their segments in order across the streams' junctions."""
    monkeypatch.setattr("max_whisper.transcribe.MIN_STREAM_WINDOWS", 1)
    regions = speech_regions(lecture, VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160))
    speech_frames = sum(end - start for start, end in regions) // mw.features.HOP_LENGTH
    windows = speech_windows(regions, speech_frames)
    assert windows[0][0] == 0 and all(0 < n <= 3000 for _, n in windows)
    assert all(a + n == b for (a, n), (b, _) in zip(windows, windows[1:]))
    assert abs(windows[-1][0] + windows[-1][1] - speech_frames) <= 1
    result = tiny.transcribe(lecture, temperature=0.0, batch_size=4, word_timestamps=True)
    segments = result["segments"]
    assert segments[-1]["end"] > len(lecture) / mw.audio.SAMPLE_RATE - 3.0
    for a, b in zip(segments, segments[1:]):
        assert a["start"] <= a["end"] <= b["start"] + 1e-6
    words = [w for s in segments for w in s["words"]]
    assert all(a["start"] <= a["end"] <= b["start"] + 1e-6 for a, b in zip(words, words[1:]))
    assert wer(references()["lecture.flac"], result["text"]) < 15.0  # sequential 9.54


def test_streams_are_at_least_min_stream_windows_long():
    """Up to batch_size streams, none shorter than MIN_STREAM_WINDOWS: a short recording is one stream."""
    assert MIN_STREAM_WINDOWS == 4
    assert [stream_count(n, 8) for n in (0, 1, 5, 7, 8, 12, 31, 32, 100)] == [1, 1, 1, 1, 2, 3, 7, 8, 8]
    assert stream_count(67, 16) == 16 and stream_count(100, 1) == 1
    runs = contiguous_runs(list(range(31)), stream_count(31, 8))
    assert min(map(len, runs)) >= MIN_STREAM_WINDOWS and sum(runs, []) == list(range(31))


def test_batched_short_recording_is_the_sequential_loop(tiny, lecture):
    """A recording of fewer than 2 * MIN_STREAM_WINDOWS windows is one stream in the throughput mode: the
    sequential loop over the same speech regions, token for token."""
    vad = {"min_silence_duration_ms": 160, "max_speech_duration_s": 30}
    regions = speech_regions(lecture, VadOptions(**vad))
    windows = speech_windows(regions, sum(end - start for start, end in regions) // mw.features.HOP_LENGTH)
    assert 3 <= len(windows) < 2 * MIN_STREAM_WINDOWS
    batched = tiny.transcribe(lecture, temperature=0.0, batch_size=8)
    sequential = tiny.transcribe(lecture, temperature=0.0, vad_filter=True, vad_parameters=vad)
    assert len(batched["segments"]) > 10 and batched["text"] == sequential["text"]
    assert [s["tokens"] for s in batched["segments"]] == [s["tokens"] for s in sequential["segments"]]
    assert [(s["start"], s["end"]) for s in batched["segments"]] == [(s["start"], s["end"]) for s in sequential["segments"]]


def test_files_at_once_give_each_file_its_own_transcript(tiny, tiny_step, speech, tmp_path):
    """Files transcribed together, their windows in one batch on the step graph (each after its own
    previous text, prompts of different lengths), give the transcripts each gets alone."""
    from max_whisper.batching import transcribe_files

    paths = mixed_recordings(tmp_path, speech) + [speech / "jfk.wav"]
    encoder_calls = lambda: tiny_step.session.timings.calls.get("encoder", 0)  # noqa: E731
    before = encoder_calls()
    alone = [tiny_step.transcribe(p, temperature=0.0) for p in paths]
    windows = encoder_calls() - before
    together = list(transcribe_files(tiny_step, paths, 4, mw.TranscribeOptions(temperature=0.0)))
    assert encoder_calls() - before - windows < windows  # windows of different files shared batches
    assert [p for p, _, _ in together] == paths
    for (_, audio, ours), theirs in zip(together, alone):
        assert len(audio) > 0 and len(ours["segments"]) > 1
        assert [s["tokens"] for s in ours["segments"]] == [s["tokens"] for s in theirs["segments"]]
        assert ours["text"] == theirs["text"]


def test_files_at_once_stopped_early_leave_no_thread_waiting(tiny, speech):
    """Closing the results early (Ctrl-C in the CLI) drops the files not started and fails the windows
    still waiting, so every transcription thread ends."""
    import threading

    from max_whisper.batching import transcribe_files

    done = transcribe_files(tiny, [speech / "jfk.wav"] * 6, 2, mw.TranscribeOptions(temperature=0.0))
    path, audio, result = next(done)
    assert "ask not what your country" in result["text"]
    done.close()
    for thread in threading.enumerate():
        if thread.name.startswith(("transcribe", "window-batcher")):
            thread.join(timeout=120)
            assert not thread.is_alive(), thread.name


def test_batched_streams_condition_each_window_on_its_stream(tiny, lecture, monkeypatch):
    """The throughput mode's streams: each step decodes the next window of every stream together, a
    stream's first window without text and every later one after its own stream's text."""
    calls = []
    decode = tiny.decode_windows

    def spy(mels, options, prompts=None, frames=None):
        calls.append([list(p) for p in prompts] if prompts is not None else [options.prompt] * len(mels))
        return decode(mels, options, prompts=prompts, frames=frames)

    monkeypatch.setattr(tiny, "decode_windows", spy)
    monkeypatch.setattr("max_whisper.transcribe.MIN_STREAM_WINDOWS", 1)  # the lecture's windows as 2 streams
    result = tiny.transcribe(lecture, temperature=0.0, batch_size=2)
    assert wer(references()["lecture.flac"], result["text"]) < 15.0
    batches = [rows for rows in calls if len(rows) == 2]
    assert len(batches) >= 2 and [len(rows) for rows in calls[:len(batches)]] == [2] * len(batches)
    assert batches[0] == [[], []]  # both heads without text
    assert all(all(rows) for rows in batches[1:])  # then each after its own stream's text
    first, second = ([rows[k] for rows in batches] for k in (0, 1))
    assert all(a == b[:len(a)] for a, b in zip(first, first[1:])) and all(a == b[:len(a)] for a, b in zip(second, second[1:]))
    assert not set(map(tuple, first[1:])) & set(map(tuple, second[1:]))  # each its own text


def assert_window_text_kept(tiny, tokens: list[int], text: str) -> None:
    """A window's decode (its tokens) is in the lecture's transcript `text` (its first 80 characters), and the
    transcript is about as good as the sequential loop's (9.54 %)."""
    tokenizer = tiny.tokenizer("en")
    first_words = tokenizer.decode([t for t in tokens if t < tokenizer.eot]).strip()[:80]
    assert len(first_words) == 80 and first_words in text
    assert wer(references()["lecture.flac"], text) < 15.0


@pytest.mark.parametrize("batch_size", [2, None])
def test_a_looped_throughput_window_is_read_again_without_its_streams_text(tiny, lecture, monkeypatch, batch_size):
    """At temperature 0 alone, a throughput stream's window still repetitive (a loop its prompt carried: 20 s of
    one recording's text) is decoded once more without the stream's text, and that text is kept when it is not
    repetitive; the sequential loop (openai-whisper's rules) keeps the loop. The first window decoded after
    its own text is decoded for real, its compression ratio made that of a loop."""
    decode = tiny.decode_windows
    window: list[np.ndarray] = []  # the window made to look looped
    retried: list[list[int]] = []  # the tokens of its context-free decode

    def looped(mels, options, prompts=None, frames=None):
        results = decode(mels, options, prompts=prompts, frames=frames)
        rows = prompts if prompts is not None else [options.prompt] * len(mels)
        if not window and any(rows):
            k = next(i for i, p in enumerate(rows) if p)
            window.append(mels[k].copy())
            results[k] = replace(results[k], compression_ratio=3.0)
        elif window and len(mels) == 1 and not options.prompt and prompts is None and np.array_equal(mels[0], window[0]):
            retried.append(results[0].tokens)
        return results

    monkeypatch.setattr(tiny, "decode_windows", looped)
    monkeypatch.setattr("max_whisper.transcribe.MIN_STREAM_WINDOWS", 1)  # the lecture's windows as 2 streams
    vad = {"min_silence_duration_ms": 160, "max_speech_duration_s": 30}
    options = {"batch_size": batch_size, "vad_parameters": vad} if batch_size else {}
    result = tiny.transcribe(lecture, temperature=0.0, **options)
    assert window  # a window after its own text was made to look looped
    if batch_size is None:
        assert retried == []
        return
    assert len(retried) == 1
    assert_window_text_kept(tiny, retried[0], result["text"])


@pytest.mark.parametrize("temperature", [(0.0,), (0.0, 0.2)])
def test_throughput_mode_keeps_a_window_the_no_speech_rule_would_skip(tiny, lecture, monkeypatch, temperature):
    """A throughput stream's audio is speech by the VAD that cut it, so a window whose decode looks like
    silence to openai-whisper's rule (no-speech probability over 0.6, average log probability under -1) is
    not skipped, as the sequential loop skips it (a repetition loop decoded so once dropped a minute of
    speech): at temperature 0 alone its text is kept; with a fallback temperature it is decoded again there,
    alone, and that text is kept. The second stream's first window is decoded for real, its scores made to
    look like silence."""
    decode = tiny.decode_windows
    window: list[np.ndarray] = []  # the window made to look like silence
    kept: list[list[int]] = []  # its tokens, then those of its retries
    retries: list[float] = []

    def silence_scored(mels, options, prompts=None, frames=None):
        results = decode(mels, options, prompts=prompts, frames=frames)
        if not window:
            assert len(results) == 2  # both streams' first windows
            window.append(mels[1].copy())
            results[1] = replace(results[1], no_speech_prob=0.95, avg_logprob=-1.5)
            kept.append(results[1].tokens)
        elif len(results) == 1 and np.array_equal(mels[0], window[0]):
            retries.append(options.temperature)
            kept.append(results[0].tokens)
        return results

    monkeypatch.setattr(tiny, "decode_windows", silence_scored)
    monkeypatch.setattr("max_whisper.transcribe.MIN_STREAM_WINDOWS", 1)  # the lecture's windows as 2 streams
    vad = {"min_silence_duration_ms": 160, "max_speech_duration_s": 30}
    result = tiny.transcribe(lecture, temperature=temperature, batch_size=2, vad_parameters=vad)
    assert retries == list(temperature[1:])  # retried alone at the next temperature, where there is one
    assert_window_text_kept(tiny, kept[-1], result["text"])
