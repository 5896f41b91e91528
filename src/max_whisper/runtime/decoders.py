"""The decoder on the device: three ways to run decoding steps, one chosen when a model is loaded.

- `CachedDecoder`: the general decoder graph (any batch, any number of new tokens, logits or a greedy
  choice out) over a KV cache made for each run;
- `RowDecoder` (the CPU's default): the same, and the sequential loop's single-row steps in the one-row
  graph, whose products read each weight matrix once at memory speed;
- `RecordedStepsDecoder` (a GPU's default): greedy steps `STEPS_PER_CALL` at a time in a graph recorded
  once per batch size and replayed, the token choice and its rules in the graph; it holds rows of
  different initial lengths, each at its own position. tiny's float32 steps of 2-64 rows run in the graph
  whose products are in the row form (`decoder_step_rows`, `row_form_batches`).

Each `start` makes a run (the decoding layer's `Inference`) over cross-attention keys and values of the
rows' audio features and an empty self-attention cache; the decoding rules call nothing else.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
from max import driver
from max.dtype import DType
from max.engine import Model

from .. import rules
from ..errors import WhisperError
from ..graph.decoder import STEP_INPUT, STEPS_PER_CALL
from ..weights import ModelDimensions
from .device import recorded_batches
from .session import GraphSession

Choices = list[tuple[np.ndarray, np.ndarray]]  # per step: each row's token and its log probability


class CachedDecoder:
    """Decoding steps in the general decoder graph."""

    keeps_ragged_rows = False  # can rows whose initial tokens differ in length be decoded together
    # A greedy decode of one row feeds a draft (`DecodingOptions.draft`) in its first step: here a step is a graph
    # call of its own (5 ms on a 2-core CPU), and a stream's decode took 0.35 s with drafts against 0.56 s
    # (docs/measurements.md, issue 24).
    takes_drafts = True

    def __init__(self, session: GraphSession):
        self.session = session
        self.dims = session.dims
        self.cross_kv = session.load(self.cross_kv_graph)
        self.decoder = session.load("decoder")
        self._reorder: Model | None = None

    cross_kv_graph = "cross_kv"

    @property
    def reorder(self) -> Model:
        """The beam reorder graph, compiled on first use (beam search)."""
        if self._reorder is None:
            self._reorder = self.session.load("reorder")
        return self._reorder

    def start(self, features: driver.Buffer, rows: np.ndarray, suppressed: tuple[int, ...] = ()) -> CachedRun:
        """A run decoding one row per entry of `rows` (indices into `features`' windows), greedy choices
        never taking the `suppressed` tokens."""
        s = self.session
        keys, values = s.run("cross_kv", self.cross_kv, features, s.to_device(np.asarray(rows, np.int64)))
        shape = (len(rows), self.dims.n_text_ctx, self.dims.n_text_state)
        caches = [driver.Buffer(s.dtype, shape, s.device) for _ in range(2 * self.dims.n_text_layer)]
        return CachedRun(self, keys, values, caches, suppression(s, suppressed))

    def graph_for(self, tokens: np.ndarray, positions: tuple[int, ...]) -> tuple[str, Model]:
        """The graph that feeds `tokens` [batch, seq] and returns the logits at `positions`."""
        return "decoder", self.decoder


class RowDecoder(CachedDecoder):
    """The general decoder graph, and the one-row graph for one new token of a single row."""

    def __init__(self, session: GraphSession):
        super().__init__(session)
        self.decoder_row = session.load("decoder_row")

    def graph_for(self, tokens: np.ndarray, positions: tuple[int, ...]) -> tuple[str, Model]:
        if tokens.shape == (1, 1) and positions == (0,):
            return "decoder_row", self.decoder_row
        return "decoder", self.decoder


def row_form_batches(dims: ModelDimensions, dtype: DType) -> range:
    """The recorded batch sizes whose steps run `decoder_step_rows`. On an H200 (tiny.en, float32) MAX's
    products for more than one row run GEMM kernels, 4x its GEMV kernels' time for one; with the products in
    the row form a step's kernels took 782 against 1163 us at 6 rows, 1269 against 1578 at 16, 3579 against
    3736 at 64, and 64 files at once 1.38 against 1.65 s (docs/measurements.md, "Few rows in the row form").
    Measured up to 64 rows of width 384 only: wider models and 16-bit ones (whose sums would run in 16 bits)
    keep the matrix products."""
    if dtype != DType.float32 or dims.n_text_state > 384:
        return range(0)
    return range(2, 65)


class RecordedStepsDecoder(CachedDecoder):
    """Greedy steps in the recorded step graphs, on fixed buffers per batch size (`StepSlot`)."""

    keeps_ragged_rows = True
    # Eight recorded steps a call cost an H200 about what the draft's pass in the general graph and its logits'
    # copy to the host cost: a stream's decode took 0.070 s with drafts against 0.063 s without (issue 24).
    takes_drafts = False
    cross_kv_graph = "cross_kv_for_steps"

    def __init__(self, session: GraphSession):
        super().__init__(session)
        self.row_form_batches = row_form_batches(session.dims, session.dtype)
        self.decoder_step = session.load("decoder_step")
        self.decoder_step_rows = session.load("decoder_step_rows") if self.row_form_batches else None
        self._slots: dict[int, StepSlot] = {}

    def step_graph(self, batch: int) -> tuple[str, Model]:
        """The step graph `batch` rows (a recorded batch size) run in, and its name."""
        if self.decoder_step_rows is not None and batch in self.row_form_batches:
            return "decoder_step_rows", self.decoder_step_rows
        return "decoder_step", self.decoder_step

    def start(self, features: driver.Buffer, rows: np.ndarray, suppressed: tuple[int, ...] = ()) -> RecordedRun:
        s = self.session
        padding = recorded_batch(len(rows)) - len(rows)
        rows = np.concatenate([rows, np.repeat(rows[:1], padding)]).astype(np.int64)
        keys, values, values_t = s.run("cross_kv", self.cross_kv, features, s.to_device(rows))
        if len(rows) not in self._slots:
            self._slots[len(rows)] = StepSlot(self, len(rows), keys, values, values_t)
        slot = self._slots[len(rows)]
        for buffer, new in ((slot.cross_k, keys), (slot.cross_v, values), (slot.cross_v_t, values_t)):
            buffer.inplace_copy_from(new)
        s.device.synchronize()  # copies are asynchronous, even on the CPU; `keys` dies here
        run = RecordedRun(self, slot.cross_k, slot.cross_v, slot.caches, suppression(s, suppressed), slot=slot,
                          padding=padding)
        slot.owner = run
        return run


def make_decoder(session: GraphSession, recorded_steps: bool | None = None) -> CachedDecoder:
    """The decoder for this device: recorded steps on a GPU, single-row steps on the CPU. `recorded_steps`
    True runs the recorded steps on the CPU too (to test them without a GPU), False the general graph."""
    if recorded_steps if recorded_steps is not None else not session.on_host:
        return RecordedStepsDecoder(session)
    return RowDecoder(session) if session.on_host else CachedDecoder(session)


def suppression(session: GraphSession, token_ids: tuple[int, ...]) -> driver.Buffer:
    """The decoder's suppression mask input: -inf at `token_ids`, 0 elsewhere."""
    def mask() -> np.ndarray:
        m = np.zeros(session.dims.n_vocab, np.float32)
        m[list(token_ids)] = -np.inf
        return m

    return session.constant(("suppression", token_ids), mask)


class CachedRun:
    """One decoding run: the rows' cross keys/values and self-attention cache, filled `offset` positions."""

    def __init__(self, decoder: CachedDecoder, cross_k: driver.Buffer, cross_v: driver.Buffer,
                 caches: list[driver.Buffer], suppress: driver.Buffer, padding: int = 0):
        self.decoder, self.session = decoder, decoder.session
        self.cross_k, self.cross_v, self.caches, self.suppress = cross_k, cross_v, caches, suppress
        self.offset = 0  # positions written in the cache
        self.padding = padding  # rows after the run's, up to a recorded batch size: fed zeros, output dropped

    def logits(self, tokens: np.ndarray, positions: Sequence[int] | None = None,
               ragged: np.ndarray | None = None) -> np.ndarray:
        """Feed new tokens [batch, seq]; returns float32 logits [batch, n_pos, vocab] at `positions` (by
        default the last). `ragged` (the first step): per row, how many of the last positions are padding,
        for decoders that keep ragged rows."""
        if ragged is not None:
            raise WhisperError("internal error: rows of different lengths need the recorded step graph")
        logits, _ = self._execute(tokens, positions, rules.open_bounds(len(tokens), self.decoder.dims.n_vocab))
        return self.session.to_host(logits)[:len(tokens)]

    def greedy(self, tokens: np.ndarray, rule_state: np.ndarray) -> Choices:
        """Feed each row's last token [batch, 1]; choose its next token on the device under the rules of
        `rule_state` [batch, rules.STATE] and the suppression mask. Returns one step's choices."""
        row_bounds = rules.bounds(rule_state, self.decoder.dims.n_vocab)
        _, choice = self._execute(tokens, None, row_bounds)
        choice = self.session.to_host(choice)[:len(tokens)]
        return [(choice[:, 0].astype(np.int64), choice[:, 1])]

    def rewind(self, fed: int) -> None:
        """Keep the first `fed` tokens fed: the next ones overwrite the cache after them, which no graph
        reads before they are written (each reads up to the positions it feeds)."""
        self._check_owner()
        if not 0 <= fed <= self.offset:
            raise WhisperError(f"internal error: cannot rewind a run of {self.offset} tokens to {fed}")
        self.offset = fed

    def reorder(self, source_rows: np.ndarray) -> None:
        """Beam search: row i of the cache becomes row source_rows[i]."""
        self._check_owner()
        n = len(source_rows)
        source_rows = np.concatenate([np.asarray(source_rows, np.int64), np.arange(n, n + self.padding)])
        s = self.session
        s.run("reorder", self.decoder.reorder, s.to_device(source_rows), *self.caches)

    def _execute(self, tokens: np.ndarray, positions: Sequence[int] | None, row_bounds: np.ndarray):
        s = self.session
        tokens = np.ascontiguousarray(self._fill(tokens), dtype=np.int64)
        row_bounds = self._fill(row_bounds)
        self._claim(tokens.shape[1])
        at = tuple(positions if positions is not None else [tokens.shape[1] - 1])
        offset = driver.Buffer.from_numpy(np.array(self.offset, dtype=np.int64))
        name, model = self.decoder.graph_for(tokens, at)
        logits, choice = s.run(name, model, s.to_device(tokens), offset, logit_positions(s, at), self.suppress,
                               s.to_device(row_bounds), self.cross_k, self.cross_v, *self.caches)
        self.offset += tokens.shape[1]
        return logits, choice

    def _fill(self, rows: np.ndarray) -> np.ndarray:
        """Per-row inputs [n, ...] with zero rows for the padding."""
        if not self.padding:
            return rows
        return np.concatenate([rows, np.zeros((self.padding, *rows.shape[1:]), rows.dtype)])

    def _check_owner(self) -> None:
        """Runs on fixed buffers are valid until a newer run takes them over."""

    def _claim(self, n_new: int, behind: int = 0) -> int:
        """Checks that this run still owns its buffers and that `n_new` more tokens fit in the context of
        the row `behind` positions short of `offset` (ragged rows: the one furthest behind); returns that
        row's position for the first of them."""
        self._check_owner()
        first = self.offset - behind
        if first + n_new > self.decoder.dims.n_text_ctx:
            raise WhisperError(f"decoder context of {self.decoder.dims.n_text_ctx} tokens exceeded")
        return first


def logit_positions(session: GraphSession, positions: tuple[int, ...]) -> driver.Buffer:
    """The decoder's logit-positions input (nearly every step asks for position 0 of one new token)."""
    return session.constant(("positions", positions), lambda: np.array(positions, np.int64))


class RecordedRun(CachedRun):
    """A run on a `StepSlot`'s fixed buffers: the first step in the general graph, then the recorded steps."""

    decoder: RecordedStepsDecoder

    def __init__(self, decoder: RecordedStepsDecoder, cross_k: driver.Buffer, cross_v: driver.Buffer,
                 caches: list[driver.Buffer], suppress: driver.Buffer, slot: StepSlot, padding: int):
        super().__init__(decoder, cross_k, cross_v, caches, suppress, padding)
        self.slot = slot
        # Rows whose first tokens were shorter than others': how many of the first step's positions each
        # left as padding. Such a row's next position is `offset - ragged`.
        self.ragged: np.ndarray | None = None

    def logits(self, tokens: np.ndarray, positions: Sequence[int] | None = None,
               ragged: np.ndarray | None = None) -> np.ndarray:
        if ragged is not None and self.offset > 0:
            raise WhisperError("internal error: only a run's first step can hold rows of different lengths")
        if self.ragged is not None:
            raise WhisperError("internal error: rows of different lengths go on in the recorded steps only")
        out = super().logits(tokens, positions)
        self.ragged = ragged
        return out

    def greedy(self, tokens: np.ndarray, rule_state: np.ndarray) -> Choices:
        """Feed one new token per row [batch, 1] and make STEPS_PER_CALL greedy choices under the rules of
        `rule_state`, advanced in the graph. Steps past the context's end are left out."""
        behind = self.ragged if self.ragged is not None else np.zeros(len(tokens), np.int64)
        first = self._claim(1, int(behind.max()))  # the steps go on while the row furthest behind fits
        n_steps = min(STEPS_PER_CALL, self.decoder.dims.n_text_ctx - first)
        positions = (self.offset - behind).astype(np.int64)[:, None]
        inputs = self._fill(np.concatenate([tokens, positions, rule_state], axis=1))
        choice = self.session.to_host(self.slot.step(inputs, self.suppress))[:len(tokens)]
        self.offset += n_steps
        return [(choice[:, i, 0].astype(np.int64), choice[:, i, 1]) for i in range(n_steps)]

    def _check_owner(self) -> None:
        if self.slot.owner is not self:
            raise WhisperError("internal error: a newer decoding run took over this run's GPU buffers")


def recorded_batch(batch: int) -> int:
    """The batch the recorded steps run `batch` rows on: the least of `device.recorded_batches` that holds
    them, the rest padding. Each recorded batch size keeps its own device memory (some hundred MB at 16
    rows): every size from 1 to 16 ran out of MAX's 8 GB graph memory pool on an H100, and powers of two
    alone padded a single file's 5 windows to 8 rows (+20 % time)."""
    return recorded_batches(batch)[-1]


class StepSlot:
    """The device buffers of decoding `batch` rows in recorded steps, and the steps recorded on them.

    A recorded call reads and writes fixed buffers, so every decoding run of this batch size uses
    these (one run at a time: the newest run owns them); each call copies its inputs into `inputs`.
    """

    def __init__(self, decoder: RecordedStepsDecoder, batch: int, cross_k: driver.Buffer, cross_v: driver.Buffer,
                 cross_v_t: driver.Buffer):
        s = decoder.session
        dims, dev = s.dims, s.device
        self.session, self.batch = s, batch
        self.name, self.model = decoder.step_graph(batch)
        self.inputs = driver.Buffer(DType.int64, (batch, len(STEP_INPUT)), dev)
        self.suppress = driver.Buffer(DType.float32, (dims.n_vocab,), dev)
        self.cross_k = driver.Buffer(s.dtype, tuple(cross_k.shape), dev)
        self.cross_v = driver.Buffer(s.dtype, tuple(cross_v.shape), dev)  # for the first step
        self.cross_v_t = driver.Buffer(s.dtype, tuple(cross_v_t.shape), dev)  # for the recorded ones
        shape = (batch, dims.n_text_ctx, dims.n_text_state)
        # Zeroed: the step reads every row, and masked rows of fresh memory can hold inf or NaN
        # (0 * NaN is NaN); later windows leave finite values there.
        self.caches = [driver.Buffer.zeros(shape, s.dtype, dev) for _ in range(2 * dims.n_text_layer)]
        self.owner: RecordedRun | None = None
        self._suppress_source: driver.Buffer | None = None
        self._output: driver.Buffer | None = None
        # Host copy of `inputs`: it must outlive the asynchronous copy to the device.
        self._staging = np.zeros(tuple(self.inputs.shape), np.int64)
        self._staging_buffer = driver.Buffer.from_numpy(self._staging)

    def step(self, inputs: np.ndarray, suppress: driver.Buffer) -> driver.Buffer:
        """Run the steps from `inputs` [batch, STEP_INPUT]; returns their greedy choices [batch, steps, 2]."""
        s, model = self.session, self.model
        self._staging[...] = inputs
        self.inputs.inplace_copy_from(self._staging_buffer)
        if suppress is not self._suppress_source:
            self.suppress.inplace_copy_from(suppress)
            self._suppress_source = suppress
        s.device.synchronize()  # the step reads what the copies write (and the next step rewrites the staging)
        args = (self.inputs, self.suppress, self.cross_k, self.cross_v_t, *self.caches)
        start = time.perf_counter()
        if s.on_host:
            self._output = model.execute(*args)[0]
        else:
            if self._output is None:
                self._output = model.capture(self.batch, *args)[0]
            model.replay(self.batch, *args)
            s.device.synchronize()
        s.timings.add(self.name, time.perf_counter() - start)
        return self._output
