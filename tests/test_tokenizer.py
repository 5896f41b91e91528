"""The tokenizer against openai-whisper's (tiktoken) on both vocabularies."""

from __future__ import annotations

import pytest
import whisper.tokenizer as wt

from max_whisper import WhisperError
from max_whisper.tokenizer import get_tokenizer, language_code
from max_whisper.models import load_checkpoint

TEXTS = [" Hello world, it's 3.5 degrees.", " ümlauts, 日本語 and «quotes» -- ♪ la la", " And so my fellow Americans"]


@pytest.fixture(scope="module", params=["tiny.en", "base"])
def pair(request):
    ckpt = load_checkpoint(request.param)
    return ckpt, ckpt.dims


@pytest.mark.parametrize("language,task", [(None, None), ("de", "translate"), ("en", "transcribe")])
def test_special_tokens_match(pair, language, task):
    ckpt, d = pair
    ours = get_tokenizer(ckpt.tokenizer_file, d.is_multilingual, d.num_languages, language, task)
    theirs = wt.get_tokenizer(d.is_multilingual, num_languages=d.num_languages, language=language, task=task)
    for name in ("eot", "sot", "sot_prev", "sot_lm", "no_speech", "no_timestamps", "timestamp_begin",
                 "transcribe", "translate", "sot_sequence", "sot_sequence_including_notimestamps",
                 "non_speech_tokens"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert sorted(ours.all_language_tokens) == sorted(theirs.all_language_tokens)


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_match(pair, text):
    ckpt, d = pair
    ours = get_tokenizer(ckpt.tokenizer_file, d.is_multilingual, d.num_languages)
    theirs = wt.get_tokenizer(d.is_multilingual, num_languages=d.num_languages)
    ids = theirs.encode(text)
    assert ours.encode(text) == ids
    with_ts = [ours.timestamp_begin] + ids + [ours.timestamp_begin + 150]
    assert ours.decode(with_ts) == theirs.decode(with_ts) == text
    assert ours.decode_with_timestamps(with_ts) == theirs.decode_with_timestamps(with_ts)


def test_language_names():
    assert language_code("English") == "en" and language_code("de") == "de" and language_code("is") == "is"
    with pytest.raises(WhisperError, match="unsupported language 'klingon'"):
        language_code("klingon")


def test_bad_tokenizer_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(WhisperError, match=r"tokenizer\.json: unreadable tokenizer file"):
        get_tokenizer(tmp_path / "tokenizer.json", False, 99)
