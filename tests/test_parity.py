"""The MAX engine against openai-whisper on the same weights: greedy fp32 CPU, token for token."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import whisper

import max_whisper as mw
from conftest import SHORT_CLIPS


def window(model, speech, clip):
    audio = mw.load_audio(speech / clip)
    return mw.pad_or_trim(mw.log_mel_spectrogram(audio, model.dims.n_mels), mw.features.N_FRAMES)


def test_encoder_matches_reference(tiny, tiny_ref, speech):
    mel = window(tiny, speech, "jfk.wav")
    ours = tiny.embed_audio(mel[None]).to_numpy()
    with torch.no_grad():
        theirs = tiny_ref.encoder(torch.from_numpy(mel[None])).numpy()
    assert ours.shape == theirs.shape == (1, 1500, 384)
    assert np.abs(ours - theirs).max() < 1e-3


def test_decoder_logits_match_reference(tiny, tiny_ref, speech):
    mel = window(tiny, speech, "jfk.wav")
    features = tiny.embed_audio(mel[None])
    tokens = np.array([[50257, 50362, 400, 370]])
    state = tiny.decoder.start(features, np.array([0]))
    prompt_logits = state.logits(tokens[:, :3], [0, 1, 2])
    row_calls = tiny.session.timings.calls.get("decoder_row", 0)
    step_logits = state.logits(tokens[:, 3:])  # through the KV cache, in the one-row graph
    assert tiny.session.timings.calls["decoder_row"] == row_calls + 1
    with torch.no_grad():
        theirs = tiny_ref.decoder(torch.from_numpy(tokens), torch.from_numpy(features.to_numpy())).numpy()
    assert np.abs(prompt_logits - theirs[:, :3]).max() < 1e-3
    assert np.abs(step_logits[:, 0] - theirs[:, 3]).max() < 1e-3


@pytest.mark.parametrize("without_timestamps", [True, False], ids=["no-timestamps", "timestamps"])
@pytest.mark.parametrize("clip", SHORT_CLIPS)
def test_greedy_tokens_equal(tiny, tiny_ref, speech, clip, without_timestamps):
    mel = window(tiny, speech, clip)
    theirs = whisper.decode(tiny_ref, torch.from_numpy(mel),
                            whisper.DecodingOptions(language="en", fp16=False, without_timestamps=without_timestamps))
    ours = tiny.decode(mel, mw.DecodingOptions(language="en", without_timestamps=without_timestamps))
    assert ours.tokens == theirs.tokens
    assert ours.text == theirs.text
    assert ours.avg_logprob == pytest.approx(theirs.avg_logprob, abs=1e-3)
    assert ours.no_speech_prob == pytest.approx(theirs.no_speech_prob, abs=1e-3)
    assert ours.compression_ratio == pytest.approx(theirs.compression_ratio)


@pytest.mark.parametrize("clip", ["jfk.wav", "sense_and_sensibility_01_austen_64kb-0870.wav"])
def test_transcribe_equal(tiny, tiny_ref, speech, clip):
    audio = mw.load_audio(speech / clip)
    theirs = whisper.transcribe(tiny_ref, audio, fp16=False)
    ours = tiny.transcribe(audio)
    assert [s["tokens"] for s in ours["segments"]] == [s["tokens"] for s in theirs["segments"]]
    assert [(s["start"], s["end"]) for s in ours["segments"]] == [(s["start"], s["end"]) for s in theirs["segments"]]
    assert ours["text"] == theirs["text"]
    assert ours["language"] == "en"


def test_beam_search_equal(tiny, tiny_ref, speech):
    mel = window(tiny, speech, "jfk.wav")
    theirs = whisper.decode(tiny_ref, torch.from_numpy(mel), whisper.DecodingOptions(language="en", fp16=False, beam_size=5))
    ours = tiny.decode(mel, mw.DecodingOptions(language="en", beam_size=5))
    assert ours.tokens == theirs.tokens


def test_temperature_sampling_is_seeded_and_valid(tiny, speech):
    mel = window(tiny, speech, "jfk.wav")
    a = tiny.decode(mel, mw.DecodingOptions(temperature=0.8, seed=3))
    b = tiny.decode(mel, mw.DecodingOptions(temperature=0.8, seed=3))
    assert a.tokens == b.tokens and a.temperature == 0.8
    assert all(t < tiny.tokenizer().eot or t >= tiny.tokenizer().timestamp_begin for t in a.tokens)


@pytest.mark.parametrize("clip", ["jfk.wav", "sense_and_sensibility_01_austen_64kb-0880.wav"])
def test_base_multilingual_parity_and_language(base, base_ref, speech, clip):
    mel = window(base, speech, clip)
    language, probs = base.detect_language(mel)
    _, ref_probs = base_ref.detect_language(torch.from_numpy(mel))
    assert language == "en" == max(ref_probs, key=ref_probs.get)
    assert probs["en"] == pytest.approx(ref_probs["en"], abs=1e-3)
    for without_timestamps in (True, False):
        opts = dict(without_timestamps=without_timestamps)
        theirs = whisper.decode(base_ref, torch.from_numpy(mel), whisper.DecodingOptions(fp16=False, **opts))
        ours = base.decode(mel, mw.DecodingOptions(**opts))
        assert ours.language == theirs.language == "en"
        assert ours.tokens == theirs.tokens


@pytest.mark.parametrize("clip", SHORT_CLIPS)
def test_step_graph_tokens_equal(tiny_step, tiny_ref, speech, clip):
    mel = window(tiny_step, speech, clip)
    theirs = whisper.decode(tiny_ref, torch.from_numpy(mel), whisper.DecodingOptions(language="en", fp16=False))
    ours = tiny_step.decode(mel, mw.DecodingOptions(language="en"))
    assert tiny_step.session.timings.calls.get("decoder_step", 0) > 0
    assert ours.tokens == theirs.tokens
    assert ours.avg_logprob == pytest.approx(theirs.avg_logprob, abs=1e-3)


def test_step_graph_takes_steps_up_to_the_limit(tiny, tiny_step, speech):
    """A call makes STEPS_PER_CALL choices; decoding takes only those within sample_len."""
    mel = window(tiny, speech, "jfk.wav")
    options = mw.DecodingOptions(language="en", sample_len=mw.graph.decoder.STEPS_PER_CALL + 3)
    ours = tiny_step.decode(mel, options)
    assert len(ours.tokens) == options.sample_len
    assert ours.tokens == tiny.decode(mel, options).tokens


def test_step_graph_batch_and_longform_equal(tiny, tiny_step, speech):
    mels = np.stack([window(tiny, speech, clip) for clip in SHORT_CLIPS[:3]])
    options = mw.DecodingOptions(language="en")
    batched = tiny_step.decode(mels, options)  # rows of different lengths in one step
    assert [r.tokens for r in batched] == [r.tokens for r in tiny.decode(mels, options)]
    audio = mw.load_audio(speech / "sense_and_sensibility_01_austen_64kb-0870.wav")
    ours, theirs = tiny_step.transcribe(audio), tiny.transcribe(audio)  # later windows start from a prompt
    assert [s["tokens"] for s in ours["segments"]] == [s["tokens"] for s in theirs["segments"]]


@pytest.mark.parametrize("graph", ["decoder_step_rows", "decoder_step"])
def test_step_graph_decodes_rows_of_different_prompts_together(tiny, tiny_step, speech, graph, monkeypatch):
    """Windows of different recordings share one batch, each after its own previous text (prompts of
    different lengths, one of them the longest kept): every row as decoded alone, in either step graph
    (tiny's float32 runs the row form's, 16-bit models the matrix products')."""
    decoder = tiny_step.decoder
    if graph != decoder.step_graph(6)[0]:
        monkeypatch.setattr(decoder, "step_graph", lambda batch: (graph, getattr(decoder, graph)))
        monkeypatch.setattr(decoder, "_slots", {})  # slots hold their graph
    clips = ("jfk.wav", "goforward.wav", "cards_005.wav", "cards_001.wav", "sense_and_sensibility_01_austen_64kb-0880.wav")
    mels = np.stack([window(tiny, speech, clip) for clip in clips])
    tok = tiny.tokenizer("en")
    prompts = [[], tok.encode(" And so, my fellow Americans, ask not"), tok.encode(" a long prompt" * 200), [],
               tok.encode(" Ten of clubs.")]  # 5 rows: recorded on 6, one row of padding
    options = mw.DecodingOptions(language="en")
    calls = tiny_step.session.timings.calls.get(graph, 0)
    together = tiny_step.decode_windows(mels, options, prompts)
    assert tiny_step.session.timings.calls[graph] > calls
    for mel, prompt, ours in zip(mels, prompts, together):
        alone = tiny.decode(mel, mw.DecodingOptions(language="en", prompt=prompt))
        assert ours.tokens == alone.tokens and len(ours.tokens) > 2
        assert ours.avg_logprob == pytest.approx(alone.avg_logprob, abs=1e-4)
        assert ours.no_speech_prob == pytest.approx(alone.no_speech_prob, abs=1e-4)
    # without the step graph (the CPU engine), rows are decoded in groups of equal prompt length
    grouped = tiny.decode_windows(mels, options, prompts)
    assert [r.tokens for r in grouped] == [r.tokens for r in together]


def test_recorded_batches_come_in_few_sizes():
    """Each recorded batch size holds its own GPU memory: rows are padded to one of a few sizes."""
    sizes = [mw.runtime.decoders.recorded_batch(b) for b in range(1, 65)]
    assert set(sizes) == {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64}
    assert all(b <= size < 1.5 * b + 1 for b, size in enumerate(sizes, start=1))


def test_a_few_rows_run_the_row_form_step_graph(tiny_step):
    """tiny's float32 steps of one row run the matrix products' graph, of 2 to 64 rows the row form's (both
    give each row's tokens as decoded alone: the batch tests above run on both); 16-bit and wider models
    never run the row form (measured for neither)."""
    from max.dtype import DType

    from max_whisper.models import dimensions
    from max_whisper.runtime.decoders import row_form_batches

    decoder = tiny_step.decoder
    assert decoder.step_graph(1) == ("decoder_step", decoder.decoder_step)
    assert decoder.step_graph(2) == decoder.step_graph(64) == ("decoder_step_rows", decoder.decoder_step_rows)
    assert decoder.step_graph(96)[0] == "decoder_step"
    assert not row_form_batches(tiny_step.dims, DType.bfloat16)
    assert not row_form_batches(dimensions("base"), DType.float32)
