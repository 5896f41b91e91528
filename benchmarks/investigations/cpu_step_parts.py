"""Where a greedy decoder step's time goes on the CPU: the whole step (the engine's one-row decoder graph)
against its vocabulary part alone (final layer norm, projection onto the 51864 tokens, greedy choice), batch 1.

    python -m benchmarks.investigations.cpu_step_parts [--context 100] [--steps 50] [--rounds 1]

The rest (embedding and the 4 residual blocks with their cache writes) is the difference. The vocabulary part
is timed in the engine's form (`layers.row_product`, "row") and as a matmul ("matmul"), the two alternated
`--rounds` times, each round's medians printed.
"""

from __future__ import annotations

import json
import time

import numpy as np
from max.dtype import DType
from max.graph import Graph, TensorType

from benchmarks.common import add_model_args, first_window, load, median_ms, parser, timed
from max_whisper import load_audio, rules
from max_whisper.cli import sample_path
from max_whisper.graph.decoder import vocab_logits
from max_whisper.graph.layers import GraphWeights
from max_whisper.runtime.decoders import suppression


def main() -> None:
    p = parser(__doc__)
    add_model_args(p, devices=("cpu",))
    p.add_argument("--context", type=int, default=100, help="tokens already in the cache")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=1, help="whole step and both vocabulary forms, alternated")
    args = p.parse_args()

    model = load(args)
    s, tok, dims = model.session, model.tokenizer(), model.dims
    mel = first_window(load_audio(sample_path()), dims.n_mels)[None]
    run = model.decoder.start(model.embed_audio(mel), np.array([0]))
    run.logits(np.array([[tok.sot] * args.context]))
    # end of text, timestamp rules on, no timestamp yet
    rule_state = rules.columns(rules.STATE, 1, eot=tok.eot, ts_rule=1, last_was_ts=0, penultimate_was_ts=1,
                               last_ts=-1)
    the = np.array([[tok.encode(" the")[0]]])

    def whole_step() -> None:
        run.offset = args.context  # rewrite the same cache row each time: a fixed context
        run.greedy(the, rule_state)

    inputs = [TensorType(DType.float32, [1, 1, dims.n_text_state], s.device_ref),
              TensorType(DType.float32, [dims.n_vocab], s.device_ref),
              TensorType(DType.int64, [1, len(rules.BOUNDS)], s.device_ref)]
    parts, compile_s = {}, {}
    for form in ("row", "matmul"):
        w = GraphWeights(s.state, DType.float32, s.device_ref)  # a graph's own weight values
        with Graph(f"vocab_part_{form}", input_types=inputs) as graph:
            x, suppress, row_bounds = (v.tensor for v in graph.inputs)
            logits = vocab_logits(w, x, one_row=form == "row")[:, 0, :]
            graph.output(rules.graph_greedy_choice(logits, suppress, row_bounds))
        start = time.perf_counter()
        parts[form] = s.session.load(graph, weights_registry=w.registry())
        compile_s[form] = round(time.perf_counter() - start, 1)
    x = np.random.default_rng(0).standard_normal((1, 1, dims.n_text_state)).astype(np.float32)
    feed = [s.to_device(x), suppression(s, ()), s.to_device(rules.bounds(rule_state, dims.n_vocab))]
    for _ in range(args.rounds):
        whole = median_ms(timed(whole_step, args.steps, warmup=1)[1])
        row, matmul = (median_ms(timed(lambda m=parts[f]: m.execute(*feed), args.steps, warmup=1)[1])
                       for f in ("row", "matmul"))
        print(json.dumps({"context": args.context, "whole_step_ms": whole, "vocabulary_part_ms": row,
                          "vocabulary_part_as_matmul_ms": matmul, "blocks_and_rest_ms": round(whole - row, 3),
                          "vocab_part_compile_s": compile_s}), flush=True)


if __name__ == "__main__":
    main()
