"""The recorded step's cross-attention (one query per row over 1500 audio positions, 4 layers, tiny.en's 6
heads of 64) in several graph forms, at several batch sizes: GPU time per call, recorded and replayed, and the
largest difference from a float64 numpy reference.

    python -m benchmarks.investigations.cross_attention_forms [--batches 1,5,16,64] [--forms sums,flash]  (on the GPU)

A form MAX fails on can end the process (4-D matmuls crash MAX 26.7's CPU compiler), so run one form per process.

Forms (float32):
- sums: the step's form today (`layers.attention`, one_query, values transposed): broadcast multiplies and
  sums over the head size, then over the positions;
- matmul4d: q @ k^T and weights @ v over [batch, head, ...] (`layers.attention` without one_query);
- bmm3: the same as 3-D batched products over batch x head, the keys stored transposed [.., 64, 1500];
- flash: MAX's flash-attention kernel on [batch, time, head, 64] (no mask).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
from max import driver
from max.dtype import DType
from max.engine import InferenceSession
from max.graph import DeviceRef, Graph, TensorType, TensorValue, ops
from max.nn.attention import MHAMaskVariant
from max.nn.kernels import flash_attention_gpu

from benchmarks.common import parser, seconds_per_call
from max_whisper.graph.layers import attention

H, DH, T, LAYERS = 6, 64, 1500, 4
F32 = DType.float32
SCALE = 1.0 / 8.0


def sums(q: TensorValue, k: TensorValue, v: TensorValue) -> TensorValue:
    return attention(q, k, v, one_query=True, values_transposed=True)


def matmul4d(q: TensorValue, k: TensorValue, v: TensorValue) -> TensorValue:
    return attention(q, k, v)


def bmm3(q: TensorValue, k: TensorValue, v: TensorValue) -> TensorValue:
    b = q.shape[0]
    q3, kt3, v3 = ops.reshape(q, [-1, 1, DH]), ops.reshape(k, [-1, DH, T]), ops.reshape(v, [-1, T, DH])
    return ops.reshape(ops.softmax((q3 @ kt3) * SCALE) @ v3, [b, H, 1, DH])


def flash(q: TensorValue, k: TensorValue, v: TensorValue) -> TensorValue:
    return flash_attention_gpu(q, k, v, mask_variant=MHAMaskVariant.NULL_MASK, scale=SCALE)


# form -> (its function, the layouts of q, k and v as permutations of the canonical [batch, head, time, 64])
FORMS: dict[str, tuple[Callable, tuple[tuple[int, ...], ...]]] = {
    "sums": (sums, ((0, 1, 2, 3), (0, 1, 2, 3), (0, 1, 3, 2))),
    "matmul4d": (matmul4d, ((0, 1, 2, 3), (0, 1, 2, 3), (0, 1, 2, 3))),
    "bmm3": (bmm3, ((0, 1, 2, 3), (0, 1, 3, 2), (0, 1, 2, 3))),
    "flash": (flash, ((0, 2, 1, 3), (0, 2, 1, 3), (0, 2, 1, 3))),
}


def reference(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """LAYERS chained attentions in float64, canonical layout."""
    x, k, v = q.astype(np.float64), k.astype(np.float64), v.astype(np.float64)
    for _ in range(LAYERS):
        s = x @ np.swapaxes(k, 2, 3) * SCALE
        w = np.exp(s - s.max(-1, keepdims=True))
        x = (w / w.sum(-1, keepdims=True)) @ v
    return x


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--batches", default="1,5,16,64")
    p.add_argument("--forms", default=",".join(FORMS))
    args = p.parse_args()
    dev = driver.Accelerator()
    ref = DeviceRef.GPU()
    session = InferenceSession(devices=[dev])
    rng = np.random.default_rng(0)
    for batch in (int(b) for b in args.batches.split(",")):
        q = rng.standard_normal((batch, H, 1, DH)).astype(np.float32)
        k = rng.standard_normal((batch, H, T, DH)).astype(np.float32)
        v = rng.standard_normal((batch, H, T, DH)).astype(np.float32)
        expected = reference(q, k, v)
        for name in args.forms.split(","):
            fn, layouts = FORMS[name]
            arrays = [np.ascontiguousarray(a.transpose(order)) for a, order in zip((q, k, v), layouts)]
            with Graph(f"xattn_{name}_{batch}", input_types=[TensorType(F32, a.shape, ref) for a in arrays]) as g:
                x, kk, vv = (t.tensor for t in g.inputs)
                for _ in range(LAYERS):
                    x = fn(x, kk, vv)
                g.output(x)
            start = time.perf_counter()
            try:
                model = session.load(g)
            except Exception as e:  # noqa: BLE001  (a form MAX cannot compile is a result to print)
                print(f"batch {batch:3d} {name:9s} does not compile: {str(e).splitlines()[0][:160]}", flush=True)
                continue
            compile_s = time.perf_counter() - start
            inputs = [driver.Buffer.from_numpy(a).to(dev) for a in arrays]
            out = model.execute(*inputs)[0].to(driver.CPU()).to_numpy()
            got = out.transpose(layouts[0]) if layouts[0] != (0, 1, 2, 3) else out  # back to canonical
            diff = float(np.abs(got - expected).max())
            model.capture(batch, *inputs)
            model.replay(batch, *inputs)
            dev.synchronize()
            us = 1e6 * seconds_per_call(lambda: model.replay(batch, *inputs), 200, dev)
            print(f"batch {batch:3d} {name:9s} {us:8.1f} us per call ({LAYERS} layers), max diff {diff:.2e}, "
                  f"compile {compile_s:.1f} s", flush=True)


if __name__ == "__main__":
    main()
