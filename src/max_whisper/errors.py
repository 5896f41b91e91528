"""The one exception type users see: a clear message, never a traceback to read."""


class WhisperError(Exception):
    """A failure the user can act on (bad file, missing model, bad option)."""


def first_line(e: BaseException) -> str:
    """A library's error text cut to one line, for one-line messages."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def describe(e: BaseException) -> str:
    """One line for any failure: a WhisperError's message, or an unexpected error's type and first line."""
    if isinstance(e, WhisperError):
        return str(e)
    return f"{type(e).__name__}: {first_line(e)}" if str(e).strip() else type(e).__name__


def file_error(path, e: BaseException) -> WhisperError:
    """A failure while working on `path`, as a WhisperError whose message names the file."""
    message = describe(e)
    return WhisperError(message if message.startswith(str(path)) else f"{path}: {message}")
