"""Where --files-at-once transcripts differ from each file transcribed alone, and why.

    python benchmarks/batched_vs_alone.py SPEECH_DIR     (on a GPU machine)

Transcribes 16 different recordings (lecture.flac started 7 s later each time) alone and at once,
logging every window decode (window, prompt, tokens). For the first windows whose tokens differ with the
same window and prompt, decodes that window again: alone (batch 1), in 16 rows of itself (a batch without
rows of different lengths), in its original batch, and next to one row of another prompt length; and
prints the top logits where the tokens part. Prints the batch sizes the batcher formed.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np

import max_whisper as mw
from max_whisper import batching
from max_whisper.audio import N_FRAMES, pad_or_trim
from max_whisper.decoding import DecodingOptions, DecodingTask

speech = sys.argv[1]
model = mw.load_model("tiny.en", device="gpu")
lecture = mw.load_audio(speech + "/lecture.flac")
shifted = [np.roll(lecture, -16000 * 7 * i) for i in range(16)]
def key(mel, prompt): return hashlib.sha1(np.ascontiguousarray(mel).tobytes() + repr(list(prompt or [])).encode()).hexdigest()
alone_log = {}
orig_decode = model.decode
def logged(mel, options):
    r = orig_decode(mel, options)
    if options.temperature == 0:
        alone_log[key(pad_or_trim(mel, N_FRAMES), options.prompt)] = (r.tokens, options)
    return r
model.decode = logged
alone = [model.transcribe(a, temperature=0.0) for a in shifted]
model.decode = orig_decode
batches = []
orig_run = batching.WindowBatcher._run
def run(self, batch):
    jobs = [j for j in batch if not callable(j[0])]
    orig_run(self, batch)
    batches.append([(j[0], j[1], j[2].result()) for j in jobs])
batching.WindowBatcher._run = run
together = [r for _, _, r in batching.transcribe_files(model, shifted, 16, temperature=0.0)]
print("equal", sum([s["tokens"] for s in a["segments"]] == [s["tokens"] for s in b["segments"]] for a, b in zip(alone, together)))
sizes = [len(b) for b in batches]; print("batches", len(batches), "sizes", sizes)
found = 0
for b in batches:
    for mel, opts, res in b:
        k = key(mel, opts.prompt)
        if k in alone_log and alone_log[k][0] != res.tokens and opts.temperature == 0:
            a = alone_log[k][0]
            i = next(i for i in range(min(len(a), len(res.tokens))) if a[i] != res.tokens[i]) if any(x != y for x, y in zip(a, res.tokens)) else min(len(a), len(res.tokens))
            print("MISMATCH batch size", len(b), "prompt len", len(opts.prompt or []), "diverge at", i, "alone", a[i-2:i+3], "batched", res.tokens[i-2:i+3])
            o = DecodingOptions(**{**opts.__dict__, "prompt": None})
            feats1 = model.graphs.encode(mel[None])
            one = DecodingTask(model, o, [opts.prompt]).run(feats1)[0].tokens
            feats16 = model.graphs.encode(np.stack([mel] * 16))
            same16 = DecodingTask(model, o, [opts.prompt] * 16).run(feats16)[0].tokens
            mates = [m for m, _, _ in b]; prompts = [p.prompt for _, p, _ in b]
            again = DecodingTask(model, o, prompts).run(model.graphs.encode(np.stack(mates)))[[m is mel for m in mates].index(True)].tokens
            other = next(p.prompt for _, p, _ in b if len(p.prompt or []) != len(opts.prompt or []))
            pair = DecodingTask(model, o, [opts.prompt, other]).run(model.graphs.encode(np.stack([mel, mel])))[0].tokens
            print("  batch1 == alone", one == a, "| 16 same rows == alone", same16 == a, "| same batch again == batched", again == res.tokens,
                  "| ragged pair == alone", pair == a)
            # margin at divergence, batch 1 general decoder logits
            tok = model.tokenizer("en")
            task = DecodingTask(model, o, [opts.prompt])
            head = list(task._initial_tokens(opts.prompt))
            st = model.graphs.start_decoding(feats1, np.array([0]))
            logits = st.step(np.array([head + a[:i]]))[0, -1]
            top = np.argsort(-logits)[:3]
            print("  top3 at divergence", [(int(t), float(logits[t])) for t in top], "alone", a[i], "batched", res.tokens[i])
            found += 1
            if found >= 4: break
    if found >= 4: break
print("mismatches examined", found)
