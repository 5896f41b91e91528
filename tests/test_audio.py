"""Audio decoding (PyAV) and the log-mel front end against openai-whisper's."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest
import torch
import whisper

import max_whisper as mw
from max_whisper import WhisperError
from max_whisper.features import LogMelFeatures, mel_filters
from conftest import references


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_openai(n_mels):
    path = os.path.join(os.path.dirname(whisper.audio.__file__), "assets", "mel_filters.npz")
    with np.load(path) as f:
        assert np.abs(mel_filters(n_mels) - f[f"mel_{n_mels}"]).max() < 1e-6


@pytest.mark.parametrize("clip", sorted(references()))
def test_log_mel_matches_openai(speech, clip):
    audio = mw.load_audio(speech / clip)
    ours = mw.log_mel_spectrogram(audio, padding=mw.audio.N_SAMPLES)
    theirs = whisper.log_mel_spectrogram(torch.from_numpy(audio), padding=mw.audio.N_SAMPLES).numpy()
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-4


@pytest.mark.parametrize("held_frames", [LogMelFeatures.HELD_FRAMES, 0], ids=["held", "on-demand"])
@pytest.mark.parametrize("clip", ["cards_001.wav", "jfk.wav"])
def test_padding_frames_skip_the_fft_exactly(speech, clip, held_frames, monkeypatch):
    """Frames that read only the 30 s of zero padding are filled in, not transformed: the same numbers."""
    monkeypatch.setattr(LogMelFeatures, "HELD_FRAMES", held_frames)
    audio = mw.load_audio(speech / clip)
    skipping = LogMelFeatures(audio, padding=mw.audio.N_SAMPLES)
    every = LogMelFeatures(audio, padding=mw.audio.N_SAMPLES)
    every.sounding_frames = every.n_frames  # every frame through the FFT
    assert skipping.sounding_frames < skipping.n_frames - 2500
    for start in (0, skipping.sounding_frames - 1500, skipping.n_frames - 3000):
        assert np.array_equal(skipping.window(start, 3000), every.window(start, 3000))


@pytest.mark.parametrize("zeros", [0, 399, 400, 70_000, 16 * 30_000])
def test_frames_of_trailing_zeros_skip_the_fft_exactly(speech, zeros):
    """Zeros at the end of the audio (a stream's buffer read as a whole window) are skipped as the padding is,
    once they hold a window's worth (their frames' reflection at the end reads zeros too)."""
    audio = np.concatenate([mw.load_audio(speech / "jfk.wav"), np.zeros(zeros, np.float32)])
    for padding in (0, mw.audio.N_SAMPLES):
        skipping = LogMelFeatures(audio, padding=padding)
        every = LogMelFeatures(audio, padding=padding)
        every.sounding_frames = every.n_frames
        if zeros + padding >= 400:  # a window of zeros: the frames after the sound skip the FFT
            assert skipping.sounding_frames <= skipping.n_frames - (zeros + padding) // 160 + 3
        else:
            assert skipping.sounding_frames == skipping.n_frames
        assert np.array_equal(skipping.window(0, skipping.n_frames), every.window(0, every.n_frames))


@pytest.mark.parametrize("samples", [201, 401, 16_037])
@pytest.mark.parametrize("padding", [0, 100, mw.audio.N_SAMPLES])
def test_log_mel_of_short_signals_reflects_as_openai(samples, padding):
    """Frames within half a window of either end read the signal's mirror image (torch.stft's centring),
    zeros where it mirrors into the padding."""
    audio = (np.random.default_rng(samples).standard_normal(samples) * 0.1).astype(np.float32)
    ours = mw.log_mel_spectrogram(audio, padding=padding)
    theirs = whisper.log_mel_spectrogram(torch.from_numpy(audio), padding=padding).numpy()
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-4


@pytest.mark.parametrize("samples", [0, 319, 320, 4_321, 480_000])
def test_loudest_frame_db_pads_the_last_frame_with_zeros(samples):
    from max_whisper.transcribe import SILENCE_FRAME, loudest_frame_db

    audio = np.random.default_rng(samples).uniform(-0.5, 0.5, samples).astype(np.float32)
    audio[-7:] = 0.9  # the loudest samples in the last, shorter frame
    chunk = np.pad(audio.astype(np.float64), (0, -samples % SILENCE_FRAME)).reshape(-1, SILENCE_FRAME)
    expected = 20 * np.log10(np.sqrt((chunk ** 2).mean(axis=1).max())) if samples else -np.inf
    assert loudest_frame_db(audio, 0, 3000) == expected


def test_pad_or_trim_along_either_axis():
    a = np.arange(24, dtype=np.float32).reshape(4, 6)
    assert np.array_equal(mw.pad_or_trim(a, 9), np.pad(a, [(0, 0), (0, 3)]))
    assert np.array_equal(mw.pad_or_trim(a, 7, axis=0), np.pad(a, [(0, 3), (0, 0)]))
    assert np.array_equal(mw.pad_or_trim(a, 2, axis=0), a[:2])
    assert np.array_equal(mw.pad_or_trim(a, 4), a[:, :4])
    assert mw.pad_or_trim(a, 9).dtype == np.float32


@pytest.mark.parametrize("clip", sorted(references()))
def test_audio_already_16k_mono_pcm_is_what_the_resampler_gives(speech, clip):
    """Frames already 16-bit mono at 16 kHz skip the resampler: the same samples as through it."""
    through = []
    with av.open(str(speech / clip)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        for frame in [*container.decode(container.streams.audio[0]), None]:
            through += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    assert np.array_equal(mw.load_audio(speech / clip), np.concatenate(through).astype(np.float32) / 32768.0)


def test_load_audio_resamples_to_16k_mono(speech):
    audio = mw.load_audio(speech / "jfk.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == 176000  # 11.0 s
    assert 0.01 < np.abs(audio).max() <= 1.0


def _encode(audio: np.ndarray, path, codec: str, rate: int, layout: str = "stereo"):
    """Write `audio` (16 kHz mono) resampled to `rate` in `layout`, with PyAV."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        fmt = stream.codec_context.codec.audio_formats[0].name
        frame = av.AudioFrame.from_ndarray((audio[None] * 32767).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        frame_size = stream.codec_context.frame_size or 1024
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate, frame_size=frame_size)
        for f in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.parametrize("suffix,codec,rate", [("flac", "flac", 44100), ("mp3", "libmp3lame", 44100),
                                               ("ogg", "libopus", 48000), ("m4a", "aac", 44100),
                                               ("wav", "pcm_s16le", 22050)])
def test_common_formats_decode_to_the_same_signal(speech, tmp_path, suffix, codec, rate):
    original = mw.load_audio(speech / "jfk.wav")
    path = tmp_path / f"jfk.{suffix}"
    try:
        _encode(original, path, codec, rate)
    except (av.error.FFmpegError, ValueError) as e:  # encoder missing from this FFmpeg build
        pytest.fail(f"PyAV cannot encode {codec}: {e}")
    decoded = mw.load_audio(path)
    assert abs(len(decoded) - len(original)) < 0.1 * 16000  # codec padding only
    n = min(len(decoded), len(original)) - 4000
    # lossy codecs shift by a frame's delay: best correlation over small lags
    best = max(np.corrcoef(original[2000:n], decoded[2000 + lag:n + lag])[0, 1] for lag in range(0, 2200, 1))
    assert best > 0.9


def test_missing_file(tmp_path):
    with pytest.raises(WhisperError, match=r"nothere\.wav: no such file"):
        mw.load_audio(tmp_path / "nothere.wav")


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(WhisperError, match=r"empty\.wav: empty file"):
        mw.load_audio(tmp_path / "empty.wav")


def test_not_audio(tmp_path):
    (tmp_path / "notes.mp3").write_text("this is a text file, not audio\n" * 50)
    with pytest.raises(WhisperError, match=r"notes\.mp3: not a readable audio file"):
        mw.load_audio(tmp_path / "notes.mp3")


def test_truncated_header(speech, tmp_path):
    (tmp_path / "cut.flac").write_bytes((speech / "lecture.flac").read_bytes()[:30])
    with pytest.raises(WhisperError, match=r"cut\.flac: (not a readable audio file|decodes to no audio)"):
        mw.load_audio(tmp_path / "cut.flac")


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(WhisperError, match="is a directory"):
        mw.load_audio(tmp_path)
