"""One-query cross-attention value sums (4 layers, 1500 keys, 6 heads) as micro graphs, three forms:
the sum over a non-inner axis (the step graph before), over the inner axis of transposed values (now), and
a batched matmul. Kernel time per call from CUPTI through torch.profiler, batch 1 and 16. Compile on a
machine without a GPU, run where the GPU is:

    python benchmarks/value_sum_forms.py export DIR   # compiles for sm_90, no GPU needed
    python benchmarks/value_sum_forms.py run DIR      # on the H100
"""
import sys, numpy as np
from max import driver
from max.dtype import DType
from max.graph import DeviceRef, Graph, TensorType, ops
mode, folder = sys.argv[1], sys.argv[2]
if mode == "export":
    driver.set_virtual_device_api("cuda"); driver.set_virtual_device_target_arch("sm_90"); driver.set_virtual_device_count(1)
from max.engine import InferenceSession, MefStore
L, H, T, D = 4, 6, 1500, 64
def graph(form, b):
    gpu = DeviceRef.GPU()
    vshape = [L, b, H, D, T] if form == "vT" else [L, b, H, T, D]
    with Graph(f"vsum_{form}_{b}", input_types=[TensorType(DType.float32, [b, H, 1, T], gpu), TensorType(DType.float32, vshape, gpu)]) as g:
        w, v = g.inputs[0].tensor, g.inputs[1].tensor
        outs = []
        for i in range(L):
            w = w + 0.0 if i == 0 else w * 1.0001  # other weights per layer, as in the step graph
            if form == "axis2":
                outs.append(ops.sum(ops.transpose(w, 2, 3) * v[i], axis=2))
            elif form == "vT":
                outs.append(ops.transpose(ops.sum(w * v[i], axis=-1), 2, 3))
            else:
                outs.append(w @ v[i])
        g.output(ops.concat(outs, axis=-1))
    return g
forms = ["axis2", "vT", "matmul"]
if mode == "export":
    s = InferenceSession(devices=[driver.Accelerator()], export_mefs=folder)
    for f in forms:
        for b in (1, 16):
            s.load(graph(f, b)); print("compiled", f, b, flush=True)
    sys.exit()
import torch
from torch.profiler import ProfilerActivity, profile
torch.cuda.init()
dev = driver.Accelerator()
s = InferenceSession(devices=[dev])
store = MefStore.for_import(folder)
rng = np.random.default_rng(0)
for b in (1, 16):
    wt = rng.random((b, H, 1, T), np.float32); wt /= wt.sum(-1, keepdims=True)
    v = rng.standard_normal((L, b, H, T, D), np.float32)
    ref = None
    for f in forms:
        g = graph(f, b)
        m = s.init(s.compile(store.claim_import(g)), weights_registry={})
        vin = np.ascontiguousarray(np.swapaxes(v, -1, -2)) if f == "vT" else v
        args = [driver.Buffer.from_numpy(wt).to(dev), driver.Buffer.from_numpy(vin).to(dev)]
        out = m.execute(*args)[0].to(driver.CPU()).to_numpy()
        ref = out if ref is None else ref
        for _ in range(3): m.execute(*args)
        dev.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(50): m.execute(*args)
            dev.synchronize()
        ev = [e for e in prof.key_averages() if e.device_time_total > 0 and "Memcpy" not in e.key]
        print(f"batch {b:2d} {f:7s} {sum(e.device_time_total for e in ev)/50:8.1f} us {sum(e.count for e in ev)/50:.0f} kernels  maxdiff {np.abs(out-ref).max():.2e}", flush=True)
        for e in sorted(ev, key=lambda e: -e.device_time_total)[:4]:
            print(f"      {e.device_time_total/50:7.1f} us {e.count/50:.0f}x {e.key[:60]}")
