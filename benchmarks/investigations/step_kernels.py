"""The GPU kernels of the engine's recorded decoder call (STEPS_PER_CALL greedy steps), from CUPTI
through torch.profiler (torch sees the kernels MAX launches in the same process).

    python -m benchmarks.investigations.step_kernels [--calls 20] [--batch 1] [--graph decoder_step_rows]

Prints the tokens the call chose for its first row (the same whichever step graph runs them), then the kernels
by total GPU time, with counts per call. `--graph`: the step graph to run (by default the one the engine
takes for that batch size).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import add_model_args, first_window, load, parser
from max_whisper import load_audio, rules
from max_whisper.cli import sample_path
from max_whisper.graph.decoder import STEPS_PER_CALL


def main() -> None:
    p = parser(__doc__)
    add_model_args(p, devices=("gpu",))
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--batch", type=int, default=1, help="rows decoded together")
    p.add_argument("--graph", choices=("decoder_step", "decoder_step_rows"), default=None)
    args = p.parse_args()
    torch.cuda.init()
    model = load(args)
    if args.graph is not None:
        graph = model.session.load(args.graph)
        model.decoder.step_graph = lambda batch: graph  # type: ignore[attr-defined]
    tok = model.tokenizer()
    mel = first_window(load_audio(sample_path()), model.dims.n_mels)
    run = model.decoder.start(model.embed_audio(np.repeat(mel[None], args.batch, axis=0)), np.arange(args.batch))
    run.logits(np.tile(np.array(tok.sot_sequence), (args.batch, 1)))
    # timestamp rules on, no timestamp yet
    rule_state = rules.columns(rules.STATE, args.batch, eot=tok.eot, ts_rule=1, last_was_ts=0, penultimate_was_ts=1,
                               last_ts=-1)
    tokens = np.full((args.batch, 1), tok.encode(" And")[0])

    def call() -> list:
        run.offset = 3  # every call runs its steps from position 3
        return run.greedy(tokens, rule_state)

    print("first row's tokens:", [int(t[0]) for t, _ in call()])
    for _ in range(2):  # records the call
        call()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.calls):
            call()
    rows = [(e.key, e.count, e.device_time_total) for e in prof.key_averages() if e.device_time_total > 0]
    rows.sort(key=lambda r: -r[2])
    steps = args.calls * STEPS_PER_CALL
    print(f"{args.calls} calls of {STEPS_PER_CALL} steps, batch {args.batch}: {sum(r[2] for r in rows) / steps:.1f} us "
          f"of kernels per step, {sum(r[1] for r in rows) / steps:.1f} kernels per step")
    for key, count, us in rows:
        print(f"{us / steps:8.2f} us/step {count / steps:6.2f}/step  {key[:150]}")


if __name__ == "__main__":
    main()
