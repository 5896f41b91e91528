"""Graph layers that have no openai-whisper counterpart of the same form, against PyTorch."""

from __future__ import annotations

import numpy as np
import torch
from max import driver
from max.dtype import DType
from max.engine import InferenceSession
from max.graph import DeviceRef, Graph, TensorType

from max_whisper.graph.layers import GraphWeights, conv1d_time_major


def test_conv_as_one_matmul_equals_torch_conv1d():
    rng = np.random.default_rng(0)
    channels, out_channels, time = 5, 7, 12
    state = {"c.weight": rng.standard_normal((out_channels, channels, 3)).astype(np.float32),
             "c.bias": rng.standard_normal(out_channels).astype(np.float32)}
    x = rng.standard_normal((2, channels, time)).astype(np.float32)
    w = GraphWeights(state, DType.float32, DeviceRef.CPU())
    with Graph("conv", input_types=[TensorType(DType.float32, [2, time, channels], DeviceRef.CPU())]) as g:
        g.output(*(conv1d_time_major(w, "c", g.inputs[0].tensor, stride) for stride in (1, 2)))
    model = InferenceSession(devices=[driver.CPU()]).load(g, weights_registry=w.registry())
    outputs = model.execute(np.ascontiguousarray(x.transpose(0, 2, 1)))
    for stride, got in zip((1, 2), outputs):
        want = torch.nn.functional.conv1d(torch.from_numpy(x), torch.from_numpy(state["c.weight"]),
                                          torch.from_numpy(state["c.bias"]), stride=stride, padding=1)
        np.testing.assert_allclose(got.to_numpy(), want.numpy().transpose(0, 2, 1), rtol=1e-5, atol=1e-5)


def test_bfloat16_weights_round_as_torch_rounds():
    from max_whisper.runtime.device import cast, to_host

    values = np.random.default_rng(1).standard_normal(4096).astype(np.float32) * 30
    values[:4] = [0.0, -0.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8]  # ties round to even
    got = to_host(cast(values, DType.bfloat16), driver.CPU())
    np.testing.assert_array_equal(got, torch.from_numpy(values).to(torch.bfloat16).float().numpy())


def test_the_16_bit_encoder_graph_builds_for_the_gpu():
    """The GPU-only graph (flash attention has no CPU kernel) is at least well-formed on a machine without one."""
    from max_whisper.graph import BUILDERS
    from max_whisper.models import ARCHITECTURES
    from max_whisper.weights import state_shapes

    dims = ARCHITECTURES["tiny.en"]
    state = {name: np.zeros(shape, np.float32) for name, shape in state_shapes(dims).items()}
    graph = BUILDERS["encoder"](dims, GraphWeights(state, DType.bfloat16, DeviceRef.GPU()), DType.bfloat16,
                                DeviceRef.GPU())
    assert graph.name == "whisper_encoder_fused"
    assert [str(t.dtype) for t in graph.output_types] == ["DType.bfloat16"]
