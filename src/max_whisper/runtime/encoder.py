"""The encoder on the device."""

from __future__ import annotations

import numpy as np
from max import driver

from .session import GraphSession


class Encoder:
    """Log-mel windows in, audio features out, left on the device for the decoder."""

    def __init__(self, session: GraphSession):
        self.session = session
        self.model = session.load("encoder")

    def encode(self, mel: np.ndarray) -> driver.Buffer:
        """mel [batch, n_mels, 3000] float32 -> audio features [batch, n_audio_ctx, d] on the device."""
        mel = np.ascontiguousarray(mel, dtype=np.float32)  # the 16-bit graph casts it
        return self.session.run("encoder", self.model, self.session.to_device(mel))[0]
