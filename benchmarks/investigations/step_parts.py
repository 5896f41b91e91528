"""Parts of the decoder step as micro graphs (batch 1), timed as eager executes and as recorded replays.

Compile on any machine for an H100, then run on the GPU machine with the folder carried over:

    python -m benchmarks.investigations.step_parts --export DIR --skip sattn_flash,sattn_elem  # sm_90, no GPU
    python -m benchmarks.investigations.step_parts --run DIR --skip sattn_flash,sattn_elem     # on the GPU

Graphs: one query attending to 1500 keys, 4 times (MAX's flash-attention form, and broadcast
multiply + sums), the same over 448 masked keys (sattn_*; its export crashed MAX 26.7 here, hence --skip),
16 384x384 matmuls, the vocabulary projection, and the projection with the greedy choice.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np
from max import driver
from max.dtype import DType
from max.engine import InferenceSession, MefStore
from max.graph import DeviceRef, Graph, TensorType, TensorValue, Weight, ops

from benchmarks.common import parser, seconds_per_call
from max_whisper import rules
from max_whisper.graph.layers import attention

H, DH, D, V = 6, 64, 384, 51864  # tiny.en's heads, head size, width and vocabulary
F32 = DType.float32
# rules.BOUNDS of a row at the start of its text: any text token, the specials, any timestamp
START_BOUNDS = np.array([[50256, 50256, 50363, 50363, V, 1]], np.int64)


def elem_attention(q: TensorValue, k: TensorValue, v: TensorValue, mask: TensorValue | None = None) -> TensorValue:
    """One query's attention as broadcast multiplies and sums: q [1, h, 1, dh], k and v [1, h, T, dh]."""
    s = ops.reshape(ops.sum(q * k, axis=-1), [1, H, 1, k.shape[2]]) * (1.0 / 8.0)  # [1, h, T, 1] -> [1, h, 1, T]
    if mask is not None:
        s = s + mask
    return ops.sum(ops.transpose(ops.softmax(s), 2, 3) * v, axis=2)  # [1, h, T, 1] * [1, h, T, dh] -> [1, h, 1, dh]


def attention_graph(name: str, keys: int, attend: Callable, masked: bool) -> Graph:
    """Four layers' worth of one query attending to `keys` keys and values."""
    ref = DeviceRef.GPU()
    q, kv = TensorType(F32, [1, H, 1, DH], ref), TensorType(F32, [1, H, keys, DH], ref)
    mask = [TensorType(F32, [1, 1, 1, keys], ref)] if masked else []
    with Graph(name, input_types=[q, kv, kv, *mask]) as g:
        x, k, v, *m = (t.tensor for t in g.inputs)
        for _ in range(4):
            x = attend(x, k, v, *m)
        g.output(x)
    return g


def graphs(rng: np.random.Generator) -> Iterator[tuple[Graph, dict]]:
    """Each micro graph and its weights."""
    yield attention_graph("xattn_flash", 1500, attention, masked=False), {}
    yield attention_graph("xattn_elem", 1500, elem_attention, masked=False), {}
    yield attention_graph("sattn_flash", 448, attention, masked=True), {}
    yield attention_graph("sattn_elem", 448, elem_attention, masked=True), {}
    ref = DeviceRef.GPU()
    xt = TensorType(F32, [1, 1, D], ref)
    ws = {f"l{i}.weight": rng.standard_normal((D, D), np.float32) * 0.05 for i in range(16)}
    ws.update({f"l{i}.bias": np.zeros(D, np.float32) for i in range(16)})
    with Graph("gemv16", input_types=[xt]) as g:
        x = g.inputs[0].tensor
        for i in range(16):
            x = x @ ops.transpose(Weight(f"l{i}.weight", F32, (D, D), ref), 0, 1) + Weight(f"l{i}.bias", F32, (D,), ref)
        g.output(x)
    yield g, ws
    we = {"emb": rng.standard_normal((V, D), np.float32) * 0.05}
    with Graph("vocab", input_types=[xt]) as g:
        g.output(g.inputs[0].tensor @ ops.transpose(Weight("emb", F32, (V, D), ref), 0, 1))
    yield g, we
    inputs = [xt, TensorType(F32, [V], ref), TensorType(DType.int64, [1, len(rules.BOUNDS)], ref)]
    with Graph("vocab_greedy", input_types=inputs) as g:
        x, suppress, row_bounds = (t.tensor for t in g.inputs)
        logits = (x @ ops.transpose(Weight("emb", F32, (V, D), ref), 0, 1))[:, 0, :]
        g.output(rules.graph_greedy_choice(logits, suppress, row_bounds))
    yield g, we


def export(folder: str, skip: set[str]) -> None:
    driver.set_virtual_cpu_target("x86-64-v3")
    driver.set_virtual_device_api("cuda")
    driver.set_virtual_device_target_arch("sm_90")
    driver.set_virtual_device_count(1)
    session = InferenceSession(devices=[driver.Accelerator()], export_mefs=folder)
    for g, w in graphs(np.random.default_rng(0)):
        if g.name not in skip:
            start = time.perf_counter()
            session.load(g, weights_registry=w)
            print(g.name, round(time.perf_counter() - start, 1), flush=True)


def run(folders: str, skip: set[str]) -> None:
    dev = driver.Accelerator()
    store = MefStore.for_import(folders.split(","))
    session = InferenceSession(devices=[dev])
    rng = np.random.default_rng(0)
    for g, w in graphs(rng):
        if g.name in skip:
            continue
        model = session.init(session.compile(store.claim_import(g)), weights_registry=w)
        args = [driver.Buffer.from_numpy(START_BOUNDS if meta.dtype == DType.int64 else
                                         rng.standard_normal([int(d) for d in meta.shape]).astype(np.float32) * 0.1
                                         ).to(dev) for meta in model.input_metadata]
        model.execute(*args)
        dev.synchronize()
        eager = seconds_per_call(lambda: model.execute(*args), 50, dev)
        model.capture(1, *args)
        model.replay(1, *args)
        dev.synchronize()
        replay = seconds_per_call(lambda: model.replay(1, *args), 200, dev)
        print(f"{g.name}: eager {eager * 1e6:.0f} us, replay {replay * 1e6:.0f} us", flush=True)


def main() -> None:
    p = parser(__doc__)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--export", metavar="DIR", help="compile the graphs for sm_90 into DIR (no GPU needed)")
    mode.add_argument("--run", metavar="DIR[,DIR]", help="time the graphs compiled into these folders (on the GPU)")
    p.add_argument("--skip", default="", help="comma-separated graph names to leave out")
    args = p.parse_args()
    skip = set(args.skip.split(","))
    if args.export:
        export(args.export, skip)
    else:
        run(args.run, skip)


if __name__ == "__main__":
    main()
