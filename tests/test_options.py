"""openai-whisper's decoding and long-form options against openai-whisper on the same weights (greedy fp32 CPU):
prefix, initial prompt, conditioning on previous text, temperature fallback and its thresholds, translation,
the silence skip on quiet speech, and a draft (tokens a greedy decode is expected to start with)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper

import max_whisper as mw
from conftest import mixed_recordings
from max_whisper.graph.decoder import STEPS_PER_CALL
from max_whisper.runtime.decoders import CachedRun, RecordedRun
from max_whisper.transcribe import loudest_frame_db

AUDIO = Path(__file__).parent / "audio"  # speech made for these tests (see its README)


def window(model, audio: np.ndarray) -> np.ndarray:
    return mw.pad_or_trim(mw.log_mel_spectrogram(audio, model.dims.n_mels), mw.features.N_FRAMES)


def tokens(result: dict) -> list[list[int]]:
    return [s["tokens"] for s in result["segments"]]


@pytest.fixture(scope="module")
def jfk(speech):
    return mw.load_audio(speech / "jfk.wav")


@pytest.mark.parametrize("without_timestamps", [True, False], ids=["no-timestamps", "timestamps"])
@pytest.mark.parametrize("prefix", ["And so my fellow", "Ask not"])
def test_prefix_is_kept_as_openai_whisper_keeps_it(tiny, tiny_ref, jfk, prefix, without_timestamps):
    """With the default sample_len openai-whisper keeps the whole prefix (its bound is 0 and [-0:] is all)."""
    mel = window(tiny, jfk)
    options = dict(language="en", prefix=prefix, without_timestamps=without_timestamps)
    theirs = whisper.decode(tiny_ref, torch.from_numpy(mel), whisper.DecodingOptions(fp16=False, **options))
    ours = tiny.decode(mel, mw.DecodingOptions(**options))
    assert ours.tokens == theirs.tokens
    plain = tiny.decode(mel, mw.DecodingOptions(language="en", without_timestamps=without_timestamps))
    assert ours.tokens != plain.tokens  # the prefix changed what was decoded


@pytest.mark.parametrize("kept", [None, 6, 0], ids=["whole", "wrong-after-6", "wrong-first"])
def test_a_draft_saves_steps_and_changes_no_token(tiny, tiny_step, jfk, kept, monkeypatch):
    """A draft's tokens are fed at once and kept while they are greedy's choices: the tokens, their score and
    the words are those of the decode without it; only the sequential steps after the draft are left. The
    recorded steps (a GPU's) take no draft: there it did not pay."""
    calls = []
    for run in (CachedRun, RecordedRun):
        monkeypatch.setattr(run, "greedy", lambda self, *a, greedy=run.greedy: calls.append(1) or greedy(self, *a))
    mel = window(tiny, jfk)
    options = mw.DecodingOptions(language="en", word_timestamps=True)
    plain = tiny.decode(mel, options)
    plain_calls, calls[:] = len(calls), []
    wrong = tiny.tokenizer().encode(" banana")[0]
    draft = tuple(plain.tokens if kept is None else [*plain.tokens[:kept], wrong, *plain.tokens[kept + 1:]])
    ours = tiny.decode(mel, replace(options, draft=draft))
    assert ours.tokens == plain.tokens and ours.text == plain.text
    assert ours.sum_logprob == pytest.approx(plain.sum_logprob, abs=1e-3)
    assert ours.no_speech_prob == pytest.approx(plain.no_speech_prob, abs=1e-5)
    assert np.allclose(ours.alignment.matrix, plain.alignment.matrix, atol=1e-4)
    # Without a draft the first step chooses the first token and a step each later one, end of text included;
    # with one, the first step chooses all the draft's tokens it would, and the first other one.
    assert plain_calls == len(plain.tokens)
    assert len(calls) == (0 if kept is None else len(plain.tokens) - kept)

    calls[:] = []
    stepped = tiny_step.decode(mel, replace(options, draft=draft))
    assert stepped.tokens == plain.tokens and len(calls) == math.ceil(len(plain.tokens) / STEPS_PER_CALL)
    with pytest.raises(mw.WhisperError, match="draft's tokens must be ids of this model's vocabulary"):
        tiny.decode(mel, replace(options, draft=(tiny.dims.n_vocab,)))


def test_initial_prompt_equal(tiny, tiny_ref, jfk):
    prompt = "Inaugural address of President John F. Kennedy, January 1961."
    theirs = whisper.transcribe(tiny_ref, jfk, fp16=False, initial_prompt=prompt)
    ours = tiny.transcribe(jfk, initial_prompt=prompt)
    assert tokens(ours) == tokens(theirs) and ours["text"] == theirs["text"]


@pytest.fixture(scope="module")
def two_windows(tmp_path_factory, speech):
    """A 35 s recording: its second window follows the first's text."""
    return mw.load_audio(mixed_recordings(tmp_path_factory.mktemp("mixed"), speech)[1])


@pytest.mark.parametrize("condition", [True, False])
def test_condition_on_previous_text_equal(tiny, tiny_ref, two_windows, condition, monkeypatch):
    prompts = []
    decode = tiny.decode_windows
    monkeypatch.setattr(tiny, "decode_windows",  # a window's prompt: its row's in `prompts`, else the options'
                        lambda mels, options, **kw: prompts.append((kw.get("prompts") or [options.prompt])[0])
                        or decode(mels, options, **kw))
    ours = tiny.transcribe(two_windows, condition_on_previous_text=condition)
    theirs = whisper.transcribe(tiny_ref, two_windows, fp16=False, condition_on_previous_text=condition)
    assert tokens(ours) == tokens(theirs) and len(prompts) >= 2
    assert all(prompts[1:]) if condition else not any(prompts)


@pytest.mark.parametrize("thresholds, expected", [
    (dict(logprob_threshold=0.0), 0.4),  # every decode's mean log probability is under 0: falls back
    (dict(compression_ratio_threshold=0.1), 0.4),  # every text compresses worse than 0.1: falls back
    (dict(logprob_threshold=-20.0), 0.0),  # nothing is that unsure: the greedy result stays
    (dict(logprob_threshold=None, compression_ratio_threshold=None), 0.0),
])
def test_temperature_fallback_follows_the_thresholds(tiny, tiny_ref, jfk, thresholds, expected):
    options = dict(temperature=(0.0, 0.4), no_speech_threshold=None, **thresholds)
    ours = tiny.transcribe(jfk, **options)
    theirs = whisper.transcribe(tiny_ref, jfk, fp16=False, **options)
    assert {s["temperature"] for s in ours["segments"]} == {s["temperature"] for s in theirs["segments"]} == {expected}
    if expected == 0.0:
        assert tokens(ours) == tokens(theirs)


def test_no_speech_threshold_skips_windows_as_openai_whisper(tiny, tiny_ref, jfk):
    """A window that is likely silence (no-speech probability over the threshold) and unsure (mean log
    probability under its threshold) gives no segment; thresholds strict enough make every window such."""
    options = dict(temperature=0.0, no_speech_threshold=0.0, logprob_threshold=0.0)
    ours = tiny.transcribe(jfk, **options)
    theirs = whisper.transcribe(tiny_ref, jfk, fp16=False, **options)
    assert ours["segments"] == theirs["segments"] == []
    assert tiny.transcribe(jfk, temperature=0.0, no_speech_threshold=0.0, logprob_threshold=-20.0)["segments"]


@pytest.fixture(scope="module")
def german():
    return mw.load_audio(AUDIO / "zug_de.wav")


def test_language_detection_and_translation_equal(base, base_ref, german):
    mel = window(base, german)
    language, probs = base.detect_language(mel)
    _, ref_probs = base_ref.detect_language(torch.from_numpy(mel))
    assert language == max(ref_probs, key=ref_probs.get) == "de"
    assert probs["de"] == pytest.approx(ref_probs["de"], abs=1e-3)
    for task in ("transcribe", "translate"):
        theirs = whisper.decode(base_ref, torch.from_numpy(mel), whisper.DecodingOptions(task=task, fp16=False))
        ours = base.decode(mel, mw.DecodingOptions(task=task))
        assert ours.tokens == theirs.tokens and ours.language == theirs.language == "de"
    result = base.transcribe(german, task="translate", temperature=0.0)  # no sampling: the RNGs differ
    assert result["language"] == "de" and result["text"] == whisper.transcribe(base_ref, german, fp16=False,
                                                                             task="translate", temperature=0.0)["text"]
    assert "Hamburg" in result["text"] and "Zug" not in result["text"]  # English text


def quiet_phrase_in_room_noise(speech_db: float = -51.0, noise_db: float = -80.0) -> np.ndarray:
    """30 s of room noise (white, `noise_db` dBFS RMS) with a 3 s phrase at `speech_db` dBFS RMS at 12 s."""
    phrase = mw.load_audio(AUDIO / "harbour.wav")
    phrase *= 10 ** (speech_db / 20) / np.sqrt(np.mean(phrase.astype(np.float64) ** 2))
    audio = (10 ** (noise_db / 20) * np.random.default_rng(5).standard_normal(30 * 16000)).astype(np.float32)
    audio[12 * 16000:12 * 16000 + len(phrase)] += phrase
    return audio


def test_quiet_phrase_in_a_quiet_window_is_transcribed(tiny, tiny_ref):
    """The silence skip looks at the loudest 20 ms, not the window's mean: a phrase at -51 dBFS in room
    noise at -80 dBFS (the whole window's RMS under -60 dBFS) is decoded, as openai-whisper decodes it."""
    audio = quiet_phrase_in_room_noise()
    assert 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < -60.0
    ours = tiny.transcribe(audio)
    theirs = whisper.transcribe(tiny_ref, audio, fp16=False)
    assert ours["text"] == theirs["text"]
    assert "lantern" in ours["text"].lower()  # tiny.en hears the rest of the quiet phrase less well


def test_room_noise_alone_is_not_decoded(tiny):
    noise = (10 ** (-80 / 20) * np.random.default_rng(6).standard_normal(30 * 16000)).astype(np.float32)
    encodes = tiny.session.timings.calls.get("encoder", 0)
    assert tiny.transcribe(noise)["segments"] == []
    assert tiny.session.timings.calls.get("encoder", 0) == encodes
    assert loudest_frame_db(noise, 0, 3000) < -70.0


@pytest.mark.parametrize("size", [1, 2, 3])
def test_no_repeat_ngram_equals_transformers(size):
    from transformers import NoRepeatNGramLogitsProcessor

    from max_whisper.decoding import NoRepeatNGram

    rng = np.random.default_rng(size)
    tokens = rng.integers(0, 6, (4, 12))  # few distinct tokens: many repeated n-grams
    logits = rng.normal(size=(4, 50)).astype(np.float32)
    theirs = NoRepeatNGramLogitsProcessor(size)(torch.from_numpy(tokens), torch.from_numpy(logits.copy())).numpy()
    NoRepeatNGram(size, sample_begin=0).apply(logits, tokens)
    np.testing.assert_array_equal(logits, theirs)


def test_repetition_penalty_equals_transformers():
    from transformers import RepetitionPenaltyLogitsProcessor

    from max_whisper.decoding import RepetitionPenalty

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 30, (4, 9))
    logits = rng.normal(size=(4, 50)).astype(np.float32)
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(torch.from_numpy(tokens), torch.from_numpy(logits.copy())).numpy()
    RepetitionPenalty(1.3, sample_begin=0).apply(logits, tokens)
    np.testing.assert_allclose(logits, theirs, rtol=1e-6)


def test_no_repeat_ngram_keeps_decoded_windows_free_of_repeats(tiny, speech):
    lecture = mw.load_audio(speech / "lecture.flac")[: 30 * 16000]
    mel = mw.pad_or_trim(mw.log_mel_spectrogram(lecture), 3000)[None]

    def bigrams(tokens):
        pairs = list(zip(tokens, tokens[1:]))
        return len(pairs) - len(set(pairs))

    plain = tiny.decode_windows(mel, mw.DecodingOptions(without_timestamps=True))[0]
    guarded = tiny.decode_windows(mel, mw.DecodingOptions(without_timestamps=True, no_repeat_ngram_size=2))[0]
    assert bigrams(plain.tokens) > 0  # the lecture's first window says "of the" more than once
    assert bigrams(guarded.tokens) == 0
    penalized = tiny.decode_windows(mel, mw.DecodingOptions(without_timestamps=True, repetition_penalty=1.0))[0]
    assert penalized.tokens == plain.tokens  # 1.0 is off


def test_repetition_options_are_checked():
    with pytest.raises(mw.WhisperError, match="repetition_penalty must be positive"):
        mw.DecodingOptions(repetition_penalty=0)
    with pytest.raises(mw.WhisperError, match="no_repeat_ngram_size must not be negative"):
        mw.DecodingOptions(no_repeat_ngram_size=-1)
