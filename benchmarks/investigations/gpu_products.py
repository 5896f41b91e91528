"""GPU kernel time of a decoder step's linear products as micro graphs: the vocabulary's and the
linear layers' x @ W^T (the engine's form) against (W @ x^T)^T and the broadcast-sum row form
(`graph.layers.row_product`), for batch 1 and 16. Kernel times from CUPTI through torch.profiler.

    python -m benchmarks.investigations.gpu_products [--shapes 51864x384,384x384]

Each micro graph compiles on the GPU (about 40 s each on the H100).
"""

from __future__ import annotations

import numpy as np
import torch
from max import driver
from max.dtype import DType
from max.engine import InferenceSession
from max.graph import DeviceRef, Graph, TensorType, ops
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import parser

CALLS = 50
FORMS = {"x@Wt": "xmWt", "(W@xt)t": "Wmxtt", "row": "row"}  # each product form and its graph's name


def products(x, w, form):
    if form == "x@Wt":
        return x @ ops.transpose(w, 0, 1)
    if form == "(W@xt)t":
        return ops.transpose(w @ ops.transpose(x, 0, 1), 0, 1)
    return ops.squeeze(ops.sum(ops.unsqueeze(x, 1) * w, axis=-1), -1)  # row form


def kernel_events(model, inputs) -> list:
    """The kernels of CALLS calls of a loaded model (torch.profiler's averaged events, copies left out),
    after 3 warm-up calls; divide their time and count by CALLS for per-call figures."""
    for _ in range(3):
        model.execute(*inputs)
    driver.Accelerator().synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(CALLS):
            model.execute(*inputs)
        driver.Accelerator().synchronize()
    return [e for e in prof.key_averages() if e.device_time_total > 0 and "Memcpy" not in e.key]


def kernel_us(session, graph, inputs) -> tuple[float, float]:
    """Kernel microseconds and kernels per call."""
    events = kernel_events(session.load(graph), inputs)
    return sum(e.device_time_total for e in events) / CALLS, sum(e.count for e in events) / CALLS


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--shapes", default="51864x384,384x384", help="out x in of the weight matrices")
    args = p.parse_args()
    torch.cuda.init()
    dev = driver.Accelerator()
    gpu = DeviceRef.GPU()
    session = InferenceSession(devices=[dev])
    rng = np.random.default_rng(0)
    for out_dim, in_dim in (tuple(map(int, shape.split("x"))) for shape in args.shapes.split(",")):
        w = driver.Buffer.from_numpy(rng.standard_normal((out_dim, in_dim), np.float32)).to(dev)
        for batch in (1, 16):
            x = driver.Buffer.from_numpy(rng.standard_normal((batch, in_dim), np.float32)).to(dev)
            for form in FORMS:
                types = [TensorType(DType.float32, [batch, in_dim], gpu),
                         TensorType(DType.float32, [out_dim, in_dim], gpu)]
                with Graph(f"p_{out_dim}_{in_dim}_{batch}_{FORMS[form]}", input_types=types) as g:
                    g.output(products(g.inputs[0].tensor, g.inputs[1].tensor, form))
                us, n = kernel_us(session, g, [x, w])
                print(f"linear out {out_dim:5d} in {in_dim:4d} batch {batch:2d} {form:8s} {us:8.1f} us {n:.0f} kernels",
                      flush=True)


if __name__ == "__main__":
    main()
