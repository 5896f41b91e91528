"""The GPU kernels of the engine's recorded decoder call (STEPS_PER_CALL greedy steps), from CUPTI
through torch.profiler (torch sees the kernels MAX launches in the same process).

    python benchmarks/step_kernels.py [--calls 20] [--batch 1]

Prints the kernels by total GPU time, with counts per call.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

import max_whisper as mw
from max_whisper.cli import sample_path
from max_whisper.model import STEPS_PER_CALL


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args()
    torch.cuda.init()
    model = mw.load_model(args.model, device="gpu")
    g, tok = model.graphs, model.tokenizer()
    mel = mw.pad_or_trim(mw.log_mel_spectrogram(mw.load_audio(sample_path())), 3000)
    features = g.encode(np.repeat(mel[None], args.batch, axis=0))
    state = g.start_decoding(features, np.arange(args.batch))
    state.step(np.tile(np.array(tok.sot_sequence), (args.batch, 1)))
    rule_state = np.tile(np.array([tok.eot, 1, 0, 1, -1]), (args.batch, 1))  # timestamp rules, none yet
    tokens = np.full((args.batch, 1), tok.encode(" And")[0])
    for _ in range(3):  # records the call
        state.offset = 3
        state.steps_greedy(tokens, rule_state)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.calls):
            state.offset = 3
            state.steps_greedy(tokens, rule_state)
    rows = [(e.key, e.count, e.device_time_total) for e in prof.key_averages() if e.device_time_total > 0]
    rows.sort(key=lambda r: -r[2])
    total = sum(r[2] for r in rows)
    print(f"{args.calls} calls of {STEPS_PER_CALL} steps, batch {args.batch}: {total / args.calls / STEPS_PER_CALL:.1f} us "
          f"of kernels per step, {sum(r[1] for r in rows) / args.calls / STEPS_PER_CALL:.1f} kernels per step")
    for key, count, us in rows:
        print(f"{us / args.calls / STEPS_PER_CALL:8.2f} us/step {count / args.calls / STEPS_PER_CALL:6.2f}/step  {key[:150]}")


if __name__ == "__main__":
    main()
