"""Voice activity detection: Silero VAD v6 against faster-whisper's (onnxruntime, the same weights), its
speech regions, the times mapped back, and the acceptance cases on audio made here: espeak-ng phrases
(tests/audio/vad_phrase*.flac) with long pauses of room noise, noise alone, synthetic music alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import max_whisper as mw
from max_whisper import WhisperError, cli
from max_whisper.audio import SAMPLE_RATE
from max_whisper.bench import word_error_rate
from max_whisper.features import HOP_LENGTH, N_FRAMES
from max_whisper.transcribe import TranscribeOptions, speech_windows
from max_whisper.vad import SpeechMap, VadOptions, merge_regions, silero_vad, speech_regions

AUDIO = Path(__file__).parent / "audio"
PHRASES = ["The weather station recorded heavy rain over the northern hills.",
           "Please send the final report to the office before Friday.",
           "Turn off the lights in the kitchen."]


def room_noise(seconds: float, seed: int, level: float = 0.004) -> np.ndarray:
    """Brown-ish noise with mains hum and some hiss, about -45 dBFS: a quiet room."""
    rng = np.random.default_rng(seed)
    white = rng.normal(0, 1, int(seconds * SAMPLE_RATE))
    brown = np.cumsum(white)
    brown -= np.convolve(brown, np.ones(400) / 400, mode="same")  # no drift below 40 Hz
    brown /= brown.std()
    t = np.arange(len(white)) / SAMPLE_RATE
    hum = 0.3 * np.sin(2 * np.pi * 50 * t) + 0.15 * np.sin(2 * np.pi * 100 * t)
    return (level * (brown + hum + 0.3 * white)).astype(np.float32)


def music(seconds: float, seed: int) -> np.ndarray:
    """Plucked notes of a random melody, two a second, three harmonics each."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
    notes = []
    for _ in range(int(seconds * 2)):
        f0 = 220 * 2 ** (rng.integers(0, 12) / 12)
        notes.append(0.2 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3)) * np.exp(-3 * t))
    return np.concatenate(notes).astype(np.float32)


@pytest.fixture(scope="module")
def paused() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The three phrases 8 s apart in room noise, the last one 16 dB quieter; and each phrase's span (s)."""
    phrases = [mw.load_audio(AUDIO / f"vad_phrase{i}.flac") for i in (1, 2, 3)]
    audio = room_noise(1 + 8 + 8 + 3 + sum(len(p) for p in phrases) / SAMPLE_RATE, seed=0)
    spans, at = [], SAMPLE_RATE
    for i, phrase in enumerate(phrases):
        audio[at:at + len(phrase)] += (0.15 if i == 2 else 1.0) * phrase
        spans.append((at / SAMPLE_RATE, (at + len(phrase)) / SAMPLE_RATE))
        at += len(phrase) + 8 * SAMPLE_RATE
    return audio, spans


def recordings(speech: Path, paused) -> dict[str, np.ndarray]:
    clips = {name: mw.load_audio(speech / name) for name in ("jfk.wav", "cards_001.wav", "goforward.wav")}
    return {**clips, "paused": paused[0], "noise": room_noise(20, seed=1), "music": music(15, seed=2)}


def test_probabilities_equal_faster_whisper(speech, paused):
    from faster_whisper.vad import get_vad_model

    theirs_model = get_vad_model()
    for name, audio in recordings(speech, paused).items():
        ours = silero_vad()(audio)
        # faster-whisper pads with 1-512 zeros and zeroes its last window's final 64 samples (a quirk of
        # its reshape): every window but the last is the model's on the same samples.
        theirs = theirs_model(np.pad(audio, (0, 512 - len(audio) % 512)))
        assert len(ours) == -(-len(audio) // 512), name
        np.testing.assert_allclose(ours[:-1], theirs[:len(ours) - 1], atol=2e-5, err_msg=name)


def test_last_window_is_zero_padded(speech):
    audio = mw.load_audio(speech / "jfk.wav")[: 512 * 40 + 100]
    whole = silero_vad()(audio)
    padded = silero_vad()(np.pad(audio, (0, 412)))
    np.testing.assert_array_equal(whole, padded)


@pytest.mark.parametrize("options", [VadOptions(), VadOptions(min_silence_duration_ms=160, max_speech_duration_s=30),
                                     VadOptions(max_speech_duration_s=3, speech_pad_ms=30, min_speech_duration_ms=250),
                                     VadOptions(threshold=0.7, neg_threshold=0.2, min_silence_duration_ms=500)])
def test_regions_equal_faster_whisper(speech, paused, options):
    from faster_whisper.vad import VadOptions as TheirOptions
    from faster_whisper.vad import get_speech_timestamps

    theirs_options = TheirOptions(**{k: getattr(options, k) for k in ("threshold", "neg_threshold",
                                                                      "min_speech_duration_ms", "max_speech_duration_s",
                                                                      "min_silence_duration_ms", "speech_pad_ms")})
    for name, audio in recordings(speech, paused).items():
        audio = audio[: len(audio) - len(audio) % 512 + 200]  # a last window with real samples, past the quirk
        theirs = [(r["start"], r["end"]) for r in get_speech_timestamps(audio, theirs_options)]
        assert speech_regions(audio, options) == theirs, name


def test_regions_of_the_paused_recording_hold_each_phrase(paused):
    audio, spans = paused
    regions = [(s / SAMPLE_RATE, e / SAMPLE_RATE) for s, e in speech_regions(audio)]
    assert len(regions) == 3
    for (start, end), (span_start, span_end) in zip(regions, spans):
        assert start <= span_start + 0.2 and end >= span_end - 0.2  # the quiet phrase too
        assert start >= span_start - 1.0 and end <= span_end + 1.0  # not the pauses


def test_vad_options_are_checked():
    with pytest.raises(WhisperError, match="unknown vad parameter"):
        VadOptions.from_dict({"treshold": 0.5})
    with pytest.raises(WhisperError, match="threshold must be between 0 and 1"):
        VadOptions.from_dict({"threshold": 1.5})
    with pytest.raises(WhisperError, match="must be a number"):
        VadOptions.from_dict({"speech_pad_ms": "wide"})
    assert VadOptions.from_dict({"min_silence_duration_ms": "500"}).min_silence_duration_ms == 500
    with pytest.raises(WhisperError, match="vad_parameters needs vad_filter"):
        TranscribeOptions.from_kwargs(vad_parameters={"threshold": 0.6})
    with pytest.raises(WhisperError, match="clip_timestamps and vad_filter"):
        TranscribeOptions.from_kwargs(vad_filter=True, clip_timestamps="1,5")


def test_speech_map_restores_times():
    regions = [(16000, 48000), (160000, 176000)]  # 1-3 s and 10-11 s: speech-only 0-2 s and 2-3 s
    segments = [{"start": 0.1, "end": 1.9, "text": " a"},
                {"start": 1.8, "end": 2.9, "text": " b"},  # starts just before the junction: the second region
                {"start": 0.5, "end": 2.6, "text": " c",
                 "words": [{"start": 0.5, "end": 1.0}, {"start": 2.2, "end": 2.6}]}]
    SpeechMap(regions).restore(segments)
    assert (segments[0]["start"], segments[0]["end"]) == (1.1, 2.9)
    assert (segments[1]["start"], segments[1]["end"]) == (10.0, 10.9)
    assert [(w["start"], w["end"]) for w in segments[2]["words"]] == [(1.5, 2.0), (10.2, 10.6)]
    assert (segments[2]["start"], segments[2]["end"]) == (1.5, 10.6)


def test_throughput_windows_merge_regions_up_to_30_s():
    second = SAMPLE_RATE
    regions = [(0, 10 * second), (12 * second, 25 * second), (40 * second, 50 * second), (60 * second, 61 * second)]
    assert merge_regions(regions, 30 * second) == [regions[:2], regions[2:]]
    windows = speech_windows(regions, 34 * second // HOP_LENGTH)
    assert windows == [(0, 2300), (2300, 1100)]
    assert all(size <= N_FRAMES for _, size in windows)


def spoken_segments(result: dict) -> list[dict]:
    return [s for s in result["segments"] if s["text"].strip()]


@pytest.mark.parametrize("mode", [{"vad_filter": True}, {"batch_size": 4}])
def test_no_text_in_the_pauses_and_every_phrase_transcribed(tiny, tiny_ref, paused, mode):
    import whisper

    audio, spans = paused
    result = tiny.transcribe(audio, temperature=0.0, **mode)
    segments = spoken_segments(result)
    for segment in segments:  # each text lies on a phrase, give or take the VAD's padding
        assert any(start - 1.0 <= segment["start"] and segment["end"] <= end + 1.0 for start, end in spans), segment
    for start, end in spans:  # each phrase, the quiet one too, has text over it
        assert any(s["start"] < end and s["end"] > start and len(s["text"].split()) >= 3 for s in segments), (start, end)
    theirs = whisper.transcribe(tiny_ref, audio, fp16=False, temperature=0.0, language="en")["text"]
    assert word_error_rate([theirs], [result["text"]])[0] <= 25.0  # what openai-whisper hears is still there


@pytest.mark.parametrize("name", ["noise", "music"])
@pytest.mark.parametrize("mode", [{"vad_filter": True}, {"batch_size": 4}])
def test_no_text_for_non_speech(tiny, name, mode):
    audio = room_noise(20, seed=1) if name == "noise" else music(15, seed=2)
    result = tiny.transcribe(audio, temperature=0.0, **mode)
    assert result["text"].strip() == ""
    assert not spoken_segments(result)


def test_cli_vad_options(tmp_path, capsys, tiny, monkeypatch, paused):
    from conftest import write_wav

    monkeypatch.setattr("max_whisper.backends.load_model", lambda *a, **k: tiny)
    wav = tmp_path / "paused.wav"
    write_wav(wav, paused[0])
    assert cli.main(["transcribe", str(wav), "--vad-filter", "--vad-parameters", "threshold=0.6,speech_pad_ms=200",
                     "--temperature", "0"]) == 0
    assert "final report" in capsys.readouterr().out
    assert cli.main(["transcribe", str(wav), "--vad-parameters", "threshold=0.6"]) == 2
    assert "--vad-parameters needs --vad-filter" in capsys.readouterr().err
    assert cli.main(["transcribe", str(wav), "--vad-filter", "--vad-parameters", "thresold=0.6"]) == 2
    assert "unknown vad parameter(s): thresold" in capsys.readouterr().err


def test_server_vad_fields(tiny, paused, tmp_path):
    import httpx

    from conftest import write_wav
    from max_whisper.server import ServerOptions
    from test_server import running_server

    wav = write_wav(tmp_path / "paused.wav", paused[0]).read_bytes()
    with running_server(tiny, ServerOptions(model_name="tiny.en")) as (url, _):
        def post(**fields):
            return httpx.post(f"{url}/v1/audio/transcriptions", data={"model": "tiny.en", **fields},
                              files={"file": ("paused.wav", wav)}, timeout=300)

        r = post(vad_filter="true", vad_parameters='{"min_silence_duration_ms": 500}',
                 response_format="verbose_json")
        assert r.status_code == 200, r.text
        spans = paused[1]
        for segment in [s for s in r.json()["segments"] if s["text"].strip()]:
            assert any(start - 1.0 <= segment["start"] and segment["end"] <= end + 1.0 for start, end in spans)
        assert post(vad_filter="maybe").status_code == 400
        bad = post(vad_filter="true", vad_parameters='{"treshold": 0.5}')
        assert bad.status_code == 400 and "unknown vad parameter" in bad.json()["error"]["message"]
        assert post(vad_parameters="[1]").status_code == 400
        assert post(vad_parameters='{"threshold": 0.6}').status_code == 400  # without vad_filter
