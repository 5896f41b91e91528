"""Word timestamps against openai-whisper's (`word_timestamps=True`) on the same weights, in every decoding
mode; the subtitle options through the CLI; words through the server."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import srt
import torch
import webvtt
import whisper
from whisper.timing import dtw_cpu, median_filter

import max_whisper as mw
from max_whisper.alignment import dtw
from max_whisper.batching import transcribe_files
from max_whisper.outputs import SubtitleOptions, write_result
from max_whisper.runtime.aligner import reflected_neighbours
from max_whisper.transcribe import TranscribeOptions
from conftest import SHORT_CLIPS, write_wav

CLIPS = [*SHORT_CLIPS, "lecture.flac"]


def words_of(result: dict) -> list[dict]:
    return [w for s in result["segments"] for w in s["words"]]


def timings(result: dict) -> list[tuple[str, float, float]]:
    return [(w["word"], w["start"], w["end"]) for w in words_of(result)]


def assert_same_words(ours: dict, theirs: dict) -> None:
    """The same words with the same probabilities, and times within openai-whisper's resolution (0.02 s)
    on median and 0.1 s at worst."""
    a, b = words_of(ours), words_of(theirs)
    assert [w["word"] for w in a] == [w["word"] for w in b]
    assert a, "no words to compare"
    gaps = np.abs(np.array([[w["start"], w["end"]] for w in a]) - np.array([[w["start"], w["end"]] for w in b]))
    assert np.median(gaps) <= 0.02 and gaps.max() <= 0.1, (np.median(gaps), gaps.max())
    assert np.allclose([w["probability"] for w in a], [w["probability"] for w in b], atol=1e-3)
    assert ours["text"] == theirs["text"]


@pytest.mark.parametrize("clip", CLIPS)
def test_words_equal_openai_tiny(tiny, tiny_ref, speech, clip):
    audio = mw.load_audio(speech / clip)
    ours = tiny.transcribe(audio, word_timestamps=True)
    theirs = whisper.transcribe(tiny_ref, audio, fp16=False, word_timestamps=True)
    assert_same_words(ours, theirs)
    # Segment bounds come from the words, as openai-whisper refines them.
    assert [(s["start"], s["end"]) for s in ours["segments"]] == [(s["start"], s["end"]) for s in theirs["segments"]]


@pytest.mark.parametrize("clip", CLIPS)
def test_words_equal_openai_base(base, base_ref, speech, clip):
    audio = mw.load_audio(speech / clip)
    assert_same_words(base.transcribe(audio, word_timestamps=True),
                      whisper.transcribe(base_ref, audio, fp16=False, word_timestamps=True))


def test_words_with_beam_search_equal_openai(tiny, tiny_ref, speech):
    audio = mw.load_audio(speech / "jfk.wav")
    assert_same_words(tiny.transcribe(audio, word_timestamps=True, beam_size=5, best_of=5),
                      whisper.transcribe(tiny_ref, audio, fp16=False, word_timestamps=True, beam_size=5, best_of=5))


def test_alignment_matrix_equals_openai_for_a_batch_of_rows(tiny, tiny_ref, speech):
    """Two rows of different lengths and audio frames in one alignment pass: each row's text-token
    probabilities and alignment matrix as openai-whisper's find_alignment computes them alone."""
    tok = tiny.tokenizer()
    mels = np.stack([mw.pad_or_trim(mw.log_mel_spectrogram(mw.load_audio(speech / clip)), 3000)
                     for clip in ("jfk.wav", "goforward.wav")])
    texts = [tok.encode(" And so my fellow Americans, ask not what your country can do for you"),
             tok.encode(" Go forward")]
    frames = [1101, 2200]  # odd, to check the halving; each under 3000, to check the cut and the reflection
    features = tiny.embed_audio(mels)
    sequences = [[*tok.sot_sequence, tok.no_timestamps, *t, tok.eot] for t in texts]
    run = tiny.decoder.start(features, np.array([1, 0, 1]))  # the alignment reads the run's rows 2 and 1
    found = tiny.aligner.align(run, np.array([2, 1]), [sequences[1], sequences[0]], tok.eot,
                               [len(tok.sot_sequence)] * 2, frames[::-1])[::-1]
    heads = tiny_ref.alignment_heads.indices().T.tolist()
    for k, (text, n) in enumerate(zip(texts, frames)):
        scores = [None] * tiny_ref.dims.n_text_layer
        hooks = [b.cross_attn.register_forward_hook(lambda _, ins, outs, i=i: scores.__setitem__(i, outs[-1][0]))
                 for i, b in enumerate(tiny_ref.decoder.blocks)]
        try:
            with torch.no_grad(), whisper.model.disable_sdpa():
                logits = tiny_ref.decoder(torch.tensor([sequences[k]]),
                                          tiny_ref.encoder(torch.from_numpy(mels[k:k + 1])))[0]
        finally:
            for h in hooks:
                h.remove()
        probs = logits[len(tok.sot_sequence):, :tok.eot].softmax(-1)[np.arange(len(text)), text].numpy()
        weights = torch.stack([scores[layer][head] for layer, head in heads])[:, :, :n // 2].softmax(-1)
        std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
        matrix = median_filter((weights - mean) / std, 7).mean(0)[len(tok.sot_sequence):-1].numpy()
        assert np.abs(found[k].text_token_probs - probs).max() < 1e-4
        assert found[k].matrix.shape == matrix.shape
        assert np.abs(found[k].matrix - matrix).max() < 1e-3


@pytest.mark.parametrize("n", [1, 3, 4, 5, 9, 1100, 1500])
def test_reflected_neighbours_are_reflect_padding(n):
    ours = reflected_neighbours(n, 1500, 7)[:, :n]
    if n <= 3:
        assert (ours == np.arange(n)).all()
        return
    padded = np.pad(np.arange(n), 3, mode="reflect")
    assert (ours == np.stack([padded[k:k + n] for k in range(7)])).all()


def test_dtw_equals_openai():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 40), (17, 200), (60, 1500)]:
        cost = rng.normal(size=shape)
        cost[:, ::7] = cost[:, 1::7][:, :cost[:, ::7].shape[1]] if shape[1] > 1 else cost[:, ::7]  # some ties
        assert all((a == b).all() for a, b in zip(dtw(cost), dtw_cpu(cost)))


def test_words_are_the_same_with_the_recorded_steps_decoder(tiny, tiny_step, speech):
    audio = mw.load_audio(speech / "jfk.wav")
    assert timings(tiny_step.transcribe(audio, word_timestamps=True)) == timings(tiny.transcribe(audio, word_timestamps=True))


def test_files_at_once_give_each_file_its_words(tiny, speech):
    names = ["jfk.wav", "goforward.wav", "cards_005.wav"]
    options = TranscribeOptions.from_kwargs(word_timestamps=True)
    together = {name.name: result for name, _, result in transcribe_files(tiny, [speech / n for n in names], 3, options)}
    for name in names:
        alone = tiny.transcribe(str(speech / name), word_timestamps=True)
        assert timings(together[name]) == timings(alone)  # a batch rounds probabilities differently (1e-6)
        assert np.allclose([w["probability"] for w in words_of(together[name])],
                           [w["probability"] for w in words_of(alone)], atol=1e-4)


def test_throughput_mode_gives_every_segment_its_words(tiny, speech):
    result = tiny.transcribe(str(speech / "lecture.flac"), word_timestamps=True, batch_size=4)
    assert result["segments"]
    for segment in result["segments"]:
        assert "".join(w["word"] for w in segment["words"]) == segment["text"]
        times = [t for w in segment["words"] for t in (w["start"], w["end"])]
        assert times == sorted(times)
        assert segment["start"] <= times[0] and times[-1] <= segment["end"] + 1e-6
    alone = tiny.transcribe(str(speech / "lecture.flac"), batch_size=4)
    assert result["text"].split()[:20] == alone["text"].split()[:20]


# The second: the first clip's text runs past 1.4 s, where the next clip starts (the loop goes on there).
@pytest.mark.parametrize("clips, bounds", [("5,31.5,40,62", (5, 62.5)), ("0,1.3,1.4,20", (0, 20.5))])
def test_clip_timestamps_equal_openai(tiny, tiny_ref, speech, clips, bounds):
    audio = mw.load_audio(speech / "lecture.flac")
    ours = tiny.transcribe(audio, clip_timestamps=clips, word_timestamps=True)
    theirs = whisper.transcribe(tiny_ref, audio, fp16=False, clip_timestamps=clips, word_timestamps=True)
    assert [s["tokens"] for s in ours["segments"]] == [s["tokens"] for s in theirs["segments"]]
    assert_same_words(ours, theirs)
    words = words_of(ours)
    assert bounds[0] <= words[0]["start"] and words[-1]["end"] <= bounds[1]


def test_clip_past_the_end_stops_there(tiny, speech):
    """A clip that starts or ends after the recording (openai-whisper's loop would not end) is cut at its end."""
    audio = mw.load_audio(speech / "jfk.wav")
    assert tiny.transcribe(audio, clip_timestamps="30,50", temperature=0.0)["segments"] == []
    tail = tiny.transcribe(audio, clip_timestamps="5,50", temperature=0.0)
    assert "what your country can do for you" in tail["text"].lower() and tail["segments"][0]["start"] >= 5


def test_hallucination_silence_threshold_equals_openai(tiny, tiny_ref, speech):
    """Speech, 25 s of faint noise, speech: openai-whisper's guard on the same words decides the same."""
    rng = np.random.default_rng(1)
    jfk, cards = (mw.load_audio(speech / n) for n in ("jfk.wav", "cards_005.wav"))
    audio = np.concatenate([jfk, 0.003 * rng.normal(size=25 * 16000), cards]).astype(np.float32)
    for threshold in (1.0, 2.0):
        ours = tiny.transcribe(audio, word_timestamps=True, hallucination_silence_threshold=threshold)
        theirs = whisper.transcribe(tiny_ref, audio, fp16=False, word_timestamps=True,
                                    hallucination_silence_threshold=threshold)
        assert [s["tokens"] for s in ours["segments"]] == [s["tokens"] for s in theirs["segments"]]
        assert_same_words(ours, theirs)


def test_hallucination_silence_threshold_needs_words():
    with pytest.raises(mw.WhisperError, match="hallucination_silence_threshold needs word_timestamps"):
        TranscribeOptions.from_kwargs(hallucination_silence_threshold=2.0)


@pytest.mark.parametrize("clips", ["5,1", "-1,4", "a,b"])
def test_bad_clip_timestamps_are_refused(clips):
    with pytest.raises(mw.WhisperError, match="clip_timestamps"):
        TranscribeOptions.from_kwargs(clip_timestamps=clips)


def test_clip_timestamps_are_not_silently_dropped_by_the_throughput_mode():
    with pytest.raises(mw.WhisperError, match="clip_timestamps needs the sequential loop"):
        TranscribeOptions.from_kwargs(clip_timestamps="1,20", batch_size=4)
    assert TranscribeOptions.from_kwargs(clip_timestamps="0", batch_size=4).clip_timestamps == (0.0,)


# --- outputs -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lecture_words(tiny, speech):
    return tiny.transcribe(str(speech / "lecture.flac"), word_timestamps=True)


SUBTITLE_CASES = {
    "width-count": {"max_line_width": 24, "max_line_count": 2},
    "width": {"max_line_width": 30},
    "words": {"max_words_per_line": 3},
    "highlight": {"highlight_words": True},
    "words-count-highlight": {"max_words_per_line": 4, "max_line_count": 1, "highlight_words": True},
}


@pytest.mark.parametrize("case", SUBTITLE_CASES)
@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_are_openai_whispers(lecture_words, tmp_path, case, fmt):
    """Our writers and openai-whisper's, given the same result and options, write the same file."""
    from whisper.utils import get_writer

    options = SUBTITLE_CASES[case]
    write_result(lecture_words, tmp_path / "ours", fmt, SubtitleOptions(**options))
    (tmp_path / "theirs").mkdir()
    get_writer(fmt, str(tmp_path / "theirs"))(lecture_words, "lecture.flac",
                                               {"max_line_width": None, "max_line_count": None,
                                                "highlight_words": False, "max_words_per_line": None, **options})
    assert (tmp_path / f"ours.{fmt}").read_text() == (tmp_path / "theirs" / f"lecture.{fmt}").read_text()


@pytest.mark.parametrize("case", SUBTITLE_CASES)
def test_tsv_rows_are_the_subtitle_cues(lecture_words, tmp_path, case):
    """openai-whisper's TSV ignores the subtitle options; ours gives the subtitles' cues, in milliseconds."""
    options = SubtitleOptions(**SUBTITLE_CASES[case])
    cues = list(srt.parse(write_result(lecture_words, tmp_path / "x", "srt", options).read_text()))
    rows = write_result(lecture_words, tmp_path / "x", "tsv", options).read_text().splitlines()
    assert rows[0] == "start\tend\ttext"
    assert [r.split("\t") for r in rows[1:]] == [
        [str(round(c.start.total_seconds() * 1000)), str(round(c.end.total_seconds() * 1000)),
         c.content.replace("\n", " ")] for c in cues]


def test_cli_subtitle_options_in_openai_spelling(speech, tmp_path):
    """openai-whisper's flags as its `whisper` command takes them; the files parse and keep to the limits."""
    proc = subprocess.run(
        [sys.executable, "-m", "max_whisper.cli", "transcribe", str(speech / "lecture.flac"), "--model", "tiny.en", "-o", str(tmp_path),
         "-f", "all", "--word_timestamps", "True", "--max_line_width", "32", "--max_line_count", "2",
         "--highlight_words", "False", "--condition_on_previous_text", "True", "--verbose", "False"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    cues = list(srt.parse((tmp_path / "lecture.srt").read_text()))
    assert len(cues) > 20
    for cue in cues:
        lines = cue.content.split("\n")
        assert len(lines) <= 2
        assert all(len(line) <= 32 or " " not in line for line in lines)
        assert cue.start < cue.end
    vtt = webvtt.read(str(tmp_path / "lecture.vtt"))
    assert [c.text for c in vtt] == [c.content for c in cues]
    result = json.loads((tmp_path / "lecture.json").read_text())
    words = [w for s in result["segments"] for w in s["words"]]
    assert {"word", "start", "end", "probability"} <= set(words[0])
    assert " ".join(c.content.replace("\n", " ") for c in cues).split() == result["text"].split()


def test_cli_highlight_and_words_per_line(speech, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "max_whisper.cli", "transcribe", str(speech / "jfk.wav"), "--model", "tiny.en", "--output-dir", str(tmp_path),
         "--output-format", "vtt", "--word-timestamps", "--max-words-per-line", "3", "--highlight-words"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    captions = webvtt.read(str(tmp_path / "jfk.vtt"))
    underlined = [c.raw_text for c in captions if "<u>" in c.raw_text]
    assert len(underlined) == 22  # one caption per word, that word underlined
    assert all(len(c.raw_text.replace("<u>", "").replace("</u>", "").split()) <= 3 for c in captions)


@pytest.mark.parametrize("argv, message", [
    (["--max-line-width", "20"], "need --word-timestamps"),
    (["--hallucination_silence_threshold", "2"], "needs --word-timestamps"),
])
def test_cli_word_option_errors_are_one_line(speech, argv, message):
    proc = subprocess.run([sys.executable, "-m", "max_whisper.cli", "transcribe", str(speech / "jfk.wav"), *argv],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_silence_has_no_words(tiny, tmp_path):
    path = write_wav(tmp_path / "quiet.wav", np.zeros(16000 * 3, np.float32))
    result = tiny.transcribe(str(path), word_timestamps=True)
    assert result["segments"] == [] and result["text"] == ""


def test_openai_switch_spellings():
    from max_whisper.cli import openai_spellings

    assert openai_spellings(["a.wav", "--word_timestamps", "True", "--fp16=False", "--verbose", "b.wav",
                             "--condition_on_previous_text", "false", "--highlight_words"]) == [
        "a.wav", "--word-timestamps", "--no-fp16", "--verbose", "b.wav", "--no-condition-on-previous-text",
        "--highlight-words"]


def test_cli_passes_clip_timestamps_only_when_given():
    """Backends without clip_timestamps (transformers) still run the default command line."""
    from max_whisper.cli import build_parser, transcribe_options

    assert "clip_timestamps" not in transcribe_options(build_parser().parse_args(["transcribe", "a.wav"]))
    given = build_parser().parse_args(["transcribe", "a.wav", "--clip_timestamps", "1,5"])
    assert transcribe_options(given)["clip_timestamps"] == "1,5"


def test_words_after_a_forced_prefix_are_timed_where_they_are_spoken(tiny, speech):
    """A forced prefix is spoken before the text decoded after it: the alignment reads the prefix's tokens
    too, so the text's words keep the times they have when the whole window is decoded freely (aligned
    alone, the text's first words fell on the prefix's audio)."""
    audio = mw.load_audio(speech / "jfk.wav")
    plain = words_of(tiny.transcribe(audio, word_timestamps=True, without_timestamps=True, temperature=0.0))
    prefix = "".join(w["word"] for w in plain[:4])
    after = words_of(tiny.transcribe(audio, word_timestamps=True, without_timestamps=True, temperature=0.0,
                                     prefix=prefix))
    same = plain[4:4 + len(after)]  # the prefixed decode may stop sooner
    assert len(after) >= 10 and [w["word"] for w in after] == [w["word"] for w in same]
    # (a segment's first words are moved by openai-whisper's rules for words after a pause: the rest compared)
    gaps = np.abs(np.array([[w["start"], w["end"]] for w in after[2:]])
                  - np.array([[w["start"], w["end"]] for w in same[2:]]))
    assert plain[4]["start"] > 1.0 and gaps.max() <= 0.1, (plain[4]["start"], gaps.max())
