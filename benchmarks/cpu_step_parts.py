"""Where a greedy decoder step's time goes on the CPU: the whole step (the engine's one-row decoder graph)
against its vocabulary part alone (final layer norm, projection onto the 51864 tokens, greedy choice), batch 1.

    python benchmarks/cpu_step_parts.py [--context 100] [--steps 50]

The rest (embedding and the 4 residual blocks with their cache writes) is the difference.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from max.dtype import DType
from max.graph import Graph, TensorType

import max_whisper as mw
from max_whisper.cli import sample_path
from max_whisper.model import RULE_COLUMNS, GraphWeights, greedy_choice, vocab_logits


def median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 3)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--context", type=int, default=100, help="tokens already in the cache")
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()

    model = mw.load_model("tiny.en", device="cpu")
    g, tok = model.graphs, model.tokenizer()
    mel = mw.pad_or_trim(mw.log_mel_spectrogram(mw.load_audio(str(sample_path())), 80), 3000)[None]
    state = g.start_decoding(g.encode(mel), np.array([0]))
    state.step(np.array([[tok.sot] * args.context]))
    rules = np.array([[tok.eot, tok.eot, tok.timestamp_begin, tok.timestamp_begin, model.dims.n_vocab, 1]])
    the = np.array([[tok.encode(" the")[0]]])

    def whole_step():
        state.offset = args.context  # rewrite the same cache row each time: a fixed context
        state.step_greedy(the, rules)

    w = GraphWeights(g._state, DType.float32, g.device_ref)
    inputs = [TensorType(DType.float32, [1, 1, model.dims.n_text_state], g.device_ref),
              TensorType(DType.float32, [model.dims.n_vocab], g.device_ref),
              TensorType(DType.int64, [1, len(RULE_COLUMNS)], g.device_ref)]
    with Graph("vocab_part", input_types=inputs) as graph:
        x, suppress, rule_in = (v.tensor for v in graph.inputs)
        graph.output(greedy_choice(vocab_logits(w, x, one_row=True)[:, 0, :], suppress, rule_in))
    start = time.perf_counter()
    vocab = g.session.load(graph, weights_registry=w.registry())
    compile_s = time.perf_counter() - start
    feed = [g.to_device(np.random.default_rng(0).standard_normal((1, 1, model.dims.n_text_state)).astype(np.float32)),
            g.suppression(()), g.to_device(rules)]

    whole, part = median_ms(whole_step, args.steps), median_ms(lambda: vocab.execute(*feed), args.steps)
    print(json.dumps({"context": args.context, "whole_step_ms": whole, "vocabulary_part_ms": part,
                      "blocks_and_rest_ms": round(whole - part, 3), "vocab_part_compile_s": round(compile_s, 1)},
                     indent=2))


if __name__ == "__main__":
    main()
