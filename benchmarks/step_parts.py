"""Parts of the decoder step as micro graphs (batch 1), timed as eager executes and as recorded replays.

Compile on any machine for an H100, then run on the GPU machine with the folder carried over:

    SKIP=sattn_flash,sattn_elem python benchmarks/step_parts.py export DIR   # compiles for sm_90, no GPU
    SKIP=sattn_flash,sattn_elem python benchmarks/step_parts.py import DIR   # on the GPU

Graphs: one query attending to 1500 keys, 4 times (MAX's flash-attention form, and broadcast
multiply + sums), the same over 448 masked keys (sattn_*; its export crashed MAX 26.7 here, hence SKIP),
16 384x384 matmuls, the vocabulary projection, and the projection with the greedy choice.
"""
import sys, time, os
import numpy as np
mode, folder = sys.argv[1], sys.argv[2]
from max import driver
if mode == "export":
    driver.set_virtual_cpu_target("x86-64-v3")
    driver.set_virtual_device_api("cuda"); driver.set_virtual_device_target_arch("sm_90"); driver.set_virtual_device_count(1)
from max.engine import InferenceSession, MefStore
from max.graph import DeviceRef, Graph, TensorType, Weight, ops
from max.dtype import DType
from max_whisper import model as M

dev = driver.Accelerator(); ref = DeviceRef.from_device(dev)
f32 = DType.float32
rng = np.random.default_rng(0)
H, DH, D, V = 6, 64, 384, 51864

def elem_attention(q, k, v, mask=None):
    scale = 1.0 / 8.0
    s = ops.sum(q * k, axis=-1)  # [b,h,T,1]? q [b,h,1,dh] * k [b,h,T,dh] -> [b,h,T,dh] -> [b,h,T,1]
    s = ops.reshape(s, [1, H, 1, k.shape[2]]) * scale
    if mask is not None:
        s = s + mask
    p = ops.softmax(s)  # [b,h,1,T]
    out = ops.sum(ops.transpose(p, 2, 3) * v, axis=2)  # [b,h,T,1]*[b,h,T,dh] -> [b,h,1,dh]
    return out

SKIP = set(os.environ.get("SKIP", "").split(","))
def graphs():
    for g, w in _graphs():
        if g.name not in SKIP:
            yield g, w
def _graphs():
    T = 1500
    qt = TensorType(f32, [1, H, 1, DH], ref); kt = TensorType(f32, [1, H, T, DH], ref)
    with Graph("xattn_flash", input_types=[qt, kt, kt]) as g:
        q, k, v = (x.tensor for x in g.inputs)
        for _ in range(4): q = M.attention(q, k, v)
        g.output(q)
    yield g, {}
    with Graph("xattn_elem", input_types=[qt, kt, kt]) as g:
        q, k, v = (x.tensor for x in g.inputs)
        for _ in range(4): q = elem_attention(q, k, v)
        g.output(q)
    yield g, {}
    st = TensorType(f32, [1, H, 448, DH], ref); mt = TensorType(f32, [1, 1, 1, 448], ref)
    with Graph("sattn_flash", input_types=[qt, st, st, mt]) as g:
        q, k, v, m = (x.tensor for x in g.inputs)
        for _ in range(4): q = M.attention(q, k, v, m)
        g.output(q)
    yield g, {}
    with Graph("sattn_elem", input_types=[qt, st, st, mt]) as g:
        q, k, v, m = (x.tensor for x in g.inputs)
        for _ in range(4): q = elem_attention(q, k, v, m)
        g.output(q)
    yield g, {}
    xt = TensorType(f32, [1, 1, D], ref)
    ws = {f"l{i}.weight": rng.standard_normal((D, D), np.float32) * 0.05 for i in range(16)}
    ws.update({f"l{i}.bias": np.zeros(D, np.float32) for i in range(16)})
    with Graph("gemv16", input_types=[xt]) as g:
        x = g.inputs[0].tensor
        for i in range(16):
            x = x @ ops.transpose(Weight(f"l{i}.weight", f32, (D, D), ref), 0, 1) + Weight(f"l{i}.bias", f32, (D,), ref)
        g.output(x)
    yield g, ws
    we = {"emb": rng.standard_normal((V, D), np.float32) * 0.05}
    with Graph("vocab", input_types=[xt]) as g:
        x = g.inputs[0].tensor
        g.output(x @ ops.transpose(Weight("emb", f32, (V, D), ref), 0, 1))
    yield g, we
    with Graph("vocab_greedy", input_types=[xt, TensorType(f32, [V], ref), TensorType(DType.int64, [1, 6], ref)]) as g:
        x, sup, rules = (t.tensor for t in g.inputs)
        logits = (x @ ops.transpose(Weight("emb", f32, (V, D), ref), 0, 1))[:, 0, :]
        g.output(M.greedy_choice(logits, sup, rules))
    yield g, we

if mode == "export":
    sess = InferenceSession(devices=[dev], export_mefs=folder)
    for g, w in graphs():
        t = time.perf_counter(); sess.load(g, weights_registry=w); print(g.name, round(time.perf_counter() - t, 1), flush=True)
else:
    store = MefStore.for_import(folder.split(","))
    sess = InferenceSession(devices=[dev])
    for g, w in graphs():
        model = sess.init(sess.compile(store.claim_import(g)), weights_registry=w)
        args = []
        for meta in model.input_metadata:
            shape = [int(d) for d in meta.shape]
            if meta.dtype == DType.int64:
                a = np.array([[50256, 50256, 50363, 50363, 51864, 1]], np.int64)
            else:
                a = rng.standard_normal(shape).astype(np.float32) * 0.1
            args.append(driver.Buffer.from_numpy(a).to(dev))
        out = model.execute(*args); dev.synchronize()
        t = time.perf_counter()
        for _ in range(50): model.execute(*args)
        dev.synchronize(); eager = (time.perf_counter() - t) / 50
        model.capture(1, *args); model.replay(1, *args); dev.synchronize()
        t = time.perf_counter()
        for _ in range(200): model.replay(1, *args)
        dev.synchronize(); rep = (time.perf_counter() - t) / 200
        print(f"{g.name}: eager {eager*1e6:.0f} us, replay {rep*1e6:.0f} us", flush=True)
