"""The one exception type users see: a clear message, never a traceback to read."""


class WhisperError(Exception):
    """A failure the user can act on (bad file, missing model, bad option)."""
