"""One-query cross-attention value sums (4 layers, 1500 keys, 6 heads) as micro graphs, three forms:
the sum over a non-inner axis (the step graph before), over the inner axis of transposed values (now), and
a batched matmul. Kernel time per call from CUPTI through torch.profiler, batch 1 and 16. Compile on a
machine without a GPU, run where the GPU is:

    python -m benchmarks.investigations.value_sum_forms --export DIR   # compiles for sm_90, no GPU needed
    python -m benchmarks.investigations.value_sum_forms --run DIR      # on the H100
"""

from __future__ import annotations

import numpy as np
from max import driver
from max.dtype import DType
from max.engine import InferenceSession, MefStore
from max.graph import DeviceRef, Graph, TensorType, ops

from benchmarks.common import parser

LAYERS, HEADS, KEYS, D_HEAD = 4, 6, 1500, 64
FORMS = ("axis2", "vT", "matmul")


def graph(form: str, batch: int) -> Graph:
    gpu = DeviceRef.GPU()
    v_shape = [LAYERS, batch, HEADS, D_HEAD, KEYS] if form == "vT" else [LAYERS, batch, HEADS, KEYS, D_HEAD]
    types = [TensorType(DType.float32, [batch, HEADS, 1, KEYS], gpu), TensorType(DType.float32, v_shape, gpu)]
    with Graph(f"vsum_{form}_{batch}", input_types=types) as g:
        w, v = g.inputs[0].tensor, g.inputs[1].tensor
        outs = []
        for i in range(LAYERS):
            w = w + 0.0 if i == 0 else w * 1.0001  # other weights per layer, as in the step graph
            if form == "axis2":
                outs.append(ops.sum(ops.transpose(w, 2, 3) * v[i], axis=2))
            elif form == "vT":
                outs.append(ops.transpose(ops.sum(w * v[i], axis=-1), 2, 3))
            else:
                outs.append(w @ v[i])
        g.output(ops.concat(outs, axis=-1))
    return g


def export(folder: str) -> None:
    driver.set_virtual_device_api("cuda")
    driver.set_virtual_device_target_arch("sm_90")
    driver.set_virtual_device_count(1)
    session = InferenceSession(devices=[driver.Accelerator()], export_mefs=folder)
    for form in FORMS:
        for batch in (1, 16):
            session.load(graph(form, batch))
            print("compiled", form, batch, flush=True)


def run(folder: str) -> None:
    import torch  # only where the GPU is: the export runs without it

    from benchmarks.investigations.gpu_products import CALLS, kernel_events

    torch.cuda.init()
    dev = driver.Accelerator()
    session = InferenceSession(devices=[dev])
    store = MefStore.for_import(folder)
    rng = np.random.default_rng(0)
    for batch in (1, 16):
        weights = rng.random((batch, HEADS, 1, KEYS), np.float32)
        weights /= weights.sum(-1, keepdims=True)
        values = rng.standard_normal((LAYERS, batch, HEADS, KEYS, D_HEAD), np.float32)
        first = None
        for form in FORMS:
            model = session.init(session.compile(store.claim_import(graph(form, batch))), weights_registry={})
            v = np.ascontiguousarray(np.swapaxes(values, -1, -2)) if form == "vT" else values
            inputs = [driver.Buffer.from_numpy(weights).to(dev), driver.Buffer.from_numpy(v).to(dev)]
            out = model.execute(*inputs)[0].to(driver.CPU()).to_numpy()
            first = out if first is None else first
            events = kernel_events(model, inputs)
            print(f"batch {batch:2d} {form:7s} {sum(e.device_time_total for e in events) / CALLS:8.1f} us "
                  f"{sum(e.count for e in events) / CALLS:.0f} kernels  maxdiff {np.abs(out - first).max():.2e}",
                  flush=True)
            for e in sorted(events, key=lambda e: -e.device_time_total)[:4]:
                print(f"      {e.device_time_total / CALLS:7.1f} us {e.count / CALLS:.0f}x {e.key[:60]}")


def main() -> None:
    p = parser(__doc__)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--export", metavar="DIR", help="compile the graphs for sm_90 into DIR (no GPU needed)")
    mode.add_argument("--run", metavar="DIR", help="time the graphs compiled into DIR (on the GPU)")
    args = p.parse_args()
    if args.export:
        export(args.export)
    else:
        run(args.run)


if __name__ == "__main__":
    main()
