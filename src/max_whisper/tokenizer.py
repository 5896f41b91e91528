"""Whisper's tokenizer on Hugging Face `tokenizers`: text BPE plus the special tokens.

Special token ids follow openai-whisper's layout: <|endoftext|>, <|startoftranscript|>,
one token per language, <|translate|>, <|transcribe|>, <|startoflm|>, <|startofprev|>,
<|nospeech|>, <|notimestamps|>, then 1501 timestamp tokens <|0.00|> .. <|30.00|>.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .errors import WhisperError, first_line

# openai-whisper's language order (token order); names accepted for --language.
LANGUAGES = dict(
    en="english", zh="chinese", de="german", es="spanish", ru="russian", ko="korean", fr="french",
    ja="japanese", pt="portuguese", tr="turkish", pl="polish", ca="catalan", nl="dutch", ar="arabic",
    sv="swedish", it="italian", id="indonesian", hi="hindi", fi="finnish", vi="vietnamese", he="hebrew",
    uk="ukrainian", el="greek", ms="malay", cs="czech", ro="romanian", da="danish", hu="hungarian",
    ta="tamil", no="norwegian", th="thai", ur="urdu", hr="croatian", bg="bulgarian", lt="lithuanian",
    la="latin", mi="maori", ml="malayalam", cy="welsh", sk="slovak", te="telugu", fa="persian",
    lv="latvian", bn="bengali", sr="serbian", az="azerbaijani", sl="slovenian", kn="kannada",
    et="estonian", mk="macedonian", br="breton", eu="basque", is_="icelandic", hy="armenian",
    ne="nepali", mn="mongolian", bs="bosnian", kk="kazakh", sq="albanian", sw="swahili", gl="galician",
    mr="marathi", pa="punjabi", si="sinhala", km="khmer", sn="shona", yo="yoruba", so="somali",
    af="afrikaans", oc="occitan", ka="georgian", be="belarusian", tg="tajik", sd="sindhi", gu="gujarati",
    am="amharic", yi="yiddish", lo="lao", uz="uzbek", fo="faroese", ht="haitian creole", ps="pashto",
    tk="turkmen", nn="nynorsk", mt="maltese", sa="sanskrit", lb="luxembourgish", my="myanmar",
    bo="tibetan", tl="tagalog", mg="malagasy", as_="assamese", tt="tatar", haw="hawaiian", ln="lingala",
    ha="hausa", ba="bashkir", jw="javanese", su="sundanese", yue="cantonese",
)
LANGUAGES = {k.rstrip("_"): v for k, v in LANGUAGES.items()}  # `is`, `as` are Python keywords
TO_LANGUAGE_CODE = {name: code for code, name in LANGUAGES.items()}


def language_code(language: str) -> str:
    """`English`, `english` or `en` -> `en`; anything else is an error."""
    key = language.strip().lower()
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise WhisperError(f"unsupported language '{language}'; use a code such as en, de, fr or a name such as english")


@dataclass
class Tokenizer:
    """Text <-> token ids for one vocabulary, with the task's start-of-transcript sequence."""

    path: Path
    multilingual: bool
    num_languages: int
    language: str | None = None
    task: str | None = None

    def __post_init__(self) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self._hf = HFTokenizer.from_file(str(self.path))
        except Exception as e:  # noqa: BLE001  (tokenizers raises a bare Exception on bad files)
            raise WhisperError(f"{self.path}: unreadable tokenizer file ({first_line(e)})") from None
        self.special = {t.content: i for i, t in self._hf.get_added_tokens_decoder().items()}
        for required in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"):
            if required not in self.special:
                raise WhisperError(f"{self.path}: not a Whisper tokenizer (no {required})")
        self.language_codes = tuple(LANGUAGES)[: self.num_languages]
        if self.language is not None and self.language not in self.language_codes:
            raise WhisperError(f"language '{self.language}' is not in this model's vocabulary")

    # --- special tokens ---
    @cached_property
    def eot(self) -> int:
        return self.special["<|endoftext|>"]

    @cached_property
    def sot(self) -> int:
        return self.special["<|startoftranscript|>"]

    @cached_property
    def no_timestamps(self) -> int:
        return self.special["<|notimestamps|>"]

    @cached_property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1

    @cached_property
    def no_speech(self) -> int:
        return self.no_timestamps - 1  # <|nospeech|> (<|nocaptions|> in older vocabularies)

    @cached_property
    def sot_prev(self) -> int:
        return self.no_timestamps - 2

    @cached_property
    def sot_lm(self) -> int:
        return self.no_timestamps - 3

    @cached_property
    def transcribe(self) -> int:
        return self.no_timestamps - 4

    @cached_property
    def translate(self) -> int:
        return self.no_timestamps - 5

    def to_language_token(self, language: str) -> int:
        if language not in self.language_codes:
            raise WhisperError(f"language '{language}' is not in this model's vocabulary")
        return self.sot + 1 + self.language_codes.index(language)

    @cached_property
    def all_language_tokens(self) -> tuple[int, ...]:
        return tuple(self.sot + 1 + i for i in range(self.num_languages))

    @cached_property
    def sot_sequence(self) -> tuple[int, ...]:
        seq = [self.sot]
        if self.language is not None:
            seq.append(self.to_language_token(self.language))
        if self.task is not None:
            seq.append(self.transcribe if self.task == "transcribe" else self.translate)
        return tuple(seq)

    @cached_property
    def sot_sequence_including_notimestamps(self) -> tuple[int, ...]:
        return self.sot_sequence + (self.no_timestamps,)

    # --- text ---
    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def decode(self, tokens) -> str:
        """Text of the tokens, timestamps dropped."""
        return self._hf.decode([int(t) for t in tokens if t < self.timestamp_begin], skip_special_tokens=False)

    def decode_with_timestamps(self, tokens) -> str:
        """Text with timestamp tokens rendered as <|1.08|>."""
        out: list[str] = []
        run: list[int] = []
        for t in tokens:
            if t >= self.timestamp_begin:
                out.append(self._hf.decode(run, skip_special_tokens=False))
                run = []
                out.append(f"<|{(t - self.timestamp_begin) * 0.02:.2f}|>")
            else:
                run.append(int(t))
        out.append(self._hf.decode(run, skip_special_tokens=False))
        return "".join(out)

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Tokens of symbols that are never speech; openai-whisper's `suppress_tokens="-1"` set."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
        miscellaneous = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + list(miscellaneous):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in miscellaneous:
                    result.add(tokens[0])
        return tuple(sorted(result))


def check_english_only(language: str | None, task: str | None) -> None:
    """An English-only model asked for another language or for translation is an error: openai-whisper's
    `.en` models would write English text under the other language's label."""
    if language not in (None, "en"):
        raise WhisperError(f"this model is English-only: it cannot transcribe language '{language}'; "
                           "use a multilingual model such as base")
    if task not in (None, "transcribe"):
        raise WhisperError("this model is English-only; translate needs a multilingual model such as base")


def get_tokenizer(path: Path | None, multilingual: bool, num_languages: int,
                  language: str | None = None, task: str | None = None) -> Tokenizer:
    """As openai-whisper's: English-only models have no language or task tokens in their prompt (the engine
    refuses other languages and translation for them: `check_english_only`)."""
    if path is None:
        raise WhisperError("this model has no tokenizer.json beside it; put Whisper's tokenizer.json in the model folder")
    if multilingual:
        language, task = language or "en", task or "transcribe"
    else:
        language, task = None, None
    return Tokenizer(Path(path), multilingual, num_languages, language, task)
