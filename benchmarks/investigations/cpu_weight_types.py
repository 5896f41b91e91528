"""Whether smaller weights pay on the CPU: one linear product (x @ W^T as a matmul) as a micro graph in
float32, in bfloat16 (weights and input in bfloat16, output cast to float32) and with Q4_0 weights (MAX's
`qmatmul` kernel, ggml's block of 32 four-bit values and a float16 scale; repacked once, outside the timing),
for a model's product shapes at one row (a greedy step) and at 1500 rows (a window in the encoder); at one row
also the broadcast-sum form (a multiply and a sum over W's stored rows), with W stored in float32 and in
bfloat16: the CPU one-row step's form where out >= in (`graph.layers.row_product`; it takes the matmul where
in > out, so the row lines of 384x1536 measure a form the engine does not run). Each
form's time per call (median of `--repeats` runs of `--calls` calls) and its largest difference from a
float64 product of the same float32 numbers, relative to that product's largest value.

    python -m benchmarks.investigations.cpu_weight_types [--shapes 384x384,1536x384,384x1536,51864x384]
        [--rows 1,1500] [--calls 50] [--repeats 5]

Shapes are out x in (tiny's: attention 384x384, MLP 1536x384 and 384x1536, vocabulary 51864x384). MAX's
K-quants (Q4_K, Q6_K) take blocks of 256 along `in`, which tiny's 384 is not a multiple of.
"""

from __future__ import annotations

import statistics

import numpy as np
from max import driver
from max.dtype import DType
from max.engine import InferenceSession
from max.graph import DeviceRef, Graph, TensorType, ops
from max.graph.ops.quantized import _packed_qmatmul, _repack_quantized_weights

from benchmarks.common import parser, seconds_per_call

Q4_0_BLOCK = 32


def quantize_q4_0(w: np.ndarray) -> np.ndarray:
    """ggml's Q4_0 (quantize_row_q4_0_ref) of each row of `w` [out, in]: per block of 32 values a float16
    scale d (the signed value of largest magnitude over -8) and 16 bytes, value j in the low nibble of byte j
    and value j + 16 in its high nibble, each min(15, int(x / d + 8.5)) (truncated; never below 0).
    Returns uint8 [out, in / 32 * 18]."""
    out_dim, in_dim = w.shape
    blocks = w.reshape(out_dim, in_dim // Q4_0_BLOCK, Q4_0_BLOCK).astype(np.float32)
    extreme = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=-1)[..., None], axis=-1)[..., 0]
    d = extreme / -8
    inverse = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.minimum(15, (blocks * inverse[..., None] + 8.5).astype(np.int8)).astype(np.uint8)
    packed = q[..., :16] | (q[..., 16:] << 4)
    scale = d.astype(np.float16).view(np.uint8).reshape(out_dim, in_dim // Q4_0_BLOCK, 2)
    return np.concatenate([scale, packed], axis=-1).reshape(out_dim, -1)


def dequantize_q4_0(q: np.ndarray, in_dim: int) -> np.ndarray:
    blocks = q.reshape(q.shape[0], in_dim // Q4_0_BLOCK, 18)
    d = blocks[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
    low, high = blocks[..., 2:] & 15, blocks[..., 2:] >> 4
    values = np.concatenate([low, high], axis=-1).astype(np.float32) - 8
    return (values * d[..., None]).reshape(q.shape[0], in_dim)


PRODUCTS = {  # x [rows, in] float32 and the weights as stored -> x @ W^T [rows, out] float32
    "float32": lambda x, w: x @ ops.transpose(w, 0, 1),
    "bfloat16": lambda x, w: ops.cast(ops.cast(x, DType.bfloat16) @ ops.transpose(w, 0, 1), DType.float32),
    "q4_0": lambda x, w: _packed_qmatmul("vroom_q4_0_matmul", x, w, "vroom"),
    # the broadcast-sum form (graph.layers.row_product's where out >= in): each output a sum over a stored row of W
    "row float32": lambda x, w: ops.sum(ops.unsqueeze(x, 1) * w, axis=-1)[..., 0],
    "row bfloat16": lambda x, w: ops.sum(ops.unsqueeze(x, 1) * ops.cast(w, DType.float32), axis=-1)[..., 0],
}
STORED = {"float32": "float32", "bfloat16": "bfloat16", "q4_0": "q4_0", "row float32": "float32",
          "row bfloat16": "bfloat16"}  # each form's weights as stored


def run_once(session: InferenceSession, name: str, types: list, build, value: np.ndarray) -> driver.Buffer:  # noqa: ANN001
    """A one-op graph run once on the CPU: the weights converted as they would be at load time."""
    cpu = DeviceRef.CPU()
    with Graph(name, input_types=[TensorType(dtype, shape, cpu) for dtype, shape in types]) as g:
        g.output(build(g.inputs[0].tensor))
    return session.load(g).execute(driver.Buffer.from_numpy(value))[0]


def time_call(call, calls: int, repeats: int, device: driver.Device) -> float:  # noqa: ANN001
    """The median of `repeats` runs of `calls` calls in a row, after one call."""
    call()
    return statistics.median(seconds_per_call(call, calls, device) for _ in range(repeats))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--shapes", default="384x384,1536x384,384x1536,51864x384")
    p.add_argument("--rows", default="1,1500")
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    cpu = DeviceRef.CPU()
    device = driver.CPU()
    session = InferenceSession(devices=[device])
    rng = np.random.default_rng(0)
    for out_dim, in_dim in (tuple(map(int, s.split("x"))) for s in args.shapes.split(",")):
        w = (rng.standard_normal((out_dim, in_dim)) / np.sqrt(in_dim)).astype(np.float32)
        weights = {"float32": driver.Buffer.from_numpy(w),
                   "bfloat16": run_once(session, f"bf16_{out_dim}_{in_dim}", [(DType.float32, w.shape)],
                                        lambda v: ops.cast(v, DType.bfloat16), w)}
        if out_dim % Q4_0_BLOCK == 0:  # the kernel's repack takes whole blocks of outputs too
            q = quantize_q4_0(w)
            weights["q4_0"] = run_once(session, f"repack_{out_dim}_{in_dim}", [(DType.uint8, q.shape)],
                                       lambda v: _repack_quantized_weights("vroom_q4_0_repack_weights", (v,), "vroom"), q)
        for rows in map(int, args.rows.split(",")):
            x = rng.standard_normal((rows, in_dim)).astype(np.float32)
            exact = x.astype(np.float64) @ w.astype(np.float64).T
            seconds = {}
            for form in (f for f in PRODUCTS if STORED[f] in weights and (rows == 1 or not f.startswith("row"))):
                weight = weights[STORED[form]]
                types = [TensorType(DType.float32, [rows, in_dim], cpu), TensorType(weight.dtype, weight.shape, cpu)]
                with Graph(f"{form.replace(' ', '_')}_{out_dim}_{in_dim}_{rows}", input_types=types) as g:
                    g.output(PRODUCTS[form](g.inputs[0].tensor, g.inputs[1].tensor))
                model = session.load(g)
                inputs = [driver.Buffer.from_numpy(x), weight]
                y = model.execute(*inputs)[0].to_numpy()
                seconds[form] = time_call(lambda m=model, i=inputs: m.execute(*i), args.calls, args.repeats, device)
                error = float(np.abs(y.astype(np.float64) - exact).max() / np.abs(exact).max())
                print(f"out {out_dim:5d} in {in_dim:4d} rows {rows:4d} {form:12s} {1e6 * seconds[form]:10.1f} us "
                      f"x{seconds['float32'] / seconds[form]:5.2f} of float32's speed  max rel diff {error:.1e}",
                      flush=True)
        if "q4_0" not in weights:
            continue
        # Q4_0's own rounding, apart from the kernel's: the dequantized weights against the float32 ones
        print(f"out {out_dim:5d} in {in_dim:4d} Q4_0 weights: max rel diff of a weight "
              f"{np.abs(dequantize_q4_0(q, in_dim) - w).max() / np.abs(w).max():.1e}", flush=True)


if __name__ == "__main__":
    main()
