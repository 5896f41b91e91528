"""The one exception type users see: a clear message, never a traceback to read."""


class WhisperError(Exception):
    """A failure the user can act on (bad file, missing model, bad option)."""


def first_line(e: BaseException) -> str:
    """A library's error text cut to one line, for one-line messages."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
